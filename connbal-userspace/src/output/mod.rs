//! Printing reports, one file per format: `table`, `tsv`, `json`, `events`
//! (`--events`) and `openmetrics` (`--metrics`). Replay and trace decide
//! their [`Style`] once from the flags, and end with the same [`finish`].
//! Each format owns what it does in a series of reports (`--interval`):
//! the table redraws in place on a terminal, TSV and a table elsewhere
//! leave a blank line, JSON prints one compact document per line.

mod events;
mod json;
pub mod metrics;
pub mod openmetrics;
mod table;
mod tsv;

pub use events::EventSink;
pub use tsv::{render as render_tsv, write_rows as write_tsv_rows};

use crate::aggregator::{Counters, Report, Span};
use crate::tally::{self, Tally};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{self, IsTerminal as _, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Grouped by client and name, with shares, bars and verdicts.
    Table,
    /// The original's tab-separated lines, for `sort -n` and scripts.
    Tsv,
    /// Rows, per-service verdicts and counters.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing the report to {stream}: {source}")]
    Write {
        stream: &'static str,
        source: io::Error,
    },
    /// A man page or a completion script.
    #[error("writing to stdout: {0}")]
    Stdout(io::Error),
    /// The reader went away (`| head`): it has all it wanted. A live trace
    /// ends on it; a last report has nowhere to go and that is fine.
    #[error("the reader of {stream} went away")]
    Closed { stream: &'static str },
    /// A live trace's last report, after its programs were detached.
    #[error("{stream} was not read for {}: the last report was not written", crate::time::human_duration(*waited))]
    Stalled {
        stream: &'static str,
        waited: std::time::Duration,
    },
}

/// How and where reports are printed, decided once from the flags.
#[derive(Clone, Copy, Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "four independent yes-or-no facts about one output, decided once"
)]
pub struct Style {
    pub format: Format,
    /// Colours in the table (a terminal without `NO_COLOR`).
    pub colour: bool,
    /// `--events` has stdout; the report goes to stderr.
    pub to_stderr: bool,
    /// Whether the report's stream is a terminal.
    pub terminal: bool,
    /// TSV keeps the original's lines only; its closing summary goes to
    /// stderr, and only when a person is watching there.
    pub tsv_summary_to_stderr: bool,
}

impl Style {
    /// The table for a person at a terminal, TSV for pipes (the original's
    /// habits keep working), unless `format` says otherwise.
    pub fn decide(format: Option<Format>, events: bool) -> Self {
        let terminal = if events {
            io::stderr().is_terminal()
        } else {
            io::stdout().is_terminal()
        };
        Self {
            format: format.unwrap_or(if terminal { Format::Table } else { Format::Tsv }),
            colour: table::colour_wanted(terminal),
            to_stderr: events,
            terminal,
            tsv_summary_to_stderr: io::stderr().is_terminal(),
        }
    }
}

/// One report and what it covers.
pub struct Printed<'a, I: Serialize> {
    pub report: &'a Report,
    /// The input's own section (what was read, or the trace's counters).
    pub input: &'a I,
    /// Set when reading stopped early: the report covers what came before.
    pub error: Option<String>,
    pub interrupted: bool,
    /// One of a series of reports (`--interval`), not a lone final one.
    pub periodic: bool,
    pub coverage: Coverage,
}

/// What a report covers: how many packets the source saw, and over what
/// time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    pub packets: u64,
    /// `None` for a capture without a packet.
    pub span: Option<Span>,
}

impl Coverage {
    /// The line that closes a report: what was seen, and over what time.
    /// With `-F`, answers and attempts alike are those of the filtered
    /// names, the attempts out of all seen.
    pub fn summary(&self, report: &Report) -> String {
        let counters = &report.counters;
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let answers = plural(counters.responses_matched, "DNS answer", "DNS answers");
        let attempts = |n| plural(n, "connection attempt", "connection attempts");
        let mut line = format!("{}, ", plural(self.packets, "packet", "packets"));
        let _ = match &report.filter {
            None => write!(
                line,
                "{answers}, {}",
                attempts(counters.connection_attempts)
            ),
            Some(filter) => write!(
                line,
                "{answers} for -F {filter}, {} to their backends (of {})",
                attempts(counters.connection_attempts_to_backends),
                counters.connection_attempts,
            ),
        };
        if let Some(span) = self.span {
            let _ = write!(
                line,
                " in {} ({} to {})",
                crate::time::human_duration(span.duration()),
                humantime::format_rfc3339_seconds(span.start.to_system_time()),
                humantime::format_rfc3339_seconds(span.end.to_system_time()),
            );
        }
        line
    }
}

pub fn print_report<I: Serialize>(style: &Style, p: &Printed<'_, I>) -> Result<(), OutputError> {
    let target: Box<dyn Write> = if style.to_stderr {
        Box::new(io::stderr().lock())
    } else {
        Box::new(io::stdout().lock())
    };
    let mut out = io::BufWriter::new(target);
    let written = write_report(&mut out, *style, p);
    let stream = if style.to_stderr { "stderr" } else { "stdout" };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(OutputError::Closed { stream }),
        Err(source) => Err(OutputError::Write { stream, source }),
        Ok(()) => Ok(()),
    }
}

/// The report's bytes, as `print_report` writes them, for a writer that
/// must not block (a live trace's).
pub fn render_report<I: Serialize>(style: &Style, p: &Printed<'_, I>) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing to memory fails only where serde_json's Serialize impls
    // would, which ours do not.
    let _ = write_report(&mut bytes, *style, p);
    bytes
}

fn write_report<I: Serialize>(
    mut out: &mut dyn Write,
    style: Style,
    p: &Printed<'_, I>,
) -> io::Result<()> {
    match style.format {
        Format::Table => {
            let redraw = p.periodic && style.terminal;
            let summary = p.coverage.summary(p.report);
            table::write(
                &mut out,
                p.report,
                style.colour,
                redraw,
                p.periodic,
                &summary,
            )
        }
        Format::Tsv => tsv::write(&mut out, p.report, p.periodic),
        Format::Json => json::write(&mut out, p, p.periodic),
    }
}

/// The last step of replay and trace alike: the report, the warnings about
/// what it may be missing, and with `-v` every counter.
pub struct Finish<'a, I: Serialize + Tally> {
    pub printed: Printed<'a, I>,
    /// Warnings only the source knows about (ring-buffer loss, say),
    /// printed after the aggregator's.
    pub source_warnings: Vec<String>,
    pub verbose: bool,
}

pub fn finish<I: Serialize + Tally>(style: &Style, f: &Finish<'_, I>) -> Result<(), OutputError> {
    finish_with(style, f, |printed| print_report(style, printed))
}

/// `finish`, the report itself printed by `print`.
pub fn finish_with<I: Serialize + Tally>(
    style: &Style,
    f: &Finish<'_, I>,
    print: impl FnOnce(&Printed<'_, I>) -> Result<(), OutputError>,
) -> Result<(), OutputError> {
    match print(&f.printed) {
        // The last report: a reader that went away has all it wanted.
        Ok(()) | Err(OutputError::Closed { .. }) => {}
        Err(e) => return Err(e),
    }
    if style.format == Format::Tsv && style.tsv_summary_to_stderr {
        // One write: stderr is unbuffered, and a formatted eprintln! may
        // reach a shared terminal in pieces between the rows `| cat` prints.
        let line = format!(
            "connbal: {}\n",
            f.printed.coverage.summary(f.printed.report)
        );
        let _ = io::stderr().write_all(line.as_bytes());
    }
    // A series prints its warnings once, at the end of a run cut short.
    if !f.printed.periodic || f.printed.interrupted {
        print_warnings(&f.printed.report.counters);
    }
    for warning in &f.source_warnings {
        eprintln!("connbal: warning: {warning}");
    }
    if f.verbose {
        let mut err = io::stderr().lock();
        write_counters(&mut err, f.printed.input, &f.printed.report.counters).map_err(
            |source| OutputError::Write {
                stream: "stderr",
                source,
            },
        )?;
    }
    Ok(())
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
        (
            counters.timeline_slots_dropped,
            "answer addresses were left out of their names' timelines (cap); those names' balance is judged from the last answers only",
        ),
    ];
    for (count, what) in warnings {
        if count > 0 {
            eprintln!("connbal: warning: {count} {what}");
        }
    }
}

/// `-v`: one counter per line, `name: value`, the input's then the
/// aggregator's, each in alphabetical order, then peak memory.
pub fn write_counters(
    out: &mut impl Write,
    input: &dyn Tally,
    counters: &Counters,
) -> io::Result<()> {
    for section in [tally::collect(input, ""), tally::collect(counters, "")] {
        let mut section = section;
        section.sort();
        for (name, value) in section {
            writeln!(out, "{name}: {value}")?;
        }
    }
    writeln!(out, "peak_rss_kib: {}", peak_rss_kib())?;
    Ok(())
}

/// Peak resident set size of this process, in KiB (getrusage).
pub fn peak_rss_kib() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| u.max_rss().max(0) as u64)
}
