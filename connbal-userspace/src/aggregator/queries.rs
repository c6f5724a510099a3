//! DNS messages in: queries remembered, responses matched to them (spec 2).

use super::bounded::FifoMap;
use super::client::Client;
use super::dns::{self, Header};
use super::event::Owner;
use super::name::NameKey;
use super::observation::{self, Observation, Thread};
use super::{Aggregator, Timestamp, NANOS};
use connbal_common::DNS_PORT;
use std::net::{IpAddr, SocketAddr};

/// Spec 2: pending queries expire after 10 s.
const PENDING_TTL_NANOS: u64 = 10 * NANOS;
/// Spec 2: a message with more than this many answers is ignored.
const MAX_ANSWERS: u16 = 1000;
/// A flood fills pending queries with junk, so the table evicts its oldest
/// entry when full (counted). Below half of 2^19 buckets, as `MAX_FLOWS`.
pub const MAX_PENDING_QUERIES: usize = 200_000;

#[derive(Debug)]
struct PendingQuery {
    seen: Timestamp,
    /// Who asked: the response is credited to them.
    client: Client,
    server: IpAddr,
    client_port: u16,
    name: NameKey,
    /// `-F`: the name asked does not contain the filter; the answer counts
    /// only if a name it gives (after CNAMEs) does.
    outside_filter: bool,
}

/// Queries waiting for their response, keyed by (client address, query
/// id) as spec 2 has it, and by the socket where the source knows it both
/// ways (0 otherwise).
type QueryKey = (IpAddr, u16, u64);

#[derive(Debug)]
pub struct PendingQueries {
    queries: FifoMap<QueryKey, PendingQuery>,
    pub expired: u64,
    /// Evicted, oldest first, because the table was full.
    pub evicted: u64,
}

impl Default for PendingQueries {
    fn default() -> Self {
        Self {
            queries: FifoMap::with_cap(MAX_PENDING_QUERIES),
            expired: 0,
            evicted: 0,
        }
    }
}

impl PendingQueries {
    fn track(&mut self, key: QueryKey, query: PendingQuery) {
        if self.queries.insert(key, query) {
            self.evicted += 1;
        }
    }

    /// Whether a response from `server` to `client_port` could answer the
    /// query under `key`: the cheap check, before decoding anything.
    fn awaits(&self, key: &QueryKey, server: IpAddr, client_port: u16) -> bool {
        self.queries
            .get(key)
            .is_some_and(|q| q.server == server && q.client_port == client_port)
    }

    /// The query under `key`, consumed if it asked for `name`: a duplicate
    /// response then counts nothing.
    fn answer(&mut self, key: &QueryKey, name: NameKey) -> Option<PendingQuery> {
        if self.queries.get(key).is_none_or(|q| q.name != name) {
            return None;
        }
        self.queries.remove(key)
    }

    pub fn sweep(&mut self, now: Timestamp) {
        let before = self.queries.len();
        self.queries
            .retain(|_, q| now.nanos_since(q.seen) < PENDING_TTL_NANOS);
        self.expired += (before - self.queries.len()) as u64;
    }
}

impl Aggregator {
    pub(super) fn dns_message(
        &mut self,
        ts: Timestamp,
        (src, dst): (SocketAddr, SocketAddr),
        message: &[u8],
        truncated: bool,
        owner: Option<&Owner>,
    ) {
        self.counters.dns_messages += 1;
        let Ok(header) = Header::parse(message) else {
            return self.count_undecodable(truncated);
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
        let socket = match owner {
            Some(owner) if self.config.match_sockets => owner.socket,
            _ => 0,
        };
        if is_query {
            self.query(ts, (src, dst), message, (header, socket), truncated, owner);
        } else {
            self.response(
                ts,
                (src, dst),
                message,
                (header, socket),
                (truncated, owner),
            );
        }
    }

    /// With `-F`, whether a name in the answer section (a CNAME's owner,
    /// the canonical name of the addresses) contains the filter.
    fn answer_names_match_filter(&self, records: &[dns::Record]) -> bool {
        let Some(filter) = &self.config.filter else {
            return true;
        };
        records
            .iter()
            .any(|r| r.section == dns::Section::Answer && name_contains(&r.owner, filter))
    }

    /// With `-F`, whether the message's question is one the filter leaves
    /// out: for a response no pending query awaits, it is not a loss.
    /// Decodes the question only when a filter is set.
    fn filtered_out(&self, message: &[u8]) -> bool {
        let Some(filter) = &self.config.filter else {
            return false;
        };
        dns::parse_question(message).is_ok_and(|(_, q, _)| !name_contains(&q.name, filter))
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
        (src, dst): (SocketAddr, SocketAddr),
        message: &[u8],
        (header, socket): (Header, u64),
        truncated: bool,
        owner: Option<&Owner>,
    ) {
        let Ok((_, question, _)) = dns::parse_question(message) else {
            return self.count_undecodable(truncated);
        };
        let tracked_type = matches!(question.qtype, dns::TYPE_A | dns::TYPE_AAAA | dns::TYPE_SRV);
        if question.qclass != dns::CLASS_IN || !tracked_type {
            return;
        }
        let outside_filter = self
            .config
            .filter
            .as_ref()
            .is_some_and(|filter| !name_contains(&question.name, filter));
        self.counters.queries_tracked += 1;
        let query = PendingQuery {
            seen: ts,
            client: self.client_of(src.ip(), owner),
            server: dst.ip(),
            client_port: src.port(),
            name: self.names.key(&question.name),
            outside_filter,
        };
        self.pending.track((src.ip(), header.id, socket), query);
    }

    /// A response is credited to the client of the query it answers: in
    /// host mode, the app that asked, never a stub that relayed it.
    fn response(
        &mut self,
        ts: Timestamp,
        (src, dst): (SocketAddr, SocketAddr),
        message: &[u8],
        (header, socket): (Header, u64),
        (truncated, owner): (bool, Option<&Owner>),
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
        let key = (dst.ip(), header.id, socket);
        if !self.pending.awaits(&key, src.ip(), dst.port()) {
            if self.filtered_out(message) {
                self.counters.responses_filtered_out += 1;
            } else {
                self.counters.unmatched_responses += 1;
            }
            return;
        }
        let decoded = dns::parse_question(message).and_then(|(_, q, at)| {
            dns::parse_records(message, &header, at, &q.name).map(|r| (q, r))
        });
        let Ok((question, records)) = decoded else {
            return self.count_undecodable(truncated);
        };
        let name = self.names.key(&question.name);
        let Some(query) = self.pending.answer(&key, name) else {
            self.counters.unmatched_responses += 1;
            return;
        };
        // `-F pool` is about pool.example. also when the client asked for
        // alias.example.: the answer's own names decide.
        if query.outside_filter && !self.answer_names_match_filter(&records) {
            self.counters.responses_filtered_out += 1;
            return;
        }
        self.counters.responses_matched += 1;
        if let Some(thread) = Thread::of(owner) {
            self.wire_answers.note(thread, ts);
        }
        // Its sender serves DNS. Known by address here; a local resolver's
        // own socket says so in host mode (`Datagram::from_server`).
        if !self.resolvers.is_last(src.ip()) {
            let server = Client::of(self.config.by, src.ip(), None, self.config.home_netns);
            self.resolvers.note(server);
            self.resolvers.last = Some(src.ip());
        }
        let answered = self.apply_answer(
            ts,
            (&query.client, query.server),
            (&question, name),
            &records,
        );
        if self.observations.enabled() {
            self.observations.push(Observation::DnsAnswer {
                time: ts,
                client: query.client,
                server: src.ip(),
                question: question.name,
                qtype: observation::qtype_name(question.qtype),
                backends: answered,
                // The response arrives on the socket its query left from.
                thread: Thread::of(owner),
            });
        }
    }
}

/// `-F`: whether `name` contains `filter`, ignoring ASCII case as DNS names
/// compare (RFC 4343). Hand-written: the standard library has no
/// case-insensitive substring search, and this runs only with `-F`.
pub(super) fn name_contains(name: &str, filter: &str) -> bool {
    let (name, filter) = (name.as_bytes(), filter.as_bytes());
    filter.is_empty()
        || name
            .windows(filter.len())
            .any(|window| window.eq_ignore_ascii_case(filter))
}
