//! The events every capture source is reduced to (spec section 1).
//!
//! Replay builds them from decoded frames, live tracing from ring-buffer
//! records. Payloads are borrowed, so producing an event never allocates.

use std::net::SocketAddr;

/// Capture time in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_secs_nanos(secs: u64, nanos: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self::from_secs_nanos(secs, 0)
    }

    /// Nanoseconds since `earlier`, zero if the clock went backwards (live
    /// records from several CPUs may arrive slightly out of order).
    pub const fn nanos_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A UDP datagram to or from port 53.
    Udp(Datagram<'a>),
    /// A TCP segment the pre-filter kept: a connection attempt, a DNS-over-TCP
    /// segment, or any segment under `--all-tcp`.
    Tcp(Segment<'a>),
}

impl Event<'_> {
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Event::Udp(d) => d.ts,
            Event::Tcp(s) => s.ts,
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
}

#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Byte 13 of the TCP header.
    pub flags: u8,
    pub seq: u32,
    /// Only kept for DNS-over-TCP; empty otherwise.
    pub payload: &'a [u8],
    pub truncated: bool,
    /// `--all-tcp`: whether this segment starts a flow, when the source
    /// already knows (the kernel's flow table in live mode). `None` lets the
    /// aggregator's own table decide (replay, which sees every segment).
    pub first_of_flow: Option<bool>,
}
