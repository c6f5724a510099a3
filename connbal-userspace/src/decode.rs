//! Frames to events: link layer, IPv4/IPv6, UDP/TCP, via etherparse's lax
//! slicer so a frame cut by the snap length decodes as far as its bytes go.
//!
//! Link layers etherparse does not know (BSD loopback, PPP and PPPoE,
//! NFLOG, PKTAP) are unwrapped here to the IP packet or Ethernet frame they
//! carry, and so are the overlay tunnels that carry pods' traffic between
//! nodes (VXLAN, Geneve, GRE and ERSPAN, IP-in-IP): the inner packet is
//! decoded and attributed to its own addresses. Each is a few fixed-offset
//! reads, hand-written because no maintained crate decodes them without
//! allocating per packet.
//!
//! The same pre-filter as the kernel program (connbal_common) decides what
//! becomes an event; everything else is dropped here, before any work that
//! allocates.

use crate::aggregator::{Datagram, Event, Segment};
use crate::capture::{Frame, LinkType};
use crate::defrag::{Fragment, Reassembler};
use crate::tally::counter_set;
use connbal_common::{classify_tcp, is_dns_port, TcpVerdict};
use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

counter_set! {
    /// What the capture side saw; reported with `-v` and in JSON.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct InputStats {
        pub packets: u64,
        pub bytes: u64,
        /// Frames whose headers were damaged (IPv4 IHL below 5, a TCP data
        /// offset past the frame, shorter than the link header, ...).
        pub malformed_packets_skipped: u64,
        /// Frames whose headers were cut short by the snap length.
        pub truncated_packets_skipped: u64,
        /// IP fragments given up: timed out (30 s for IPv4, 60 s for
        /// IPv6, in capture time), pushed out of a full table,
        /// inconsistent, cut by the snap length, or still incomplete at
        /// the end of the input.
        pub ip_fragments_skipped: u64,
        /// IP fragments that became part of a whole datagram.
        pub ip_fragments_reassembled: u64,
        /// Datagrams rebuilt from fragments, then decoded as any packet.
        pub ip_datagrams_reassembled: u64,
        /// Frames on a pcapng interface whose link type connbal does not
        /// decode (a warning names the type).
        pub unsupported_link_packets: u64,
        /// Frames that carry no IP (ARP, another address family or PPP
        /// protocol): read, and of no interest.
        pub non_ip_packets: u64,
        /// Container blocks that carry no packet (pcapng name resolution,
        /// statistics, custom blocks), skipped on purpose.
        pub capture_blocks_skipped: u64,
        /// Inner packets unwrapped from a tunnel or an encapsulation
        /// (VXLAN, Geneve, GRE, ERSPAN, IP-in-IP, PPPoE).
        pub tunnelled_packets: u64,
    }
}

/// Encapsulations unwrapped within one frame at most (VXLAN in GRE in
/// IP-in-IP...); deeper nesting is counted as damage.
const MAX_DEPTH: u8 = 4;
const VXLAN_PORT: u16 = 4789;
const GENEVE_PORT: u16 = 6081;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_TEB: u16 = 0x6558;
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const ETHERTYPE_ERSPAN_2: u16 = 0x88BE;
const ETHERTYPE_ERSPAN_3: u16 = 0x22EB;

/// Where the network layer of a frame starts, once its link layer (or a
/// tunnel's header) is taken off.
enum Inner<'a> {
    /// An Ethernet frame (VLAN tags and all).
    Ethernet(&'a [u8]),
    EtherType(u16, &'a [u8]),
    /// An IP packet, its version in its first nibble.
    Ip(&'a [u8]),
    /// A frame of another link type (PKTAP's payload).
    Link(LinkType, &'a [u8]),
    /// Well-formed, but not IP.
    NotIp,
    /// Too short for its own header.
    Damaged,
}

/// What an unwrapped tunnel or link header carries, by EtherType.
fn by_ethertype(ethertype: u16, rest: &[u8]) -> Inner<'_> {
    match ethertype {
        ETHERTYPE_TEB => Inner::Ethernet(rest),
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Inner::Ip(rest),
        _ => Inner::NotIp,
    }
}

/// BSD loopback's address family: 2 is IPv4 everywhere, IPv6 is 24
/// (NetBSD, OpenBSD), 28 (FreeBSD) or 30 (macOS).
fn by_address_family(family: u32, rest: &[u8]) -> Inner<'_> {
    match family {
        2 | 24 | 28 | 30 => Inner::Ip(rest),
        _ => Inner::NotIp,
    }
}

/// PPP protocol numbers for IPv4 and IPv6.
fn by_ppp_protocol(protocol: u16, rest: &[u8]) -> Inner<'_> {
    match protocol {
        0x0021 | 0x0057 => Inner::Ip(rest),
        _ => Inner::NotIp,
    }
}

/// The network layer inside a frame of link type `link`.
fn unwrap_link(link: LinkType, data: &[u8]) -> Inner<'_> {
    let at = |n: usize| data.get(n..).filter(|_| data.len() >= n);
    match link {
        LinkType::Ethernet => {
            // PPPoE sessions (DSL lines): 6 bytes of PPPoE, then PPP.
            if data.len() >= 14 && be16(data, 12) == ETHERTYPE_PPPOE_SESSION {
                return match at(22) {
                    Some(rest) => by_ppp_protocol(be16(data, 20), rest),
                    None => Inner::Damaged,
                };
            }
            Inner::Ethernet(data)
        }
        LinkType::LinuxSll => match at(SLL_HEADER) {
            Some(rest) => Inner::EtherType(be16(data, 14), rest),
            None => Inner::Damaged,
        },
        LinkType::LinuxSll2 => match at(SLL2_HEADER) {
            Some(rest) => Inner::EtherType(be16(data, 0), rest),
            None => Inner::Damaged,
        },
        LinkType::RawIp => Inner::Ip(data),
        LinkType::Null | LinkType::Loop => {
            let Some(rest) = at(4) else {
                return Inner::Damaged;
            };
            let raw = [data[0], data[1], data[2], data[3]];
            let family = if link == LinkType::Loop {
                u32::from_be_bytes(raw)
            } else {
                // The writer's byte order: a family fits in 16 bits.
                let le = u32::from_le_bytes(raw);
                if le > 0xFFFF {
                    le.swap_bytes()
                } else {
                    le
                }
            };
            by_address_family(family, rest)
        }
        LinkType::Ppp => {
            // Optional HDLC address and control bytes, then the protocol
            // (one byte when compressed: its low bit is set).
            let body = match data {
                [0xff, 0x03, rest @ ..] => rest,
                _ => data,
            };
            match body {
                [first, rest @ ..] if first & 1 == 1 => by_ppp_protocol(u16::from(*first), rest),
                [hi, lo, rest @ ..] => by_ppp_protocol(u16::from_be_bytes([*hi, *lo]), rest),
                _ => Inner::Damaged,
            }
        }
        LinkType::Nflog => nflog_payload(data),
        LinkType::Pktap => pktap_frame(data),
        LinkType::Other(_) => Inner::NotIp,
    }
}

/// Linux NFLOG: family, version, resource id, then TLVs (length and type
/// in host byte order, little-endian on every host that writes these,
/// padded to 4 bytes); the packet is NFULA_PAYLOAD (9).
fn nflog_payload(data: &[u8]) -> Inner<'_> {
    const NFULA_PAYLOAD: u16 = 9;
    if data.len() < 4 {
        return Inner::Damaged;
    }
    let mut at = 4;
    // Bounded by the frame: every step advances at least 4 bytes.
    while at + 4 <= data.len() {
        let len = usize::from(u16::from_le_bytes([data[at], data[at + 1]]));
        let kind = u16::from_le_bytes([data[at + 2], data[at + 3]]);
        if len < 4 {
            return Inner::Damaged;
        }
        if kind == NFULA_PAYLOAD {
            let end = (at + len).min(data.len());
            return Inner::Ip(&data[at + 4..end]);
        }
        at += len.next_multiple_of(4);
    }
    Inner::NotIp
}

/// Apple PKTAP (`tcpdump -i any` on macOS): a header of its own length,
/// whose `pth_dlt` is the DLT of the frame after it.
fn pktap_frame(data: &[u8]) -> Inner<'_> {
    if data.len() < 12 {
        return Inner::Damaged;
    }
    let header = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let kind = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    let dlt = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    // PTH_TYPE_PACKET; other records carry no packet.
    if kind != 1 {
        return Inner::NotIp;
    }
    let Some(rest) = data.get(header..).filter(|_| header >= 12) else {
        return Inner::Damaged;
    };
    // DLT values, which differ from LINKTYPE values only for raw IP.
    let link = match dlt {
        0 => LinkType::Null,
        1 => LinkType::Ethernet,
        12 => LinkType::RawIp,
        other => match LinkType::from_linktype(other as i32) {
            Some(link) if link != LinkType::Pktap => link,
            _ => return Inner::NotIp,
        },
    };
    Inner::Link(link, rest)
}

/// A VXLAN or Geneve payload of a UDP datagram to or from their ports.
fn udp_tunnel(sport: u16, dport: u16, payload: &[u8]) -> Option<Inner<'_>> {
    if sport == VXLAN_PORT || dport == VXLAN_PORT {
        // Flags with the I bit (a valid VNI), reserved, VNI, reserved.
        return Some(match payload {
            [flags, _, _, _, _, _, _, _, rest @ ..] if flags & 0x08 != 0 => Inner::Ethernet(rest),
            [_, _, _, _, _, _, _, _, ..] => Inner::NotIp,
            _ => Inner::Damaged,
        });
    }
    if sport == GENEVE_PORT || dport == GENEVE_PORT {
        if payload.len() < 8 {
            return Some(Inner::Damaged);
        }
        let header = 8 + usize::from(payload[0] & 0x3f) * 4;
        let Some(rest) = payload.get(header..) else {
            return Some(Inner::Damaged);
        };
        return Some(by_ethertype(be16(payload, 2), rest));
    }
    None
}

/// GRE (RFC 2784 and 2890): checksum, key and sequence number when their
/// flags say so; ERSPAN types II and III carry a mirrored Ethernet frame.
fn gre_payload(payload: &[u8]) -> Inner<'_> {
    if payload.len() < 4 {
        return Inner::Damaged;
    }
    let flags = payload[0];
    let optional = 4
        * (usize::from(flags & 0x80 != 0)
            + usize::from(flags & 0x20 != 0)
            + usize::from(flags & 0x10 != 0));
    let Some(rest) = payload.get(4 + optional..) else {
        return Inner::Damaged;
    };
    match be16(payload, 2) {
        ETHERTYPE_ERSPAN_2 => rest.get(8..).map_or(Inner::Damaged, Inner::Ethernet),
        // Type III: 12 bytes, and 8 more of platform data when its O bit
        // (the last bit of the header) is set.
        ETHERTYPE_ERSPAN_3 => match rest.get(..12) {
            Some(h) => {
                let header = if h[11] & 0x01 != 0 { 20 } else { 12 };
                rest.get(header..).map_or(Inner::Damaged, Inner::Ethernet)
            }
            None => Inner::Damaged,
        },
        ethertype => by_ethertype(ethertype, rest),
    }
}

const SLL_HEADER: usize = 16;
const SLL2_HEADER: usize = 20;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// What reading a plain IP frame at fixed offsets decided.
#[derive(Debug)]
pub enum Quick<'a> {
    /// The pre-filter drops it (bulk data, UDP other than DNS).
    Drop,
    /// Its event: a DNS datagram, or a segment kept without payload
    /// (connection attempts and their replies, and every segment under
    /// `-a`).
    Event(Event<'a>),
    /// Anything else: the full decoder's.
    Full,
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The common case first: a well-formed IPv4 or IPv6 TCP or UDP packet on an
/// untagged Ethernet frame. Reads a dozen bytes at fixed offsets instead
/// of slicing the packet (etherparse's slicer, and the copies of its large
/// result, cost some 660 instructions a frame), and answers only where the
/// full decoder would give the same event and count no damage; anything
/// unusual (VLAN tags, options past the frame, IPv6 extension headers,
/// fragments, short or cut headers, lengths that disagree, tunnels, DNS over
/// TCP) goes to the full decoder. The frames fuzz target checks that
/// promise.
pub fn quick_ip<'a>(frame: &Frame<'a>, all_tcp: bool) -> Quick<'a> {
    let d = frame.data;
    if frame.link != LinkType::Ethernet || d.len() < 14 + 20 {
        return Quick::Full;
    }
    // (network header length, IP payload length claimed, protocol, where
    // the source and destination addresses start, their length)
    let (ihl, ip_payload_len, protocol, src_at, address_len) = match be16(d, 12) {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(d[14] & 0x0f) * 4;
            let fragment = be16(d, 20) & 0x3fff != 0;
            if d[14] >> 4 != 4 || ihl < 20 || fragment {
                return Quick::Full;
            }
            let total = usize::from(be16(d, 16));
            (ihl, total.saturating_sub(ihl), d[23], 26, 4)
        }
        // Without extension headers: the next header is the transport.
        ETHERTYPE_IPV6 if d.len() >= 14 + 40 && d[14] >> 4 == 6 => {
            (40, usize::from(be16(d, 18)), d[20], 22, 16)
        }
        _ => return Quick::Full,
    };
    let l4 = 14 + ihl;
    let addresses = Addresses {
        at: src_at,
        len: address_len,
    };
    match protocol {
        IPPROTO_TCP => quick_tcp(frame, l4, ip_payload_len, addresses, all_tcp),
        IPPROTO_UDP => quick_udp(frame, l4, ip_payload_len, addresses),
        _ => Quick::Full,
    }
}

/// Where a packet's source and destination addresses sit, read only for
/// the frames that become events (not for the bulk that is dropped).
#[derive(Clone, Copy)]
struct Addresses {
    at: usize,
    /// 4 or 16.
    len: usize,
}

impl Addresses {
    fn read(self, d: &[u8]) -> (IpAddr, IpAddr) {
        let one = |at: usize| match self.len {
            4 => IpAddr::from([d[at], d[at + 1], d[at + 2], d[at + 3]]),
            _ => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&d[at..at + 16]);
                IpAddr::from(octets)
            }
        };
        (one(self.at), one(self.at + self.len))
    }
}

/// `ip_payload_len` is what the IP header claims follows it.
fn quick_tcp<'a>(
    frame: &Frame<'a>,
    l4: usize,
    ip_payload_len: usize,
    addresses: Addresses,
    all_tcp: bool,
) -> Quick<'a> {
    let d = frame.data;
    let Some(tcp) = d.get(l4..l4 + 20) else {
        return Quick::Full;
    };
    let header = usize::from(tcp[12] >> 4) * 4;
    if header < 20 || l4 + header > d.len() || ip_payload_len < header {
        return Quick::Full;
    }
    let payload = ip_payload_len - header;
    let (sport, dport) = (be16(tcp, 0), be16(tcp, 2));
    match classify_tcp(tcp[13], sport, dport, payload, all_tcp) {
        TcpVerdict::Drop => Quick::Drop,
        TcpVerdict::DnsPayload => Quick::Full,
        TcpVerdict::Segment => {
            let (src, dst) = addresses.read(d);
            Quick::Event(Event::Tcp(Segment {
                ts: frame.ts,
                src: SocketAddr::new(src, sport),
                dst: SocketAddr::new(dst, dport),
                flags: tcp[13],
                seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
                payload: &[],
                truncated: false,
                first_of_flow: None,
                owner: None,
            }))
        }
    }
}

/// Only a datagram whole in the frame, whose UDP length agrees with the IP
/// header's, is answered here: then the payload is exactly the bytes
/// between the UDP header and the end of the IP packet (Ethernet padding
/// excluded), and nothing is truncated.
fn quick_udp<'a>(
    frame: &Frame<'a>,
    l4: usize,
    ip_payload_len: usize,
    addresses: Addresses,
) -> Quick<'a> {
    let d = frame.data;
    let end = l4 + ip_payload_len;
    let cut_short = (d.len() as u64) < u64::from(frame.wire_len);
    if cut_short || end > d.len() || ip_payload_len < 8 {
        return Quick::Full;
    }
    let udp = &d[l4..l4 + 8];
    let (sport, dport) = (be16(udp, 0), be16(udp, 2));
    let tunnel = |port| matches!(port, VXLAN_PORT | GENEVE_PORT);
    if usize::from(be16(udp, 4)) != ip_payload_len || tunnel(sport) || tunnel(dport) {
        return Quick::Full;
    }
    if !is_dns_port(sport, dport) {
        return Quick::Drop;
    }
    let (src, dst) = addresses.read(d);
    Quick::Event(Event::Udp(Datagram {
        ts: frame.ts,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload: &d[l4 + 8..end],
        truncated: false,
        owner: None,
    }))
}

/// A frame the pre-filter drops, told at fixed offsets.
pub fn is_plain_bulk_tcp(frame: &Frame<'_>, all_tcp: bool) -> bool {
    matches!(quick_ip(frame, all_tcp), Quick::Drop)
}

/// A frame's event, if the pre-filter keeps one. Fragments go to
/// `fragments`; a datagram they complete waits there for the caller.
pub fn decode<'a>(
    frame: &Frame<'a>,
    all_tcp: bool,
    stats: &mut InputStats,
    fragments: &mut Reassembler,
) -> Option<Event<'a>> {
    match quick_ip(frame, all_tcp) {
        Quick::Drop => None,
        Quick::Event(event) => Some(event),
        Quick::Full => decode_sliced(frame, all_tcp, stats, fragments),
    }
}

/// The full decoder, through etherparse's lax slicer.
pub fn decode_sliced<'a>(
    frame: &Frame<'a>,
    all_tcp: bool,
    stats: &mut InputStats,
    fragments: &mut Reassembler,
) -> Option<Event<'a>> {
    if let LinkType::Other(_) = frame.link {
        stats.unsupported_link_packets += 1;
        return None;
    }
    let cut_short = (frame.data.len() as u64) < u64::from(frame.wire_len);
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
            Inner::NotIp => {
                stats.non_ip_packets += 1;
                return None;
            }
            Inner::Damaged => {
                count_damage(stats, cut_short);
                return None;
            }
        };
        let Some(packet) = packet else {
            count_damage(stats, cut_short);
            return None;
        };
        match decode_packet(frame, &packet, cut_short, all_tcp, stats, fragments) {
            Decoded::Event(event) => return event,
            Decoded::Tunnel(inner) => {
                if depth == 0 {
                    stats.tunnelled_packets += 1;
                }
                layer = inner;
            }
        }
    }
    // Encapsulated deeper than anyone sends.
    count_damage(stats, cut_short);
    None
}

enum Decoded<'a> {
    /// The packet's event, if the pre-filter keeps one.
    Event(Option<Event<'a>>),
    /// The packet is a tunnel: decode what it carries.
    Tunnel(Inner<'a>),
}

fn decode_packet<'a>(
    frame: &Frame<'a>,
    packet: &LaxSlicedPacket<'a>,
    cut_short: bool,
    all_tcp: bool,
    stats: &mut InputStats,
    fragments: &mut Reassembler,
) -> Decoded<'a> {
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
            if packet.stop_err.is_some() {
                count_damage(stats, cut_short);
            } else {
                stats.non_ip_packets += 1;
            }
            return Decoded::Event(None);
        }
    };
    let truncated = ip_payload.incomplete || cut_short;
    let event = match &packet.transport {
        Some(TransportSlice::Udp(udp)) => {
            let (sport, dport) = (udp.source_port(), udp.destination_port());
            if let Some(inner) = udp_tunnel(sport, dport, udp.payload()) {
                return Decoded::Tunnel(inner);
            }
            if !is_dns_port(sport, dport) {
                return Decoded::Event(None);
            }
            Some(Event::Udp(Datagram {
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
                TcpVerdict::Drop => return Decoded::Event(None),
                TcpVerdict::Segment => &[][..],
                TcpVerdict::DnsPayload => tcp.payload(),
            };
            Some(Event::Tcp(Segment {
                ts: frame.ts,
                src: SocketAddr::new(src, sport),
                dst: SocketAddr::new(dst, dport),
                flags,
                seq: tcp.sequence_number(),
                payload,
                truncated: truncated && !payload.is_empty(),
                first_of_flow: None,
                owner: None,
            }))
        }
        Some(_) => None,
        None => {
            if ip_payload.fragmented {
                let fragment = Fragment {
                    ts: frame.ts,
                    offset: Default::default(),
                    more_fragments: false,
                    protocol: ip_payload.ip_number,
                    data: ip_payload.payload,
                    cut: truncated,
                };
                hand_over_fragment(&packet.net, fragment, stats, fragments);
            } else if packet.stop_err.is_some() {
                count_damage(stats, cut_short);
            } else {
                // IP-in-IP (4, 41) and GRE (47) carry packets of their own.
                match ip_payload.ip_number.0 {
                    4 | 41 => return Decoded::Tunnel(Inner::Ip(ip_payload.payload)),
                    47 => return Decoded::Tunnel(gre_payload(ip_payload.payload)),
                    _ => {}
                }
            }
            None
        }
    };
    Decoded::Event(event)
}

/// A fragment to the reassembler, with what identifies its datagram and
/// where it goes in it. `fragment` comes with the IP payload as the slicer
/// found it; the rest is read here.
fn hand_over_fragment(
    net: &Option<LaxNetSlice<'_>>,
    fragment: Fragment<'_>,
    stats: &mut InputStats,
    fragments: &mut Reassembler,
) {
    match net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let fragment = Fragment {
                offset: h.fragments_offset(),
                more_fragments: h.more_fragments(),
                ..fragment
            };
            let addresses = (h.source_addr(), h.destination_addr());
            fragments.ipv4(addresses, h.identification(), &fragment, stats);
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let exts = v6.extensions().slice();
            let header = v6.extensions().clone().into_iter().find_map(|e| match e {
                etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                _ => None,
            });
            let Some(header) = header else {
                stats.ip_fragments_skipped += 1;
                return;
            };
            // What follows the fragment header is the fragment's data; when
            // the slicer read extension headers past it (they belong to the
            // fragmentable part), they go first.
            let after = header.slice().as_ptr() as usize + header.slice().len();
            let read_past = exts
                .get(after.saturating_sub(exts.as_ptr() as usize)..)
                .filter(|e| !e.is_empty());
            let joined = read_past.map(|e| [e, fragment.data].concat());
            let fragment = Fragment {
                offset: header.fragment_offset(),
                more_fragments: header.more_fragments(),
                protocol: header.next_header(),
                data: joined.as_deref().unwrap_or(fragment.data),
                ..fragment
            };
            let h = v6.header();
            let addresses = (h.source_addr(), h.destination_addr());
            fragments.ipv6(addresses, header.identification(), &fragment, stats);
        }
        _ => stats.ip_fragments_skipped += 1,
    }
}

fn count_damage(stats: &mut InputStats, cut_short: bool) {
    if cut_short {
        stats.truncated_packets_skipped += 1;
    } else {
        stats.malformed_packets_skipped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::Timestamp;
    use connbal_common::tcp_flags::{ACK, PSH, RST, SYN};
    use etherparse::{IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, TcpHeader};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn frame(link: LinkType, data: &[u8]) -> Frame<'_> {
        Frame {
            ts: Timestamp(5),
            link,
            data,
            wire_len: data.len() as u32,
        }
    }

    fn udp_dns_ipv4() -> Vec<u8> {
        udp_ipv4(40000, 53, b"dns!")
    }

    fn udp_ipv4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .ipv4([192, 0, 2, 1], [192, 0, 2, 53], 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn tcp_ipv4(flags: u8, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let builder = PacketBuilder::ethernet2(MAC, MAC)
            .ipv4([192, 0, 2, 1], [192, 0, 2, 80], 64)
            .tcp(sport, dport, 77, 1000);
        let builder = if flags & SYN != 0 {
            builder.syn()
        } else {
            builder
        };
        let builder = if flags & ACK != 0 {
            builder.ack(1)
        } else {
            builder
        };
        let builder = if flags & PSH != 0 {
            builder.psh()
        } else {
            builder
        };
        builder.write(&mut out, payload).unwrap();
        out
    }

    const V6_SRC: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53];

    fn tcp_ipv6(syn: bool, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let builder = PacketBuilder::ethernet2(MAC, MAC)
            .ipv6(V6_SRC, V6_DST, 64)
            .tcp(sport, dport, 77, 1000);
        let builder = if syn { builder.syn() } else { builder.ack(1) };
        builder.write(&mut out, payload).unwrap();
        out
    }

    fn udp_ipv6(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .ipv6(V6_SRC, V6_DST, 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn event(link: LinkType, data: &[u8], all_tcp: bool) -> (Option<String>, InputStats) {
        let mut stats = InputStats::default();
        let e = decode(
            &frame(link, data),
            all_tcp,
            &mut stats,
            &mut Reassembler::default(),
        )
        .map(|e| match e {
            Event::Udp(d) => format!(
                "udp {} > {} {:?} trunc={}",
                d.src, d.dst, d.payload, d.truncated
            ),
            Event::Tcp(s) => format!(
                "tcp {} > {} flags={:#x} seq={} {:?}",
                s.src, s.dst, s.flags, s.seq, s.payload
            ),
        });
        (e, stats)
    }

    #[test]
    fn dns_over_udp_and_syns_become_events_bulk_does_not() {
        assert_eq!(
            event(LinkType::Ethernet, &udp_dns_ipv4(), false).0.unwrap(),
            "udp 192.0.2.1:40000 > 192.0.2.53:53 [100, 110, 115, 33] trunc=false"
        );
        assert_eq!(
            event(LinkType::Ethernet, &tcp_ipv4(SYN, 40000, 80, &[]), false)
                .0
                .unwrap(),
            "tcp 192.0.2.1:40000 > 192.0.2.80:80 flags=0x2 seq=77 []"
        );
        assert_eq!(
            event(
                LinkType::Ethernet,
                &tcp_ipv4(ACK | PSH, 40000, 80, &[0; 100]),
                false
            )
            .0,
            None
        );
        assert!(event(
            LinkType::Ethernet,
            &tcp_ipv4(ACK | PSH, 40000, 80, &[0; 100]),
            true
        )
        .0
        .unwrap()
        .ends_with("flags=0x18 seq=77 []"));
        assert!(event(
            LinkType::Ethernet,
            &tcp_ipv4(ACK | PSH, 40000, 53, b"xy"),
            false
        )
        .0
        .unwrap()
        .ends_with("[120, 121]"));
    }

    fn with_vlan_tags(frame: &[u8], tags: &[u16]) -> Vec<u8> {
        let mut out = frame[..12].to_vec();
        for &tpid in tags {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&[0, 42]);
        }
        out.extend_from_slice(&frame[12..]);
        out
    }

    #[test]
    fn one_and_stacked_vlan_tags() {
        let plain = udp_dns_ipv4();
        for tags in [&[0x8100][..], &[0x88a8, 0x8100]] {
            let (e, _) = event(LinkType::Ethernet, &with_vlan_tags(&plain, tags), false);
            assert!(e.unwrap().starts_with("udp 192.0.2.1:40000"), "{tags:?}");
        }
    }

    #[test]
    fn linux_cooked_v1_v2_and_raw_ip() {
        let ip = &udp_dns_ipv4()[14..];
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
        ];
        sll2.extend_from_slice(ip);
        for (link, data) in [
            (LinkType::LinuxSll, &sll[..]),
            (LinkType::LinuxSll2, &sll2[..]),
            (LinkType::RawIp, ip),
        ] {
            assert!(
                event(link, data, false)
                    .0
                    .unwrap()
                    .starts_with("udp 192.0.2.1:40000 > 192.0.2.53:53"),
                "{link:?}"
            );
        }
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut out = Vec::new();
        let mut ip =
            Ipv4Header::new(8 + 4, 64, IpNumber::UDP, [192, 0, 2, 1], [192, 0, 2, 53]).unwrap();
        ip.options = [1, 1, 1, 1, 1, 1, 1, 0][..].try_into().unwrap();
        ip.total_len = (ip.header_len() + 12) as u16;
        PacketBuilder::ethernet2(MAC, MAC)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .udp(40000, 53)
            .write(&mut out, b"dns!")
            .unwrap();
        assert!(event(LinkType::Ethernet, &out, false)
            .0
            .unwrap()
            .ends_with("[100, 110, 115, 33] trunc=false"));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        // Hop-by-hop options (8 bytes, padding), then TCP.
        let tcp = TcpHeader::new(40000, 443, 9, 1000);
        let mut tcp = tcp;
        tcp.syn = true;
        let tcp_bytes = tcp.to_bytes();
        let hop_by_hop = [6u8, 0, 1, 4, 0, 0, 0, 0];
        let ip = Ipv6Header {
            payload_length: (hop_by_hop.len() + tcp_bytes.len()) as u16,
            next_header: IpNumber::IPV6_HEADER_HOP_BY_HOP,
            hop_limit: 64,
            source: "2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            destination: "2001:db8::10"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            ..Default::default()
        };
        let mut data = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        data.extend_from_slice(&ip.to_bytes());
        data.extend_from_slice(&hop_by_hop);
        data.extend_from_slice(&tcp_bytes);
        assert_eq!(
            event(LinkType::Ethernet, &data, false).0.unwrap(),
            "tcp [2001:db8::2]:40000 > [2001:db8::10]:443 flags=0x2 seq=9 []"
        );
    }

    #[test]
    fn truncated_dns_is_flagged_and_cut_headers_are_counted() {
        let full = udp_dns_ipv4();
        let cut = &full[..full.len() - 2];
        let mut stats = InputStats::default();
        let f = Frame {
            ts: Timestamp(1),
            link: LinkType::Ethernet,
            data: cut,
            wire_len: full.len() as u32,
        };
        match decode(&f, false, &mut stats, &mut Reassembler::default()) {
            Some(Event::Udp(d)) => assert!(d.truncated && d.payload == b"dn"),
            other => panic!("{other:?}"),
        }
        let syn = tcp_ipv4(SYN, 1, 2, &[]);
        let f = Frame {
            ts: Timestamp(1),
            link: LinkType::Ethernet,
            data: &syn[..40],
            wire_len: syn.len() as u32,
        };
        assert!(decode(&f, false, &mut stats, &mut Reassembler::default()).is_none());
        assert_eq!(stats.truncated_packets_skipped, 1);
        assert_eq!(stats.malformed_packets_skipped, 0);
    }

    #[test]
    fn damaged_headers_are_counted_not_decoded() {
        let mut bad_ihl = udp_dns_ipv4();
        bad_ihl[14] = 0x44; // IHL 4: below the minimum of 5
        let mut ihl_past_end = udp_dns_ipv4();
        ihl_past_end[14] = 0x4f; // IHL 15: 60 bytes, past this frame's IP data
        ihl_past_end.truncate(14 + 40);
        for (data, link) in [
            (&bad_ihl[..], LinkType::Ethernet),
            (&ihl_past_end[..], LinkType::Ethernet),
            (&[0u8; 10][..], LinkType::Ethernet),
            (&[][..], LinkType::RawIp),
            (&[0x45, 0][..], LinkType::RawIp),
            (&[1, 2, 3][..], LinkType::LinuxSll2),
        ] {
            let (e, stats) = event(link, data, true);
            assert_eq!(e, None);
            assert_eq!(stats.malformed_packets_skipped, 1, "{data:?}");
        }
    }

    #[test]
    fn the_fast_path_decides_only_as_the_full_decoder_does() {
        // Every single-byte change to the first 80 bytes of a few frames,
        // full-length and cut short: whenever the fast path drops a frame
        // or makes its event, the full decoder must do the same and count
        // no damage.
        let mut vlan = with_vlan_tags(&tcp_ipv4(ACK, 40000, 80, &[0; 40]), &[0x8100]);
        vlan.truncate(vlan.len() - 3);
        // A short frame with Ethernet padding after the IP packet.
        let mut padded = udp_ipv4(53, 40000, b"ok");
        padded.resize(60, 0xee);
        let templates = [
            tcp_ipv6(false, 40000, 443, &[0; 100]),
            tcp_ipv6(true, 40000, 443, &[]),
            tcp_ipv6(false, 53, 40000, b"dns over tcp"),
            udp_ipv6(53, 40000, b"an answer"),
            udp_ipv6(40000, 123, &[0; 48]),
            udp_ipv4(40000, 123, &[0; 48]),
            udp_ipv4(53, 53, &[1; 30]),
            udp_ipv4(40000, VXLAN_PORT, &[8, 0, 0, 0, 0, 0, 1, 0, 0xaa]),
            udp_ipv4(GENEVE_PORT, 53, &[0; 12]),
            padded,
            tcp_ipv4(ACK | PSH, 40000, 80, &[0; 100]),
            tcp_ipv4(SYN, 40000, 80, &[]),
            tcp_ipv4(SYN | ACK, 80, 40000, &[]),
            tcp_ipv4(RST | ACK, 80, 40000, &[]),
            tcp_ipv4(ACK, 53, 40000, b"dns"),
            udp_dns_ipv4(),
            vlan,
        ];
        let (mut dropped, mut kept) = (0, 0);
        for template in &templates {
            for at in 0..template.len().min(80) {
                for value in [0u8, 0xff, template[at] ^ 1, template[at] ^ 0x40, 5, 6] {
                    let mut data = template.clone();
                    data[at] = value;
                    for len in [data.len(), data.len() - 1, data.len().min(54)] {
                        let f = Frame {
                            ts: Timestamp(1),
                            link: LinkType::Ethernet,
                            data: &data[..len],
                            wire_len: data.len() as u32,
                        };
                        for all_tcp in [false, true] {
                            let mut stats = InputStats::default();
                            let mut fragments = Reassembler::default();
                            let full = decode_sliced(&f, all_tcp, &mut stats, &mut fragments);
                            let quick = match quick_ip(&f, all_tcp) {
                                Quick::Full => continue,
                                Quick::Drop => {
                                    dropped += 1;
                                    None
                                }
                                Quick::Event(e) => {
                                    kept += 1;
                                    Some(e)
                                }
                            };
                            assert_eq!(
                                format!("{quick:?}"),
                                format!("{full:?}"),
                                "at {at} = {value}, len {len}"
                            );
                            assert_eq!(
                                stats,
                                InputStats::default(),
                                "at {at} = {value}, len {len}"
                            );
                        }
                    }
                }
            }
        }
        assert!(
            dropped > 1000 && kept > 1000,
            "the fast path should take most bulk frames ({dropped}) and segments ({kept})"
        );
    }

    /// The inner DNS datagram every encapsulation below carries.
    const INNER_DNS: &str = "udp 192.0.2.1:40000 > 192.0.2.53:53 [100, 110, 115, 33] trunc=false";

    /// The IP packet of an Ethernet frame.
    fn ip_of(ethernet: &[u8]) -> Vec<u8> {
        ethernet[14..].to_vec()
    }

    /// An outer IPv4 packet from 10.9.0.1 to 10.9.0.2 of protocol `proto`.
    fn outer_ip(proto: u8, payload: &[u8]) -> Vec<u8> {
        let header = Ipv4Header::new(
            payload.len() as u16,
            64,
            IpNumber(proto),
            [10, 9, 0, 1],
            [10, 9, 0, 2],
        )
        .unwrap();
        let mut out = vec![0; 12];
        out.extend_from_slice(&[0x08, 0x00]);
        header.write(&mut out).unwrap();
        out.extend_from_slice(payload);
        out
    }

    /// An outer UDP datagram to `port` carrying `payload`, on Ethernet.
    fn outer_udp(port: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
            .udp(50000, port)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// Each link type and tunnel of real captures, around one DNS query:
    /// the query comes out with its inner addresses, and the tunnelled
    /// ones are counted.
    #[test]
    fn link_types_and_tunnels_unwrap_to_the_inner_packet() {
        let ethernet = udp_dns_ipv4();
        let ip = ip_of(&ethernet);
        let with = |head: &[u8], body: &[u8]| [head, body].concat();
        let pppoe = {
            let mut f = vec![0; 12];
            f.extend_from_slice(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 0, 0x00, 0x21]);
            f.extend_from_slice(&ip);
            f
        };
        let nflog = {
            // Family, version, resource id; a prefix TLV; the payload TLV.
            let mut f = vec![2, 0, 0, 1];
            f.extend_from_slice(&[8, 0, 10, 0, b'a', b'b', b'c', 0]);
            f.extend_from_slice(&(4 + ip.len() as u16).to_le_bytes());
            f.extend_from_slice(&9u16.to_le_bytes());
            f.extend_from_slice(&ip);
            f
        };
        let pktap = {
            let mut h = vec![0u8; 108];
            h[..4].copy_from_slice(&108u32.to_le_bytes());
            h[4..8].copy_from_slice(&1u32.to_le_bytes());
            h[8..12].copy_from_slice(&1u32.to_le_bytes());
            with(&h, &ethernet)
        };
        let gre_key = with(&[0x20, 0, 0x08, 0x00, 0, 0, 0, 7], &ip);
        let erspan2 = with(
            &[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1],
            &with(&[0x10, 0, 0, 1, 0, 0, 0, 0], &ethernet),
        );
        let geneve = with(&[0x01, 0, 0x65, 0x58, 0, 0, 1, 0, 0, 1, 0, 0], &ethernet);
        let vxlan = with(&[0x08, 0, 0, 0, 0, 0, 1, 0], &ethernet);
        let cases: Vec<(&str, LinkType, Vec<u8>, u64)> = vec![
            (
                "BSD loopback, little-endian AF_INET",
                LinkType::Null,
                with(&[2, 0, 0, 0], &ip),
                0,
            ),
            (
                "BSD loopback, big-endian AF_INET",
                LinkType::Null,
                with(&[0, 0, 0, 2], &ip),
                0,
            ),
            (
                "OpenBSD loopback",
                LinkType::Loop,
                with(&[0, 0, 0, 2], &ip),
                0,
            ),
            (
                "PPP in HDLC framing",
                LinkType::Ppp,
                with(&[0xff, 0x03, 0x00, 0x21], &ip),
                0,
            ),
            (
                "PPP, compressed protocol",
                LinkType::Ppp,
                with(&[0x21], &ip),
                0,
            ),
            ("PPPoE session", LinkType::Ethernet, pppoe, 0),
            ("NFLOG", LinkType::Nflog, nflog, 0),
            ("PKTAP with Ethernet", LinkType::Pktap, pktap, 0),
            ("IP-in-IP", LinkType::Ethernet, outer_ip(4, &ip), 1),
            (
                "GRE with a key",
                LinkType::Ethernet,
                outer_ip(47, &gre_key),
                1,
            ),
            (
                "ERSPAN type II",
                LinkType::Ethernet,
                outer_ip(47, &erspan2),
                1,
            ),
            ("VXLAN", LinkType::Ethernet, outer_udp(4789, &vxlan), 1),
            (
                "Geneve with an option",
                LinkType::Ethernet,
                outer_udp(6081, &geneve),
                1,
            ),
        ];
        for (what, link, data, tunnelled) in cases {
            let (e, stats) = event(link, &data, false);
            assert_eq!(e.as_deref(), Some(INNER_DNS), "{what}");
            let want = InputStats {
                tunnelled_packets: tunnelled,
                ..InputStats::default()
            };
            assert_eq!(stats, want, "{what}");
        }
    }

    /// IPv6 in IPv4 (protocol 41), and the nesting bound: a packet wrapped
    /// in more tunnels than anyone sends is damage, not a deep loop.
    #[test]
    fn ipv6_in_ipv4_and_the_depth_bound() {
        let mut v6 = Vec::new();
        PacketBuilder::ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53],
            64,
        )
        .udp(40000, 53)
        .write(&mut v6, b"dns!")
        .unwrap();
        let (e, _) = event(LinkType::Ethernet, &outer_ip(41, &v6), false);
        assert_eq!(
            e.as_deref(),
            Some("udp [2001:db8::1]:40000 > [2001:db8::53]:53 [100, 110, 115, 33] trunc=false")
        );
        let mut nested = ip_of(&udp_dns_ipv4());
        for _ in 0..=MAX_DEPTH {
            nested = ip_of(&outer_ip(4, &nested));
        }
        let (e, stats) = event(LinkType::RawIp, &nested, false);
        assert_eq!(e, None);
        assert_eq!(stats.malformed_packets_skipped, 1);
    }

    /// A loopback frame of another address family, and a VXLAN header
    /// without its I flag, are read and of no interest: counted as such.
    #[test]
    fn other_families_and_protocols_are_not_ip() {
        let (e, stats) = event(LinkType::Null, &[17, 0, 0, 0, 1, 2, 3, 4], false);
        assert_eq!((e, stats.non_ip_packets), (None, 1));
        let (e, stats) = event(LinkType::Ethernet, &outer_udp(4789, &[0; 8]), false);
        assert_eq!((e, stats.non_ip_packets), (None, 1));
        let (e, stats) = event(LinkType::Other(127), &[0; 40], false);
        assert_eq!((e, stats.unsupported_link_packets), (None, 1));
    }

    #[test]
    fn non_ip_frames_are_neither_events_nor_damage() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2,
        ]);
        let (e, stats) = event(LinkType::Ethernet, &arp, true);
        let want = InputStats {
            non_ip_packets: 1,
            ..InputStats::default()
        };
        assert_eq!((e, stats), (None, want));
    }
}
