//! The one path from events to the aggregator: events go to the
//! aggregator, and with `--events` what it observed goes to the event
//! stream. Replay (through `decode::FrameDecoder`), trace and the fuzz
//! targets all feed this, so they cannot drift apart.

use crate::aggregator::{Aggregator, Config, Event, Report};
use crate::output::EventSink;
use std::io::{self, Write};

pub struct Pipeline<W: Write = io::Stdout> {
    aggregator: Aggregator,
    /// Present with `--events`.
    events: Option<EventSink<W>>,
}

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
        }
    }

    /// `-a`: whether every TCP segment matters, not just connection attempts.
    pub fn all_tcp(&self) -> bool {
        self.aggregator.config().all_tcp
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

    /// Forgets the clients `gone` says are gone (see
    /// `Aggregator::forget_clients`).
    pub fn forget_clients(&mut self, gone: &dyn Fn(&crate::aggregator::Client) -> bool) {
        self.aggregator.forget_clients(gone);
    }

    /// Connections behind a VIP not known to have closed.
    pub fn open_behind_vips(&self) -> usize {
        self.aggregator.open_behind_vips()
    }

    /// The time is now `now` (see `Aggregator::advance`).
    pub fn advance(&mut self, now: crate::aggregator::Timestamp) {
        self.aggregator.advance(now);
    }

    /// Records the source lost so far (a full ring buffer): the verdicts
    /// say they may be wrong.
    pub fn input_lost(&mut self, records: u64) {
        self.aggregator.input_lost(records);
    }

    pub fn report(&self) -> Report {
        self.aggregator.report()
    }

    /// The `limit` services with the most connections; see
    /// [`crate::aggregator::Aggregator::report_busiest`].
    pub fn report_busiest(&self, limit: usize) -> Report {
        self.aggregator.report_busiest(limit)
    }
}
