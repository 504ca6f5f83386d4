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
//! the next periodic check. The link watcher subscribes to RTNLGRP_LINK so that an interface
//! going down, losing carrier, vanishing or coming back is checked at once, and a box whose
//! links do not change is never woken to check them.
//!
//! Adds, removals and lease renewals go out in batches: one datagram holding up to
//! [`BATCH_MAX`] requests, with an ACK asked for the last one only. The kernel handles a
//! datagram's messages in order, inside the send, and answers one without ACK only if it
//! fails, so one send and (when all is well) one receive bind, renew or remove dozens of VIPs.
//! Binding 200 VIPs took ~30 ms as 200 pipelined requests through neli's router (its reader
//! thread wakes per answer; debug build) and takes ~2.7 ms so (1.2 ms optimised). That serves
//! issue 12 (the last of 50 VIPs announced within 10 ms of the first) and issue 13 (renewals
//! are the one steady cost of holding VIPs, four a second per VIP with the default 1 s
//! lifetime). The batch size bounds the error answers
//! queued at once (an error carries the request back, ~1 kB of receive buffer each), far
//! below the socket's default receive buffer. The kernel stamps the IPv4 address events these
//! requests cause with the sender's netlink port, and a socket filter on the watcher drops
//! events stamped with our ports in the kernel, so our own changes do not even wake the
//! watcher. (IPv6 events carry port 0; those the watcher discards by looking.) Address dumps
//! go out on the same socket and read their multi-part answer up to NLMSG_DONE: neli's router
//! would assemble it, but keeps a reader thread that wakes ten times a second on every node
//! for nothing (issue 12's idle footprint).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use neli::consts::nl::{NlmF, NlmsgerrAttr};
use neli::consts::rtnl::{Ifa, IfaF, RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::NlFamily;
use neli::err::SocketError;
use neli::nl::NlmsghdrBuilder;
use neli::nl::{NlPayload, Nlmsghdr};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, RtattrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use neli::ToBytes;
use tokio::io::unix::AsyncFd;

use super::packet;
use super::{AddressControl, Cause, Vip, VipError};
use crate::config::MAX_LABEL_LEN;

/// How long a batch waits for the kernel's answer (it takes about a millisecond).
const BATCH_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Requests per datagram (see the module docs).
pub const BATCH_MAX: usize = 64;

/// Adds, removes and checks VIPs through one rtnetlink socket (see the module docs). Needs
/// CAP_NET_ADMIN for add and remove.
pub struct NetlinkControl {
    /// Valid and preferred lifetime (seconds) given to every add; None: permanent.
    lifetime_s: Option<u32>,
    /// The interface index each VIP was bound on: removal goes there even if the interface
    /// was renamed since (a std Mutex: held for a map update only).
    bound_on: Mutex<HashMap<IpAddr, u32>>,
    /// The socket for batches and dumps (see the module docs).
    batches: Mutex<RequestSocket>,
    /// The socket of the link checks, opened once: they run at every link event, hold,
    /// release and reconcile.
    links: packet::LinkStates,
}

impl std::fmt::Debug for NetlinkControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkControl")
            .field("lifetime_s", &self.lifetime_s)
            .finish_non_exhaustive()
    }
}

/// The socket requests go out on, with the sequence number its next request takes: answers
/// are matched to requests by it, and a late answer to a request that timed out is skipped.
struct RequestSocket {
    socket: NlSocketHandle,
    next_seq: u32,
}

impl RequestSocket {
    /// Takes `count` consecutive sequence numbers and returns the first.
    fn take_seqs(&mut self, count: usize) -> u32 {
        let first = self.next_seq;
        // Wraps around; `count` is at most BATCH_MAX, so the cast cannot truncate.
        self.next_seq = first.wrapping_add(count as u32);
        first
    }
}

impl NetlinkControl {
    /// Opens the socket in the calling thread's network namespace.
    pub fn connect() -> Result<Self, VipError> {
        let open = |e: String| VipError::Open {
            cause: Cause::Netlink(e),
        };
        let batches = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| open(e.to_string()))?;
        // Extended ACKs put the kernel's own explanation into error messages; strict
        // checking makes the kernel honour the interface filter of address dumps.
        batches
            .enable_ext_ack(true)
            .map_err(|e| open(e.to_string()))?;
        batches
            .enable_strict_checking(true)
            .map_err(|e| open(e.to_string()))?;
        set_receive_timeout(batches.as_raw_fd(), BATCH_ANSWER_TIMEOUT)
            .map_err(|e| open(e.to_string()))?;
        let links = packet::LinkStates::open().map_err(|cause| VipError::Open { cause })?;
        Ok(Self {
            lifetime_s: None,
            bound_on: Mutex::new(HashMap::new()),
            batches: Mutex::new(RequestSocket {
                socket: batches,
                next_seq: 1,
            }),
            links,
        })
    }

    /// The netlink ports this control sends from: the address events its own changes cause
    /// carry them (IPv4), so a watcher can ignore those ([`AddressWatcher::subscribe`]).
    pub fn ports(&self) -> Vec<u32> {
        vec![crate::sync::lock(&self.batches).socket.pid()]
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

    /// Every (address, prefix length) on interface `ifindex` of `vip`'s family: one dump
    /// request on the batch socket, its multi-part answer read up to NLMSG_DONE.
    fn dump(&self, vip: &Vip, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, Cause> {
        let msg = Self::header(vip, ifindex, IfaF::empty())
            .ifa_prefixlen(0)
            .build()
            .map_err(|e| Cause::Netlink(e.to_string()))?;
        let mut batches = crate::sync::lock(&self.batches);
        let seq = batches.take_seqs(1);
        let socket = &batches.socket;
        let request = NlmsghdrBuilder::default()
            .nl_type(Rtm::Getaddr)
            .nl_flags(NlmF::REQUEST | NlmF::DUMP)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(msg))
            .build()
            .map_err(|e| Cause::Netlink(e.to_string()))?;
        socket
            .send(&request)
            .map_err(|e| Cause::Netlink(e.to_string()))?;
        let mut found = Vec::new();
        loop {
            let (answers, _) = socket
                .recv::<Rtm, Ifaddrmsg>()
                .map_err(|e| Cause::Netlink(e.to_string()))?;
            for answer in answers {
                let answer = answer.map_err(|e| Cause::Netlink(e.to_string()))?;
                // A late answer to a batch that timed out is not this dump's.
                if *answer.nl_seq() != seq {
                    continue;
                }
                if u16::from(*answer.nl_type()) == libc::NLMSG_DONE as u16 {
                    return Ok(found);
                }
                match answer.nl_payload() {
                    NlPayload::Payload(addr) if *addr.ifa_index() == ifindex => {
                        if let Some(ip) = address_of(addr) {
                            found.push((ip, *addr.ifa_prefixlen()));
                        }
                    }
                    NlPayload::Err(e) => {
                        return Err(errno_cause(-*e.error(), None, &vip.interface, ""))
                    }
                    _ => {}
                }
            }
        }
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

    /// The interface index `vip` was bound on by this control, else its interface's now.
    fn bound_index(&self, vip: &Vip) -> Result<u32, Cause> {
        let bound_on = crate::sync::lock(&self.bound_on);
        match bound_on.get(&vip.addr.ip) {
            Some(&index) => Ok(index),
            None => packet::ifindex(&vip.interface),
        }
    }

    /// Sends `requests` (each: the index of its VIP in `vips`, the message) as `kind` with
    /// `flags`, in datagrams of up to [`BATCH_MAX`] with an ACK on the last (see the module
    /// docs), and writes each failure into its VIP's slot of `results`; the errno `benign`
    /// means "already so" (EEXIST for an exclusive add, EADDRNOTAVAIL for a removal).
    fn send_batches(
        &self,
        vips: &[&Vip],
        kind: Rtm,
        flags: NlmF,
        requests: Vec<(usize, Ifaddrmsg)>,
        benign: i32,
        results: &mut [Result<(), Cause>],
    ) {
        let mut batches = crate::sync::lock(&self.batches);
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<(usize, Ifaddrmsg)> = requests.by_ref().take(BATCH_MAX).collect();
            let base = batches.take_seqs(chunk.len());
            let socket = &batches.socket;
            let owners: Vec<usize> = chunk.iter().map(|&(vip, _)| vip).collect();
            let last = chunk.len() - 1;
            let mut datagram = io::Cursor::new(Vec::new());
            for (n, (vip, message)) in chunk.into_iter().enumerate() {
                let ack = if n == last { NlmF::ACK } else { NlmF::empty() };
                let written = NlmsghdrBuilder::default()
                    .nl_type(kind)
                    .nl_flags(NlmF::REQUEST | flags | ack)
                    .nl_seq(base.wrapping_add(n as u32))
                    .nl_payload(NlPayload::Payload(message))
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|m| m.to_bytes(&mut datagram).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    results[vip] = Err(Cause::Netlink(e));
                }
            }
            // SAFETY: send(2) of an initialised buffer on a descriptor `socket` owns.
            let sent = unsafe {
                let bytes = datagram.get_ref();
                libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0)
            };
            let outcome = if sent < 0 {
                Err(io::Error::last_os_error().to_string())
            } else {
                read_answers(socket, vips, base, &owners, benign, results)
            };
            if let Err(e) = outcome {
                for &vip in &owners {
                    if results[vip].is_ok() {
                        results[vip] = Err(Cause::Netlink(format!("not confirmed: {e}")));
                    }
                }
            }
        }
    }

    /// Every VIP's add (replacing or exclusive per `flags`) on the index `ifindex` gives it,
    /// batched; one result per VIP.
    fn add_batch(
        &self,
        vips: &[&Vip],
        flags: NlmF,
        mut ifindex: impl FnMut(&Vip) -> Result<u32, Cause>,
    ) -> Vec<Result<(), Cause>> {
        let mut results: Vec<Result<(), Cause>> = Vec::with_capacity(vips.len());
        let mut requests = Vec::with_capacity(vips.len());
        for (i, vip) in vips.iter().enumerate() {
            let message = ifindex(vip).and_then(|ifindex| self.add_message(vip, ifindex));
            results.push(message.map(|message| requests.push((i, message))));
        }
        self.send_batches(
            vips,
            Rtm::Newaddr,
            flags,
            requests,
            libc::EEXIST,
            &mut results,
        );
        results
    }
}

/// Reads answers to one datagram until the one to its last message (ACK or error): message
/// `n` had sequence `base + n` and was for VIP `owners[n]`, whose slot of `results` gets the
/// error unless it is `benign`. Answers to an older datagram that timed out are skipped.
fn read_answers(
    socket: &NlSocketHandle,
    vips: &[&Vip],
    base: u32,
    owners: &[usize],
    benign: i32,
    results: &mut [Result<(), Cause>],
) -> Result<(), String> {
    loop {
        let (messages, _) = socket.recv::<Rtm, Ifaddrmsg>().map_err(|e| e.to_string())?;
        for message in messages {
            let message = message.map_err(|e| e.to_string())?;
            let n = message.nl_seq().wrapping_sub(base) as usize;
            let Some(&vip) = owners.get(n) else {
                continue;
            };
            match message.nl_payload() {
                NlPayload::Err(e) if -*e.error() == benign => {}
                NlPayload::Err(e) => {
                    let detail = e
                        .ext_ack()
                        .get_attr_handle()
                        .get_attr_payload_as_with_len::<String>(NlmsgerrAttr::Msg)
                        .ok();
                    let interface = &vips[vip].interface;
                    results[vip] =
                        Err(errno_cause(-*e.error(), detail, interface, "CAP_NET_ADMIN"));
                }
                NlPayload::Ack(_) => {}
                _ => continue,
            }
            if n == owners.len() - 1 {
                return Ok(());
            }
        }
    }
}

/// SO_RCVTIMEO: a blocking receive gives up after `timeout` (EAGAIN).
fn set_receive_timeout(fd: RawFd, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    packet::set_socket_option(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
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
        // Resolved once per interface, and remembered per VIP for its removal.
        let mut ifindexes: HashMap<String, u32> = HashMap::new();
        let results = self.add_batch(vips, flags, |vip| match ifindexes.get(&vip.interface) {
            Some(&index) => Ok(index),
            None => {
                let index = packet::ifindex(&vip.interface)?;
                ifindexes.insert(vip.interface.clone(), index);
                Ok(index)
            }
        });
        let mut bound_on = crate::sync::lock(&self.bound_on);
        vips.iter()
            .zip(results)
            .map(|(vip, result)| {
                if let (Ok(()), Some(&ifindex)) = (&result, ifindexes.get(&vip.interface)) {
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

    /// Replacing adds on the index each VIP was bound on, batched like every add. Without a
    /// lifetime there is nothing to renew: a plain [`Self::add_all`].
    fn renew_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        if self.lifetime_s.is_none() {
            return self.add_all(vips);
        }
        let results = self.add_batch(vips, NlmF::CREATE | NlmF::REPLACE, |vip| {
            self.bound_index(vip)
        });
        vips.iter()
            .zip(results)
            .map(|(vip, result)| {
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
        let mut results: Vec<Result<(), Cause>> = Vec::with_capacity(vips.len());
        let mut requests = Vec::new();
        for (i, vip) in vips.iter().enumerate() {
            let mut messages = || -> Result<Vec<Ifaddrmsg>, Cause> {
                let ifindex = self.bound_index(vip)?;
                let found = match dumps.entry((ifindex, vip.addr.ip.is_ipv4())) {
                    std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(self.dump(vip, ifindex)?)
                    }
                };
                found
                    .iter()
                    .filter(|(ip, _)| *ip == vip.addr.ip)
                    .map(|&(_, prefix_len)| {
                        let mut exact = (*vip).clone();
                        exact.addr.prefix_len = prefix_len;
                        Self::remove_message(&exact, ifindex)
                    })
                    .collect()
            };
            results.push(messages().map(|messages| {
                requests.extend(messages.into_iter().map(|message| (i, message)));
            }));
        }
        self.send_batches(
            vips,
            Rtm::Deladdr,
            NlmF::empty(),
            requests,
            libc::EADDRNOTAVAIL,
            &mut results,
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

    /// One link lookup per interface for all VIPs. (Adding to a down interface succeeds, so
    /// the add's errno cannot tell; the link flags can.)
    fn usable_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        // Asked once per usable interface (Cause is not Clone: a failure is asked per VIP).
        let mut usable: HashSet<&str> = HashSet::new();
        vips.iter()
            .map(|vip| {
                let cause = if usable.contains(vip.interface.as_str()) {
                    None
                } else {
                    match self.links.usable(&vip.interface) {
                        Ok(()) => {
                            usable.insert(&vip.interface);
                            None
                        }
                        Err(cause) => Some(cause),
                    }
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
    /// Subscribes in the calling thread's network namespace, ignoring events stamped with one
    /// of `own_ports` (our own changes, [`NetlinkControl::ports`]). Must run inside a tokio
    /// runtime.
    pub fn subscribe(own_ports: &[u32]) -> Result<Self, VipError> {
        let fail = |cause| VipError::Watch { cause };
        // Filter first, then join: no unfiltered event can be queued in between.
        let socket = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| fail(socket_cause(e)))?;
        let fd = socket.as_raw_fd();
        drop_events_from(fd, own_ports).map_err(|e| fail(Cause::Os(e)))?;
        socket
            .add_mcast_membership(Groups::new_groups(&[
                libc::RTNLGRP_IPV4_IFADDR,
                libc::RTNLGRP_IPV6_IFADDR,
            ]))
            .map_err(|e| fail(socket_cause(e)))?;
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

/// Tells when any link of this network namespace changed (RTM_NEWLINK / RTM_DELLINK: up or
/// down, carrier, added, removed, renamed). It does not say which or how: the caller re-reads
/// the few interfaces it cares about, which also covers events lost to an overrun.
pub struct LinkWatcher {
    socket: AsyncFd<OwnedFd>,
}

impl LinkWatcher {
    /// Subscribes in the calling thread's network namespace. Must run inside a tokio runtime.
    pub fn subscribe() -> Result<Self, VipError> {
        use nix::sys::socket::{bind, socket, AddressFamily, NetlinkAddr};
        use nix::sys::socket::{SockFlag, SockProtocol, SockType};
        let fail = |e: io::Error| VipError::Watch {
            cause: Cause::Os(e),
        };
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| fail(e.into()))?;
        let groups = NetlinkAddr::new(0, libc::RTMGRP_LINK as u32);
        bind(socket.as_raw_fd(), &groups).map_err(|e| fail(e.into()))?;
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open until dropped.
        let socket =
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
                .map_err(|e| fail(e.into_parts().1))?;
        Ok(Self { socket })
    }

    /// Waits until a link changed, then discards every event queued: one re-check covers
    /// them all. An overrun (ENOBUFS: events were lost) counts as a change.
    pub async fn changed(&mut self) -> Result<(), VipError> {
        use nix::errno::Errno;
        use nix::sys::socket::{recv, MsgFlags};
        // The events are not read, only counted: the rest of each datagram is dropped.
        let mut head = [0u8; 64];
        loop {
            let mut guard = self.socket.readable().await.map_err(|e| VipError::Watch {
                cause: Cause::Os(e),
            })?;
            let mut changed = false;
            loop {
                match recv(guard.get_inner().as_raw_fd(), &mut head, MsgFlags::empty()) {
                    Ok(_) | Err(Errno::ENOBUFS) => changed = true,
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => {
                        return Err(VipError::Watch {
                            cause: Cause::Os(e.into()),
                        })
                    }
                }
            }
            if changed {
                return Ok(());
            }
        }
    }
}

/// Attaches a classic BPF filter to the netlink socket `fd` that drops every message whose
/// sender port (`nlmsg_pid`, offset 12) is one of `ports`: the kernel then never queues the
/// address events our own requests cause. BPF loads are big-endian, netlink headers are in
/// host order: the constants are byte-swapped to match. (A jump offset is a byte: at most 254
/// ports, far more than the two we have.)
fn drop_events_from(fd: RawFd, ports: &[u32]) -> io::Result<()> {
    const NLMSG_PID_OFFSET: u32 = 12;
    let insn = |code: u32, jt: usize, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt: u8::try_from(jt).unwrap_or(u8::MAX),
        jf,
        k,
    };
    let mut program = vec![insn(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        0,
        0,
        NLMSG_PID_OFFSET,
    )];
    for (n, port) in ports.iter().enumerate() {
        // Equal: skip the other comparisons and the accept, to the drop.
        let to_drop = ports.len() - n;
        let k = u32::from_be_bytes(port.to_ne_bytes());
        program.push(insn(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            to_drop,
            0,
            k,
        ));
    }
    program.push(insn(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX));
    program.push(insn(libc::BPF_RET | libc::BPF_K, 0, 0, 0));
    // `program` outlives the call; the kernel copies it.
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_mut_ptr(),
    };
    packet::set_socket_option(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
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
