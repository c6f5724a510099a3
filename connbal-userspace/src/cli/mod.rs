//! The command line (clap derive), resolved once into the library's
//! options: one file per subcommand. clap stays here, out of the library's
//! types.

mod docs;
mod replay;
mod trace;

pub use docs::{completions, man};

use clap::{Args, Parser, Subcommand, ValueEnum};
use connbal::aggregator::Config;
use connbal::output::Format;

const EXIT_CODES: &str = "\
Exit status:
  0  the report was printed (also after Ctrl-C, SIGTERM or SIGHUP, or when
     the reader of a live trace's reports went away)
  2  bad usage; the input could not be read or was damaged; the traced
     interface disappeared; or the eBPF program could not be loaded. The
     report for everything read until then is still printed.
  130  a third Ctrl-C: exited at once, with no report (the first prints it,
     the second stops waiting for a pipe's writer).";

/// The report, for `connbal --help` and the man page.
const REPORT: &str = "\
The report:
  Per client and name, each backend with its port, connections, share and
  times seen in DNS, and the verdicts: unused backends (and whether random
  choice would plausibly leave them unused), balance (a chi-square test
  against random choice among the addresses the client's latest answers
  held at each connection, by SRV weight within the best priority; within
  one address family when the client used only one, as RFC 6724 clients
  do), answer order (whether the client takes the address listed first,
  and whether the server rotates its answers), TTL (lookups before the
  previous answer expired, and connections after it expired with no new
  lookup; an answer through CNAMEs lasts its chain's least TTL; lookups
  through a resolver on the client's own host are fine), stale backends
  (connections to addresses DNS no longer offers, to this client or, since
  its own answer expired, to any other), failing backends, SRV priority,
  and shared addresses (connections to an address two names offered,
  counted for the name looked up last). A resolver (a client seen
  answering DNS) is not judged on unused backends. A verdict judged from
  input that may miss something (records lost, a full table, a trace
  begun within the TTL) says it may be wrong (JSON complete: false).
  Thresholds: unused backends, an uneven spread and taking the first
  address are flagged when random choice would give them with chance
  below 1% (p < 0.01); a lookup or connection within 1 s of its answer's
  expiry is on time; the spread is judged when every backend in the test
  is expected to get at least one connection (rarer ones are pooled);
  answer order is judged from 5 connection attempts.
  A client is an address (replay, --iface), or in host mode the app, cgroup
  or process that owns the socket (--by). TSV has the original's five
  columns: client  backend:port  conns  times-in-DNS  name. JSON adds the
  verdicts and client_info under services, every counter, and the span of
  time covered (start, end, duration_s). The table closes with a summary:
  packets, DNS answers and connection attempts seen, and over what time
  (replay: earliest to latest packet; trace: its start to the report). TSV
  prints that line on stderr, when stderr is a terminal.

Counters (-v, JSON, metrics):
  packets, bytes and damage skipped by the capture reader; records, and the
  kernel's packets seen, records emitted and lost; DNS messages, queries
  tracked, responses matched, unmatched and filtered out (-F), messages
  skipped as malformed, truncated or ignored; pending queries expired or
  evicted; backends, ports, SRV targets, services and DNS-over-TCP streams
  not tracked because their table was full; connection attempts, those to
  backends, and with -a flows seen mid-stream or evicted. The exact rules
  are in docs/semantics.md.";

#[derive(Debug, Parser)]
#[command(
    name = "connbal",
    version,
    about = "How evenly do clients spread connections across the backends DNS gives them?",
    after_help = EXIT_CODES,
    after_long_help = format!("{REPORT}\n\n{EXIT_CODES}")
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start and consumed at once: a box would buy nothing"
)]
pub enum Command {
    /// Trace live, host-wide at the sockets (or on interfaces with --iface), with in-kernel eBPF filters.
    #[command(after_help = format!("{}\n\n{EXIT_CODES}", trace::EXAMPLES))]
    Trace(trace::TraceArgs),
    /// Read a snoop, pcap or pcapng capture (file or pipe) and print the report.
    #[command(after_help = format!("{}\n\n{EXIT_CODES}", replay::EXAMPLES))]
    Replay(replay::ReplayArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  connbal completions bash > /etc/bash_completion.d/connbal\n  connbal completions zsh > \"${fpath[1]}/_connbal\"\n  connbal completions fish > ~/.config/fish/completions/connbal.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): connbal(1), or connbal-COMMAND(1).
    #[command(
        after_help = "Examples:\n  connbal man > /usr/local/share/man/man1/connbal.1\n  connbal man trace > /usr/local/share/man/man1/connbal-trace.1\n  connbal man replay | man -l -"
    )]
    Man {
        /// The subcommand whose page to print; none: the top-level page.
        #[arg(value_enum)]
        page: Option<ManPage>,
    },
    /// Host mode's helper that probes libc files (started by `connbal
    /// trace`, never by hand).
    #[command(hide = true)]
    LibcProber {
        #[arg(long)]
        entry_id: u32,
        #[arg(long)]
        return_id: u32,
    },
}

/// The subcommands with a page of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ManPage {
    Trace,
    Replay,
    Completions,
    Man,
}

/// What both modes share: what to count and how to print it.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Also count connections already open when the capture or the trace
    /// started (the first segment of an unseen flow, either direction).
    #[arg(short = 'a', long = "all-tcp")]
    pub all_tcp: bool,

    /// Only count lookups whose name asked, or the name the answer gives
    /// after CNAMEs (the one the report shows), contains SUBSTR.
    #[arg(short = 'F', long = "filter", value_name = "SUBSTR")]
    pub filter: Option<String>,

    /// Output format [default: table on a terminal, tsv otherwise].
    /// Colours only on a terminal, and not when NO_COLOR is set.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Stream one JSON line per DNS answer and per connection attempt to
    /// stdout as they are seen; the report then goes to stderr.
    #[arg(long)]
    pub events: bool,

    /// Print input and skip counters to stderr (trace: also the kernel
    /// verifier's log if it rejects the program).
    #[arg(short, long)]
    pub verbose: bool,

    /// Judge the verdicts (balance, unused and failing backends, TTL use)
    /// over the recent past, between D/2 and D of it, not since the start
    /// (e.g. 10m for an agent). Counts stay since the start, so metrics
    /// counters stay monotonic.
    #[arg(long, value_name = "D", value_parser = trace::positive_duration)]
    pub window: Option<std::time::Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Grouped by client and name, with shares, bars and verdicts.
    Table,
    /// The original's tab-separated lines, for `sort -n` and scripts.
    Tsv,
    /// Rows, per-service verdicts and counters.
    Json,
}

impl From<FormatArg> for Format {
    fn from(arg: FormatArg) -> Self {
        match arg {
            FormatArg::Table => Format::Table,
            FormatArg::Tsv => Format::Tsv,
            FormatArg::Json => Format::Json,
        }
    }
}

impl ReportArgs {
    /// What to count, for the aggregator.
    fn config(&self) -> Config {
        Config {
            all_tcp: self.all_tcp,
            filter: self.filter.clone(),
            events: self.events,
            window: self.window,
            ..Config::default()
        }
    }
}
