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

use super::backends::{Row, SrvPreference};
use super::client::Client;
use super::lookups::ServiceLookups;
use super::timeline::{AddressLog, Timeline};
use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF};
use std::net::IpAddr;
use std::sync::Arc;

/// Below this probability a spread (or an unused backend) is called
/// unlikely to be chance.
pub const SIGNIFICANCE: f64 = 0.01;
/// The chi-square approximation needs enough expected connections per
/// backend; below this the balance is not judged.
const MIN_EXPECTED_PER_BACKEND: f64 = 1.0;

/// One backend address of a service, with its connections over all ports.
#[derive(Clone, Copy, Debug)]
pub struct BackendLoad {
    pub address: IpAddr,
    pub connections: u64,
    pub srv: Option<SrvPreference>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    pub client: Client,
    pub name: Arc<str>,
    /// The service's report rows (one per backend and port), in report
    /// order. JSON lists them apart, under `rows`.
    #[serde(skip)]
    pub rows: Vec<Row>,
    /// Processes seen for an owner client (a few; none for clients known
    /// by address).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    pub backends: u64,
    pub backends_used: u64,
    pub connections: u64,
    /// Lookups of the service (its most-asked question: A and AAAA asked
    /// together count once).
    pub lookups: u64,
    /// Lookups that came before the previous answer's TTL ran out.
    pub lookups_within_ttl: u64,
    pub ttl_min_secs: Option<u32>,
    pub ttl_max_secs: Option<u32>,
    /// Distinct address sets the answers in force offered, one after
    /// another (1: the answer never changed).
    pub answer_sets: u64,
    /// Connection attempts made after the whole answer in force expired,
    /// with no new lookup, and how long after at most.
    pub connections_after_expiry: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_secs_after_expiry: Option<f64>,
    /// Addresses connected to after DNS stopped offering them and the last
    /// answer holding them expired.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_backends: Vec<StaleBackend>,
    /// Present when the balance could be judged.
    pub balance: Option<Balance>,
    pub verdicts: Vec<Verdict>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaleBackend {
    pub address: IpAddr,
    pub connections: u64,
    pub max_secs_after_expiry: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Balance {
    /// What the spread was compared with.
    pub expected: Expectation,
    /// Judged against each connection's answer in force, when the
    /// answers changed.
    pub over_answers_in_force: bool,
    pub chi_square: f64,
    /// Backends in the test, after pooling those expected to get less than
    /// one connection.
    pub degrees_of_freedom: u64,
    /// Probability of a spread at least this uneven under `expected`.
    pub p_value: f64,
    pub max_share: f64,
    pub min_share: f64,
    pub coefficient_of_variation: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// Every backend equally likely.
    Uniform,
    /// Backends of the best SRV priority, in proportion to their weights.
    SrvWeights,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub check: Check,
    pub finding: Finding,
    /// False when the finding is worth a person's attention.
    pub ok: bool,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    UnusedBackends,
    Balance,
    Ttl,
    SrvPriority,
    FailingBackends,
    StaleBackends,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    AllUsed,
    UnusedByChance,
    Unused,
    NoConnections,
    ConsistentWithRandom,
    TooFewToJudge,
    Uneven,
    SingleLookup,
    HonoursTtl,
    ResolvesBeforeEveryConnection,
    ReresolvesWithinTtl,
    DoesNotReresolve,
    PriorityHonoured,
    PriorityIgnored,
    AllAnswered,
    Failing,
    NoneStale,
    Stale,
}

/// The verdicts for one service whose backend addresses carried `loads`
/// (its rows are the caller's to add).
pub fn assess(
    client: Client,
    name: Arc<str>,
    loads: &[BackendLoad],
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
    let mut verdicts = Vec::new();
    verdicts.push(unused_verdict(&candidates, connections));
    let balance = balance(&candidates);
    if let Some(v) = balance_verdict(&candidates, balance.as_ref()) {
        verdicts.push(v);
    }
    let ttl_facts = TtlFacts {
        lookups: lookup_count,
        within_ttl,
        connections,
        ttl,
        late_connections: late.connections,
        late_max_secs: secs(late.max_nanos),
    };
    if let Some(v) = ttl_verdict(&ttl_facts) {
        verdicts.push(v);
    }
    if let Some(v) = stale_verdict(&stale_backends, answer_sets) {
        verdicts.push(v);
    }
    if let Some(v) = srv_verdict(loads, connections) {
        verdicts.push(v);
    }
    Service {
        client,
        name,
        rows: Vec::new(),
        pids: Vec::new(),
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
        balance,
        verdicts,
    }
}

/// The backends a well-behaved client chooses among, with the probability
/// each would get a connection.
struct Candidates {
    expectation: Expectation,
    /// (connections, probability) for every backend in the choice, zero
    /// probability included (an SRV weight of 0 beside non-zero ones).
    loads: Vec<(u64, f64)>,
    /// (connections, expected connections) of every backend random choice
    /// could pick: the cells of the chi-square test.
    cells: Vec<(u64, f64)>,
    /// The connections random choice is judged over.
    judged: u64,
    /// More than one answer set was in force over the run.
    over_answers_in_force: bool,
    /// "priority-10 " for SRV services, "" otherwise.
    qualifier: String,
}

impl Candidates {
    /// From the answers in force at each connection when the timeline is
    /// whole and judged one, otherwise from the backends' last preferences.
    fn of(loads: &[BackendLoad], timeline: Option<&Timeline>, logs: &[AddressLog]) -> Self {
        let judged: f64 = logs.iter().map(|l| l.expected).sum();
        match timeline {
            Some(t) if judged > 0.0 => Self::over_time(loads, t, logs, judged),
            _ => Self::from_preferences(loads),
        }
    }

    fn over_time(loads: &[BackendLoad], t: &Timeline, logs: &[AddressLog], judged: f64) -> Self {
        let log_of = |address| logs.iter().find(|l| l.address == address);
        let expectation = if loads.iter().any(|l| l.srv.is_some()) {
            Expectation::SrvWeights
        } else {
            Expectation::Uniform
        };
        // "priority-10 backends" while the targets chosen among kept one
        // priority, as they do unless a failover changed the SRV set.
        let mut priorities: Vec<u16> = loads
            .iter()
            .filter(|l| log_of(l.address).is_some_and(|g| g.expected > 0.0))
            .filter_map(|l| l.srv.map(|s| s.priority))
            .collect();
        priorities.sort_unstable();
        priorities.dedup();
        let qualifier = match priorities[..] {
            [only] => format!("priority-{only} "),
            _ => String::new(),
        };
        let cells: Vec<(u64, f64)> = logs
            .iter()
            .filter(|l| l.expected > 0.0)
            .map(|l| (l.observed, l.expected))
            .collect();
        Self {
            expectation,
            judged: cells.iter().map(|&(c, _)| c).sum(),
            cells,
            // "Weighted by the connections made while each was offered."
            // A backend offered only while no connection was made never had
            // a chance: it is not among the unused.
            loads: loads
                .iter()
                .map(|l| {
                    let p = log_of(l.address).map_or(0.0, |g| g.expected / judged);
                    (l.connections, p)
                })
                .filter(|&(c, p)| c > 0 || p > 0.0)
                .collect(),
            over_answers_in_force: t.sets > 1,
            qualifier,
        }
    }

    fn from_preferences(loads: &[BackendLoad]) -> Self {
        let best = loads.iter().filter_map(|l| l.srv).map(|s| s.priority).min();
        let with_cells = |expectation, loads: Vec<(u64, f64)>, qualifier| {
            let n: u64 = loads.iter().map(|&(c, _)| c).sum();
            let cells = loads
                .iter()
                .filter(|&&(_, p)| p > 0.0)
                .map(|&(c, p)| (c, p * n as f64))
                .collect();
            Self {
                expectation,
                loads,
                cells,
                judged: n,
                over_answers_in_force: false,
                qualifier,
            }
        };
        let Some(best) = best else {
            let p = 1.0 / loads.len().max(1) as f64;
            return with_cells(
                Expectation::Uniform,
                loads.iter().map(|l| (l.connections, p)).collect(),
                String::new(),
            );
        };
        let chosen: Vec<(u64, u16)> = loads
            .iter()
            .filter_map(|l| {
                l.srv
                    .filter(|s| s.priority == best)
                    .map(|s| (l.connections, s.weight))
            })
            .collect();
        let total_weight: u64 = chosen.iter().map(|&(_, w)| u64::from(w)).sum();
        // RFC 2782: with every weight 0 the choice is uniform.
        let probability = |w: u16| {
            if total_weight == 0 {
                1.0 / chosen.len() as f64
            } else {
                f64::from(w) / total_weight as f64
            }
        };
        with_cells(
            Expectation::SrvWeights,
            chosen.iter().map(|&(c, w)| (c, probability(w))).collect(),
            format!("priority-{best} "),
        )
    }

    /// Backends random choice could pick.
    fn choosable(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.loads.iter().copied().filter(|&(_, p)| p > 0.0)
    }
}

fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

fn verdict(check: Check, finding: Finding, ok: bool, text: String) -> Verdict {
    Verdict {
        check,
        finding,
        ok,
        text,
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn unused_verdict(candidates: &Candidates, all_connections: u64) -> Verdict {
    let total = candidates.loads.len() as u64;
    let q = &candidates.qualifier;
    if all_connections == 0 {
        return verdict(
            Check::UnusedBackends,
            Finding::NoConnections,
            false,
            format!(
                "no connection to any of the {} it was given",
                plural(total, "backend", "backends")
            ),
        );
    }
    let unused = candidates.loads.iter().filter(|&&(c, _)| c == 0).count() as u64;
    if unused == 0 {
        let text = match total {
            1 => format!("its one {q}backend got connections"),
            2 => format!("both {q}backends got connections"),
            _ => format!("all {total} {q}backends got connections"),
        };
        return verdict(Check::UnusedBackends, Finding::AllUsed, true, text);
    }
    let n = candidates.judged;
    let probabilities: Vec<f64> = candidates.choosable().map(|(_, p)| p).collect();
    // Unused backends random choice could have picked (an SRV weight of 0
    // beside non-zero ones is never picked, so its idleness proves nothing).
    let unused_choosable = candidates.choosable().filter(|&(c, _)| c == 0).count();
    let chance = chance_of_unused(&probabilities, n, unused_choosable);
    let head = format!("{unused} of {total} {q}backends got no connection");
    let how_many = if unused_choosable == 1 {
        "one".to_string()
    } else {
        format!("at least {unused_choosable}")
    };
    let over = plural(n, "connection", "connections");
    // Fewer connections than backends leave some unused for certain.
    let odds = if n + (unused_choosable as u64) <= probabilities.len() as u64 {
        format!("random choice over {over} always leaves {how_many} unused")
    } else {
        format!(
            "random choice over {over} leaves {how_many} unused with chance {}",
            percent_bound(chance)
        )
    };
    if chance >= SIGNIFICANCE {
        verdict(
            Check::UnusedBackends,
            Finding::UnusedByChance,
            true,
            format!("{head}; plausible by chance: {odds}"),
        )
    } else {
        verdict(
            Check::UnusedBackends,
            Finding::Unused,
            false,
            format!("{head}; not chance: {odds}"),
        )
    }
}

/// Subsets up to this many backends are summed exactly (2^12 terms).
const EXACT_SUBSETS_UP_TO: usize = 12;
/// The uniform case is exact by dynamic programming up to this much work
/// (connections × backends); beyond it the chance is vanishingly small and
/// the bound is as good.
const EXACT_UNIFORM_WORK: u64 = 2_000_000;

/// The chance that `n` independent choices, backend i with probability
/// `probabilities[i]`, leave at least `m` backends unused.
///
/// Exact where that is cheap: for a handful of backends by
/// inclusion–exclusion over the subsets, for more with equal probabilities
/// by the occupancy distribution (a recurrence that, unlike the alternating
/// sum, does not cancel away its precision). Otherwise the first
/// Bonferroni term, which bounds it from above: the sum over m-subsets of
/// the chance that all of the subset stays unused, at most C(k, m) times
/// that of the m least likely backends.
pub fn chance_of_unused(probabilities: &[f64], n: u64, m: usize) -> f64 {
    let k = probabilities.len();
    if m == 0 {
        return 1.0;
    }
    if m >= k {
        return if n == 0 { 1.0 } else { 0.0 };
    }
    let uniform = probabilities
        .iter()
        .all(|&p| (p - probabilities[0]).abs() < 1e-12);
    if k <= EXACT_SUBSETS_UP_TO {
        // P(at least m) = Σ_{j≥m} (-1)^(j-m) C(j-1, m-1) S_j, with S_j the
        // sum over j-subsets of the chance that all of them stay unused.
        let mut s = vec![0.0f64; k + 1];
        for subset in 1u32..(1 << k) {
            let size = subset.count_ones() as usize;
            if size < m {
                continue;
            }
            let covered: f64 = (0..k)
                .filter(|i| subset & (1 << i) != 0)
                .map(|i| probabilities[i])
                .sum();
            s[size] += (1.0 - covered).max(0.0).powf(n as f64);
        }
        let total: f64 = (m..=k)
            .map(|j| {
                let sign = if (j - m) % 2 == 0 { 1.0 } else { -1.0 };
                sign * binomial(j - 1, m - 1) * s[j]
            })
            .sum();
        return total.clamp(0.0, 1.0);
    }
    if uniform && n.saturating_mul(k as u64) <= EXACT_UNIFORM_WORK {
        // used[d]: chance that exactly d distinct backends are used so far.
        let mut used = vec![0.0f64; k + 1];
        used[0] = 1.0;
        for _ in 0..n {
            for d in (0..=k).rev() {
                let stay = used[d] * d as f64 / k as f64;
                let from_below = if d > 0 {
                    used[d - 1] * (k - d + 1) as f64 / k as f64
                } else {
                    0.0
                };
                used[d] = stay + from_below;
            }
        }
        return used[..=k - m].iter().sum::<f64>().clamp(0.0, 1.0);
    }
    let mut sorted = probabilities.to_vec();
    sorted.sort_by(f64::total_cmp);
    let least: f64 = sorted[..m].iter().sum();
    (binomial(k, m) * (1.0 - least).max(0.0).powf(n as f64)).min(1.0)
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Backends whose connection attempts were refused or went unanswered,
/// from a service's rows; `None` when it saw no attempt.
pub fn failing_verdict(rows: &[Row]) -> Option<Verdict> {
    let outcomes = |r: &Row| r.outcomes.unwrap_or_default();
    if rows.iter().all(|r| r.outcomes.is_none()) {
        return None;
    }
    let attempts: u64 = rows
        .iter()
        .map(|r| outcomes(r).answered + outcomes(r).failed())
        .sum();
    if attempts == 0 {
        return None;
    }
    let mut failing = Vec::new();
    let mut failed = 0;
    for row in rows.iter().filter(|r| outcomes(r).failed() > 0) {
        let o = outcomes(row);
        let tried = o.answered + o.failed();
        let how = match (o.refused, o.unanswered) {
            (r, 0) => format!("refused {r} of {tried}"),
            (0, u) => format!("left {u} of {tried} unanswered"),
            (r, u) => format!("refused {r} and left {u} unanswered of {tried}"),
        };
        let port = row.port.map_or_else(|| "?".to_string(), |p| p.to_string());
        let backend = match row.backend {
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            v4 => format!("{v4}:{port}"),
        };
        failing.push(format!("{backend} {how}"));
        failed += o.failed();
    }
    if failing.is_empty() {
        return Some(verdict(
            Check::FailingBackends,
            Finding::AllAnswered,
            true,
            if attempts == 1 {
                "its one connection attempt was answered".to_string()
            } else {
                format!("all {attempts} connection attempts were answered")
            },
        ));
    }
    let answered_elsewhere = rows
        .iter()
        .filter(|r| outcomes(r).failed() == 0)
        .map(|r| outcomes(r).answered)
        .sum::<u64>();
    let why = if answered_elsewhere > 0 {
        format!(
            "; the client reached the other backends {}, so part of their share is failover, not choice",
            plural(answered_elsewhere, "time", "times")
        )
    } else if failed == attempts {
        "; no attempt was answered".to_string()
    } else {
        String::new()
    };
    Some(verdict(
        Check::FailingBackends,
        Finding::Failing,
        false,
        format!("{}{why}", failing.join("; ")),
    ))
}

/// A chance as a percentage, and below 0.01% in scientific notation, so
/// that 6·10⁻⁶ and 10⁻³⁰ read differently.
fn percent_bound(p: f64) -> String {
    if p >= 0.0001 {
        format!("{:.2}%", p * 100.0)
    } else if p > 0.0 {
        format!("{p:.1e}")
    } else {
        "0".to_string()
    }
}

/// Chi-square over the cells, after pooling every cell expected to get
/// less than one connection, and, while the pool itself is expected to get
/// less, the least expected of the rest: 1/1/9/9 after a scale-down has two
/// cells expected at 0.5 each, which pool into one.
fn balance(candidates: &Candidates) -> Option<Balance> {
    let mut cells = candidates.cells.clone();
    let n: u64 = cells.iter().map(|&(c, _)| c).sum();
    if cells.len() < 2 || n == 0 {
        return None;
    }
    cells.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut pooled: Vec<(u64, f64)> = Vec::with_capacity(cells.len());
    let mut pool: Option<(u64, f64)> = None;
    for (observed, expected) in cells {
        let pool_short = pool.is_some_and(|(_, e)| e < MIN_EXPECTED_PER_BACKEND);
        if expected < MIN_EXPECTED_PER_BACKEND || pool_short {
            let (o, e) = pool.unwrap_or_default();
            pool = Some((o + observed, e + expected));
        } else {
            pooled.push((observed, expected));
        }
    }
    pooled.extend(pool);
    if pooled.len() < 2 || pooled.iter().any(|&(_, e)| e < MIN_EXPECTED_PER_BACKEND) {
        return None;
    }
    let chi_square: f64 = pooled
        .iter()
        .map(|&(c, expected)| (c as f64 - expected).powi(2) / expected)
        .sum();
    let degrees_of_freedom = pooled.len() as u64 - 1;
    let p_value = ChiSquared::new(degrees_of_freedom as f64)
        .map(|d| d.sf(chi_square))
        .unwrap_or(f64::NAN);
    let n_f = n as f64;
    let shares: Vec<f64> = candidates
        .cells
        .iter()
        .map(|&(c, _)| c as f64 / n_f)
        .collect();
    let mean = 1.0 / shares.len() as f64;
    let variance = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / shares.len() as f64;
    Some(Balance {
        expected: candidates.expectation,
        over_answers_in_force: candidates.over_answers_in_force,
        chi_square,
        degrees_of_freedom,
        p_value,
        max_share: shares.iter().copied().fold(0.0, f64::max),
        min_share: shares.iter().copied().fold(1.0, f64::min),
        coefficient_of_variation: variance.sqrt() / mean,
    })
}

fn balance_verdict(candidates: &Candidates, balance: Option<&Balance>) -> Option<Verdict> {
    let choosable = candidates.cells.len() as u64;
    let n: u64 = candidates.cells.iter().map(|&(c, _)| c).sum();
    if choosable < 2 || n == 0 {
        return None;
    }
    let against = match (candidates.expectation, candidates.over_answers_in_force) {
        (Expectation::Uniform, false) => "random choice",
        (Expectation::SrvWeights, false) => "weighted random choice (SRV weights)",
        (Expectation::Uniform, true) => {
            "random choice among the addresses in force at each connection"
        }
        (Expectation::SrvWeights, true) => {
            "weighted random choice (SRV weights) among the targets in force at each connection"
        }
    };
    let Some(b) = balance else {
        return Some(verdict(
            Check::Balance,
            Finding::TooFewToJudge,
            true,
            format!(
                "{} over {} backends: too few to judge the spread",
                plural(n, "connection", "connections"),
                choosable
            ),
        ));
    };
    let mut shares = format!(
        "shares {:.0}% to {:.0}%",
        b.min_share * 100.0,
        b.max_share * 100.0
    );
    if candidates.over_answers_in_force {
        // The rows' shares count every connection; these count those made
        // to addresses in force, against what the answers made expected.
        let expected = candidates.cells.iter().map(|&(_, e)| e / n as f64);
        let (low, high) = expected.fold((1.0f64, 0.0f64), |(l, h), e| (l.min(e), h.max(e)));
        shares = format!(
            "{} to addresses in force, {shares} against {:.0}% to {:.0}% expected",
            plural(n, "connection", "connections"),
            low * 100.0,
            high * 100.0
        );
    }
    Some(if b.p_value < SIGNIFICANCE {
        verdict(
            Check::Balance,
            Finding::Uneven,
            false,
            format!(
                "uneven: {shares}; {against} gives a spread this uneven with p = {}",
                p_text(b.p_value)
            ),
        )
    } else {
        verdict(
            Check::Balance,
            Finding::ConsistentWithRandom,
            true,
            format!(
                "spread consistent with {against} ({shares}, p = {})",
                p_text(b.p_value)
            ),
        )
    })
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

fn ttl_text(ttl: Option<(u32, u32)>) -> String {
    match ttl {
        Some((lo, hi)) if lo == hi => format!("TTL {lo} s"),
        Some((lo, hi)) => format!("TTL {lo}-{hi} s"),
        None => "TTL unknown".to_string(),
    }
}

/// What the `ttl` check weighs.
struct TtlFacts {
    lookups: u64,
    within_ttl: u64,
    connections: u64,
    ttl: Option<(u32, u32)>,
    /// Attempts made after the whole answer in force expired.
    late_connections: u64,
    late_max_secs: f64,
}

fn ttl_verdict(f: &TtlFacts) -> Option<Verdict> {
    let (lookups, within_ttl, connections) = (f.lookups, f.within_ttl, f.connections);
    let ttl = ttl_text(f.ttl);
    if lookups > 0 && f.late_connections > 0 {
        let how = if lookups == 1 {
            "this client does not re-resolve".to_string()
        } else {
            format!("this client re-resolves too rarely ({lookups} lookups)")
        };
        return Some(verdict(
            Check::Ttl,
            Finding::DoesNotReresolve,
            false,
            format!(
                "{} up to {} after the answer expired ({ttl}): {how}",
                plural(f.late_connections, "connection", "connections"),
                duration_text(f.late_max_secs)
            ),
        ));
    }
    match (lookups, within_ttl) {
        (0, _) => None,
        (1, _) => Some(verdict(
            Check::Ttl,
            Finding::SingleLookup,
            true,
            format!("1 lookup ({ttl})"),
        )),
        (_, 0) => Some(verdict(
            Check::Ttl,
            Finding::HonoursTtl,
            true,
            format!("honours the TTL: {lookups} lookups, none before the previous answer expired ({ttl})"),
        )),
        _ if connections >= 2 && lookups >= connections && 2 * within_ttl >= lookups - 1 => {
            Some(verdict(
                Check::Ttl,
                Finding::ResolvesBeforeEveryConnection,
                false,
                format!(
                    "resolves before every connection: {lookups} lookups for {}, {within_ttl} of them within the {ttl}",
                    plural(connections, "connection", "connections")
                ),
            ))
        }
        _ => Some(verdict(
            Check::Ttl,
            Finding::ReresolvesWithinTtl,
            false,
            format!(
                "re-resolves within the TTL: {within_ttl} of {lookups} lookups came before the previous answer expired ({ttl}), for {}",
                plural(connections, "connection", "connections")
            ),
        )),
    }
}

/// Seconds for a person: whole from 10 s up, one decimal below.
fn duration_text(secs: f64) -> String {
    if secs >= 10.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// Connections to addresses DNS had stopped offering; `None` while the
/// answers never changed (no address was ever withdrawn).
fn stale_verdict(stale: &[StaleBackend], answer_sets: u64) -> Option<Verdict> {
    if stale.is_empty() {
        return (answer_sets > 1).then(|| {
            verdict(
                Check::StaleBackends,
                Finding::NoneStale,
                true,
                format!(
                    "{answer_sets} answer sets; no connection went to an address after the last answer holding it expired"
                ),
            )
        });
    }
    let each: Vec<String> = stale
        .iter()
        .map(|s| {
            format!(
                "{}: {} up to {} after the last answer holding it expired",
                s.address,
                plural(s.connections, "connection", "connections"),
                duration_text(s.max_secs_after_expiry)
            )
        })
        .collect();
    Some(verdict(
        Check::StaleBackends,
        Finding::Stale,
        false,
        format!(
            "connections to addresses DNS no longer offers: {}",
            each.join("; ")
        ),
    ))
}

fn srv_verdict(loads: &[BackendLoad], connections: u64) -> Option<Verdict> {
    let priorities = loads.iter().filter_map(|l| l.srv).map(|s| s.priority);
    let best = priorities.clone().min()?;
    let levels = {
        let mut all: Vec<u16> = priorities.collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    };
    if connections == 0 {
        return None;
    }
    let outside: u64 = loads
        .iter()
        .filter(|l| l.srv.is_some_and(|s| s.priority > best))
        .map(|l| l.connections)
        .sum();
    Some(if outside == 0 {
        let detail = if levels == 1 {
            format!(" (all targets share priority {best})")
        } else {
            String::new()
        };
        verdict(
            Check::SrvPriority,
            Finding::PriorityHonoured,
            true,
            format!(
                "SRV priority honoured: {} to priority-{best} targets{detail}",
                match connections {
                    1 => "the connection went".to_string(),
                    2 => "both connections went".to_string(),
                    n => format!("all {n} connections went"),
                }
            ),
        )
    } else {
        verdict(
            Check::SrvPriority,
            Finding::PriorityIgnored,
            false,
            format!(
                "SRV priority not honoured: {outside} of {connections} connections went to lower-preference targets than priority {best} (fine only if those were down)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::Timestamp;

    fn loads(conns: &[u64]) -> Vec<BackendLoad> {
        conns
            .iter()
            .enumerate()
            .map(|(i, &connections)| BackendLoad {
                address: IpAddr::from([10, 0, 0, i as u8 + 1]),
                connections,
                srv: None,
            })
            .collect()
    }

    fn srv_loads(spec: &[(u64, u16, u16)]) -> Vec<BackendLoad> {
        spec.iter()
            .enumerate()
            .map(|(i, &(connections, priority, weight))| BackendLoad {
                address: IpAddr::from([10, 0, 0, i as u8 + 1]),
                connections,
                srv: Some(SrvPreference { priority, weight }),
            })
            .collect()
    }

    fn assess_plain(conns: &[u64]) -> Service {
        assess(
            "10.0.0.1".parse().unwrap(),
            Arc::from("web."),
            &loads(conns),
            None,
        )
    }

    fn verdict_of(s: &Service, check: Check) -> Option<&Verdict> {
        s.verdicts.iter().find(|v| v.check == check)
    }

    fn finding(s: &Service, check: Check) -> Option<Finding> {
        verdict_of(s, check).map(|v| v.finding)
    }

    #[test]
    fn the_worked_examples_5_3_2_6_is_what_random_choice_gives() {
        let s = assess_plain(&[5, 3, 2, 6]);
        let b = s.balance.as_ref().unwrap();
        assert!((b.chi_square - 2.5).abs() < 1e-9);
        // P(chi2 with 3 df >= 2.5) = 0.4753
        assert!((b.p_value - 0.4753).abs() < 1e-3, "{}", b.p_value);
        assert_eq!(
            finding(&s, Check::Balance),
            Some(Finding::ConsistentWithRandom)
        );
        assert_eq!(finding(&s, Check::UnusedBackends), Some(Finding::AllUsed));
        assert!((b.max_share - 6.0 / 16.0).abs() < 1e-9);
        assert!((b.min_share - 2.0 / 16.0).abs() < 1e-9);
    }

    #[test]
    fn a_lopsided_spread_is_uneven() {
        let s = assess_plain(&[40, 2, 3, 1]);
        assert_eq!(finding(&s, Check::Balance), Some(Finding::Uneven));
        assert!(
            !s.verdicts
                .iter()
                .find(|v| v.check == Check::Balance)
                .unwrap()
                .ok
        );
    }

    #[test]
    fn three_connections_over_four_backends_is_not_called_unfair() {
        let s = assess_plain(&[1, 1, 1, 0]);
        assert_eq!(finding(&s, Check::Balance), Some(Finding::TooFewToJudge));
        assert_eq!(
            finding(&s, Check::UnusedBackends),
            Some(Finding::UnusedByChance)
        );
        assert!(s.verdicts.iter().all(|v| v.ok), "{:?}", s.verdicts);
        assert!(s.balance.is_none());
    }

    #[test]
    fn an_unused_backend_after_many_connections_is_flagged() {
        let s = assess_plain(&[20, 20, 20, 0, 0]);
        let v = verdict_of(&s, Check::UnusedBackends).unwrap();
        assert_eq!(v.finding, Finding::Unused);
        assert!(
            v.text.starts_with("2 of 5 backends got no connection"),
            "{}",
            v.text
        );
        assert_eq!(s.backends_used, 3);
    }

    /// The case: 20 connections went 10/10/0/0. The chance that
    /// random choice leaves two of four unused is C(4,2)·(1/2)^20 less the
    /// triple overlaps, 2·C(4,3)·(1/4)^20: about 5.7·10⁻⁶, not the 1.3% of
    /// "some one unused".
    #[test]
    fn two_unused_of_four_after_twenty_is_not_chance() {
        let expected = 6.0 * 0.5f64.powi(20) - 2.0 * 4.0 * 0.25f64.powi(20);
        let chance = chance_of_unused(&[0.25; 4], 20, 2);
        assert!((chance - expected).abs() < 1e-15, "{chance} vs {expected}");
        let s = assess_plain(&[10, 10, 0, 0]);
        let v = verdict_of(&s, Check::UnusedBackends).unwrap();
        assert_eq!(v.finding, Finding::Unused);
        assert_eq!(
            v.text,
            "2 of 4 backends got no connection; not chance: random choice over 20 connections leaves at least 2 unused with chance 5.7e-6"
        );
    }

    /// The mirror image: one unused of four after 12 connections happens
    /// 4·(3/4)^12 − 6·(1/2)^12 + 4·(1/4)^12 ≈ 12.5% of the time.
    #[test]
    fn one_unused_of_four_after_twelve_is_plausible() {
        let expected = 4.0 * 0.75f64.powi(12) - 6.0 * 0.5f64.powi(12) + 4.0 * 0.25f64.powi(12);
        assert!((chance_of_unused(&[0.25; 4], 12, 1) - expected).abs() < 1e-12);
        let s = assess_plain(&[5, 4, 3, 0]);
        let v = verdict_of(&s, Check::UnusedBackends).unwrap();
        assert_eq!(v.finding, Finding::UnusedByChance);
        assert!(v.ok);
        assert!(
            v.text.ends_with("leaves one unused with chance 12.52%"),
            "{}",
            v.text
        );
    }

    /// How often `n` random choices by `probabilities` left at least `m`
    /// backends unused in `trials` runs (xorshift from `seed`, so that a
    /// run can be repeated), with the tolerance that the simulation's
    /// standard error allows at `errors` of them.
    fn simulate_unused(
        probabilities: &[f64],
        (n, m): (u64, usize),
        (seed, trials): (u64, u32),
        errors: f64,
    ) -> (f64, f64) {
        let mut state = seed | 1;
        let mut hits = 0u32;
        for _ in 0..trials {
            let mut used = vec![false; probabilities.len()];
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let mut r = (state >> 11) as f64 / (1u64 << 53) as f64;
                let pick = probabilities
                    .iter()
                    .position(|&p| {
                        r -= p;
                        r < 0.0
                    })
                    .unwrap_or(probabilities.len() - 1);
                used[pick] = true;
            }
            if used.iter().filter(|u| !**u).count() >= m {
                hits += 1;
            }
        }
        let simulated = f64::from(hits) / f64::from(trials);
        let error = (simulated * (1.0 - simulated) / f64::from(trials)).sqrt();
        (simulated, errors * error)
    }

    /// Each way of computing the chance against a simulation of random
    /// choice (seeded, so the test is repeatable): subsets with weights,
    /// the uniform recurrence past 12 backends, and the bound beyond.
    #[test]
    fn the_unused_chance_matches_a_simulation() {
        let weights = |w: &[f64]| {
            let total: f64 = w.iter().sum();
            w.iter().map(|x| x / total).collect::<Vec<f64>>()
        };
        let cases: [(Vec<f64>, u64, usize, bool); 5] = [
            (vec![0.25; 4], 8, 1, true),
            (weights(&[1.0, 2.0, 3.0, 4.0]), 10, 1, true),
            (weights(&[5.0, 1.0, 1.0, 1.0, 1.0, 1.0]), 12, 2, true),
            (vec![1.0 / 14.0; 14], 30, 2, true),
            (
                weights(&[
                    1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0,
                ]),
                40,
                1,
                false,
            ),
        ];
        for (probabilities, n, m, exact) in cases {
            let (simulated, errors) = simulate_unused(
                &probabilities,
                (n, m),
                (0x9e37_79b9_7f4a_7c15, 200_000),
                4.0,
            );
            let computed = chance_of_unused(&probabilities, n, m);
            // Four standard errors of the simulation, and a floor.
            let tolerance = errors + 1e-4;
            if exact {
                assert!(
                    (computed - simulated).abs() <= tolerance,
                    "{probabilities:?} n={n} m={m}: computed {computed}, simulated {simulated}"
                );
            } else {
                assert!(
                    computed + tolerance >= simulated,
                    "the bound {computed} is below the simulated {simulated}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Random weights, connections and counts of unused: the exact
        /// chance agrees with a simulation of that choice.
        #[test]
        fn the_exact_unused_chance_agrees_with_simulation(
            weights in proptest::collection::vec(1u32..10, 2..7),
            n in 1u64..25,
            m_pick in 0usize..6,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let total: u32 = weights.iter().sum();
            let probabilities: Vec<f64> =
                weights.iter().map(|&w| f64::from(w) / f64::from(total)).collect();
            let m = 1 + m_pick % (probabilities.len() - 1);
            let (simulated, errors) = simulate_unused(&probabilities, (n, m), (seed, 20_000), 5.0);
            let computed = chance_of_unused(&probabilities, n, m);
            let tolerance = errors + 2e-3;
            proptest::prop_assert!(
                (computed - simulated).abs() <= tolerance,
                "{probabilities:?} n={n} m={m}: computed {computed}, simulated {simulated}"
            );
        }
    }

    #[test]
    fn lookups_without_connections_are_reported() {
        let s = assess_plain(&[0, 0]);
        assert_eq!(
            finding(&s, Check::UnusedBackends),
            Some(Finding::NoConnections)
        );
        assert_eq!(finding(&s, Check::Balance), None);
    }

    fn lookups(n: u64, gap_secs: u64, ttl: u32) -> ServiceLookups {
        let mut l = ServiceLookups::new(Arc::from("web."));
        for i in 0..n {
            l.record_ttl(
                (crate::aggregator::name::NameKey::for_test(7), 1),
                Timestamp::from_secs(1000 + i * gap_secs),
                ttl,
            );
        }
        l
    }

    fn ttl_finding(conns: &[u64], l: &ServiceLookups) -> (Finding, String) {
        let s = assess(
            "10.0.0.1".parse().unwrap(),
            Arc::from("web."),
            &loads(conns),
            Some(l),
        );
        let v = s.verdicts.iter().find(|v| v.check == Check::Ttl).unwrap();
        (v.finding, v.text.clone())
    }

    #[test]
    fn sixteen_lookups_for_sixteen_connections_within_the_ttl() {
        let (f, text) = ttl_finding(&[5, 3, 2, 6], &lookups(16, 1, 300));
        assert_eq!(f, Finding::ResolvesBeforeEveryConnection);
        assert_eq!(
            text,
            "resolves before every connection: 16 lookups for 16 connections, 15 of them within the TTL 300 s"
        );
    }

    #[test]
    fn lookups_spaced_beyond_the_ttl_honour_it() {
        let (f, _) = ttl_finding(&[5, 3, 2, 6], &lookups(16, 400, 300));
        assert_eq!(f, Finding::HonoursTtl);
        let (f, _) = ttl_finding(&[5, 3, 2, 6], &lookups(1, 1, 300));
        assert_eq!(f, Finding::SingleLookup);
    }

    #[test]
    fn a_few_early_lookups_for_many_connections_are_re_resolving() {
        let (f, _) = ttl_finding(&[50, 50], &lookups(4, 1, 300));
        assert_eq!(f, Finding::ReresolvesWithinTtl);
    }

    #[test]
    fn srv_priority_and_weights_set_the_expectation() {
        // Two priority-10 targets weighted 3:1, one priority-20 backup.
        let honoured = srv_loads(&[(30, 10, 75), (10, 10, 25), (0, 20, 50)]);
        let s = assess(
            "10.0.0.1".parse().unwrap(),
            Arc::from("_x._tcp."),
            &honoured,
            None,
        );
        assert_eq!(
            s.balance.as_ref().unwrap().expected,
            Expectation::SrvWeights
        );
        assert_eq!(
            finding(&s, Check::Balance),
            Some(Finding::ConsistentWithRandom),
            "{:?}",
            s.balance
        );
        assert_eq!(
            finding(&s, Check::SrvPriority),
            Some(Finding::PriorityHonoured)
        );
        // The unused backup is not an unused backend.
        assert_eq!(finding(&s, Check::UnusedBackends), Some(Finding::AllUsed));

        // Even 20/20 against 3:1 weights is uneven.
        let even = srv_loads(&[(20, 10, 75), (20, 10, 25)]);
        let s = assess(
            "10.0.0.1".parse().unwrap(),
            Arc::from("_x._tcp."),
            &even,
            None,
        );
        assert_eq!(finding(&s, Check::Balance), Some(Finding::Uneven));

        let ignored = srv_loads(&[(5, 10, 1), (5, 10, 1), (10, 20, 1)]);
        let s = assess(
            "10.0.0.1".parse().unwrap(),
            Arc::from("_x._tcp."),
            &ignored,
            None,
        );
        let v = s
            .verdicts
            .iter()
            .find(|v| v.check == Check::SrvPriority)
            .unwrap();
        assert_eq!(v.finding, Finding::PriorityIgnored);
        assert!(v.text.contains("10 of 20 connections"), "{}", v.text);
    }

    #[test]
    fn a_plain_service_has_no_srv_verdict() {
        let s = assess_plain(&[1, 1]);
        assert_eq!(finding(&s, Check::SrvPriority), None);
    }
}
