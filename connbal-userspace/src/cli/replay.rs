//! `connbal replay`: its flags, resolved into the library's options.

use clap::Args;
use connbal::replay::ReplayOptions;
use std::path::PathBuf;

pub const EXAMPLES: &str = "\
Examples:
  connbal replay capture.pcapng -F svc.example.com
  connbal replay -a --format json old.snoop > report.json
  tcpdump -i eth0 -U -w - 'port 53 or tcp[tcpflags] & (tcp-syn|tcp-rst) != 0
    or (ip6[6] == 6 and ip6[53] & 0x06 != 0)' | connbal replay -
  snoop -o /dev/stdout '(tcp and tcp[13] & 0x06 != 0) or (udp and port 53)' | connbal replay

Output: on a terminal, a table per client and name with each backend's
share and the verdicts (unused backends, balance, TTL, stale backends,
failing backends, SRV priority; see connbal --help for their thresholds). Through a pipe, or with --format tsv, the original's line per
client, backend and port:
  client  backend:port  conns  times-in-DNS  name
IPv4 addresses are zero-padded (172.016.101.190) so `sort -n` orders them.";

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub report: super::ReportArgs,

    /// Capture file; `-` or nothing reads standard input. The format (snoop,
    /// pcap, pcapng) is detected from its first bytes.
    #[arg(value_name = "FILE|-")]
    pub input: Option<PathBuf>,
}

impl ReplayArgs {
    pub fn options(self) -> ReplayOptions {
        ReplayOptions {
            config: self.report.config(),
            format: self.report.format.map(Into::into),
            verbose: self.report.verbose,
            input: self.input,
        }
    }
}
