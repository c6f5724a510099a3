//! What a well-behaved client would have done: the backends it chooses
//! among, and the chance of each, from the answers in force at each
//! connection (`timeline`) or, without them, from the backends' last SRV
//! preferences.

use super::super::timeline::{AddressLog, Timeline};
use super::types::{BackendLoad, Expectation};

/// The backends a well-behaved client chooses among, with the probability
/// each would get a connection.
pub(super) struct Candidates {
    pub expectation: Expectation,
    /// (connections, probability) for every backend in the choice, zero
    /// probability included (an SRV weight of 0 beside non-zero ones).
    pub loads: Vec<(u64, f64)>,
    /// (connections, expected connections) of every backend random choice
    /// could pick: the cells of the chi-square test.
    pub cells: Vec<(u64, f64)>,
    /// The backend of each cell, in the same order: a fleet's cells are
    /// its nodes' summed per backend.
    pub cell_backends: Vec<std::net::IpAddr>,
    /// The connections random choice is judged over.
    pub judged: u64,
    /// More than one answer set was in force over the run.
    pub over_answers_in_force: bool,
    /// The SRV priority chosen among, while it was one.
    pub priority: Option<u16>,
}

impl Candidates {
    /// From the answers in force at each connection when the timeline is
    /// whole and judged one, otherwise from the backends' last preferences.
    pub fn of(loads: &[BackendLoad], timeline: Option<&Timeline>, logs: &[AddressLog]) -> Self {
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
        let priority = match priorities[..] {
            [only] => Some(only),
            _ => None,
        };
        let in_choice = || logs.iter().filter(|l| l.expected > 0.0);
        let cells: Vec<(u64, f64)> = in_choice().map(|l| (l.observed, l.expected)).collect();
        Self {
            expectation,
            judged: cells.iter().map(|&(c, _)| c).sum(),
            cells,
            cell_backends: in_choice().map(|l| l.address).collect(),
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
            priority,
        }
    }

    fn from_preferences(loads: &[BackendLoad]) -> Self {
        let best = loads.iter().filter_map(|l| l.srv).map(|s| s.priority).min();
        let with_cells = |expectation, addressed: Vec<(std::net::IpAddr, u64, f64)>, priority| {
            let n: u64 = addressed.iter().map(|&(_, c, _)| c).sum();
            let in_choice = || addressed.iter().filter(|&&(_, _, p)| p > 0.0);
            let cells = in_choice().map(|&(_, c, p)| (c, p * n as f64)).collect();
            let cell_backends = in_choice().map(|&(a, _, _)| a).collect();
            Self {
                expectation,
                loads: addressed.iter().map(|&(_, c, p)| (c, p)).collect(),
                cells,
                cell_backends,
                judged: n,
                over_answers_in_force: false,
                priority,
            }
        };
        let Some(best) = best else {
            let p = 1.0 / loads.len().max(1) as f64;
            return with_cells(
                Expectation::Uniform,
                loads
                    .iter()
                    .map(|l| (l.address, l.connections, p))
                    .collect(),
                None,
            );
        };
        let chosen: Vec<(std::net::IpAddr, u64, u16)> = loads
            .iter()
            .filter_map(|l| {
                l.srv
                    .filter(|s| s.priority == best)
                    .map(|s| (l.address, l.connections, s.weight))
            })
            .collect();
        let total_weight: u64 = chosen.iter().map(|&(_, _, w)| u64::from(w)).sum();
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
            chosen
                .iter()
                .map(|&(a, c, w)| (a, c, probability(w)))
                .collect(),
            Some(best),
        )
    }

    /// Backends random choice could pick.
    pub fn choosable(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.loads.iter().copied().filter(|&(_, p)| p > 0.0)
    }
}
