//! Both sides of the peer wire in one place: what one raftvip box says to another.
//!
//! Before this module the protocol was spread over four: paths and the client beside Raft,
//! handlers in the API, the requester in the daemon. Here, as in openraft's raft-kv-memstore
//! `network/`, the two ends sit side by side, so a change to a message is one diff:
//!
//! - [`wire`]: the paths and messages both ends agree on;
//! - [`client`]: the signed client, one shared connection pool for everything sent to a peer;
//! - [`network`]: openraft's `RaftNetwork` over that client (a connect failure is `Unreachable`);
//! - [`datagram`]: heartbeats as one signed UDP datagram each way, HTTP when UDP is silent;
//! - [`requests`]: raftvip's own asks (handover, "I hold the VIPs", pre-vote);
//! - [`transfer`]: `raftvip transfer`, checked against the target and forwarded to the leader;
//! - [`guard`]: authentication of every signed request and signing of every answer;
//! - [`handlers`]: one short handler per signed route, asking the node through [`LocalNode`];
//! - [`contacts`]: when each peer, and a leader, was last heard from;
//! - [`reject_log`]: rate-limited logging of refused requests.
//!
//! Dependencies point one way: peer builds on [`crate::raft`] (types, store) and
//! [`crate::auth`]; the API mounts [`router`] and the CLI uses [`PeerClient`]. Peer never
//! imports the API or the supervisor: the supervisor's view of [`PeerRequests`] is an adapter
//! written where both are wired (the daemon), and the HTTP server learns that a connection is
//! a peer's through [`PeerConnectionMark`], a trait defined here.

pub mod client;
pub mod contacts;
pub mod datagram;
pub mod guard;
pub mod handlers;
pub mod network;
pub mod reject_log;
pub mod requests;
pub mod transfer;
pub mod wire;

pub use client::{PeerCallError, PeerClient};
pub use contacts::Contacts;
pub use guard::{PeerConnectionMark, REQUEST_TIMEOUT};
pub use handlers::{router, LocalNode, NodeFuture, PeerServer};
pub use network::Network;
pub use requests::PeerRequests;
