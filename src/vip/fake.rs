//! Recording fakes of [`AddressControl`] and [`Announcer`], so the executor and the VIP thread
//! are tested without root. Built for tests only (`cfg(test)`): not part of the public API.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::{AddressControl, Announcer, Cause, Vip, VipError};
use crate::sync::lock;

/// One call made to a fake, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Add(IpAddr),
    Remove(IpAddr),
    IsBound(IpAddr),
    Announce(IpAddr),
    Probe(IpAddr),
}

/// An error a fake is told to return; turned into a [`VipError`] for the operation called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeFailure {
    InterfaceMissing,
    LinkDown,
    PermissionDenied,
}

impl FakeFailure {
    fn cause(&self, vip: &Vip) -> Cause {
        match self {
            FakeFailure::InterfaceMissing => Cause::InterfaceMissing(vip.interface.clone()),
            FakeFailure::LinkDown => Cause::LinkDown(vip.interface.clone()),
            FakeFailure::PermissionDenied => Cause::PermissionDenied("CAP_NET_ADMIN"),
        }
    }
}

/// A kernel address table in memory. `vanish` plays "someone deleted the VIP".
#[derive(Debug, Default)]
pub struct FakeAddressControl {
    bound: Mutex<HashSet<IpAddr>>,
    calls: Mutex<Vec<Call>>,
    failures: Mutex<HashMap<IpAddr, FakeFailure>>,
    /// Time each add or remove takes, to play a slow kernel.
    delay: Mutex<Duration>,
}

impl FakeAddressControl {
    pub fn new() -> Self {
        Self::default()
    }
    /// Addresses currently "in the kernel".
    pub fn bound(&self) -> HashSet<IpAddr> {
        lock(&self.bound).clone()
    }
    pub fn is_present(&self, ip: IpAddr) -> bool {
        lock(&self.bound).contains(&ip)
    }
    /// Removes `ip` behind the executor's back.
    pub fn vanish(&self, ip: IpAddr) {
        lock(&self.bound).remove(&ip);
    }
    /// Adds `ip` behind the executor's back.
    pub fn appear(&self, ip: IpAddr) {
        lock(&self.bound).insert(ip);
    }
    /// Every operation on `ip` fails with `failure` until [`Self::heal`].
    pub fn fail(&self, ip: IpAddr, failure: FakeFailure) {
        lock(&self.failures).insert(ip, failure);
    }
    pub fn heal(&self, ip: IpAddr) {
        lock(&self.failures).remove(&ip);
    }
    /// Every later add and remove takes `delay`.
    pub fn slow(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }
    pub fn count(&self, call: &Call) -> usize {
        lock(&self.calls).iter().filter(|c| *c == call).count()
    }

    fn record(&self, call: Call, vip: &Vip) -> Result<(), Cause> {
        lock(&self.calls).push(call);
        match lock(&self.failures).get(&vip.addr.ip) {
            Some(failure) => Err(failure.cause(vip)),
            None => Ok(()),
        }
    }
}

impl AddressControl for FakeAddressControl {
    fn add(&self, vip: &Vip) -> Result<(), VipError> {
        std::thread::sleep(*lock(&self.delay));
        self.record(Call::Add(vip.addr.ip), vip)
            .map_err(|cause| VipError::Add {
                vip: vip.addr,
                interface: vip.interface.clone(),
                cause,
            })?;
        lock(&self.bound).insert(vip.addr.ip);
        Ok(())
    }
    fn remove(&self, vip: &Vip) -> Result<(), VipError> {
        std::thread::sleep(*lock(&self.delay));
        self.record(Call::Remove(vip.addr.ip), vip)
            .map_err(|cause| VipError::Remove {
                vip: vip.addr,
                interface: vip.interface.clone(),
                cause,
            })?;
        lock(&self.bound).remove(&vip.addr.ip);
        Ok(())
    }
    fn is_bound(&self, vip: &Vip) -> Result<bool, VipError> {
        self.record(Call::IsBound(vip.addr.ip), vip)
            .map_err(|cause| VipError::Check {
                vip: vip.addr,
                interface: vip.interface.clone(),
                cause,
            })?;
        Ok(self.is_present(vip.addr.ip))
    }
    /// A VIP told to fail with a missing or down interface is unusable too.
    fn usable_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        let failures = lock(&self.failures);
        vips.iter()
            .map(|vip| match failures.get(&vip.addr.ip) {
                Some(f @ (FakeFailure::InterfaceMissing | FakeFailure::LinkDown)) => {
                    Err(VipError::Unusable {
                        vip: vip.addr,
                        interface: vip.interface.clone(),
                        cause: f.cause(vip),
                    })
                }
                _ => Ok(()),
            })
            .collect()
    }
}

/// Records announcements and probes; can be told to fail like a downed link.
#[derive(Debug, Default)]
pub struct FakeAnnouncer {
    calls: Mutex<Vec<Call>>,
    failure: Mutex<Option<FakeFailure>>,
}

impl FakeAnnouncer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }
    pub fn count(&self, call: &Call) -> usize {
        lock(&self.calls).iter().filter(|c| *c == call).count()
    }
    pub fn fail(&self, failure: Option<FakeFailure>) {
        *lock(&self.failure) = failure;
    }
    fn record(&self, call: Call, vip: &Vip) -> Result<(), Cause> {
        lock(&self.calls).push(call);
        match &*lock(&self.failure) {
            Some(failure) => Err(failure.cause(vip)),
            None => Ok(()),
        }
    }
}

impl Announcer for FakeAnnouncer {
    fn announce(&self, vip: &Vip) -> Result<(), VipError> {
        self.record(Call::Announce(vip.addr.ip), vip)
            .map_err(|cause| VipError::Announce {
                vip: vip.addr,
                interface: vip.interface.clone(),
                cause,
            })
    }
    fn probe(&self, vip: &Vip) -> Result<(), VipError> {
        self.record(Call::Probe(vip.addr.ip), vip)
            .map_err(|cause| VipError::Probe {
                vip: vip.addr,
                interface: vip.interface.clone(),
                cause,
            })
    }
}
