//! The link layer under the VIP code: interface index and MAC lookups, and AF_PACKET sockets.
//!
//! Kept in one small module because it is the only place with `unsafe` (libc socket calls:
//! nix has no AF_PACKET protocol constants for ARP/IPv6 nor socket filters) and the only place
//! that turns errnos into the operator-facing [`Cause`]s. Lookups are made per call, by name,
//! in the calling thread's network namespace: interfaces can be recreated (new index) or
//! re-addressed (new MAC) while the daemon runs, and a cached value would announce the wrong
//! MAC.

use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::{if_nametoindex, InterfaceFlags};

use super::{Cause, Mac};

/// The index of `interface`, or [`Cause::InterfaceMissing`].
pub fn ifindex(interface: &str) -> Result<u32, Cause> {
    if_nametoindex(interface).map_err(|errno| match errno {
        Errno::ENODEV | Errno::ENXIO => Cause::InterfaceMissing(interface.to_owned()),
        other => Cause::Os(io::Error::from(other)),
    })
}

/// The MAC of `interface`, from the link-layer entry `getifaddrs` reports for it (not from
/// /sys, which shows the namespace of whoever mounted it).
pub fn mac_of(interface: &str) -> Result<Mac, Cause> {
    let addrs = getifaddrs().map_err(|errno| Cause::Os(io::Error::from(errno)))?;
    let mut seen = false;
    for entry in addrs.filter(|a| a.interface_name == interface) {
        seen = true;
        if let Some(mac) = entry
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .filter(|link| link.halen() == 6)
            .and_then(|link| link.addr())
        {
            return Ok(Mac(mac));
        }
    }
    if seen {
        Err(Cause::NoMac(interface.to_owned()))
    } else {
        Err(Cause::InterfaceMissing(interface.to_owned()))
    }
}

/// The flags of every interface, from one `getifaddrs` (one netlink dump) however many
/// interfaces are asked about.
pub fn link_flags() -> Result<HashMap<String, InterfaceFlags>, Cause> {
    let addrs = getifaddrs().map_err(|errno| Cause::Os(io::Error::from(errno)))?;
    Ok(addrs.map(|a| (a.interface_name, a.flags)).collect())
}

/// Whether `interface` could carry a VIP now, from [`link_flags`]: present, up
/// (`ip link set … up`) and with carrier (IFF_RUNNING: the kernel's operational state).
pub fn link_usable(links: &HashMap<String, InterfaceFlags>, interface: &str) -> Result<(), Cause> {
    let flags = links
        .get(interface)
        .ok_or_else(|| Cause::InterfaceMissing(interface.to_owned()))?;
    if flags.contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING) {
        Ok(())
    } else {
        Err(Cause::LinkDown(interface.to_owned()))
    }
}

/// Maps an errno of a socket call to a cause an operator can act on.
fn cause_of(err: io::Error, interface: &str) -> Cause {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Cause::PermissionDenied("CAP_NET_RAW"),
        Some(libc::ENETDOWN) => Cause::LinkDown(interface.to_owned()),
        Some(libc::ENODEV) | Some(libc::ENXIO) => Cause::InterfaceMissing(interface.to_owned()),
        _ => Cause::Os(err),
    }
}

/// A frame received on a [`PacketSocket`], with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub ifindex: u32,
    /// `PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_MULTICAST`, `PACKET_OTHERHOST` or
    /// `PACKET_OUTGOING` (our own frames, skipped by the listener).
    pub pkttype: u8,
}

/// An AF_PACKET SOCK_RAW socket: frames in and out include the Ethernet header.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PacketSocket {
    fn open(protocol: u16, flags: libc::c_int, interface: &str) -> Result<Self, Cause> {
        // SAFETY: plain socket(2); the returned descriptor is owned by the OwnedFd below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
                libc::c_int::from(protocol.to_be()),
            )
        };
        if fd < 0 {
            return Err(cause_of(io::Error::last_os_error(), interface));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// A send-only socket (protocol 0: the kernel queues nothing to it), not bound to an
    /// interface: every send names its interface index in the sockaddr_ll.
    pub fn sender() -> Result<Self, Cause> {
        Self::open(0, 0, "any")
    }

    /// Sends one complete Ethernet frame out of `ifindex`. The sockaddr_ll carries the
    /// EtherType so the kernel's skb protocol (seen by tc and taps) matches the frame.
    pub fn send_to(
        &self,
        frame: &[u8],
        ifindex: u32,
        ethertype: u16,
        interface: &str,
    ) -> Result<(), Cause> {
        let mut dst = [0u8; 6];
        if let Some(d) = frame.get(..6) {
            dst.copy_from_slice(d);
        }
        let addr = sockaddr_ll(ifindex, ethertype, Some(dst));
        // SAFETY: `frame` is a valid buffer of `frame.len()` bytes; `addr` as in `sender`.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(cause_of(io::Error::last_os_error(), interface));
        }
        Ok(())
    }

    /// A non-blocking receiver of `ethertype` frames on every interface, optionally narrowed
    /// by a classic BPF `filter` so the kernel drops uninteresting frames before copying them.
    pub fn receiver(ethertype: u16, filter: Option<&[libc::sock_filter]>) -> Result<Self, Cause> {
        let socket = Self::open(ethertype, libc::SOCK_NONBLOCK, "any")?;
        let fd = socket.fd.as_raw_fd();
        if let Some(filter) = filter {
            // `filter` outlives the call; the kernel copies it.
            let program = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr().cast_mut(),
            };
            set_socket_option(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program)
                .map_err(Cause::Os)?;
        }
        // Our own frames are not claims: with hundreds of VIPs a takeover sends over a
        // thousand, and the kernel can keep them from us (Linux 4.20+; older kernels queue
        // them and the listener skips them by `pkttype`).
        let on: libc::c_int = 1;
        let _ = set_socket_option(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &on);
        Ok(socket)
    }

    /// One frame, or `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut from: libc::sockaddr_ll = unsafe { zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` is writable for `buf.len()` bytes, `from` for `from_len` bytes.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Received {
            len: n as usize,
            ifindex: u32::try_from(from.sll_ifindex).unwrap_or(0),
            pkttype: from.sll_pkttype,
        })
    }
}

fn sockaddr_ll(ifindex: u32, ethertype: u16, dst: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex as libc::c_int;
    if let Some(dst) = dst {
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
    }
    addr
}

/// Classic BPF accepting only ICMPv6 Neighbour Advertisements (no extension headers) on an
/// ETH_P_IPV6 socket. Without it every IPv6 packet the load balancer forwards would be copied
/// to the listener.
pub fn neighbour_advert_filter() -> [libc::sock_filter; 6] {
    // Offsets count from the Ethernet header: next header at 14 + 6, ICMPv6 type at 14 + 40.
    const NEXT_HEADER_AT: u32 = 20;
    const ICMPV6_TYPE_AT: u32 = 54;
    const ICMPV6: u32 = 58;
    const NEIGHBOR_ADVERT: u32 = 136;
    let ld_byte = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        op(ld_byte, 0, 0, NEXT_HEADER_AT),
        op(jeq, 0, 3, ICMPV6), // not ICMPv6 → drop
        op(ld_byte, 0, 0, ICMPV6_TYPE_AT),
        op(jeq, 0, 1, NEIGHBOR_ADVERT),     // not an NA → drop
        op(ret, 0, 0, u32::from(u16::MAX)), // accept the whole frame
        op(ret, 0, 0, 0),                   // drop
    ]
}

/// linux/if_packet.h; not in the libc crate.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// setsockopt(2): option `name` at `level` set to `value`.
pub(super) fn set_socket_option<T>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points at a T of the size given, alive for the call (the kernel copies
    // it); `fd` is a descriptor the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
