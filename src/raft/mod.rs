//! Raft plumbing: the one place that names openraft's generics.
//!
//! Everything else uses the aliases below. What the cluster replicates is tiny: the
//! membership (static, from the config) and per-node operator flags such as maintenance.
//! Leadership itself is what decides the VIP; the log exists so that votes and terms are
//! durable and so operator intent survives restarts and is visible on every node.

pub mod network;
pub mod store;
pub mod vote_gate;

use std::collections::BTreeMap;
use std::io::Cursor;

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

openraft::declare_raft_types!(
    /// raftvip's Raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
