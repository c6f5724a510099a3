//! `--format json`: rows, per-service verdicts, the input's and the
//! aggregator's counters, and how reading ended.

use crate::aggregator::{Client, ClientInfo, Counters, Report, Service, VipSpread};
use serde::{Serialize, Serializer};
use std::io::{self, Write};

/// Everything a JSON consumer gets: typed rows plus how the input went.
#[derive(Serialize)]
struct JsonReport<'a, I: Serialize> {
    #[serde(serialize_with = "all_rows")]
    rows: &'a Report,
    /// One per (client, name), with the aggregator's verdicts.
    #[serde(serialize_with = "described_services")]
    services: &'a [Service],
    /// Host mode: connections to an address a client got alone (a
    /// Service's VIP), by the backend a DNAT chose; absent when none.
    #[serde(
        serialize_with = "described_spreads",
        skip_serializing_if = "<[VipSpread]>::is_empty"
    )]
    behind_vips: &'a [VipSpread],
    input: &'a I,
    counters: &'a Counters,
    /// Set when reading stopped early: the rows cover what came before.
    error: Option<&'a str>,
    interrupted: bool,
    /// The time the report covers; `null` for a capture without a packet.
    span: Option<JsonSpan>,
    /// Peak resident memory of the connbal process so far.
    peak_rss_kib: u64,
    /// `--window`: the verdicts judge what happened since `verdicts_since`;
    /// the counts are since the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<JsonWindow>,
}

#[derive(Serialize)]
struct JsonWindow {
    width_s: f64,
    /// RFC 3339; `null` before the first event.
    verdicts_since: Option<String>,
}

/// RFC 3339 times in UTC, to the millisecond, and the seconds between.
#[derive(Serialize)]
struct JsonSpan {
    start: String,
    end: String,
    duration_s: f64,
}

/// The rows of every service, as one list.
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes the field by reference"
)]
fn all_rows<S: Serializer>(report: &&Report, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(report.rows().map(|row| Described {
        item: row,
        client_info: owner_info(&row.client),
    }))
}

fn described_services<S: Serializer>(services: &&[Service], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(services.iter().map(|service| Described {
        item: service,
        client_info: owner_info(&service.client),
    }))
}

fn described_spreads<S: Serializer>(spreads: &&[VipSpread], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(spreads.iter().map(|spread| Described {
        item: spread,
        client_info: owner_info(&spread.client),
    }))
}

/// A row or service, and for an owner client every known attribute of it
/// (cgroup id and path, container, pod, command); for an address of
/// another network namespace, the address and the namespace's cookie.
#[derive(Serialize)]
struct Described<'a, T: Serialize> {
    #[serde(flatten)]
    item: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_info: Option<ClientInfo<'a>>,
}

fn owner_info(client: &Client) -> Option<ClientInfo<'_>> {
    client.has_info().then(|| client.info())
}

/// Pretty-printed; one of a series (`--interval`) is one compact line, so a
/// consumer reads one document per line.
pub fn write<I: Serialize>(
    out: &mut impl Write,
    printed: &super::Printed<'_, I>,
    periodic: bool,
) -> io::Result<()> {
    let json = JsonReport {
        rows: printed.report,
        services: &printed.report.services,
        behind_vips: &printed.report.behind_vips,
        input: printed.input,
        counters: &printed.report.counters,
        error: printed.error.as_deref(),
        interrupted: printed.interrupted,
        span: printed.coverage.span.map(|span| JsonSpan {
            start: humantime::format_rfc3339_millis(span.start.to_system_time()).to_string(),
            end: humantime::format_rfc3339_millis(span.end.to_system_time()).to_string(),
            duration_s: span.duration().as_secs_f64(),
        }),
        peak_rss_kib: super::peak_rss_kib(),
        window: printed.report.window.map(|w| JsonWindow {
            width_s: w.width_nanos as f64 / 1e9,
            verdicts_since: w
                .since
                .map(|t| humantime::format_rfc3339_millis(t.to_system_time()).to_string()),
        }),
    };
    if periodic {
        serde_json::to_writer(&mut *out, &json)?;
    } else {
        serde_json::to_writer_pretty(&mut *out, &json)?;
    }
    writeln!(out)
}
