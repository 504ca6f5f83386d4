//! Raft plumbing: what the cluster replicates, the durable store, and the vote gate.
//!
//! What the cluster replicates is tiny: the membership (static, from the config) and per-node
//! operator flags such as maintenance. Leadership itself is what decides the VIP; the log
//! exists so that votes and terms are durable and so operator intent survives restarts and is
//! visible on every node. openraft's generics are named once, in [`typ`]; the wire that
//! carries Raft's RPCs between boxes is [`crate::peer`]'s (this module imports neither the peer
//! protocol nor the API, so both can build on it).

pub mod lease_clock;
pub mod store;
pub mod tick_gate;
pub mod typ;
pub mod vote_gate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's id, as written in `[[peer]] id`.
pub type NodeId = u64;

/// A command replicated through the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Put a node into (or take it out of) maintenance: it gives up and never takes the VIP.
    SetMaintenance { node_id: NodeId, on: bool },
}

/// What applying a [`Request`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {}

/// The replicated application state: what every node agrees on besides leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Nodes an operator put into maintenance (absent = not in maintenance).
    pub maintenance: BTreeMap<NodeId, bool>,
}

impl ClusterState {
    pub fn apply(&mut self, request: &Request) -> Response {
        match request {
            Request::SetMaintenance { node_id, on } => {
                if *on {
                    self.maintenance.insert(*node_id, true);
                } else {
                    self.maintenance.remove(node_id);
                }
            }
        }
        Response {}
    }

    pub fn in_maintenance(&self, node_id: NodeId) -> bool {
        self.maintenance.get(&node_id).copied().unwrap_or(false)
    }
}
