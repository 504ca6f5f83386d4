//! Binding VIPs with rtnetlink (neli 0.7): add, remove, is-bound, and a watcher of address
//! events.
//!
//! Netlink rather than `ip addr` because a takeover is on the failover path: one request and
//! its ACK take ~0.1 ms, a process spawn tens of ms, and netlink hands back a typed errno
//! (a negative value in `Nlmsgerr`) instead of text to parse. All operations are idempotent
//! — adding a present VIP and removing an absent one succeed — so the executor can re-apply
//! the desired state on every reconcile without first asking what is there.
//!
//! The watcher subscribes to RTNLGRP_IPV4_IFADDR / RTNLGRP_IPV6_IFADDR so that a VIP deleted
//! by someone else (networkd, NetworkManager, an operator) is noticed at once rather than at
//! the next periodic check.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use neli::consts::nl::{NlmF, NlmsgerrAttr};
use neli::consts::rtnl::{Ifa, IfaF, RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::NlFamily;
use neli::err::{RouterError, SocketError};
use neli::nl::{NlPayload, Nlmsghdr};
use neli::router::synchronous::{NlRouter, NlRouterReceiverHandle};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, RtattrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use tokio::io::unix::AsyncFd;

use super::packet;
use super::{AddressControl, Cause, Vip, VipError};
use crate::config::MAX_LABEL_LEN;

/// Adds, removes and checks VIPs through one rtnetlink socket (neli's router runs one
/// reader thread for it). Needs CAP_NET_ADMIN for add and remove.
pub struct NetlinkControl {
    router: NlRouter,
    /// Valid and preferred lifetime (seconds) given to every add; None: permanent.
    lifetime_s: Option<u32>,
    /// The interface index each VIP was bound on: removal goes there even if the interface
    /// was renamed since (a std Mutex: held for a map update only).
    bound_on: Mutex<HashMap<IpAddr, u32>>,
}

impl std::fmt::Debug for NetlinkControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkControl")
            .field("pid", &self.router.pid())
            .finish()
    }
}

/// A request sent, its answer not read yet (or why it could not be sent).
type Pending = Result<NlRouterReceiverHandle<Rtm, Ifaddrmsg>, String>;

/// What the kernel answered to one request, before it is tied to an operation.
enum Answer {
    Done,
    Errno(i32, Option<String>),
    Other(String),
}

impl NetlinkControl {
    /// Opens the socket in the calling thread's network namespace.
    pub fn connect() -> Result<Self, VipError> {
        let open = |e: String| VipError::Open {
            cause: Cause::Netlink(e),
        };
        let (router, _multicast) = NlRouter::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| open(e.to_string()))?;
        // Extended ACKs put the kernel's own explanation into error messages; strict
        // checking makes the kernel honour the interface filter of address dumps.
        router
            .enable_ext_ack(true)
            .map_err(|e| open(e.to_string()))?;
        router
            .enable_strict_checking(true)
            .map_err(|e| open(e.to_string()))?;
        Ok(Self {
            router,
            lifetime_s: None,
            bound_on: Mutex::new(HashMap::new()),
        })
    }

    /// Every add binds with this valid and preferred lifetime (0: permanent) and replaces an
    /// existing address, so adding again renews the lease: the kernel drops a VIP nobody
    /// renews (issue 8: a dead or frozen holder must not keep it).
    pub fn with_lifetime(mut self, lifetime_s: u32) -> Self {
        self.lifetime_s = (lifetime_s > 0).then_some(lifetime_s);
        self
    }

    fn header(vip: &Vip, ifindex: u32, flags: IfaF) -> IfaddrmsgBuilder {
        IfaddrmsgBuilder::default()
            .ifa_family(family(vip.addr.ip))
            .ifa_prefixlen(vip.addr.prefix_len)
            .ifa_flags(flags)
            .ifa_scope(RtScope::Universe)
            .ifa_index(ifindex)
    }

    /// Sends one request with ACK without waiting for the answer: neli's router matches the
    /// kernel's answers to requests by sequence number, so many requests can be in flight and
    /// a batch costs one round trip instead of one per VIP.
    fn submit(&self, kind: Rtm, flags: NlmF, msg: Ifaddrmsg) -> Pending {
        self.router
            .send::<_, _, Rtm, Ifaddrmsg>(kind, flags | NlmF::ACK, NlPayload::Payload(msg))
            .map_err(|e| e.to_string())
    }

    /// Waits for the answer to a submitted request.
    fn answer(pending: Pending) -> Answer {
        let answers = match pending {
            Ok(answers) => answers,
            Err(e) => return Answer::Other(e),
        };
        for answer in answers {
            match answer {
                Ok(_) => {}
                Err(RouterError::Nlmsgerr(e)) => {
                    let detail = e
                        .ext_ack()
                        .get_attr_handle()
                        .get_attr_payload_as_with_len::<String>(NlmsgerrAttr::Msg)
                        .ok();
                    return Answer::Errno(-*e.error(), detail);
                }
                Err(e) => return Answer::Other(e.to_string()),
            }
        }
        Answer::Done
    }

    fn attrs(vip: &Vip, with_label: bool) -> Result<RtBuffer<Ifa, Buffer>, Cause> {
        let bytes = ip_bytes(vip.addr.ip);
        let mut attrs = RtBuffer::new();
        let build = |kind: Ifa| {
            RtattrBuilder::default()
                .rta_type(kind)
                .rta_payload(bytes.as_slice())
                .build()
                .map_err(|e| Cause::Netlink(e.to_string()))
        };
        // IFA_LOCAL is the address itself; IFA_ADDRESS the peer, equal for a non-p2p address.
        attrs.push(build(Ifa::Local)?);
        attrs.push(build(Ifa::Address)?);
        if let (true, Some(label), IpAddr::V4(_)) = (with_label, &vip.label, vip.addr.ip) {
            if label.len() <= MAX_LABEL_LEN {
                attrs.push(
                    RtattrBuilder::default()
                        .rta_type(Ifa::Label)
                        .rta_payload(label.as_str())
                        .build()
                        .map_err(|e| Cause::Netlink(e.to_string()))?,
                );
            }
        }
        Ok(attrs)
    }

    /// Every (address, prefix length) on interface `ifindex` of `vip`'s family.
    fn dump(&self, vip: &Vip, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, Cause> {
        let msg = Self::header(vip, ifindex, IfaF::empty())
            .ifa_prefixlen(0)
            .build()
            .map_err(|e| Cause::Netlink(e.to_string()))?;
        let answers = self
            .router
            .send::<_, _, Rtm, Ifaddrmsg>(Rtm::Getaddr, NlmF::DUMP, NlPayload::Payload(msg))
            .map_err(|e| Cause::Netlink(e.to_string()))?;
        let mut found = Vec::new();
        for answer in answers {
            let answer: Nlmsghdr<Rtm, Ifaddrmsg> = match answer {
                Ok(answer) => answer,
                Err(RouterError::Nlmsgerr(e)) => {
                    return Err(errno_cause(-*e.error(), None, &vip.interface, ""))
                }
                Err(e) => return Err(Cause::Netlink(e.to_string())),
            };
            if let NlPayload::Payload(addr) = answer.nl_payload() {
                if *addr.ifa_index() != ifindex {
                    continue;
                }
                if let Some(ip) = address_of(addr) {
                    found.push((ip, *addr.ifa_prefixlen()));
                }
            }
        }
        Ok(found)
    }
}

impl NetlinkControl {
    /// RTM_NEWADDR for `vip` on `ifindex`, with IFA_CACHEINFO when a lifetime is set.
    fn add_message(&self, vip: &Vip, ifindex: u32) -> Result<Ifaddrmsg, Cause> {
        // NODAD: otherwise an IPv6 VIP stays "tentative" for ~2 s and HAProxy cannot use it;
        // duplicates are looked for by our own probe instead.
        let flags = match vip.addr.ip {
            IpAddr::V4(_) => IfaF::empty(),
            IpAddr::V6(_) => IfaF::NODAD,
        };
        let mut attrs = Self::attrs(vip, true)?;
        if let Some(lifetime) = self.lifetime_s {
            // struct ifa_cacheinfo: preferred, valid (seconds), cstamp, tstamp (set by the
            // kernel), native endian.
            let mut info = [0u8; 16];
            info[0..4].copy_from_slice(&lifetime.to_ne_bytes());
            info[4..8].copy_from_slice(&lifetime.to_ne_bytes());
            attrs.push(
                RtattrBuilder::default()
                    .rta_type(Ifa::Cacheinfo)
                    .rta_payload(&info[..])
                    .build()
                    .map_err(|e| Cause::Netlink(e.to_string()))?,
            );
        }
        Self::header(vip, ifindex, flags)
            .rtattrs(attrs)
            .build()
            .map_err(|e| Cause::Netlink(e.to_string()))
    }

    /// RTM_DELADDR for `vip` on `ifindex`.
    fn remove_message(vip: &Vip, ifindex: u32) -> Result<Ifaddrmsg, Cause> {
        Self::header(vip, ifindex, IfaF::empty())
            .rtattrs(Self::attrs(vip, false)?)
            .build()
            .map_err(|e| Cause::Netlink(e.to_string()))
    }

    /// Sends the requests `messages` makes for each VIP (none: nothing to do), all before
    /// reading any answer, and maps the answers, one result per VIP: `benign` is the errno
    /// that means "already so" (EEXIST for add, EADDRNOTAVAIL for remove).
    fn batch(
        &self,
        vips: &[&Vip],
        kind: Rtm,
        flags: NlmF,
        mut messages: impl FnMut(&Vip) -> Result<Vec<Ifaddrmsg>, Cause>,
        benign: i32,
    ) -> Vec<Result<(), Cause>> {
        let pending: Vec<Result<Vec<Pending>, Cause>> = vips
            .iter()
            .map(|vip| {
                Ok(messages(vip)?
                    .into_iter()
                    .map(|msg| self.submit(kind, flags, msg))
                    .collect())
            })
            .collect();
        pending
            .into_iter()
            .zip(vips)
            .map(|(pending, vip)| {
                for pending in pending? {
                    match Self::answer(pending) {
                        Answer::Done => {}
                        Answer::Errno(errno, _) if errno == benign => {}
                        Answer::Errno(errno, detail) => {
                            return Err(errno_cause(errno, detail, &vip.interface, "CAP_NET_ADMIN"))
                        }
                        Answer::Other(e) => return Err(Cause::Netlink(e)),
                    }
                }
                Ok(())
            })
            .collect()
    }

    /// The interface index `vip` was bound on by this control, else its interface's now.
    fn bound_index(&self, vip: &Vip) -> Result<u32, Cause> {
        let bound_on = crate::sync::lock(&self.bound_on);
        match bound_on.get(&vip.addr.ip) {
            Some(&index) => Ok(index),
            None => packet::ifindex(&vip.interface),
        }
    }
}

impl AddressControl for NetlinkControl {
    fn add(&self, vip: &Vip) -> Result<(), VipError> {
        self.add_all(&[vip]).pop().unwrap_or(Ok(()))
    }

    fn remove(&self, vip: &Vip) -> Result<(), VipError> {
        self.remove_all(&[vip]).pop().unwrap_or(Ok(()))
    }

    fn is_bound(&self, vip: &Vip) -> Result<bool, VipError> {
        self.bound_all(&[vip]).pop().unwrap_or(Ok(false))
    }

    /// Without a lifetime: EXCL + "EEXIST is success", an existing VIP is left untouched.
    /// With one: REPLACE, so the add renews the lifetime of a present VIP.
    fn add_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        let flags = match self.lifetime_s {
            None => NlmF::CREATE | NlmF::EXCL,
            Some(_) => NlmF::CREATE | NlmF::REPLACE,
        };
        let mut ifindexes: HashMap<String, u32> = HashMap::new();
        let mut used: Vec<Option<u32>> = Vec::with_capacity(vips.len());
        let results = self.batch(
            vips,
            Rtm::Newaddr,
            flags,
            |vip| {
                let ifindex = match ifindexes.get(&vip.interface) {
                    Some(&index) => index,
                    None => {
                        let index = packet::ifindex(&vip.interface);
                        let index = index.inspect_err(|_| used.push(None))?;
                        ifindexes.insert(vip.interface.clone(), index);
                        index
                    }
                };
                used.push(Some(ifindex));
                Ok(vec![self.add_message(vip, ifindex)?])
            },
            libc::EEXIST,
        );
        let mut bound_on = crate::sync::lock(&self.bound_on);
        vips.iter()
            .zip(results)
            .zip(used)
            .map(|((vip, result), ifindex)| {
                if let (Ok(()), Some(ifindex)) = (&result, ifindex) {
                    bound_on.insert(vip.addr.ip, ifindex);
                }
                result.map_err(|cause| VipError::Add {
                    vip: vip.addr,
                    interface: vip.interface.clone(),
                    cause,
                })
            })
            .collect()
    }

    /// Removes the address whatever its prefix length (a VIP left with another one, e.g. by
    /// an operator or an older config, is found too), on the interface index it was bound on.
    /// Absent counts as already released. One dump per interface and family.
    fn remove_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        let mut dumps: HashMap<(u32, bool), Vec<(IpAddr, u8)>> = HashMap::new();
        let results = self.batch(
            vips,
            Rtm::Deladdr,
            NlmF::empty(),
            |vip| {
                let ifindex = self.bound_index(vip)?;
                let key = (ifindex, vip.addr.ip.is_ipv4());
                let found = match dumps.entry(key) {
                    std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(self.dump(vip, ifindex)?)
                    }
                };
                found
                    .iter()
                    .filter(|(ip, _)| *ip == vip.addr.ip)
                    .map(|&(_, prefix_len)| {
                        let mut exact = vip.clone();
                        exact.addr.prefix_len = prefix_len;
                        Self::remove_message(&exact, ifindex)
                    })
                    .collect()
            },
            libc::EADDRNOTAVAIL,
        );
        let mut bound_on = crate::sync::lock(&self.bound_on);
        vips.iter()
            .zip(results)
            .map(|(vip, result)| {
                if result.is_ok() {
                    bound_on.remove(&vip.addr.ip);
                }
                result.map_err(|cause| VipError::Remove {
                    vip: vip.addr,
                    interface: vip.interface.clone(),
                    cause,
                })
            })
            .collect()
    }

    /// One address dump per interface and family, however many VIPs share them.
    fn bound_all(&self, vips: &[&Vip]) -> Vec<Result<bool, VipError>> {
        // Cause is not Clone: a failed dump is shared as text by the VIPs it concerns.
        // Addresses only, whatever their prefix length: a VIP left as /24 is still this VIP.
        type Found = Result<HashSet<IpAddr>, String>;
        let mut dumps: HashMap<(u32, bool), Found> = HashMap::new();
        vips.iter()
            .map(|vip| {
                let fail = |cause| VipError::Check {
                    vip: vip.addr,
                    interface: vip.interface.clone(),
                    cause,
                };
                let ifindex = packet::ifindex(&vip.interface).map_err(fail)?;
                let found = dumps
                    .entry((ifindex, vip.addr.ip.is_ipv4()))
                    .or_insert_with(|| {
                        self.dump(vip, ifindex)
                            .map(|found| found.into_iter().map(|(ip, _)| ip).collect())
                            .map_err(|cause| cause.to_string())
                    });
                match found {
                    Ok(found) => Ok(found.contains(&vip.addr.ip)),
                    Err(cause) => Err(fail(Cause::Netlink(cause.clone()))),
                }
            })
            .collect()
    }

    /// One link dump for all VIPs. (Adding to a down interface succeeds, so the add's errno
    /// cannot tell; the link flags can.)
    fn usable_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        let links = packet::link_flags().map_err(|cause| cause.to_string());
        vips.iter()
            .map(|vip| {
                let cause = match &links {
                    Ok(links) => packet::link_usable(links, &vip.interface).err(),
                    Err(e) => Some(Cause::Netlink(e.clone())),
                };
                cause.map_or(Ok(()), |cause| {
                    Err(VipError::Unusable {
                        vip: vip.addr,
                        interface: vip.interface.clone(),
                        cause,
                    })
                })
            })
            .collect()
    }
}

fn family(ip: IpAddr) -> RtAddrFamily {
    match ip {
        IpAddr::V4(_) => RtAddrFamily::Inet,
        IpAddr::V6(_) => RtAddrFamily::Inet6,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The address of an RTM_NEWADDR/RTM_DELADDR message: IFA_LOCAL when present (IPv4, and
/// IPv6 point-to-point), else IFA_ADDRESS.
fn address_of(msg: &Ifaddrmsg) -> Option<IpAddr> {
    let attrs = msg.rtattrs().get_attr_handle();
    let raw = attrs
        .get_attribute(Ifa::Local)
        .or_else(|| attrs.get_attribute(Ifa::Address))?;
    let bytes: &[u8] = raw.rta_payload().as_ref();
    match (msg.ifa_family(), bytes.len()) {
        (RtAddrFamily::Inet, 4) => {
            let octets: [u8; 4] = bytes.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        (RtAddrFamily::Inet6, 16) => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// Maps a netlink errno to a cause; `capability` names what EPERM lacks.
fn errno_cause(
    errno: i32,
    detail: Option<String>,
    interface: &str,
    capability: &'static str,
) -> Cause {
    match errno {
        libc::ENODEV => Cause::InterfaceMissing(interface.to_owned()),
        libc::EPERM | libc::EACCES if !capability.is_empty() => Cause::PermissionDenied(capability),
        libc::ENETDOWN => Cause::LinkDown(interface.to_owned()),
        _ => {
            let os = io::Error::from_raw_os_error(errno);
            match detail.filter(|d| !d.is_empty()) {
                Some(detail) => Cause::Netlink(format!("{os} ({detail})")),
                None => Cause::Os(os),
            }
        }
    }
}

/// An address appearing or vanishing, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressEvent {
    /// RTM_NEWADDR (`present`) or RTM_DELADDR on interface `ifindex`.
    Changed {
        ip: IpAddr,
        prefix_len: u8,
        ifindex: u32,
        present: bool,
    },
    /// The socket's queue overflowed (ENOBUFS): events were lost, so re-check everything.
    Overrun,
}

/// The socket subscribed to address events, driven by tokio.
pub struct AddressWatcher {
    socket: AsyncFd<WatchSocket>,
}

/// `NlSocketHandle` has no public way to become non-blocking, so the flag is set on its
/// descriptor; this wrapper gives `AsyncFd` the raw fd.
struct WatchSocket(NlSocketHandle);

impl AsRawFd for WatchSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AddressWatcher {
    /// Subscribes in the calling thread's network namespace. Must run inside a tokio runtime.
    pub fn subscribe() -> Result<Self, VipError> {
        let fail = |cause| VipError::Watch { cause };
        let groups = Groups::new_groups(&[libc::RTNLGRP_IPV4_IFADDR, libc::RTNLGRP_IPV6_IFADDR]);
        let socket = NlSocketHandle::connect(NlFamily::Route, None, groups)
            .map_err(|e| fail(socket_cause(e)))?;
        let fd = socket.as_raw_fd();
        // SAFETY: fcntl on a descriptor `socket` owns and keeps open.
        let rc = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        };
        if rc < 0 {
            return Err(fail(Cause::Os(io::Error::last_os_error())));
        }
        // SAFETY: the NlSocketHandle inside owns its descriptor until the AsyncFd drops it.
        let socket = unsafe { AsyncFd::register(WatchSocket(socket)) }
            .map_err(|e| fail(Cause::Os(e.into_parts().1)))?;
        Ok(Self { socket })
    }

    /// Waits for the next batch of events (one datagram may carry several).
    pub async fn next(&mut self) -> Result<Vec<AddressEvent>, VipError> {
        loop {
            let mut guard = self.socket.readable().await.map_err(|e| VipError::Watch {
                cause: Cause::Os(e),
            })?;
            let received = guard.get_inner().0.recv::<Rtm, Ifaddrmsg>();
            match received {
                Ok((messages, _groups)) => {
                    let mut events = Vec::new();
                    for message in messages {
                        match message {
                            Ok(message) => events.extend(event_of(&message)),
                            // An unparsable message: something changed; re-check.
                            Err(_) => events.push(AddressEvent::Overrun),
                        }
                    }
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                Err(SocketError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                }
                Err(SocketError::Io(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Ok(vec![AddressEvent::Overrun]);
                }
                Err(e) => {
                    return Err(VipError::Watch {
                        cause: socket_cause(e),
                    })
                }
            }
        }
    }
}

fn event_of(message: &Nlmsghdr<Rtm, Ifaddrmsg>) -> Option<AddressEvent> {
    let present = match message.nl_type() {
        Rtm::Newaddr => true,
        Rtm::Deladdr => false,
        _ => return None,
    };
    let NlPayload::Payload(addr) = message.nl_payload() else {
        return None;
    };
    Some(AddressEvent::Changed {
        ip: address_of(addr)?,
        prefix_len: *addr.ifa_prefixlen(),
        ifindex: *addr.ifa_index(),
        present,
    })
}

fn socket_cause(e: SocketError) -> Cause {
    match e {
        SocketError::Io(io) => match io.raw_os_error() {
            Some(errno) => Cause::Os(io::Error::from_raw_os_error(errno)),
            None => Cause::Netlink(io.to_string()),
        },
        other => Cause::Netlink(other.to_string()),
    }
}
