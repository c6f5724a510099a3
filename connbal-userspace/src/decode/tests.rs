//! Checks docs/semantics.md section 1: the link layers, tunnels and
//! encapsulations a frame may come in, what is damage and what is not IP,
//! and that the fixed-offset path decides as the full decoder does.

use super::full::MAX_DEPTH;
use super::tunnel::{GENEVE_PORT, VXLAN_PORT};
use super::*;
use crate::aggregator::Timestamp;
use crate::capture::LinkType;
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

/// The event one frame decodes to, and what it was counted as (beyond
/// being a packet of so many bytes).
fn event(link: LinkType, data: &[u8], all_tcp: bool) -> (Option<String>, InputStats) {
    let mut decoder = FrameDecoder::new(all_tcp);
    let mut e = None;
    decoder.frame(&frame(link, data), |event| {
        e = Some(match event {
            Event::Udp(d) => format!(
                "udp {} > {} {:?} trunc={}",
                d.src, d.dst, d.payload, d.truncated
            ),
            Event::Tcp(s) => format!(
                "tcp {} > {} flags={:#x} seq={} {:?}",
                s.src, s.dst, s.flags, s.seq, s.payload
            ),
            Event::Server(s) => format!("server {}", s.address),
            Event::Nat(t) => format!("nat {} > {} = {}", t.client, t.asked, t.backend),
            Event::Traffic(c) => format!("traffic {} > {}", c.client, c.asked),
            Event::Lookup(l) => format!("lookup {}", l.name),
            Event::ResolverAnswer(a) => format!("resolver answer {}", a.name),
        });
    });
    let stats = InputStats {
        packets: 0,
        bytes: 0,
        ..decoder.stats()
    };
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
        .ip(etherparse::IpHeaders::Ipv4(
            ip,
            etherparse::Ipv4Extensions::default(),
        ))
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
    let f = Frame {
        ts: Timestamp(1),
        link: LinkType::Ethernet,
        data: cut,
        wire_len: full.len() as u32,
    };
    match decode(&f, false).found {
        Found::Event(Event::Udp(d)) => assert!(d.truncated && d.payload == b"dn"),
        other => panic!("{other:?}"),
    }
    let syn = tcp_ipv4(SYN, 1, 2, &[]);
    let f = Frame {
        ts: Timestamp(1),
        link: LinkType::Ethernet,
        data: &syn[..40],
        wire_len: syn.len() as u32,
    };
    let mut decoder = FrameDecoder::new(false);
    decoder.frame(&f, |event| panic!("{event:?}"));
    assert_eq!(decoder.stats().truncated_packets_skipped, 1);
    assert_eq!(decoder.stats().malformed_packets_skipped, 0);
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
                        let full = decode_sliced(&f, all_tcp);
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
                        let full = match full.found {
                            Found::Dropped if !full.tunnelled => None,
                            Found::Event(e) if !full.tunnelled => Some(e),
                            other => panic!("at {at} = {value}, len {len}: {other:?}"),
                        };
                        assert_eq!(
                            format!("{quick:?}"),
                            format!("{full:?}"),
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
        ("PPPoE session", LinkType::Ethernet, pppoe.clone(), 0),
        // nDPI's dns.pcap: two 802.1Q tags, then PPPoE (tshark decodes it).
        (
            "PPPoE behind two VLAN tags",
            LinkType::Ethernet,
            with_vlan_tags(&pppoe, &[0x8100, 0x8100]),
            0,
        ),
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
