//! `--events`: what the aggregator just saw, one item per DNS answer and
//! per connection attempt, for watching an application right now. Only
//! collected when asked for, so the default path pays nothing.

use super::client::Client;
use super::event::Owner;
use super::Timestamp;
use serde::{Serialize, Serializer};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Observation {
    /// A response matched to its query.
    DnsAnswer {
        #[serde(serialize_with = "rfc3339")]
        time: Timestamp,
        client: Client,
        server: IpAddr,
        question: String,
        qtype: &'static str,
        /// The addresses this answer counted as backends (none for a single
        /// address, or a name behind an alias).
        backends: Vec<AnsweredBackend>,
        #[serde(flatten)]
        thread: Option<Thread>,
    },
    /// A TCP connection attempt (a bare SYN; with `-a`, also the first
    /// segment of a flow already open).
    Connection {
        #[serde(serialize_with = "rfc3339")]
        time: Timestamp,
        client: Client,
        backend: IpAddr,
        port: u16,
        /// The name the backend was given by, or null when it never
        /// appeared in DNS for this client.
        name: Option<Arc<str>>,
        /// `-a`: seen mid-flow rather than at its SYN.
        midstream: bool,
        #[serde(flatten)]
        thread: Option<Thread>,
    },
}

/// The process and thread behind the packet's socket (host mode: from the
/// socket's last connect, or an unconnected UDP socket's first DNS
/// datagram), shown as `pid` and `tid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Thread {
    /// The process (thread group) id.
    pub pid: u32,
    /// The thread that made the call.
    pub tid: u32,
}

impl Thread {
    pub fn of(owner: Option<&Owner>) -> Option<Self> {
        let process = owner?.process.as_ref()?;
        Some(Self {
            pid: process.tgid,
            tid: process.pid,
        })
    }
}

impl Observation {
    pub fn client(&self) -> &Client {
        match self {
            Observation::DnsAnswer { client, .. } | Observation::Connection { client, .. } => {
                client
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnsweredBackend {
    pub address: IpAddr,
    pub name: Arc<str>,
    pub ttl: u32,
    /// SRV ports for an SRV-derived backend; empty for A/AAAA.
    pub ports: Vec<u16>,
}

/// Observations collected for `--events`; nothing is collected (or
/// allocated) when they were not asked for.
#[derive(Debug)]
pub struct Observations {
    enabled: bool,
    pending: Vec<Observation>,
}

impl Observations {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            pending: Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn push(&mut self, observation: Observation) {
        if self.enabled {
            self.pending.push(observation);
        }
    }

    pub fn take(&mut self) -> std::vec::Drain<'_, Observation> {
        self.pending.drain(..)
    }
}

pub fn qtype_name(qtype: u16) -> &'static str {
    match qtype {
        super::dns::TYPE_A => "A",
        super::dns::TYPE_AAAA => "AAAA",
        super::dns::TYPE_SRV => "SRV",
        super::dns::TYPE_GETADDRINFO => "getaddrinfo",
        _ => "other",
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's serialize_with passes the field by reference"
)]
fn rfc3339<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(ts.to_system_time()))
}
