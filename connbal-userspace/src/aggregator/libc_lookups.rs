//! Lookups seen in libc's `getaddrinfo` (host mode), counted as answers
//! with no TTL, once: a call that went over DNS was already counted at
//! its answer (docs/semantics.md section 3, "Lookups in libc").
//!
//! Which DNS answer belongs to which call is told by thread: glibc's and
//! musl's resolvers send and receive on the calling thread's own socket,
//! so a matched answer that reached the caller's thread between the
//! call's start and its return was that call's lookup. Names alone could
//! not tell: a search domain or a CNAME makes the name on the wire
//! another than the one asked.

use super::client::ClientBy;
use super::dns::{self, Record, RecordData, Section};
use super::event::{Lookup, ResolverAnswer};
use super::lookups::TTL_UNKNOWN;
use super::name::NameKey;
use super::observation::{Observation, Thread};
use super::{Aggregator, FastMap, Timestamp};
use std::net::{IpAddr, Ipv4Addr};

/// Threads remembered; past it, those not heard from in `STALE_NANOS` are
/// forgotten, then all (a call in flight then may count twice).
const MAX_THREADS: usize = 1 << 14;
/// Longer than any getaddrinfo call waits (glibc: 5 s a try, 2 tries).
const STALE_NANOS: u64 = 60 * 1_000_000_000;

/// When each thread last received a matched DNS answer.
#[derive(Debug, Default)]
pub struct WireAnswers {
    last: FastMap<Thread, Timestamp>,
}

impl WireAnswers {
    pub fn note(&mut self, thread: Thread, at: Timestamp) {
        if self.last.len() >= MAX_THREADS && !self.last.contains_key(&thread) {
            self.last
                .retain(|_, seen| at.0.saturating_sub(seen.0) < STALE_NANOS);
            if self.last.len() >= MAX_THREADS {
                self.last.clear();
            }
        }
        self.last.insert(thread, at);
    }

    /// Whether `thread` received one at or after `since`.
    fn since(&self, thread: Thread, since: Timestamp) -> bool {
        self.last.get(&thread).is_some_and(|&at| at >= since)
    }
}

/// Resolver answers remembered, by name; past it, those older than
/// `STALE_NANOS` go, then all.
const MAX_RESOLVER_ANSWERS: usize = 1 << 12;
/// How far apart a getaddrinfo call's return and systemd-resolved's answer
/// to it may be seen: the monitor's message is read by connbal, not
/// stamped by the kernel, within a drain of the call's record.
const JOIN_NANOS: u64 = 2_000_000_000;

/// systemd-resolved's latest answer for each name.
#[derive(Debug, Default)]
pub struct ResolverAnswers {
    latest: FastMap<NameKey, Recent>,
}

#[derive(Debug)]
struct Recent {
    at: Timestamp,
    ttl: u32,
    addresses: Vec<IpAddr>,
}

impl ResolverAnswers {
    pub fn note(&mut self, name: NameKey, answer: &ResolverAnswer<'_>) {
        if self.latest.len() >= MAX_RESOLVER_ANSWERS && !self.latest.contains_key(&name) {
            let now = answer.ts.0;
            self.latest
                .retain(|_, recent| now.saturating_sub(recent.at.0) < STALE_NANOS);
            if self.latest.len() >= MAX_RESOLVER_ANSWERS {
                self.latest.clear();
            }
        }
        self.latest.insert(
            name,
            Recent {
                at: answer.ts,
                // Never the "no TTL" mark, whatever the resolver said.
                ttl: answer.ttl.min(TTL_UNKNOWN - 1),
                addresses: answer.addresses.to_vec(),
            },
        );
    }

    /// The TTL of the answer `lookup` got, when resolved gave one for its
    /// name near its return with an address it returned.
    fn ttl_for(&self, name: NameKey, lookup: &Lookup<'_>) -> Option<u32> {
        let recent = self.latest.get(&name)?;
        let near = recent.at.0.abs_diff(lookup.ts.0) <= JOIN_NANOS;
        let same = lookup
            .addresses
            .iter()
            .any(|a| recent.addresses.contains(a));
        (near && same).then_some(recent.ttl)
    }
}

impl Aggregator {
    pub(super) fn libc_lookup(&mut self, lookup: &Lookup<'_>) {
        let Some(thread) = Thread::of(lookup.owner) else {
            self.counters.libc_lookups_skipped += 1;
            return;
        };
        if self.wire_answers.since(thread, lookup.started) {
            self.counters.libc_lookups_seen_as_dns += 1;
            return;
        }
        // A numeric host is no lookup; `--by ip` has no address for the
        // caller (the call has none).
        let numeric = lookup.name.parse::<IpAddr>().is_ok();
        if numeric || lookup.addresses.is_empty() || self.config.by == ClientBy::Ip {
            self.counters.libc_lookups_skipped += 1;
            return;
        }
        let mut name = lookup.name.to_string();
        if !name.ends_with('.') {
            name.push('.');
        }
        if let Some(filter) = &self.config.filter {
            if !super::queries::name_contains(&name, filter) {
                self.counters.responses_filtered_out += 1;
                return;
            }
        }
        self.counters.libc_lookups += 1;
        let key = self.names.key(&name);
        let ttl = self.resolver_answers.ttl_for(key, lookup);
        self.counters.libc_lookups_given_a_ttl += u64::from(ttl.is_some());
        let ttl = ttl.unwrap_or(TTL_UNKNOWN);
        let client = self.client_of(IpAddr::V4(Ipv4Addr::UNSPECIFIED), lookup.owner);
        let records: Vec<Record> = lookup
            .addresses
            .iter()
            .map(|&address| Record {
                section: Section::Answer,
                owner: name.clone(),
                class: dns::CLASS_IN,
                ttl,
                data: match address {
                    IpAddr::V4(v4) => RecordData::A(v4),
                    IpAddr::V6(v6) => RecordData::Aaaa(v6),
                },
            })
            .collect();
        let question = dns::Question {
            name,
            qtype: dns::TYPE_GETADDRINFO,
            qclass: dns::CLASS_IN,
        };
        // No DNS from the caller: whatever answered is on its own host,
        // over a local socket or a file, with no address to show.
        let server = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let answered = self.apply_answer(lookup.ts, (&client, server), (&question, key), &records);
        if self.observations.enabled() {
            self.observations.push(Observation::DnsAnswer {
                time: lookup.ts,
                client,
                server,
                question: question.name,
                qtype: super::observation::qtype_name(question.qtype),
                backends: answered,
                thread: Some(thread),
            });
        }
    }
}
