//! The answer in force for one (client, name), and how the client's
//! connections fared against it: the data behind the `balance`, `ttl` and
//! `stale_backends` verdicts.
//!
//! An answer stays in force until the next answer to the same question
//! replaces it, expired or not: a client that never asks again keeps using
//! it, and that is what the `ttl` check looks for. A service asked several
//! questions (A and AAAA, an SRV set and its targets' addresses) offers the
//! union of their latest answers; with an SRV answer in force, only its
//! targets, and only those of its best priority, weighted (RFC 2782).
//!
//! The timeline is folded as it goes rather than stored: each time the
//! offered set changes, the connections made while it was in force are
//! added to every offered address's expected count (its share of them), so
//! the verdicts stay exact however long the run, in memory bounded per
//! service and in all.

use super::backends::SrvPreference;
use super::name::NameKey;
use super::Timestamp;
use std::net::IpAddr;

/// Addresses kept per latest answer to a question, and addresses a service
/// remembers having offered. Beyond either the service's judgement is
/// marked incomplete (and counted), not guessed.
pub const MAX_OFFERS_PER_SERVICE: usize = 64;
pub const MAX_ADDRESSES_PER_SERVICE: usize = 64;
/// Slots (offers and remembered addresses) over all services, so that a
/// flood of services with large answers stays within some 50 MiB.
pub const MAX_TIMELINE_SLOTS: usize = 1 << 20;
const NANOS: u64 = 1_000_000_000;
/// A connection this soon after its answer expired still used it: a lookup
/// is followed by its connect a little later, and a TTL of 0 means "use it
/// for this connection".
pub const EXPIRY_GRACE_NANOS: u64 = NANOS;

/// An address offered by an answer, as a client would choose among them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Offer {
    pub address: IpAddr,
    /// The SRV target the address belongs to, if any.
    pub target: Option<NameKey>,
    pub srv: Option<SrvPreference>,
}

/// The latest SRV answer's targets, with their preferences.
pub type SrvSet = Vec<(NameKey, SrvPreference)>;

/// Slots left over all services.
#[derive(Debug, Default)]
pub struct SlotBudget {
    used: usize,
    /// Offers or addresses not kept because a cap was reached.
    pub dropped: u64,
}

impl SlotBudget {
    fn take(&mut self, local_used: usize, local_cap: usize) -> bool {
        if local_used >= local_cap || self.used >= MAX_TIMELINE_SLOTS {
            self.dropped += 1;
            return false;
        }
        self.used += 1;
        true
    }

    pub fn give_back(&mut self, slots: usize) {
        self.used = self.used.saturating_sub(slots);
    }
}

/// An address as a sort and search key: IPv4 as IPv4-mapped IPv6. Cheaper
/// to compare than `IpAddr`'s enum, which showed in profiles of the
/// searches below.
type AddrKey = u128;

fn key_of(address: IpAddr) -> AddrKey {
    match address {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// One address of the set in force.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    address: AddrKey,
    probability: f64,
    /// Connections to it since the set came into force.
    connections: u64,
}

/// What a service's connections did with one address it offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddressLog {
    pub address: IpAddr,
    key: AddrKey,
    /// Connections random choice would have given it: its probability in
    /// each set in force, times the connections made while that set was.
    pub expected: f64,
    /// Connections to it while it was in the set in force.
    pub observed: u64,
    /// When the latest answer that held it expires.
    offered_until: Timestamp,
    /// Connection attempts to it while it was not in the set in force, after
    /// the last answer holding it expired.
    pub stale: u64,
    pub stale_max_nanos: u64,
}

/// Connections to the address the latest answer listed first.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FirstChoice {
    /// Connections judged (made while an answer with several addresses
    /// was the latest).
    pub connections: u64,
    pub to_first: u64,
    /// What random choice would give the first address.
    pub expected: f64,
}

/// Connection attempts made after the whole answer in force expired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LateUse {
    pub connections: u64,
    pub max_nanos: u64,
}

/// A timeline's counts at a `--window` mark (`Timeline::tally`).
#[derive(Clone, Debug, Default)]
pub struct TimelineTally {
    /// (address, expected, observed, stale), sorted by address.
    logs: Box<[(AddrKey, f64, u64, u64)]>,
    sets: u64,
    late: u64,
    first_choice: FirstChoice,
}

/// `now - then` of two sums of the same expectations: what rounding
/// leaves of a difference of zero is zero, not a backend with a tiny
/// expected count that the chi-square would divide by.
fn difference(now: f64, then: f64) -> f64 {
    let d = now - then;
    if d < 1e-6 {
        0.0
    } else {
        d
    }
}

#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Latest answer to each question (by its index in the service's
    /// questions): the addresses it offered.
    offers: Vec<(usize, Offer)>,
    /// The targets of the latest SRV answer, when the service was asked
    /// for SRV.
    srv: Option<SrvSet>,
    /// Sorted by address.
    in_force: Vec<Candidate>,
    in_force_connections: u64,
    /// When the latest answer of every question has expired.
    expires: Option<Timestamp>,
    /// Distinct sets that came into force, one after another.
    pub sets: u64,
    /// Sorted by address.
    addresses: Vec<AddressLog>,
    pub late: LateUse,
    /// Where each connection went in the order of the latest answer: the
    /// address listed first, the number of addresses it listed, and the
    /// connections to that first address against what random choice
    /// gives it (the sum of 1/addresses over the connections).
    first_listed: Option<AddrKey>,
    listed: usize,
    pub first_choice: FirstChoice,
    /// An offer or an address was not kept (a cap): the verdicts built on
    /// this timeline would be guesses, so they fall back to the rows.
    pub incomplete: bool,
}

impl Timeline {
    /// The slots of the budget this timeline holds (its offers and
    /// addresses), to give back when it is forgotten.
    pub fn slots_held(&self) -> usize {
        self.offers.len() + self.addresses.len()
    }

    /// A new answer to question `question` that offered `offers` (an SRV
    /// answer also `srv`), each until `offered_until`; the service's latest
    /// answers now all expire by `expires`.
    pub fn answer(
        &mut self,
        budget: &mut SlotBudget,
        question: usize,
        (offered_until, expires): (Timestamp, Timestamp),
        offers: &[Offer],
        srv: Option<&[(NameKey, SrvPreference)]>,
    ) {
        if let Some(first) = offers.first() {
            self.first_listed = Some(key_of(first.address));
            self.listed = offers.len();
        }
        for offer in offers {
            match self.log(budget, offer.address) {
                Some(log) => log.offered_until = log.offered_until.max(offered_until),
                None => self.incomplete = true,
            }
        }
        self.expires = Some(expires);
        // Most answers repeat the one before (in another order, from a
        // round-robin server): then nothing the choice depends on changed.
        let srv_changed = srv.is_some_and(|new| self.srv.as_deref() != Some(new));
        if !srv_changed && self.offers_unchanged(question, offers) {
            return;
        }
        let before = self.offers.len();
        self.offers.retain(|(q, _)| *q != question);
        budget.give_back(before - self.offers.len());
        for offer in offers {
            // A record repeated within one answer offers nothing more.
            if self
                .offers
                .iter()
                .any(|(q, o)| *q == question && o == offer)
            {
                continue;
            }
            if budget.take(self.offers.len(), MAX_OFFERS_PER_SERVICE) {
                self.offers.push((question, *offer));
            } else {
                self.incomplete = true;
            }
        }
        if let Some(targets) = srv {
            let mut set = targets.to_vec();
            set.truncate(MAX_OFFERS_PER_SERVICE);
            self.srv = Some(set);
        }
        let set = self.candidates();
        if !same_set(&set, &self.in_force) {
            self.fold();
            self.in_force = set;
            self.sets += 1;
        }
    }

    /// The question's latest offers are `offers`, in any order (and the
    /// first answer to a question changes them).
    fn offers_unchanged(&self, question: usize, offers: &[Offer]) -> bool {
        let mut kept = 0;
        for (q, o) in &self.offers {
            if *q == question {
                if !offers.contains(o) {
                    return false;
                }
                kept += 1;
            }
        }
        kept > 0 && kept == offers.len()
    }

    /// How firmly the client held `address` under this service at `at`:
    /// 2 when an answer in force offers it and had not expired (with the
    /// grace), 1 when an answer in force offers it, past its TTL, 0 when
    /// it was only offered before. The aggregator credits a connection to
    /// an address offered under several names to the one held most firmly.
    pub fn holding(&self, address: IpAddr, at: Timestamp) -> u8 {
        let key = key_of(address);
        let in_force = self
            .in_force
            .binary_search_by_key(&key, |c| c.address)
            .is_ok();
        if !in_force {
            return 0;
        }
        let fresh = self
            .addresses
            .binary_search_by_key(&key, |l| l.key)
            .is_ok_and(|i| {
                let until = self.addresses[i].offered_until;
                at <= until || at.nanos_since(until) <= EXPIRY_GRACE_NANOS
            });
        1 + u8::from(fresh)
    }

    /// A connection from the client to `address`; `attempt` when it was
    /// made now (a SYN), not found already open (`-a`). `dropped`: whether
    /// an answer given since (to any client) no longer holds the address;
    /// asked only of a connection made after its own answer expired.
    pub fn connection(
        &mut self,
        at: Timestamp,
        address: IpAddr,
        attempt: bool,
        dropped: impl FnOnce() -> bool,
    ) {
        let late = |deadline: Timestamp| {
            let past = at.nanos_since(deadline);
            (at > deadline && past > EXPIRY_GRACE_NANOS).then_some(past)
        };
        let address = key_of(address);
        if let (Some(first), true) = (self.first_listed, attempt && self.listed > 1) {
            self.first_choice.connections += 1;
            self.first_choice.to_first += u64::from(first == address);
            self.first_choice.expected += 1.0 / self.listed as f64;
        }
        if let Ok(i) = self.in_force.binary_search_by_key(&address, |c| c.address) {
            self.in_force[i].connections += 1;
            self.in_force_connections += 1;
            let Some(past) = self.expires.filter(|_| attempt).and_then(late) else {
                return;
            };
            // Still in the client's own answer, long expired, and DNS has
            // dropped it since: the worst kind of stale, a pool that never
            // asks again. Counted stale rather than late.
            if let Ok(log) = self.addresses.binary_search_by_key(&address, |l| l.key) {
                let log = &mut self.addresses[log];
                if let Some(stale_for) = late(log.offered_until).filter(|_| dropped()) {
                    log.stale += 1;
                    log.stale_max_nanos = log.stale_max_nanos.max(stale_for);
                    return;
                }
            }
            self.late.connections += 1;
            self.late.max_nanos = self.late.max_nanos.max(past);
            return;
        }
        if !attempt {
            return;
        }
        let Ok(i) = self.addresses.binary_search_by_key(&address, |l| l.key) else {
            return;
        };
        let log = &mut self.addresses[i];
        if let Some(past) = late(log.offered_until) {
            log.stale += 1;
            log.stale_max_nanos = log.stale_max_nanos.max(past);
        }
    }

    /// Every address offered, with the in-force set's connections so far
    /// folded in.
    pub fn addresses(&self) -> Vec<AddressLog> {
        let mut out = self.addresses.clone();
        for c in &self.in_force {
            if let Ok(i) = out.binary_search_by_key(&c.address, |l| l.key) {
                out[i].expected += c.probability * self.in_force_connections as f64;
                out[i].observed += c.connections;
            }
        }
        out
    }

    /// What a `--window` mark keeps of this timeline: its counts, not
    /// the answers in force.
    pub fn tally(&self) -> TimelineTally {
        TimelineTally {
            // An address with nothing counted yet subtracts nothing: most
            // services of a busy resolver's clients hold no connection.
            logs: self
                .addresses()
                .iter()
                .filter(|l| l.expected > 0.0 || l.observed > 0 || l.stale > 0)
                .map(|l| (l.key, l.expected, l.observed, l.stale))
                .collect(),
            sets: self.sets,
            late: self.late.connections,
            first_choice: self.first_choice,
        }
    }

    /// This timeline as it reads counting from `mark` on: the answers in
    /// force as they are now, the connections and expectations since.
    pub fn since(&self, mark: &TimelineTally) -> Timeline {
        let mut addresses = self.addresses();
        for log in &mut addresses {
            let Ok(i) = mark.logs.binary_search_by_key(&log.key, |m| m.0) else {
                continue;
            };
            let (_, expected, observed, stale) = mark.logs[i];
            log.expected = difference(log.expected, expected);
            log.observed = log.observed.saturating_sub(observed);
            log.stale = log.stale.saturating_sub(stale);
            if log.stale == 0 {
                log.stale_max_nanos = 0;
            }
        }
        let late = self.late.connections.saturating_sub(mark.late);
        let first = mark.first_choice;
        Timeline {
            offers: self.offers.clone(),
            srv: self.srv.clone(),
            // Folded into `addresses` above.
            in_force: self
                .in_force
                .iter()
                .map(|c| Candidate {
                    connections: 0,
                    ..*c
                })
                .collect(),
            in_force_connections: 0,
            expires: self.expires,
            // The set in force at the mark is one of the window's.
            sets: self.sets - mark.sets + u64::from(mark.sets > 0),
            addresses,
            late: LateUse {
                connections: late,
                max_nanos: if late > 0 { self.late.max_nanos } else { 0 },
            },
            first_listed: self.first_listed,
            listed: self.listed,
            first_choice: FirstChoice {
                connections: self
                    .first_choice
                    .connections
                    .saturating_sub(first.connections),
                to_first: self.first_choice.to_first.saturating_sub(first.to_first),
                expected: difference(self.first_choice.expected, first.expected),
            },
            incomplete: self.incomplete,
        }
    }

    /// The set in force closes: its connections go into the logs.
    fn fold(&mut self) {
        let n = self.in_force_connections as f64;
        for c in &self.in_force {
            if let Ok(i) = self.addresses.binary_search_by_key(&c.address, |l| l.key) {
                self.addresses[i].expected += c.probability * n;
                self.addresses[i].observed += c.connections;
            }
        }
        self.in_force_connections = 0;
    }

    fn log(&mut self, budget: &mut SlotBudget, address: IpAddr) -> Option<&mut AddressLog> {
        let key = key_of(address);
        let i = match self.addresses.binary_search_by_key(&key, |l| l.key) {
            Ok(i) => i,
            Err(i) => {
                if !budget.take(self.addresses.len(), MAX_ADDRESSES_PER_SERVICE) {
                    return None;
                }
                self.addresses.insert(
                    i,
                    AddressLog {
                        address,
                        key,
                        expected: 0.0,
                        observed: 0,
                        offered_until: Timestamp(0),
                        stale: 0,
                        stale_max_nanos: 0,
                    },
                );
                i
            }
        };
        Some(&mut self.addresses[i])
    }

    /// The set a client following DNS chooses from now, sorted by address.
    fn candidates(&self) -> Vec<Candidate> {
        // (address, preference), first offer of each address.
        let mut offered: Vec<(AddrKey, Option<SrvPreference>)> = Vec::new();
        for (_, offer) in &self.offers {
            let key = key_of(offer.address);
            if offered.iter().any(|(a, _)| *a == key) {
                continue;
            }
            let preference = match &self.srv {
                // The SRV answer in force decides which targets count, and
                // their preference.
                Some(set) => match offer.target {
                    Some(target) => match set.iter().find(|(t, _)| *t == target) {
                        Some(&(_, p)) => Some(p),
                        None => continue,
                    },
                    None => None,
                },
                None => offer.srv,
            };
            offered.push((key, preference));
        }
        let best = offered
            .iter()
            .filter_map(|(_, p)| *p)
            .map(|p| p.priority)
            .min();
        let mut set: Vec<Candidate> = match best {
            None => {
                let p = 1.0 / offered.len().max(1) as f64;
                offered
                    .iter()
                    .map(|&(address, _)| candidate(address, p))
                    .collect()
            }
            Some(best) => {
                let chosen: Vec<(AddrKey, u16)> = offered
                    .iter()
                    .filter_map(|&(a, p)| p.filter(|p| p.priority == best).map(|p| (a, p.weight)))
                    .collect();
                let total: u64 = chosen.iter().map(|&(_, w)| u64::from(w)).sum();
                chosen
                    .iter()
                    .map(|&(address, w)| {
                        // RFC 2782: with every weight 0 the choice is uniform.
                        let p = if total == 0 {
                            1.0 / chosen.len() as f64
                        } else {
                            f64::from(w) / total as f64
                        };
                        candidate(address, p)
                    })
                    .collect()
            }
        };
        set.sort_by_key(|c| c.address);
        set
    }
}

fn candidate(address: AddrKey, probability: f64) -> Candidate {
    Candidate {
        address,
        probability,
        connections: 0,
    }
}

fn same_set(a: &[Candidate], b: &[Candidate]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.address == y.address && (x.probability - y.probability).abs() < 1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn offers(lasts: &[u8]) -> Vec<Offer> {
        lasts
            .iter()
            .map(|&l| Offer {
                address: ip(l),
                target: None,
                srv: None,
            })
            .collect()
    }

    fn at(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    fn answer(t: &mut Timeline, b: &mut SlotBudget, secs: u64, ttl: u64, lasts: &[u8]) {
        let until = at(secs + ttl);
        t.answer(b, 0, (until, until), &offers(lasts), None);
    }

    fn expected_of(t: &Timeline) -> Vec<(u8, f64, u64)> {
        t.addresses()
            .iter()
            .map(|l| match l.address {
                IpAddr::V4(v4) => (v4.octets()[3], l.expected, l.observed),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    /// The scale-down: 2 connections while 4 addresses were offered,
    /// then 18 while 2 were. A client following DNS goes 1/1/9/9, which is
    /// what the expected counts say: 0.5, 0.5, 9.5, 9.5.
    #[test]
    fn expected_counts_follow_the_set_in_force() {
        let (mut t, mut b) = (Timeline::default(), SlotBudget::default());
        answer(&mut t, &mut b, 0, 60, &[1, 2, 3, 4]);
        t.connection(at(1), ip(1), true, || false);
        t.connection(at(1), ip(2), true, || false);
        answer(&mut t, &mut b, 2, 60, &[3, 4]);
        for i in 0..18 {
            t.connection(at(3), ip(3 + (i % 2)), true, || false);
        }
        assert_eq!(
            expected_of(&t),
            vec![(1, 0.5, 1), (2, 0.5, 1), (3, 9.5, 9), (4, 9.5, 9)]
        );
        assert_eq!(t.sets, 2);
        assert_eq!(t.late, LateUse::default());
    }

    #[test]
    fn the_same_set_again_is_not_a_change() {
        let (mut t, mut b) = (Timeline::default(), SlotBudget::default());
        answer(&mut t, &mut b, 0, 5, &[1, 2]);
        answer(&mut t, &mut b, 10, 5, &[2, 1]);
        assert_eq!(t.sets, 1);
    }

    #[test]
    fn connections_past_expiry_are_late_and_past_the_last_offer_stale() {
        let (mut t, mut b) = (Timeline::default(), SlotBudget::default());
        answer(&mut t, &mut b, 0, 5, &[1, 2]);
        // Within the grace: still the answer's connection.
        t.connection(
            Timestamp(5 * NANOS + EXPIRY_GRACE_NANOS),
            ip(1),
            true,
            || false,
        );
        t.connection(at(100), ip(1), true, || false);
        t.connection(at(30), ip(2), true, || false);
        // Found open (-a): not made late.
        t.connection(at(200), ip(2), false, || false);
        assert_eq!(
            t.late,
            LateUse {
                connections: 2,
                max_nanos: 95 * NANOS
            }
        );
        answer(&mut t, &mut b, 300, 5, &[2]);
        // 10.0.0.1's last answer expired at 5 s.
        t.connection(at(301), ip(1), true, || false);
        t.connection(at(302), ip(2), true, || false);
        let logs = t.addresses();
        assert_eq!((logs[0].stale, logs[0].stale_max_nanos), (1, 296 * NANOS));
        assert_eq!(logs[1].stale, 0);
    }

    #[test]
    fn a_removed_address_within_its_ttl_is_not_stale() {
        let (mut t, mut b) = (Timeline::default(), SlotBudget::default());
        answer(&mut t, &mut b, 0, 60, &[1, 2]);
        answer(&mut t, &mut b, 10, 60, &[2]);
        t.connection(at(20), ip(1), true, || false);
        assert_eq!(t.addresses()[0].stale, 0);
    }

    fn srv_offer(last: u8, target: u64) -> Offer {
        Offer {
            address: ip(last),
            target: Some(NameKey::for_test(target)),
            srv: None,
        }
    }

    fn pref(priority: u16, weight: u16) -> SrvPreference {
        SrvPreference { priority, weight }
    }

    /// An SRV set in force picks its best priority's targets by weight; a
    /// new SRV answer without a target drops its addresses, even though
    /// that target's own A answer is still the latest.
    #[test]
    fn the_srv_answer_in_force_decides_targets_and_weights() {
        let (mut t, mut b) = (Timeline::default(), SlotBudget::default());
        let until = (at(60), at(60));
        let srv = [
            (NameKey::for_test(1), pref(10, 3)),
            (NameKey::for_test(2), pref(10, 1)),
            (NameKey::for_test(3), pref(20, 1)),
        ];
        t.answer(&mut b, 0, until, &[], Some(&srv));
        t.answer(&mut b, 1, until, &[srv_offer(1, 1)], None);
        t.answer(&mut b, 2, until, &[srv_offer(2, 2)], None);
        t.answer(&mut b, 3, until, &[srv_offer(3, 3)], None);
        for _ in 0..4 {
            t.connection(at(1), ip(1), true, || false);
        }
        // Target 1 leaves the set: target 2 alone is best now.
        t.answer(&mut b, 0, until, &[], Some(&srv[1..]));
        t.connection(at(2), ip(2), true, || false);
        t.connection(at(2), ip(2), true, || false);
        assert_eq!(
            expected_of(&t),
            vec![(1, 3.0, 4), (2, 1.0 + 2.0, 2), (3, 0.0, 0)]
        );
    }

    #[test]
    fn caps_mark_the_timeline_incomplete() {
        let (mut t, mut b) = (Timeline::default(), SlotBudget::default());
        let many: Vec<u8> = (1..=MAX_OFFERS_PER_SERVICE as u8 + 1).collect();
        answer(&mut t, &mut b, 0, 5, &many);
        assert!(t.incomplete);
        assert_eq!(b.dropped, 2, "one offer and one address");
    }
}
