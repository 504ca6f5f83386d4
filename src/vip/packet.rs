//! The link layer under the VIP code: interface index and MAC lookups, and AF_PACKET sockets.
//!
//! Kept in one small module because it is the only place with `unsafe` (libc socket calls:
//! nix has no AF_PACKET protocol constants for ARP/IPv6 nor socket filters) and the only place
//! that turns errnos into the operator-facing [`Cause`]s. Lookups are made per call, by name,
//! in the calling thread's network namespace: interfaces can be recreated (new index) or
//! re-addressed (new MAC) while the daemon runs, and a cached value would announce the wrong
//! MAC.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::if_nametoindex;

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

/// Link states by interface name: one `SIOCGIFFLAGS` per interface on one socket. Not
/// `getifaddrs`, which dumps every address of the box (hundreds on a box with many VIPs) and
/// opens a netlink socket each time it is asked.
pub struct LinkStates {
    socket: OwnedFd,
}

impl LinkStates {
    /// A socket for the lookups, in the calling thread's network namespace.
    pub fn open() -> Result<Self, Cause> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map(|socket| Self { socket })
        .map_err(|errno| Cause::Os(io::Error::from(errno)))
    }

    /// Whether `interface` could carry a VIP now: present, up (`ip link set … up`) and with
    /// carrier (IFF_RUNNING: the kernel's operational state).
    pub fn usable(&self, interface: &str) -> Result<(), Cause> {
        // SAFETY: an all-zero ifreq is valid (an empty name, zero flags).
        let mut request: libc::ifreq = unsafe { zeroed() };
        let name = interface.as_bytes();
        if name.is_empty() || name.len() >= request.ifr_name.len() || name.contains(&0) {
            return Err(Cause::InterfaceMissing(interface.to_owned()));
        }
        for (slot, &byte) in request.ifr_name.iter_mut().zip(name) {
            *slot = byte as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the flags into
        // `request`, which lives across the call.
        if unsafe { libc::ioctl(self.socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
            return Err(cause_of(io::Error::last_os_error(), interface));
        }
        // SAFETY: SIOCGIFFLAGS filled the union's flags member.
        let flags = libc::c_int::from(unsafe { request.ifr_ifru.ifru_flags });
        let wanted = libc::IFF_UP | libc::IFF_RUNNING;
        if flags & wanted == wanted {
            Ok(())
        } else {
            Err(Cause::LinkDown(interface.to_owned()))
        }
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
    /// The sender left the TCP/UDP checksum to be filled in later (checksum offload: a frame
    /// from a local or virtual sender, such as a veth peer or a virtio guest). The frame is
    /// fine for this box but must be completed before it is sent on.
    pub checksum_pending: bool,
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
        // The checksum state of each frame (`Received::checksum_pending`).
        set_socket_option(fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, &on).map_err(Cause::Os)?;
        Ok(socket)
    }

    /// One frame, or `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        // SAFETY: all-zero sockaddr_ll and msghdr are valid.
        let mut from: libc::sockaddr_ll = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for the one control message asked for (PACKET_AUXDATA), aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: every buffer `msg` points at is alive and writable for the length given.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut checksum_pending = false;
        // SAFETY: the kernel filled `msg`'s control buffer; the CMSG macros walk it within
        // msg_controllen, and the auxdata is read unaligned from a message of its type.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET
                    && (*cmsg).cmsg_type == libc::PACKET_AUXDATA
                {
                    let aux: libc::tpacket_auxdata =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    checksum_pending = aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0;
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(Received {
            len: n as usize,
            ifindex: u32::try_from(from.sll_ifindex).unwrap_or(0),
            pkttype: from.sll_pkttype,
            checksum_pending,
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

/// Classic BPF for an ETH_P_IP socket accepting only packets to one of `addresses`: the
/// handover relay (`super::relay`) copies nothing else of the box's traffic. Two
/// instructions per address and only short jumps, so any number up to the kernel's limit of
/// 4096 instructions (2047 addresses) loads.
pub fn ipv4_destination_filter(addresses: &[Ipv4Addr]) -> Vec<libc::sock_filter> {
    const DESTINATION_AT: u32 = 14 + 16;
    let mut program = vec![bpf(LD_WORD, 0, 0, DESTINATION_AT)];
    for address in addresses {
        program.push(bpf(JEQ, 0, 1, u32::from(*address)));
        program.push(bpf(RET, 0, 0, ACCEPT));
    }
    program.push(bpf(RET, 0, 0, DROP));
    program
}

/// [`ipv4_destination_filter`] for an ETH_P_IPV6 socket: the destination's four words are
/// compared one by one (nine instructions per address, 454 addresses at most).
pub fn ipv6_destination_filter(addresses: &[Ipv6Addr]) -> Vec<libc::sock_filter> {
    const DESTINATION_AT: u32 = 14 + 24;
    let mut program = Vec::with_capacity(addresses.len() * 9 + 1);
    for address in addresses {
        let octets = address.octets();
        for (i, word) in octets.chunks_exact(4).enumerate() {
            let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            // A mismatch skips the rest of this address's words and its accept.
            let to_next_address = (2 * (3 - i) + 1) as u8;
            program.push(bpf(LD_WORD, 0, 0, DESTINATION_AT + 4 * i as u32));
            program.push(bpf(JEQ, 0, to_next_address, word));
        }
        program.push(bpf(RET, 0, 0, ACCEPT));
    }
    program.push(bpf(RET, 0, 0, DROP));
    program
}

const LD_WORD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// A filter's verdicts: the whole frame, or nothing.
const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a filter made of the instructions the destination filters use over `frame`, as
    /// the kernel would: the bytes to accept (0: drop). A load past the end drops.
    fn run(program: &[libc::sock_filter], frame: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let op = program[pc];
            match op.code {
                LD_WORD => match frame.get(op.k as usize..op.k as usize + 4) {
                    Some(word) => a = u32::from_be_bytes(word.try_into().unwrap()),
                    None => return 0,
                },
                JEQ => pc += usize::from(if a == op.k { op.jt } else { op.jf }),
                RET => return op.k,
                other => panic!("instruction {other:#x} at {pc}"),
            }
            pc += 1;
        }
    }

    fn ipv4_frame(destination: Ipv4Addr) -> Vec<u8> {
        let mut frame = vec![0u8; 54];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[26..30].copy_from_slice(&[192, 0, 2, 50]);
        frame[30..34].copy_from_slice(&destination.octets());
        frame
    }

    fn ipv6_frame(destination: Ipv6Addr) -> Vec<u8> {
        let mut frame = vec![0u8; 74];
        frame[12..14].copy_from_slice(&[0x86, 0xdd]);
        frame[22..38].copy_from_slice(&"2001:db8::50".parse::<Ipv6Addr>().unwrap().octets());
        frame[38..54].copy_from_slice(&destination.octets());
        frame
    }

    proptest! {
        #[test]
        fn the_ipv4_filter_passes_exactly_the_vips(
            vips in proptest::collection::vec(any::<u32>(), 0..20),
            other in any::<u32>(),
            pick in any::<prop::sample::Index>(),
        ) {
            let vips: Vec<Ipv4Addr> = vips.into_iter().map(Ipv4Addr::from).collect();
            let program = ipv4_destination_filter(&vips);
            if !vips.is_empty() {
                prop_assert_eq!(run(&program, &ipv4_frame(*pick.get(&vips))), ACCEPT);
            }
            let other = Ipv4Addr::from(other);
            let want = if vips.contains(&other) { ACCEPT } else { DROP };
            prop_assert_eq!(run(&program, &ipv4_frame(other)), want);
            prop_assert_eq!(run(&program, &ipv4_frame(other)[..32]), DROP);
        }

        #[test]
        fn the_ipv6_filter_passes_exactly_the_vips(
            vips in proptest::collection::vec(any::<u128>(), 1..20),
            pick in any::<prop::sample::Index>(),
            word in 0usize..4,
            flip in 1u32..,
        ) {
            let vips: Vec<Ipv6Addr> = vips.into_iter().map(Ipv6Addr::from).collect();
            let program = ipv6_destination_filter(&vips);
            let vip = *pick.get(&vips);
            prop_assert_eq!(run(&program, &ipv6_frame(vip)), ACCEPT);
            // The same address with one word changed: a near miss.
            let mut near = vip.octets();
            let changed = u32::from_be_bytes(near[word * 4..word * 4 + 4].try_into().unwrap()) ^ flip;
            near[word * 4..word * 4 + 4].copy_from_slice(&changed.to_be_bytes());
            let near = Ipv6Addr::from(near);
            let want = if vips.contains(&near) { ACCEPT } else { DROP };
            prop_assert_eq!(run(&program, &ipv6_frame(near)), want);
        }
    }

    #[test]
    fn filters_for_hundreds_of_vips_stay_within_the_kernels_limit() {
        let v4: Vec<Ipv4Addr> = (0..2047u32)
            .map(|i| Ipv4Addr::from(0xc000_0200 + i))
            .collect();
        let v6: Vec<Ipv6Addr> = (0..454u128)
            .map(|i| Ipv6Addr::from((0x2001_0db8_u128 << 96) + i))
            .collect();
        assert!(ipv4_destination_filter(&v4).len() <= 4096);
        assert!(ipv6_destination_filter(&v6).len() <= 4096);
        assert_eq!(
            run(&ipv4_destination_filter(&v4), &ipv4_frame(v4[2046])),
            ACCEPT
        );
        assert_eq!(
            run(&ipv6_destination_filter(&v6), &ipv6_frame(v6[453])),
            ACCEPT
        );
    }
}
