//! `--window`: the verdicts judge the recent past, the counts stay since
//! the start (docs/semantics.md section 9).

use super::*;
use std::time::Duration;
use verdict::{Check, Finding};

const MINUTE_MS: u64 = 60_000;
const BACKENDS: [&str; 4] = [
    "172.16.100.149",
    "172.16.100.219",
    "172.16.100.245",
    "172.16.101.21",
];

fn windowed(minutes: u64) -> Harness {
    Harness::with(Config {
        window: Some(Duration::from_secs(minutes * 60)),
        ..Config::default()
    })
}

/// One lookup whose answer (4 addresses, an hour's TTL) stays in force.
fn lookup(h: &mut Harness) {
    h.query(1, "web.example", TYPE_A);
    let mut answer = MessageBuilder::new(1, true, [1, 4, 0, 0]);
    answer.ttl(3600).question("web.example", TYPE_A);
    for backend in BACKENDS {
        let octets: Vec<u8> = backend.split('.').map(|o| o.parse().unwrap()).collect();
        answer.a("web.example", [octets[0], octets[1], octets[2], octets[3]]);
    }
    h.respond(&answer.build());
}

/// A client pinned to one backend for its first 20 minutes, then spread
/// evenly for 8, one connection every 6 s, on its one lookup's answer.
fn pinned_then_even(h: &mut Harness) {
    lookup(h);
    for _ in 0..200 {
        h.syn(BACKENDS[0], 80);
        h.advance_ms(6_000);
    }
    for i in 0..80 {
        h.syn(BACKENDS[i % 4], 80);
        h.advance_ms(6_000);
    }
}

/// The point: after a long run, "uneven since the start" says
/// nothing about now. Over a 10-minute window the client that has spread
/// evenly for the last 8 minutes is even, judged against the answer it
/// got 28 minutes ago and still uses; the counts stay since the start.
#[test]
fn a_window_judges_the_recent_spread_and_the_counts_stay_since_the_start() {
    let mut whole = Harness::new();
    pinned_then_even(&mut whole);
    let since_start = whole.service("web.example");
    assert_eq!(
        check_of(&since_start, Check::Balance).finding,
        Finding::Uneven
    );

    let mut h = windowed(10);
    pinned_then_even(&mut h);
    let s = h.service("web.example");
    assert_eq!(s.connections, 280, "counts since the start");
    assert_eq!(s.rows[0].conns, 220);
    assert_eq!(s.lookups, 1);
    let balance = check_of(&s, Check::Balance);
    assert_eq!(
        balance.finding,
        Finding::ConsistentWithRandom,
        "{}",
        balance.text
    );
    // Marks fall due every 5 minutes from the first event: at 25 minutes
    // the older of the last two is at 20, just as the even spread began.
    // Its connections were made at 20:00.001 and every 6 s after.
    let window = s.window.expect("judged over the window");
    assert_eq!(window.connections, 80);
    assert_eq!(window.lookups, 0);
    assert_eq!(s.backends_used, 4);
    let cells: u64 = s.balance_cells.iter().map(|c| c.connections).sum();
    assert_eq!(cells, 80, "{:?}", s.balance_cells);
    let report = h.agg.report();
    let since = report.window.unwrap().since.unwrap();
    assert_eq!(
        since.0,
        Timestamp((1_000_000 + 20 * MINUTE_MS) * 1_000_000).0,
        "the mark on the grid, 20 minutes after the first event"
    );
}

/// A pause longer than the window leaves nothing from before it in the
/// verdicts, though no mark was taken during it: the counts did not move.
#[test]
fn a_pause_longer_than_the_window_leaves_nothing_from_before_it() {
    let mut h = windowed(10);
    lookup(&mut h);
    for _ in 0..40 {
        h.syn(BACKENDS[0], 80);
    }
    h.advance_ms(60 * MINUTE_MS);
    for i in 0..40 {
        h.syn(BACKENDS[i % 4], 80);
    }
    let s = h.service("web.example");
    assert_eq!(s.connections, 80);
    assert_eq!(s.window.unwrap().connections, 40);
    assert_eq!(
        check_of(&s, Check::Balance).finding,
        Finding::ConsistentWithRandom
    );
    // Both marks hold the counts from before the pause.
    h.agg
        .advance(Timestamp((1_000_000 + 66 * MINUTE_MS) * 1_000_000));
    assert_eq!(h.service("web.example").window.unwrap().connections, 40);
}

/// A quiet input still moves the window (`advance`, on a live trace's
/// tick): a window with no connection in it has no balance verdict, and
/// the counts are still there.
#[test]
fn a_quiet_window_has_no_balance_verdict_and_keeps_the_counts() {
    let mut h = windowed(10);
    lookup(&mut h);
    for _ in 0..40 {
        h.syn(BACKENDS[0], 80);
    }
    assert_eq!(
        check_of(&h.service("web.example"), Check::Balance).finding,
        Finding::Uneven
    );
    h.agg
        .advance(Timestamp((1_000_000 + 30 * MINUTE_MS) * 1_000_000));
    let s = h.service("web.example");
    assert_eq!(s.connections, 40);
    assert_eq!(s.window.unwrap().connections, 0);
    assert!(
        s.verdicts.iter().all(|v| v.check != Check::Balance),
        "{:?}",
        s.verdicts
    );
}

/// The worst TTL habit, never resolving again, has no lookup in the
/// window at all: it is still found there.
#[test]
fn a_client_that_never_resolves_again_is_found_in_a_window_without_lookups() {
    let mut h = windowed(10);
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    for i in 0..300 {
        h.syn(BACKENDS[i % 4], 80);
        h.advance_ms(6_000);
    }
    let s = h.service("web.example");
    assert_eq!(s.window.unwrap().lookups, 0);
    let ttl = check_of(&s, Check::Ttl);
    assert_eq!(ttl.finding, Finding::DoesNotReresolve, "{}", ttl.text);
    assert!(
        ttl.text.ends_with("this client does not re-resolve"),
        "{}",
        ttl.text
    );
}

/// A connection's outcome in the window counts there, one before it does
/// not: a backend that failed an hour ago and answers now is not failing.
#[test]
fn failures_before_the_window_are_not_failures_now() {
    let mut h = windowed(10);
    lookup(&mut h);
    let dead = BACKENDS[3];
    for i in 0..20 {
        let backend = BACKENDS[i % 4];
        let from = h.syn(backend, 80);
        reply(&mut h, from, backend, backend != dead);
    }
    let s = h.service("web.example");
    let failing = check_of(&s, Check::FailingBackends);
    assert!(!failing.ok, "{}", failing.text);
    h.advance_ms(60 * MINUTE_MS);
    for i in 0..20 {
        let backend = BACKENDS[i % 4];
        let from = h.syn(backend, 80);
        reply(&mut h, from, backend, true);
    }
    let s = h.service("web.example");
    let failing = check_of(&s, Check::FailingBackends);
    assert!(failing.ok, "{}", failing.text);
}

/// A SYN-ACK, or a reset, from `backend` to the client socket `to`.
fn reply(h: &mut Harness, to: SocketAddr, backend: &str, answered: bool) {
    let flags = if answered { SYN | ACK } else { RST | ACK };
    h.segment_acking(sock(backend, 80), to, (flags, 7, Some(2)), &[]);
}

/// The metrics read the window's verdicts and cells beside counters since
/// the start, and say when the window began.
#[test]
fn metrics_carry_the_windows_verdicts_beside_counters_since_the_start() {
    let mut h = windowed(10);
    pinned_then_even(&mut h);
    let text = crate::output::openmetrics::render(&h.agg.report(), &h.counters(), 10_000);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_string()
    };
    assert!(
        line("connbal_service_verdict_ok{client=\"172.16.101.190\",dns_question_name=\"web.example.\",check=\"balance\"}")
            .ends_with(" 1")
    );
    assert!(line(
        "connbal_connections_total{client=\"172.16.101.190\",server_address=\"172.16.100.149\""
    )
    .ends_with(" 220"));
    assert!(line(
        "connbal_service_balance_connections{client=\"172.16.101.190\",dns_question_name=\"web.example.\",server_address=\"172.16.100.149\"}"
    )
    .ends_with(" 20"));
    let start = line("connbal_verdict_window_start_timestamp_seconds ");
    assert!(start.ends_with(" 2200.0"), "{start}");
}

/// Records lost before the window cannot have touched what it judges: its
/// verdicts are complete again, and those of a loss within it are not.
#[test]
fn records_lost_before_the_window_leave_its_verdicts_complete() {
    let mut h = windowed(10);
    lookup(&mut h);
    h.agg.input_lost(5);
    for i in 0..40 {
        h.syn(BACKENDS[i % 4], 80);
    }
    assert!(!check_of(&h.service("web.example"), Check::Balance).complete);
    h.advance_ms(60 * MINUTE_MS);
    for i in 0..40 {
        h.syn(BACKENDS[i % 4], 80);
    }
    assert!(check_of(&h.service("web.example"), Check::Balance).complete);
    h.agg.input_lost(6);
    assert!(!check_of(&h.service("web.example"), Check::Balance).complete);
}
