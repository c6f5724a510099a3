//! Where a trace's reports go while it runs. Each sink asks for a report
//! when it wants one (a timer for `--interval`, a scrape for `--metrics`)
//! by sending a `Due` on one channel; the loop drains the ring, builds the
//! report once and hands it to the sink, which writes its output. The loop
//! knows no output by name: a new one is a `ReportSink` and whatever sends
//! its requests.

use super::stdout_writer::{StdoutWriter, Stream};
use super::{TraceError, TraceStats};
use crate::aggregator::Report;
use crate::output::{self, metrics, openmetrics, Coverage, Printed, Style};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the loop; a sink that finds the queue full waits.
pub(super) const QUEUE: usize = 8;

/// One report, as the loop built it, with what a sink may print beside it.
pub(super) struct Snapshot<'a> {
    pub report: &'a Report,
    pub stats: &'a TraceStats,
    pub coverage: Coverage,
    pub style: &'a Style,
    pub writer: &'a StdoutWriter,
}

/// A sink's request for one report.
pub(super) trait ReportSink: Send {
    /// How much of the report the sink shows: the loop builds no more.
    fn scope(&self) -> Scope {
        Scope::Whole
    }

    fn deliver(self: Box<Self>, snapshot: &Snapshot<'_>) -> Result<(), TraceError>;
}

/// The part of a report a sink needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Whole,
    /// The busiest services, this many at most.
    Busiest(usize),
}

pub(super) type Due = Box<dyn ReportSink>;

/// `--interval`: a report printed every `period`, the first one `period`
/// after the start.
pub(super) fn every(period: Duration, due: mpsc::Sender<Due>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            ticks.tick().await;
            if due.send(Box::new(Periodic)).await.is_err() {
                return;
            }
        }
    });
}

struct Periodic;

impl ReportSink for Periodic {
    fn deliver(self: Box<Self>, s: &Snapshot<'_>) -> Result<(), TraceError> {
        let bytes = output::render_report(
            s.style,
            &Printed {
                report: s.report,
                input: s.stats,
                error: None,
                interrupted: false,
                periodic: true,
                coverage: s.coverage,
            },
        );
        let stream = if s.style.to_stderr {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        s.writer.offer_report(stream, bytes)?;
        Ok(())
    }
}

/// A scrape of `--metrics`: the exposition, sent back to the server task
/// that asked.
pub(super) struct Scrape {
    pub reply: oneshot::Sender<String>,
    pub max_series: usize,
}

impl ReportSink for Scrape {
    fn scope(&self) -> Scope {
        Scope::Busiest(metrics::services_that_fit(self.max_series))
    }

    fn deliver(self: Box<Self>, s: &Snapshot<'_>) -> Result<(), TraceError> {
        let text = openmetrics::render(s.report, s.stats, self.max_series);
        // The scraper may have hung up; nothing to do then.
        let _ = self.reply.send(text);
        Ok(())
    }
}
