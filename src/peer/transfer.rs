//! `raftvip transfer --to ID|any`: moving leadership, and with it the VIPs, on purpose.
//!
//! The CLI asks its local daemon (signed, like maintenance); a follower forwards the request
//! once to the leader it knows. The leader checks the target before anything moves — it asks
//! the target "could you lead now?" ([`CAN_LEAD_PATH`]), which answers with the target's own
//! reason when it cannot (HAProxy unhealthy, in maintenance, a witness, stopping), and an
//! unreachable target is refused as such — then hands over to it through its supervisor,
//! make-before-break like any planned handover ([`LocalNode::transfer`]). `any` takes the
//! first voter, in id order after the leader, that can lead: the same order a stopping
//! leader asks its peers in. With five or more voters another healthy follower can still win
//! the election should the target fail to; for `any` that is a success, and the answer names
//! it.

use std::time::Duration;

use axum::http::StatusCode;
use openraft::ServerState;

use super::handlers::PeerServer;
use super::wire::{PeerAnswer, TransferRequest, CAN_LEAD_PATH, TRANSFER_PATH};
use crate::raft::NodeId;

/// Timeout of the "could you lead now?" check: a LAN answers in about a millisecond.
const CAN_LEAD_TIMEOUT: Duration = Duration::from_millis(500);
/// Timeout of a transfer forwarded to the leader: its checks and the handover itself.
const TRANSFER_FORWARD_TIMEOUT: Duration = Duration::from_secs(4);

/// A transfer that went wrong: the status to answer and the operator's message.
type Refusal = (StatusCode, String);

impl PeerServer {
    /// Carries out (leader) or forwards (follower) a transfer; the new leader's id.
    pub(super) async fn transfer(&self, request: TransferRequest) -> Result<NodeId, Refusal> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return self.forward_transfer(request, m.current_leader).await;
        }
        let me = m.id;
        let target = match request.to {
            Some(id) if id == me => {
                return Err((
                    StatusCode::CONFLICT,
                    format!("node {id} already leads: nothing to transfer"),
                ))
            }
            Some(id) => {
                self.check_target(id).await.map_err(|why| {
                    (
                        StatusCode::CONFLICT,
                        format!("node {id} cannot take over: {why}"),
                    )
                })?;
                id
            }
            None => {
                let voters: Vec<NodeId> = m.membership_config.voter_ids().collect();
                self.first_that_can_lead(me, voters).await?
            }
        };
        tracing::info!(to = target, "transfer: handing leadership over on request");
        self.node
            .transfer(target, request.to.is_none())
            .await
            .map_err(|why| (StatusCode::CONFLICT, why))
    }

    /// Sends the request once to the leader this node knows.
    async fn forward_transfer(
        &self,
        request: TransferRequest,
        leader: Option<NodeId>,
    ) -> Result<NodeId, Refusal> {
        let forwarded = TransferRequest {
            forwarded: true,
            ..request
        };
        let answer = if request.forwarded {
            None
        } else {
            self.forward(leader, TRANSFER_PATH, &forwarded, TRANSFER_FORWARD_TIMEOUT)
                .await
        };
        answer.unwrap_or_else(|| {
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "no leader to transfer from (is a quorum up?)".to_owned(),
            ))
        })
    }

    /// The first voter after `me` (in id order, wrapping) that can lead; else every reason.
    pub(super) async fn first_that_can_lead(
        &self,
        me: NodeId,
        mut voters: Vec<NodeId>,
    ) -> Result<NodeId, Refusal> {
        voters.retain(|id| *id != me);
        voters.sort_by_key(|id| (*id < me, *id));
        let mut reasons = Vec::new();
        for id in voters {
            match self.check_target(id).await {
                Ok(()) => return Ok(id),
                Err(why) => reasons.push(format!("node {id}: {why}")),
            }
        }
        Err((
            StatusCode::CONFLICT,
            format!("no node can take over ({})", reasons.join("; ")),
        ))
    }

    /// Ok if `id` could lead now; else its own reason, or why it could not be asked.
    async fn check_target(&self, id: NodeId) -> Result<(), String> {
        let address = self
            .node
            .peer_address(id)
            .ok_or_else(|| "not a member of this cluster".to_owned())?;
        let answer: Result<PeerAnswer, _> = self
            .client
            .call(id, &address, CAN_LEAD_PATH, &(), CAN_LEAD_TIMEOUT)
            .await;
        match answer {
            Ok(PeerAnswer { accepted: true, .. }) => Ok(()),
            Ok(PeerAnswer { reason, .. }) => Err(reason.unwrap_or_else(|| "refused".to_owned())),
            Err(e) => Err(format!("unreachable ({e})")),
        }
    }
}
