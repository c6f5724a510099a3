//! Two names sharing addresses (vhosts behind one address set, a CDN):
//! each connection counts for the name whose answer the client followed
//! (docs/semantics.md section 4), and TSV keeps the original's one line per
//! backend under its first name.

use super::*;
use proptest::prelude::*;

/// The case: 10 lookups of `db` each followed by a connect, then 5
/// of `api`, both on .13 and .14. Before, `api` vanished and `db` showed 15
/// connections for 10 lookups.
/// Checks docs/semantics.md section 4.
#[test]
fn each_name_keeps_the_connections_made_after_its_own_lookups() {
    let mut h = Harness::new();
    for i in 0..10u16 {
        h.lookup(i, "db.example", 300, &[13, 14]);
        h.syn(&format!("10.0.0.{}", 13 + i % 2), 5432);
        h.advance_ms(1000);
    }
    for i in 0..5u16 {
        h.lookup(100 + i, "api.example", 300, &[13, 14]);
        h.syn(&format!("10.0.0.{}", 13 + i % 2), 5432);
        h.advance_ms(1000);
    }
    let db = h.service("db.example");
    let api = h.service("api.example");
    assert_eq!((db.connections, db.lookups), (10, 10));
    assert_eq!((api.connections, api.lookups), (5, 5));
    // db's answer had not expired: api's connections could have followed
    // it too, and the report says so rather than hide the guess.
    assert_eq!(api.shared_connections, 5);
    assert_eq!(db.shared_connections, 0);
    assert!(check_of(&api, verdict::Check::SharedAddresses)
        .text
        .contains("db.example."));
    // The original's rows: one per backend, under the first name.
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t010.000.000.013:5432\t8\t15\tdb.example.\n\
         172.016.101.190\t010.000.000.014:5432\t7\t15\tdb.example.\n"
    );
}

/// A client failing over from `black`'s dead address to .12, which `web`
/// also holds: the connections follow `black`'s answer, looked up last,
/// and its outcomes stay with it.
/// Checks docs/semantics.md section 4.
#[test]
fn a_failover_counts_for_the_name_that_was_resolved() {
    let mut h = Harness::new();
    for i in 0..4u16 {
        h.lookup(i, "web.example", 300, &[11, 12]);
        let from = h.syn(&format!("10.0.0.{}", 11 + i % 2), 80);
        let backend = sock(&format!("10.0.0.{}", 11 + i % 2), 80);
        h.segment(backend, from, SYN | ACK, 9, &[]);
    }
    h.advance_ms(5000);
    for i in 0..3u16 {
        h.lookup(10 + i, "black.example", 300, &[66, 12]);
        let dead = h.syn("10.0.0.66", 80);
        h.segment(sock("10.0.0.66", 80), dead, RST | ACK, 0, &[]);
        let from = h.syn("10.0.0.12", 80);
        h.segment(sock("10.0.0.12", 80), from, SYN | ACK, 9, &[]);
        h.advance_ms(1000);
    }
    let web = h.service("web.example");
    let black = h.service("black.example");
    assert_eq!(web.connections, 4);
    assert_eq!(black.connections, 6);
    let answered = |s: &Service, last: &str| {
        s.rows
            .iter()
            .find(|r| r.backend.to_string() == format!("10.0.0.{last}"))
            .and_then(|r| r.outcomes)
            .unwrap()
    };
    assert_eq!(answered(&black, "12").answered, 3);
    assert_eq!(answered(&black, "66").refused, 3);
    assert_eq!(answered(&web, "12").answered, 2);
    assert!(
        check_of(&web, verdict::Check::Balance).ok,
        "{:?}",
        web.verdicts
    );
}

/// An address whose other name's answer expired long ago is no guess.
/// Checks docs/semantics.md section 4.
#[test]
fn an_expired_answer_under_another_name_is_not_a_share() {
    let mut h = Harness::new();
    h.lookup(1, "old.example", 5, &[13, 14]);
    h.syn("10.0.0.13", 80);
    h.advance_ms(60_000);
    h.lookup(2, "new.example", 300, &[13, 14]);
    h.syn("10.0.0.14", 80);
    let new = h.service("new.example");
    assert_eq!((new.connections, new.shared_connections), (1, 0));
    assert!(new
        .verdicts
        .iter()
        .all(|v| v.check != verdict::Check::SharedAddresses));
}

#[derive(Clone, Debug)]
enum Step {
    /// A lookup of name `name % 3` answered with 10.0.0.`1 + a % 4` and
    /// `1 + b % 4`.
    Lookup {
        name: u8,
        a: u8,
        b: u8,
        ttl: u32,
    },
    Connect {
        to: u8,
    },
    Wait {
        secs: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), any::<u8>(), 0u32..30)
            .prop_map(|(name, a, b, ttl)| Step::Lookup { name, a, b, ttl }),
        any::<u8>().prop_map(|to| Step::Connect { to }),
        (0u8..20).prop_map(|secs| Step::Wait { secs }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    /// Random interleavings of answers under three names sharing four
    /// addresses, and connections to them: every connection to an address
    /// DNS gave counts exactly once, over the names, and TSV's merged rows
    /// hold the same total.
    #[test]
    fn every_connection_is_credited_once(steps in prop::collection::vec(step(), 1..60)) {
        let mut h = Harness::new();
        let mut given = std::collections::HashSet::new();
        let mut to_known = 0u64;
        for (i, s) in steps.iter().enumerate() {
            match *s {
                Step::Lookup { name, a, b, ttl } => {
                    let (a, b) = (1 + a % 4, 1 + b % 4);
                    let lasts = if a == b { vec![a, 1 + a % 4] } else { vec![a, b] };
                    given.extend(lasts.iter().copied());
                    h.lookup(i as u16, &format!("n{}.example", name % 3), ttl, &lasts);
                }
                Step::Connect { to } => {
                    let last = 1 + to % 4;
                    h.syn(&format!("10.0.0.{last}"), 80);
                    to_known += u64::from(given.contains(&last));
                }
                Step::Wait { secs } => h.advance_ms(u64::from(secs) * 1000),
            }
        }
        let report = h.agg.report();
        let credited: u64 = report.services.iter().map(|s| s.connections).sum();
        prop_assert_eq!(credited, to_known);
        prop_assert_eq!(report.counters.connections_to_backends, to_known);
        let tsv_total: u64 = h
            .tsv()
            .lines()
            .map(|l| l.split('\t').nth(2).unwrap().parse::<u64>().unwrap())
            .sum();
        prop_assert_eq!(tsv_total, to_known);
        for s in &report.services {
            prop_assert!(s.shared_connections <= s.connections);
        }
    }
}
