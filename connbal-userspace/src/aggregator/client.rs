//! Who made a lookup or a connection: the key of every table, row, service
//! and observation, shown by every renderer through one `Display`.
//!
//! A client is known by its address today. Attribution (the process and
//! cgroup that own the socket) adds its attributes here and nowhere else:
//! the tables key on `Client`, the renderers print it.

use serde::{Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    address: IpAddr,
}

impl Client {
    pub const fn from_address(address: IpAddr) -> Self {
        Self { address }
    }

    /// The address the client's packets came from.
    pub const fn address(&self) -> IpAddr {
        self.address
    }
}

impl From<IpAddr> for Client {
    fn from(address: IpAddr) -> Self {
        Self::from_address(address)
    }
}

/// A client given by its address (`10.0.0.2`, `2001:db8::2`).
impl std::str::FromStr for Client {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self::from_address)
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.address, f)
    }
}

/// A JSON string, as the address alone always was.
impl Serialize for Client {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_shows_and_serialises_as_its_address() {
        let client = Client::from_address("2001:db8::2".parse().unwrap());
        assert_eq!(client.to_string(), "2001:db8::2");
        assert_eq!(
            serde_json::to_string(&client).unwrap(),
            serde_json::to_string(&client.address()).unwrap()
        );
    }
}
