//! Test support shared by the unit tests, the integration tests, xtask's
//! capture generators and the fuzz seeds: one DNS message writer instead of
//! one per user. Not part of the CLI.

use crate::aggregator::dns::{CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_OPT, TYPE_SRV};

/// A tiny DNS message writer: enough to express every case the spec and
/// the malformed-input list talk about, including broken ones.
pub struct MessageBuilder {
    pub bytes: Vec<u8>,
    /// TTL of the records added from now on.
    pub ttl: u32,
}

impl MessageBuilder {
    pub fn new(id: u16, response: bool, counts: [u16; 4]) -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&[
            if response { 0x81 } else { 0x01 },
            if response { 0x80 } else { 0 },
        ]);
        for c in counts {
            bytes.extend_from_slice(&c.to_be_bytes());
        }
        Self { bytes, ttl: 300 }
    }

    pub fn empty() -> Self {
        Self {
            bytes: Vec::new(),
            ttl: 300,
        }
    }

    pub fn ttl(&mut self, ttl: u32) -> &mut Self {
        self.ttl = ttl;
        self
    }

    pub fn name(&mut self, name: &str) -> &mut Self {
        for label in name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            self.bytes.push(label.len() as u8);
            self.bytes.extend_from_slice(label.as_bytes());
        }
        self.bytes.push(0);
        self
    }

    /// A name from raw labels, which may hold any byte (dots, tabs,
    /// escapes): for hostile names.
    pub fn labels(&mut self, labels: &[&[u8]]) -> &mut Self {
        for label in labels {
            self.bytes.push(label.len() as u8);
            self.bytes.extend_from_slice(label);
        }
        self.bytes.push(0);
        self
    }

    /// Bytes written so far: where the next name starts, for pointers.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A record whose owner is a compression pointer to offset `owner_at`.
    pub fn record_at(&mut self, owner_at: u16, rtype: u16, rdata: &[u8]) -> &mut Self {
        let ttl = self.ttl;
        self.u16(0xc000 | owner_at)
            .u16(rtype)
            .u16(CLASS_IN)
            .raw(&ttl.to_be_bytes());
        self.u16(rdata.len() as u16).raw(rdata)
    }

    pub fn raw(&mut self, raw: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(raw);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    pub fn question(&mut self, name: &str, qtype: u16) -> &mut Self {
        self.name(name).u16(qtype).u16(CLASS_IN)
    }

    pub fn record(&mut self, owner: &str, rtype: u16, class: u16, rdata: &[u8]) -> &mut Self {
        let ttl = self.ttl;
        self.name(owner)
            .u16(rtype)
            .u16(class)
            .raw(&ttl.to_be_bytes());
        self.u16(rdata.len() as u16).raw(rdata)
    }

    pub fn a(&mut self, owner: &str, addr: [u8; 4]) -> &mut Self {
        self.record(owner, TYPE_A, CLASS_IN, &addr)
    }

    pub fn aaaa(&mut self, owner: &str, addr: std::net::Ipv6Addr) -> &mut Self {
        self.record(owner, TYPE_AAAA, CLASS_IN, &addr.octets())
    }

    pub fn srv(&mut self, owner: &str, port: u16, target: &str) -> &mut Self {
        self.weighted_srv(owner, 10, 5, port, target)
    }

    pub fn weighted_srv(
        &mut self,
        owner: &str,
        priority: u16,
        weight: u16,
        port: u16,
        target: &str,
    ) -> &mut Self {
        let mut rdata = Vec::new();
        rdata.extend_from_slice(&priority.to_be_bytes());
        rdata.extend_from_slice(&weight.to_be_bytes());
        rdata.extend_from_slice(&port.to_be_bytes());
        let mut t = MessageBuilder::empty();
        t.name(target);
        rdata.extend_from_slice(&t.bytes);
        self.record(owner, TYPE_SRV, CLASS_IN, &rdata)
    }

    pub fn cname(&mut self, owner: &str, target: &str) -> &mut Self {
        let mut t = MessageBuilder::empty();
        t.name(target);
        self.record(owner, TYPE_CNAME, CLASS_IN, &t.bytes)
    }

    pub fn opt(&mut self) -> &mut Self {
        self.raw(&[0])
            .u16(TYPE_OPT)
            .u16(1232)
            .raw(&[0, 0, 0, 0])
            .u16(0)
    }

    pub fn build(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

/// A DNS query from `client` to `server` and the answer back, as two UDP
/// datagrams with no socket owner.
pub fn exchange(
    agg: &mut crate::aggregator::Aggregator,
    ts: crate::aggregator::Timestamp,
    (client, server): (std::net::SocketAddr, std::net::SocketAddr),
    (query, answer): (&[u8], &[u8]),
) {
    use crate::aggregator::{Datagram, Event};
    for (src, dst, payload) in [(client, server, query), (server, client, answer)] {
        agg.process(&Event::Udp(Datagram {
            ts,
            src,
            dst,
            payload,
            truncated: false,
            owner: None,
        }));
    }
}

/// An aggregator that saw client 10.0.0.2 look `name` up at 10.0.0.53 and
/// get `vip`'s address alone, then connect to `vip` once for each entry of
/// `translated`, from ports 40001 on, each followed by its translation to
/// the backend given (none: never translated).
/// The bytes the `n`th connection `behind_a_vip` made (from 0) carried.
pub fn carried_behind_a_vip(
    agg: &mut crate::aggregator::Aggregator,
    vip: std::net::SocketAddr,
    n: u16,
    (sent, received): (u64, u64),
    open: bool,
) {
    use crate::aggregator::{Carried, Event, Timestamp};
    agg.process(&Event::Traffic(Carried {
        ts: Timestamp::from_secs(101),
        client: std::net::SocketAddr::new([10, 0, 0, 2].into(), 40001 + n),
        asked: vip,
        sent,
        received,
        open,
    }));
}

pub fn behind_a_vip(
    name: &str,
    vip: std::net::SocketAddr,
    translated: &[Option<&str>],
) -> crate::aggregator::Aggregator {
    use crate::aggregator::{Aggregator, Config, Event, Segment, Timestamp, Translation};
    use std::net::{IpAddr, SocketAddr};
    let mut agg = Aggregator::new(Config {
        connection_bytes: true,
        ..Config::default()
    });
    let client: SocketAddr = "10.0.0.2:40000".parse().expect("an address");
    let server: SocketAddr = "10.0.0.53:53".parse().expect("an address");
    let ts = Timestamp::from_secs(100);
    let IpAddr::V4(address) = vip.ip() else {
        panic!("an IPv4 VIP")
    };
    let query = MessageBuilder::new(1, false, [1, 0, 0, 0])
        .question(name, TYPE_A)
        .build();
    let answer = MessageBuilder::new(1, true, [1, 1, 0, 0])
        .question(name, TYPE_A)
        .a(name, address.octets())
        .build();
    exchange(&mut agg, ts, (client, server), (&query, &answer));
    for (port, backend) in (40001..).zip(translated) {
        let from = SocketAddr::new(client.ip(), port);
        agg.process(&Event::Tcp(Segment {
            ts,
            src: from,
            dst: vip,
            flags: connbal_common::tcp_flags::SYN,
            seq: 1,
            payload: &[],
            truncated: false,
            ack: None,
            first_of_flow: None,
            owner: None,
        }));
        if let Some(backend) = backend {
            agg.process(&Event::Nat(Translation {
                ts,
                client: from,
                asked: vip,
                backend: backend.parse().expect("a backend"),
            }));
        }
    }
    agg
}
