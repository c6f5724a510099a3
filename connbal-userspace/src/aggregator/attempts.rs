//! Connection attempts as the client made them, not as packets seen.
//!
//! A SYN and its retransmissions, and the same SYN seen again on a second
//! interface (`trace -i lo` sees it leave and arrive), share their 4-tuple
//! and initial sequence number: they are one attempt. What became of it
//! follows from the reply: a SYN-ACK answers it, a reset refuses it, and an
//! attempt with neither by the time of the report is unanswered. The
//! original counted SYN packets; this is an extension (docs/semantics.md).

use super::bounded::FifoMap;
use connbal_common::tcp_flags;
use serde::Serialize;
use std::net::SocketAddr;

/// Attempts remembered for their repeats and replies. Linux retransmits an
/// unanswered SYN after 1, 3, 7, 15… s; at 64 Ki entries (about 7 MiB) a
/// host would need some 9,000 new attempts a second to forget one before
/// its third retransmission. An attempt evicted still counts (as
/// unanswered if no reply came); only a later repeat of it counts again.
pub const MAX_ATTEMPTS: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// A SYN-ACK came back.
    Answered,
    /// A reset came back: nothing listens, or a firewall rejects.
    Refused,
}

/// What each backend's attempts came to. Unanswered is what is left: no
/// reply seen by the report (dropped SYNs, an unreachable host), or the
/// reply missed (evicted, or not captured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub answered: u64,
    pub refused: u64,
    pub unanswered: u64,
}

impl Outcomes {
    pub fn failed(&self) -> u64 {
        self.refused + self.unanswered
    }
}

/// An attempt's 4-tuple, from the client's side. Replies look it up
/// reversed. Plain bytes hash faster than `SocketAddr`s, and no client is
/// stored: the reply's destination (and, in host mode, its socket) names
/// the same client the SYN's source did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AttemptKey {
    client: [u8; 16],
    backend: [u8; 16],
    client_port: u16,
    backend_port: u16,
}

impl AttemptKey {
    fn new(client: SocketAddr, backend: SocketAddr) -> Self {
        let octets = |a: &SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        Self {
            client: octets(&client),
            backend: octets(&backend),
            client_port: client.port(),
            backend_port: backend.port(),
        }
    }
}

#[derive(Debug)]
struct Attempt {
    isn: u32,
    outcome: Outcome,
    /// Which of its backend's names the attempt was credited to (0 but for
    /// an address under several names).
    credit: u16,
}

#[derive(Debug)]
pub struct AttemptTable {
    attempts: FifoMap<AttemptKey, Attempt>,
    /// SYNs that repeated an attempt already counted.
    pub repeated: u64,
    /// Attempts forgotten to make room (MAX_ATTEMPTS).
    pub evicted: u64,
    /// SYN-ACKs and resets seen, settling an attempt or not: none at all
    /// means the input cannot tell outcomes (a capture of SYNs only).
    pub replies_seen: u64,
}

impl Default for AttemptTable {
    fn default() -> Self {
        Self {
            attempts: FifoMap::with_cap(MAX_ATTEMPTS),
            repeated: 0,
            evicted: 0,
            replies_seen: 0,
        }
    }
}

impl AttemptTable {
    /// A SYN from `src` to `dst` with initial sequence number `isn`; false
    /// when it repeats an attempt already counted.
    pub fn attempt(&mut self, src: SocketAddr, dst: SocketAddr, isn: u32) -> bool {
        let key = AttemptKey::new(src, dst);
        if self
            .attempts
            .get(&key)
            .is_some_and(|known| known.isn == isn)
        {
            self.repeated += 1;
            return false;
        }
        let evicted = self.attempts.insert(
            key,
            Attempt {
                isn,
                outcome: Outcome::Pending,
                credit: 0,
            },
        );
        self.evicted += u64::from(evicted);
        true
    }

    /// The attempt just counted from `src` to `dst` was credited to its
    /// backend's `credit`th name.
    pub fn credited(&mut self, src: SocketAddr, dst: SocketAddr, credit: u16) {
        if let Some(attempt) = self.attempts.get_mut(&AttemptKey::new(src, dst)) {
            attempt.credit = credit;
        }
    }

    /// A SYN-ACK or reset (`flags`) from the backend at `src` to the client
    /// at `dst`: how it settles the pending attempt it answers, and which
    /// of the backend's names the attempt was credited to. Replies to
    /// settled or unknown attempts (a reset mid-connection, a SYN-ACK seen
    /// twice, a server's own SYN-ACKs) settle nothing.
    pub fn reply(&mut self, src: SocketAddr, dst: SocketAddr, flags: u8) -> Option<(Outcome, u16)> {
        self.replies_seen += 1;
        let attempt = self.attempts.get_mut(&AttemptKey::new(dst, src))?;
        if attempt.outcome != Outcome::Pending {
            return None;
        }
        attempt.outcome = if flags & tcp_flags::RST != 0 {
            Outcome::Refused
        } else {
            Outcome::Answered
        };
        Some((attempt.outcome, attempt.credit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::{ACK, RST, SYN};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn repeats_count_once_and_the_first_reply_settles() {
        let mut table = AttemptTable::default();
        let (c, s) = (addr("10.0.0.1:40000"), addr("10.0.0.9:80"));
        assert!(table.attempt(c, s, 7));
        assert!(!table.attempt(c, s, 7), "retransmission");
        assert!(!table.attempt(c, s, 7), "second interface");
        assert_eq!(table.repeated, 2);
        // The reply must come from the backend, not the client.
        assert_eq!(table.reply(c, s, RST), None);
        assert_eq!(table.reply(s, c, SYN | ACK), Some((Outcome::Answered, 0)));
        assert_eq!(table.reply(s, c, RST | ACK), None, "settled already");
        // Same 4-tuple, new ISN: a new attempt (the port was reused).
        assert!(table.attempt(c, s, 8));
        table.credited(c, s, 2);
        assert_eq!(table.reply(s, c, RST | ACK), Some((Outcome::Refused, 2)));
    }
}
