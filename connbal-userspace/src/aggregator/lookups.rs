//! How often a client looked a service up, and whether it waited for the
//! previous answer's TTL to run out first. This is the data behind the TTL
//! verdict ("16 lookups for 16 connections within TTL 300 s").
//!
//! Lookups are tracked per question (name and type), because a client that
//! asks for A and AAAA before each connection, or an SRV set and then each
//! target's A set, makes one resolution out of several questions. A
//! service's lookup count is that of its most-asked question.

use super::client::Client;
use super::fresh::FreshAnswers;
use super::name::NameKey;
use super::timeline::{Offer, SlotBudget, SrvSet, Timeline, TimelineTally, EXPIRY_GRACE_NANOS};
use super::{FastMap, Timestamp};
use std::sync::Arc;

/// (client, name) pairs whose lookups and TTLs are tracked.
pub const MAX_SERVICES: usize = 1 << 18;

/// The TTL of an answer that carried none (a getaddrinfo call's): it is in
/// force until the next answer, and never judged against.
pub const TTL_UNKNOWN: u32 = u32::MAX;

/// A question as asked: its name and type.
pub type QuestionKey = (NameKey, u16);

/// What one answer offered a service: the least TTL of its records, their
/// addresses, and for an SRV answer its targets.
#[derive(Clone, Copy, Debug)]
pub struct Offered<'a> {
    pub ttl: u32,
    pub offers: &'a [Offer],
    pub srv: Option<&'a SrvSet>,
    /// The resolver that answered, when it runs on the client's host.
    pub local_server: Option<std::net::IpAddr>,
    /// The name the client asked, when the answer credited another (the
    /// canonical name behind CNAMEs, an SRV service for its target).
    pub asked_as: Option<&'a str>,
}

/// Lookups per (client, credited name), within MAX_SERVICES.
#[derive(Debug, Default)]
pub struct ServiceTable {
    /// Boxed: a service's lookups are some 300 bytes, and a table of 2^18
    /// buckets holding them inline doubles that at every resize.
    services: FastMap<(Client, NameKey), Box<ServiceLookups>>,
    /// Services whose lookups were not tracked (table full): their TTL
    /// verdict is missing.
    pub dropped: u64,
    /// The timelines' slots over all services.
    pub slots: SlotBudget,
}

impl ServiceTable {
    /// Forgets the services of the clients `gone` says are gone; returns
    /// how many distinct clients that was.
    pub fn forget(&mut self, gone: &dyn Fn(&Client) -> bool) -> usize {
        let mut clients = std::collections::HashSet::new();
        let slots = &mut self.slots;
        self.services.retain(|(client, _), lookups| {
            if !gone(client) {
                return true;
            }
            slots.give_back(lookups.timeline.slots_held());
            clients.insert(client.clone());
            false
        });
        clients.len()
    }

    /// One answer to `asked` that credited `name` for `client`.
    pub fn record(
        &mut self,
        (client, key, name): (Client, NameKey, Arc<str>),
        asked: QuestionKey,
        at: Timestamp,
        offered: Offered<'_>,
    ) {
        // One hash for the common case: a service seen before.
        let key = (client, key);
        if let Some(lookups) = self.services.get_mut(&key) {
            lookups.record(&mut self.slots, asked, at, offered);
        } else if self.services.len() < MAX_SERVICES {
            let mut lookups = Box::new(ServiceLookups::new(name));
            lookups.record(&mut self.slots, asked, at, offered);
            self.services.insert(key, lookups);
        } else {
            self.dropped += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(Client, NameKey), &ServiceLookups)> {
        self.services.iter().map(|(key, lookups)| (key, &**lookups))
    }

    pub fn get(&self, client: &Client, name: NameKey) -> Option<&ServiceLookups> {
        self.services.get(&(client.clone(), name)).map(|l| &**l)
    }

    /// Which of `names`, under each of which `client` was given `address`,
    /// a connection to it at `at` used: the one whose answer in force
    /// holds it most firmly (unexpired before expired before only offered
    /// once), then the one answered last, then the first. Also the other
    /// name whose unexpired answer held it too, if any: the connection
    /// could have followed either, and the report says so.
    pub fn choose(
        &self,
        client: &Client,
        names: &[NameKey],
        address: std::net::IpAddr,
        at: Timestamp,
    ) -> (usize, Option<usize>) {
        let mut best: Option<(usize, (u8, Timestamp))> = None;
        let mut fresh = Vec::new();
        for (i, &name) in names.iter().enumerate() {
            let Some(lookups) = self.services.get(&(client.clone(), name)) else {
                continue;
            };
            let holding = lookups.timeline.holding(address, at);
            if holding == 2 {
                fresh.push(i);
            }
            let rank = (holding, lookups.last_answer);
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((i, rank));
            }
        }
        let chosen = best.map_or(0, |(i, _)| i);
        let other = fresh.into_iter().find(|&i| i != chosen);
        (chosen, other)
    }

    /// A connection credited to `name` that could have followed `other`'s
    /// answer as well.
    pub fn shared(&mut self, client: &Client, name: NameKey, other: NameKey) {
        let other_name = self
            .services
            .get(&(client.clone(), other))
            .map(|l| l.name.clone());
        if let (Some(lookups), Some(other_name)) =
            (self.services.get_mut(&(client.clone(), name)), other_name)
        {
            lookups.shared_connections += 1;
            if lookups.shared_with.len() < MAX_SHARED_NAMES
                && !lookups.shared_with.contains(&other_name)
            {
                lookups.shared_with.push(other_name);
            }
        }
    }

    /// A connection from `client` to `address`, a backend of the service
    /// `name`, judged against the answer in force; `fresh` says whether a
    /// later answer (to any client) dropped the address.
    pub fn connection(
        &mut self,
        (client, name): (&Client, NameKey),
        at: Timestamp,
        address: std::net::IpAddr,
        attempt: bool,
        fresh: &FreshAnswers,
    ) {
        if let Some(lookups) = self.services.get_mut(&(client.clone(), name)) {
            let since = lookups.last_answer;
            let dropped = || fresh.dropped_since(name, address, since);
            lookups.timeline.connection(at, address, attempt, dropped);
        }
    }
}

/// A service with more distinct questions than this (an SRV set whose
/// targets are each looked up separately) tracks only the first ones.
const MAX_QUESTIONS_PER_SERVICE: usize = 16;
const NANOS: u64 = 1_000_000_000;
/// Other names a service's connections could have followed, and names it
/// was asked as, kept to name them in the report.
const MAX_SHARED_NAMES: usize = 4;

#[derive(Clone, Debug)]
pub struct ServiceLookups {
    /// The credited name as first seen (the report's spelling).
    pub name: Arc<str>,
    pub ttl_min: u32,
    pub ttl_max: u32,
    questions: Vec<Question>,
    /// When the first and the latest answer crediting it arrived.
    pub first_answer: Timestamp,
    pub last_answer: Timestamp,
    /// Answers from a resolver on the client's host, and the first such.
    pub answers_from_local: u64,
    pub local_server: Option<std::net::IpAddr>,
    answers: u64,
    /// Answers that carried no TTL (getaddrinfo's).
    pub without_ttl: u64,
    /// Connections credited here to addresses another name's unexpired
    /// answer held too, and (the first few of) those names.
    pub shared_connections: u64,
    pub shared_with: Vec<Arc<str>>,
    /// Names the client asked that were answered with this one (aliases
    /// behind CNAMEs; an SRV target's own name), the first few.
    pub asked_as: Vec<Arc<str>>,
    /// The answers in force, and the connections judged against them.
    pub timeline: Timeline,
}

/// A service's counts at a `--window` mark (`ServiceLookups::tally`).
#[derive(Clone, Debug, Default)]
pub struct LookupTally {
    /// (question, answers, within the TTL).
    questions: Box<[(QuestionKey, u64, u64)]>,
    answers: u64,
    answers_from_local: u64,
    without_ttl: u64,
    shared_connections: u64,
    timeline: TimelineTally,
}

#[derive(Debug, Clone, Copy)]
struct Question {
    /// Keyed hash of the lower-cased question name, and its type.
    key: QuestionKey,
    answers: u64,
    /// Answers that arrived while the previous answer was still valid.
    within_ttl: u64,
    expires: Timestamp,
}

impl ServiceLookups {
    pub fn new(name: Arc<str>) -> Self {
        Self {
            name,
            ttl_min: u32::MAX,
            ttl_max: 0,
            questions: Vec::new(),
            first_answer: Timestamp(u64::MAX),
            last_answer: Timestamp(0),
            answers_from_local: 0,
            local_server: None,
            answers: 0,
            without_ttl: 0,
            shared_connections: 0,
            shared_with: Vec::new(),
            asked_as: Vec::new(),
            timeline: Timeline::default(),
        }
    }

    /// One matched answer to `question` that credited this service.
    pub fn record(
        &mut self,
        slots: &mut SlotBudget,
        question: QuestionKey,
        at: Timestamp,
        offered: Offered<'_>,
    ) {
        let ttl = offered.ttl;
        self.first_answer = self.first_answer.min(at);
        self.last_answer = self.last_answer.max(at);
        self.answers += 1;
        if let Some(asked) = offered.asked_as {
            if self.asked_as.len() < MAX_SHARED_NAMES
                && !self.asked_as.iter().any(|a| a.eq_ignore_ascii_case(asked))
            {
                self.asked_as.push(Arc::from(asked));
            }
        }
        if let Some(server) = offered.local_server {
            self.answers_from_local += 1;
            self.local_server.get_or_insert(server);
        }
        let expires = if ttl == TTL_UNKNOWN {
            self.without_ttl += 1;
            Timestamp(u64::MAX)
        } else {
            self.ttl_min = self.ttl_min.min(ttl);
            self.ttl_max = self.ttl_max.max(ttl);
            Timestamp(at.0.saturating_add(u64::from(ttl) * NANOS))
        };
        let room = self.questions.len() < MAX_QUESTIONS_PER_SERVICE;
        let index = match self.questions.iter().position(|q| q.key == question) {
            Some(i) => {
                let q = &mut self.questions[i];
                q.answers += 1;
                // The same grace as connections get: a cache that refreshes
                // just before the TTL ends (dnsmasq counts whole seconds
                // and asks some 0.2 s early) honours it.
                if q.expires.0 != u64::MAX && at.0.saturating_add(EXPIRY_GRACE_NANOS) < q.expires.0
                {
                    q.within_ttl += 1;
                }
                q.expires = expires;
                i
            }
            None if room => {
                self.questions.push(Question {
                    key: question,
                    answers: 1,
                    within_ttl: 0,
                    expires,
                });
                self.questions.len() - 1
            }
            None => {
                // Its answers cannot be told apart from the others'.
                self.timeline.incomplete = true;
                return;
            }
        };
        let all_expire = self
            .questions
            .iter()
            .map(|q| q.expires)
            .max()
            .unwrap_or(expires);
        self.timeline.answer(
            slots,
            index,
            (expires, all_expire),
            offered.offers,
            offered.srv.map(Vec::as_slice),
        );
    }

    /// An answer that offered nothing but its TTL.
    #[cfg(test)]
    pub fn record_ttl(&mut self, question: QuestionKey, at: Timestamp, ttl: u32) {
        let offered = Offered {
            ttl,
            offers: &[],
            srv: None,
            local_server: None,
            asked_as: None,
        };
        self.record(&mut SlotBudget::default(), question, at, offered);
    }

    /// Every answer came from a resolver on the client's host: which.
    pub fn only_local_server(&self) -> Option<std::net::IpAddr> {
        (self.answers > 0 && self.answers_from_local == self.answers)
            .then_some(self.local_server)
            .flatten()
    }

    /// (lookups, of which within the previous answer's TTL), from the
    /// most-asked question.
    pub fn counts(&self) -> (u64, u64) {
        self.questions
            .iter()
            .max_by_key(|q| (q.answers, q.within_ttl))
            .map_or((0, 0), |q| (q.answers, q.within_ttl))
    }

    /// What a `--window` mark keeps of this service: its counts.
    pub fn tally(&self) -> LookupTally {
        LookupTally {
            questions: self
                .questions
                .iter()
                .map(|q| (q.key, q.answers, q.within_ttl))
                .collect(),
            answers: self.answers,
            answers_from_local: self.answers_from_local,
            without_ttl: self.without_ttl,
            shared_connections: self.shared_connections,
            timeline: self.timeline.tally(),
        }
    }

    /// This service's lookups counting from `mark` on. What is not a count
    /// (the TTLs seen, the names it shares addresses with, when its first
    /// answer came) stays as it is since the start.
    pub fn since(&self, mark: &LookupTally) -> ServiceLookups {
        let questions = self
            .questions
            .iter()
            .map(|q| {
                let (answers, within_ttl) = mark
                    .questions
                    .iter()
                    .find(|m| m.0 == q.key)
                    .map_or((0, 0), |m| (m.1, m.2));
                Question {
                    answers: q.answers.saturating_sub(answers),
                    within_ttl: q.within_ttl.saturating_sub(within_ttl),
                    ..*q
                }
            })
            .collect();
        // Field by field rather than `..self.clone()`, which would copy
        // the timeline only to replace it.
        ServiceLookups {
            name: self.name.clone(),
            ttl_min: self.ttl_min,
            ttl_max: self.ttl_max,
            questions,
            first_answer: self.first_answer,
            last_answer: self.last_answer,
            answers_from_local: self
                .answers_from_local
                .saturating_sub(mark.answers_from_local),
            local_server: self.local_server,
            answers: self.answers.saturating_sub(mark.answers),
            without_ttl: self.without_ttl.saturating_sub(mark.without_ttl),
            shared_connections: self
                .shared_connections
                .saturating_sub(mark.shared_connections),
            shared_with: self.shared_with.clone(),
            asked_as: self.asked_as.clone(),
            timeline: self.timeline.since(&mark.timeline),
        }
    }

    pub fn ttl_range(&self) -> Option<(u32, u32)> {
        (self.ttl_min <= self.ttl_max).then_some((self.ttl_min, self.ttl_max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: u64, qtype: u16) -> QuestionKey {
        (NameKey::for_test(name), qtype)
    }

    fn at_secs(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    #[test]
    fn answers_before_the_previous_ttl_ran_out_are_within_ttl() {
        let mut l = ServiceLookups::new(Arc::from("web."));
        let a = q(1, 1);
        l.record_ttl(a, at_secs(0), 300);
        l.record_ttl(a, at_secs(10), 300);
        l.record_ttl(a, at_secs(305), 300);
        l.record_ttl(a, at_secs(700), 300);
        assert_eq!(l.counts(), (4, 2));
        assert_eq!(l.ttl_range(), Some((300, 300)));
    }

    #[test]
    fn a_and_aaaa_for_one_connection_are_one_lookup() {
        let mut l = ServiceLookups::new(Arc::from("web."));
        for s in 0..5 {
            l.record_ttl(q(1, 1), at_secs(s), 60);
            l.record_ttl(q(1, 28), at_secs(s), 30);
        }
        assert_eq!(l.counts(), (5, 4));
        assert_eq!(l.ttl_range(), Some((30, 60)));
    }

    /// dnsmasq counts whole seconds and asks again some 0.16 s before a 5 s
    /// TTL ends: within the grace connections get, that honours the TTL.
    #[test]
    fn a_lookup_within_a_second_of_expiry_is_not_within_ttl() {
        let mut l = ServiceLookups::new(Arc::from("web."));
        let a = q(1, 1);
        let mut at = Timestamp::from_secs(0);
        for _ in 0..5 {
            l.record_ttl(a, at, 5);
            at = Timestamp(at.0 + 4_840_000_000);
        }
        assert_eq!(l.counts(), (5, 0));
        l.record_ttl(a, Timestamp(at.0 - 3_000_000_000), 5);
        assert_eq!(l.counts(), (6, 1));
    }

    #[test]
    fn a_zero_ttl_is_never_within_ttl() {
        let mut l = ServiceLookups::new(Arc::from("web."));
        l.record_ttl(q(1, 1), at_secs(0), 0);
        l.record_ttl(q(1, 1), at_secs(0), 0);
        assert_eq!(l.counts(), (2, 0));
    }

    #[test]
    fn questions_beyond_the_cap_are_not_tracked() {
        let mut l = ServiceLookups::new(Arc::from("svc."));
        for n in 0..(MAX_QUESTIONS_PER_SERVICE as u64 + 4) {
            l.record_ttl(q(n, 1), at_secs(0), 60);
        }
        assert_eq!(l.questions.len(), MAX_QUESTIONS_PER_SERVICE);
    }
}
