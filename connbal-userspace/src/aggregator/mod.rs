//! The aggregator: DNS messages and TCP segments in, balance report out.
//!
//! Pure by design (no I/O, no clock, no OS calls): live tracing and replay
//! both feed it [`Event`]s and tests drive it directly. Every counting rule
//! of `docs/semantics.md` lives here, one job per file:
//!
//! - `queries`: DNS messages in, queries matched to their responses;
//! - `answers`: what a matched answer credits, and the SRV target registry;
//! - `lookups` and `timeline`: per (client, name), its lookups and the
//!   answers in force, against which each connection is judged;
//! - `dns_tcp`: DNS over TCP, reassembled per direction into messages;
//! - `connections`: connection attempts and `-a` flows counted;
//! - `attempts`: SYNs to attempts (repeats counted once), and their outcomes;
//! - `observation`: what `--events` streams;
//! - `report`: the rows, per-service verdicts and counters.
//!
//! Each table owns its cap and counts what it refused or evicted.

mod answers;
mod attempts;
mod backends;
mod behind_vip;
mod bounded;
mod client;
mod connections;
pub mod dns;
mod dns_tcp;
mod event;
mod flows;
mod fresh;
mod libc_lookups;
mod lookups;
mod name;
mod observation;
mod queries;
mod report;
mod tcp_stream;
mod timeline;
pub mod verdict;
mod waiting;
mod window;

pub use attempts::{Outcomes, MAX_ATTEMPTS};
pub use backends::{Row, SrvPreference, MAX_BACKENDS, MAX_PORTS};
pub use behind_vip::{VipBackend, VipBalance, VipFinding, VipSpread, VipTraffic};
pub use client::{cgroup, Client, ClientBy, ClientInfo, Container, ContainerNames, Workload};
pub use dns_tcp::MAX_DNS_STREAMS;
pub use event::{
    Carried, Cgroup, Datagram, Event, Lookup, Owner, Process, ResolverAnswer, Segment,
    ServerSocket, Span, Timestamp, Translation,
};
pub use lookups::MAX_SERVICES;
pub use observation::{AnsweredBackend, Observation};
pub use queries::MAX_PENDING_QUERIES;
pub use report::{Counters, LeftOut, Report};
pub use verdict::Service;
pub use window::Windowed;

use answers::SrvTargets;
use attempts::AttemptTable;
use backends::BackendTable;
use connbal_common::is_dns_port;
use dns_tcp::DnsStreams;
use flows::FlowTable;
use lookups::ServiceTable;
use name::NameKeys;
use observation::Observations;
use queries::PendingQueries;
use std::collections::HashMap;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

const NANOS: u64 = 1_000_000_000;
/// Spec 2: pending queries expire after 10 s, swept when the capture clock
/// has moved on more than 10 s since the last sweep.
const SWEEP_INTERVAL_NANOS: u64 = 10 * NANOS;
/// The `-a` flow table evicts its oldest flow when full. It stays below half
/// of a power-of-two hash table's capacity (7/16 of 2^19 buckets): under
/// insert/remove churn a table more than half full doubles when its
/// tombstones run out, instead of rehashing in place, and that doubling was
/// the peak of a flood.
pub const MAX_FLOWS: usize = 200_000;

#[derive(Clone, Debug, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches, each resolved once from a flag or the source"
)]
pub struct Config {
    /// `-a`: also count flows already open when the capture started.
    pub all_tcp: bool,
    /// `-F`: only track queries whose name contains this.
    pub filter: Option<String>,
    /// `--events`: collect an [`Observation`] per DNS answer and connection
    /// attempt, for [`Aggregator::take_observations`].
    pub events: bool,
    /// `--by`: what makes two lookups or connections the same client.
    pub by: ClientBy,
    /// The source knows the socket of every DNS packet, both ways (host
    /// mode): a response must arrive on the socket its query left from,
    /// which tells apart clients that share an address and a query id (two
    /// containers with the same private address).
    pub match_sockets: bool,
    /// The tracer's own network namespace (its kernel cookie), in host
    /// mode: `--by ip` shows addresses there bare, and tells those of other
    /// namespaces apart (docs/semantics.md section 7).
    pub home_netns: Option<u64>,
    /// Live: when the trace began. Answers given before it were not seen,
    /// so a name first looked up within its TTL of it may have had one in
    /// force already.
    pub live_since: Option<Timestamp>,
    /// `--window`: judge the verdicts over about this much of the recent
    /// past (between half of it and all of it); the counts stay since the
    /// start.
    pub window: Option<std::time::Duration>,
    /// The source reports the bytes of connections behind a VIP (host
    /// mode's traffic programs): keep each such connection until it
    /// closes, for them. Without it (replay) none is kept.
    pub connection_bytes: bool,
}

#[derive(Debug)]
pub struct Aggregator {
    config: Config,
    names: NameKeys,
    pending: PendingQueries,
    srv_targets: SrvTargets,
    backends: BackendTable,
    services: ServiceTable,
    dns_streams: DnsStreams,
    flows: FlowTable,
    attempts: AttemptTable,
    /// What no table counts itself: messages seen, skipped, matched.
    counters: Counters,
    last_sweep: Option<Timestamp>,
    observations: Observations,
    /// Scratch for `apply_answer`.
    credits: answers::Credits,
    /// Process ids seen per owner client (`--by app|cgroup`).
    pids: client::PidsSeen,
    /// Clients seen answering DNS queries.
    resolvers: client::Resolvers,
    /// Records the source lost before they reached the aggregator.
    input_lost: u64,
    /// The freshest answer host-wide for each name.
    fresh: fresh::FreshAnswers,
    /// `-a`: flows found open before either end was a backend.
    waiting: waiting::WaitingFlows,
    /// Connections to an address a client got alone (a VIP), by the
    /// backend a DNAT chose.
    behind_vips: behind_vip::BehindVips,
    /// Host mode: when each thread last received a matched DNS answer, so
    /// that a getaddrinfo call that went over DNS counts once.
    wire_answers: libc_lookups::WireAnswers,
    /// Host mode: systemd-resolved's recent answers, whose TTL a
    /// getaddrinfo call over nss-resolve takes.
    resolver_answers: libc_lookups::ResolverAnswers,
    /// `--window`: the marks the verdicts are judged from.
    window: Option<window::Window>,
}

impl Aggregator {
    pub fn new(config: Config) -> Self {
        Self {
            observations: Observations::new(config.events),
            window: config.window.map(window::Window::new),
            behind_vips: behind_vip::BehindVips::new(config.connection_bytes),
            config,
            names: NameKeys::default(),
            pending: PendingQueries::default(),
            srv_targets: SrvTargets::default(),
            backends: BackendTable::default(),
            services: ServiceTable::default(),
            dns_streams: DnsStreams::default(),
            flows: FlowTable::with_cap(MAX_FLOWS),
            attempts: AttemptTable::default(),
            counters: Counters::default(),
            last_sweep: None,
            credits: answers::Credits::default(),
            pids: client::PidsSeen::default(),
            resolvers: client::Resolvers::default(),
            input_lost: 0,
            fresh: fresh::FreshAnswers::default(),
            waiting: waiting::WaitingFlows::default(),
            wire_answers: libc_lookups::WireAnswers::default(),
            resolver_answers: libc_lookups::ResolverAnswers::default(),
        }
    }

    /// Forgets every client `gone` says is gone (a live trace's clients of
    /// cgroups removed a while ago): its services, backends, SRV targets,
    /// processes and waiting flows, their room given back to the caps, so
    /// that an agent's memory follows what runs now. Counted as
    /// `clients_forgotten`; their connections leave the report with them.
    /// Connections behind a VIP not known to have closed.
    pub fn open_behind_vips(&self) -> usize {
        self.behind_vips.open_connections()
    }

    pub fn forget_clients(&mut self, gone: &dyn Fn(&Client) -> bool) {
        let forgotten = self.services.forget(gone);
        self.backends.forget(gone);
        self.srv_targets.forget(gone);
        self.behind_vips.forget(gone);
        self.pids.forget(gone);
        self.resolvers.forget(gone);
        self.waiting.forget(gone);
        self.counters.clients_forgotten += forgotten as u64;
    }

    /// Records the source lost so far (a live trace's full ring buffer):
    /// every count may be short, and the verdicts say so.
    pub fn input_lost(&mut self, records: u64) {
        self.input_lost = records;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// With `Config::events`: what was seen since the last call, in order.
    pub fn take_observations(&mut self) -> std::vec::Drain<'_, Observation> {
        self.observations.take()
    }

    pub fn process(&mut self, event: &Event<'_>) {
        self.advance(event.timestamp());
        self.maybe_sweep(event.timestamp());
        match event {
            Event::Udp(d) => {
                if is_dns_port(d.src.port(), d.dst.port()) {
                    self.dns_message(d.ts, (d.src, d.dst), d.payload, d.truncated, d.owner);
                }
            }
            Event::Tcp(s) => {
                if is_dns_port(s.src.port(), s.dst.port()) {
                    self.dns_segment(s);
                }
                self.tcp_segment(s);
            }
            Event::Server(s) => {
                let server = self.client_of(s.address.ip(), s.owner);
                self.resolvers.note(server);
            }
            Event::Nat(t) => self.behind_vips.translated(t),
            Event::Traffic(c) => self.behind_vips.carried(c),
            Event::Lookup(l) => self.libc_lookup(l),
            Event::ResolverAnswer(a) => {
                let mut name = a.name.trim_end_matches('.').to_string();
                name.push('.');
                self.resolver_answers.note(self.names.key(&name), a);
            }
        }
    }

    /// The time is now `now`: with `--window`, a mark falls due on the
    /// half-window grid. Events move it; a live trace also calls this
    /// while its input is quiet.
    pub fn advance(&mut self, now: Timestamp) {
        let Some(window) = self.window.as_mut() else {
            return;
        };
        let Some(due) = window.due(now) else {
            return;
        };
        // The keys' seed, copied so that the tables can be read while the
        // window is held.
        let keys = window.keys().clone();
        let mark = self.mark(&keys);
        if let Some(window) = &mut self.window {
            window.push(mark, due);
        }
    }

    /// The client behind a packet from `address` with `owner`, as `--by`
    /// says; the processes behind owner clients are remembered.
    fn client_of(&mut self, address: std::net::IpAddr, owner: Option<&Owner>) -> Client {
        let client = Client::of(self.config.by, address, owner, self.config.home_netns);
        if let Some(process) = owner.and_then(|o| o.process.as_ref()) {
            if client.is_owner() {
                self.pids.note(&client, process.tgid);
            }
        }
        client
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
        self.pending.sweep(now);
        self.flows.expire(now);
        self.dns_streams.sweep(now);
    }
}

#[cfg(test)]
mod tests;
