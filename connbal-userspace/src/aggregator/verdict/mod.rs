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
    BackendLoad, Balance, BalanceCell, Check, Expectation, FailingBackend, Family, Finding,
    Incomplete, Judgement, Service, ServiceWindow, StaleBackend, Verdict,
};
pub use wording::{p_is, plural};

use super::backends::Row;
use super::client::Client;
use super::lookups::ServiceLookups;
use super::timeline::{AddressLog, Timeline};
use checks::{Facts, CHECKS};
use expectation::Candidates;
use std::sync::Arc;

/// The verdicts for one service whose backend addresses carried `loads`,
/// from its report rows (one per backend and port; the service keeps
/// them) and its lookups.
pub fn assess(
    (client, resolver): (Client, bool),
    name: Arc<str>,
    (loads, rows): (&[BackendLoad], Vec<Row>),
    lookups: Option<&ServiceLookups>,
    completeness: &Completeness,
) -> Service {
    let connections: u64 = loads.iter().map(|l| l.connections).sum();
    let family = family_used(loads);
    let (backends, backends_used) = (
        loads.len() as u64,
        loads.iter().filter(|l| l.connections > 0).count() as u64,
    );
    let in_family = |address| family.is_none_or(|f| Family::of(address) == f);
    let loads_in_family: Vec<BackendLoad>;
    let loads = if family.is_some() {
        loads_in_family = loads
            .iter()
            .copied()
            .filter(|l| in_family(l.address))
            .collect();
        &loads_in_family[..]
    } else {
        loads
    };
    let (lookup_count, within_ttl) = lookups.map_or((0, 0), ServiceLookups::counts);
    let ttl = lookups.and_then(ServiceLookups::ttl_range);
    let timeline = lookups.map(|l| &l.timeline);
    let mut logs = timeline.map(Timeline::addresses).unwrap_or_default();
    if family.is_some() {
        within_family(&mut logs, in_family);
    }
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
        family,
        local_server: lookups.and_then(ServiceLookups::only_local_server),
        resolver,
        first_choice: timeline.map(|t| t.first_choice).unwrap_or_default(),
    };
    let (shared_connections, shared_with) = (facts.shared_connections, facts.shared_with.to_vec());
    let mut verdicts: Vec<Verdict> = CHECKS
        .iter()
        .filter_map(|check| check(&facts))
        .map(|judgement| Verdict::from(&judgement))
        .collect();
    let ttl_unsure = checks::ttl_depends_on_an_earlier_answer(&facts);
    completeness.mark(&mut verdicts, lookups.filter(|_| ttl_unsure));
    let balance = facts.balance;
    let balance_cells = facts
        .candidates
        .cell_backends
        .iter()
        .zip(&facts.candidates.cells)
        .map(|(&backend, &(connections, expected))| BalanceCell {
            backend,
            connections,
            expected,
        })
        .collect();
    Service {
        client,
        name,
        asked_as: lookups.map(|l| l.asked_as.clone()).unwrap_or_default(),
        rows,
        pids: Vec::new(),
        more_pids: false,
        backends,
        backends_used,
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
        family_used: family,
        resolver,
        balance,
        balance_cells,
        verdicts,
        window: None,
    }
}

/// The one family a dual-stack service's connections all went to. A
/// client following RFC 6724 (curl, getaddrinfo's sorting) uses IPv6 when
/// it can and never the IPv4 backends: judging it over both families calls
/// every dual-stack service broken.
fn family_used(loads: &[BackendLoad]) -> Option<Family> {
    let mut offered = loads.iter().map(|l| Family::of(l.address));
    let first = offered.next()?;
    if offered.all(|f| f == first) {
        return None;
    }
    let mut used = loads
        .iter()
        .filter(|l| l.connections > 0)
        .map(|l| Family::of(l.address));
    let only = used.next()?;
    used.all(|f| f == only).then_some(only)
}

/// Keeps the logs of the family used, their expected counts scaled so that
/// they add up to the connections made, as choosing within the family
/// would have spread them. Exact when each answer held both families in
/// the same proportion (a dual-stack name's usual A and AAAA sets).
fn within_family(logs: &mut Vec<AddressLog>, in_family: impl Fn(std::net::IpAddr) -> bool) {
    logs.retain(|l| in_family(l.address));
    let expected: f64 = logs.iter().map(|l| l.expected).sum();
    let observed: u64 = logs.iter().map(|l| l.observed).sum();
    if expected > 0.0 {
        let scale = observed as f64 / expected;
        for log in logs {
            log.expected *= scale;
        }
    }
}

/// What the whole report may be missing, which every verdict it touches
/// says (docs/semantics.md section 8, completeness).
#[derive(Clone, Copy, Debug, Default)]
pub struct Completeness {
    /// Records the source lost (a live trace's full ring buffer).
    pub records_lost: u64,
    /// Entries the aggregator's tables refused or evicted.
    pub tables_dropped: u64,
    /// Live: when the trace began.
    pub live_since: Option<crate::time::Timestamp>,
}

impl Completeness {
    /// `lookups` when the `ttl` finding depends on whether an answer given
    /// before a live trace began was still in force.
    fn mark(&self, verdicts: &mut [Verdict], lookups: Option<&ServiceLookups>) {
        // Which names an address counted for is not a count: nothing lost
        // changes that another name's answer held it.
        let counted = |v: &&mut Verdict| v.check != Check::SharedAddresses;
        if self.records_lost > 0 {
            let why = Incomplete::RecordsLost {
                records: self.records_lost,
            };
            verdicts
                .iter_mut()
                .filter(counted)
                .for_each(|v| v.mark_incomplete(why));
        }
        if self.tables_dropped > 0 {
            let why = Incomplete::TablesFull {
                entries: self.tables_dropped,
            };
            verdicts
                .iter_mut()
                .filter(counted)
                .for_each(|v| v.mark_incomplete(why));
        }
        let (Some(since), Some(lookups)) = (self.live_since, lookups) else {
            return;
        };
        let Some((_, ttl_max)) = lookups.ttl_range() else {
            return;
        };
        let before = lookups.first_answer.nanos_since(since) / 1_000_000_000;
        if before < u64::from(ttl_max) {
            let why = Incomplete::TraceBeganWithinTtl { secs: before };
            for v in verdicts.iter_mut().filter(|v| v.check == Check::Ttl) {
                v.mark_incomplete(why);
            }
        }
    }
}

fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}
