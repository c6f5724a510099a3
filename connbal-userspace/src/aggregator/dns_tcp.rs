//! DNS over TCP: each direction of a port-53 flow reassembled into messages
//! (`tcp_stream`), which then go where UDP messages go.

use super::event::Segment;
use super::tcp_stream::Stream;
use super::{Aggregator, FastMap, Timestamp, NANOS};
use connbal_common::{closes_flow, tcp_flags};
use std::net::SocketAddr;

/// Each stream buffers at most one message (64 KiB) plus held segments; a
/// full table refuses new streams (counted).
pub const MAX_DNS_STREAMS: usize = 1 << 10;
const DNS_STREAM_IDLE_NANOS: u64 = 60 * NANOS;

/// (source, destination) of one direction of a flow.
type Direction = (SocketAddr, SocketAddr);

/// One stream per direction of a port-53 TCP flow, with when it last moved.
#[derive(Debug, Default)]
pub struct DnsStreams {
    streams: FastMap<(SocketAddr, SocketAddr), (Timestamp, Stream)>,
    /// Streams not tracked because the table was full.
    pub dropped: u64,
    /// Segments that could not be placed in their stream (a gap that never
    /// filled, a cut segment, no room for the stream, or still held for a
    /// gap when the stream closed or idled out).
    pub unplaced_segments: u64,
    /// Messages begun and not finished when their stream closed or idled
    /// out.
    pub unfinished_messages: u64,
    /// Broken streams picked up again at a segment starting a message.
    pub resynchronised: u64,
    /// Messages completed by the last segment, kept to reuse the buffers.
    reassembled: Vec<Vec<u8>>,
}

impl DnsStreams {
    /// Places the segment's payload; returns the messages it completed
    /// (hand the vector back with [`DnsStreams::recycle`]).
    fn push(&mut self, s: &Segment<'_>) -> Vec<Vec<u8>> {
        let key = (s.src, s.dst);
        let mut messages = std::mem::take(&mut self.reassembled);
        if s.flags & tcp_flags::SYN != 0 {
            self.streams.remove(&key);
            if self.streams.len() < MAX_DNS_STREAMS {
                self.streams
                    .insert(key, (s.ts, Stream::new(s.seq.wrapping_add(1))));
            } else {
                self.dropped += 1;
            }
        }
        if !s.payload.is_empty() || s.truncated {
            if self.streams.len() >= MAX_DNS_STREAMS && !self.streams.contains_key(&key) {
                self.dropped += 1;
                self.unplaced_segments += 1;
            } else {
                let (last_seen, stream) = self
                    .streams
                    .entry(key)
                    .or_insert_with(|| (s.ts, Stream::new(s.seq)));
                *last_seen = s.ts;
                // Data carried on a SYN (TCP Fast Open) starts after the
                // SYN's own sequence number.
                let data_seq = if s.flags & tcp_flags::SYN != 0 {
                    s.seq.wrapping_add(1)
                } else {
                    s.seq
                };
                let outcome = stream.push(data_seq, s.payload, s.truncated, &mut messages);
                self.unplaced_segments += outcome.unplaced_segments;
                self.resynchronised += u64::from(outcome.resynchronised);
                self.unfinished_messages += u64::from(outcome.unfinished_message);
            }
        }
        messages
    }

    /// The segment's acknowledgment number passes a gap in the other
    /// direction's stream: the messages held after the gap, recovered now,
    /// before this segment's own (an answer after its query).
    fn acknowledged(&mut self, s: &Segment<'_>) -> Vec<(Direction, Vec<u8>)> {
        let Some(ack) = s.ack else {
            return Vec::new();
        };
        let key = (s.dst, s.src);
        let Some((_, stream)) = self.streams.get_mut(&key) else {
            return Vec::new();
        };
        let mut messages = Vec::new();
        let Some(skipped) = stream.acknowledged(ack, &mut messages) else {
            return Vec::new();
        };
        self.unplaced_segments += skipped.segments;
        self.unfinished_messages += u64::from(skipped.unfinished_message);
        self.resynchronised += 1;
        messages.into_iter().map(|m| (key, m)).collect()
    }

    /// Ends streams as the segment's flags say: FIN ends only the sender's
    /// direction (the peer may still answer), RST both.
    /// Returns the messages recovered from the streams that closed, with
    /// their direction.
    fn close(&mut self, s: &Segment<'_>) -> Vec<(Direction, Vec<u8>)> {
        let mut recovered = Vec::new();
        if s.flags & tcp_flags::RST != 0 {
            self.end((s.dst, s.src), &mut recovered);
        }
        if closes_flow(s.flags) {
            self.end((s.src, s.dst), &mut recovered);
        }
        recovered
    }

    /// A stream ends: past a gap that never filled, the messages held after
    /// it are recovered; what is still left is given up, and counted.
    fn end(&mut self, key: Direction, recovered: &mut Vec<(Direction, Vec<u8>)>) {
        let Some((_, mut stream)) = self.streams.remove(&key) else {
            return;
        };
        if stream.left_over().0 > 0 {
            let mut messages = Vec::new();
            if let Some(skipped) = stream.skip_gap(&mut messages) {
                self.unplaced_segments += skipped.segments;
                self.unfinished_messages += u64::from(skipped.unfinished_message);
                self.resynchronised += 1;
                recovered.extend(messages.into_iter().map(|m| (key, m)));
            }
        }
        self.count_left_over(&stream);
    }

    fn count_left_over(&mut self, stream: &Stream) {
        let (held, unfinished) = stream.left_over();
        self.unplaced_segments += held;
        self.unfinished_messages += u64::from(unfinished);
    }

    /// (held segments, unfinished messages) in the streams still open: what
    /// the end of the input gives up. Not added to the counters, as a live
    /// report comes again later.
    pub fn open_left_over(&self) -> (u64, u64) {
        self.streams.values().fold((0, 0), |(h, u), (_, stream)| {
            let (held, unfinished) = stream.left_over();
            (h + held, u + u64::from(unfinished))
        })
    }

    fn recycle(&mut self, mut messages: Vec<Vec<u8>>) {
        messages.clear();
        self.reassembled = messages;
    }

    pub fn sweep(&mut self, now: Timestamp) {
        let (mut held, mut unfinished) = (0, 0);
        self.streams.retain(|_, (last_seen, stream)| {
            let keep = now.nanos_since(*last_seen) < DNS_STREAM_IDLE_NANOS;
            if !keep {
                let (h, u) = stream.left_over();
                held += h;
                unfinished += u64::from(u);
            }
            keep
        });
        self.unplaced_segments += held;
        self.unfinished_messages += unfinished;
    }
}

impl Aggregator {
    pub(super) fn dns_segment(&mut self, s: &Segment<'_>) {
        for (direction, message) in self.dns_streams.acknowledged(s) {
            // The peer's socket: in host mode the owner is this socket's
            // for both directions; replay, the only source of `ack`, has
            // none.
            self.dns_message(s.ts, direction, &message, false, s.owner);
        }
        let mut messages = self.dns_streams.push(s);
        for message in messages.drain(..) {
            self.dns_message(s.ts, (s.src, s.dst), &message, false, s.owner);
        }
        self.dns_streams.recycle(messages);
        for (direction, message) in self.dns_streams.close(s) {
            self.dns_message(s.ts, direction, &message, false, s.owner);
        }
    }
}
