//! What a matched answer credits (spec 3): backends from A/AAAA sets and SRV
//! targets, and the lookups behind the TTL verdict.

use super::backends::SrvPreference;
use super::client::Client;
use super::dns::{self, Record, RecordData, Section};
use super::name::NameKey;
use super::observation::AnsweredBackend;
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

/// Targets named by SRV records, by target name: their A/AAAA records (in
/// this answer or a later one) are backends of the service.
#[derive(Debug, Default)]
pub struct SrvTargets {
    targets: FastMap<NameKey, SrvTarget>,
    /// Targets not tracked because the registry was full.
    pub dropped: u64,
}

impl SrvTargets {
    fn register(&mut self, service: &str, port: u16, target: NameKey, preference: SrvPreference) {
        if self.targets.len() >= MAX_SRV_TARGETS && !self.targets.contains_key(&target) {
            self.dropped += 1;
            return;
        }
        let entry = self.targets.entry(target).or_insert_with(|| SrvTarget {
            service: Arc::from(service),
            ports: Vec::new(),
            preference,
        });
        entry.preference = preference;
        if !entry.ports.contains(&port) {
            entry.ports.push(port);
        }
    }

    fn get(&self, target: Option<NameKey>) -> Option<&SrvTarget> {
        self.targets.get(&target?)
    }

    fn contains(&self, target: Option<NameKey>) -> bool {
        self.get(target).is_some()
    }
}

impl Aggregator {
    /// Spec 3: walk answer, authority and additional records in order.
    /// Returns the backends credited when observations are collected.
    pub(super) fn apply_answer(
        &mut self,
        ts: Timestamp,
        client: &Client,
        (question_asked, question_key): (&dns::Question, NameKey),
        records: &[Record],
    ) -> Vec<AnsweredBackend> {
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
                    self.srv_targets
                        .register(&record.owner, *port, target, preference);
                }
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
                    if answer_count <= 2 && !self.srv_targets.contains(checked_key) {
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
                self.names.key(&name)
            };
            self.services
                .record((client.clone(), name_key, name), asked, ts, ttl);
        }
        self.credited = credited;
        answered
    }

    /// Returns the name credited, if the address counted.
    fn credit_address(
        &mut self,
        client: &Client,
        address: IpAddr,
        record: &Record,
        checked_key: Option<NameKey>,
        answer_count: usize,
    ) -> Option<Arc<str>> {
        if let Some(target) = self.srv_targets.get(checked_key) {
            // The report groups rows by the backend's (first) name.
            self.backends.credit_srv_target(
                client,
                address,
                || target.service.clone(),
                &target.ports,
                target.preference,
            )
        } else if record.section == Section::Answer && answer_count > 1 {
            self.backends
                .credit_address(client, address, || Arc::from(record.owner.as_str()))
        } else {
            None
        }
    }

    fn note_answered(
        &self,
        answered: &mut Vec<AnsweredBackend>,
        address: IpAddr,
        credited: &Option<Arc<str>>,
        ttl: u32,
        checked_key: Option<NameKey>,
    ) {
        let (true, Some(name)) = (self.observations.enabled(), credited) else {
            return;
        };
        let ports = self
            .srv_targets
            .get(checked_key)
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
