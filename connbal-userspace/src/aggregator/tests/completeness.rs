//! Verdicts judged from input that may miss something say so, per verdict
//! (docs/semantics.md section 8, completeness).

use super::*;
use verdict::{Check, Incomplete};

/// The case: records lost to a full ring buffer, and a backend
/// named as failing from what may be a lost SYN-ACK, said as fact. Now
/// every verdict that counts says it may be wrong.
/// Checks docs/semantics.md section 8.
#[test]
fn lost_records_make_every_counting_verdict_incomplete() {
    let mut h = Harness::new();
    h.lookup(1, "web.example", 60, &[1, 2]);
    let from = h.syn("10.0.0.1", 80);
    h.segment(sock("10.0.0.1", 80), from, SYN | ACK, 9, &[]);
    h.syn("10.0.0.2", 80); // its SYN-ACK may be among those lost
    let complete = h.service("web.example");
    assert!(complete
        .verdicts
        .iter()
        .all(|v| v.complete && v.incomplete.is_none()));

    h.agg.input_lost(19_805);
    let s = h.service("web.example");
    let failing = check_of(&s, Check::FailingBackends);
    assert!(!failing.ok);
    assert!(!failing.complete);
    assert_eq!(
        failing.incomplete,
        Some(Incomplete::RecordsLost { records: 19_805 })
    );
    assert!(failing.text.ends_with(
        "; may be wrong: 19805 records were lost before they were counted (the ring buffer was full)"
    ), "{}", failing.text);
    assert!(s.verdicts.iter().all(|v| !v.complete), "{:?}", s.verdicts);
}

/// Live, a name first looked up within its TTL of the trace's start may
/// have had an answer in force already: its TTL verdict says so when that
/// could change it ("honours the TTL" would not hold had the first lookup
/// come within an earlier answer's TTL), and not when it could not.
/// Checks docs/semantics.md section 8.
#[test]
fn a_trace_begun_within_the_ttl_of_the_first_lookup_says_so_when_it_matters() {
    let start = Timestamp(1_000_000 * 1_000_000);
    let mut h = Harness::with(Config {
        live_since: Some(start),
        ..Config::default()
    });
    for (id, at) in [(1u16, 3u64), (2, 310), (3, 620)] {
        h.at_secs(at);
        h.lookup(id, "early.example", 300, &[1, 2]);
        h.syn("10.0.0.1", 80);
    }
    let early = h.service("early.example");
    let ttl = check_of(&early, Check::Ttl);
    assert_eq!(ttl.finding, verdict::Finding::HonoursTtl);
    assert_eq!(
        ttl.incomplete,
        Some(Incomplete::TraceBeganWithinTtl { secs: 3 })
    );
    // Only the TTL verdict depends on what came before.
    assert!(check_of(&early, Check::UnusedBackends).complete);

    // One lookup is one lookup, whatever came before it.
    let mut h = Harness::with(Config {
        live_since: Some(start),
        ..Config::default()
    });
    h.at_secs(3);
    h.lookup(1, "once.example", 300, &[1, 2]);
    h.syn("10.0.0.1", 80);
    let once = h.service("once.example");
    assert!(
        once.verdicts.iter().all(|v| v.complete),
        "{:?}",
        once.verdicts
    );

    // Looked up first more than a TTL after the start: nothing before it
    // could have been in force.
    let mut h = Harness::with(Config {
        live_since: Some(start),
        ..Config::default()
    });
    for (id, at) in [(1u16, 400u64), (2, 470)] {
        h.at_secs(at);
        h.lookup(id, "late.example", 60, &[3, 4]);
        h.syn("10.0.0.3", 80);
    }
    let late = h.service("late.example");
    assert!(
        late.verdicts.iter().all(|v| v.complete),
        "{:?}",
        late.verdicts
    );
}
