//! Command-line interface (clap derive).

use crate::report::Format;
use crate::trace::loader::AttachMode;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit status:
  0  the report was printed (also after Ctrl-C or SIGTERM)
  2  bad usage; the input could not be read or was damaged; the traced
     interface disappeared; or the eBPF program could not be loaded. The
     report for everything read until then is still printed.";

const TRACE_EXAMPLES: &str = "\
Examples:
  sudo connbal trace --iface eth0
  sudo connbal trace --iface eth0 --duration 10m -F svc.example.com
  sudo connbal trace -i eth0 -i eth1 -a --interval 30s --format json
  sudo connbal trace -i eth0 -F db.example.com --events | jq .
  sudo connbal trace -i eth0 --metrics 127.0.0.1:9464 --user nobody

Requires root, or CAP_BPF and CAP_NET_ADMIN, and Linux 5.8 or later (BPF
ring buffers). On Linux 6.6+ the filter attaches with TCX and disappears
with the process; on older kernels it is a clsact filter, which connbal
removes on exit and, after a crash, on its next start.

Output: on a terminal, a table per client and name with each backend's
share and the verdicts (unused backends, balance, TTL respect, SRV
priority). Through a pipe, or with --format tsv, the original's line per
client, backend and port:
  client  backend:port  conns  times-in-DNS  name";

const REPLAY_EXAMPLES: &str = "\
Examples:
  connbal replay capture.pcapng -F svc.example.com
  connbal replay -a --format json old.snoop > report.json
  tcpdump -i eth0 -w - 'port 53 or tcp[tcpflags] == tcp-syn' | connbal replay -
  snoop -o /dev/stdout '(tcp and tcp[13] == 0x02) or (udp and port 53)' | connbal replay

Output: on a terminal, a table per client and name with each backend's
share and the verdicts (unused backends, balance, TTL respect, SRV
priority). Through a pipe, or with --format tsv, the original's line per
client, backend and port:
  client  backend:port  conns  times-in-DNS  name
IPv4 addresses are zero-padded (172.016.101.190) so `sort -n` orders them.";

#[derive(Debug, Parser)]
#[command(
    name = "connbal",
    version,
    about = "How evenly do clients spread connections across the backends DNS gives them?",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace live traffic on interfaces with an in-kernel eBPF filter.
    #[command(after_help = format!("{TRACE_EXAMPLES}\n\n{EXIT_CODES}"))]
    Trace(TraceArgs),
    /// Read a snoop, pcap or pcapng capture (file or pipe) and print the report.
    #[command(after_help = format!("{REPLAY_EXAMPLES}\n\n{EXIT_CODES}"))]
    Replay(ReplayArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  connbal completions bash > /etc/bash_completion.d/connbal\n  connbal completions zsh > \"${fpath[1]}/_connbal\"\n  connbal completions fish > ~/.config/fish/completions/connbal.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(
        after_help = "Examples:\n  connbal man > /usr/local/share/man/man1/connbal.1\n  connbal man | man -l -"
    )]
    Man,
}

/// What both modes share: what to count and how to print it.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Also count connections already open when tracing started (the first
    /// segment of an unseen flow, either direction).
    #[arg(short = 'a', long = "all-tcp")]
    pub all_tcp: bool,

    /// Only track lookups whose name contains SUBSTR.
    #[arg(short = 'F', long = "filter", value_name = "SUBSTR")]
    pub filter: Option<String>,

    /// Output format [default: table on a terminal, tsv otherwise].
    /// Colours only on a terminal, and not when NO_COLOR is set.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Stream one JSON line per DNS answer and per connection attempt to
    /// stdout as they are seen; the report then goes to stderr.
    #[arg(long)]
    pub events: bool,

    /// Print input and skip counters to stderr (and the verifier log if the
    /// kernel rejects the program).
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Interface to trace, ingress and egress; repeat for several.
    #[arg(short = 'i', long = "iface", value_name = "IF", required = true)]
    pub interfaces: Vec<String>,

    /// Stop after this long (e.g. 30s, 10m, 1h); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Also print the report every D while running (a table on a terminal
    /// is redrawn in place).
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,

    /// Ring buffer size in bytes (power of two; K, M, G suffixes). Drops are
    /// counted and reported; make it larger if any are.
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub ring_size: u64,

    /// How to attach: TCX (Linux 6.6+) or a clsact filter over netlink.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// Serve Prometheus/OpenMetrics metrics at http://ADDR/metrics
    /// (e.g. 127.0.0.1:9464): connections and DNS appearances per client,
    /// backend, port and name; per-name lookups and verdicts; kernel,
    /// drop and eviction counters.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// At most this many backend series (and as many name series) per
    /// scrape; the ones with the fewest connections are folded, and counted
    /// in connbal_metrics_folded_series.
    #[arg(long, value_name = "N", default_value_t = crate::metrics::DEFAULT_MAX_SERIES)]
    pub metrics_max_series: usize,

    /// After attaching, switch to this user (connbal drops every capability
    /// anyway; this also gives up root).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Print the kernel program's debug log lines (aya-log) to stderr.
    #[arg(long, hide = true)]
    pub kernel_debug: bool,

    /// Attach an empty classifier instead: the floor for `cargo xtask
    /// bench-live`'s per-packet cost.
    #[arg(long, hide = true)]
    pub noop_program: bool,

    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub report: ReportArgs,

    /// Capture file; `-` or nothing reads standard input. The format (snoop,
    /// pcap, pcapng) is detected from its first bytes.
    #[arg(value_name = "FILE|-")]
    pub input: Option<PathBuf>,
}

/// "4096", "256K", "8M", "1G" (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("M").is_err());
    }
}
