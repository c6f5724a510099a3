//! Command-line interface (clap derive).

use crate::report::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit status:
  0  the report was printed (also after Ctrl-C or SIGTERM)
  2  bad usage, or the input could not be read or was damaged; the report
     for everything read before the damage is still printed";

const REPLAY_EXAMPLES: &str = "\
Examples:
  connbal replay capture.pcapng -F svc.example.com
  connbal replay -a --format json old.snoop > report.json
  tcpdump -i eth0 -w - 'port 53 or tcp[tcpflags] == tcp-syn' | connbal replay -
  snoop -o /dev/stdout '(tcp and tcp[13] == 0x02) or (udp and port 53)' | connbal replay

Output: one line per client, backend and port:
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
    /// Read a snoop, pcap or pcapng capture (file or pipe) and print the report.
    #[command(after_help = format!("{REPLAY_EXAMPLES}\n\n{EXIT_CODES}"))]
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Also count connections already open when the capture started (the
    /// first segment of an unseen flow, either direction).
    #[arg(short = 'a', long = "all-tcp")]
    pub all_tcp: bool,

    /// Only track lookups whose name contains SUBSTR.
    #[arg(short = 'F', long = "filter", value_name = "SUBSTR")]
    pub filter: Option<String>,

    #[arg(long, value_enum, default_value_t = Format::Tsv)]
    pub format: Format,

    /// Print input and skip counters to stderr.
    #[arg(short, long)]
    pub verbose: bool,

    /// Capture file; `-` or nothing reads standard input. The format (snoop,
    /// pcap, pcapng) is detected from its first bytes.
    #[arg(value_name = "FILE|-")]
    pub input: Option<PathBuf>,
}
