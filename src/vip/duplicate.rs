//! Noticing another box that claims one of our VIPs.
//!
//! Raft and the lease make two holders impossible among raftvip nodes, but not against a
//! forgotten keepalived, a static address on a spare box or a VM restored from a snapshot.
//! Those answer our probes and send their own ARP/NA; this listener turns such frames into
//! claims, and the executor counts them and re-announces (see `Vips::on_duplicate`).
//!
//! One AF_PACKET socket per protocol listens on every interface and frames are matched to a
//! VIP's interface by index: binding per interface would need re-binding whenever an
//! interface is recreated. The IPv6 socket carries a kernel filter that passes Neighbour
//! Advertisements only, so the load balancer's IPv6 traffic is not copied to us.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use pnet_packet::arp::{ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmpv6::ndp::{NdpOptionTypes, NeighborAdvertPacket};
use pnet_packet::icmpv6::Icmpv6Types;
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::Packet;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::packet::{self, PacketSocket};
use super::{Cause, Mac, VipError};

/// Largest frame read: ARP and NA frames are < 100 bytes, the rest is truncated harmlessly.
const FRAME_BUF: usize = 2048;

/// "`ip` is at `mac`", as seen in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub ip: IpAddr,
    pub mac: Mac,
}

/// The claim a frame makes, if any: an ARP request or reply whose sender IP is set (a probe
/// from 0.0.0.0 claims nothing), or a Neighbour Advertisement for a target, with the MAC from
/// its Target Link-Layer Address option (else the Ethernet source).
pub fn parse_claim(frame: &[u8]) -> Option<Claim> {
    let eth = EthernetPacket::new(frame)?;
    match eth.get_ethertype() {
        EtherTypes::Arp => {
            let arp = ArpPacket::new(eth.payload())?;
            let op = arp.get_operation();
            if op != ArpOperations::Request && op != ArpOperations::Reply {
                return None;
            }
            let ip = arp.get_sender_proto_addr();
            if ip == Ipv4Addr::UNSPECIFIED {
                return None;
            }
            Some(Claim {
                ip: IpAddr::V4(ip),
                mac: Mac(arp.get_sender_hw_addr().octets()),
            })
        }
        EtherTypes::Ipv6 => {
            let ip = Ipv6Packet::new(eth.payload())?;
            if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 || ip.get_hop_limit() != 255 {
                return None;
            }
            let na = NeighborAdvertPacket::new(ip.payload())?;
            if na.get_icmpv6_type() != Icmpv6Types::NeighborAdvert {
                return None;
            }
            let tlla = na
                .get_options_iter()
                .find(|o| o.get_option_type() == NdpOptionTypes::TargetLLAddr)
                .and_then(|o| <[u8; 6]>::try_from(o.payload().get(..6)?).ok());
            Some(Claim {
                ip: IpAddr::V6(na.get_target_addr()),
                mac: Mac(tlla.unwrap_or_else(|| eth.get_source().octets())),
            })
        }
        _ => None,
    }
}

/// The listening sockets, opened in the caller's network namespace.
pub struct Listener {
    /// Each VIP and the name of its interface.
    vips: HashMap<IpAddr, String>,
    arp: Option<AsyncFd<PacketSocket>>,
    nd: Option<AsyncFd<PacketSocket>>,
}

impl Listener {
    /// Opens an ARP socket if any VIP is IPv4 and a filtered IPv6 socket if any is IPv6.
    /// Must be called inside a tokio runtime. Needs CAP_NET_RAW.
    pub fn open(vips: HashMap<IpAddr, String>) -> Result<Self, VipError> {
        let fail = |cause| VipError::Listen { cause };
        let arp = match vips.keys().any(IpAddr::is_ipv4) {
            true => Some(open(libc::ETH_P_ARP as u16, None).map_err(fail)?),
            false => None,
        };
        let nd = match vips.keys().any(IpAddr::is_ipv6) {
            true => {
                let filter = packet::neighbour_advert_filter();
                Some(open(libc::ETH_P_IPV6 as u16, Some(&filter)).map_err(fail)?)
            }
            false => None,
        };
        Ok(Self { vips, arp, nd })
    }

    /// Runs until `cancel` fires, calling `on_claim(vip, claim)` for every claim on a VIP,
    /// received on the VIP's interface, by a MAC that is not that interface's own.
    pub async fn run<F>(self, cancel: CancellationToken, mut on_claim: F) -> Result<(), VipError>
    where
        F: FnMut(IpAddr, Claim),
    {
        let mut buf = vec![0u8; FRAME_BUF];
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                claim = self.next_claim(&mut buf) => {
                    let (claim, _) = claim?;
                    on_claim(claim.ip, claim);
                }
            }
        }
    }

    /// The next claim on a VIP, received on the VIP's interface (its index is returned too),
    /// by a MAC that is not that interface's own. Cancel-safe: frames not read yet stay
    /// queued for the next call.
    pub async fn next_claim(&self, buf: &mut [u8]) -> Result<(Claim, u32), VipError> {
        let fail = |cause| VipError::Listen { cause };
        loop {
            let ready = tokio::select! {
                ready = readable(self.arp.as_ref()) => ready,
                ready = readable(self.nd.as_ref()) => ready,
            };
            let mut ready = ready.map_err(|e| fail(Cause::Os(e)))?;
            // Drain what is queued up to the first claim, then wait again.
            loop {
                let received = match ready.try_io(|socket| socket.get_ref().recv(buf)) {
                    Ok(Ok(received)) => received,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) => return Err(fail(Cause::Os(e))),
                    Err(_would_block) => break,
                };
                if received.pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let Some(claim) = buf.get(..received.len).and_then(parse_claim) else {
                    continue;
                };
                let Some(interface) = self.vips.get(&claim.ip) else {
                    continue;
                };
                // Lookups only for frames that name a VIP: rare, so their cost does not
                // matter, and a recreated interface or a changed MAC is seen at once.
                if packet::ifindex(interface).ok() != Some(received.ifindex) {
                    continue;
                }
                if packet::mac_of(interface).ok() == Some(claim.mac) {
                    continue;
                }
                tracing::debug!(vip = %claim.ip, mac = %claim.mac, %interface, "VIP claimed");
                return Ok((claim, received.ifindex));
            }
        }
    }
}

/// A non-blocking receiver of `ethertype` frames (see [`PacketSocket::receiver`]) registered
/// with the runtime.
pub(super) fn open(
    ethertype: u16,
    filter: Option<&[libc::sock_filter]>,
) -> Result<AsyncFd<PacketSocket>, Cause> {
    let socket = PacketSocket::receiver(ethertype, filter)?;
    // SAFETY: PacketSocket owns its descriptor for its whole life and always returns it.
    unsafe { AsyncFd::register(socket) }.map_err(|e| Cause::Os(e.into_parts().1))
}

/// Waits until `socket` is readable; never completes for an absent socket.
pub(super) async fn readable(
    socket: Option<&AsyncFd<PacketSocket>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, PacketSocket>> {
    match socket {
        Some(socket) => socket.readable().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::announce;
    use std::net::Ipv6Addr;

    const THEIRS: Mac = Mac([0x02, 0, 0, 0, 0x0b, 0x01]);
    const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    #[test]
    fn announcements_and_replies_claim_the_sender_ip() {
        let want = Some(Claim {
            ip: IpAddr::V4(VIP4),
            mac: THEIRS,
        });
        assert_eq!(parse_claim(&announce::garp_request(THEIRS, VIP4)), want);
        assert_eq!(parse_claim(&announce::garp_reply(THEIRS, VIP4)), want);
    }

    #[test]
    fn a_probe_from_the_unspecified_address_claims_nothing() {
        assert_eq!(parse_claim(&announce::arp_probe(THEIRS, VIP4)), None);
        assert_eq!(parse_claim(&announce::dad_ns(THEIRS, VIP6)), None);
    }

    #[test]
    fn a_neighbour_advert_claims_its_target() {
        assert_eq!(
            parse_claim(&announce::unsolicited_na(THEIRS, VIP6)),
            Some(Claim {
                ip: IpAddr::V6(VIP6),
                mac: THEIRS
            })
        );
    }

    #[test]
    fn an_advert_without_tlla_uses_the_ethernet_source() {
        let mut frame = announce::unsolicited_na(THEIRS, VIP6).to_vec();
        frame.truncate(frame.len() - 8);
        frame[18..20].copy_from_slice(&24u16.to_be_bytes());
        let claim = parse_claim(&frame).expect("an NA");
        assert_eq!(claim.mac, THEIRS);
    }

    #[test]
    fn truncated_and_foreign_frames_are_ignored() {
        assert_eq!(parse_claim(&[]), None);
        assert_eq!(
            parse_claim(&announce::garp_request(THEIRS, VIP4)[..20]),
            None
        );
        let mut ipv4 = announce::garp_request(THEIRS, VIP4);
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse_claim(&ipv4), None);
        let mut low_hop = announce::unsolicited_na(THEIRS, VIP6);
        low_hop[21] = 64;
        assert_eq!(parse_claim(&low_hop), None);
    }
}
