//! What a matched answer credits (spec 3): backends from A/AAAA sets and SRV
//! targets, and the lookups behind the TTL verdict.

use super::backends::SrvPreference;
use super::client::Client;
use super::dns::{self, Record, RecordData, Section};
use super::lookups::Offered;
use super::name::NameKey;
use super::observation::AnsweredBackend;
use super::timeline::{Offer, SrvSet};
use super::{Aggregator, FastMap, Timestamp};
use std::net::IpAddr;
use std::sync::Arc;

/// SRV targets remembered for the whole run; a full registry refuses new
/// ones (counted).
pub const MAX_SRV_TARGETS: usize = 1 << 16;

#[derive(Debug)]
struct SrvTarget {
    /// The SRV owner (service) name that first named this target.
    service: Arc<str>,
    ports: Vec<u16>,
    /// From the SRV record that last named this target.
    preference: SrvPreference,
}

/// Targets named by SRV records, by client and target name: their A/AAAA
/// records (in this answer or a later one) are backends of the service for
/// the client that asked for the SRV set. Another client resolving a target
/// by name (a health checker) never asked for the set (docs/semantics.md
/// section 7: sections 2 to 5 apply per client).
#[derive(Debug, Default)]
pub struct SrvTargets {
    /// By target name first: most A records name no target, and a miss
    /// then costs the hash of a name, not of a client too (profiles).
    /// Rarely more than one client per target.
    targets: FastMap<NameKey, Vec<(Client, SrvTarget)>>,
    len: usize,
    /// Targets not tracked because the registry was full.
    pub dropped: u64,
}

impl SrvTargets {
    /// Forgets the targets the clients `gone` says are gone asked for.
    pub fn forget(&mut self, gone: &dyn Fn(&Client) -> bool) {
        let len = &mut self.len;
        self.targets.retain(|_, clients| {
            let before = clients.len();
            clients.retain(|(client, _)| !gone(client));
            *len -= before - clients.len();
            !clients.is_empty()
        });
    }

    /// Returns the service the target's addresses are credited under.
    fn register(
        &mut self,
        client: &Client,
        service: &str,
        (port, target): (u16, NameKey),
        preference: SrvPreference,
    ) -> Option<Arc<str>> {
        let clients = self.targets.entry(target).or_default();
        let index = match clients.iter().position(|(c, _)| c == client) {
            Some(i) => i,
            None if self.len >= MAX_SRV_TARGETS => {
                self.dropped += 1;
                return None;
            }
            None => {
                self.len += 1;
                clients.push((
                    client.clone(),
                    SrvTarget {
                        service: Arc::from(service),
                        ports: Vec::new(),
                        preference,
                    },
                ));
                clients.len() - 1
            }
        };
        let entry = &mut clients[index].1;
        entry.preference = preference;
        if !entry.ports.contains(&port) {
            entry.ports.push(port);
        }
        Some(entry.service.clone())
    }

    fn get(&self, client: &Client, target: Option<NameKey>) -> Option<&SrvTarget> {
        // Most answers name no SRV target; no key to build for them.
        if self.len == 0 {
            return None;
        }
        self.targets
            .get(&target?)?
            .iter()
            .find(|(c, _)| c == client)
            .map(|(_, t)| t)
    }

    fn contains(&self, client: &Client, target: Option<NameKey>) -> bool {
        self.get(client, target).is_some()
    }
}

/// Scratch for `apply_answer`, kept to avoid allocations per answer.
#[derive(Debug, Default)]
pub struct Credits {
    /// Names the answer credited, with the least TTL of their records.
    names: Vec<(Arc<str>, u32)>,
    /// Addresses offered, by index into `names`.
    offers: Vec<(usize, Offer)>,
    /// The SRV records of the answer section: the set the question's name
    /// offers now.
    srv: SrvSet,
    /// One name's offers, handed to the service table.
    one: Vec<Offer>,
    /// Their addresses, for the host-wide freshest answer.
    addresses: Vec<IpAddr>,
    /// `-a`: addresses credited that open flows may wait on, and those
    /// flows' ports.
    answered: Vec<IpAddr>,
    ports: Vec<u16>,
}

impl Credits {
    fn note(&mut self, name: Arc<str>, ttl: u32) -> usize {
        // Pointer equality first: an answer credits the same Arc many times.
        if let Some(i) = self
            .names
            .iter_mut()
            .position(|(n, _)| Arc::ptr_eq(n, &name) || *n == name)
        {
            self.names[i].1 = self.names[i].1.min(ttl);
            i
        } else {
            self.names.push((name, ttl));
            self.names.len() - 1
        }
    }
}

impl Aggregator {
    /// Spec 3: walk answer, authority and additional records in order.
    /// Returns the backends credited when observations are collected.
    pub(super) fn apply_answer(
        &mut self,
        ts: Timestamp,
        (client, server): (&Client, IpAddr),
        (question_asked, question_key): (&dns::Question, NameKey),
        records: &[Record],
    ) -> Vec<AnsweredBackend> {
        // Unspecified: a getaddrinfo call answered without DNS from the
        // caller (systemd-resolved over Varlink, nscd, /etc/hosts): on its
        // own host too.
        let local_server = (is_local_resolver(server) || server.is_unspecified()).then_some(server);
        let mut answered = Vec::new();
        let question = question_asked.name.as_str();
        let mut credits = std::mem::take(&mut self.credits);
        let answer_count = records
            .iter()
            .filter(|r| r.section == Section::Answer)
            .count();
        // The SRV set's owner, credited with the set even when no address
        // comes with it: the set in force decides which targets count.
        let mut srv_owner: Option<usize> = None;
        // An answer through CNAMEs is good for its chain's least TTL: the
        // alias may point elsewhere once its own record expires (Envoy had
        // this bug, envoyproxy/envoy#28925).
        let mut chain_ttl = u32::MAX;
        // The answer's first address: how often each backend is listed
        // first tells a server that never rotates its answers.
        let mut first_in_answer = true;
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
                (Section::Answer, _) => Some(question_key),
                (_, RecordData::A(_) | RecordData::Aaaa(_) | RecordData::Cname) => {
                    Some(self.names.key(&record.owner))
                }
                _ => None,
            };
            match &record.data {
                RecordData::Srv {
                    port,
                    target,
                    priority,
                    weight,
                } => {
                    let target = self.names.key(target);
                    let preference = SrvPreference {
                        priority: *priority,
                        weight: *weight,
                    };
                    // The set goes to the name its targets' addresses are
                    // credited under (the registry's, without allocating).
                    let service = self.srv_targets.register(
                        client,
                        &record.owner,
                        (*port, target),
                        preference,
                    );
                    if let (Section::Answer, Some(service)) = (record.section, service) {
                        srv_owner = Some(credits.note(service, record.ttl));
                        if !credits.srv.iter().any(|&(t, _)| t == target) {
                            credits.srv.push((target, preference));
                        }
                    }
                }
                RecordData::A(_) | RecordData::Aaaa(_) => {
                    let Some(address) = record.data.address() else {
                        continue;
                    };
                    let first = record.section == Section::Answer && first_in_answer;
                    first_in_answer &= record.section != Section::Answer;
                    let (name, srv) = self.credit_address(
                        (client, address, first),
                        (record, (question, question_key)),
                        checked_key,
                        answer_count,
                    );
                    self.note_answered(
                        &mut answered,
                        (client, address),
                        name.as_ref(),
                        record.ttl,
                        checked_key,
                    );
                    if name.is_some() && !self.waiting.is_empty() {
                        credits.answered.push(address);
                    }
                    if let Some(name) = name {
                        let offer = Offer {
                            address,
                            target: srv.and(checked_key),
                            srv,
                        };
                        let ttl = if record.section == Section::Answer {
                            record.ttl.min(chain_ttl)
                        } else {
                            record.ttl
                        };
                        let index = credits.note(name, ttl);
                        credits.offers.push((index, offer));
                    }
                }
                RecordData::Cname => {
                    if answer_count <= 2 && !self.srv_targets.contains(client, checked_key) {
                        // A single name behind an alias is not a service.
                        break;
                    }
                    if record.section == Section::Answer {
                        chain_ttl = chain_ttl.min(record.ttl);
                    }
                }
                RecordData::Opt | RecordData::Other => {}
            }
        }
        let asked = (question_key, question_asked.qtype);
        for (index, (name, ttl)) in credits.names.drain(..).enumerate() {
            // Usually the name asked; hashing it again showed in profiles.
            let (name_key, asked_as) = if *name == *question || name.eq_ignore_ascii_case(question)
            {
                (question_key, None)
            } else {
                // Asked as an alias when CNAMEs led here (not for an SRV
                // target's own lookup, credited to its service).
                let through_alias = chain_ttl != u32::MAX;
                (self.names.key(&name), through_alias.then_some(question))
            };
            credits.one.clear();
            credits.one.extend(
                credits
                    .offers
                    .iter()
                    .filter(|(i, _)| *i == index)
                    .map(|&(_, offer)| offer),
            );
            let offered = Offered {
                ttl,
                offers: &credits.one,
                srv: (srv_owner == Some(index)).then_some(&credits.srv),
                local_server,
                asked_as,
            };
            self.services
                .record((client.clone(), name_key, name), asked, ts, offered);
            // What the name resolves to now, whoever asked: plain A/AAAA
            // answers (an SRV set's targets are per client).
            if credits.one.iter().all(|o| o.srv.is_none()) {
                credits.addresses.clear();
                credits
                    .addresses
                    .extend(credits.one.iter().map(|o| o.address));
                self.fresh.note(name_key, ts, &credits.addresses);
            }
        }
        credits.offers.clear();
        credits.srv.clear();
        // Flows found open before these addresses were known count now,
        // against the answer just given.
        for address in credits.answered.drain(..) {
            credits.ports.clear();
            self.waiting.answered(client, address, &mut credits.ports);
            for &port in &credits.ports {
                self.count_connection(ts, client, address, port);
            }
        }
        self.credits = credits;
        answered
    }

    /// Returns the name credited, if the address counted, and its SRV
    /// preference when it is a target's.
    fn credit_address(
        &mut self,
        (client, address, first): (&Client, IpAddr, bool),
        (record, question): (&Record, (&str, NameKey)),
        checked_key: Option<NameKey>,
        answer_count: usize,
    ) -> (Option<Arc<str>>, Option<SrvPreference>) {
        let names = &self.names;
        if let Some(target) = self.srv_targets.get(client, checked_key) {
            // The report groups rows by the backend's service name.
            let name = self.backends.credit_srv_target(
                client,
                address,
                (names.key(&target.service), || target.service.clone()),
                &target.ports,
                target.preference,
            );
            (name, Some(target.preference))
        } else if record.section == Section::Answer && answer_count > 1 {
            // Usually the name asked, spelled alike (memcmp first, then
            // ignoring case); hashing it again showed in profiles.
            let key = if record.owner == question.0 || record.owner.eq_ignore_ascii_case(question.0)
            {
                question.1
            } else {
                names.key(&record.owner)
            };
            let name = self
                .backends
                .credit_address((client, address, first), key, || {
                    Arc::from(record.owner.as_str())
                });
            (name, None)
        } else {
            if record.section == Section::Answer && answer_count == 1 {
                // One address is no backend set, but may be a VIP whose
                // backends a DNAT chooses.
                self.behind_vips
                    .answered(client, address, &Arc::from(record.owner.as_str()));
            }
            (None, None)
        }
    }

    fn note_answered(
        &self,
        answered: &mut Vec<AnsweredBackend>,
        (client, address): (&Client, IpAddr),
        credited: Option<&Arc<str>>,
        ttl: u32,
        checked_key: Option<NameKey>,
    ) {
        let (true, Some(name)) = (self.observations.enabled(), credited) else {
            return;
        };
        let ports = self
            .srv_targets
            .get(client, checked_key)
            .map(|t| t.ports.clone())
            .unwrap_or_default();
        answered.push(AnsweredBackend {
            address,
            name: name.clone(),
            ttl,
            ports,
        });
    }
}

/// A resolver on the client's own host: a stub or cache on loopback
/// (systemd-resolved's 127.0.0.53, dnsmasq, Docker's 127.0.0.11) or a
/// node-local cache on a link-local address (Kubernetes' 169.254.20.10).
/// Asking it before every connection costs the upstream nothing.
fn is_local_resolver(server: IpAddr) -> bool {
    match server {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unicast_link_local()
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}
