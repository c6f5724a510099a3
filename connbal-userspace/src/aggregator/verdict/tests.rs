//! Checks docs/semantics.md section 8: the verdicts, their thresholds and
//! the chance of unused backends.

use super::*;
use crate::aggregator::backends::SrvPreference;
use crate::aggregator::Timestamp;
use std::net::IpAddr;

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
        ("10.0.0.1".parse().unwrap(), false),
        Arc::from("web."),
        (&loads(conns), Vec::new()),
        None,
        &Completeness::default(),
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
    let balance = verdict_of(&s, Check::Balance).unwrap();
    assert!(!balance.ok);
    // Below what three decimals show, it says so ("p = < 0.001" before).
    // The threshold that decided is stated where it decides.
    assert!(
        balance.text.ends_with("with p < 0.001, below 0.01"),
        "{}",
        balance.text
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
        "2 of 4 backends got no connection; not chance (below 1%): random choice over 20 connections leaves at least 2 unused with chance 5.7e-6"
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
        ("10.0.0.1".parse().unwrap(), false),
        Arc::from("web."),
        (&loads(conns), Vec::new()),
        Some(l),
        &Completeness::default(),
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
        ("10.0.0.1".parse().unwrap(), false),
        Arc::from("_x._tcp."),
        (&honoured, Vec::new()),
        None,
        &Completeness::default(),
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
        ("10.0.0.1".parse().unwrap(), false),
        Arc::from("_x._tcp."),
        (&even, Vec::new()),
        None,
        &Completeness::default(),
    );
    assert_eq!(finding(&s, Check::Balance), Some(Finding::Uneven));

    let ignored = srv_loads(&[(5, 10, 1), (5, 10, 1), (10, 20, 1)]);
    let s = assess(
        ("10.0.0.1".parse().unwrap(), false),
        Arc::from("_x._tcp."),
        (&ignored, Vec::new()),
        None,
        &Completeness::default(),
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
