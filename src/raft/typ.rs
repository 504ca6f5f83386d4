//! openraft's generics, named once: every other file uses these aliases (as openraft's own
//! raft-kv-memstore example does), so changing a type parameter is a change here only.

use std::io::Cursor;

use openraft::BasicNode;

use super::{NodeId, Request, Response};

openraft::declare_raft_types!(
    /// raftvip's Raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = super::tick_gate::TickGatedRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type LogState = openraft::storage::LogState<TypeConfig>;
pub type LogFlushed = openraft::storage::LogFlushed<TypeConfig>;
pub type ErrorSubject = openraft::ErrorSubject<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, BasicNode>;
pub type Fatal = openraft::error::Fatal<NodeId>;
/// An error a Raft API answers: `E` is the API's own error, Infallible when it has none.
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
/// A failed RPC to a peer, as openraft's network reports it.
pub type RPCError<E = openraft::error::Infallible> =
    openraft::error::RPCError<NodeId, BasicNode, RaftError<E>>;
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
