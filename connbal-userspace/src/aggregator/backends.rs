//! Backends and what was counted against them (spec section 4), and the
//! report rows they turn into (section 5).

use serde::Serialize;
use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug)]
pub struct Backend {
    /// The name the backend was first seen with.
    pub name: Arc<str>,
    /// Times seen in an A/AAAA answer.
    pub address_dns: u64,
    /// Kept small and in first-seen order; a backend rarely has more than a
    /// handful of ports, so a linear scan beats hashing.
    pub ports: Vec<PortCount>,
    /// Priority and weight of the SRV record that last named this backend.
    pub srv: Option<SrvPreference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SrvPreference {
    pub priority: u16,
    pub weight: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCount {
    pub port: u16,
    pub connections: u64,
    /// Times this port came with the backend through an SRV target.
    pub srv_dns: u64,
}

impl Backend {
    pub fn new(name: Arc<str>) -> Self {
        Self {
            name,
            address_dns: 0,
            ports: Vec::new(),
            srv: None,
        }
    }

    pub fn port_mut(&mut self, port: u16) -> &mut PortCount {
        let index = match self.ports.iter().position(|p| p.port == port) {
            Some(i) => i,
            None => {
                self.ports.push(PortCount {
                    port,
                    connections: 0,
                    srv_dns: 0,
                });
                self.ports.len() - 1
            }
        };
        &mut self.ports[index]
    }
}

/// One report line: `client  backend:port  conns  dns  name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub client: IpAddr,
    pub backend: IpAddr,
    /// `None` for a backend with no port: seen in A/AAAA answers only and
    /// never connected to (printed as `?`).
    pub port: Option<u16>,
    pub conns: u64,
    pub dns: u64,
    pub name: Arc<str>,
    /// Set for backends named by an SRV record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srv: Option<SrvPreference>,
}

impl Row {
    /// Client, then name, then backend address, then port: rows for one
    /// service stay together, as in the spec's worked example.
    pub fn report_order(&self, other: &Self) -> Ordering {
        (self.client, &*self.name, self.backend, self.port).cmp(&(
            other.client,
            &*other.name,
            other.backend,
            other.port,
        ))
    }
}

pub fn rows_for(client: IpAddr, backend: IpAddr, b: &Backend, out: &mut Vec<Row>) {
    let row = |port, conns, dns| Row {
        client,
        backend,
        port,
        conns,
        dns,
        name: b.name.clone(),
        srv: b.srv,
    };
    if b.ports.is_empty() {
        out.push(row(None, 0, b.address_dns));
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
        out.push(row(Some(p.port), p.connections, dns));
    }
}

/// The runs of report-ordered rows that share a client and a name: one per
/// service, in order.
pub fn service_runs(rows: &[Row]) -> impl Iterator<Item = &[Row]> {
    rows.chunk_by(|a, b| a.client == b.client && a.name == b.name)
}
