//! Printing a finished report, the same way for replay and trace.

use crate::aggregator::{Counters, Observation, Report};
use crate::report::{self, Format, JsonReport};
use crate::table;
use anyhow::Context as _;
use serde::Serialize;
use std::io::{self, Write};

pub struct Printed<'a, I: Serialize> {
    pub format: Format,
    pub report: &'a Report,
    pub input: &'a I,
    pub error: Option<String>,
    pub interrupted: bool,
    /// One JSON document per line instead of pretty-printed (for reports
    /// printed every interval).
    pub compact: bool,
    pub style: TableStyle,
    /// With `--events`, stdout carries events and the report goes here.
    pub to_stderr: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TableStyle {
    pub colour: bool,
    /// Clear the terminal first, so a periodic report redraws in place.
    pub redraw: bool,
}

pub fn print_report<I: Serialize>(p: &Printed<'_, I>) -> anyhow::Result<()> {
    let target: Box<dyn Write> = if p.to_stderr {
        Box::new(io::stderr().lock())
    } else {
        Box::new(io::stdout().lock())
    };
    let mut out = io::BufWriter::new(target);
    let written = match p.format {
        Format::Table => {
            let clear = if p.style.redraw { "\x1b[H\x1b[2J" } else { "" };
            let text = table::render_table(p.report, p.style.colour);
            out.write_all(clear.as_bytes())
                .and_then(|()| out.write_all(text.as_bytes()))
        }
        Format::Tsv => report::write_tsv(&mut out, &p.report.rows),
        Format::Json => {
            let json = JsonReport {
                rows: &p.report.rows,
                services: &p.report.services,
                input: p.input,
                counters: &p.report.counters,
                error: p.error.as_deref(),
                interrupted: p.interrupted,
                peak_rss_kib: report::peak_rss_kib(),
            };
            if p.compact {
                serde_json::to_writer(&mut out, &json)
                    .map_err(io::Error::from)
                    .and_then(|()| writeln!(out))
            } else {
                report::write_json(&mut out, &json)
            }
        }
    };
    match written.and_then(|()| out.flush()) {
        // A reader that went away (`| head`) has all it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context(if p.to_stderr {
            "writing the report to stderr"
        } else {
            "writing the report to stdout"
        }),
    }
}

/// Whether the report goes to a terminal: stderr with `--events` (which
/// gives stdout to the events), stdout otherwise.
pub fn report_on_terminal(events: bool) -> bool {
    use std::io::IsTerminal as _;
    if events {
        io::stderr().is_terminal()
    } else {
        io::stdout().is_terminal()
    }
}

/// How the report looks, from the flags and where it goes.
pub fn report_style(format: Option<Format>, events: bool) -> (Format, TableStyle) {
    let terminal = report_on_terminal(events);
    let format = format.unwrap_or_else(|| Format::default_for(terminal));
    let style = TableStyle {
        colour: table::colour_wanted(terminal),
        redraw: false,
    };
    (format, style)
}

/// `--events`: one JSON line per observation on stdout. A reader that goes
/// away ends the stream, not the run: the report still follows on stderr.
pub struct EventSink {
    out: io::BufWriter<io::Stdout>,
    closed: bool,
}

impl Default for EventSink {
    fn default() -> Self {
        Self {
            out: io::BufWriter::new(io::stdout()),
            closed: false,
        }
    }
}

impl EventSink {
    pub fn write(&mut self, observations: impl Iterator<Item = Observation>) {
        for observation in observations {
            if self.closed {
                continue;
            }
            let written = serde_json::to_writer(&mut self.out, &observation)
                .map_err(io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"));
            self.closed = written.is_err();
        }
    }

    /// Live events should appear as they happen, not when a buffer fills.
    pub fn flush(&mut self) {
        if !self.closed && self.out.flush().is_err() {
            self.closed = true;
        }
    }
}

/// Spec 2: ignored messages come "with a warning"; one line per kind, with
/// a count, instead of one per message.
pub fn print_warnings(counters: &Counters) {
    let warnings = [
        (
            counters.ignored_multiple_questions,
            "DNS messages with more than one question were ignored",
        ),
        (
            counters.ignored_too_many_answers,
            "DNS responses with more than 1000 answers were ignored",
        ),
        (
            counters.pending_evicted,
            "pending DNS queries were evicted (table full; flood?)",
        ),
        (
            counters.flows_evicted,
            "flows were evicted (table full); one seen again counts again",
        ),
        (
            counters.backends_dropped,
            "backends were not tracked (table full)",
        ),
        (
            counters.srv_targets_dropped,
            "SRV targets were not tracked (table full)",
        ),
        (
            counters.ports_dropped,
            "backend ports were not tracked (table full)",
        ),
        (
            counters.dns_streams_dropped,
            "DNS-over-TCP streams were not tracked (table full)",
        ),
        (
            counters.services_dropped,
            "names' lookups were not tracked (table full); their TTL verdicts are missing",
        ),
    ];
    for (count, what) in warnings {
        if count > 0 {
            eprintln!("connbal: warning: {count} {what}");
        }
    }
}
