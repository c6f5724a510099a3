//! The fixed-offset path: the common case (a well-formed IPv4 or IPv6 TCP
//! or UDP packet on an untagged Ethernet frame) read at fixed offsets
//! instead of through etherparse's slicer. It answers only where the full
//! decoder would give the same answer; the unit tests and the frames fuzz
//! target hold it to that.

use super::link::{be16, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::tunnel::{GENEVE_PORT, VXLAN_PORT};
use crate::aggregator::{Datagram, Event, Segment};
use crate::capture::{Frame, LinkType};
use connbal_common::{classify_tcp, is_dns_port, TcpVerdict};
use std::net::{IpAddr, SocketAddr};

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
        let one = |at: usize| {
            if self.len == 4 {
                IpAddr::from([d[at], d[at + 1], d[at + 2], d[at + 3]])
            } else {
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
                ack: None,
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
