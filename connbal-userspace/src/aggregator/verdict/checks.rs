//! The checks: each reads the service's facts and returns its structured
//! finding, or nothing where it has nothing to say. `CHECKS` is the one
//! list `assess` runs, in the order the verdicts are shown; a new verdict
//! is a `Judgement` variant, a function here and its entry in the list.

use super::super::backends::Row;
use super::super::timeline::FirstChoice;
use super::expectation::Candidates;
use super::statistics::chance_of_unused;
use super::statistics::{chance_of_at_least, SIGNIFICANCE};
use super::types::{BackendLoad, Balance, FailingBackend, Family, Judgement, StaleBackend};
use std::sync::Arc;

/// What every check may read about one service.
pub(super) struct Facts<'a> {
    pub loads: &'a [BackendLoad],
    pub rows: &'a [Row],
    pub candidates: Candidates,
    pub balance: Option<Balance>,
    pub connections: u64,
    pub lookups: u64,
    pub lookups_within_ttl: u64,
    pub ttl: Option<(u32, u32)>,
    /// Attempts made after the whole answer in force expired, and how
    /// long after at most.
    pub late_connections: u64,
    pub late_max_secs: f64,
    pub answer_sets: u64,
    pub stale_backends: &'a [StaleBackend],
    pub shared_connections: u64,
    pub shared_with: &'a [Arc<str>],
    /// The one family a dual-stack service's client used; `loads` and
    /// `candidates` hold its backends only.
    pub family: Option<Family>,
    /// Every answer came from this resolver on the client's own host.
    pub local_server: Option<std::net::IpAddr>,
    /// The client answers DNS queries itself.
    pub resolver: bool,
    /// Where its attempts went in the order of the latest answer.
    pub first_choice: FirstChoice,
}

impl Facts<'_> {
    /// Connections to the backends judged (those of the family used, for a
    /// dual-stack client that used one).
    fn connections_in_family(&self) -> u64 {
        self.loads.iter().map(|l| l.connections).sum()
    }
}

pub(super) type CheckFn = fn(&Facts<'_>) -> Option<Judgement>;

/// Every check, in the order its verdict is shown.
pub(super) const CHECKS: [CheckFn; 8] = [
    unused_backends,
    balance,
    answer_order,
    ttl,
    stale_backends,
    srv_priority,
    failing_backends,
    shared_addresses,
];

/// Not for a resolver: it looks names up for the clients it serves, and
/// connects to none of their backends.
fn unused_backends(f: &Facts<'_>) -> Option<Judgement> {
    if f.resolver {
        return None;
    }
    let candidates = &f.candidates;
    let backends = candidates.loads.len() as u64;
    if f.connections == 0 {
        return Some(Judgement::NoConnections { backends });
    }
    // "priority-0 backends" only when every backend counted is one: a
    // failover target of priority 1 that got connections is among them.
    let priority = candidates
        .priority
        .filter(|_| candidates.loads.iter().all(|&(_, p)| p > 0.0));
    let unused = candidates.loads.iter().filter(|&&(c, _)| c == 0).count() as u64;
    if unused == 0 {
        return Some(Judgement::AllUsed {
            backends,
            priority,
            family: f.family,
        });
    }
    let judged = candidates.judged;
    let probabilities: Vec<f64> = candidates.choosable().map(|(_, p)| p).collect();
    // Unused backends random choice could have picked (an SRV weight of 0
    // beside non-zero ones is never picked, so its idleness proves nothing).
    let unused_choosable = candidates.choosable().filter(|&(c, _)| c == 0).count();
    Some(Judgement::Unused {
        unused,
        backends,
        priority,
        family: f.family,
        judged,
        unused_choosable: unused_choosable as u64,
        // Fewer connections than backends leave some unused for certain.
        certain: judged + (unused_choosable as u64) <= probabilities.len() as u64,
        chance: chance_of_unused(&probabilities, judged, unused_choosable),
    })
}

fn balance(f: &Facts<'_>) -> Option<Judgement> {
    let candidates = &f.candidates;
    let backends = candidates.cells.len() as u64;
    let n: u64 = candidates.cells.iter().map(|&(c, _)| c).sum();
    if backends < 2 || n == 0 {
        return None;
    }
    let Some(b) = &f.balance else {
        return Some(Judgement::TooFewToJudge {
            connections: n,
            backends,
            family: f.family,
        });
    };
    // The rows' shares count every connection; over answers in force these
    // count those made to addresses in force, against what the answers
    // made expected.
    let in_force = candidates.over_answers_in_force.then(|| {
        let expected = candidates.cells.iter().map(|&(_, e)| e / n as f64);
        let (low, high) = expected.fold((1.0f64, 0.0f64), |(l, h), e| (l.min(e), h.max(e)));
        (n, low, high)
    });
    let judged = (!candidates.over_answers_in_force && n < f.connections_in_family())
        .then_some((n, f.connections_in_family()));
    Some(Judgement::Spread {
        judged,
        family: f.family,
        expected: candidates.expectation,
        over_answers_in_force: candidates.over_answers_in_force,
        min_share: b.min_share,
        max_share: b.max_share,
        in_force,
        p_value: b.p_value,
    })
}

fn ttl(f: &Facts<'_>) -> Option<Judgement> {
    ttl_judged(f.ttl_facts())
}

/// What the `ttl` check reads: copied, so that the judgement can be asked
/// again with one more lookup within the TTL (completeness).
#[derive(Clone, Copy, Debug)]
pub(super) struct TtlFacts {
    pub lookups: u64,
    pub within_ttl: u64,
    pub connections: u64,
    pub ttl: Option<(u32, u32)>,
    pub late_connections: u64,
    pub late_max_secs: f64,
    pub local_server: Option<std::net::IpAddr>,
}

impl Facts<'_> {
    pub(super) fn ttl_facts(&self) -> TtlFacts {
        TtlFacts {
            lookups: self.lookups,
            within_ttl: self.lookups_within_ttl,
            connections: self.connections,
            ttl: self.ttl,
            late_connections: self.late_connections,
            late_max_secs: self.late_max_secs,
            local_server: self.local_server,
        }
    }
}

pub(super) fn ttl_judged(f: TtlFacts) -> Option<Judgement> {
    let TtlFacts {
        lookups,
        within_ttl,
        connections,
        ttl,
        ..
    } = f;
    // Late connections need an answer in force, so a lookup, but not one
    // within a `--window`: a client that never resolves again has none
    // there.
    if f.late_connections > 0 {
        return Some(Judgement::DoesNotReresolve {
            late_connections: f.late_connections,
            late_max_secs: f.late_max_secs,
            lookups,
            ttl,
        });
    }
    match (lookups, within_ttl) {
        (0, _) => None,
        (1, _) => Some(Judgement::SingleLookup { ttl }),
        (_, 0) if ttl.is_none() => Some(Judgement::TtlUnknown { lookups }),
        (_, 0) => Some(Judgement::HonoursTtl { lookups, ttl }),
        _ if f.local_server.is_some() => Some(Judgement::ThroughLocalResolver {
            lookups,
            within_ttl,
            connections,
            server: f.local_server?,
        }),
        _ if connections >= 2 && lookups >= connections && 2 * within_ttl >= lookups - 1 => {
            Some(Judgement::ResolvesBeforeEveryConnection {
                lookups,
                within_ttl,
                connections,
                ttl,
            })
        }
        _ => Some(Judgement::ReresolvesWithinTtl {
            lookups,
            within_ttl,
            connections,
            ttl,
        }),
    }
}

/// Whether the `ttl` finding would differ had the first lookup seen come
/// within the TTL of an answer given before the trace began.
pub(super) fn ttl_depends_on_an_earlier_answer(f: &Facts<'_>) -> bool {
    let now = f.ttl_facts();
    let one_more = TtlFacts {
        within_ttl: (now.within_ttl + 1).min(now.lookups),
        ..now
    };
    ttl_judged(now).map(|j| j.finding()) != ttl_judged(one_more).map(|j| j.finding())
}

/// Connections to addresses DNS had stopped offering; nothing while the
/// answers never changed (no address was ever withdrawn).
fn stale_backends(f: &Facts<'_>) -> Option<Judgement> {
    if f.stale_backends.is_empty() {
        return (f.answer_sets > 1).then_some(Judgement::NoneStale {
            answer_sets: f.answer_sets,
        });
    }
    Some(Judgement::Stale {
        backends: f.stale_backends.to_vec(),
    })
}

fn srv_priority(f: &Facts<'_>) -> Option<Judgement> {
    let priorities = f.loads.iter().filter_map(|l| l.srv).map(|s| s.priority);
    let best = priorities.clone().min()?;
    if f.connections == 0 {
        return None;
    }
    let outside: u64 = f
        .loads
        .iter()
        .filter(|l| l.srv.is_some_and(|s| s.priority > best))
        .map(|l| l.connections)
        .sum();
    if outside > 0 {
        return Some(Judgement::PriorityIgnored {
            outside,
            connections: f.connections,
            best,
        });
    }
    let mut levels: Vec<u16> = priorities.collect();
    levels.sort_unstable();
    levels.dedup();
    Some(Judgement::PriorityHonoured {
        connections: f.connections,
        best,
        one_level: levels.len() == 1,
    })
}

/// Backends whose connection attempts were refused or went unanswered,
/// from the service's rows; nothing when it saw no attempt.
fn failing_backends(f: &Facts<'_>) -> Option<Judgement> {
    let rows = f.rows;
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
    let backends: Vec<FailingBackend> = rows
        .iter()
        .filter(|r| outcomes(r).failed() > 0)
        .map(|row| {
            let o = outcomes(row);
            FailingBackend {
                address: row.backend,
                port: row.port,
                refused: o.refused,
                unanswered: o.unanswered,
                tried: o.answered + o.failed(),
            }
        })
        .collect();
    if backends.is_empty() {
        return Some(Judgement::AllAnswered { attempts });
    }
    let failed: u64 = backends.iter().map(|b| b.refused + b.unanswered).sum();
    let answered_elsewhere = rows
        .iter()
        .filter(|r| outcomes(r).failed() == 0)
        .map(|r| outcomes(r).answered)
        .sum::<u64>();
    Some(Judgement::Failing {
        backends,
        answered_elsewhere,
        none_answered: failed == attempts,
    })
}

/// Connections to addresses this name shares with another whose answer was
/// also unexpired: counted here (the name looked up last), and said so.
fn shared_addresses(f: &Facts<'_>) -> Option<Judgement> {
    (f.shared_connections > 0).then(|| Judgement::Shared {
        connections: f.shared_connections,
        of: f.connections,
        names: f.shared_with.to_vec(),
    })
}

/// Attempts judged before the answer order is: fewer say nothing.
const MIN_ORDER_CONNECTIONS: u64 = 5;

/// Whether the client takes the address its answer lists first, beyond
/// what random choice gives it, and whether the server rotates its
/// answers: together they tell the client from the server as the cause of
/// an uneven spread (coredns/coredns#4960; getaddrinfo's RFC 6724 sorting;
/// clients that take the first SRV record).
fn answer_order(f: &Facts<'_>) -> Option<Judgement> {
    let FirstChoice {
        connections,
        to_first,
        expected,
    } = f.first_choice;
    if connections < MIN_ORDER_CONNECTIONS {
        return None;
    }
    let chance = chance_of_at_least(to_first, connections, expected / connections as f64);
    if chance >= SIGNIFICANCE {
        return Some(Judgement::FirstNotPreferred {
            to_first,
            connections,
            expected,
        });
    }
    // How often each backend was listed first (per address, once per name:
    // rows repeat a backend per port).
    let mut firsts: Vec<(std::net::IpAddr, u64, u64)> = Vec::new();
    for row in f.rows {
        if !firsts.iter().any(|&(a, _, _)| a == row.backend) {
            firsts.push((row.backend, row.first_in_answers, row.address_dns));
        }
    }
    let listed: Vec<u64> = firsts.iter().map(|&(_, n, _)| n).collect();
    let ever = listed.iter().filter(|&&n| n > 0).count() as u64;
    let least = listed.iter().copied().min().unwrap_or(0);
    let most = listed.iter().copied().max().unwrap_or(0);
    let answers: u64 = listed.iter().sum();
    let always_first = (ever == 1 && answers > 1)
        .then(|| firsts.iter().find(|&&(_, n, _)| n > 0).map(|&(a, _, _)| a))
        .flatten();
    Some(Judgement::TakesFirst {
        to_first,
        connections,
        expected,
        chance,
        firsts: (ever, least, most, listed.len() as u64),
        always_first,
    })
}
