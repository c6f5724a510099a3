//! `--all-tcp` flow bookkeeping (spec section 4): which flows have been seen,
//! so that the first segment of a flow already open when the capture started
//! counts once, and closed flows are remembered for a while (as TIME_WAIT
//! does) so the final ACK of a close does not look like a new flow.

use super::bounded::FifoMap;
use super::event::Timestamp;
use std::net::SocketAddr;

use connbal_common::record::FlowState;
use connbal_common::FlowEvent;

/// A flow's key regardless of direction: both endpoints as 16-byte
/// addresses (IPv4 mapped) and ports, 36 bytes with no padding. Half the
/// size of two `SocketAddr`s, which matters at a quarter million flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey([u8; 16], [u8; 16], u16, u16);

fn octets(addr: &SocketAddr) -> [u8; 16] {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

impl FlowKey {
    pub fn new(a: SocketAddr, b: SocketAddr) -> Self {
        let (a, b) = Self::ordered(a, b);
        Self(octets(&a), octets(&b), a.port(), b.port())
    }

    fn ordered(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
        if (a.ip(), a.port()) <= (b.ip(), b.port()) {
            (a, b)
        } else {
            (b, a)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// First segment of a flow not seen before (or forgotten since).
    New,
    Known,
}

#[derive(Debug)]
pub struct FlowTable {
    flows: FifoMap<FlowKey, FlowState>,
}

impl FlowTable {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            flows: FifoMap::with_cap(cap),
        }
    }

    /// Records one segment with TCP `flags`, by the rule the kernel's table
    /// follows too ([`FlowState::observe`]); also says whether the table had
    /// to evict its oldest flow to make room.
    pub fn observe(&mut self, key: FlowKey, ts: Timestamp, flags: u8) -> (Seen, bool) {
        if let Some(state) = self.flows.get_mut(&key) {
            match state.observe(ts.0, flags) {
                FlowEvent::New => (Seen::New, false),
                FlowEvent::Closed | FlowEvent::Nothing => (Seen::Known, false),
            }
        } else {
            let evicted = self.flows.insert(key, FlowState::first_seen(ts.0, flags));
            (Seen::New, evicted)
        }
    }

    /// Forgets flows past TIME_WAIT or idle past keepalive, to bound memory.
    pub fn expire(&mut self, now: Timestamp) {
        self.flows.retain(|_, state| !state.expired(now.0));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.flows.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connbal_common::tcp_flags::{ACK, FIN};

    fn key() -> FlowKey {
        FlowKey::new(
            "192.0.2.1:40000".parse().unwrap(),
            "192.0.2.9:80".parse().unwrap(),
        )
    }

    #[test]
    fn key_is_direction_independent() {
        let a = "192.0.2.1:40000".parse().unwrap();
        let b = "192.0.2.9:80".parse().unwrap();
        assert_eq!(FlowKey::new(a, b), FlowKey::new(b, a));
    }

    #[test]
    fn the_ack_after_a_close_is_not_a_new_flow() {
        let mut t = FlowTable::with_cap(8);
        assert_eq!(
            t.observe(key(), Timestamp::from_secs(1), ACK),
            (Seen::New, false)
        );
        assert_eq!(
            t.observe(key(), Timestamp::from_secs(2), FIN | ACK),
            (Seen::Known, false)
        );
        assert_eq!(
            t.observe(key(), Timestamp::from_secs(2), ACK),
            (Seen::Known, false)
        );
        t.expire(Timestamp::from_secs(30));
        assert_eq!(t.len(), 1, "closed flows are remembered through TIME_WAIT");
        t.expire(Timestamp::from_secs(63));
        assert!(t.is_empty());
    }
}
