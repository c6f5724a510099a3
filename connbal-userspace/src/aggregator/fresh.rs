//! What each name resolves to now, host-wide: the freshest A and AAAA
//! answer any client was given for it. A client that resolved once and
//! never asks again keeps its own answer in force forever; this is what
//! tells that an address it still connects to has since been dropped
//! (docs/semantics.md section 8, `stale_backends`). A stub's own upstream
//! answers count: they are the freshest a host sees.

use super::name::NameKey;
use super::{FastMap, Timestamp};
use std::net::IpAddr;

/// Names remembered; a full table refuses new ones (counted), and those
/// names are judged from each client's own answers, as before.
pub const MAX_FRESH_NAMES: usize = 1 << 18;
/// Addresses kept per answer; a larger answer is remembered as holding
/// every address (nothing is called dropped from it).
const MAX_ADDRESSES: usize = 64;

#[derive(Debug)]
struct Fresh {
    at: Timestamp,
    /// `None`: the answer held more than MAX_ADDRESSES.
    addresses: Option<Vec<IpAddr>>,
}

#[derive(Debug, Default)]
pub struct FreshAnswers {
    /// By name and family (an A answer says nothing of AAAA records).
    answers: FastMap<(NameKey, bool), Fresh>,
    pub dropped: u64,
}

impl FreshAnswers {
    /// An answer for `name` at `at` holding `addresses`, all of one
    /// family.
    pub fn note(&mut self, name: NameKey, at: Timestamp, addresses: &[IpAddr]) {
        let Some(first) = addresses.first() else {
            return;
        };
        let key = (name, first.is_ipv6());
        if self.answers.len() >= MAX_FRESH_NAMES && !self.answers.contains_key(&key) {
            self.dropped += 1;
            return;
        }
        let fits = addresses.len() <= MAX_ADDRESSES;
        match self.answers.get_mut(&key) {
            Some(fresh) if fresh.at > at => {}
            Some(fresh) => {
                fresh.at = at;
                // Reused, not reallocated: the same name is answered over
                // and over, mostly with the same set (profiles).
                match (&mut fresh.addresses, fits) {
                    (Some(held), true) => {
                        held.clear();
                        held.extend_from_slice(addresses);
                    }
                    (held, true) => *held = Some(addresses.to_vec()),
                    (held, false) => *held = None,
                }
            }
            None => {
                self.answers.insert(
                    key,
                    Fresh {
                        at,
                        addresses: fits.then(|| addresses.to_vec()),
                    },
                );
            }
        }
    }

    /// Whether an answer for `name` given after `since` (to any client)
    /// no longer holds `address`.
    pub fn dropped_since(&self, name: NameKey, address: IpAddr, since: Timestamp) -> bool {
        self.answers
            .get(&(name, address.is_ipv6()))
            .is_some_and(|fresh| {
                fresh.at > since
                    && fresh
                        .addresses
                        .as_ref()
                        .is_some_and(|held| !held.contains(&address))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_answer_without_the_address_dropped_it() {
        let mut fresh = FreshAnswers::default();
        let name = NameKey::for_test(1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let six: IpAddr = "2001:db8::1".parse().unwrap();
        fresh.note(name, Timestamp::from_secs(10), &[a, b]);
        assert!(!fresh.dropped_since(name, a, Timestamp::from_secs(5)));
        fresh.note(name, Timestamp::from_secs(20), &[b]);
        assert!(fresh.dropped_since(name, a, Timestamp::from_secs(5)));
        // Not for a client that asked after that answer.
        assert!(!fresh.dropped_since(name, a, Timestamp::from_secs(25)));
        // An older answer arriving late changes nothing.
        fresh.note(name, Timestamp::from_secs(15), &[a, b]);
        assert!(fresh.dropped_since(name, a, Timestamp::from_secs(5)));
        // Families apart.
        assert!(!fresh.dropped_since(name, six, Timestamp::from_secs(5)));
    }
}
