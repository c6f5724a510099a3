//! Ring-buffer records to aggregator events. Pure, so tests drive it with
//! hand-made bytes.

use super::cgroups::CgroupLookup;
use crate::aggregator::{
    Carried, Cgroup, Datagram, Event, Lookup, Owner, Process, Segment, ServerSocket, Timestamp,
    Translation,
};
use connbal_common::record::{
    lookup_offset, RecordHeader, BIT_FLOW_NEW, BIT_PROCESS, BIT_SOCKET, BIT_STILL_OPEN, BIT_TCP,
    BIT_TRUNCATED, HEADER_LEN, KIND_DNS, KIND_NAT, KIND_SERVER, KIND_TCP, KIND_TRAFFIC,
    LOOKUP_ADDRESSES, LOOKUP_NAME_LEN, NAT_TAIL_LEN, TRAFFIC_LEN,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Turns the kernel's CLOCK_MONOTONIC timestamps into wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    #[cfg(test)]
    pub fn from_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn now() -> nix::Result<Self> {
        use nix::time::{clock_gettime, ClockId};
        let nanos = |t: nix::sys::time::TimeSpec| {
            i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
        };
        let mono = nanos(clock_gettime(ClockId::CLOCK_MONOTONIC)?);
        let real = nanos(clock_gettime(ClockId::CLOCK_REALTIME)?);
        Ok(Self {
            offset_ns: real - mono,
        })
    }

    pub fn wall(&self, ktime_ns: u64) -> Timestamp {
        Timestamp((i128::from(ktime_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64)
    }
}

fn address(version: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match version {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

/// The owner of the record's socket, when the kernel knew it; its cgroup
/// named from `cgroups` (host mode) or by id alone.
pub fn owner(h: &RecordHeader, cgroups: Option<&mut dyn CgroupLookup>) -> Option<Owner> {
    if h.bits & BIT_SOCKET == 0 {
        return None;
    }
    let cgroup = match cgroups {
        Some(names) => names.cgroup(h.cgroup_id),
        None => Cgroup::named(h.cgroup_id, None),
    };
    Some(Owner {
        cgroup,
        socket: h.socket_cookie,
        process: (h.bits & BIT_PROCESS != 0).then_some(Process {
            tgid: h.tgid,
            pid: h.pid,
            command: h.comm,
            netns_cookie: h.netns_cookie,
        }),
    })
}

/// A `KIND_LOOKUP` record as an event, its addresses decoded into
/// `addresses`; `None` when it does not parse (a name that is not UTF-8
/// included: no DNS name is).
pub fn lookup<'a>(
    h: &RecordHeader,
    item: &'a [u8],
    clock: &Clock,
    owner: Option<&'a Owner>,
    addresses: &'a mut [IpAddr; LOOKUP_ADDRESSES],
) -> Option<Event<'a>> {
    let tail = item.get(..lookup_offset::END)?;
    let started_ns = u64::from_ne_bytes(
        tail[lookup_offset::STARTED_NS..lookup_offset::STARTED_NS + 8]
            .try_into()
            .ok()?,
    );
    let name = &tail[lookup_offset::NAME..lookup_offset::NAME + LOOKUP_NAME_LEN];
    let name = std::str::from_utf8(&name[..name.iter().position(|&b| b == 0)?]).ok()?;
    let count = usize::from(tail[lookup_offset::COUNT]);
    if count > LOOKUP_ADDRESSES {
        return None;
    }
    for (i, slot) in addresses.iter_mut().take(count).enumerate() {
        let at = lookup_offset::ADDRESSES + 16 * i;
        let bytes: [u8; 16] = tail[at..at + 16].try_into().ok()?;
        *slot = address(tail[lookup_offset::VERSIONS + i], bytes)?;
    }
    Some(Event::Lookup(Lookup {
        ts: clock.wall(h.ktime_ns),
        started: clock.wall(started_ns),
        name,
        addresses: &addresses[..count],
        owner,
    }))
}

/// `None` for a record that does not parse (counted by the caller; it would
/// mean a kernel/userspace layout mismatch, which the stale-object test
/// exists to prevent).
pub fn to_event<'a>(
    h: &RecordHeader,
    item: &'a [u8],
    clock: &Clock,
    all_tcp: bool,
    owner: Option<&'a Owner>,
) -> Option<Event<'a>> {
    let src = SocketAddr::new(address(h.ip_version, h.src_addr)?, h.src_port);
    let dst = SocketAddr::new(address(h.ip_version, h.dst_addr)?, h.dst_port);
    let ts = clock.wall(h.ktime_ns);
    let payload = match h.kind {
        KIND_DNS => item.get(HEADER_LEN..HEADER_LEN + usize::from(h.copied_len))?,
        KIND_TCP => &[][..],
        KIND_SERVER => {
            return Some(Event::Server(ServerSocket {
                ts,
                address: src,
                owner,
            }))
        }
        KIND_NAT => {
            let tail = item.get(HEADER_LEN..HEADER_LEN + NAT_TAIL_LEN)?;
            let backend_addr: [u8; 16] = tail[..16].try_into().ok()?;
            let backend_port = u16::from_ne_bytes([tail[16], tail[17]]);
            return Some(Event::Nat(Translation {
                ts,
                client: src,
                asked: dst,
                backend: SocketAddr::new(address(h.ip_version, backend_addr)?, backend_port),
            }));
        }
        KIND_TRAFFIC => {
            let tail = item.get(HEADER_LEN..TRAFFIC_LEN)?;
            let u64_at = |at: usize| tail[at..at + 8].try_into().ok().map(u64::from_ne_bytes);
            return Some(Event::Traffic(Carried {
                ts,
                client: src,
                asked: dst,
                sent: u64_at(0)?,
                received: u64_at(8)?,
                open: h.bits & BIT_STILL_OPEN != 0,
            }));
        }
        _ => return None,
    };
    let truncated = h.bits & BIT_TRUNCATED != 0;
    if h.kind == KIND_DNS && h.bits & BIT_TCP == 0 {
        return Some(Event::Udp(Datagram {
            ts,
            src,
            dst,
            payload,
            truncated,
            owner,
        }));
    }
    Some(Event::Tcp(Segment {
        ts,
        src,
        dst,
        flags: h.tcp_flags,
        seq: h.tcp_seq,
        payload,
        truncated,
        ack: None,
        first_of_flow: all_tcp.then_some(h.bits & BIT_FLOW_NEW != 0),
        owner,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, version: u8, bits: u8, payload: &[u8]) -> Vec<u8> {
        let addr = |last| {
            let mut a = [0; 16];
            a[..4].copy_from_slice(&[192, 0, 2, last]);
            a
        };
        let header = RecordHeader {
            kind,
            ip_version: version,
            tcp_flags: 0x18,
            bits,
            ktime_ns: 1_000,
            src_addr: addr(1),
            dst_addr: addr(53),
            src_port: 40000,
            dst_port: 53,
            tcp_seq: 7,
            copied_len: payload.len() as u16,
            ..RecordHeader::default()
        };
        let mut b = header.to_bytes().to_vec();
        b.extend_from_slice(payload);
        // Ring slots for DNS are reserved at full size; the rest is junk.
        b.extend_from_slice(&[0xee; 16]);
        b
    }

    fn event<'a>(item: &'a [u8], clock: &Clock, all_tcp: bool) -> Option<Event<'a>> {
        let h = RecordHeader::from_bytes(item)?;
        to_event(&h, item, clock, all_tcp, None)
    }

    #[test]
    fn udp_dns_record() {
        let item = record(KIND_DNS, 4, 0, b"abc");
        let clock = Clock::from_offset(5_000);
        match event(&item, &clock, false) {
            Some(Event::Udp(d)) => {
                assert_eq!(d.payload, b"abc");
                assert_eq!(d.src.to_string(), "192.0.2.1:40000");
                assert_eq!(d.dst.to_string(), "192.0.2.53:53");
                assert_eq!(d.ts, Timestamp(6_000));
                assert!(!d.truncated);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcp_dns_and_flow_records() {
        let clock = Clock::from_offset(0);
        let item = record(KIND_DNS, 4, BIT_TCP | BIT_TRUNCATED, b"xy");
        match event(&item, &clock, false) {
            Some(Event::Tcp(s)) => assert!(
                s.payload == b"xy" && s.truncated && s.seq == 7 && s.first_of_flow.is_none()
            ),
            other => panic!("{other:?}"),
        }
        let item = record(KIND_TCP, 4, BIT_TCP | BIT_FLOW_NEW, &[]);
        match event(&item, &clock, true) {
            Some(Event::Tcp(s)) => assert!(s.payload.is_empty() && s.first_of_flow == Some(true)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_socket_record_names_the_address_it_answered_from() {
        let item = record(KIND_SERVER, 4, 0, &[]);
        match event(&item, &Clock::from_offset(0), false) {
            Some(Event::Server(s)) => assert_eq!(s.address.to_string(), "192.0.2.1:40000"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nat_record_names_the_client_the_address_it_asked_for_and_the_backend() {
        let mut tail = [0u8; 24];
        tail[..4].copy_from_slice(&[10, 244, 1, 2]);
        tail[16..18].copy_from_slice(&8080u16.to_ne_bytes());
        let item = record(KIND_NAT, 4, 0, &tail);
        match event(&item, &Clock::from_offset(0), false) {
            Some(Event::Nat(t)) => assert_eq!(
                (
                    t.client.to_string(),
                    t.asked.to_string(),
                    t.backend.to_string()
                ),
                (
                    "192.0.2.1:40000".into(),
                    "192.0.2.53:53".into(),
                    "10.244.1.2:8080".into()
                )
            ),
            other => panic!("{other:?}"),
        }
        // Cut short: refused, not misread.
        let short = &item[..HEADER_LEN + NAT_TAIL_LEN - 1];
        assert!(event(short, &Clock::from_offset(0), false).is_none());
    }

    #[test]
    fn a_traffic_record_gives_the_bytes_each_way_and_whether_still_open() {
        let mut tail = [0u8; 16];
        tail[..8].copy_from_slice(&1_500u64.to_ne_bytes());
        tail[8..].copy_from_slice(&70_000u64.to_ne_bytes());
        for (bits, open) in [(0, false), (BIT_STILL_OPEN, true)] {
            let item = record(KIND_TRAFFIC, 4, bits, &tail);
            match event(&item, &Clock::from_offset(0), false) {
                Some(Event::Traffic(c)) => assert_eq!(
                    (
                        c.client.to_string(),
                        c.asked.to_string(),
                        c.sent,
                        c.received,
                        c.open
                    ),
                    (
                        "192.0.2.1:40000".into(),
                        "192.0.2.53:53".into(),
                        1_500,
                        70_000,
                        open
                    )
                ),
                other => panic!("{other:?}"),
            }
            let short = &item[..TRAFFIC_LEN - 1];
            assert!(event(short, &Clock::from_offset(0), false).is_none());
        }
    }

    fn lookup_record(name: &[u8], addresses: &[(u8, [u8; 16])]) -> Vec<u8> {
        let header = RecordHeader {
            kind: connbal_common::record::KIND_LOOKUP,
            bits: BIT_SOCKET | BIT_PROCESS,
            ktime_ns: 9_000,
            tgid: 42,
            pid: 43,
            ..RecordHeader::default()
        };
        let mut b = header.to_bytes().to_vec();
        b.resize(lookup_offset::END + 7, 0xee);
        b[lookup_offset::STARTED_NS..lookup_offset::STARTED_NS + 8]
            .copy_from_slice(&4_000u64.to_ne_bytes());
        b[lookup_offset::NAME..lookup_offset::NAME + name.len()].copy_from_slice(name);
        for (i, (version, address)) in addresses.iter().enumerate() {
            let at = lookup_offset::ADDRESSES + 16 * i;
            b[at..at + 16].copy_from_slice(address);
            b[lookup_offset::VERSIONS + i] = *version;
        }
        b[lookup_offset::COUNT] = addresses.len() as u8;
        b
    }

    #[test]
    fn a_lookup_record_names_the_name_its_addresses_and_when_the_call_began() {
        let mut v4 = [0; 16];
        v4[..4].copy_from_slice(&[10, 0, 0, 7]);
        let v6 = std::net::Ipv6Addr::LOCALHOST.octets();
        let item = lookup_record(b"web.example\0", &[(4, v4), (6, v6)]);
        let h = RecordHeader::from_bytes(&item).unwrap();
        let mut addresses = [IpAddr::V4(Ipv4Addr::UNSPECIFIED); LOOKUP_ADDRESSES];
        match lookup(&h, &item, &Clock::from_offset(1), None, &mut addresses) {
            Some(Event::Lookup(l)) => assert_eq!(
                (l.name, l.addresses.to_vec(), l.started, l.ts),
                (
                    "web.example",
                    vec![
                        "10.0.0.7".parse::<IpAddr>().unwrap(),
                        "::1".parse().unwrap()
                    ],
                    Timestamp(4_001),
                    Timestamp(9_001)
                )
            ),
            other => panic!("{other:?}"),
        }
        // No NUL in the name, a bad version, a count past the array, cut
        // short: refused, not misread.
        let unterminated = lookup_record(&[b'a'; LOOKUP_NAME_LEN], &[(4, v4)]);
        let bad_version = lookup_record(b"a\0", &[(5, v4)]);
        let mut too_many = lookup_record(b"a\0", &[(4, v4)]);
        too_many[lookup_offset::COUNT] = LOOKUP_ADDRESSES as u8 + 1;
        let short = &lookup_record(b"a\0", &[(4, v4)])[..lookup_offset::END - 1];
        for item in [&unterminated[..], &bad_version[..], &too_many[..], short] {
            let h = RecordHeader::from_bytes(item).unwrap();
            assert!(lookup(&h, item, &Clock::from_offset(0), None, &mut addresses).is_none());
        }
    }

    #[test]
    fn damaged_records_are_refused() {
        let clock = Clock::from_offset(0);
        assert!(event(&[0; 10], &clock, false).is_none());
        assert!(event(&record(9, 4, 0, &[]), &clock, false).is_none());
        assert!(event(&record(KIND_TCP, 5, 0, &[]), &clock, false).is_none());
        let mut lying = record(KIND_DNS, 4, 0, b"abc");
        let at = connbal_common::record::offset::COPIED_LEN;
        lying[at..at + 2].copy_from_slice(&4000u16.to_ne_bytes());
        assert!(event(&lying, &clock, false).is_none());
    }
}
