//! Passing on what clients still send to a VIP this node has just released.
//!
//! After an unplanned release (HAProxy died, the fence fell) clients keep sending to this
//! box's MAC until the successor's announcement reaches them: an election and a first quorum
//! acknowledgement later, ~5 ms after an HAProxy death. The kernel drops those frames (the
//! address is gone), and a lost SYN is retried only after TCP's initial timeout of one
//! second. The relay keeps them instead: from the release on, every frame addressed to a VIP
//! that reaches this box on the VIP's interface is held until a frame from another MAC
//! claims a VIP on that interface (the successor's gratuitous ARP or unsolicited NA), then
//! sent on to that MAC unchanged but for its Ethernet addresses; so is every later one, until
//! [`RELAY_FOR`] after the release (clients that missed the announcement). The client sees a
//! few milliseconds of delay instead of a lost SYN.
//!
//! Bounded: at most [`WAITING_FRAMES_MAX`] frames wait for a successor; the rest, and all
//! that wait when none announces in time, are dropped as the kernel would have. Never sent on:
//! a frame from the successor's own MAC (its overlap guard passes segments of the old
//! holder's connections to this box; sending them back would loop), and anything once this
//! node holds the VIPs again (the relay is cancelled). A planned handover releases only after
//! the successor holds the VIPs, so there it has little to do.
//!
//! Sockets: one AF_PACKET receiver per address family with a kernel filter that passes only
//! packets to a VIP (nothing else of the box's traffic is copied), the duplicate listener's
//! ARP/NA sockets for the claims, one sender. All of it lives [`RELAY_FOR`] at most.
//! The outcome is logged once and counted per VIP (`raftvip_vip_relay_frames_total`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::{util, Packet};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::duplicate::{self, Listener};
use super::packet::{self, PacketSocket};
use super::{Mac, VipError};

/// How long after a release frames are passed on. The successor announces within
/// milliseconds and repeats its announcement for a few hundred; two seconds also covers a
/// client that missed the whole burst and retransmits once.
pub const RELAY_FOR: Duration = Duration::from_secs(2);

/// Frames kept while no successor has announced itself: a few milliseconds of a busy VIP's
/// new connections (a SYN is ~70 bytes)...
pub const WAITING_FRAMES_MAX: usize = 512;

/// ...and the bytes they may take: received segments merged by the kernel (GRO) reach 64 KiB,
/// and 512 of those would hold 32 MB for a moment.
pub const WAITING_BYTES_MAX: usize = 1 << 20;

/// Frames sent on per release at most: a busy VIP's new connections for well over the few
/// milliseconds that matter, while a flood cannot keep the VIP thread (real-time class)
/// sending for the whole [`RELAY_FOR`].
pub const RELAYED_FRAMES_MAX: u64 = 20_000;

/// Largest frame read: a GRO-merged TCP segment can reach 64 KiB. One that large cannot be
/// sent on (it exceeds the MTU) and counts as dropped.
const FRAME_BUF: usize = 65_536;

/// What became of the frames for one VIP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Sent on to the successor.
    pub relayed: u64,
    /// Given up: no room to wait, from the successor itself, never claimed, over
    /// [`RELAYED_FRAMES_MAX`], or refused by the kernel (larger than the MTU).
    pub dropped: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.relayed += other.relayed;
        self.dropped += other.dropped;
    }
}

/// A frame held for a successor: where it arrived, the VIP it is for, its bytes.
type Waiting = (u32, IpAddr, Vec<u8>);

/// The relay's decisions, without sockets: which frames wait, which go where.
#[derive(Debug, Default)]
pub struct Relay {
    /// Per interface index: the MAC that last claimed a VIP there.
    successors: HashMap<u32, Mac>,
    /// Frames that came before any claim on their interface, oldest first, and their bytes.
    waiting: Vec<Waiting>,
    waiting_bytes: usize,
    /// Frames sent on, all VIPs together (against [`RELAYED_FRAMES_MAX`], per frame).
    relayed: u64,
    /// Per VIP.
    pub tally: HashMap<IpAddr, Tally>,
}

impl Relay {
    /// A frame for `vip` arrived on `ifindex`: the MAC to send it on to now, or None (it
    /// waits for a claim, or is dropped).
    pub fn on_frame(&mut self, ifindex: u32, vip: IpAddr, frame: &[u8]) -> Option<Mac> {
        match self.successors.get(&ifindex) {
            Some(&to) if source(frame) == Some(to) || self.relayed >= RELAYED_FRAMES_MAX => {
                self.tally.entry(vip).or_default().dropped += 1;
                None
            }
            Some(&to) => Some(to),
            None if self.waiting.len() < WAITING_FRAMES_MAX
                && self.waiting_bytes + frame.len() <= WAITING_BYTES_MAX =>
            {
                self.waiting_bytes += frame.len();
                self.waiting.push((ifindex, vip, frame.to_vec()));
                None
            }
            None => {
                self.tally.entry(vip).or_default().dropped += 1;
                None
            }
        }
    }

    /// `mac` claimed a VIP on `ifindex`: frames arriving there go to it from now on, and the
    /// ones that waited for it are returned with their VIP, oldest first, to be sent on. A
    /// later claim by another MAC (a successor's successor) takes over.
    pub fn on_claim(&mut self, ifindex: u32, mac: Mac) -> Vec<(IpAddr, Vec<u8>)> {
        self.successors.insert(ifindex, mac);
        let (mine, others): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(at, _, _)| *at == ifindex);
        self.waiting = others;
        let mut out = Vec::with_capacity(mine.len());
        for (_, vip, frame) in mine {
            self.waiting_bytes -= frame.len();
            if source(&frame) == Some(mac) {
                self.tally.entry(vip).or_default().dropped += 1;
            } else {
                out.push((vip, frame));
            }
        }
        out
    }

    /// Counts a frame for `vip` that [`Self::on_frame`] or [`Self::on_claim`] gave out:
    /// `sent`, or refused.
    pub fn sent(&mut self, vip: IpAddr, sent: bool) {
        let tally = self.tally.entry(vip).or_default();
        match sent {
            true => {
                tally.relayed += 1;
                self.relayed += 1;
            }
            false => tally.dropped += 1,
        }
    }

    /// All VIPs together.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for &tally in self.tally.values() {
            total += tally;
        }
        total
    }

    /// The relay ends: whatever still waits is dropped.
    pub fn finish(&mut self) {
        self.waiting_bytes = 0;
        for (_, vip, _) in std::mem::take(&mut self.waiting) {
            self.tally.entry(vip).or_default().dropped += 1;
        }
    }
}

/// The Ethernet source of `frame`.
fn source(frame: &[u8]) -> Option<Mac> {
    frame.get(6..12).and_then(|s| s.try_into().ok()).map(Mac)
}

/// `frame` readdressed from `from` to `to`, as this box forwards it.
fn readdress(frame: &mut [u8], to: Mac, from: Mac) {
    if frame.len() >= 12 {
        frame[..6].copy_from_slice(&to.0);
        frame[6..12].copy_from_slice(&from.0);
    }
}

/// The IP destination of an IPv4 or IPv6 frame.
fn destination(frame: &[u8]) -> Option<IpAddr> {
    let eth = EthernetPacket::new(frame)?;
    match eth.get_ethertype() {
        EtherTypes::Ipv4 => Some(Ipv4Packet::new(eth.payload())?.get_destination().into()),
        EtherTypes::Ipv6 => Some(Ipv6Packet::new(eth.payload())?.get_destination().into()),
        _ => None,
    }
}

/// Completes the TCP or UDP checksum of a frame whose sender left it to the hardware
/// (checksum offload: the field holds only the pseudo-header's sum). This box's kernel
/// accepts such a frame as it is, but the successor receives it as a new frame and would
/// drop it as corrupt. Other frames are left alone.
fn fill_checksum(frame: &mut [u8]) {
    let Some(ethertype) = EthernetPacket::new(frame).map(|e| e.get_ethertype()) else {
        return;
    };
    let ip = &mut frame[ETHERNET_HEADER_LEN..];
    let (protocol, source, destination, l4) = match ethertype {
        EtherTypes::Ipv4 => {
            let Some(packet) = Ipv4Packet::new(ip) else {
                return;
            };
            let header_len = usize::from(packet.get_header_length()) * 4;
            let end = usize::from(packet.get_total_length()).min(ip.len());
            let protocol = packet.get_next_level_protocol();
            let (source, destination) = (packet.get_source(), packet.get_destination());
            (
                protocol,
                source.into(),
                destination.into(),
                ip.get_mut(header_len..end),
            )
        }
        EtherTypes::Ipv6 => {
            let Some(packet) = Ipv6Packet::new(ip) else {
                return;
            };
            let end = (IPV6_HEADER_LEN + usize::from(packet.get_payload_length())).min(ip.len());
            let protocol = packet.get_next_header();
            let (source, destination) = (packet.get_source(), packet.get_destination());
            (
                protocol,
                source.into(),
                destination.into(),
                ip.get_mut(IPV6_HEADER_LEN..end),
            )
        }
        _ => return,
    };
    let Some(l4) = l4 else {
        return;
    };
    // The checksum's 16-bit word and the shortest header that has it (as pnet_packet's
    // TcpPacket / UdpPacket ask).
    let (checksum_word, header_len) = match protocol {
        IpNextHeaderProtocols::Tcp => (8, 20),
        IpNextHeaderProtocols::Udp => (3, 8),
        _ => return,
    };
    if l4.len() < header_len {
        return;
    }
    let sum = match (source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            util::ipv4_checksum(l4, checksum_word, &[], &s, &d, protocol)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            util::ipv6_checksum(l4, checksum_word, &[], &s, &d, protocol)
        }
        _ => return,
    };
    l4[checksum_word * 2..checksum_word * 2 + 2].copy_from_slice(&sum.to_be_bytes());
}

const ETHERNET_HEADER_LEN: usize = 14;
const IPV6_HEADER_LEN: usize = 40;

/// Where a VIP lives: its interface's index, name and MAC (the source of relayed frames).
#[derive(Debug, Clone)]
struct Port {
    ifindex: u32,
    interface: String,
    mac: Mac,
}

/// The open sockets of one relay.
struct Sockets {
    ports: HashMap<IpAddr, Port>,
    v4: Option<AsyncFd<PacketSocket>>,
    v6: Option<AsyncFd<PacketSocket>>,
    claims: Listener,
    sender: PacketSocket,
}

/// Starts relaying for `vips` (each VIP and its interface) on the current tokio runtime (the
/// caller must be in one), until [`RELAY_FOR`] passed or `cancel` fired; then `report` gets
/// the tally per VIP. A VIP whose interface is gone is left out; an error opening the
/// sockets is returned.
pub fn spawn<R>(
    vips: &HashMap<IpAddr, String>,
    cancel: CancellationToken,
    report: R,
) -> Result<(), VipError>
where
    R: FnOnce(&HashMap<IpAddr, Tally>) + Send + 'static,
{
    let sockets = Sockets::open(vips)?;
    tokio::spawn(async move {
        let tally = run(sockets, cancel).await;
        report(&tally);
    });
    Ok(())
}

impl Sockets {
    fn open(vips: &HashMap<IpAddr, String>) -> Result<Self, VipError> {
        let ports: HashMap<IpAddr, Port> = vips
            .iter()
            .filter_map(|(ip, interface)| {
                let port = Port {
                    ifindex: packet::ifindex(interface).ok()?,
                    interface: interface.clone(),
                    mac: packet::mac_of(interface).ok()?,
                };
                Some((*ip, port))
            })
            .collect();
        let v4: Vec<Ipv4Addr> = ports.keys().filter_map(|ip| v4(*ip)).collect();
        let v6: Vec<Ipv6Addr> = ports.keys().filter_map(|ip| v6(*ip)).collect();
        let receiver = |ethertype: u16, filter: Vec<libc::sock_filter>| {
            duplicate::open(ethertype, Some(&filter)).map_err(|cause| VipError::Relay { cause })
        };
        let v4 = match v4.is_empty() {
            true => None,
            false => Some(receiver(
                libc::ETH_P_IP as u16,
                packet::ipv4_destination_filter(&v4),
            )?),
        };
        let v6 = match v6.is_empty() {
            true => None,
            false => Some(receiver(
                libc::ETH_P_IPV6 as u16,
                packet::ipv6_destination_filter(&v6),
            )?),
        };
        let named = ports
            .iter()
            .map(|(ip, port)| (*ip, port.interface.clone()))
            .collect();
        Ok(Self {
            ports,
            v4,
            v6,
            claims: Listener::open(named)?,
            sender: PacketSocket::sender().map_err(|cause| VipError::Relay { cause })?,
        })
    }

    /// The next frame to a VIP that reached this box on the VIP's interface, complete (see
    /// [`fill_checksum`]): its interface index, the VIP and its length in `buf`.
    async fn next_frame(&self, buf: &mut [u8]) -> std::io::Result<(u32, IpAddr, usize)> {
        loop {
            let mut ready = tokio::select! {
                ready = duplicate::readable(self.v4.as_ref()) => ready?,
                ready = duplicate::readable(self.v6.as_ref()) => ready?,
            };
            loop {
                let received = match ready.try_io(|socket| socket.get_ref().recv(buf)) {
                    Ok(Ok(received)) => received,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => break,
                };
                if received.pkttype != libc::PACKET_HOST {
                    continue;
                }
                let len = received.len.min(buf.len());
                let frame = &mut buf[..len];
                let Some(vip) = destination(frame) else {
                    continue;
                };
                if self
                    .ports
                    .get(&vip)
                    .is_some_and(|p| p.ifindex == received.ifindex)
                {
                    if received.checksum_pending {
                        fill_checksum(frame);
                    }
                    return Ok((received.ifindex, vip, len));
                }
            }
        }
    }

    /// Sends `frame` for `vip`, which reached the VIP's interface, on to `to`.
    fn send_on(&self, vip: IpAddr, frame: &mut [u8], to: Mac) -> bool {
        let Some(port) = self.ports.get(&vip) else {
            return false;
        };
        readdress(frame, to, port.mac);
        let ethertype = EthernetPacket::new(frame).map_or(0, |e| e.get_ethertype().0);
        match self
            .sender
            .send_to(frame, port.ifindex, ethertype, &port.interface)
        {
            Ok(()) => true,
            Err(cause) => {
                tracing::debug!(%cause, len = frame.len(), "a frame for a released VIP could not be passed on");
                false
            }
        }
    }
}

/// Relays until the time is up or `cancel` fires; returns the tally per VIP.
async fn run(sockets: Sockets, cancel: CancellationToken) -> HashMap<IpAddr, Tally> {
    let until = tokio::time::Instant::now() + RELAY_FOR;
    let mut relay = Relay::default();
    let mut frame_buf = vec![0u8; FRAME_BUF];
    let mut claim_buf = vec![0u8; 2048];
    let mut successor = None;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(until) => break,
            claim = sockets.claims.next_claim(&mut claim_buf) => {
                let (claim, ifindex) = match claim {
                    Ok(claim) => claim,
                    Err(e) => {
                        tracing::warn!(error = %e, "the handover relay stopped early");
                        break;
                    }
                };
                successor = Some(claim.mac);
                for (vip, mut frame) in relay.on_claim(ifindex, claim.mac) {
                    let sent = sockets.send_on(vip, &mut frame, claim.mac);
                    relay.sent(vip, sent);
                }
            }
            frame = sockets.next_frame(&mut frame_buf) => {
                let (ifindex, vip, len) = match frame {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::warn!(error = %e, "the handover relay stopped early");
                        break;
                    }
                };
                let frame = &mut frame_buf[..len];
                if let Some(to) = relay.on_frame(ifindex, vip, frame) {
                    let sent = sockets.send_on(vip, frame, to);
                    relay.sent(vip, sent);
                }
            }
        }
    }
    relay.finish();
    let total = relay.total();
    if total.relayed + total.dropped > 0 {
        tracing::info!(
            relayed = total.relayed,
            dropped = total.dropped,
            successor = successor.map(|m| m.to_string()),
            "handover relay over: frames clients still sent here after the release went on to the successor (relayed) or were dropped"
        );
    }
    relay.tally
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

fn v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::ethernet::MutableEthernetPacket;
    use pnet_packet::ipv4::{self, MutableIpv4Packet};
    use pnet_packet::ipv6::MutableIpv6Packet;
    use pnet_packet::{tcp, udp};

    const CLIENT: Mac = Mac([0x02, 0, 0, 0, 0x0c, 0x01]);
    const SUCCESSOR: Mac = Mac([0x02, 0, 0, 0, 0x0b, 0x01]);
    const LATER: Mac = Mac([0x02, 0, 0, 0, 0x0d, 0x01]);
    const ETH0: u32 = 2;
    const ETH1: u32 = 3;
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
    const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));

    fn frames(out: Vec<(IpAddr, Vec<u8>)>) -> Vec<Vec<u8>> {
        out.into_iter().map(|(_, frame)| frame).collect()
    }

    /// A frame from `from`; its bytes after the Ethernet source tell frames apart.
    fn frame(from: Mac, tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[6..12].copy_from_slice(&from.0);
        f[20] = tag;
        f
    }

    #[test]
    fn frames_wait_for_the_successors_claim_then_go_straight_to_it() {
        let mut relay = Relay::default();
        assert_eq!(relay.on_frame(ETH0, VIP, &frame(CLIENT, 1)), None);
        assert_eq!(relay.on_frame(ETH0, VIP, &frame(CLIENT, 2)), None);
        let out = frames(relay.on_claim(ETH0, SUCCESSOR));
        assert_eq!(
            out,
            vec![frame(CLIENT, 1), frame(CLIENT, 2)],
            "oldest first"
        );
        assert_eq!(
            relay.on_frame(ETH0, VIP, &frame(CLIENT, 3)),
            Some(SUCCESSOR)
        );
        assert!(relay.on_claim(ETH0, SUCCESSOR).is_empty(), "sent once");
    }

    #[test]
    fn each_interface_waits_for_a_claim_on_it() {
        let mut relay = Relay::default();
        relay.on_frame(ETH0, VIP, &frame(CLIENT, 1));
        relay.on_frame(ETH1, VIP, &frame(CLIENT, 2));
        assert_eq!(
            frames(relay.on_claim(ETH1, SUCCESSOR)),
            vec![frame(CLIENT, 2)]
        );
        assert_eq!(relay.on_frame(ETH0, VIP, &frame(CLIENT, 3)), None);
        assert_eq!(
            frames(relay.on_claim(ETH0, LATER)),
            vec![frame(CLIENT, 1), frame(CLIENT, 3)]
        );
    }

    #[test]
    fn a_later_claim_takes_over() {
        let mut relay = Relay::default();
        relay.on_claim(ETH0, SUCCESSOR);
        relay.on_claim(ETH0, LATER);
        assert_eq!(relay.on_frame(ETH0, VIP, &frame(CLIENT, 1)), Some(LATER));
    }

    #[test]
    fn nothing_goes_back_to_the_mac_it_came_from() {
        let mut relay = Relay::default();
        relay.on_frame(ETH0, VIP, &frame(SUCCESSOR, 1));
        relay.on_frame(ETH0, VIP, &frame(CLIENT, 2));
        assert_eq!(
            frames(relay.on_claim(ETH0, SUCCESSOR)),
            vec![frame(CLIENT, 2)]
        );
        assert_eq!(relay.on_frame(ETH0, VIP, &frame(SUCCESSOR, 3)), None);
        assert_eq!(relay.total().dropped, 2);
    }

    #[test]
    fn waiting_and_sending_are_bounded_and_what_is_left_is_dropped() {
        let mut relay = Relay::default();
        for i in 0..WAITING_FRAMES_MAX + 5 {
            relay.on_frame(ETH0, VIP, &frame(CLIENT, i as u8));
        }
        assert_eq!(relay.total().dropped, 5);
        relay.finish();
        assert_eq!(relay.total().dropped, 5 + WAITING_FRAMES_MAX as u64);
        assert!(relay.on_claim(ETH0, SUCCESSOR).is_empty());

        let mut relay = Relay::default();
        let merged = vec![0u8; 65_536];
        let fit = WAITING_BYTES_MAX / merged.len();
        for _ in 0..fit + 1 {
            relay.on_frame(ETH0, VIP, &merged);
        }
        assert_eq!(relay.total().dropped, 1, "bytes are bounded too");
        assert_eq!(relay.on_claim(ETH0, SUCCESSOR).len(), fit);

        let mut relay = Relay::default();
        relay.on_claim(ETH0, SUCCESSOR);
        for _ in 0..RELAYED_FRAMES_MAX {
            assert_eq!(
                relay.on_frame(ETH0, VIP, &frame(CLIENT, 0)),
                Some(SUCCESSOR)
            );
            relay.sent(VIP, true);
        }
        assert_eq!(relay.on_frame(ETH0, VIP, &frame(CLIENT, 0)), None);
        let want = Tally {
            relayed: RELAYED_FRAMES_MAX,
            dropped: 1,
        };
        assert_eq!(relay.total(), want);
    }

    #[test]
    fn each_vip_has_its_own_tally() {
        let mut relay = Relay::default();
        relay.on_frame(ETH0, VIP, &frame(CLIENT, 1));
        relay.on_frame(ETH0, VIP6, &frame(CLIENT, 2));
        relay.on_frame(ETH0, VIP6, &frame(CLIENT, 3));
        for (vip, _) in relay.on_claim(ETH0, SUCCESSOR) {
            relay.sent(vip, vip == VIP);
        }
        relay.on_frame(ETH1, VIP6, &frame(CLIENT, 4));
        relay.finish();
        assert_eq!(
            relay.tally[&VIP],
            Tally {
                relayed: 1,
                dropped: 0
            }
        );
        assert_eq!(
            relay.tally[&VIP6],
            Tally {
                relayed: 0,
                dropped: 3
            }
        );
    }

    #[test]
    fn readdressing_changes_only_the_ethernet_addresses() {
        let mut f = frame(CLIENT, 7);
        readdress(&mut f, SUCCESSOR, LATER);
        assert_eq!(&f[..6], &SUCCESSOR.0);
        assert_eq!(&f[6..12], &LATER.0);
        assert_eq!(f[20], 7);
    }

    /// An Ethernet frame carrying `l4` (TCP or UDP, checksum field as given) from `source`
    /// to `destination`.
    fn ip_frame(source: IpAddr, destination: IpAddr, protocol: u8, l4: &[u8]) -> Vec<u8> {
        let ip_len = match source {
            IpAddr::V4(_) => 20,
            IpAddr::V6(_) => IPV6_HEADER_LEN,
        };
        let mut f = vec![0u8; ETHERNET_HEADER_LEN + ip_len + l4.len()];
        let mut eth = MutableEthernetPacket::new(&mut f).unwrap();
        eth.set_source(CLIENT.0.into());
        match (source, destination) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                eth.set_ethertype(EtherTypes::Ipv4);
                let mut ip = MutableIpv4Packet::new(&mut f[ETHERNET_HEADER_LEN..]).unwrap();
                ip.set_version(4);
                ip.set_header_length(5);
                ip.set_total_length((20 + l4.len()) as u16);
                ip.set_ttl(64);
                ip.set_next_level_protocol(pnet_packet::ip::IpNextHeaderProtocol(protocol));
                ip.set_source(s);
                ip.set_destination(d);
                let sum = ipv4::checksum(&ip.to_immutable());
                ip.set_checksum(sum);
                ip.set_payload(l4);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                eth.set_ethertype(EtherTypes::Ipv6);
                let mut ip = MutableIpv6Packet::new(&mut f[ETHERNET_HEADER_LEN..]).unwrap();
                ip.set_version(6);
                ip.set_payload_length(l4.len() as u16);
                ip.set_next_header(pnet_packet::ip::IpNextHeaderProtocol(protocol));
                ip.set_hop_limit(64);
                ip.set_source(s);
                ip.set_destination(d);
                ip.set_payload(l4);
            }
            _ => unreachable!("one family"),
        }
        f
    }

    /// A SYN's TCP header and a small UDP datagram, checksums zero.
    fn segments() -> [(u8, Vec<u8>); 2] {
        let mut syn = vec![0u8; 20];
        syn[..4].copy_from_slice(&[0xc3, 0x50, 0x1f, 0x90]); // 50000 -> 8080
        syn[12] = 5 << 4;
        syn[13] = 0x02;
        syn[14..16].copy_from_slice(&64240u16.to_be_bytes());
        let mut datagram = vec![0u8; 12];
        datagram[..4].copy_from_slice(&[0xc3, 0x50, 0x00, 0x35]);
        datagram[4..6].copy_from_slice(&12u16.to_be_bytes());
        datagram[8..].copy_from_slice(b"ping");
        [(6, syn), (17, datagram)]
    }

    #[test]
    fn a_checksum_left_to_the_hardware_is_filled_in() {
        let families: [(IpAddr, IpAddr); 2] = [
            (
                "192.0.2.50".parse().unwrap(),
                "192.0.2.100".parse().unwrap(),
            ),
            (
                "2001:db8::50".parse().unwrap(),
                "2001:db8::100".parse().unwrap(),
            ),
        ];
        for (source, destination) in families {
            for (protocol, l4) in segments() {
                let mut frame = ip_frame(source, destination, protocol, &l4);
                let checksum_at = frame.len() - l4.len() + if protocol == 6 { 16 } else { 6 };
                // What offload leaves: a partial sum, not the checksum.
                frame[checksum_at..checksum_at + 2].copy_from_slice(&[0x12, 0x34]);
                fill_checksum(&mut frame);
                let sum = u16::from_be_bytes([frame[checksum_at], frame[checksum_at + 1]]);
                let ip = &frame[ETHERNET_HEADER_LEN..];
                let want = match (source, destination, protocol) {
                    (IpAddr::V4(s), IpAddr::V4(d), 6) => {
                        let p = Ipv4Packet::new(ip).unwrap();
                        tcp::ipv4_checksum(&tcp::TcpPacket::new(p.payload()).unwrap(), &s, &d)
                    }
                    (IpAddr::V6(s), IpAddr::V6(d), 6) => {
                        let p = Ipv6Packet::new(ip).unwrap();
                        tcp::ipv6_checksum(&tcp::TcpPacket::new(p.payload()).unwrap(), &s, &d)
                    }
                    (IpAddr::V4(s), IpAddr::V4(d), _) => {
                        let p = Ipv4Packet::new(ip).unwrap();
                        udp::ipv4_checksum(&udp::UdpPacket::new(p.payload()).unwrap(), &s, &d)
                    }
                    (IpAddr::V6(s), IpAddr::V6(d), _) => {
                        let p = Ipv6Packet::new(ip).unwrap();
                        udp::ipv6_checksum(&udp::UdpPacket::new(p.payload()).unwrap(), &s, &d)
                    }
                    _ => unreachable!(),
                };
                assert_ne!(sum, 0x1234, "{source} protocol {protocol}: not filled in");
                assert_eq!(sum, want, "{source} protocol {protocol}");
                assert_eq!(super::destination(&frame), Some(destination));
            }
        }
    }

    #[test]
    fn frames_that_are_not_tcp_or_udp_over_ip_are_left_alone() {
        let arp = crate::vip::announce::garp_request(CLIENT, "192.0.2.100".parse().unwrap());
        let mut copy = arp.to_vec();
        fill_checksum(&mut copy);
        assert_eq!(copy, arp.to_vec());
        let icmp = ip_frame(
            "192.0.2.50".parse().unwrap(),
            "192.0.2.100".parse().unwrap(),
            1,
            &[8, 0, 0x12, 0x34, 0, 1, 0, 1],
        );
        let mut copy = icmp.clone();
        fill_checksum(&mut copy);
        assert_eq!(copy, icmp);
        let mut short = icmp[..20].to_vec();
        fill_checksum(&mut short);
        assert_eq!(short, icmp[..20].to_vec());
    }
}
