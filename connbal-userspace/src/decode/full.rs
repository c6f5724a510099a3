//! The full decoder, through etherparse's lax slicer, so that a frame cut by
//! the snap length decodes as far as its bytes go. It takes every link
//! type, VLAN tags, IP options and extension headers, tunnels (up to
//! `MAX_DEPTH` layers) and fragments, and says what it found; counting is
//! the caller's.

use super::fragment::{fragment_of, Piece};
use super::link::{unwrap_link, Inner};
use super::tunnel::{gre_payload, udp_tunnel};
use super::{Decoded, Found};
use crate::aggregator::{Datagram, Event, Segment};
use crate::capture::{Frame, LinkType};
use connbal_common::{classify_tcp, is_dns_port, TcpVerdict};
use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use std::net::{IpAddr, SocketAddr};

/// Encapsulations unwrapped within one frame at most (VXLAN in GRE in
/// IP-in-IP...); deeper nesting is counted as damage.
pub(super) const MAX_DEPTH: u8 = 4;

/// What one frame holds, through etherparse's lax slicer.
pub fn decode_sliced<'a>(frame: &Frame<'a>, all_tcp: bool) -> Decoded<'a> {
    if let LinkType::Other(_) = frame.link {
        return Decoded::plain(Found::UnsupportedLink);
    }
    let cut_short = (frame.data.len() as u64) < u64::from(frame.wire_len);
    let damaged = Found::Damaged { cut_short };
    let mut tunnelled = false;
    let mut layer = unwrap_link(frame.link, frame.data);
    for depth in 0..=MAX_DEPTH {
        let packet = match layer {
            Inner::Ethernet(data) => LaxSlicedPacket::from_ethernet(data).ok(),
            Inner::EtherType(ethertype, data) => {
                Some(LaxSlicedPacket::from_ether_type(EtherType(ethertype), data))
            }
            Inner::Ip(data) => LaxSlicedPacket::from_ip(data).ok(),
            Inner::Link(link, data) => {
                layer = unwrap_link(link, data);
                continue;
            }
            Inner::NotIp => return Decoded::new(Found::NotIp, tunnelled),
            Inner::Damaged => return Decoded::new(damaged, tunnelled),
        };
        let Some(packet) = packet else {
            return Decoded::new(damaged, tunnelled);
        };
        match decode_packet(frame, &packet, cut_short, all_tcp) {
            Layer::Found(found) => return Decoded::new(found, tunnelled),
            Layer::Tunnel(inner) => {
                tunnelled |= depth == 0;
                layer = inner;
            }
        }
    }
    // Encapsulated deeper than anyone sends.
    Decoded::new(damaged, tunnelled)
}

enum Layer<'a> {
    Found(Found<'a>),
    /// The packet is a tunnel: decode what it carries.
    Tunnel(Inner<'a>),
}

fn decode_packet<'a>(
    frame: &Frame<'a>,
    packet: &LaxSlicedPacket<'a>,
    cut_short: bool,
    all_tcp: bool,
) -> Layer<'a> {
    let damaged = Found::Damaged { cut_short };
    let (src, dst, ip_payload) = match &packet.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
            )
        }
        Some(LaxNetSlice::Arp(_)) | None => {
            return Layer::Found(if packet.stop_err.is_some() {
                damaged
            } else {
                Found::NotIp
            });
        }
    };
    let truncated = ip_payload.incomplete || cut_short;
    let found = match &packet.transport {
        Some(TransportSlice::Udp(udp)) => {
            let (sport, dport) = (udp.source_port(), udp.destination_port());
            if let Some(inner) = udp_tunnel(sport, dport, udp.payload()) {
                return Layer::Tunnel(inner);
            }
            if !is_dns_port(sport, dport) {
                return Layer::Found(Found::Dropped);
            }
            Found::Event(Event::Udp(Datagram {
                ts: frame.ts,
                src: SocketAddr::new(src, sport),
                dst: SocketAddr::new(dst, dport),
                payload: udp.payload(),
                truncated,
                owner: None,
            }))
        }
        Some(TransportSlice::Tcp(tcp)) => {
            let (sport, dport) = (tcp.source_port(), tcp.destination_port());
            let flags = tcp.header_slice()[13];
            let payload = match classify_tcp(flags, sport, dport, tcp.payload().len(), all_tcp) {
                TcpVerdict::Drop => return Layer::Found(Found::Dropped),
                TcpVerdict::Segment => &[][..],
                TcpVerdict::DnsPayload => tcp.payload(),
            };
            Found::Event(Event::Tcp(Segment {
                ts: frame.ts,
                src: SocketAddr::new(src, sport),
                dst: SocketAddr::new(dst, dport),
                flags,
                seq: tcp.sequence_number(),
                payload,
                truncated: truncated && !payload.is_empty(),
                // What the peer has received: past a hole in the capture,
                // the reassembler of the other direction goes on without it.
                ack: (flags & connbal_common::tcp_flags::ACK != 0 && !payload.is_empty())
                    .then(|| tcp.acknowledgment_number()),
                first_of_flow: None,
                owner: None,
            }))
        }
        Some(_) => Found::Dropped,
        None if ip_payload.fragmented => {
            let piece = Piece {
                ts: frame.ts,
                protocol: ip_payload.ip_number,
                data: ip_payload.payload,
                cut: truncated,
            };
            match fragment_of(packet.net.as_ref(), &piece) {
                Some(fragment) => Found::Fragment(fragment),
                None => Found::UnplaceableFragment,
            }
        }
        None if packet.stop_err.is_some() => damaged,
        // IP-in-IP (4, 41) and GRE (47) carry packets of their own.
        None => match ip_payload.ip_number.0 {
            4 | 41 => return Layer::Tunnel(Inner::Ip(ip_payload.payload)),
            47 => return Layer::Tunnel(gre_payload(ip_payload.payload)),
            _ => Found::Dropped,
        },
    };
    Layer::Found(found)
}
