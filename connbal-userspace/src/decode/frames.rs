//! The state replay keeps about its frames, held once (ripgrep's
//! `SearchWorker` pattern): what they were counted as, the capture time
//! they span, the link types skipped, and the IP fragments still being
//! reassembled. Trace has none of it: its records are events already.

use super::defrag::Reassembler;
use super::{decode, decode_sliced, quick_ip, Decoded, Found, InputStats, Quick};
use crate::aggregator::Event;
use crate::capture::{linktype_name, Frame, LinkType};
use crate::time::Span;

/// A datagram rebuilt from fragments may be a tunnel whose inner packet is
/// a fragment in turn; as many rounds as the decoder unwraps layers.
const REASSEMBLY_ROUNDS: usize = 4;

pub struct FrameDecoder {
    /// `-a`: every TCP segment matters, not just connection attempts.
    all_tcp: bool,
    stats: InputStats,
    /// From the first frame's timestamp to the last: what the report covers.
    span: Option<Span>,
    /// Frames skipped per link type connbal does not decode (a few types).
    other_links: Vec<(u16, u64)>,
    fragments: Reassembler,
}

impl FrameDecoder {
    pub fn new(all_tcp: bool) -> Self {
        Self {
            all_tcp,
            stats: InputStats::default(),
            span: None,
            other_links: Vec::new(),
            fragments: Reassembler::default(),
        }
    }

    /// Counts and decodes a captured frame; its event, and that of any
    /// datagram its fragment completes, go to `on_event`.
    #[inline]
    pub fn frame(&mut self, frame: &Frame<'_>, mut on_event: impl FnMut(&Event<'_>)) {
        self.stats.packets += 1;
        self.stats.bytes += frame.data.len() as u64;
        match self.span.as_mut() {
            Some(span) => span.extend(frame.ts),
            None => self.span = Some(Span::at(frame.ts)),
        }
        if let LinkType::Other(code) = frame.link {
            match self.other_links.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                // A file names at most a few thousand interfaces.
                None => self.other_links.push((code, 1)),
            }
        }
        // The fixed-offset path's answers go straight through: building a
        // `Decoded` for them, and matching it again, cost 1.5% of replay.
        match quick_ip(frame, self.all_tcp) {
            Quick::Drop => return,
            Quick::Event(event) => return on_event(&event),
            Quick::Full => self.take(decode_sliced(frame, self.all_tcp), &mut on_event),
        }
        for _ in 0..REASSEMBLY_ROUNDS {
            let Some(datagram) = self.fragments.take_ready() else {
                break;
            };
            let whole = Frame {
                ts: frame.ts,
                link: LinkType::RawIp,
                data: &datagram,
                wire_len: datagram.len() as u32,
            };
            self.take(decode(&whole, self.all_tcp), &mut on_event);
        }
    }

    /// Counts what the full decoder found, and passes on its event or
    /// fragment.
    fn take(&mut self, decoded: Decoded<'_>, on_event: &mut impl FnMut(&Event<'_>)) {
        let stats = &mut self.stats;
        if decoded.tunnelled {
            stats.tunnelled_packets += 1;
        }
        match decoded.found {
            Found::Event(event) => on_event(&event),
            Found::Dropped => {}
            Found::Fragment(fragment) => self.fragments.add(&fragment),
            Found::UnplaceableFragment => stats.ip_fragments_skipped += 1,
            Found::NotIp => stats.non_ip_packets += 1,
            Found::Damaged { cut_short: true } => stats.truncated_packets_skipped += 1,
            Found::Damaged { cut_short: false } => stats.malformed_packets_skipped += 1,
            Found::UnsupportedLink => stats.unsupported_link_packets += 1,
        }
    }

    /// The end of the input: fragments of datagrams still incomplete are
    /// counted as skipped.
    pub fn finish(&mut self) {
        self.fragments.finish();
    }

    /// Frames read so far.
    pub fn packets(&self) -> u64 {
        self.stats.packets
    }

    /// What the frames so far were counted as, the reassembler's work
    /// included.
    pub fn stats(&self) -> InputStats {
        let fragments = self.fragments.counts();
        InputStats {
            ip_fragments_skipped: self.stats.ip_fragments_skipped + fragments.skipped,
            ip_fragments_reassembled: fragments.reassembled,
            ip_datagrams_reassembled: fragments.datagrams,
            ..self.stats.clone()
        }
    }

    /// The capture time the frames so far cover; `None` before the first.
    pub fn span(&self) -> Option<Span> {
        self.span
    }

    /// One warning per link type whose frames were skipped.
    pub fn link_warnings(&self) -> Vec<String> {
        self.other_links
            .iter()
            .map(|&(code, n)| {
                format!(
                    "{n} packet{} on interfaces of link type {} skipped (not decoded)",
                    if n == 1 { "" } else { "s" },
                    linktype_name(u32::from(code))
                )
            })
            .collect()
    }
}
