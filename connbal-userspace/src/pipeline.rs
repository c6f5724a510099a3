//! The one path from input to aggregator: frames are decoded through the
//! shared pre-filter, events go to the aggregator, and with `--events` what
//! it observed goes to the event stream. Replay, trace and the fuzz targets
//! all feed this, so they cannot drift apart.

use crate::aggregator::{Aggregator, Config, Event, Report, Span};
use crate::capture::{linktype_name, Frame, LinkType};
use crate::decode::{decode, InputStats};
use crate::defrag::Reassembler;
use crate::output::EventSink;
use std::io::{self, Write};

pub struct Pipeline<W: Write = io::Stdout> {
    aggregator: Aggregator,
    /// Present with `--events`.
    events: Option<EventSink<W>>,
    /// From the first frame's timestamp to the last: what the report covers.
    frames_span: Option<Span>,
    /// Frames skipped per link type connbal does not decode (a few types).
    other_links: Vec<(u16, u64)>,
    fragments: Reassembler,
}

/// A datagram rebuilt from fragments may be a tunnel whose inner packet is
/// a fragment in turn; as many rounds as the decoder unwraps layers.
const REASSEMBLY_ROUNDS: usize = 4;

impl Pipeline {
    /// Events, when asked for, go to stdout.
    pub fn new(config: Config) -> Self {
        Self::with_events_to(config, io::stdout())
    }
}

impl<W: Write> Pipeline<W> {
    /// Events, when `config` asks for them, go to `out`.
    pub fn with_events_to(config: Config, out: W) -> Self {
        let events = config.events.then(|| EventSink::new(out));
        Self {
            aggregator: Aggregator::new(config),
            events,
            frames_span: None,
            other_links: Vec::new(),
            fragments: Reassembler::default(),
        }
    }

    /// `-a`: whether every TCP segment matters, not just connection attempts.
    pub fn all_tcp(&self) -> bool {
        self.aggregator.config().all_tcp
    }

    /// A captured frame, counted in `stats` and decoded.
    #[inline]
    pub fn frame(&mut self, frame: &Frame<'_>, stats: &mut InputStats) {
        stats.packets += 1;
        stats.bytes += frame.data.len() as u64;
        match self.frames_span.as_mut() {
            Some(span) => span.extend(frame.ts),
            None => self.frames_span = Some(Span::at(frame.ts)),
        }
        if let LinkType::Other(code) = frame.link {
            match self.other_links.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                // A file names at most a few thousand interfaces.
                None => self.other_links.push((code, 1)),
            }
        }
        if let Some(event) = decode(frame, self.all_tcp(), stats, &mut self.fragments) {
            self.event(&event);
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
            if let Some(event) = decode(&whole, self.all_tcp(), stats, &mut self.fragments) {
                self.event(&event);
            }
        }
    }

    /// The end of the input: fragments of datagrams still incomplete are
    /// counted as skipped.
    pub fn finish_input(&mut self, stats: &mut InputStats) {
        self.fragments.finish(stats);
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

    pub fn event(&mut self, event: &Event<'_>) {
        self.aggregator.process(event);
        if let Some(sink) = self.events.as_mut() {
            sink.write(self.aggregator.take_observations());
        }
    }

    /// Live events should appear as they happen, not when a buffer fills.
    pub fn flush_events(&mut self) {
        if let Some(sink) = self.events.as_mut() {
            sink.flush();
        }
    }

    /// The capture time the frames so far cover; `None` before the first.
    pub fn frames_span(&self) -> Option<Span> {
        self.frames_span
    }

    pub fn report(&self) -> Report {
        self.aggregator.report()
    }
}
