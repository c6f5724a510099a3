//! Per-service verdicts: what a person should conclude from the rows of one
//! (client, name). They are computed here, not by a printer, so that the
//! table, JSON and metrics all say the same thing.
//!
//! "Uneven" is judged against what uniform random choice (or, for SRV, a
//! choice weighted as RFC 2782 says) would give for that many connections,
//! with a chi-square goodness-of-fit test: 5/3/2/6 over four backends is
//! what random choice produces about half the time, and 3 connections over 4
//! backends cannot be judged at all.
//!
//! Each connection is judged against the answer in force when it was made
//! (`timeline`): a client that follows DNS through a scale-down from four
//! addresses to two goes 1/1/9/9, and that is balanced.
//!
//! One file per job: `types` (the service, its statistics, each check's
//! structured `Judgement`), `expectation` (what random choice would do),
//! `statistics` (the chance of unused backends, the chi-square test),
//! `checks` (the one list of checks, each returning a judgement) and
//! `wording` (the English, written from the judgement).

mod checks;
mod expectation;
mod statistics;
#[cfg(test)]
mod tests;
mod types;
mod wording;

pub use statistics::{chance_of_unused, SIGNIFICANCE};
pub use types::{
    BackendLoad, Balance, Check, Expectation, FailingBackend, Finding, Judgement, Service,
    StaleBackend, Verdict,
};
pub use wording::plural;

use super::backends::Row;
use super::client::Client;
use super::lookups::ServiceLookups;
use super::timeline::Timeline;
use checks::{Facts, CHECKS};
use expectation::Candidates;
use std::sync::Arc;

/// The verdicts for one service whose backend addresses carried `loads`,
/// from its report rows (one per backend and port; the service keeps
/// them) and its lookups.
pub fn assess(
    client: Client,
    name: Arc<str>,
    loads: &[BackendLoad],
    rows: Vec<Row>,
    lookups: Option<&ServiceLookups>,
) -> Service {
    let connections: u64 = loads.iter().map(|l| l.connections).sum();
    let (lookup_count, within_ttl) = lookups.map_or((0, 0), ServiceLookups::counts);
    let ttl = lookups.and_then(ServiceLookups::ttl_range);
    let timeline = lookups.map(|l| &l.timeline);
    let logs = timeline.map(Timeline::addresses).unwrap_or_default();
    let candidates = Candidates::of(loads, timeline.filter(|t| !t.incomplete), &logs);
    let answer_sets = timeline.map_or(0, |t| t.sets);
    let late = timeline.map(|t| t.late).unwrap_or_default();
    let stale_backends: Vec<StaleBackend> = logs
        .iter()
        .filter(|l| l.stale > 0)
        .map(|l| StaleBackend {
            address: l.address,
            connections: l.stale,
            max_secs_after_expiry: secs(l.stale_max_nanos),
        })
        .collect();
    let facts = Facts {
        loads,
        rows: &rows,
        balance: statistics::balance(&candidates),
        candidates,
        connections,
        lookups: lookup_count,
        lookups_within_ttl: within_ttl,
        ttl,
        late_connections: late.connections,
        late_max_secs: secs(late.max_nanos),
        answer_sets,
        stale_backends: &stale_backends,
        shared_connections: lookups.map_or(0, |l| l.shared_connections),
        shared_with: lookups.map_or(&[], |l| &l.shared_with),
    };
    let (shared_connections, shared_with) = (facts.shared_connections, facts.shared_with.to_vec());
    let verdicts = CHECKS
        .iter()
        .filter_map(|check| check(&facts))
        .map(|judgement| Verdict::from(&judgement))
        .collect();
    let balance = facts.balance;
    Service {
        client,
        name,
        rows,
        pids: Vec::new(),
        more_pids: false,
        backends: loads.len() as u64,
        backends_used: loads.iter().filter(|l| l.connections > 0).count() as u64,
        connections,
        lookups: lookup_count,
        lookups_within_ttl: within_ttl,
        ttl_min_secs: ttl.map(|t| t.0),
        ttl_max_secs: ttl.map(|t| t.1),
        answer_sets,
        connections_after_expiry: late.connections,
        max_secs_after_expiry: (late.connections > 0).then(|| secs(late.max_nanos)),
        stale_backends,
        shared_connections,
        shared_with,
        balance,
        verdicts,
    }
}

fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}
