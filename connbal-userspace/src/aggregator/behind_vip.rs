//! The spread behind a VIP: the backends a DNAT chose for the connections
//! a client made to an address DNS gave it alone.
//!
//! A Kubernetes Service name resolves to one address, its ClusterIP, and
//! kube-proxy's rules pick the pod per connection. An answer of one
//! address is no backend set (docs/semantics.md section 3), so those
//! connections had no row at all. Here they get their own level: client,
//! name, VIP, and the backends the kernel's NAT sent them to (host mode's
//! `Translation` events).
//!
//! An attempt and its translation come in either order: the client's own
//! socket reports its DNAT before the SYN, the tracepoint on the forwarded
//! packet after it. Each waits a few seconds for the other in a bounded
//! table; the backend set is only what was seen, as no DNS answer names it.
//!
//! A connection joined to its backend stays in a bounded table while it
//! is open, for the bytes it carried (host mode's `Carried` events: at its
//! close, and so far at each report's walk over open connections), so
//! that "one pod gets everything" can read as "one connection carried
//! everything".

use super::bounded::FifoMap;
use super::client::Client;
use super::event::{Carried, Translation};
use super::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Single-address answers remembered, per client and address.
const MAX_VIPS: usize = 1 << 14;
/// Attempts and translations waiting for each other.
const MAX_WAITING: usize = 1 << 14;
/// (client, name, VIP) levels kept.
const MAX_LEVELS: usize = 1 << 14;
/// Backends kept per level; past it, connections still count, as
/// `backends_dropped`.
const MAX_BACKENDS: usize = 256;
/// Source addresses kept per level, to look up in kube-proxy's affinity
/// lists: a client has one or two (IPv4 and IPv6).
const MAX_SOURCES: usize = 4;
/// Connections joined to their backend and not yet closed, kept for
/// their bytes; past it the oldest go, counted with their bytes as last
/// seen.
const MAX_OPEN: usize = 1 << 16;
/// The busiest connections kept per level, for how few carried most of
/// its bytes.
const TOP_CONNECTIONS: usize = 8;
/// "Most of the bytes": the share the fewest connections are counted to.
const MOST_PER_MILLE: u64 = 900;
/// How far apart an attempt and its translation may be: the same packet,
/// seen in two places, microseconds apart; a SYN retransmitted is the
/// same attempt.
const JOIN_WINDOW_NS: u64 = 5_000_000_000;

/// A connection as its client made it: its own address and the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Flow {
    client: SocketAddr,
    asked: SocketAddr,
}

#[derive(Debug)]
pub struct BehindVips {
    names: FifoMap<(Client, IpAddr), Arc<str>>,
    attempts: FifoMap<Flow, (Timestamp, Client, Arc<str>)>,
    translations: FifoMap<Flow, (Timestamp, SocketAddr)>,
    /// Attempts waiting, by initial sequence number.
    by_isn: FifoMap<u32, (Timestamp, Flow)>,
    levels: HashMap<(Client, Arc<str>, SocketAddr), Level>,
    /// Levels not kept because the table was full.
    pub levels_dropped: u64,
    /// Connections joined to their backend, until they close.
    open: FifoMap<Flow, Open>,
    /// When the last walk over open connections ran: an open connection
    /// it did not see has closed unseen, and is counted as last seen.
    last_walk: Option<Timestamp>,
    /// Whether the source reports bytes at all; if not, `open` stays
    /// empty.
    follow_bytes: bool,
}

type LevelKey = (Client, Arc<str>, SocketAddr);

/// A connection behind a VIP, open when last heard of.
#[derive(Debug)]
struct Open {
    level: LevelKey,
    backend: SocketAddr,
    /// Its bytes so far, both ways, and when a walk saw it; `None` until
    /// one did.
    walked: Option<(Timestamp, u64)>,
}

#[derive(Debug, Default)]
struct Level {
    connections: u64,
    /// Connections whose translation was never seen (no NAT behind the
    /// address, or it was missed).
    untranslated: u64,
    backends: BTreeMap<SocketAddr, BackendCounts>,
    backends_dropped: u64,
    /// The addresses the client's connections came from.
    sources: Vec<IpAddr>,
    /// Connections closed with their bytes counted, and those bytes.
    closed: u64,
    closed_bytes: u64,
    /// The busiest closed connections, (bytes, backend), busiest first.
    top: Vec<(u64, SocketAddr)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct BackendCounts {
    connections: u64,
    /// Bytes of its closed connections, both ways.
    bytes: u64,
}

/// One (client, name, VIP) level of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipSpread {
    pub client: Client,
    pub name: Arc<str>,
    pub vip: SocketAddr,
    /// Connection attempts to the VIP.
    pub connections: u64,
    /// Attempts whose backend was seen, by backend, busiest first.
    pub backends: Vec<VipBackend>,
    /// Attempts whose translation was not seen (yet, or at all).
    pub untranslated: u64,
    /// Attempts to backends past the per-VIP cap.
    pub backends_dropped: u64,
    /// The spread over the backends seen; absent with too few connections
    /// to judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<VipBalance>,
    /// The addresses the client's connections came from (a few): what
    /// kube-proxy's affinity lists hold.
    #[serde(skip)]
    pub sources: Vec<IpAddr>,
    /// The bytes its connections carried, where host mode counted them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<VipTraffic>,
}

/// The bytes a level's connections carried (both ways, payload), from
/// their sockets: at close, and so far for those open at the last walk.
/// Connection reuse is the usual reason one pod gets everything
/// (kubernetes/kubernetes#37932), and it shows here as one connection
/// carrying most of the bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipTraffic {
    pub bytes: u64,
    /// Connections whose bytes are counted: closed, or open at the last
    /// walk.
    pub connections_measured: u64,
    /// Of those, still open at the last walk (their bytes so far).
    pub still_open: u64,
    /// The fewest connections that carried nine tenths of the bytes;
    /// absent when more than the busiest few kept did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_for_most_bytes: Option<u64>,
    /// The busiest connections, busiest first (a few).
    pub busiest: Vec<VipConnectionBytes>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipConnectionBytes {
    pub backend: SocketAddr,
    pub bytes: u64,
}

impl VipSpread {
    /// Every connection went to one backend, and `list`, a session
    /// affinity list the NAT rules keep (kube-proxy's `KUBE-SEP-…` for
    /// `sessionAffinity: ClientIP`), holds the client: that is why.
    pub fn pinned_by(&mut self, list: &str) {
        if let Some(balance) = self
            .balance
            .as_mut()
            .filter(|b| b.finding == VipFinding::OneBackend)
        {
            balance.finding = VipFinding::SessionAffinity;
            balance.affinity_list = Some(list.to_string());
        }
    }
}

/// What the spread over the backends seen says. Which backends exist is
/// the EndpointSlice's, which DNS never shows, so a backend that got
/// nothing is not known and no "unused backend" is said.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipBalance {
    pub finding: VipFinding,
    pub backends_seen: usize,
    /// Chi-square against an even split over the backends seen, and its
    /// p-value (absent for `one_backend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chi_square: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// For `session_affinity`: the affinity list that holds the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_list: Option<String>,
}

impl Eq for VipBalance {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VipFinding {
    /// As an even random choice spreads (kube-proxy's iptables and
    /// nftables modes choose uniformly per connection).
    Even,
    /// Not the spread an even random choice gives (p below the verdicts'
    /// significance). Skew by design reads the same: an IPVS scheduler,
    /// `internalTrafficPolicy: Local`, `trafficDistribution`.
    Uneven,
    /// Every connection to one backend, past what chance explains:
    /// session affinity (`sessionAffinity: ClientIP`), or a Service of one
    /// ready endpoint.
    OneBackend,
    /// Every connection to one backend, and the NAT's affinity list for
    /// the Service's endpoints holds the client: session affinity by
    /// design, read from kube-proxy's state (live, iptables mode).
    SessionAffinity,
}

/// Every backend seen must be expected to get this many connections for
/// the chi-square approximation to hold.
const MIN_EXPECTED_PER_BACKEND: f64 = 5.0;
/// Connections all to one backend before that is a finding: with two
/// endpoints, an even choice does it by chance once in 2^(n-1).
const ONE_BACKEND_AFTER: u64 = 8;

fn balance(counts: &[u64]) -> Option<VipBalance> {
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    let n: u64 = counts.iter().sum();
    let k = counts.len();
    if k == 1 {
        return (n >= ONE_BACKEND_AFTER).then_some(VipBalance {
            finding: VipFinding::OneBackend,
            backends_seen: 1,
            chi_square: None,
            p_value: None,
            affinity_list: None,
        });
    }
    let expected = n as f64 / k as f64;
    if k < 2 || expected < MIN_EXPECTED_PER_BACKEND {
        return None;
    }
    let chi_square: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let p_value = ChiSquared::new((k - 1) as f64).map_or(f64::NAN, |d| d.sf(chi_square));
    Some(VipBalance {
        finding: if p_value < super::verdict::SIGNIFICANCE {
            VipFinding::Uneven
        } else {
            VipFinding::Even
        },
        backends_seen: k,
        chi_square: Some(chi_square),
        p_value: Some(p_value),
        affinity_list: None,
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipBackend {
    pub backend: SocketAddr,
    pub connections: u64,
    /// Bytes its connections carried, both ways, where host mode counted
    /// them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl Default for BehindVips {
    fn default() -> Self {
        Self::new(false)
    }
}

impl BehindVips {
    /// With `follow_bytes`, connections joined to a backend are kept until
    /// they close, for the bytes the source reports.
    pub fn new(follow_bytes: bool) -> Self {
        Self {
            names: FifoMap::with_cap(MAX_VIPS),
            attempts: FifoMap::with_cap(MAX_WAITING),
            translations: FifoMap::with_cap(MAX_WAITING),
            by_isn: FifoMap::with_cap(MAX_WAITING),
            levels: HashMap::new(),
            levels_dropped: 0,
            open: FifoMap::with_cap(MAX_OPEN),
            last_walk: None,
            follow_bytes,
        }
    }
}

impl BehindVips {
    /// `client` was told `address` alone for `name`.
    pub fn answered(&mut self, client: &Client, address: IpAddr, name: &Arc<str>) {
        self.names.insert((client.clone(), address), name.clone());
    }

    /// A new attempt that counted for no backend set: whether it went to
    /// an address its client got alone (a VIP), which this level counts.
    ///
    /// An attempt to any other address with the initial sequence number of
    /// an attempt to a VIP still waiting is that attempt after its DNAT
    /// (NAT never rewrites the ISN): a capture that holds the SYN on both
    /// sides of the node (`tcpdump -i any` there) gives the translation
    /// with no kernel help.
    pub fn attempt(
        &mut self,
        ts: Timestamp,
        client: &Client,
        (from, to): (SocketAddr, SocketAddr),
        isn: u32,
    ) -> bool {
        // Replay's hot path: most inputs never see a single-address answer.
        if self.names.len() == 0 {
            return false;
        }
        let Some(name) = self.names.get(&(client.clone(), to.ip())).cloned() else {
            if let Some((seen, flow)) = self.by_isn.remove(&isn) {
                if apart(seen, ts) <= JOIN_WINDOW_NS && flow.asked != to {
                    self.translated(&Translation {
                        ts,
                        client: flow.client,
                        asked: flow.asked,
                        backend: to,
                    });
                }
            }
            return false;
        };
        let flow = Flow {
            client: from,
            asked: to,
        };
        let backend = self
            .translations
            .remove(&flow)
            .filter(|(seen, _)| apart(*seen, ts) <= JOIN_WINDOW_NS)
            .map(|(_, backend)| backend);
        let key = (client.clone(), name.clone(), to);
        if let Some(backend) = backend {
            self.joined(flow, key.clone(), backend);
        } else {
            self.attempts.insert(flow, (ts, client.clone(), name));
            self.by_isn.insert(isn, (ts, flow));
        }
        self.count(key, backend, from.ip());
        true
    }

    /// `flow`, counted at `level`, went to `backend`: kept while open, for
    /// its bytes.
    fn joined(&mut self, flow: Flow, level: LevelKey, backend: SocketAddr) {
        if !self.follow_bytes {
            return;
        }
        // The same client port again before the old connection's close
        // was seen: that one closed unseen.
        if let Some(old) = self.open.remove(&flow) {
            self.closed_unseen(&old);
        }
        let evicted = self.open.insert_evicting(
            flow,
            Open {
                level,
                backend,
                walked: None,
            },
        );
        if let Some((_, oldest)) = evicted {
            self.closed_unseen(&oldest);
        }
    }

    /// A connection no longer followed, its close not seen: counted with
    /// its bytes as a walk last saw them, as one that closed between two
    /// walks is, so that a backend's bytes never go down (a counter in
    /// the metrics).
    fn closed_unseen(&mut self, open: &Open) {
        if let (Some((_, bytes)), Some(level)) = (open.walked, self.levels.get_mut(&open.level)) {
            level.closed_connection(open.backend, bytes);
        }
    }

    /// Connections joined to a backend and not known to have closed: a
    /// walk over open connections has something to find.
    pub fn open_connections(&self) -> usize {
        self.open.len()
    }

    /// The bytes a connection to a VIP carried: at its close, counted for
    /// its backend; so far, remembered until the next.
    pub fn carried(&mut self, c: &Carried) {
        let flow = Flow {
            client: c.client,
            asked: c.asked,
        };
        let bytes = c.sent.saturating_add(c.received);
        if c.open {
            self.last_walk = Some(self.last_walk.map_or(c.ts, |walk| walk.max(c.ts)));
            if let Some(open) = self.open.get_mut(&flow) {
                open.walked = Some((c.ts, bytes));
            }
            return;
        }
        let Some(open) = self.open.remove(&flow) else {
            return;
        };
        if let Some(level) = self.levels.get_mut(&open.level) {
            level.closed_connection(open.backend, bytes);
        }
    }

    /// Where a DNAT sent a connection.
    pub fn translated(&mut self, t: &Translation) {
        let flow = Flow {
            client: t.client,
            asked: t.asked,
        };
        match self.attempts.remove(&flow) {
            Some((ts, client, name)) if apart(ts, t.ts) <= JOIN_WINDOW_NS => {
                let key = (client, name, t.asked);
                if let Some(level) = self.levels.get_mut(&key) {
                    level.untranslated = level.untranslated.saturating_sub(1);
                    level.add_backend(t.backend);
                    self.joined(flow, key, t.backend);
                }
            }
            // Before its attempt, or of a connection no level counts (a
            // client outside the trace, an address no answer gave alone):
            // kept briefly, for an attempt that follows.
            _ => {
                self.translations.insert(flow, (t.ts, t.backend));
            }
        }
    }

    fn count(
        &mut self,
        key: (Client, Arc<str>, SocketAddr),
        backend: Option<SocketAddr>,
        source: IpAddr,
    ) {
        let full = self.levels.len() >= MAX_LEVELS;
        let level = match self.levels.get_mut(&key) {
            Some(level) => level,
            None if full => {
                self.levels_dropped += 1;
                return;
            }
            None => self.levels.entry(key).or_default(),
        };
        level.connections += 1;
        if level.sources.len() < MAX_SOURCES && !level.sources.contains(&source) {
            level.sources.push(source);
        }
        match backend {
            Some(backend) => level.add_backend(backend),
            None => level.untranslated += 1,
        }
    }

    /// Clients gone are forgotten here as in the other tables.
    pub fn forget(&mut self, gone: &dyn Fn(&Client) -> bool) {
        self.names.retain(|(client, _), _| !gone(client));
        self.attempts.retain(|_, (_, client, _)| !gone(client));
        self.levels.retain(|(client, _, _), _| !gone(client));
        self.open.retain(|_, open| !gone(&open.level.0));
    }

    /// Every level where a translation was seen, by client, name and
    /// VIP: an address no NAT was seen behind (any single-address name in
    /// a capture, say) is a plain address, as it always was.
    pub fn report(&self) -> Vec<VipSpread> {
        let open = self.open_by_level();
        let mut spreads: Vec<VipSpread> = self
            .levels
            .iter()
            .filter(|(_, level)| !level.backends.is_empty() || level.backends_dropped > 0)
            .map(|(key, level)| {
                let (client, name, vip) = key;
                let open = open.get(key).map_or(&[][..], Vec::as_slice);
                let traffic = level.traffic(open);
                let mut open_bytes: HashMap<SocketAddr, u64> = HashMap::new();
                for o in open {
                    *open_bytes.entry(o.backend).or_default() += o.bytes;
                }
                let mut backends: Vec<VipBackend> = level
                    .backends
                    .iter()
                    .map(|(&backend, counts)| VipBackend {
                        backend,
                        connections: counts.connections,
                        bytes: traffic
                            .is_some()
                            .then(|| counts.bytes + open_bytes.get(&backend).copied().unwrap_or(0)),
                    })
                    .collect();
                backends.sort_by(|a, b| {
                    b.connections
                        .cmp(&a.connections)
                        .then(a.backend.cmp(&b.backend))
                });
                let counts: Vec<u64> = backends.iter().map(|b| b.connections).collect();
                VipSpread {
                    client: client.clone(),
                    name: name.clone(),
                    vip: *vip,
                    connections: level.connections,
                    balance: (level.backends_dropped == 0)
                        .then(|| balance(&counts))
                        .flatten(),
                    backends,
                    untranslated: level.untranslated,
                    backends_dropped: level.backends_dropped,
                    sources: level.sources.clone(),
                    traffic,
                }
            })
            .collect();
        spreads.sort_by(|a, b| (&a.client, &a.name, a.vip).cmp(&(&b.client, &b.name, b.vip)));
        spreads
    }
}

/// An open connection's bytes so far, as the last walk saw them, or as
/// an earlier one did for one that closed unseen since.
#[derive(Clone, Copy, Debug)]
struct OpenBytes {
    backend: SocketAddr,
    bytes: u64,
    still_open: bool,
}

impl BehindVips {
    fn open_by_level(&self) -> HashMap<&LevelKey, Vec<OpenBytes>> {
        let mut by_level: HashMap<&LevelKey, Vec<OpenBytes>> = HashMap::new();
        for open in self.open.values() {
            if let Some((walked, bytes)) = open.walked {
                by_level.entry(&open.level).or_default().push(OpenBytes {
                    backend: open.backend,
                    bytes,
                    still_open: Some(walked) == self.last_walk,
                });
            }
        }
        by_level
    }
}

impl Level {
    fn add_backend(&mut self, backend: SocketAddr) {
        if let Some(counts) = self.backends.get_mut(&backend) {
            counts.connections += 1;
        } else if self.backends.len() < MAX_BACKENDS {
            self.backends.insert(
                backend,
                BackendCounts {
                    connections: 1,
                    bytes: 0,
                },
            );
        } else {
            self.backends_dropped += 1;
        }
    }

    fn closed_connection(&mut self, backend: SocketAddr, bytes: u64) {
        self.closed += 1;
        self.closed_bytes = self.closed_bytes.saturating_add(bytes);
        if let Some(counts) = self.backends.get_mut(&backend) {
            counts.bytes = counts.bytes.saturating_add(bytes);
        }
        keep_busiest(&mut self.top, (bytes, backend));
    }

    /// Its traffic: the closed connections' and `open`'s; `None` when no
    /// connection's bytes are known (replay, or `--no-vip-backends`).
    fn traffic(&self, open: &[OpenBytes]) -> Option<VipTraffic> {
        if self.closed == 0 && open.is_empty() {
            return None;
        }
        let mut top = self.top.clone();
        for o in open {
            keep_busiest(&mut top, (o.bytes, o.backend));
        }
        let bytes = self.closed_bytes + open.iter().map(|o| o.bytes).sum::<u64>();
        let most = bytes.saturating_mul(MOST_PER_MILLE).div_ceil(1000);
        let mut carried = 0u64;
        let connections_for_most_bytes = if bytes == 0 {
            Some(0)
        } else {
            top.iter()
                .position(|(b, _)| {
                    carried += b;
                    carried >= most
                })
                .map(|i| i as u64 + 1)
        };
        Some(VipTraffic {
            bytes,
            connections_measured: self.closed + open.len() as u64,
            still_open: open.iter().filter(|o| o.still_open).count() as u64,
            connections_for_most_bytes,
            busiest: top
                .into_iter()
                .map(|(bytes, backend)| VipConnectionBytes { backend, bytes })
                .collect(),
        })
    }
}

/// Keeps the `TOP_CONNECTIONS` busiest in `top`, busiest first.
fn keep_busiest(top: &mut Vec<(u64, SocketAddr)>, connection: (u64, SocketAddr)) {
    let at = top.partition_point(|&(b, _)| b >= connection.0);
    if at < TOP_CONNECTIONS {
        top.insert(at, connection);
        top.truncate(TOP_CONNECTIONS);
    }
}

fn apart(a: Timestamp, b: Timestamp) -> u64 {
    a.0.abs_diff(b.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_over_backends_seen_is_judged_only_where_it_can_be() {
        let finding = |counts: &[u64]| balance(counts).map(|b| b.finding);
        assert_eq!(finding(&[10, 11, 9]), Some(VipFinding::Even));
        assert_eq!(finding(&[28, 1, 1]), Some(VipFinding::Uneven));
        // Pinned: one backend past chance; too few to say at all.
        assert_eq!(finding(&[ONE_BACKEND_AFTER]), Some(VipFinding::OneBackend));
        assert_eq!(finding(&[ONE_BACKEND_AFTER - 1]), None);
        // Too few per backend for the chi-square to hold.
        assert_eq!(finding(&[4, 5]), None);
        let uneven = balance(&[28, 1, 1]).unwrap();
        assert_eq!(uneven.backends_seen, 3);
        assert!(uneven.p_value.unwrap() < 1e-6, "{uneven:?}");
    }
}
