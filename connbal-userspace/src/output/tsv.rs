//! `--format tsv`: the original's line per client, backend and port,
//! `client  backend:port  conns  times-in-DNS  name`, for `sort -n` and
//! scripts.

use crate::aggregator::{Client, Outcomes, Report, Row};
use std::borrow::Cow;
use std::collections::BTreeMap;
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

/// The original's rows: one per (client, backend, port), under the name the
/// backend was first seen with. The report keeps an address given under
/// several names (vhosts, a CDN) apart per name; TSV is for the original's
/// scripts, so it sums them back (spec 4: a backend's DNS count is every
/// A/AAAA answer that held it, else its port's SRV count).
pub fn original_rows<'r>(rows: impl IntoIterator<Item = &'r Row>) -> Vec<Cow<'r, Row>> {
    let mut out: Vec<Cow<'r, Row>> = Vec::new();
    let mut merged: BTreeMap<(&'r Client, IpAddr), Vec<&'r Row>> = BTreeMap::new();
    for row in rows {
        if row.first_name.is_some() {
            merged
                .entry((&row.client, row.backend))
                .or_default()
                .push(row);
        } else {
            out.push(Cow::Borrowed(row));
        }
    }
    if merged.is_empty() {
        return out;
    }
    for names in merged.into_values() {
        let first = names[0];
        let name = first
            .first_name
            .clone()
            .unwrap_or_else(|| first.name.clone());
        let address_dns: u64 = names
            .iter()
            .filter(|r| is_first_port_of_name(r, &names))
            .map(|r| r.address_dns)
            .sum();
        let mut ports: Vec<u16> = names.iter().filter_map(|r| r.port).collect();
        ports.sort_unstable();
        ports.dedup();
        let srv = names.iter().find_map(|r| r.srv);
        let row = |port: Option<u16>, conns: u64, srv_dns: u64, outcomes| Row {
            client: first.client.clone(),
            backend: first.backend,
            port,
            conns,
            dns: if address_dns > 0 {
                address_dns
            } else {
                srv_dns
            },
            name: name.clone(),
            outcomes,
            srv,
            first_in_answers: names
                .iter()
                .filter(|r| is_first_port_of_name(r, &names))
                .map(|r| r.first_in_answers)
                .sum(),
            first_name: None,
            address_dns,
        };
        if ports.is_empty() {
            out.push(Cow::Owned(row(None, 0, 0, first.outcomes)));
            continue;
        }
        for port in ports {
            let on_port = || names.iter().filter(move |r| r.port == Some(port));
            let conns = on_port().map(|r| r.conns).sum();
            let srv_dns = on_port()
                .filter(|r| r.address_dns == 0)
                .map(|r| r.dns)
                .sum();
            let outcomes = first.outcomes.map(|_| {
                on_port()
                    .filter_map(|r| r.outcomes)
                    .fold(Outcomes::default(), |a, o| Outcomes {
                        answered: a.answered + o.answered,
                        refused: a.refused + o.refused,
                        unanswered: a.unanswered + o.unanswered,
                    })
            });
            out.push(Cow::Owned(row(Some(port), conns, srv_dns, outcomes)));
        }
    }
    out.sort_by(|a, b| a.report_order(b));
    out
}

/// A name's A/AAAA count is on each of its rows (one per port): counted
/// once, on its first.
fn is_first_port_of_name(row: &Row, names: &[&Row]) -> bool {
    names
        .iter()
        .find(|r| r.name == row.name)
        .is_some_and(|first| std::ptr::eq(*first, row))
}

/// The report's rows as the original printed them; one report of a series
/// (`--interval`) ends with a blank line so the reports stay apart.
pub fn write(out: &mut impl Write, report: &Report, periodic: bool) -> io::Result<()> {
    write_rows(out, original_rows(report.rows()).iter().map(AsRef::as_ref))?;
    if periodic {
        writeln!(out)?;
    }
    Ok(())
}

/// The rows as TSV text (tests compare reports this way).
pub fn render(report: &Report) -> String {
    let mut out = Vec::new();
    write_rows(
        &mut out,
        original_rows(report.rows()).iter().map(AsRef::as_ref),
    )
    .expect("writing to a Vec cannot fail");
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
            first_in_answers: 0,
            first_name: None,
            address_dns: 16,
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
