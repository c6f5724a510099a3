//! Overlay tunnels that carry pods' traffic between nodes (VXLAN, Geneve,
//! GRE and ERSPAN); IP-in-IP is told by the IP protocol in `full`. Each
//! hands back the inner frame or packet, which is decoded and attributed
//! to its own addresses.

use super::link::{be16, by_ethertype, Inner};

pub(super) const VXLAN_PORT: u16 = 4789;
pub(super) const GENEVE_PORT: u16 = 6081;
const ETHERTYPE_ERSPAN_2: u16 = 0x88BE;
const ETHERTYPE_ERSPAN_3: u16 = 0x22EB;

/// A VXLAN or Geneve payload of a UDP datagram to or from their ports.
pub(super) fn udp_tunnel(sport: u16, dport: u16, payload: &[u8]) -> Option<Inner<'_>> {
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
pub(super) fn gre_payload(payload: &[u8]) -> Inner<'_> {
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
