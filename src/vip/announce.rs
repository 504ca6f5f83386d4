//! Telling the segment who holds a VIP now: gratuitous ARP, unsolicited NA, and the probes
//! that find another holder.
//!
//! The kernel announces nothing when an address is added (IPv4, or IPv6 with NODAD), so
//! without these frames clients keep sending to the old holder's MAC until their neighbour
//! entry expires (~25 s measured). The builders are pure — bytes in, bytes out, golden-byte
//! tested — and [`PacketAnnouncer`] only resolves the interface and writes them to an
//! AF_PACKET socket.
//!
//! Forms sent, and why:
//! - IPv4 takeover: the RFC 5227 announcement (ARP request, SPA = TPA = VIP, THA = 0) *and* the
//!   reply form (op 2, THA = SHA): some devices accept only one of the two. Linux treats a
//!   reply as gratuitous only if THA == SHA and TPA == SPA, so the popular "TPA =
//!   255.255.255.255" form is deliberately not used.
//! - IPv4 duplicate probe: the RFC 5227 probe (SPA = 0.0.0.0). With SPA = 0 the holder answers
//!   to our MAC and no receiver updates its cache from the probe itself; a holder asked with
//!   SPA = VIP would consider the VIP its own and answer itself.
//! - IPv6 takeover: an unsolicited NA to all-nodes with Override set, Solicited clear, Router
//!   clear (a load balancer does not forward) and the Target Link-Layer Address option.
//! - IPv6 duplicate probe: a DAD Neighbour Solicitation (RFC 4862 §5.4.2): source `::`, to the
//!   VIP's solicited-node group, no Source Link-Layer Address option (RFC 4861 §4.3 forbids it
//!   with an unspecified source). With source `::` a holder must answer with an NA to ff02::1
//!   (RFC 4861 §7.2.4), which we see; with source = VIP the holder would address its answer
//!   to the VIP — that is, to itself.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use pnet_packet::arp::{ArpHardwareTypes, ArpOperation, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, MutableNeighborSolicitPacket, NeighborAdvertFlags,
};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::MutableIpv6Packet;

use super::packet::{self, PacketSocket};
use super::{Announcer, Cause, Mac, Vip, VipError};

/// Ethernet header: destination, source, EtherType.
const ETHERNET_LEN: usize = 14;
/// ARP for IPv4 over Ethernet (RFC 826): 8 fixed bytes + 2 × (6 + 4) addresses.
const ARP_LEN: usize = 28;
/// Ethernet's minimum frame without FCS. NICs pad short frames, but veth and some virtual
/// switches do not, and some receivers drop runts — so ARP frames are padded here.
pub const MIN_FRAME_LEN: usize = 60;
const IPV6_HEADER_LEN: usize = 40;
/// RFC 4861 §4.4: type, code, checksum, flags + reserved (4), target (16).
const NA_LEN: usize = 24;
/// The Target Link-Layer Address option for Ethernet: type, length (1 = 8 bytes), MAC.
const TLLA_OPTION_LEN: usize = 8;
/// RFC 4861 §4.3: type, code, checksum, reserved (4), target (16); no options (source `::`).
const NS_LEN: usize = 24;
/// Length of the unsolicited NA frame.
pub const NA_FRAME_LEN: usize = ETHERNET_LEN + IPV6_HEADER_LEN + NA_LEN + TLLA_OPTION_LEN;
/// Length of the DAD NS frame.
pub const NS_FRAME_LEN: usize = ETHERNET_LEN + IPV6_HEADER_LEN + NS_LEN;
/// RFC 4861 §7.1.2: receivers drop Neighbour Discovery with any other hop limit, which proves
/// the sender is on-link.
const ND_HOP_LIMIT: u8 = 255;
/// NDP option type 2: Target Link-Layer Address (RFC 4861 §4.6.1).
const OPTION_TARGET_LL_ADDR: u8 = 2;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const BROADCAST: Mac = Mac([0xff; 6]);

/// RFC 5227 announcement: "I hold `vip`" as an ARP request to everyone.
pub fn garp_request(mac: Mac, vip: Ipv4Addr) -> [u8; MIN_FRAME_LEN] {
    arp_frame(mac, ArpOperations::Request, vip, Mac::ZERO, vip)
}

/// The reply form of the announcement (THA = SHA, TPA = SPA), for devices that ignore requests.
pub fn garp_reply(mac: Mac, vip: Ipv4Addr) -> [u8; MIN_FRAME_LEN] {
    arp_frame(mac, ArpOperations::Reply, vip, mac, vip)
}

/// RFC 5227 probe: "who has `vip`?" from 0.0.0.0; a holder answers to `mac`.
pub fn arp_probe(mac: Mac, vip: Ipv4Addr) -> [u8; MIN_FRAME_LEN] {
    arp_frame(
        mac,
        ArpOperations::Request,
        Ipv4Addr::UNSPECIFIED,
        Mac::ZERO,
        vip,
    )
}

fn arp_frame(
    mac: Mac,
    op: ArpOperation,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> [u8; MIN_FRAME_LEN] {
    let mut frame = [0u8; MIN_FRAME_LEN];
    // `new` only fails on a buffer shorter than the header; the sizes are constants and the
    // golden-byte tests would see an all-zero frame.
    if let Some(mut eth) = MutableEthernetPacket::new(&mut frame) {
        eth.set_destination(BROADCAST.0.into());
        eth.set_source(mac.0.into());
        eth.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = MutableArpPacket::new(&mut frame[ETHERNET_LEN..ETHERNET_LEN + ARP_LEN]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(op);
        arp.set_sender_hw_addr(mac.0.into());
        arp.set_sender_proto_addr(sender_ip);
        arp.set_target_hw_addr(target_mac.0.into());
        arp.set_target_proto_addr(target_ip);
    }
    frame
}

/// Unsolicited Neighbour Advertisement: "`vip` is at `mac`", overriding existing entries.
pub fn unsolicited_na(mac: Mac, vip: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    let mut frame = [0u8; NA_FRAME_LEN];
    let icmp_len = NA_LEN + TLLA_OPTION_LEN;
    ipv6_headers(&mut frame, mac, all_nodes_mac(), vip, ALL_NODES, icmp_len);
    let icmp_at = ETHERNET_LEN + IPV6_HEADER_LEN;
    if let Some(mut na) = MutableNeighborAdvertPacket::new(&mut frame[icmp_at..icmp_at + NA_LEN]) {
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        na.set_flags(NeighborAdvertFlags::Override);
        na.set_target_addr(vip);
    }
    let option_at = icmp_at + NA_LEN;
    frame[option_at] = OPTION_TARGET_LL_ADDR;
    frame[option_at + 1] = 1; // in units of 8 bytes
    frame[option_at + 2..option_at + 8].copy_from_slice(&mac.0);
    set_icmpv6_checksum(&mut frame[icmp_at..], vip, ALL_NODES);
    frame
}

/// Duplicate Address Detection solicitation for `vip` (source `::`, see the module docs).
pub fn dad_ns(mac: Mac, vip: Ipv6Addr) -> [u8; NS_FRAME_LEN] {
    let mut frame = [0u8; NS_FRAME_LEN];
    let group = solicited_node(vip);
    ipv6_headers(
        &mut frame,
        mac,
        multicast_mac(group),
        Ipv6Addr::UNSPECIFIED,
        group,
        NS_LEN,
    );
    let icmp_at = ETHERNET_LEN + IPV6_HEADER_LEN;
    if let Some(mut ns) = MutableNeighborSolicitPacket::new(&mut frame[icmp_at..]) {
        ns.set_icmpv6_type(Icmpv6Types::NeighborSolicit);
        ns.set_icmpv6_code(Icmpv6Code(0));
        ns.set_target_addr(vip);
    }
    set_icmpv6_checksum(&mut frame[icmp_at..], Ipv6Addr::UNSPECIFIED, group);
    frame
}

/// Ethernet + IPv6 headers of an ICMPv6 Neighbour Discovery frame.
fn ipv6_headers(
    frame: &mut [u8],
    mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_len: usize,
) {
    if let Some(mut eth) = MutableEthernetPacket::new(frame) {
        eth.set_destination(dst_mac.0.into());
        eth.set_source(mac.0.into());
        eth.set_ethertype(EtherTypes::Ipv6);
    }
    if let Some(mut ip) =
        MutableIpv6Packet::new(&mut frame[ETHERNET_LEN..ETHERNET_LEN + IPV6_HEADER_LEN])
    {
        ip.set_version(6);
        // The lengths are constants far below u16::MAX.
        ip.set_payload_length(icmp_len as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(ND_HOP_LIMIT);
        ip.set_source(src);
        ip.set_destination(dst);
    }
}

/// Fills in the ICMPv6 checksum over the pseudo-header (RFC 4443 §2.3).
fn set_icmpv6_checksum(icmp: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let sum = match Icmpv6Packet::new(icmp) {
        Some(packet) => icmpv6::checksum(&packet, &src, &dst),
        None => return,
    };
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// `ff02::1:ffXX:XXXX`: the group a holder of `ip` listens to (RFC 4291 §2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// `33:33` + the group's last 32 bits (RFC 2464 §7).
fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

fn all_nodes_mac() -> Mac {
    multicast_mac(ALL_NODES)
}

/// The EtherType of a frame built here, for the sockaddr_ll of the send.
fn ethertype_of(frame: &[u8]) -> u16 {
    match frame.get(12..ETHERNET_LEN) {
        Some(&[high, low]) => u16::from_be_bytes([high, low]),
        _ => 0,
    }
}

/// Sends the frames through AF_PACKET on the VIP's interface. Needs CAP_NET_RAW.
///
/// The interface index and MAC are looked up on every call (µs), so a recreated interface or
/// a changed MAC is announced correctly. The socket, though, is opened once and kept:
/// closing an AF_PACKET socket waits for an RCU grace period (`synchronize_net`), measured
/// at 10–20 ms per close here, which would stall every announcement and any release queued
/// behind it.
#[derive(Debug, Default)]
pub struct PacketAnnouncer {
    /// Opened on first use, so a missing CAP_NET_RAW shows up as an announce error (and is
    /// retried) rather than failing start-up.
    socket: Mutex<Option<PacketSocket>>,
}

impl PacketAnnouncer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `frames_of(mac, vip)` for every VIP; each interface's index and MAC are looked
    /// up once per call (a `getifaddrs` per VIP would dominate a batch of hundreds).
    fn send_all(
        &self,
        vips: &[&Vip],
        frames_of: fn(Mac, IpAddr) -> Vec<Vec<u8>>,
    ) -> Vec<Result<(), Cause>> {
        let mut links: HashMap<&str, (u32, Mac)> = HashMap::new();
        let mut socket = crate::sync::lock(&self.socket);
        vips.iter()
            .map(|vip| {
                let (ifindex, mac) = match links.get(vip.interface.as_str()) {
                    Some(&link) => link,
                    None => {
                        let link = (
                            packet::ifindex(&vip.interface)?,
                            packet::mac_of(&vip.interface)?,
                        );
                        links.insert(&vip.interface, link);
                        link
                    }
                };
                let socket = match &mut *socket {
                    Some(socket) => socket,
                    empty => empty.insert(PacketSocket::sender()?),
                };
                for frame in frames_of(mac, vip.addr.ip) {
                    socket.send_to(&frame, ifindex, ethertype_of(&frame), &vip.interface)?;
                }
                Ok(())
            })
            .collect()
    }
}

/// The takeover announcement of each form (see the module docs).
fn announcement(mac: Mac, ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(ip) => vec![garp_request(mac, ip).to_vec(), garp_reply(mac, ip).to_vec()],
        IpAddr::V6(ip) => vec![unsolicited_na(mac, ip).to_vec()],
    }
}

/// The duplicate probe (see the module docs).
fn probe(mac: Mac, ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(ip) => vec![arp_probe(mac, ip).to_vec()],
        IpAddr::V6(ip) => vec![dad_ns(mac, ip).to_vec()],
    }
}

impl Announcer for PacketAnnouncer {
    fn announce(&self, vip: &Vip) -> Result<(), VipError> {
        self.announce_all(&[vip]).pop().unwrap_or(Ok(()))
    }

    fn probe(&self, vip: &Vip) -> Result<(), VipError> {
        self.probe_all(&[vip]).pop().unwrap_or(Ok(()))
    }

    fn announce_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        self.send_all(vips, announcement)
            .into_iter()
            .zip(vips)
            .map(|(result, vip)| {
                result.map_err(|cause| VipError::Announce {
                    vip: vip.addr,
                    interface: vip.interface.clone(),
                    cause,
                })
            })
            .collect()
    }

    fn probe_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        self.send_all(vips, probe)
            .into_iter()
            .zip(vips)
            .map(|(result, vip)| {
                result.map_err(|cause| VipError::Probe {
                    vip: vip.addr,
                    interface: vip.interface.clone(),
                    cause,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    /// RFC 1071 one's-complement sum, written apart from pnet's so the checksum in the golden
    /// bytes is checked by a second implementation (and was computed by a third, in Python).
    fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in chunks {
            for pair in chunk.chunks(2) {
                let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                sum += u32::from(word);
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// A correct ICMPv6 checksum makes the sum over pseudo-header + message 0xffff.
    fn icmpv6_checksum_ok(frame: &[u8]) -> bool {
        let ip = &frame[ETHERNET_LEN..ETHERNET_LEN + IPV6_HEADER_LEN];
        let icmp = &frame[ETHERNET_LEN + IPV6_HEADER_LEN..];
        let len = (icmp.len() as u32).to_be_bytes();
        let pseudo_tail = [0, 0, 0, 58];
        ones_complement_sum(&[&ip[8..24], &ip[24..40], &len, &pseudo_tail, icmp]) == 0xffff
    }

    #[test]
    fn garp_request_is_the_rfc5227_announcement() {
        #[rustfmt::skip]
        let golden: [u8; 60] = [
            // Ethernet: broadcast, our MAC, ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x08, 0x06,
            // ARP: Ethernet, IPv4, 6, 4, request
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            // SHA, SPA = VIP
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 192, 0, 2, 100,
            // THA = 0, TPA = VIP
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 100,
            // padding to 60 bytes
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(garp_request(MAC, VIP4), golden);
    }

    #[test]
    fn garp_reply_has_tha_equal_to_sha() {
        #[rustfmt::skip]
        let golden: [u8; 60] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x08, 0x06,
            // op 2 (reply)
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 192, 0, 2, 100,
            // THA = SHA, TPA = SPA: what Linux requires to call a reply gratuitous
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 192, 0, 2, 100,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(garp_reply(MAC, VIP4), golden);
    }

    #[test]
    fn arp_probe_comes_from_the_unspecified_address() {
        #[rustfmt::skip]
        let golden: [u8; 60] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            // SPA = 0.0.0.0
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 100,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(arp_probe(MAC, VIP4), golden);
    }

    #[test]
    fn unsolicited_na_overrides_and_carries_our_mac() {
        #[rustfmt::skip]
        let golden: [u8; NA_FRAME_LEN] = [
            // Ethernet: all-nodes multicast MAC, our MAC, IPv6
            0x33, 0x33, 0x00, 0x00, 0x00, 0x01,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x86, 0xdd,
            // IPv6: version 6, payload 32, next header 58, hop limit 255
            0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 58, 255,
            // source = VIP 2001:db8::100
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
            // destination = ff02::1
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
            // ICMPv6 136, code 0, checksum (computed independently in Python)
            136, 0, 0xf7, 0x2c,
            // R = 0, S = 0, O = 1; reserved
            0x20, 0, 0, 0,
            // target = VIP
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
            // option 2 (target link-layer address), length 1 (8 bytes), our MAC
            2, 1, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        ];
        let frame = unsolicited_na(MAC, VIP6);
        assert_eq!(frame, golden);
        assert!(icmpv6_checksum_ok(&frame));
    }

    #[test]
    fn dad_ns_goes_from_unspecified_to_the_solicited_node_group() {
        #[rustfmt::skip]
        let golden: [u8; NS_FRAME_LEN] = [
            // Ethernet: 33:33 + ff00:0100, our MAC, IPv6
            0x33, 0x33, 0xff, 0x00, 0x01, 0x00,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x86, 0xdd,
            // IPv6: payload 24, ICMPv6, hop limit 255
            0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 58, 255,
            // source ::
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // destination ff02::1:ff00:100
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x01, 0x00,
            // ICMPv6 135, code 0, checksum (Python), reserved
            135, 0, 0x4a, 0xef, 0, 0, 0, 0,
            // target = VIP; no source link-layer option with source ::
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
        ];
        let frame = dad_ns(MAC, VIP6);
        assert_eq!(frame, golden);
        assert!(icmpv6_checksum_ok(&frame));
    }

    #[test]
    fn checksum_check_rejects_a_corrupted_frame() {
        let mut frame = unsolicited_na(MAC, VIP6);
        frame[NA_FRAME_LEN - 1] ^= 0x01;
        assert!(!icmpv6_checksum_ok(&frame));
    }

    #[test]
    fn solicited_node_group_takes_the_last_24_bits() {
        let ip: Ipv6Addr = "2001:db8::12:3456:789a".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff56:789a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(ip)).0,
            [0x33, 0x33, 0xff, 0x56, 0x78, 0x9a]
        );
    }
}
