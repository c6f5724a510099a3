//! IP fragment reassembly for replay: DNS answers larger than the path MTU
//! (EDNS0 with DNSSEC, large SRV sets) arrive as IPv4 or IPv6 fragments,
//! and only the whole datagram holds the message.
//!
//! etherparse's `IpDefragBuf` places each fragment and tells when the
//! datagram is whole (overlaps, the end, the 8-byte rule); its
//! `IpDefragPool` is documented as unsafe against memory exhaustion, so the
//! table of datagrams in flight is ours, with three bounds: datagrams in
//! flight, bytes held, and Linux's own timeouts (net.ipv4.ipfrag_time 30 s,
//! net.ipv6.ip6frag_time 60 s) in capture time. Every fragment is counted
//! once: as part of a datagram rebuilt, or as skipped (timed out, pushed
//! out by a full table, inconsistent, cut by the snap length, or still
//! incomplete at the end of the input).
//!
//! Live capture needs none of this: the kernel program counts the
//! fragments it sees (TC mode) and host mode sees whole datagrams at the
//! socket.

use super::fragment::{DatagramId, Fragment};
use crate::time::Timestamp;
use etherparse::defrag::IpDefragBuf;
use etherparse::{Ipv4Header, Ipv6Header};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Datagrams being reassembled at once. Fragmented DNS is rare; a busy
/// capture holds a handful at a time.
const MAX_IN_FLIGHT: usize = 256;
/// Bytes held in all buffers together (a datagram is at most 64 KiB).
const MAX_HELD_BYTES: usize = 4 << 20;
const IPV4_TIMEOUT_NS: u64 = 30_000_000_000;
const IPV6_TIMEOUT_NS: u64 = 60_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        protocol: u8,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        id: u32,
    },
}

impl Key {
    /// IPv4 datagrams are told apart by protocol too (RFC 791).
    fn of(fragment: &Fragment<'_>) -> Self {
        match fragment.datagram {
            DatagramId::V4 { src, dst, id } => Key::V4 {
                src,
                dst,
                id,
                protocol: fragment.protocol.0,
            },
            DatagramId::V6 { src, dst, id } => Key::V6 { src, dst, id },
        }
    }

    fn timeout_ns(&self) -> u64 {
        match self {
            Key::V4 { .. } => IPV4_TIMEOUT_NS,
            Key::V6 { .. } => IPV6_TIMEOUT_NS,
        }
    }
}

struct InFlight {
    buf: IpDefragBuf,
    /// When its first fragment came: the timeout runs from there, as in
    /// the kernel.
    first_seen: Timestamp,
    fragments: u64,
}

/// What the reassembler did with the fragments it was given: every one is
/// counted once, as part of a datagram rebuilt or as skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentCounts {
    pub skipped: u64,
    pub reassembled: u64,
    pub datagrams: u64,
}

#[derive(Default)]
pub struct Reassembler {
    in_flight: HashMap<Key, InFlight>,
    /// Keys in the order their first fragment came, for timeouts and for
    /// making room; an entry whose datagram is gone (or was restarted
    /// later) is skipped when it comes up.
    order: VecDeque<(Key, Timestamp)>,
    held_bytes: usize,
    /// A datagram just made whole, as an IP packet, for the caller to
    /// decode.
    ready: Option<Vec<u8>>,
    counts: FragmentCounts,
}

impl Reassembler {
    /// The datagram the last fragment completed, once.
    pub fn take_ready(&mut self) -> Option<Vec<u8>> {
        self.ready.take()
    }

    pub fn counts(&self) -> FragmentCounts {
        self.counts
    }

    /// The end of the input: whatever is still incomplete is skipped.
    pub fn finish(&mut self) {
        for (_, datagram) in self.in_flight.drain() {
            self.counts.skipped += datagram.fragments;
        }
        self.order.clear();
        self.held_bytes = 0;
    }

    /// Places `fragment`; a datagram it completes waits in `take_ready`.
    pub fn add(&mut self, fragment: &Fragment<'_>) {
        let key = Key::of(fragment);
        self.expire(fragment.ts);
        if fragment.cut {
            // Its bytes are not all there: the datagram can never be
            // whole. What is already held for it times out in turn.
            self.counts.skipped += 1;
            return;
        }
        if !self.in_flight.contains_key(&key) {
            while self.in_flight.len() >= MAX_IN_FLIGHT {
                self.drop_oldest();
            }
            self.in_flight.insert(
                key,
                InFlight {
                    buf: IpDefragBuf::new(fragment.protocol, Vec::new(), Vec::new()),
                    first_seen: fragment.ts,
                    fragments: 0,
                },
            );
            self.order.push_back((key, fragment.ts));
            if self.order.len() > 4 * MAX_IN_FLIGHT {
                // Entries of datagrams completed behind a live one at the
                // front; at most MAX_IN_FLIGHT are live.
                let in_flight = &self.in_flight;
                self.order
                    .retain(|(k, t)| in_flight.get(k).is_some_and(|d| d.first_seen == *t));
            }
        }
        let Some(datagram) = self.in_flight.get_mut(&key) else {
            return;
        };
        let before = datagram.buf.data().len();
        let added = datagram
            .buf
            .add(fragment.offset, fragment.more_fragments, &fragment.data);
        datagram.fragments += 1;
        let after = datagram.buf.data().len();
        // `before` is part of `held_bytes`; a last fragment may shrink a
        // buffer that an earlier one stretched.
        self.held_bytes = (self.held_bytes + after).saturating_sub(before);
        if added.is_err() {
            // Overlapping ends, a misaligned middle fragment, past 64 KiB:
            // nothing sound can be rebuilt from what is held.
            self.remove(&key);
            return;
        }
        if datagram.buf.is_complete() {
            let datagram = self.in_flight.remove(&key).expect("just looked up");
            self.held_bytes -= datagram.buf.data().len();
            self.counts.reassembled += datagram.fragments;
            self.counts.datagrams += 1;
            self.ready = Some(rebuild(key, datagram.buf));
            return;
        }
        while self.held_bytes > MAX_HELD_BYTES && !self.in_flight.is_empty() {
            self.drop_oldest();
        }
    }

    /// Gives up datagrams whose first fragment is older than their
    /// version's timeout at `now`.
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(key, first_seen)) = self.order.front() {
            let live = self
                .in_flight
                .get(&key)
                .is_some_and(|d| d.first_seen == first_seen);
            if live && now.0.saturating_sub(first_seen.0) <= key.timeout_ns() {
                break;
            }
            self.order.pop_front();
            if live {
                self.remove(&key);
            }
        }
    }

    fn drop_oldest(&mut self) {
        while let Some((key, first_seen)) = self.order.pop_front() {
            if self
                .in_flight
                .get(&key)
                .is_some_and(|d| d.first_seen == first_seen)
            {
                self.remove(&key);
                return;
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(datagram) = self.in_flight.remove(key) {
            self.held_bytes -= datagram.buf.data().len();
            self.counts.skipped += datagram.fragments;
        }
    }
}

/// The whole datagram as an unfragmented IP packet, so the decoder takes
/// it as any other. Options and extension headers before the fragment
/// header are not kept: nothing after them needs them.
fn rebuild(key: Key, buf: IpDefragBuf) -> Vec<u8> {
    let protocol = buf.ip_number();
    let (payload, _) = buf.take_bufs();
    let mut packet = Vec::with_capacity(40 + payload.len());
    match key {
        Key::V4 { src, dst, .. } => {
            // Complete means at most 65,535 bytes of payload (etherparse's
            // bound), which the 16-bit total length may still not hold
            // with the header: such a datagram cannot exist on the wire.
            let header = Ipv4Header::new(
                u16::try_from(payload.len()).unwrap_or(u16::MAX),
                64,
                protocol,
                src.octets(),
                dst.octets(),
            );
            match header {
                Ok(header) => packet.extend_from_slice(&header.to_bytes()),
                Err(_) => return Vec::new(),
            }
        }
        Key::V6 { src, dst, .. } => {
            let header = Ipv6Header {
                traffic_class: 0,
                flow_label: etherparse::Ipv6FlowLabel::default(),
                payload_length: u16::try_from(payload.len()).unwrap_or(u16::MAX),
                next_header: protocol,
                hop_limit: 64,
                source: src.octets(),
                destination: dst.octets(),
            };
            packet.extend_from_slice(&header.to_bytes());
        }
    }
    packet.extend_from_slice(&payload);
    packet
}

/// Checks docs/semantics.md section 1, IP fragments: bounds, timeouts, and
/// every fragment counted once.
#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpFragOffset, IpNumber};
    use std::borrow::Cow;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    fn piece(ts_secs: u64, offset_bytes: u16, more: bool, data: &[u8]) -> Fragment<'_> {
        Fragment {
            datagram: DatagramId::V4 {
                src: SRC,
                dst: DST,
                id: 0,
            },
            ts: Timestamp::from_secs(ts_secs),
            offset: IpFragOffset::try_new(offset_bytes / 8).unwrap(),
            more_fragments: more,
            protocol: IpNumber::UDP,
            data: Cow::Borrowed(data),
            cut: false,
        }
    }

    fn add(r: &mut Reassembler, id: u16, f: &Fragment<'_>) {
        let datagram = DatagramId::V4 {
            src: SRC,
            dst: DST,
            id,
        };
        r.add(&Fragment {
            datagram,
            data: Cow::Borrowed(&f.data),
            ..*f
        });
    }

    #[test]
    fn out_of_order_and_duplicate_fragments_make_one_datagram() {
        let mut r = Reassembler::default();
        let data: Vec<u8> = (0..40).collect();
        add(&mut r, 1, &piece(0, 32, false, &data[32..]));
        add(&mut r, 1, &piece(0, 0, true, &data[..16]));
        add(&mut r, 1, &piece(0, 0, true, &data[..16]));
        assert!(r.take_ready().is_none());
        add(&mut r, 1, &piece(0, 16, true, &data[16..32]));
        let packet = r.take_ready().expect("whole");
        let (header, payload) = Ipv4Header::from_slice(&packet).unwrap();
        assert_eq!(payload, &data[..]);
        assert_eq!(header.protocol, IpNumber::UDP);
        assert!(!header.more_fragments && header.fragment_offset.value() == 0);
        assert_eq!(
            (header.source, header.destination),
            (SRC.octets(), DST.octets())
        );
        assert_eq!(r.counts.reassembled, 4);
        assert_eq!(r.counts.datagrams, 1);
        assert_eq!(r.counts.skipped, 0);
        assert_eq!(r.held_bytes, 0);
    }

    #[test]
    fn a_datagram_times_out_after_30_seconds_of_capture_time() {
        let mut r = Reassembler::default();
        let data = [7u8; 24];
        add(&mut r, 1, &piece(100, 0, true, &data[..16]));
        // 30 s after the first fragment it is still in time...
        add(&mut r, 2, &piece(130, 0, true, &data[..16]));
        assert_eq!(r.counts.skipped, 0);
        // ...and one second later it is gone, so its last fragment starts
        // a datagram of its own that never completes.
        add(&mut r, 1, &piece(131, 16, false, &data[16..]));
        assert!(r.take_ready().is_none());
        assert_eq!(r.counts.skipped, 1);
        r.finish();
        assert_eq!(r.counts.skipped, 3);
        assert_eq!(r.counts.reassembled, 0);
    }

    #[test]
    fn a_full_table_gives_up_the_oldest_datagram() {
        let mut r = Reassembler::default();
        let data = [1u8; 16];
        for id in 0..=MAX_IN_FLIGHT as u16 {
            add(&mut r, id, &piece(0, 0, true, &data));
        }
        assert_eq!(r.in_flight.len(), MAX_IN_FLIGHT);
        assert_eq!(r.counts.skipped, 1);
        // The first (id 0) went; the second can still complete.
        add(&mut r, 1, &piece(0, 16, false, &data));
        assert!(r.take_ready().is_some());
        add(&mut r, 0, &piece(0, 16, false, &data));
        assert!(r.take_ready().is_none());
    }

    #[test]
    fn held_bytes_stay_bounded_under_a_flood_of_large_offsets() {
        let mut r = Reassembler::default();
        let data = [1u8; 8];
        // Each fragment near the 64 KiB end makes its buffer 64 KiB long.
        for id in 0..1000u16 {
            add(&mut r, id, &piece(0, 65_000, true, &data));
            assert!(r.held_bytes <= MAX_HELD_BYTES, "{}", r.held_bytes);
        }
        assert!(r.counts.skipped >= 1000 - (MAX_HELD_BYTES / 65_000) as u64);
        r.finish();
        assert_eq!(r.counts.skipped, 1000);
    }

    #[test]
    fn inconsistent_and_cut_fragments_are_skipped() {
        let mut r = Reassembler::default();
        let data = [1u8; 24];
        add(&mut r, 1, &piece(0, 0, true, &data[..16]));
        add(&mut r, 1, &piece(0, 16, false, &data[16..]));
        assert!(r.take_ready().is_some());
        // Two last fragments that end in different places.
        add(&mut r, 2, &piece(0, 16, false, &data[16..]));
        add(&mut r, 2, &piece(0, 16, false, &data));
        assert_eq!(r.counts.skipped, 2);
        // A middle fragment whose length is not a multiple of 8.
        add(&mut r, 3, &piece(0, 0, true, &data[..10]));
        assert_eq!(r.counts.skipped, 3);
        let mut cut = piece(0, 0, true, &data[..16]);
        cut.cut = true;
        add(&mut r, 4, &cut);
        assert_eq!(r.counts.skipped, 4);
        assert_eq!(r.held_bytes, 0);
    }

    #[test]
    fn ipv6_datagrams_rebuild_with_the_fragment_headers_next_header() {
        let mut r = Reassembler::default();
        let (src, dst) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        let data: Vec<u8> = (0..20).collect();
        let datagram = DatagramId::V6 { src, dst, id: 9 };
        for (offset, more, data) in [(0, true, &data[..8]), (8, false, &data[8..])] {
            r.add(&Fragment {
                datagram,
                ..piece(0, offset, more, data)
            });
        }
        let packet = r.take_ready().expect("whole");
        let (header, payload) = Ipv6Header::from_slice(&packet).unwrap();
        assert_eq!(payload, &data[..]);
        assert_eq!(header.next_header, IpNumber::UDP);
        assert_eq!(usize::from(header.payload_length), data.len());
    }
}
