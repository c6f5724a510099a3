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
use super::event::Lookup;
use super::lookups::TTL_UNKNOWN;
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
        let client = self.client_of(IpAddr::V4(Ipv4Addr::UNSPECIFIED), lookup.owner);
        let records: Vec<Record> = lookup
            .addresses
            .iter()
            .map(|&address| Record {
                section: Section::Answer,
                owner: name.clone(),
                class: dns::CLASS_IN,
                ttl: TTL_UNKNOWN,
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
        let key = self.names.key(&question.name);
        // No server: whatever answered is not known here.
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
