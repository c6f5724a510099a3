//! Backends and what was counted against them (spec section 4), and the
//! report rows they turn into (section 5).

use super::attempts::{Outcome, Outcomes};
use super::client::Client;
use super::name::NameKey;
use super::FastMap;
use serde::Serialize;
use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::Arc;

/// Backends a client got from DNS. These hold counted results, so a full
/// table refuses new entries (counted) rather than evicting: evicting would
/// silently falsify the report.
pub const MAX_BACKENDS: usize = 1 << 18;
/// (backend, port) pairs over all backends: a port scan under -a adds one
/// per port.
pub const MAX_PORTS: usize = 1 << 20;

/// Every (client, backend) pair with its counts, within its caps.
#[derive(Debug, Default)]
pub struct BackendTable {
    entries: Entries,
    ports: PortBudget,
}

/// The backends themselves, against MAX_BACKENDS.
#[derive(Debug, Default)]
struct Entries {
    map: FastMap<(Client, IpAddr), Backend>,
    dropped: u64,
}

impl Entries {
    /// The backend for `key`, created (named by `name`) if there is room.
    fn entry(
        &mut self,
        key: (Client, IpAddr),
        name: impl FnOnce() -> (Arc<str>, NameKey),
    ) -> Option<&mut Backend> {
        // The size first: the table is rarely full, and the lookup costs a
        // hash of the key for every credited record.
        if self.map.len() >= MAX_BACKENDS && !self.map.contains_key(&key) {
            self.dropped += 1;
            return None;
        }
        Some(self.map.entry(key).or_insert_with(|| {
            let (name, service) = name();
            Backend::new(name, service)
        }))
    }
}

/// (backend, port) entries over all backends, against MAX_PORTS.
#[derive(Debug, Default)]
struct PortBudget {
    used: usize,
    dropped: u64,
}

impl PortBudget {
    /// The backend's counts for `port`, added if there is room.
    fn slot<'b>(&mut self, backend: &'b mut Backend, port: u16) -> Option<&'b mut PortCount> {
        if !backend.ports.iter().any(|p| p.port == port) {
            if self.used >= MAX_PORTS {
                self.dropped += 1;
                return None;
            }
            self.used += 1;
        }
        Some(backend.port_mut(port))
    }
}

impl BackendTable {
    /// An address in an A/AAAA answer with several records (spec 3).
    /// Returns the backend's name, which the report groups it under.
    pub fn credit_address(
        &mut self,
        client: &Client,
        address: IpAddr,
        name: impl FnOnce() -> (Arc<str>, NameKey),
    ) -> Option<Arc<str>> {
        let backend = self.entries.entry((client.clone(), address), name)?;
        backend.address_dns += 1;
        Some(backend.name.clone())
    }

    /// The address of an SRV target, with the target's ports (spec 3).
    pub fn credit_srv_target(
        &mut self,
        client: &Client,
        address: IpAddr,
        name: impl FnOnce() -> (Arc<str>, NameKey),
        ports: &[u16],
        preference: SrvPreference,
    ) -> Option<Arc<str>> {
        let backend = self.entries.entry((client.clone(), address), name)?;
        backend.srv = Some(preference);
        for &port in ports {
            if let Some(slot) = self.ports.slot(backend, port) {
                slot.srv_dns += 1;
            }
        }
        Some(backend.name.clone())
    }

    /// One connection from `client` to a backend it got from DNS (with -a,
    /// a flow found open): the key of the service it counted for, `None`
    /// when the backend is unknown or its port found no room.
    pub fn count_connection(
        &mut self,
        client: &Client,
        address: IpAddr,
        port: u16,
    ) -> Option<NameKey> {
        self.count(client, (address, port), false)
    }

    /// A connection attempt (a distinct SYN): a connection, whose outcome
    /// [`Self::count_outcome`] may settle later.
    pub fn count_attempt(
        &mut self,
        client: &Client,
        address: IpAddr,
        port: u16,
    ) -> Option<NameKey> {
        self.count(client, (address, port), true)
    }

    fn count(
        &mut self,
        client: &Client,
        (address, port): (IpAddr, u16),
        attempt: bool,
    ) -> Option<NameKey> {
        let (slot, service) = self.port_of(client, address, port)?;
        slot.connections += 1;
        slot.attempts += u64::from(attempt);
        Some(service)
    }

    /// The counts of a known backend's `port`, added if there is room, and
    /// the backend's service.
    fn port_of(
        &mut self,
        client: &Client,
        address: IpAddr,
        port: u16,
    ) -> Option<(&mut PortCount, NameKey)> {
        let backend = self.entries.map.get_mut(&(client.clone(), address))?;
        let service = backend.service;
        Some((self.ports.slot(backend, port)?, service))
    }

    /// What became of an attempt counted by [`Self::count_attempt`].
    pub fn count_outcome(&mut self, client: &Client, address: IpAddr, port: u16, outcome: Outcome) {
        let Some(backend) = self.entries.map.get_mut(&(client.clone(), address)) else {
            return;
        };
        if let Some(slot) = backend.ports.iter_mut().find(|p| p.port == port) {
            match outcome {
                Outcome::Answered => slot.answered += 1,
                Outcome::Refused => slot.refused += 1,
                Outcome::Pending => {}
            }
        }
    }

    pub fn contains(&self, client: &Client, address: IpAddr) -> bool {
        self.entries.map.contains_key(&(client.clone(), address))
    }

    /// The name the backend was first given by.
    pub fn name_of(&self, client: &Client, address: IpAddr) -> Option<Arc<str>> {
        self.entries
            .map
            .get(&(client.clone(), address))
            .map(|b| b.name.clone())
    }

    /// New backends not tracked because MAX_BACKENDS was reached.
    pub fn backends_dropped(&self) -> u64 {
        self.entries.dropped
    }

    /// New (backend, port) pairs not tracked because MAX_PORTS was reached.
    pub fn ports_dropped(&self) -> u64 {
        self.ports.dropped
    }

    /// Every row, in report order; with their attempts' outcomes when
    /// `outcomes_known`.
    pub fn rows(&self, outcomes_known: bool) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.entries.map.len());
        for ((client, backend), b) in &self.entries.map {
            rows_for(client, *backend, b, outcomes_known, &mut rows);
        }
        rows.sort_by(Row::report_order);
        rows
    }
}

#[derive(Debug)]
struct Backend {
    /// The name the backend was first seen with.
    name: Arc<str>,
    /// Its key: the service whose answers the connections are judged by.
    service: NameKey,
    /// Times seen in an A/AAAA answer.
    address_dns: u64,
    /// Kept small and in first-seen order; a backend rarely has more than a
    /// handful of ports, so a linear scan beats hashing.
    ports: Vec<PortCount>,
    /// Priority and weight of the SRV record that last named this backend.
    srv: Option<SrvPreference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SrvPreference {
    pub priority: u16,
    pub weight: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortCount {
    port: u16,
    connections: u64,
    /// Connections that were attempts, and what became of them.
    attempts: u64,
    answered: u64,
    refused: u64,
    /// Times this port came with the backend through an SRV target.
    srv_dns: u64,
}

impl Backend {
    fn new(name: Arc<str>, service: NameKey) -> Self {
        Self {
            name,
            service,
            address_dns: 0,
            ports: Vec::new(),
            srv: None,
        }
    }

    fn port_mut(&mut self, port: u16) -> &mut PortCount {
        let index = if let Some(i) = self.ports.iter().position(|p| p.port == port) {
            i
        } else {
            self.ports.push(PortCount {
                port,
                connections: 0,
                attempts: 0,
                answered: 0,
                refused: 0,
                srv_dns: 0,
            });
            self.ports.len() - 1
        };
        &mut self.ports[index]
    }
}

/// One report line: `client  backend:port  conns  dns  name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub client: Client,
    pub backend: IpAddr,
    /// `None` for a backend with no port: seen in A/AAAA answers only and
    /// never connected to (printed as `?`).
    pub port: Option<u16>,
    pub conns: u64,
    pub dns: u64,
    pub name: Arc<str>,
    /// What the connection attempts among `conns` came to (flows already
    /// open that `-a` counts are not attempts). `None` when the input held
    /// no SYN-ACK or reset at all: a capture of SYNs alone (the original's
    /// filter) cannot tell a dead backend from a live one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Outcomes>,
    /// Set for backends named by an SRV record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srv: Option<SrvPreference>,
}

impl Row {
    /// Client, then name, then backend address, then port: rows for one
    /// service stay together, as in the spec's worked example.
    pub fn report_order(&self, other: &Self) -> Ordering {
        (&self.client, &*self.name, self.backend, self.port).cmp(&(
            &other.client,
            &*other.name,
            other.backend,
            other.port,
        ))
    }
}

fn rows_for(
    client: &Client,
    backend: IpAddr,
    b: &Backend,
    outcomes_known: bool,
    out: &mut Vec<Row>,
) {
    let row = |port, conns, dns, outcomes| Row {
        client: client.clone(),
        backend,
        port,
        conns,
        dns,
        name: b.name.clone(),
        outcomes,
        srv: b.srv,
    };
    if b.ports.is_empty() {
        let outcomes = outcomes_known.then(Outcomes::default);
        out.push(row(None, 0, b.address_dns, outcomes));
        return;
    }
    for p in &b.ports {
        // "dns is the backend's A/AAAA count if it has one, otherwise the SRV
        // count of that port."
        let dns = if b.address_dns > 0 {
            b.address_dns
        } else {
            p.srv_dns
        };
        let outcomes = outcomes_known.then(|| Outcomes {
            answered: p.answered,
            refused: p.refused,
            unanswered: p.attempts.saturating_sub(p.answered + p.refused),
        });
        out.push(row(Some(p.port), p.connections, dns, outcomes));
    }
}
