//! Dual stack: a client following RFC 6724 uses one family; its spread is
//! judged within it (docs/semantics.md section 8).

use super::*;
use verdict::{Check, Family, Finding};

const V6_CLIENT: &str = "2001:db8::2";

fn dual_lookup(h: &mut Harness, id: u16) {
    let name = "dual.example";
    h.query_from(V6_CLIENT, id, name, TYPE_A);
    let mut a = MessageBuilder::new(id, true, [1, 2, 0, 0]);
    a.ttl(60).question(name, TYPE_A);
    a.a(name, [10, 0, 0, 1]).a(name, [10, 0, 0, 2]);
    h.respond_to(V6_CLIENT, &a.build());
    h.query_from(V6_CLIENT, id + 1, name, TYPE_AAAA);
    let mut aaaa = MessageBuilder::new(id + 1, true, [1, 2, 0, 0]);
    aaaa.ttl(60).question(name, TYPE_AAAA);
    aaaa.aaaa(name, "2001:db8::a1".parse().unwrap())
        .aaaa(name, "2001:db8::a2".parse().unwrap());
    h.respond_to(V6_CLIENT, &aaaa.build());
}

/// The case: 2 A and 2 AAAA records, curl used IPv6 only and
/// spread evenly. Before: "2 of 4 backends got no connection; not chance"
/// and "uneven, p < 0.001".
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_using_ipv6_only_is_judged_within_ipv6() {
    let mut h = Harness::new();
    dual_lookup(&mut h, 1);
    for i in 0..20 {
        let backend = if i % 2 == 0 {
            "2001:db8::a1"
        } else {
            "2001:db8::a2"
        };
        h.syn_from(V6_CLIENT, backend, 443);
    }
    let s = h.service("dual.example");
    assert_eq!(s.family_used, Some(Family::Ipv6));
    let unused = check_of(&s, Check::UnusedBackends);
    assert_eq!(unused.finding, Finding::AllUsed, "{}", unused.text);
    assert!(
        unused.text.contains("IPv6 only, as RFC 6724 prefers"),
        "{}",
        unused.text
    );
    let balance = check_of(&s, Check::Balance);
    assert!(balance.ok, "{}", balance.text);
    let b = s.balance.as_ref().unwrap();
    assert!((b.p_value - 1.0).abs() < 1e-9, "{b:?}");
    // The rows still show every backend the client was given.
    assert_eq!(s.backends, 4);
}

/// Within the family, an uneven spread is still uneven.
/// Checks docs/semantics.md section 8.
#[test]
fn an_uneven_spread_within_the_family_is_still_uneven() {
    let mut h = Harness::new();
    dual_lookup(&mut h, 1);
    for i in 0..30 {
        let backend = if i % 10 == 0 {
            "2001:db8::a2"
        } else {
            "2001:db8::a1"
        };
        h.syn_from(V6_CLIENT, backend, 443);
    }
    let s = h.service("dual.example");
    let balance = check_of(&s, Check::Balance);
    assert_eq!(balance.finding, Finding::Uneven, "{}", balance.text);
}

/// A client that used both families is judged over both.
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_using_both_families_is_judged_over_both() {
    let mut h = Harness::new();
    dual_lookup(&mut h, 1);
    for backend in ["2001:db8::a1", "2001:db8::a2", "10.0.0.1", "10.0.0.2"] {
        h.syn_from(V6_CLIENT, backend, 443);
    }
    let s = h.service("dual.example");
    assert_eq!(s.family_used, None);
    assert!(!check_of(&s, Check::UnusedBackends).text.contains("only"));
}
