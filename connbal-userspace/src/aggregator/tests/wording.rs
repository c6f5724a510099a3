//! Text that agrees with the table beside it (docs/semantics.md section 8).

use super::*;
use verdict::Check;

fn srv_with_a_backup(h: &mut Harness) {
    let svc = "_db._tcp.example.com";
    h.query(1, svc, TYPE_SRV);
    let mut b = MessageBuilder::new(1, true, [1, 3, 0, 3]);
    b.ttl(60).question(svc, TYPE_SRV);
    b.weighted_srv(svc, 0, 10, 5432, "p1.example.com");
    b.weighted_srv(svc, 0, 10, 5432, "p2.example.com");
    b.weighted_srv(svc, 1, 10, 5432, "backup.example.com");
    b.a("p1.example.com", [10, 1, 0, 1]);
    b.a("p2.example.com", [10, 1, 0, 2]);
    b.a("backup.example.com", [10, 1, 0, 3]);
    h.respond(&b.build());
}

/// The case: "all 3 priority-0 backends" when one is priority 1.
/// Checks docs/semantics.md section 8.
#[test]
fn a_backup_target_is_not_called_priority_0() {
    let mut h = Harness::new();
    srv_with_a_backup(&mut h);
    for last in [1, 2, 1, 2, 3] {
        h.syn(&format!("10.1.0.{last}"), 5432);
    }
    let s = h.service("_db._tcp.example.com");
    let unused = check_of(&s, Check::UnusedBackends);
    assert!(!unused.text.contains("priority-0"), "{}", unused.text);
    assert!(unused.text.contains("all 3 backends"), "{}", unused.text);
}

/// The balance's shares are of the connections it judged; when those are
/// fewer than the table's, the text says how many of how many.
/// Checks docs/semantics.md section 8.
#[test]
fn shares_over_a_subset_say_so() {
    let mut h = Harness::new();
    srv_with_a_backup(&mut h);
    for i in 0..40 {
        h.syn(&format!("10.1.0.{}", 1 + i % 2), 5432);
    }
    for _ in 0..20 {
        h.syn("10.1.0.3", 5432);
    }
    let s = h.service("_db._tcp.example.com");
    let balance = check_of(&s, Check::Balance);
    assert!(
        balance.text.contains("of the 40 of 60 connections judged"),
        "{}",
        balance.text
    );
}

/// Names compare case-insensitively (RFC 4343), `-F` too.
/// Checks docs/semantics.md section 2, `-F`.
#[test]
fn the_filter_ignores_case() {
    let mut h = Harness::with(Config {
        filter: Some("WEB".into()),
        ..Config::default()
    });
    h.lookup(1, "Web.Example", 60, &[1, 2]);
    assert_eq!(h.agg.report().services.len(), 1, "{}", h.tsv());
    assert_eq!(h.counters().responses_filtered_out, 0);
}
