//! Output formats for a [`Report`]: the original's TSV and JSON (the table
//! lives in `table.rs`).

use crate::aggregator::{Counters, Report, Row, Service};
use serde::Serialize;
use std::io::{self, Write};
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Grouped by client and name, with shares, bars and verdicts.
    Table,
    /// The original's tab-separated lines, for `sort -n` and scripts.
    Tsv,
    /// Rows, per-service verdicts and counters.
    Json,
}

impl Format {
    /// Table for a person at a terminal, TSV for pipes (the original's
    /// habits keep working).
    pub fn default_for(stdout_is_terminal: bool) -> Self {
        if stdout_is_terminal {
            Format::Table
        } else {
            Format::Tsv
        }
    }
}

/// Writes an IPv4 address with every octet zero-padded to three digits so
/// that `sort -n` orders rows (the original's format); IPv6 in RFC 5952 form.
struct PaddedAddr(IpAddr);

impl std::fmt::Display for PaddedAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => {
                let [a, b, c, d] = a.octets();
                write!(f, "{a:03}.{b:03}.{c:03}.{d:03}")
            }
            IpAddr::V6(a) => write!(f, "{a}"),
        }
    }
}

struct BackendPort<'a>(&'a Row);

impl std::fmt::Display for BackendPort<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.backend {
            IpAddr::V4(_) => write!(f, "{}", PaddedAddr(self.0.backend))?,
            IpAddr::V6(a) => write!(f, "[{a}]")?,
        }
        match self.0.port {
            Some(port) => write!(f, ":{port}"),
            None => f.write_str(":?"),
        }
    }
}

pub fn write_tsv(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    for row in rows {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            PaddedAddr(row.client),
            BackendPort(row),
            row.conns,
            row.dns,
            row.name
        )?;
    }
    Ok(())
}

/// Everything a JSON consumer gets: typed rows plus how the input went.
#[derive(Serialize)]
pub struct JsonReport<'a, I: Serialize> {
    pub rows: &'a [Row],
    /// One per (client, name), with the aggregator's verdicts.
    pub services: &'a [Service],
    pub input: &'a I,
    pub counters: &'a Counters,
    /// Set when reading stopped early: the rows cover what came before.
    pub error: Option<&'a str>,
    pub interrupted: bool,
    /// Peak resident memory of the connbal process so far.
    pub peak_rss_kib: u64,
}

pub fn write_json<I: Serialize>(
    out: &mut impl Write,
    report: &JsonReport<'_, I>,
) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// Peak resident set size of this process, in KiB (getrusage).
pub fn peak_rss_kib() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| u.max_rss().max(0) as u64)
        .unwrap_or(0)
}

/// `-v`: one counter per line on stderr, `name: value`.
pub fn write_counters(
    out: &mut impl Write,
    input: &impl Serialize,
    counters: &Counters,
) -> io::Result<()> {
    for section in [
        serde_json::to_value(input)?,
        serde_json::to_value(counters)?,
    ] {
        if let serde_json::Value::Object(fields) = section {
            for (name, value) in fields {
                writeln!(out, "{name}: {value}")?;
            }
        }
    }
    writeln!(out, "peak_rss_kib: {}", peak_rss_kib())?;
    Ok(())
}

pub fn render(report: &Report) -> String {
    let mut out = Vec::new();
    write_tsv(&mut out, &report.rows).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("report rows are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn row(client: &str, backend: &str, port: Option<u16>) -> Row {
        Row {
            client: client.parse().unwrap(),
            backend: backend.parse().unwrap(),
            port,
            conns: 5,
            dns: 16,
            name: Arc::from("web.example.com."),
            srv: None,
        }
    }

    #[test]
    fn ipv4_is_zero_padded_and_ipv6_bracketed() {
        let rows = [
            row("172.16.101.190", "172.16.100.149", Some(80)),
            row("2001:db8::2", "2001:db8::1", Some(443)),
            row("10.0.0.1", "10.0.0.2", None),
        ];
        let mut out = Vec::new();
        write_tsv(&mut out, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "172.016.101.190\t172.016.100.149:80\t5\t16\tweb.example.com.\n\
             2001:db8::2\t[2001:db8::1]:443\t5\t16\tweb.example.com.\n\
             010.000.000.001\t010.000.000.002:?\t5\t16\tweb.example.com.\n"
        );
    }
}
