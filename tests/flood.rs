//! Bounded memory under floods: 5 million packets of random DNS queries and
//! random TCP segments (SYNs and mid-flow segments, with -a) fill every
//! table past its cap. The run must finish, count its evictions, and stay
//! under a fixed peak RSS (256 MiB).

mod common;
use common::*;
use std::io::BufWriter;
use std::process::Stdio;

const PACKETS: u64 = 5_000_000;
const RSS_LIMIT_KIB: u64 = 256 * 1024;

#[test]
fn five_million_random_packets_stay_under_the_memory_cap() {
    let mut child = connbal()
        .args(["replay", "-a", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Ends early (broken pipe) only if connbal died; the assertions say why.
        let _ = xtask::gen::write_flood(
            &mut BufWriter::with_capacity(1 << 20, stdin),
            PACKETS,
            0x9e37_79b9_7f4a_7c15,
        );
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
