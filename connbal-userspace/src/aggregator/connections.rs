//! Connection attempts counted against the backends the client got from
//! DNS, and with `-a` the flows already open when the capture started
//! (spec 4).

use super::backends::Credited;
use super::client::Client;
use super::event::{Owner, Segment};
use super::flows::{FlowKey, Seen};
use super::observation::{Observation, Thread};
use super::{Aggregator, Timestamp};
use connbal_common::tcp_flags::{FIN, RST};
use connbal_common::{is_attempt_reply, is_connection_attempt};
use std::net::IpAddr;

impl Aggregator {
    pub(super) fn tcp_segment(&mut self, s: &Segment<'_>) {
        let attempt = is_connection_attempt(s.flags);
        if is_attempt_reply(s.flags) {
            if let Some((outcome, credit)) = self.attempts.reply(s.src, s.dst, s.flags) {
                // The reply goes to the client that made the attempt: in
                // host mode on the same socket, so to the same owner.
                let client = self.client_of(s.dst.ip(), s.owner);
                self.backends
                    .count_outcome(&client, (s.src.ip(), s.src.port()), credit, outcome);
            }
            if !self.config.all_tcp {
                return;
            }
        }
        // The sender's client, and with -a the receiver's: in host mode
        // both are the local socket's owner, whichever way the segment went.
        let from = self.client_of(s.src.ip(), s.owner);
        // A retransmission, or the SYN seen again on a second interface, is
        // the attempt already counted.
        if attempt && self.attempts.attempt(s.src, s.dst, s.seq) {
            self.counters.connection_attempts += 1;
            if let Some(credited) =
                self.credit_connection(s.ts, &from, (s.dst.ip(), s.dst.port()), true)
            {
                if credited.index != 0 {
                    self.attempts.credited(s.src, s.dst, credited.index);
                }
            } else {
                self.behind_vips.attempt(s.ts, &from, (s.src, s.dst), s.seq);
            }
            self.observe_connection(s.ts, &from, (s.dst.ip(), s.dst.port()), false, s.owner);
        }
        if !self.config.all_tcp {
            return;
        }
        let new_flow = if let Some(new_flow) = s.first_of_flow {
            new_flow
        } else {
            let key = FlowKey::new(s.src, s.dst);
            let (seen, evicted) = self.flows.observe(key, s.ts, s.flags);
            self.counters.flows_evicted += u64::from(evicted);
            seen == Seen::New
        };
        if !new_flow && s.flags & (FIN | RST) != 0 && !self.waiting.is_empty() {
            self.waiting.closed(FlowKey::new(s.src, s.dst));
        }
        if new_flow && !attempt {
            let to = self.client_of(s.dst.ip(), s.owner);
            // Spec 4: counted both ways, whichever side is the backend.
            self.counters.flows_seen_midstream += 1;
            let counted = self.count_connection(s.ts, &from, s.dst.ip(), s.dst.port())
                | self.count_connection(s.ts, &to, s.src.ip(), s.src.port());
            // Neither end is a backend yet: it counts once one is answered,
            // if the flow is still open then. A flow whose first segment
            // already closes it is over.
            if !counted && s.flags & (FIN | RST) == 0 {
                self.waiting.wait(
                    FlowKey::new(s.src, s.dst),
                    [
                        (from.clone(), s.dst.ip(), s.dst.port()),
                        (to.clone(), s.src.ip(), s.src.port()),
                    ],
                );
            }
            // Whichever side is the tracked backend; unknown either way is
            // reported from the sender's side.
            if self.backends.contains(&to, s.src.ip()) {
                self.observe_connection(s.ts, &to, (s.src.ip(), s.src.port()), true, None);
            } else {
                self.observe_connection(s.ts, &from, (s.dst.ip(), s.dst.port()), true, s.owner);
            }
        }
    }

    /// A flow already open (`-a`): it counts, and for the balance it is
    /// judged against the answer in force when it was first seen (or, for
    /// one that waited, when its address was answered). Whether it counted.
    pub(super) fn count_connection(
        &mut self,
        ts: Timestamp,
        client: &Client,
        backend: IpAddr,
        port: u16,
    ) -> bool {
        self.credit_connection(ts, client, (backend, port), false)
            .is_some()
    }

    /// A connection to a backend the client got from DNS, credited to the
    /// name it followed (docs/semantics.md section 4) and judged against
    /// that name's answer in force.
    fn credit_connection(
        &mut self,
        ts: Timestamp,
        client: &Client,
        (backend, port): (IpAddr, u16),
        attempt: bool,
    ) -> Option<Credited> {
        let services = &self.services;
        let (credited, other) = self
            .backends
            .count(client, (backend, port), attempt, |names| {
                services.choose(client, names, backend, ts)
            })?;
        self.counters.connections_to_backends += 1;
        if attempt {
            self.counters.connection_attempts_to_backends += 1;
        }
        if let Some(other) = other {
            self.services.shared(client, credited.service, other);
        }
        self.services.connection(
            (client, credited.service),
            ts,
            backend,
            attempt,
            &self.fresh,
        );
        Some(credited)
    }

    /// `owner`: the packet's socket's, when the client is its sender (its
    /// process and thread are shown).
    fn observe_connection(
        &mut self,
        ts: Timestamp,
        client: &Client,
        (backend, port): (IpAddr, u16),
        midstream: bool,
        owner: Option<&Owner>,
    ) {
        if !self.observations.enabled() {
            return;
        }
        let name = self.backends.name_of(client, backend);
        // With -F the user asked about one service: attempts to addresses
        // outside it are noise.
        if name.is_none() && self.config.filter.is_some() {
            return;
        }
        self.observations.push(Observation::Connection {
            time: ts,
            client: client.clone(),
            backend,
            port,
            name,
            midstream,
            thread: Thread::of(owner),
        });
    }
}
