//! The report: rows grouped per (client, name) service with their verdicts
//! (spec 5), and the counters of what was seen, skipped and refused.

use super::backends::{Row, ServiceSize};
use super::client::Client;
use super::verdict::{self, BackendLoad, Completeness, Service};
use super::window::{Keys, Mark};
use super::{Aggregator, FastSet};
use crate::tally::counter_set;
use serde::Serialize;

counter_set! {
    /// What the aggregator saw and skipped; printed with `-v` and in JSON.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct Counters {
        pub dns_messages: u64,
        pub queries_tracked: u64,
        pub responses_matched: u64,
        pub unmatched_responses: u64,
        /// `-F`: responses to questions the filter left out (not a loss).
        pub responses_filtered_out: u64,
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
        /// Names whose host-wide freshest answer was not kept (a cap):
        /// their stale verdicts use each client's own answers only.
        pub fresh_names_dropped: u64,
        /// Addresses of answers not kept in a service's timeline (a cap);
        /// that service's balance is judged from its backends' last
        /// preferences instead.
        pub timeline_slots_dropped: u64,
        /// DNS-over-TCP segments given up on: not placeable (a gap, a cut
        /// segment, no room), passed over until a message began again, or
        /// held for a gap at the stream's end (the input's end included).
        pub tcp_dns_unplaced_segments: u64,
        /// DNS-over-TCP messages begun and not finished at their stream's
        /// end (the input's end included).
        pub tcp_dns_unfinished_messages: u64,
        /// Broken DNS-over-TCP streams picked up again at a message.
        pub tcp_dns_resynchronised: u64,
        /// Distinct attempts: SYNs with a new 4-tuple or initial sequence
        /// number.
        pub connection_attempts: u64,
        /// SYNs that repeated a counted attempt (retransmitted, or seen on a
        /// second interface).
        pub connection_attempts_repeated: u64,
        /// Attempts forgotten to make room; a later repeat counts again.
        pub connection_attempts_evicted: u64,
        /// SYN-ACKs and resets seen; with none, outcomes are not reported.
        pub connection_attempt_replies: u64,
        pub connections_to_backends: u64,
        /// Attempts (not `-a`'s flows found open) to a backend of a name:
        /// with `-F`, the attempts the filter is about.
        pub connection_attempts_to_backends: u64,
        /// `-a`: flows first seen after their SYN (already open at the start).
        pub flows_seen_midstream: u64,
        /// Clients of cgroups gone a while, forgotten with everything
        /// counted for them (a live trace).
        pub clients_forgotten: u64,
        /// `-a`: flows found open before either end was a backend, forgotten
        /// (a cap) before DNS named one; they never counted.
        pub waiting_flows_evicted: u64,
        /// Host mode: getaddrinfo calls that returned addresses and were
        /// counted as lookups: no DNS answer reached their thread during
        /// the call (systemd-resolved over Varlink, nscd, /etc/hosts).
        pub libc_lookups: u64,
        /// getaddrinfo calls whose thread received a matched DNS answer
        /// during the call: that answer is the lookup, counted once.
        pub libc_lookups_seen_as_dns: u64,
        /// Of `libc_lookups`, those that took the TTL of systemd-resolved's
        /// answer to them (its monitor).
        pub libc_lookups_given_a_ttl: u64,
        /// getaddrinfo calls not counted: a numeric address, no process
        /// known, or `--by ip`, which has no address to credit them to.
        pub libc_lookups_skipped: u64,
    }
}

impl Counters {
    /// Entries a full table refused or evicted that a count or a verdict
    /// could have needed: the report may be short by them.
    pub fn tables_dropped(&self) -> u64 {
        self.pending_evicted
            + self.flows_evicted
            + self.backends_dropped
            + self.srv_targets_dropped
            + self.ports_dropped
            + self.dns_streams_dropped
            + self.services_dropped
            + self.connection_attempts_evicted
        // Not waiting_flows_evicted: under -a most flows found open go to
        // addresses DNS never names, and forgetting those loses nothing.
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// One per (client, name), in report order, each with its rows.
    pub services: Vec<Service>,
    pub counters: Counters,
    /// `-F`: the report is about these names only.
    pub filter: Option<String>,
    /// What a report of the busiest services only left out.
    pub left_out: LeftOut,
    /// Host mode: each (client, name, VIP) whose connections a DNAT sent
    /// on, with the backends it chose.
    pub behind_vips: Vec<super::VipSpread>,
    /// `--window`: the verdicts judge the counts since `since`; `None`
    /// without it.
    pub window: Option<super::Windowed>,
}

/// The services a report of the busiest ones left out, and their rows and
/// connections, so that its reader can count what it does not show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub services: usize,
    pub rows: usize,
    pub connections: u64,
}

impl Report {
    /// Every row, in report order (client, name, backend, port).
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.services.iter().flat_map(|s| s.rows.iter())
    }
}

impl Aggregator {
    /// The counters, including what each table counts for itself.
    pub fn counters(&self) -> Counters {
        // Streams still open give up what they hold if the input ends now.
        let (open_held, open_unfinished) = self.dns_streams.open_left_over();
        Counters {
            pending_expired: self.pending.expired,
            pending_evicted: self.pending.evicted,
            backends_dropped: self.backends.backends_dropped(),
            srv_targets_dropped: self.srv_targets.dropped,
            ports_dropped: self.backends.ports_dropped(),
            dns_streams_dropped: self.dns_streams.dropped,
            services_dropped: self.services.dropped,
            timeline_slots_dropped: self.services.slots.dropped,
            fresh_names_dropped: self.fresh.dropped,
            waiting_flows_evicted: self.waiting.evicted,
            tcp_dns_unplaced_segments: self.dns_streams.unplaced_segments + open_held,
            tcp_dns_unfinished_messages: self.dns_streams.unfinished_messages + open_unfinished,
            tcp_dns_resynchronised: self.dns_streams.resynchronised,
            connection_attempts_repeated: self.attempts.repeated,
            connection_attempts_evicted: self.attempts.evicted,
            connection_attempt_replies: self.attempts.replies_seen,
            ..self.counters.clone()
        }
    }

    pub fn report(&self) -> Report {
        let rows = self.backends.rows(self.attempts.replies_seen > 0);
        self.report_from(&rows, LeftOut::default())
    }

    /// A report of the `limit` services with the most connections (ties in
    /// report order), with what it left out counted: a scrape needs no
    /// more than its series cap can show, and building every row of a
    /// table at its cap (2^18 backends) for each scrape costs the trace
    /// more memory than the tables themselves.
    pub fn report_busiest(&self, limit: usize) -> Report {
        let sizes = self.backends.service_sizes();
        if sizes.len() <= limit {
            return self.report();
        }
        let mut ranked: Vec<(&(&Client, &str), &ServiceSize)> = sizes.iter().collect();
        ranked.sort_unstable_by(|(a, a_size), (b, b_size)| {
            b_size
                .connections
                .cmp(&a_size.connections)
                .then_with(|| a.cmp(b))
        });
        let mut left_out = LeftOut::default();
        for (_, size) in &ranked[limit..] {
            left_out.services += 1;
            left_out.rows += size.rows;
            left_out.connections += size.connections;
        }
        let kept: FastSet<(&Client, &str)> = ranked[..limit].iter().map(|(k, _)| **k).collect();
        let rows = self
            .backends
            .rows_of(self.attempts.replies_seen > 0, |client, name| {
                kept.contains(&(client, name))
            });
        self.report_from(&rows, left_out)
    }

    fn report_from(&self, rows: &[Row], left_out: LeftOut) -> Report {
        let counters = self.counters();
        let completeness = Completeness {
            records_lost: self.input_lost,
            tables_dropped: counters.tables_dropped(),
            live_since: self.config.live_since,
        };
        let mut services = Vec::new();
        for group in rows.chunk_by(|a, b| a.client == b.client && a.name == b.name) {
            services.push(self.assess(group, &completeness));
        }
        Report {
            services,
            counters,
            filter: self.config.filter.clone(),
            left_out,
            behind_vips: self.behind_vips.report(),
            window: self.window.as_ref().map(super::window::Window::describe),
        }
    }

    /// Every count a verdict reads, now: a `--window` mark.
    pub(super) fn mark(&self, keys: &Keys) -> Mark {
        let mut mark = Mark::with_rows(self.backends.row_count());
        // Outcomes are counted whether or not a reply was seen yet, so
        // that a later report's can be taken from them.
        self.backends
            .visit_rows(true, |_, _| true, |row| mark.row(keys, &row));
        for (key, lookups) in self.services.iter() {
            mark.service(keys, key, lookups.tally());
        }
        mark.seal((self.input_lost, self.counters().tables_dropped()))
    }

    /// The verdicts for one (client, name) run of report-ordered rows.
    fn assess(&self, rows: &[Row], completeness: &Completeness) -> Service {
        let first = &rows[0];
        let key = self.names.key(&first.name);
        let lookups = self.services.get(&first.client, key);
        let client = (first.client.clone(), self.resolvers.contains(&first.client));
        let mut service = verdict::assess(
            client.clone(),
            first.name.clone(),
            (&loads_of(rows), rows.to_vec()),
            lookups,
            completeness,
        );
        (service.pids, service.more_pids) = self.pids.of(&first.client);
        if let Some(mark) = self
            .window
            .as_ref()
            .and_then(super::window::Window::judged_from)
        {
            let rows: Vec<Row> = rows.iter().map(|r| mark.row_since(r)).collect();
            let lookups = lookups.map(|l| match mark.service(&first.client, key) {
                Some(tally) => l.since(tally),
                None => l.clone(),
            });
            let (records_lost, tables_dropped) = mark.losses();
            let completeness = Completeness {
                records_lost: completeness.records_lost.saturating_sub(records_lost),
                tables_dropped: completeness.tables_dropped.saturating_sub(tables_dropped),
                ..*completeness
            };
            let recent = verdict::assess(
                client,
                first.name.clone(),
                (&loads_of(&rows), rows),
                lookups.as_ref(),
                &completeness,
            );
            service.judge_over(recent);
        }
        service
    }
}

/// The verdicts look at backend addresses; rows come per port.
fn loads_of(rows: &[Row]) -> Vec<BackendLoad> {
    let mut loads: Vec<BackendLoad> = Vec::new();
    for row in rows {
        match loads.last_mut() {
            Some(load) if load.address == row.backend => load.connections += row.conns,
            _ => loads.push(BackendLoad {
                address: row.backend,
                connections: row.conns,
                srv: row.srv,
            }),
        }
    }
    loads
}
