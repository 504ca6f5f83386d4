//! The one place where Raft role, quorum lease, HAProxy health and operator intent meet.
//!
//! - [`core`]: a pure state machine — `step(now, input) -> actions` — that owns [`decide`],
//!   the fence, the election timer, the pre-vote and handover episodes, the stop, the notify
//!   events and the grant rules. No I/O, tested with injected time.
//! - [`driver`]: the async loop that only gathers inputs (Raft metrics, health, maintenance,
//!   VIP bindability, timers, peer answers, the stop token) and executes the core's actions.
//!
//! Dependencies point one way: the supervisor sees health through [`crate::health::HealthFeed`],
//! the VIPs through [`crate::vip::VipHolder`] and peers through [`Peers`]; it never imports
//! the peer module, the API or the daemon, which provides the adapters.

pub mod core;
pub mod driver;

pub use self::core::{
    decide, failover_duration, Action, Core, Decision, Input, Inputs, PrevoteQuestion, RaftReport,
    Reason, Setup, SupervisorState, Timing, OVERLAP_BOUND, STOP_HANDOVER_BOUND, TRANSFER_BOUND,
};
pub use driver::{Peers, Supervisor};
