//! `--format tsv`: the original's line per client, backend and port,
//! `client  backend:port  conns  times-in-DNS  name`, for `sort -n` and
//! scripts.

use crate::aggregator::{Client, Report, Row};
use std::io::{self, Write};
use std::net::IpAddr;

/// Writes an IPv4 address with every octet zero-padded to three digits so
/// that `sort -n` orders rows (the original's format); IPv6 in RFC 5952 form.
struct PaddedAddr(IpAddr);

impl std::fmt::Display for PaddedAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => {
                let [first, second, third, fourth] = a.octets();
                write!(f, "{first:03}.{second:03}.{third:03}.{fourth:03}")
            }
            IpAddr::V6(a) => write!(f, "{a}"),
        }
    }
}

/// The client column: an address padded as the original did; an owner
/// client as it shows everywhere (escaped, so it holds no tab).
struct TsvClient<'a>(&'a Client);

impl std::fmt::Display for TsvClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.address() {
            // An address from another network namespace shows as it does
            // everywhere, its namespace with it.
            Some(address) if !self.0.is_owner() && self.0.netns_cookie().is_none() => {
                PaddedAddr(address).fmt(f)
            }
            _ => self.0.fmt(f),
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

pub fn write_rows<'r>(
    out: &mut impl Write,
    rows: impl IntoIterator<Item = &'r Row>,
) -> io::Result<()> {
    for row in rows {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            TsvClient(&row.client),
            BackendPort(row),
            row.conns,
            row.dns,
            row.name
        )?;
    }
    Ok(())
}

/// The report's rows; one of a series (`--interval`) ends with a blank line
/// so the reports stay apart.
pub fn write(out: &mut impl Write, report: &Report, periodic: bool) -> io::Result<()> {
    write_rows(out, report.rows())?;
    if periodic {
        writeln!(out)?;
    }
    Ok(())
}

/// The rows as TSV text (tests compare reports this way).
pub fn render(report: &Report) -> String {
    let mut out = Vec::new();
    write_rows(&mut out, report.rows()).expect("writing to a Vec cannot fail");
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
            outcomes: None,
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
        write_rows(&mut out, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "172.016.101.190\t172.016.100.149:80\t5\t16\tweb.example.com.\n\
             2001:db8::2\t[2001:db8::1]:443\t5\t16\tweb.example.com.\n\
             010.000.000.001\t010.000.000.002:?\t5\t16\tweb.example.com.\n"
        );
    }
}
