//! The statistics behind the `unused_backends` and `balance` checks: the
//! exact chance that random choice leaves backends unused, and a
//! chi-square goodness-of-fit test of the spread.

use super::expectation::Candidates;
use super::types::Balance;
use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF};

/// Below this probability a spread (or an unused backend) is called
/// unlikely to be chance.
pub const SIGNIFICANCE: f64 = 0.01;
/// The chi-square approximation needs enough expected connections per
/// backend; below this the balance is not judged.
const MIN_EXPECTED_PER_BACKEND: f64 = 1.0;

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
                let sign = if (j - m).is_multiple_of(2) { 1.0 } else { -1.0 };
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

/// Chi-square over the cells, after pooling every cell expected to get
/// less than one connection, and, while the pool itself is expected to get
/// less, the least expected of the rest: 1/1/9/9 after a scale-down has two
/// cells expected at 0.5 each, which pool into one.
pub(super) fn balance(candidates: &Candidates) -> Option<Balance> {
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
    let p_value = ChiSquared::new(degrees_of_freedom as f64).map_or(f64::NAN, |d| d.sf(chi_square));
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

/// The chance that `n` independent choices, each picking a given address
/// with probability `p`, pick it at least `k` times (the binomial upper
/// tail, from statrs).
pub fn chance_of_at_least(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    match Binomial::new(p.clamp(0.0, 1.0), n) {
        Ok(binomial) => binomial.sf(k - 1).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}
