//! `cargo xtask gen-capture`: a deterministic synthetic capture for
//! benchmarks and memory tests, written as snoop, pcap and pcapng of the
//! same traffic.
//!
//! The mix, per connection: a DNS query and its multi-answer response (A,
//! AAAA, SRV with additional records, or a CNAME to an A set), the TCP
//! handshake to one of the returned backends, a few full-size data segments
//! with their ACKs, and the close. Bulk data is the majority of packets and
//! nearly all bytes, as on a real host. Addresses are documentation ranges.

use anyhow::{Context, Result};
use connbal::aggregator::dns::{TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_SRV};
use connbal::capture::write::{self, OwnedFrame, PcapOptions};
use connbal::capture::LinkType;
use connbal::testing::MessageBuilder;
use etherparse::PacketBuilder;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;

const MAC_CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_ROUTER: [u8; 6] = [2, 0, 0, 0, 0, 2];
const DNS_SERVER: [u8; 4] = [192, 0, 2, 53];
const DNS_SERVER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
];

/// xorshift64*: deterministic for a given seed, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

enum Kind {
    A,
    Aaaa,
    Srv,
    Cname,
}

struct Service {
    name: &'static str,
    kind: Kind,
    backends: Vec<IpAddr>,
    port: u16,
}

fn services() -> Vec<Service> {
    let v4 = |last: std::ops::RangeInclusive<u8>| {
        last.map(|l| IpAddr::from([203, 0, 113, l]))
            .collect::<Vec<_>>()
    };
    let v6 = |n: u16| {
        (1..=n)
            .map(|l| IpAddr::from([0x2001, 0xdb8, 0x200, 0, 0, 0, 0, l]))
            .collect::<Vec<_>>()
    };
    vec![
        Service {
            name: "web.svc.example.com",
            kind: Kind::A,
            backends: v4(11..=14),
            port: 443,
        },
        Service {
            name: "api.svc.example.com",
            kind: Kind::A,
            backends: v4(21..=23),
            port: 8443,
        },
        Service {
            name: "v6.svc.example.com",
            kind: Kind::Aaaa,
            backends: v6(3),
            port: 443,
        },
        Service {
            name: "_xmpp-client._tcp.example.com",
            kind: Kind::Srv,
            backends: v4(31..=33),
            port: 5222,
        },
        Service {
            name: "alias.example.com",
            kind: Kind::Cname,
            backends: v4(41..=44),
            port: 80,
        },
    ]
}

/// A recursive query for `name` with one question of `qtype`, class IN.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    MessageBuilder::new(id, false, [1, 0, 0, 0])
        .question(name, qtype)
        .build()
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Where the question name starts in every message: right after the header.
const QUESTION_AT: u16 = 12;

/// The answer to `dns_query(id, service.name, …)`, its owner names
/// compressed as a real server's are.
fn dns_response(id: u16, service: &Service) -> Vec<u8> {
    let qtype = match service.kind {
        Kind::A | Kind::Cname => TYPE_A,
        Kind::Aaaa => TYPE_AAAA,
        Kind::Srv => TYPE_SRV,
    };
    let n = service.backends.len() as u16;
    let (answers, additional): (u16, u16) = match service.kind {
        Kind::Srv => (n, n),
        Kind::Cname => (n + 1, 0),
        _ => (n, 0),
    };
    let mut m = MessageBuilder::new(id, true, [1, answers, 0, additional]);
    m.question(service.name, qtype);
    match service.kind {
        Kind::A | Kind::Aaaa => {
            for b in &service.backends {
                m.record_at(QUESTION_AT, qtype, &octets(b));
            }
        }
        Kind::Cname => {
            let target = MessageBuilder::empty().name("pool.example.com").build();
            // The target name sits in the CNAME's RDATA, after its owner
            // pointer and fixed fields (2 + 2 + 2 + 4 + 2 bytes).
            let target_at = m.len() as u16 + 12;
            m.record_at(QUESTION_AT, TYPE_CNAME, &target);
            for b in &service.backends {
                m.record_at(target_at, TYPE_A, &octets(b));
            }
        }
        Kind::Srv => {
            let mut targets_at = Vec::new();
            for i in 0..service.backends.len() {
                let mut rdata = vec![0, 10, 0, 10];
                rdata.extend_from_slice(&service.port.to_be_bytes());
                rdata.extend(
                    MessageBuilder::empty()
                        .name(&format!("xmpp{i}.example.com"))
                        .build(),
                );
                // The target follows the owner pointer, fixed fields, and
                // the SRV priority, weight and port.
                targets_at.push(m.len() as u16 + 12 + 6);
                m.record_at(QUESTION_AT, TYPE_SRV, &rdata);
            }
            for (b, at) in service.backends.iter().zip(targets_at) {
                m.record_at(at, TYPE_A, &octets(b));
            }
        }
    }
    m.build()
}

struct Writers {
    pcap: BufWriter<File>,
    pcapng: BufWriter<File>,
    snoop: BufWriter<File>,
    frame: OwnedFrame,
    packets: u64,
    bytes: u64,
}

const PCAP: PcapOptions = PcapOptions {
    big_endian: false,
    nanos: false,
};

impl Writers {
    fn emit(&mut self, data: &[u8]) -> Result<()> {
        next_frame(&mut self.frame, data);
        write::pcap_record(&mut self.pcap, &self.frame, PCAP)?;
        write::pcapng_packet(&mut self.pcapng, 0, &self.frame, false)?;
        write::snoop_record(&mut self.snoop, &self.frame)?;
        self.packets += 1;
        self.bytes += data.len() as u64;
        Ok(())
    }
}

/// Makes `frame` the next packet, `data`, 20 µs after the last: the one
/// clock and framing both generators' writers share.
fn next_frame(frame: &mut OwnedFrame, data: &[u8]) {
    frame.data.clear();
    frame.data.extend_from_slice(data);
    frame.wire_len = data.len() as u32;
    frame.ts_nanos += 20_000;
}

fn packet(src: &IpAddr, dst: &IpAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_ROUTER);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => unreachable!("one family per flow"),
    }
}

/// Writes `packets` packets (at least) into DIR/synthetic.{pcap,pcapng,snoop}.
pub fn generate(out_dir: &Path, packets: u64, seed: u64) -> Result<(u64, u64)> {
    std::fs::create_dir_all(out_dir)?;
    let open = |name: &str| -> Result<BufWriter<File>> {
        let path = out_dir.join(name);
        Ok(BufWriter::with_capacity(
            1 << 20,
            File::create(&path).with_context(|| path.display().to_string())?,
        ))
    };
    let mut w = Writers {
        pcap: open("synthetic.pcap")?,
        pcapng: open("synthetic.pcapng")?,
        snoop: open("synthetic.snoop")?,
        frame: OwnedFrame {
            ts_nanos: 1_700_000_000_000_000_000,
            data: Vec::with_capacity(1600),
            wire_len: 0,
        },
        packets: 0,
        bytes: 0,
    };
    write::pcap_header(&mut w.pcap, LinkType::Ethernet, PCAP)?;
    write::pcapng_section(&mut w.pcapng, false)?;
    write::pcapng_interface(&mut w.pcapng, LinkType::Ethernet, false)?;
    write::snoop_header(&mut w.snoop)?;

    let mut rng = Rng(seed.max(1));
    let services = services();
    let payload = vec![0x5a; 1448];
    let mut buf = Vec::with_capacity(1600);
    let mut id = 0u16;
    while w.packets < packets {
        let service = &services[rng.below(services.len() as u64) as usize];
        let v6 = matches!(service.kind, Kind::Aaaa);
        let client: IpAddr = if v6 {
            IpAddr::from([
                0x2001,
                0xdb8,
                0x100,
                0,
                0,
                0,
                0,
                0x10 + rng.below(64) as u16,
            ])
        } else {
            IpAddr::from([198, 51, 100, 10 + rng.below(64) as u8])
        };
        let server: IpAddr = if v6 {
            IpAddr::from(DNS_SERVER_V6)
        } else {
            IpAddr::from(DNS_SERVER)
        };
        let dns_port = 30000 + rng.below(30000) as u16;
        id = id.wrapping_add(1);
        let qtype = match service.kind {
            Kind::Aaaa => 28,
            Kind::Srv => 33,
            _ => 1,
        };
        for (from_client, message) in [
            (true, dns_query(id, service.name, qtype)),
            (false, dns_response(id, service)),
        ] {
            buf.clear();
            let (s, d, sp, dp) = if from_client {
                (&client, &server, dns_port, 53)
            } else {
                (&server, &client, 53, dns_port)
            };
            packet(s, d).udp(sp, dp).write(&mut buf, &message)?;
            w.emit(&buf)?;
        }
        // A connection to one backend, with a skewed choice.
        let pick =
            (rng.below(100) * rng.below(100) / 100 * service.backends.len() as u64 / 100) as usize;
        let backend = service.backends[pick];
        let port = 40000 + rng.below(20000) as u16;
        let (client_seq, server_seq) = (rng.next_u64() as u32, rng.next_u64() as u32);
        let mut c = OpenConnection {
            client,
            backend,
            client_port: port,
            server_port: service.port,
            client_seq,
            server_seq,
        };
        let mut segment = |w: &mut Writers,
                           to_server: bool,
                           syn: bool,
                           ack: bool,
                           fin: bool,
                           data: &[u8]|
         -> Result<()> {
            write_segment(&mut buf, &mut c, to_server, (syn, ack, fin), data)?;
            w.emit(&buf)
        };
        segment(&mut w, true, true, false, false, &[])?;
        segment(&mut w, false, true, true, false, &[])?;
        segment(&mut w, true, false, true, false, &[])?;
        segment(&mut w, true, false, true, false, &payload[..200])?;
        let data_segments = 2 + rng.below(5);
        for i in 0..data_segments {
            let size = if rng.below(4) == 0 {
                200 + rng.below(1248) as usize
            } else {
                1448
            };
            segment(&mut w, false, false, true, false, &payload[..size])?;
            if i % 2 == 1 {
                segment(&mut w, true, false, true, false, &[])?;
            }
        }
        segment(&mut w, true, false, true, true, &[])?;
        segment(&mut w, false, false, true, true, &[])?;
        segment(&mut w, true, false, true, false, &[])?;
    }
    w.pcap.flush()?;
    w.pcapng.flush()?;
    w.snoop.flush()?;
    Ok((w.packets, w.bytes))
}

/// A flood for memory tests: `packets` frames alternating between a DNS
/// query from a random client address, port and id, and a SYN or mid-flow
/// ACK between random endpoints, one microsecond apart, as a pcap stream.
/// Every table connbal keeps fills past its cap.
pub fn write_flood(out: &mut impl Write, packets: u64, seed: u64) -> std::io::Result<()> {
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_ROUTER)
        .ipv4([10, 0, 0, 1], DNS_SERVER, 64)
        .udp(40000, 53)
        .write(&mut udp, &dns_query(0, "x.flood.test", 1))
        .map_err(std::io::Error::other)?;
    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_ROUTER)
        .ipv4([10, 0, 0, 1], [198, 51, 100, 1], 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut tcp, &[])
        .map_err(std::io::Error::other)?;
    write::pcap_header(out, LinkType::Ethernet, PCAP)?;
    let mut rng = Rng(seed.max(1));
    let mut frame = OwnedFrame {
        ts_nanos: 1_700_000_000_000_000_000,
        data: Vec::new(),
        wire_len: 0,
    };
    for n in 0..packets {
        let r = rng.next_u64();
        frame.data.clear();
        if n % 2 == 0 {
            frame.data.extend_from_slice(&udp);
            frame.data[26..30].copy_from_slice(&(r as u32).to_be_bytes());
            frame.data[34..36].copy_from_slice(&((r >> 32) as u16).to_be_bytes());
            frame.data[42..44].copy_from_slice(&((r >> 48) as u16).to_be_bytes());
        } else {
            frame.data.extend_from_slice(&tcp);
            frame.data[26..30].copy_from_slice(&(r as u32).to_be_bytes());
            frame.data[30..34].copy_from_slice(&((r >> 16) as u32).to_be_bytes());
            frame.data[34..36].copy_from_slice(&((r >> 40) as u16).to_be_bytes());
            frame.data[47] = if r >> 63 == 0 { 0x02 } else { 0x10 };
        }
        frame.wire_len = frame.data.len() as u32;
        frame.ts_nanos += 1_000;
        write::pcap_record(out, &frame, PCAP)?;
    }
    out.flush()
}

struct SnoopOut {
    snoop: BufWriter<File>,
    frame: OwnedFrame,
    packets: u64,
    bytes: u64,
}

impl SnoopOut {
    fn emit(&mut self, data: &[u8]) -> Result<()> {
        next_frame(&mut self.frame, data);
        write::snoop_record(&mut self.snoop, &self.frame)?;
        self.packets += 1;
        self.bytes += data.len() as u64;
        Ok(())
    }
}

/// A TCP connection as the generators write it.
struct OpenConnection {
    client: IpAddr,
    backend: IpAddr,
    client_port: u16,
    server_port: u16,
    client_seq: u32,
    server_seq: u32,
}

/// One segment of `c` into `buf` (PSH when it carries data); advances the
/// sender's sequence number.
fn write_segment(
    buf: &mut Vec<u8>,
    c: &mut OpenConnection,
    to_server: bool,
    (syn, ack, fin): (bool, bool, bool),
    data: &[u8],
) -> Result<()> {
    buf.clear();
    let (s, d, sp, dp, seq, ackn) = if to_server {
        let (s, d) = (c.client, c.backend);
        (
            s,
            d,
            c.client_port,
            c.server_port,
            c.client_seq,
            c.server_seq,
        )
    } else {
        let (s, d) = (c.backend, c.client);
        (
            s,
            d,
            c.server_port,
            c.client_port,
            c.server_seq,
            c.client_seq,
        )
    };
    let mut b = packet(&s, &d).tcp(sp, dp, seq, 64_000);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(ackn);
    }
    if fin {
        b = b.fin();
    }
    if !data.is_empty() {
        b = b.psh();
    }
    b.write(buf, data)?;
    let advance = data.len() as u32 + u32::from(syn) + u32::from(fin);
    if to_server {
        c.client_seq = c.client_seq.wrapping_add(advance);
    } else {
        c.server_seq = c.server_seq.wrapping_add(advance);
    }
    Ok(())
}

/// The traffic mix the original tool was benchmarked on (issue 15): 64
/// IPv4 clients (the original reads IPv4 only), and per step a DNS lookup
/// (4%), a new connection (2%; connections stay open, so about 60,000
/// flows are open by the end of 3 M packets, which is what makes the
/// original's `-a` chains long), or else a bulk data segment on one of the
/// client's connections and its ACK. Written as DIR/original-mix.snoop, the one format the
/// original reads; returns (packets, bytes of frames).
pub fn generate_original_mix(out_dir: &Path, packets: u64, seed: u64) -> Result<(u64, u64)> {
    const CLIENTS: usize = 64;
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join("original-mix.snoop");
    let mut snoop = BufWriter::with_capacity(
        1 << 20,
        File::create(&path).with_context(|| path.display().to_string())?,
    );
    write::snoop_header(&mut snoop)?;
    let mut out = SnoopOut {
        snoop,
        frame: OwnedFrame {
            ts_nanos: 1_700_000_000_000_000_000,
            data: Vec::with_capacity(1600),
            wire_len: 0,
        },
        packets: 0,
        bytes: 0,
    };
    let services: Vec<Service> = services()
        .into_iter()
        .filter(|s| !matches!(s.kind, Kind::Aaaa))
        .collect();
    let mut rng = Rng(seed.max(1));
    let mut open: Vec<Vec<OpenConnection>> = (0..CLIENTS).map(|_| Vec::new()).collect();
    let payload = vec![0x5a; 1448];
    let mut buf = Vec::with_capacity(1600);
    let mut id = 0u16;
    let tcp = write_segment;
    while out.packets < packets {
        let who = rng.below(CLIENTS as u64) as usize;
        let client = IpAddr::from([198, 51, 100, 10 + who as u8]);
        let step = rng.below(100);
        let service = &services[rng.below(services.len() as u64) as usize];
        if step < 4 {
            id = id.wrapping_add(1);
            let qtype = if matches!(service.kind, Kind::Srv) {
                TYPE_SRV
            } else {
                TYPE_A
            };
            let port = 30000 + rng.below(30000) as u16;
            let server = IpAddr::from(DNS_SERVER);
            buf.clear();
            packet(&client, &server)
                .udp(port, 53)
                .write(&mut buf, &dns_query(id, service.name, qtype))?;
            out.emit(&buf)?;
            buf.clear();
            packet(&server, &client)
                .udp(53, port)
                .write(&mut buf, &dns_response(id, service))?;
            out.emit(&buf)?;
        } else if step < 6 || open[who].is_empty() {
            let pick = (rng.below(100) * rng.below(100) / 100 * service.backends.len() as u64 / 100)
                as usize;
            let mut c = OpenConnection {
                client,
                backend: service.backends[pick],
                client_port: 40000 + rng.below(20000) as u16,
                server_port: service.port,
                client_seq: rng.next_u64() as u32,
                server_seq: rng.next_u64() as u32,
            };
            for (to_server, flags) in [
                (true, (true, false, false)),
                (false, (true, true, false)),
                (true, (false, true, false)),
            ] {
                tcp(&mut buf, &mut c, to_server, flags, &[])?;
                out.emit(&buf)?;
            }
            open[who].push(c);
        } else {
            let n = open[who].len() as u64;
            let c = &mut open[who][rng.below(n) as usize];
            // Mostly the server sending, now and then a request; segments
            // of any size, each acknowledged: about 400 bytes a frame on
            // average, as in the capture the issue measured.
            let to_server = rng.below(8) == 0;
            let size = 1 + rng.below(1448) as usize;
            tcp(
                &mut buf,
                c,
                to_server,
                (false, true, false),
                &payload[..size],
            )?;
            out.emit(&buf)?;
            tcp(&mut buf, c, !to_server, (false, true, false), &[])?;
            out.emit(&buf)?;
        }
    }
    out.snoop.flush()?;
    Ok((out.packets, out.bytes))
}
