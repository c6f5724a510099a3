//! Backends and what was counted against them (spec section 4), and the
//! report rows they turn into (section 5).

use super::attempts::{Outcome, Outcomes};
use super::client::Client;
use super::name::NameKey;
use super::FastMap;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
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

/// The backends themselves, against MAX_BACKENDS: each (client, address,
/// name) counts one, so one address under many names cannot grow the table
/// past it either.
#[derive(Debug, Default)]
struct Entries {
    map: FastMap<(Client, IpAddr), Backend>,
    credits: usize,
    dropped: u64,
}

impl Entries {
    /// The backend's credit under the name keyed `service`, created (named
    /// by `name`) if there is room.
    fn credit(
        &mut self,
        key: (Client, IpAddr),
        service: NameKey,
        name: impl FnOnce() -> Arc<str>,
    ) -> Option<&mut Credit> {
        // One hash for a backend seen before, the common case.
        let full = self.credits >= MAX_BACKENDS;
        let backend = match self.map.entry(key) {
            Entry::Occupied(entry) => {
                let backend = entry.into_mut();
                if let Some(i) = backend.credits.iter().position(|c| c.service == service) {
                    return Some(&mut backend.credits[i]);
                }
                if full || backend.credits.len() >= MAX_NAMES_PER_BACKEND {
                    self.dropped += 1;
                    return None;
                }
                backend
            }
            Entry::Vacant(_) if full => {
                self.dropped += 1;
                return None;
            }
            Entry::Vacant(entry) => entry.insert(Backend {
                credits: Vec::with_capacity(1),
            }),
        };
        self.credits += 1;
        backend.credits.push(Credit::new(name(), service));
        backend.credits.last_mut()
    }
}

/// Names one address is remembered under for one client; beyond, its
/// credits under further names are refused (counted as backends dropped).
pub const MAX_NAMES_PER_BACKEND: usize = 16;

/// (backend, port) entries over all backends, against MAX_PORTS.
#[derive(Debug, Default)]
struct PortBudget {
    used: usize,
    dropped: u64,
}

impl PortBudget {
    /// The credit's counts for `port`, added if there is room.
    fn slot<'b>(&mut self, credit: &'b mut Credit, port: u16) -> Option<&'b mut PortCount> {
        if !credit.ports.iter().any(|p| p.port == port) {
            if self.used >= MAX_PORTS {
                self.dropped += 1;
                return None;
            }
            self.used += 1;
        }
        Some(credit.port_mut(port))
    }
}

/// Which name a connection to a backend was credited to, for the services
/// to judge it and its outcome to find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credited {
    pub service: NameKey,
    /// The credit's index among the backend's names.
    pub index: u16,
}

impl BackendTable {
    /// Forgets every backend of the clients `gone` says are gone, giving
    /// their room back to the caps.
    pub fn forget(&mut self, gone: &dyn Fn(&Client) -> bool) {
        let (entries, ports) = (&mut self.entries, &mut self.ports);
        entries.map.retain(|(client, _), backend| {
            if !gone(client) {
                return true;
            }
            entries.credits -= backend.credits.len();
            ports.used -= backend.credits.iter().map(|c| c.ports.len()).sum::<usize>();
            false
        });
    }

    /// An address in an A/AAAA answer with several records (spec 3), under
    /// the name keyed `service`. Returns the name the report groups it
    /// under.
    pub fn credit_address(
        &mut self,
        (client, address, first): (&Client, IpAddr, bool),
        service: NameKey,
        name: impl FnOnce() -> Arc<str>,
    ) -> Option<Arc<str>> {
        let credit = self
            .entries
            .credit((client.clone(), address), service, name)?;
        credit.address_dns += 1;
        credit.first_in_answers += u64::from(first);
        Some(credit.name.clone())
    }

    /// The address of an SRV target, with the target's ports (spec 3).
    pub fn credit_srv_target(
        &mut self,
        client: &Client,
        address: IpAddr,
        (service, name): (NameKey, impl FnOnce() -> Arc<str>),
        ports: &[u16],
        preference: SrvPreference,
    ) -> Option<Arc<str>> {
        let credit = self
            .entries
            .credit((client.clone(), address), service, name)?;
        credit.srv = Some(preference);
        for &port in ports {
            if let Some(slot) = self.ports.slot(credit, port) {
                slot.srv_dns += 1;
            }
        }
        Some(credit.name.clone())
    }

    /// One connection from `client` to a backend it got from DNS (with -a,
    /// a flow found open); `attempt` for a connection attempt (a distinct
    /// SYN), whose outcome [`Self::count_outcome`] may settle later. An
    /// address known under several names is credited to the one `choose`
    /// picks from their keys (in first-seen order), which also names
    /// another it could have followed. The credit, and that other name's
    /// key; `None` when the backend is unknown or its port found no room.
    pub fn count(
        &mut self,
        client: &Client,
        (address, port): (IpAddr, u16),
        attempt: bool,
        choose: impl FnOnce(&[NameKey]) -> (usize, Option<usize>),
    ) -> Option<(Credited, Option<NameKey>)> {
        let backend = self.entries.map.get_mut(&(client.clone(), address))?;
        let (index, other) = if backend.credits.len() == 1 {
            (0, None)
        } else {
            // At most MAX_NAMES_PER_BACKEND: no allocation per connection.
            let mut keys = [NameKey::default(); MAX_NAMES_PER_BACKEND];
            for (key, credit) in keys.iter_mut().zip(&backend.credits) {
                *key = credit.service;
            }
            let keys = &keys[..backend.credits.len()];
            let (index, other) = choose(keys);
            (index, other.map(|o| keys[o]))
        };
        let credit = backend.credits.get_mut(index)?;
        let service = credit.service;
        let slot = self.ports.slot(credit, port)?;
        slot.connections += 1;
        slot.attempts += u64::from(attempt);
        let credited = Credited {
            service,
            index: u16::try_from(index).unwrap_or(u16::MAX),
        };
        Some((credited, other))
    }

    /// What became of an attempt counted by [`Self::count`] under the
    /// backend's `index`th name.
    pub fn count_outcome(
        &mut self,
        client: &Client,
        (address, port): (IpAddr, u16),
        index: u16,
        outcome: Outcome,
    ) {
        let Some(credit) = self
            .entries
            .map
            .get_mut(&(client.clone(), address))
            .and_then(|b| b.credits.get_mut(usize::from(index)))
        else {
            return;
        };
        if let Some(slot) = credit.ports.iter_mut().find(|p| p.port == port) {
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
            .and_then(|b| b.credits.first())
            .map(|c| c.name.clone())
    }

    /// New backends (or names of one) not tracked because a cap was
    /// reached.
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
        self.rows_of(outcomes_known, |_, _| true)
    }

    /// The rows of the services (client, name) `wanted` keeps, in report
    /// order.
    pub fn rows_of(
        &self,
        outcomes_known: bool,
        wanted: impl Fn(&Client, &str) -> bool,
    ) -> Vec<Row> {
        let mut rows = Vec::new();
        self.visit_rows(outcomes_known, wanted, |row| rows.push(row));
        rows.sort_by(Row::report_order);
        rows
    }

    /// Every row of the services `wanted` keeps, in no order, one at a
    /// time: a `--window` mark of a table at its cap keeps their counts
    /// without holding every row at once.
    pub fn visit_rows(
        &self,
        outcomes_known: bool,
        wanted: impl Fn(&Client, &str) -> bool,
        mut visit: impl FnMut(Row),
    ) {
        let mut scratch = Vec::new();
        for ((client, backend), b) in &self.entries.map {
            let first = (b.credits.len() > 1).then(|| b.credits[0].name.clone());
            for credit in b.credits.iter().filter(|c| wanted(client, &c.name)) {
                let shared = Shared {
                    first_name: first.clone(),
                    address_dns: credit.address_dns,
                };
                rows_for(
                    client,
                    *backend,
                    credit,
                    outcomes_known,
                    &shared,
                    &mut scratch,
                );
                scratch.drain(..).for_each(&mut visit);
            }
        }
    }

    /// How many rows [`Self::rows`] would give.
    pub fn row_count(&self) -> usize {
        self.entries
            .map
            .values()
            .flat_map(|b| &b.credits)
            .map(|c| c.ports.len().max(1))
            .sum()
    }
}

/// A service's share of the backend table: what ranks it among the
/// services and what leaving it out of a report leaves out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceSize {
    pub connections: u64,
    pub rows: usize,
}

impl BackendTable {
    /// Every service's connections and rows, without building its rows:
    /// a report of the busiest services ranks them from this.
    pub fn service_sizes(&self) -> super::FastMap<(&Client, &str), ServiceSize> {
        let mut sizes: super::FastMap<(&Client, &str), ServiceSize> = super::FastMap::default();
        for ((client, _), b) in &self.entries.map {
            for credit in &b.credits {
                let size = sizes.entry((client, &*credit.name)).or_default();
                size.connections += credit.ports.iter().map(|p| p.connections).sum::<u64>();
                size.rows += credit.ports.len().max(1);
            }
        }
        sizes
    }
}

/// One address a client got from DNS, under each name it got it under: two
/// names sharing addresses (vhosts, a CDN) each keep their own counts.
#[derive(Debug)]
struct Backend {
    /// In first-seen order: the first is the original's name for it.
    credits: Vec<Credit>,
}

/// A backend's counts under one name.
#[derive(Debug)]
struct Credit {
    name: Arc<str>,
    /// Its key: the service whose answers the connections are judged by.
    service: NameKey,
    /// Times seen in an A/AAAA answer under this name.
    address_dns: u64,
    /// Times it was the first address of such an answer.
    first_in_answers: u64,
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

impl Credit {
    fn new(name: Arc<str>, service: NameKey) -> Self {
        Self {
            name,
            service,
            address_dns: 0,
            first_in_answers: 0,
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
    /// Times the backend was the first address of an A/AAAA answer to the
    /// client: a server that never rotates lists one first every time.
    pub first_in_answers: u64,
    /// For the original's one line per (client, backend, port), which TSV
    /// keeps: the backend's first name when it is known under several.
    #[serde(skip)]
    pub first_name: Option<Arc<str>>,
    /// Times seen in an A/AAAA answer under this row's name (`dns` is the
    /// SRV count of the port when this is 0).
    #[serde(skip)]
    pub address_dns: u64,
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

/// What a row carries for TSV's merge of a backend's names.
struct Shared {
    first_name: Option<Arc<str>>,
    address_dns: u64,
}

fn rows_for(
    client: &Client,
    backend: IpAddr,
    b: &Credit,
    outcomes_known: bool,
    shared: &Shared,
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
        first_in_answers: b.first_in_answers,
        first_name: shared.first_name.clone(),
        address_dns: shared.address_dns,
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
