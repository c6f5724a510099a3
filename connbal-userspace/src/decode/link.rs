//! Link layers to the network layer: Ethernet (and PPPoE on it), Linux
//! cooked v1 and v2, raw IP, BSD loopback, PPP, NFLOG and PKTAP. etherparse
//! slices Ethernet and IP; the others are a few fixed-offset reads each,
//! hand-written because no maintained crate decodes them without
//! allocating per packet.

use crate::capture::LinkType;

pub(super) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(super) const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_TEB: u16 = 0x6558;
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;

/// Where the network layer of a frame starts, once its link layer (or a
/// tunnel's header) is taken off.
pub(super) enum Inner<'a> {
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
pub(super) fn by_ethertype(ethertype: u16, rest: &[u8]) -> Inner<'_> {
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
pub(super) fn unwrap_link(link: LinkType, data: &[u8]) -> Inner<'_> {
    let at = |n: usize| data.get(n..).filter(|_| data.len() >= n);
    match link {
        LinkType::Ethernet => {
            // PPPoE sessions (DSL lines): 6 bytes of PPPoE, then PPP; on a
            // provider's access network, behind VLAN tags (QinQ).
            let mut ethertype_at = 12;
            while data.len() >= ethertype_at + 6
                && matches!(be16(data, ethertype_at), 0x8100 | 0x88a8 | 0x9100)
            {
                ethertype_at += 4;
            }
            if data.len() >= ethertype_at + 2 && be16(data, ethertype_at) == ETHERTYPE_PPPOE_SESSION
            {
                let ppp = ethertype_at + 2 + 6;
                return match at(ppp + 2) {
                    Some(rest) => by_ppp_protocol(be16(data, ppp), rest),
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

const SLL_HEADER: usize = 16;
const SLL2_HEADER: usize = 20;

pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
