//! The events every capture source is reduced to (spec section 1).
//!
//! Replay builds them from decoded frames, live tracing from ring-buffer
//! records. Payloads are borrowed, so producing an event never allocates.

use super::client::Workload;
pub use crate::time::{Span, Timestamp};
use std::net::SocketAddr;
use std::sync::Arc;

/// Who owns the socket a packet was sent or received on, where the
/// source knows it (live tracing; captures carry no owner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The socket's cgroup v2, with its path when the tracer could read it.
    pub cgroup: Cgroup,
    /// The kernel's socket cookie: one socket, for the life of the host.
    pub socket: u64,
    /// The process that last connected or sent on the socket.
    pub process: Option<Process>,
}

/// A cgroup v2 by id (the inode of its directory), shown by its path
/// relative to the cgroup2 mount, as `/proc/PID/cgroup` shows it.
#[derive(Clone, Debug)]
pub struct Cgroup {
    pub id: u64,
    /// `None` when the directory was gone (or never found) by the time the
    /// tracer looked it up.
    pub path: Option<Arc<str>>,
    /// What the path says of the workload inside (container, pod, unit),
    /// resolved once when the cgroup is named, not each time a client is
    /// shown.
    pub workload: Arc<Workload>,
}

impl Cgroup {
    /// A cgroup by id, named by `path` when the tracer found one.
    pub fn named(id: u64, path: Option<Arc<str>>) -> Self {
        let workload = path.as_deref().map(Workload::of_path).unwrap_or_default();
        Self {
            id,
            path,
            workload: Arc::new(workload),
        }
    }
}

/// Compared by id alone: the path is how it is shown, not what it is.
impl PartialEq for Cgroup {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Cgroup {}

impl std::hash::Hash for Cgroup {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

/// Ordered by path, so reports list cgroups as a person would find them.
impl Ord for Cgroup {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.path, self.id).cmp(&(&other.path, other.id))
    }
}

impl PartialOrd for Cgroup {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    /// Thread group id: the process id a person sees.
    pub tgid: u32,
    /// The thread that made the call.
    pub pid: u32,
    /// The command name (`comm`, at most 15 bytes, NUL-padded).
    pub command: [u8; 16],
    pub netns_cookie: u64,
}

#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A UDP datagram to or from port 53.
    Udp(Datagram<'a>),
    /// A TCP segment the pre-filter kept: a connection attempt, a DNS-over-TCP
    /// segment, or any segment under `--all-tcp`.
    Tcp(Segment<'a>),
    /// Host mode: a socket seen answering DNS (sending from port 53).
    Server(ServerSocket<'a>),
    /// Host mode: where a DNAT sent a new TCP connection.
    Nat(Translation),
    /// Host mode: the bytes a connection to a VIP carried.
    Traffic(Carried),
    /// Host mode: a call to libc's getaddrinfo returned.
    Lookup(Lookup<'a>),
    /// Host mode: systemd-resolved answered a query (its monitor).
    ResolverAnswer(ResolverAnswer<'a>),
}

/// An answer systemd-resolved gave (to whom, its monitor does not say):
/// what a getaddrinfo call over nss-resolve got, with the TTL the call
/// itself does not carry.
#[derive(Clone, Copy, Debug)]
pub struct ResolverAnswer<'a> {
    /// When connbal read it.
    pub ts: Timestamp,
    pub name: &'a str,
    /// The least TTL of its records.
    pub ttl: u32,
    pub addresses: &'a [std::net::IpAddr],
}

/// A call to libc's `getaddrinfo` that returned `addresses` for `name`:
/// a lookup whatever carried it (DNS, systemd-resolved's Varlink, nscd,
/// /etc/hosts), with no TTL.
#[derive(Clone, Copy, Debug)]
pub struct Lookup<'a> {
    /// When the call returned.
    pub ts: Timestamp,
    /// When it began: a DNS answer its thread received in between was
    /// this lookup, seen on the wire.
    pub started: Timestamp,
    /// As the caller passed it.
    pub name: &'a str,
    pub addresses: &'a [std::net::IpAddr],
    pub owner: Option<&'a Owner>,
}

/// A new TCP connection from `client` to the address it asked for
/// (`asked`, a Service's VIP), which a DNAT sent to `backend` (a pod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub ts: Timestamp,
    pub client: SocketAddr,
    pub asked: SocketAddr,
    pub backend: SocketAddr,
}

/// The bytes the connection from `client` to `asked` (a VIP) carried,
/// as its socket counted them: when it closed, or so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carried {
    pub ts: Timestamp,
    pub client: SocketAddr,
    pub asked: SocketAddr,
    /// Payload the peer acknowledged.
    pub sent: u64,
    pub received: u64,
    /// Still open: the bytes so far, from the walk at a report.
    pub open: bool,
}

impl Event<'_> {
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Event::Udp(d) => d.ts,
            Event::Tcp(s) => s.ts,
            Event::Server(s) => s.ts,
            Event::Nat(t) => t.ts,
            Event::Traffic(c) => c.ts,
            Event::Lookup(l) => l.ts,
            Event::ResolverAnswer(a) => a.ts,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
    /// The payload was cut short (snap length, or the live copy bound).
    pub truncated: bool,
    pub owner: Option<&'a Owner>,
}

/// A socket that answers DNS, and the address it answered from.
#[derive(Clone, Copy, Debug)]
pub struct ServerSocket<'a> {
    pub ts: Timestamp,
    pub address: SocketAddr,
    pub owner: Option<&'a Owner>,
}

#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Byte 13 of the TCP header.
    pub flags: u8,
    pub seq: u32,
    /// The acknowledgment number of a DNS-over-TCP segment with payload,
    /// where the source has it (replay): bytes the peer acknowledged that
    /// the capture never showed are a hole no retransmission will fill.
    pub ack: Option<u32>,
    /// Only kept for DNS-over-TCP; empty otherwise.
    pub payload: &'a [u8],
    pub truncated: bool,
    /// `--all-tcp`: whether this segment starts a flow, when the source
    /// already knows (the kernel's flow table in live mode). `None` lets the
    /// aggregator's own table decide (replay, which sees every segment).
    pub first_of_flow: Option<bool>,
    pub owner: Option<&'a Owner>,
}
