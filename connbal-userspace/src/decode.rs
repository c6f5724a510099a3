//! Frames to events: link layer, IPv4/IPv6, UDP/TCP, via etherparse's lax
//! slicer so a frame cut by the snap length decodes as far as its bytes go.
//!
//! The same pre-filter as the kernel program (connbal_common) decides what
//! becomes an event; everything else is dropped here, before any work that
//! allocates.

use crate::aggregator::{Datagram, Event, Segment};
use crate::capture::{Frame, LinkType};
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
        /// Non-first IP fragments and fragmented datagrams (not reassembled).
        pub ip_fragments_skipped: u64,
    }
}

const SLL_HEADER: usize = 16;
const SLL2_HEADER: usize = 20;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// What reading a plain IPv4 TCP frame at fixed offsets decided.
#[derive(Debug)]
pub enum Quick<'a> {
    /// The pre-filter drops it (bulk data).
    Drop,
    /// A segment kept without payload (connection attempts and their
    /// replies, and every segment under `-a`).
    Event(Event<'a>),
    /// Anything else: the full decoder's.
    Full,
}

/// The common case first: a well-formed IPv4 TCP segment on an untagged
/// Ethernet frame. Reads a dozen bytes at fixed offsets instead of slicing
/// the packet (etherparse's slicer costs some 660 instructions a frame),
/// and answers only where the full decoder would give the same event and
/// count no damage; anything unusual (VLAN tags, options past the frame,
/// fragments, short headers, IPv6, DNS payloads) goes to the full decoder.
/// The frames fuzz target checks that promise.
pub fn quick_ipv4_tcp<'a>(frame: &Frame<'a>, all_tcp: bool) -> Quick<'a> {
    let d = frame.data;
    if frame.link != LinkType::Ethernet || d.len() < 14 + 20 || d[12..14] != [0x08, 0x00] {
        return Quick::Full;
    }
    let (version, ihl) = (d[14] >> 4, usize::from(d[14] & 0x0f) * 4);
    let total = usize::from(be16(d, 16));
    let fragment = be16(d, 20) & 0x3fff != 0;
    if version != 4 || ihl < 20 || d[23] != 6 || fragment {
        return Quick::Full;
    }
    let l4 = 14 + ihl;
    let Some(tcp) = d.get(l4..l4 + 20) else {
        return Quick::Full;
    };
    let header = usize::from(tcp[12] >> 4) * 4;
    if header < 20 || l4 + header > d.len() || total < ihl + header {
        return Quick::Full;
    }
    let payload = total - ihl - header;
    let (sport, dport) = (be16(tcp, 0), be16(tcp, 2));
    match classify_tcp(tcp[13], sport, dport, payload, all_tcp) {
        TcpVerdict::Drop => Quick::Drop,
        TcpVerdict::DnsPayload => Quick::Full,
        TcpVerdict::Segment => {
            let address = |at: usize| IpAddr::from([d[at], d[at + 1], d[at + 2], d[at + 3]]);
            Quick::Event(Event::Tcp(Segment {
                ts: frame.ts,
                src: SocketAddr::new(address(26), sport),
                dst: SocketAddr::new(address(30), dport),
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

/// A frame the pre-filter drops, told at fixed offsets.
pub fn is_plain_bulk_tcp(frame: &Frame<'_>, all_tcp: bool) -> bool {
    matches!(quick_ipv4_tcp(frame, all_tcp), Quick::Drop)
}

pub fn decode<'a>(frame: &Frame<'a>, all_tcp: bool, stats: &mut InputStats) -> Option<Event<'a>> {
    match quick_ipv4_tcp(frame, all_tcp) {
        Quick::Drop => None,
        Quick::Event(event) => Some(event),
        Quick::Full => decode_sliced(frame, all_tcp, stats),
    }
}

/// The full decoder, through etherparse's lax slicer.
pub fn decode_sliced<'a>(
    frame: &Frame<'a>,
    all_tcp: bool,
    stats: &mut InputStats,
) -> Option<Event<'a>> {
    let data = frame.data;
    let sliced = match frame.link {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(data).ok(),
        LinkType::LinuxSll => (data.len() >= SLL_HEADER).then(|| {
            LaxSlicedPacket::from_ether_type(EtherType(be16(data, 14)), &data[SLL_HEADER..])
        }),
        LinkType::LinuxSll2 => (data.len() >= SLL2_HEADER).then(|| {
            LaxSlicedPacket::from_ether_type(EtherType(be16(data, 0)), &data[SLL2_HEADER..])
        }),
        LinkType::RawIp => LaxSlicedPacket::from_ip(data).ok(),
    };
    let cut_short = (data.len() as u64) < u64::from(frame.wire_len);
    let Some(packet) = sliced else {
        count_damage(stats, cut_short);
        return None;
    };
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
            }
            return None;
        }
    };
    let truncated = ip_payload.incomplete || cut_short;
    match &packet.transport {
        Some(TransportSlice::Udp(udp)) => {
            let (sport, dport) = (udp.source_port(), udp.destination_port());
            if !is_dns_port(sport, dport) {
                return None;
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
                TcpVerdict::Drop => return None,
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
                stats.ip_fragments_skipped += 1;
            } else if packet.stop_err.is_some() {
                count_damage(stats, cut_short);
            }
            None
        }
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
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MAC, MAC)
            .ipv4([192, 0, 2, 1], [192, 0, 2, 53], 64)
            .udp(40000, 53)
            .write(&mut out, b"dns!")
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

    fn event(link: LinkType, data: &[u8], all_tcp: bool) -> (Option<String>, InputStats) {
        let mut stats = InputStats::default();
        let e = decode(&frame(link, data), all_tcp, &mut stats).map(|e| match e {
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
        match decode(&f, false, &mut stats) {
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
        assert!(decode(&f, false, &mut stats).is_none());
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
        // Every single-byte change to the first 64 bytes of a few frames,
        // full-length and cut short: whenever the fast path drops a frame
        // or makes its event, the full decoder must do the same and count
        // no damage.
        let mut vlan = with_vlan_tags(&tcp_ipv4(ACK, 40000, 80, &[0; 40]), &[0x8100]);
        vlan.truncate(vlan.len() - 3);
        let templates = [
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
            for at in 0..template.len().min(64) {
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
                            let full = decode_sliced(&f, all_tcp, &mut stats);
                            let quick = match quick_ipv4_tcp(&f, all_tcp) {
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

    #[test]
    fn non_ip_frames_are_neither_events_nor_damage() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2,
        ]);
        let (e, stats) = event(LinkType::Ethernet, &arp, true);
        assert_eq!((e, stats), (None, InputStats::default()));
    }
}
