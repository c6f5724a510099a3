//! The aggregator: DNS messages and TCP segments in, balance report out.
//!
//! Pure by design (no I/O, no clock, no OS calls): live tracing and replay
//! both feed it [`Event`]s and tests drive it directly. Every clause of
//! `shared/spec/connbal-semantics.md` that concerns counting lives here.

mod backends;
mod bounded;
pub mod dns;
mod event;
mod flows;
mod lookups;
pub mod name;
pub mod observation;
mod tcp_stream;
pub mod verdict;

pub use backends::{service_runs, Row, SrvPreference};
pub use event::{Datagram, Event, Segment, Timestamp};
pub use observation::Observation;
pub use verdict::Service;

use backends::{rows_for, Backend};
use bounded::FifoMap;
use connbal_common::{closes_flow, is_connection_attempt, is_dns_port, tcp_flags, DNS_PORT};
use dns::{Header, Record, RecordData, Section};
use flows::{FlowKey, FlowTable, Seen};
use lookups::ServiceLookups;
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tcp_stream::Stream;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

const NANOS: u64 = 1_000_000_000;
/// Spec 2: pending queries expire after 10 s, swept when the capture clock
/// has moved on more than 10 s since the last sweep.
const PENDING_TTL_NANOS: u64 = 10 * NANOS;
const SWEEP_INTERVAL_NANOS: u64 = 10 * NANOS;
/// Spec 2: a message with more than this many answers is ignored.
const MAX_ANSWERS: u16 = 1000;
const DNS_STREAM_IDLE_NANOS: u64 = 60 * NANOS;
/// Hard caps, so that memory is bounded by them whatever the input. Floods
/// fill pending queries and flows with junk, so those evict their oldest
/// entry; tables holding counted results refuse new entries instead, since
/// evicting them would silently falsify the report. Both are counted.
///
/// The two evicting tables stay below half of a power-of-two hash table's
/// capacity (7/16 of 2^19 buckets): under insert/remove churn a table more
/// than half full doubles when its tombstones run out, instead of
/// rehashing in place, and that doubling was the peak of a flood.
pub const MAX_PENDING_QUERIES: usize = 200_000;
pub const MAX_FLOWS: usize = 200_000;
pub const MAX_BACKENDS: usize = 1 << 18;
pub const MAX_SRV_TARGETS: usize = 1 << 16;
/// (backend, port) pairs over all backends: a port scan under -a adds one
/// per port.
pub const MAX_PORTS: usize = 1 << 20;
/// Each stream buffers at most one message (64 KiB) plus held segments.
pub const MAX_DNS_STREAMS: usize = 1 << 10;
/// (client, name) pairs whose lookups and TTLs are tracked.
pub const MAX_SERVICES: usize = 1 << 18;

#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `-a`: also count flows already open when the capture started.
    pub all_tcp: bool,
    /// `-F`: only track queries whose name contains this.
    pub filter: Option<String>,
    /// `--events`: collect an [`Observation`] per DNS answer and connection
    /// attempt, for [`Aggregator::take_observations`].
    pub events: bool,
}

/// What the aggregator saw and skipped; printed with `-v` and in JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub dns_messages: u64,
    pub queries_tracked: u64,
    pub responses_matched: u64,
    pub unmatched_responses: u64,
    pub malformed_dns_skipped: u64,
    /// Messages cut short by the snap length that could not be decoded.
    pub truncated_dns_skipped: u64,
    pub ignored_multiple_questions: u64,
    pub ignored_too_many_answers: u64,
    /// Responses with TC set: the client discards them and asks again
    /// (usually over TCP), so they count nothing (RFC 2181 section 9).
    pub ignored_truncated_responses: u64,
    pub pending_expired: u64,
    /// Pending queries evicted, oldest first, because the table was full.
    pub pending_evicted: u64,
    /// `-a` flows evicted, oldest first; one seen again counts again.
    pub flows_evicted: u64,
    /// New backends, SRV targets, ports and DNS-over-TCP streams not
    /// tracked because their table was full.
    pub backends_dropped: u64,
    pub srv_targets_dropped: u64,
    pub ports_dropped: u64,
    pub dns_streams_dropped: u64,
    /// (client, name) pairs whose lookups were not tracked (table full);
    /// their TTL verdict is missing.
    pub services_dropped: u64,
    pub tcp_dns_unplaced_segments: u64,
    pub connection_attempts: u64,
    pub connections_to_backends: u64,
    /// `-a`: flows first seen after their SYN (already open at the start).
    pub flows_seen_midstream: u64,
}

#[derive(Debug)]
struct PendingQuery {
    seen: Timestamp,
    server: IpAddr,
    client_port: u16,
    /// Keyed hash of the lower-cased question name: a pending query needs
    /// only to recognise its name again, and a flood of them should not
    /// cost a heap string each.
    name: u64,
}

#[derive(Debug)]
struct SrvTarget {
    /// The SRV owner (service) name that first named this target.
    service: Arc<str>,
    ports: Vec<u16>,
    /// From the SRV record that last named this target.
    preference: SrvPreference,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<Row>,
    /// One per (client, name) in `rows`, in the same order, with verdicts.
    pub services: Vec<Service>,
    pub counters: Counters,
}

#[derive(Debug)]
pub struct Aggregator {
    config: Config,
    /// Keyed by (client address, query id), spec 2.
    pending: FifoMap<(IpAddr, u16), PendingQuery>,
    /// Keyed by the keyed hash of the lower-cased target name (as pending
    /// queries are: the hasher's seed is random per run, so collisions
    /// cannot be aimed); remembered for the whole run.
    srv_targets: FastMap<u64, SrvTarget>,
    /// Keyed by (client address, backend address), spec 4.
    backends: FastMap<(IpAddr, IpAddr), Backend>,
    /// (backend, port) entries over all backends, against MAX_PORTS.
    port_entries: usize,
    /// Keyed by (client address, keyed hash of the lower-cased credited
    /// name).
    services: FastMap<(IpAddr, u64), ServiceLookups>,
    /// One per direction of a port-53 TCP flow.
    dns_streams: FastMap<(SocketAddr, SocketAddr), (Timestamp, Stream)>,
    flows: FlowTable,
    counters: Counters,
    last_sweep: Option<Timestamp>,
    reassembled: Vec<Vec<u8>>,
    name_hasher: foldhash::fast::RandomState,
    observations: Vec<Observation>,
    /// Scratch for `apply_answer`, kept to avoid an allocation per answer.
    credited: Vec<(Arc<str>, u32)>,
}

impl Aggregator {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            pending: FifoMap::with_cap(MAX_PENDING_QUERIES),
            srv_targets: FastMap::default(),
            backends: FastMap::default(),
            port_entries: 0,
            services: FastMap::default(),
            dns_streams: FastMap::default(),
            flows: FlowTable::with_cap(MAX_FLOWS),
            counters: Counters::default(),
            last_sweep: None,
            reassembled: Vec::new(),
            name_hasher: foldhash::fast::RandomState::default(),
            observations: Vec::new(),
            credited: Vec::new(),
        }
    }

    /// With `Config::events`: what was seen since the last call, in order.
    pub fn take_observations(&mut self) -> std::vec::Drain<'_, Observation> {
        self.observations.drain(..)
    }

    pub fn process(&mut self, event: &Event<'_>) {
        self.maybe_sweep(event.timestamp());
        match event {
            Event::Udp(d) => {
                if is_dns_port(d.src.port(), d.dst.port()) {
                    self.dns_message(d.ts, d.src, d.dst, d.payload, d.truncated);
                }
            }
            Event::Tcp(s) => {
                if is_dns_port(s.src.port(), s.dst.port()) {
                    self.dns_segment(s);
                }
                self.tcp_segment(s);
            }
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn report(&self) -> Report {
        let mut rows = Vec::with_capacity(self.backends.len());
        for (&(client, backend), b) in &self.backends {
            rows_for(client, backend, b, &mut rows);
        }
        rows.sort_by(Row::report_order);
        let services = self.services_of(&rows);
        Report {
            rows,
            services,
            counters: self.counters.clone(),
        }
    }

    /// Verdicts for each (client, name) run of the sorted rows.
    fn services_of(&self, rows: &[Row]) -> Vec<Service> {
        let mut services = Vec::new();
        for group in backends::service_runs(rows) {
            let first = &group[0];
            // Rows come per port; the verdicts look at backend addresses.
            let mut loads: Vec<(IpAddr, verdict::BackendLoad)> = Vec::new();
            for row in group {
                match loads.last_mut() {
                    Some((addr, load)) if *addr == row.backend => load.connections += row.conns,
                    _ => loads.push((
                        row.backend,
                        verdict::BackendLoad {
                            connections: row.conns,
                            srv: row.srv,
                        },
                    )),
                }
            }
            let loads: Vec<verdict::BackendLoad> = loads.into_iter().map(|(_, l)| l).collect();
            let lookups = self
                .services
                .get(&(first.client, self.name_key(&first.name)));
            services.push(verdict::assess(
                first.client,
                first.name.clone(),
                &loads,
                lookups,
            ));
        }
        services
    }

    fn maybe_sweep(&mut self, now: Timestamp) {
        let Some(last) = self.last_sweep else {
            self.last_sweep = Some(now);
            return;
        };
        if now.nanos_since(last) <= SWEEP_INTERVAL_NANOS {
            return;
        }
        self.last_sweep = Some(now);
        let before = self.pending.len();
        self.pending
            .retain(|_, q| now.nanos_since(q.seen) < PENDING_TTL_NANOS);
        self.counters.pending_expired += (before - self.pending.len()) as u64;
        self.flows.expire(now);
        self.dns_streams
            .retain(|_, (last_seen, _)| now.nanos_since(*last_seen) < DNS_STREAM_IDLE_NANOS);
    }

    fn dns_message(
        &mut self,
        ts: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        message: &[u8],
        truncated: bool,
    ) {
        self.counters.dns_messages += 1;
        let header = match Header::parse(message) {
            Ok(h) => h,
            Err(_) => return self.count_undecodable(truncated),
        };
        if header.questions != 1 {
            if header.questions > 1 {
                self.counters.ignored_multiple_questions += 1;
            }
            return;
        }
        // Direction decides (spec 2, 3); only port-53-to-port-53 traffic
        // between servers needs the QR bit to tell.
        let is_query = if src.port() == DNS_PORT && dst.port() == DNS_PORT {
            !header.is_response
        } else {
            dst.port() == DNS_PORT
        };
        if is_query {
            self.query(ts, src, dst, message, header, truncated);
        } else {
            self.response(ts, src, dst, message, header, truncated);
        }
    }

    /// DNS names compare case-insensitively.
    fn name_key(&self, name: &str) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = self.name_hasher.build_hasher();
        for byte in name.bytes() {
            hasher.write_u8(byte.to_ascii_lowercase());
        }
        hasher.finish()
    }

    fn count_undecodable(&mut self, truncated: bool) {
        if truncated {
            self.counters.truncated_dns_skipped += 1;
        } else {
            self.counters.malformed_dns_skipped += 1;
        }
    }

    fn query(
        &mut self,
        ts: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        message: &[u8],
        header: Header,
        truncated: bool,
    ) {
        let question = match dns::parse_question(message) {
            Ok((_, q, _)) => q,
            Err(_) => return self.count_undecodable(truncated),
        };
        let tracked_type = matches!(question.qtype, dns::TYPE_A | dns::TYPE_AAAA | dns::TYPE_SRV);
        if question.qclass != dns::CLASS_IN || !tracked_type {
            return;
        }
        if let Some(filter) = &self.config.filter {
            if !question.name.contains(filter.as_str()) {
                return;
            }
        }
        let key = (src.ip(), header.id);
        self.counters.queries_tracked += 1;
        let query = PendingQuery {
            seen: ts,
            server: dst.ip(),
            client_port: src.port(),
            name: self.name_key(&question.name),
        };
        if self.pending.insert(key, query) {
            self.counters.pending_evicted += 1;
        }
    }

    fn response(
        &mut self,
        ts: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        message: &[u8],
        header: Header,
        truncated: bool,
    ) {
        if header.answers == 0 {
            return;
        }
        if header.answers > MAX_ANSWERS {
            self.counters.ignored_too_many_answers += 1;
            return;
        }
        if header.truncated {
            // Not matched either: the pending query stays for the retry if
            // it reuses the id, and expires otherwise.
            self.counters.ignored_truncated_responses += 1;
            return;
        }
        // Cheap checks first: most responses on a busy resolver are not ours.
        let key = (dst.ip(), header.id);
        let matches_endpoints = self
            .pending
            .get(&key)
            .is_some_and(|q| q.server == src.ip() && q.client_port == dst.port());
        if !matches_endpoints {
            self.counters.unmatched_responses += 1;
            return;
        }
        let (question, records) = match dns::parse_question(message).and_then(|(_, q, at)| {
            dns::parse_records(message, &header, at, &q.name).map(|r| (q, r))
        }) {
            Ok(decoded) => decoded,
            Err(_) => return self.count_undecodable(truncated),
        };
        let name = self.name_key(&question.name);
        if self.pending.get(&key).is_none_or(|q| q.name != name) {
            self.counters.unmatched_responses += 1;
            return;
        }
        // Consumed: a duplicate response counts nothing.
        self.pending.remove(&key);
        self.counters.responses_matched += 1;
        let answered = self.apply_answer(ts, dst.ip(), (&question, name), &records);
        if self.config.events {
            self.observations.push(Observation::DnsAnswer {
                time: ts,
                client: dst.ip(),
                server: src.ip(),
                question: question.name,
                qtype: observation::qtype_name(question.qtype),
                backends: answered,
            });
        }
    }

    /// Spec 3: walk answer, authority and additional records in order.
    /// Returns the backends credited when observations are collected.
    fn apply_answer(
        &mut self,
        ts: Timestamp,
        client: IpAddr,
        (question_asked, question_key): (&dns::Question, u64),
        records: &[Record],
    ) -> Vec<observation::AnsweredBackend> {
        let mut answered = Vec::new();
        let question = question_asked.name.as_str();
        // Names this answer credited, with the least TTL of their records.
        let mut credited = std::mem::take(&mut self.credited);
        let answer_count = records
            .iter()
            .filter(|r| r.section == Section::Answer)
            .count();
        for record in records {
            if record.data == RecordData::Opt {
                continue;
            }
            if record.class != dns::CLASS_IN {
                break;
            }
            if record.section == Section::Authority {
                continue;
            }
            // Answers are about the question; additional records about
            // their own owner. Only A, AAAA and CNAME records look it up.
            let checked_key = match (&record.section, &record.data) {
                (Section::Answer, _) => question_key,
                (_, RecordData::A(_) | RecordData::Aaaa(_) | RecordData::Cname) => {
                    self.name_key(&record.owner)
                }
                _ => 0,
            };
            match &record.data {
                RecordData::Srv {
                    port,
                    target,
                    priority,
                    weight,
                } => self.register_srv_target(
                    &record.owner,
                    *port,
                    target,
                    SrvPreference {
                        priority: *priority,
                        weight: *weight,
                    },
                ),
                RecordData::A(_) | RecordData::Aaaa(_) => {
                    let Some(address) = record.data.address() else {
                        continue;
                    };
                    let name =
                        self.credit_address(client, address, record, checked_key, answer_count);
                    self.note_answered(&mut answered, address, &name, record.ttl, checked_key);
                    note_credit(&mut credited, name, record.ttl);
                }
                RecordData::Cname => {
                    if answer_count <= 2 && !self.srv_targets.contains_key(&checked_key) {
                        // A single name behind an alias is not a service.
                        break;
                    }
                }
                RecordData::Opt | RecordData::Other => {}
            }
        }
        let asked = (question_key, question_asked.qtype);
        for (name, ttl) in credited.drain(..) {
            // Usually the name asked; hashing it again showed in profiles.
            let name_key = if name.eq_ignore_ascii_case(question) {
                question_key
            } else {
                self.name_key(&name)
            };
            let key = (client, name_key);
            // One hash for the common case: a service seen before.
            if let Some(lookups) = self.services.get_mut(&key) {
                lookups.record(asked, ts, ttl);
            } else if self.services.len() < MAX_SERVICES {
                let mut lookups = ServiceLookups::new(name);
                lookups.record(asked, ts, ttl);
                self.services.insert(key, lookups);
            } else {
                self.counters.services_dropped += 1;
            }
        }
        self.credited = credited;
        answered
    }

    fn note_answered(
        &self,
        answered: &mut Vec<observation::AnsweredBackend>,
        address: IpAddr,
        credited: &Option<Arc<str>>,
        ttl: u32,
        checked_key: u64,
    ) {
        let (true, Some(name)) = (self.config.events, credited) else {
            return;
        };
        let ports = self
            .srv_targets
            .get(&checked_key)
            .map(|t| t.ports.clone())
            .unwrap_or_default();
        answered.push(observation::AnsweredBackend {
            address,
            name: name.clone(),
            ttl,
            ports,
        });
    }

    fn register_srv_target(
        &mut self,
        service: &str,
        port: u16,
        target: &str,
        preference: SrvPreference,
    ) {
        let key = self.name_key(target);
        if !self.srv_targets.contains_key(&key) && self.srv_targets.len() >= MAX_SRV_TARGETS {
            self.counters.srv_targets_dropped += 1;
            return;
        }
        let entry = self.srv_targets.entry(key).or_insert_with(|| SrvTarget {
            service: Arc::from(service),
            ports: Vec::new(),
            preference,
        });
        entry.preference = preference;
        if !entry.ports.contains(&port) {
            entry.ports.push(port);
        }
    }

    /// Returns the name credited, if the address counted.
    fn credit_address(
        &mut self,
        client: IpAddr,
        addr: IpAddr,
        record: &Record,
        checked_key: u64,
        answer_count: usize,
    ) -> Option<Arc<str>> {
        let Self {
            srv_targets,
            backends,
            counters,
            port_entries,
            ..
        } = self;
        if let Some(target) = srv_targets.get(&checked_key) {
            let name = || target.service.clone();
            let backend = backend_entry(backends, (client, addr), name, counters)?;
            backend.srv = Some(target.preference);
            for &port in &target.ports {
                if let Some(slot) = port_slot(backend, port, port_entries, counters) {
                    slot.srv_dns += 1;
                }
            }
            // The report groups rows by the backend's (first) name.
            Some(backend.name.clone())
        } else if record.section == Section::Answer && answer_count > 1 {
            let name = || Arc::from(record.owner.as_str());
            let backend = backend_entry(backends, (client, addr), name, counters)?;
            backend.address_dns += 1;
            Some(backend.name.clone())
        } else {
            None
        }
    }

    fn dns_segment(&mut self, s: &Segment<'_>) {
        let key = (s.src, s.dst);
        if s.flags & tcp_flags::SYN != 0 {
            self.dns_streams.remove(&key);
            if self.dns_streams.len() < MAX_DNS_STREAMS {
                self.dns_streams
                    .insert(key, (s.ts, Stream::new(s.seq.wrapping_add(1))));
            } else {
                self.counters.dns_streams_dropped += 1;
            }
        }
        if !s.payload.is_empty() || s.truncated {
            if !self.dns_streams.contains_key(&key) && self.dns_streams.len() >= MAX_DNS_STREAMS {
                self.counters.dns_streams_dropped += 1;
                self.counters.tcp_dns_unplaced_segments += 1;
            } else {
                let (last_seen, stream) = self
                    .dns_streams
                    .entry(key)
                    .or_insert_with(|| (s.ts, Stream::new(s.seq)));
                *last_seen = s.ts;
                let mut messages = std::mem::take(&mut self.reassembled);
                // Data carried on a SYN (TCP Fast Open) starts after the SYN's
                // own sequence number.
                let data_seq = if s.flags & tcp_flags::SYN != 0 {
                    s.seq.wrapping_add(1)
                } else {
                    s.seq
                };
                let outcome = stream.push(data_seq, s.payload, s.truncated, &mut messages);
                self.counters.tcp_dns_unplaced_segments += outcome.unplaced_segments;
                for message in messages.drain(..) {
                    self.dns_message(s.ts, s.src, s.dst, &message, false);
                }
                self.reassembled = messages;
            }
        }
        // FIN ends only the sender's direction: the peer may still answer.
        if s.flags & tcp_flags::RST != 0 {
            self.dns_streams.remove(&(s.dst, s.src));
        }
        if closes_flow(s.flags) {
            self.dns_streams.remove(&key);
        }
    }

    fn tcp_segment(&mut self, s: &Segment<'_>) {
        let attempt = is_connection_attempt(s.flags);
        if attempt {
            self.counters.connection_attempts += 1;
            self.count_connection(s.src.ip(), s.dst.ip(), s.dst.port());
            self.observe_connection(s.ts, s.src.ip(), s.dst.ip(), s.dst.port(), false);
        }
        if !self.config.all_tcp {
            return;
        }
        let new_flow = match s.first_of_flow {
            Some(new_flow) => new_flow,
            None => {
                let key = FlowKey::new(s.src, s.dst);
                let (seen, evicted) = self.flows.observe(key, s.ts, attempt, closes_flow(s.flags));
                self.counters.flows_evicted += u64::from(evicted);
                seen == Seen::New
            }
        };
        if new_flow && !attempt {
            // Spec 4: counted both ways, whichever side is the backend.
            self.counters.flows_seen_midstream += 1;
            self.count_connection(s.src.ip(), s.dst.ip(), s.dst.port());
            self.count_connection(s.dst.ip(), s.src.ip(), s.src.port());
            // Whichever side is the tracked backend; unknown either way is
            // reported from the sender's side.
            if self.backends.contains_key(&(s.dst.ip(), s.src.ip())) {
                self.observe_connection(s.ts, s.dst.ip(), s.src.ip(), s.src.port(), true);
            } else {
                self.observe_connection(s.ts, s.src.ip(), s.dst.ip(), s.dst.port(), true);
            }
        }
    }

    fn observe_connection(
        &mut self,
        ts: Timestamp,
        client: IpAddr,
        backend: IpAddr,
        port: u16,
        midstream: bool,
    ) {
        if !self.config.events {
            return;
        }
        let name = self
            .backends
            .get(&(client, backend))
            .map(|b| b.name.clone());
        // With -F the user asked about one service: attempts to addresses
        // outside it are noise.
        if name.is_none() && self.config.filter.is_some() {
            return;
        }
        self.observations.push(Observation::Connection {
            time: ts,
            client,
            backend,
            port,
            name,
            midstream,
        });
    }

    fn count_connection(&mut self, client: IpAddr, backend: IpAddr, port: u16) {
        let Some(b) = self.backends.get_mut(&(client, backend)) else {
            return;
        };
        if let Some(slot) = port_slot(b, port, &mut self.port_entries, &mut self.counters) {
            slot.connections += 1;
            self.counters.connections_to_backends += 1;
        }
    }
}

fn note_credit(credited: &mut Vec<(Arc<str>, u32)>, name: Option<Arc<str>>, ttl: u32) {
    let Some(name) = name else { return };
    // Pointer equality first: an answer credits the same Arc many times.
    match credited
        .iter_mut()
        .find(|(n, _)| Arc::ptr_eq(n, &name) || *n == name)
    {
        Some((_, least)) => *least = (*least).min(ttl),
        None => credited.push((name, ttl)),
    }
}

/// The backend for `key`, created if there is room (MAX_BACKENDS).
fn backend_entry<'b>(
    backends: &'b mut FastMap<(IpAddr, IpAddr), Backend>,
    key: (IpAddr, IpAddr),
    name: impl FnOnce() -> Arc<str>,
    counters: &mut Counters,
) -> Option<&'b mut Backend> {
    if !backends.contains_key(&key) && backends.len() >= MAX_BACKENDS {
        counters.backends_dropped += 1;
        return None;
    }
    Some(backends.entry(key).or_insert_with(|| Backend::new(name())))
}

/// The backend's counts for `port`, added if there is room (MAX_PORTS).
fn port_slot<'b>(
    backend: &'b mut Backend,
    port: u16,
    port_entries: &mut usize,
    counters: &mut Counters,
) -> Option<&'b mut backends::PortCount> {
    let known = backend.ports.iter().any(|p| p.port == port);
    if !known {
        if *port_entries >= MAX_PORTS {
            counters.ports_dropped += 1;
            return None;
        }
        *port_entries += 1;
    }
    Some(backend.port_mut(port))
}

#[cfg(test)]
mod tests;
