//! DNS-over-TCP reassembly: one byte stream per direction of a port-53 flow,
//! split into messages by their 2-byte length prefix (RFC 1035 4.2.2).
//!
//! Segments are placed by sequence number. A small, bounded number of
//! out-of-order segments is held until the gap fills; anything that cannot
//! be placed (a gap that never fills, a segment cut short by the snap length
//! or the live copy bound) is counted and the stream is broken off, never
//! guessed at: the next bytes could be the middle of a message.
//!
//! A broken stream resynchronises, as tshark does, at the first later
//! segment that begins with a plausible message: a length prefix of at
//! least a header and a question, a header with one question, and the
//! question decoding. Segments passed over until then are counted, and so
//! is whatever a stream still holds when it closes, idles out or the input
//! ends. A gap the peer has acknowledged (the capture missed bytes the
//! peer received) will never fill: the stream goes on at once from the
//! held segments after it, which may begin a message together (a length
//! prefix sent alone, as dig and glibc do).

use super::dns;

const MAX_HELD_SEGMENTS: usize = 8;
const MAX_HELD_BYTES: usize = 16 * 1024;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub unplaced_segments: u64,
    /// The stream was broken and picked up again at this segment.
    pub resynchronised: bool,
    /// A message begun before a gap was given up.
    pub unfinished_message: bool,
}

/// What skipping a gap gave up.
#[derive(Debug, PartialEq, Eq)]
pub struct SkippedGap {
    /// Held segments before the one that begins a message.
    pub segments: u64,
    /// A message begun before the gap.
    pub unfinished_message: bool,
}

#[derive(Debug)]
pub struct Stream {
    next_seq: u32,
    pending: Vec<u8>,
    held: Vec<(u32, Vec<u8>)>,
    held_bytes: usize,
    broken: bool,
}

impl Stream {
    /// `next_seq` is the sequence number of the first payload byte: SYN's
    /// sequence plus one, or the first data segment seen mid-flow.
    pub fn new(next_seq: u32) -> Self {
        Self {
            next_seq,
            pending: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            broken: false,
        }
    }

    /// Adds one segment's payload and appends every message it completes to
    /// `messages`.
    pub fn push(
        &mut self,
        seq: u32,
        data: &[u8],
        truncated: bool,
        messages: &mut Vec<Vec<u8>>,
    ) -> PushOutcome {
        let mut resynchronised = false;
        if self.broken && !truncated && starts_a_message(data) {
            self.broken = false;
            self.next_seq = seq;
            resynchronised = true;
        }
        if self.broken || truncated {
            self.abandon();
            return PushOutcome {
                unplaced_segments: 1,
                resynchronised: false,
                unfinished_message: false,
            };
        }
        // Sequence arithmetic is modulo 2^32 (RFC 9293 3.4).
        let offset = seq.wrapping_sub(self.next_seq) as i32;
        if offset > 0 {
            if self.held.len() < MAX_HELD_SEGMENTS && self.held_bytes + data.len() <= MAX_HELD_BYTES
            {
                self.held_bytes += data.len();
                self.held.push((seq, data.to_vec()));
                return PushOutcome {
                    unplaced_segments: 0,
                    resynchronised,
                    unfinished_message: false,
                };
            }
            // The gap is not filling: go on from the first held segment
            // that begins a message, if one does.
            self.held_bytes += data.len();
            self.held.push((seq, data.to_vec()));
            if let Some(skipped) = self.skip_gap(messages) {
                return PushOutcome {
                    unplaced_segments: skipped.segments,
                    resynchronised: true,
                    unfinished_message: skipped.unfinished_message,
                };
            }
            let unplaced_segments = self.held.len() as u64;
            self.abandon();
            return PushOutcome {
                unplaced_segments,
                resynchronised: false,
                unfinished_message: false,
            };
        }
        self.append_from(seq, data);
        self.place_held(messages);
        PushOutcome {
            unplaced_segments: 0,
            resynchronised,
            unfinished_message: false,
        }
    }

    /// Gives up on a gap: goes on from the held segment nearest after it
    /// that begins a message, placing the held segments after it and
    /// completing what messages they hold. Returns what was given up (the
    /// held segments before that one, the unfinished message before the
    /// gap), or `None` when no held segment begins a message.
    pub fn skip_gap(&mut self, messages: &mut Vec<Vec<u8>>) -> Option<SkippedGap> {
        let next = self.next_seq;
        let (restart, _) = self
            .held
            .iter()
            .filter(|(seq, _)| starts_a_message(&self.held_run_from(*seq)))
            .min_by_key(|(seq, _)| seq.wrapping_sub(next))?;
        let restart = *restart;
        let before = self.held.len();
        self.held
            .retain(|(seq, _)| seq.wrapping_sub(restart) as i32 >= 0);
        let given_up = (before - self.held.len()) as u64;
        self.held_bytes = self.held.iter().map(|(_, d)| d.len()).sum();
        let unfinished_message = !self.pending.is_empty();
        self.pending.clear();
        self.next_seq = restart;
        self.broken = false;
        self.place_held(messages);
        Some(SkippedGap {
            segments: given_up,
            unfinished_message,
        })
    }

    /// The peer acknowledged bytes up to `ack`: a gap before it was
    /// received but not captured, and will never fill. Goes on past it as
    /// `skip_gap` does; `None` when there is no such gap or nothing held
    /// after it begins a message.
    pub fn acknowledged(&mut self, ack: u32, messages: &mut Vec<Vec<u8>>) -> Option<SkippedGap> {
        let past_a_gap = ack.wrapping_sub(self.next_seq) as i32 > 0;
        if self.held.is_empty() || !past_a_gap {
            return None;
        }
        self.skip_gap(messages)
    }

    /// The bytes of the held segments contiguous from `seq`, enough to
    /// judge whether a message begins there (a length prefix may be a
    /// segment of its own).
    fn held_run_from(&self, seq: u32) -> Vec<u8> {
        const ENOUGH: usize = 2 + dns::HEADER_LEN + 260;
        let mut run = Vec::new();
        let mut at = seq;
        // Each step takes one segment: bounded by the few held.
        for _ in 0..self.held.len() {
            let Some((_, data)) = self.held.iter().find(|(s, _)| *s == at) else {
                break;
            };
            run.extend_from_slice(data);
            at = at.wrapping_add(data.len() as u32);
            if run.len() >= ENOUGH {
                break;
            }
        }
        run
    }

    /// Segments held for a gap that never filled, and whether a message
    /// was begun and not finished: what is given up when the stream ends.
    pub fn left_over(&self) -> (u64, bool) {
        (self.held.len() as u64, !self.pending.is_empty())
    }

    /// Places every held segment the stream has reached, and splits off
    /// the messages completed.
    fn place_held(&mut self, messages: &mut Vec<Vec<u8>>) {
        while let Some(i) = self
            .held
            .iter()
            .position(|(s, _)| s.wrapping_sub(self.next_seq) as i32 <= 0)
        {
            let (s, bytes) = self.held.swap_remove(i);
            self.held_bytes -= bytes.len();
            self.append_from(s, &bytes);
        }
        self.split_messages(messages);
    }

    /// Appends the part of a segment at or after `next_seq` (retransmitted
    /// bytes already placed are skipped).
    fn append_from(&mut self, seq: u32, data: &[u8]) {
        let already = self.next_seq.wrapping_sub(seq) as usize;
        if let Some(fresh) = data.get(already..) {
            self.pending.extend_from_slice(fresh);
            self.next_seq = self.next_seq.wrapping_add(fresh.len() as u32);
        }
    }

    fn split_messages(&mut self, messages: &mut Vec<Vec<u8>>) {
        let mut start = 0;
        while let Some(prefix) = self.pending.get(start..start + 2) {
            let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
            let Some(message) = self.pending.get(start + 2..start + 2 + len) else {
                break;
            };
            messages.push(message.to_vec());
            start += 2 + len;
        }
        self.pending.drain(..start);
    }

    fn abandon(&mut self) {
        self.broken = true;
        self.pending = Vec::new();
        self.held = Vec::new();
        self.held_bytes = 0;
    }

    #[cfg(test)]
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len() + self.held_bytes
    }
}

/// A segment's payload that begins a DNS message: the length prefix covers
/// at least a header and a question, the header asks one question, and the
/// question (within this segment) decodes.
fn starts_a_message(data: &[u8]) -> bool {
    const SHORTEST: usize = dns::HEADER_LEN + 5;
    let [hi, lo, message @ ..] = data else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if len < SHORTEST || message.len() < SHORTEST {
        return false;
    }
    let message = &message[..len.min(message.len())];
    matches!(dns::parse_question(message), Ok((header, _, _)) if header.questions == 1)
}

/// Checks docs/semantics.md section 1, DNS over TCP: messages reassembled
/// per flow, and the stream resumed after a gap.
#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&(m.len() as u16).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn splits_messages_across_and_within_segments() {
        let bytes = framed(&[b"first", b"second message", b"3"]);
        let mut s = Stream::new(1000);
        let mut out = Vec::new();
        s.push(1000, &bytes[..4], false, &mut out);
        assert!(out.is_empty());
        s.push(1004, &bytes[4..20], false, &mut out);
        assert_eq!(out, vec![b"first".to_vec()]);
        s.push(1020, &bytes[20..], false, &mut out);
        assert_eq!(
            out,
            vec![b"first".to_vec(), b"second message".to_vec(), b"3".to_vec()]
        );
        assert_eq!(s.buffered_bytes(), 0);
    }

    #[test]
    fn reorders_a_held_segment_and_ignores_retransmissions() {
        let bytes = framed(&[b"abcdefgh"]);
        let mut s = Stream::new(u32::MAX - 2); // also crosses the wrap
        let mut out = Vec::new();
        assert_eq!(
            s.push((u32::MAX - 2).wrapping_add(5), &bytes[5..], false, &mut out),
            PushOutcome::default()
        );
        s.push(u32::MAX - 2, &bytes[..3], false, &mut out);
        s.push(u32::MAX - 2, &bytes[..5], false, &mut out);
        assert_eq!(out, vec![b"abcdefgh".to_vec()]);
    }

    #[test]
    fn a_gap_that_overflows_the_hold_is_counted_not_guessed() {
        let mut s = Stream::new(0);
        let mut out = Vec::new();
        let mut unplaced = 0;
        for i in 0..=MAX_HELD_SEGMENTS as u32 {
            unplaced += s
                .push(100 + i * 10, &[0; 10], false, &mut out)
                .unplaced_segments;
        }
        assert_eq!(unplaced, MAX_HELD_SEGMENTS as u64 + 1);
        // Once broken, a segment that does not begin a message is not placed.
        assert_eq!(
            s.push(0, &framed(&[b"x"]), false, &mut out)
                .unplaced_segments,
            1
        );
        assert!(out.is_empty());
    }

    fn query(id: u8) -> Vec<u8> {
        crate::testing::MessageBuilder::new(u16::from(id), false, [1, 0, 0, 0])
            .question("web.example", 1)
            .build()
    }

    /// After a gap, the stream picks up at the next segment that starts a
    /// message cleanly, as tshark does; the segment in the gap's place and
    /// the message it cut are lost, and counted.
    #[test]
    fn a_broken_stream_resynchronises_at_a_message() {
        let first = framed(&[&query(1)]);
        let second = framed(&[&query(2)]);
        let third = framed(&[&query(3), &query(4)]);
        let mut s = Stream::new(0);
        let mut out = Vec::new();
        // The first message, cut by the snap length: the stream breaks.
        assert_eq!(s.push(0, &first, true, &mut out).unplaced_segments, 1);
        // The tail of a message: passed over.
        let seq = first.len() as u32;
        assert_eq!(
            s.push(seq, &second[5..], false, &mut out).unplaced_segments,
            1
        );
        // A segment that begins a message: picked up, with both messages.
        let outcome = s.push(seq + 100, &third, false, &mut out);
        assert_eq!(
            outcome,
            PushOutcome {
                unplaced_segments: 0,
                resynchronised: true,
                unfinished_message: false,
            }
        );
        assert_eq!(out, vec![query(3), query(4)]);
        assert_eq!(s.left_over(), (0, false));
    }

    /// One segment lost for good, and the next one begins a message: at
    /// the stream's end (or when the hold overflows) the held messages are
    /// recovered, and only the unfinished one before the gap is lost.
    #[test]
    fn a_gap_that_never_fills_is_skipped_at_a_message() {
        let bytes = framed(&[&query(1), &query(2), &query(3)]);
        let one = framed(&[&query(1)]).len();
        let two = one + framed(&[&query(2)]).len();
        let mut s = Stream::new(0);
        let mut out = Vec::new();
        s.push(0, &bytes[..one + 4], false, &mut out);
        assert_eq!(out, vec![query(1)]);
        // bytes[one + 4..two] is lost.
        s.push(two as u32, &bytes[two..], false, &mut out);
        assert_eq!(out.len(), 1, "held for the gap");
        assert_eq!(
            s.skip_gap(&mut out),
            Some(SkippedGap {
                segments: 0,
                unfinished_message: true
            })
        );
        assert_eq!(out, vec![query(1), query(3)]);
        assert_eq!(s.left_over(), (0, false));
    }

    #[test]
    fn what_is_left_when_the_stream_ends_is_reported() {
        let message = framed(&[&query(1)]);
        let mut s = Stream::new(0);
        let mut out = Vec::new();
        s.push(0, &message[..6], false, &mut out);
        s.push(100, &message[..6], false, &mut out);
        assert_eq!(s.left_over(), (1, true));
    }

    #[test]
    fn a_truncated_segment_abandons_the_stream() {
        let mut s = Stream::new(0);
        let mut out = Vec::new();
        assert_eq!(
            s.push(0, &[0, 50, 1, 2], true, &mut out).unplaced_segments,
            1
        );
        assert!(out.is_empty());
    }
}
