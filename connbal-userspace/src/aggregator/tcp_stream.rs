//! DNS-over-TCP reassembly: one byte stream per direction of a port-53 flow,
//! split into messages by their 2-byte length prefix (RFC 1035 4.2.2).
//!
//! Segments are placed by sequence number. A small, bounded number of
//! out-of-order segments is held until the gap fills; anything that cannot
//! be placed (a gap that never fills, a segment cut short by the snap length
//! or the live copy bound) is counted and the stream is abandoned, never
//! guessed at: the next bytes could be the middle of a message.

const MAX_HELD_SEGMENTS: usize = 8;
const MAX_HELD_BYTES: usize = 16 * 1024;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub unplaced_segments: u64,
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
        if self.broken || truncated {
            self.abandon();
            return PushOutcome {
                unplaced_segments: 1,
            };
        }
        // Sequence arithmetic is modulo 2^32 (RFC 9293 3.4).
        let offset = seq.wrapping_sub(self.next_seq) as i32;
        if offset > 0 {
            if self.held.len() < MAX_HELD_SEGMENTS && self.held_bytes + data.len() <= MAX_HELD_BYTES
            {
                self.held_bytes += data.len();
                self.held.push((seq, data.to_vec()));
                return PushOutcome::default();
            }
            let unplaced_segments = 1 + self.held.len() as u64;
            self.abandon();
            return PushOutcome { unplaced_segments };
        }
        self.append_from(seq, data);
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
        PushOutcome::default()
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
        // Once abandoned, even an in-order segment is not placed.
        assert_eq!(
            s.push(0, &framed(&[b"x"]), false, &mut out)
                .unplaced_segments,
            1
        );
        assert!(out.is_empty());
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
