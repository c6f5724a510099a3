//! Bounded memory under floods: 5 million packets of random DNS queries and
//! random TCP segments (SYNs and mid-flow segments, with -a) fill every
//! table past its cap. The run must finish, count its evictions, and stay
//! under a fixed peak RSS (256 MiB).

mod common;
use common::*;
use connbal::capture::write::{pcap_header, pcap_record, OwnedFrame, PcapOptions};
use connbal::capture::LinkType;
use etherparse::PacketBuilder;
use std::io::{BufWriter, Write};
use std::process::Stdio;
use xtask::gen::Rng;

const PACKETS: u64 = 5_000_000;
const RSS_LIMIT_KIB: u64 = 256 * 1024;

fn templates() -> (Vec<u8>, Vec<u8>) {
    let mac = [2, 0, 0, 0, 0, 1];
    let query = xtask::gen::dns_query(0, "x.flood.test", 1);
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(mac, mac)
        .ipv4([10, 0, 0, 1], [192, 0, 2, 53], 64)
        .udp(40000, 53)
        .write(&mut udp, &query)
        .unwrap();
    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(mac, mac)
        .ipv4([10, 0, 0, 1], [198, 51, 100, 1], 64)
        .tcp(40000, 80, 1, 1000)
        .syn()
        .write(&mut tcp, &[])
        .unwrap();
    (udp, tcp)
}

#[test]
fn five_million_random_packets_stay_under_the_memory_cap() {
    let (udp, tcp) = templates();
    let mut child = connbal()
        .args(["replay", "-a", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let opts = PcapOptions {
            big_endian: false,
            nanos: false,
        };
        let mut out = BufWriter::with_capacity(1 << 20, stdin);
        pcap_header(&mut out, LinkType::Ethernet, opts).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut frame = OwnedFrame {
            ts_nanos: 1_700_000_000_000_000_000,
            data: Vec::new(),
            wire_len: 0,
        };
        for n in 0..PACKETS {
            let r = rng.next_u64();
            frame.data.clear();
            if n % 2 == 0 {
                // A query from a random client address, port and id.
                frame.data.extend_from_slice(&udp);
                frame.data[26..30].copy_from_slice(&(r as u32).to_be_bytes());
                frame.data[34..36].copy_from_slice(&((r >> 32) as u16).to_be_bytes());
                frame.data[42..44].copy_from_slice(&((r >> 48) as u16).to_be_bytes());
            } else {
                // A SYN or a mid-flow ACK between random endpoints.
                frame.data.extend_from_slice(&tcp);
                frame.data[26..30].copy_from_slice(&(r as u32).to_be_bytes());
                frame.data[30..34].copy_from_slice(&((r >> 16) as u32).to_be_bytes());
                frame.data[34..36].copy_from_slice(&((r >> 40) as u16).to_be_bytes());
                frame.data[47] = if r >> 63 == 0 { 0x02 } else { 0x10 };
            }
            frame.wire_len = frame.data.len() as u32;
            frame.ts_nanos += 1_000; // a million packets per second of capture time
            if pcap_record(&mut out, &frame, opts).is_err() {
                return;
            }
        }
        let _ = out.flush();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["input"]["packets"], PACKETS);
    let c = &json["counters"];
    // 2.5 M distinct queries in 2.5 s of capture time: more than the
    // pending table holds before the 10 s sweep, so the oldest are evicted.
    assert!(c["pending_evicted"].as_u64().unwrap() > 1_000_000, "{c}");
    assert!(c["flows_evicted"].as_u64().unwrap() > 1_000_000, "{c}");
    let peak = json["peak_rss_kib"].as_u64().unwrap();
    assert!(peak > 0 && peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert!(
        stderr(&out).contains("pending DNS queries were evicted"),
        "{}",
        stderr(&out)
    );
    eprintln!("peak RSS {peak} KiB for {PACKETS} packets");
}
