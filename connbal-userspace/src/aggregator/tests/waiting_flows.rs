//! `-a`: flows found open before DNS named their backend count once it is
//! answered, while they are still open (docs/semantics.md section 4).

use super::*;
use verdict::{Check, Finding};

/// The case: 8 busy connections opened before the trace, to 4
/// backends, by an app that re-resolves every 2 s. Before: "0
/// connections, ✗ no connection to any of the 4 backends",
/// flows_seen_midstream 8.
/// Checks docs/semantics.md section 4.
#[test]
fn flows_open_before_the_answer_count_once_it_comes() {
    let mut h = Harness::with(Config {
        all_tcp: true,
        ..Config::default()
    });
    let mut flows = Vec::new();
    for i in 0..8u16 {
        let from = sock(CLIENT, 45000 + i);
        let backend = sock(&format!("10.0.0.{}", 1 + i % 4), 443);
        h.segment(from, backend, ACK | PSH, 100, b"busy");
        h.segment(backend, from, ACK, 900, &[]);
        flows.push((from, backend));
    }
    // One of them closes before the app resolves: it is over, it never
    // counts.
    let (from, backend) = flows[7];
    h.segment(from, backend, FIN | ACK, 104, &[]);
    for id in 0..3u16 {
        h.lookup(id, "pool.example", 30, &[1, 2, 3, 4]);
        h.advance_ms(2000);
    }
    // Still busy: no flow counts twice.
    for &(from, backend) in &flows[..7] {
        h.segment(from, backend, ACK | PSH, 200, b"more");
    }
    let s = h.service("pool.example");
    assert_eq!(s.connections, 7, "{}", h.tsv());
    assert_eq!(h.counters().flows_seen_midstream, 8);
    let unused = check_of(&s, Check::UnusedBackends);
    assert_eq!(unused.finding, Finding::AllUsed, "{}", unused.text);
    // Found open, they were made before: never late or stale.
    assert_eq!(s.connections_after_expiry, 0);
}

/// The same in default mode (no -a): flows already open are not counted.
/// Checks docs/semantics.md section 4.
#[test]
fn without_all_tcp_open_flows_never_count() {
    let mut h = Harness::new();
    let from = sock(CLIENT, 45000);
    h.segment(from, sock("10.0.0.1", 443), ACK | PSH, 100, b"busy");
    h.lookup(1, "pool.example", 30, &[1, 2]);
    assert_eq!(h.service("pool.example").connections, 0);
}
