//! What the supervisor sees of health: [`HealthVerdict`] (one verdict) and [`HealthFeed`] (a
//! stream of them, type-erased so the daemon has one path whether HAProxy is checked or not).
//!
//! The traits live here, beside their implementations ([`super::Health`] on the monitor's
//! `watch` channel, [`NoHealthGate`] without `[haproxy]`), so the dependency points one way:
//! supervisor → health.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use crate::status::HealthStatus;

/// What the supervisor needs from a health verdict.
pub trait HealthVerdict: Send + Sync + 'static {
    fn is_healthy(&self) -> bool;
    /// The verdict as shown in status (None: no health gate configured).
    fn status(&self) -> Option<HealthStatus>;
}

/// A stream of health verdicts of any kind, so the daemon has one path whether HAProxy is
/// checked or not. Implemented for a `watch` of any [`HealthVerdict`].
pub trait HealthFeed: Send + Sync + 'static {
    /// The latest verdict.
    fn is_healthy(&self) -> bool;
    fn status(&self) -> Option<HealthStatus>;
    /// Waits for the next verdict; false when the source stopped reporting.
    fn changed(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// The source stopped reporting.
    fn is_closed(&self) -> bool;
    fn boxed_clone(&self) -> Box<dyn HealthFeed>;
}

impl<H: HealthVerdict> HealthFeed for watch::Receiver<H> {
    fn is_healthy(&self) -> bool {
        self.borrow().is_healthy()
    }
    fn status(&self) -> Option<HealthStatus> {
        self.borrow().status()
    }
    fn changed(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move { watch::Receiver::changed(self).await.is_ok() })
    }
    fn is_closed(&self) -> bool {
        self.has_changed().is_err()
    }
    fn boxed_clone(&self) -> Box<dyn HealthFeed> {
        Box::new(self.clone())
    }
}

/// Health when no `[haproxy]` is configured: always healthy (no gate), never changes.
#[derive(Debug, Clone, Copy)]
pub struct NoHealthGate;

impl HealthFeed for NoHealthGate {
    fn is_healthy(&self) -> bool {
        true
    }
    fn status(&self) -> Option<HealthStatus> {
        None
    }
    fn changed(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(std::future::pending())
    }
    fn is_closed(&self) -> bool {
        false
    }
    fn boxed_clone(&self) -> Box<dyn HealthFeed> {
        Box::new(*self)
    }
}
