//! CNAME chains: an answer is good for its chain's least TTL, and the
//! report carries the name the client asked (docs/semantics.md section 8).

use super::*;
use verdict::{Check, Finding};

fn chained_lookup(h: &mut Harness, id: u16) {
    h.query(id, "alias.example", TYPE_A);
    let mut answer = MessageBuilder::new(id, true, [1, 3, 0, 0]);
    answer.question("alias.example", TYPE_A);
    answer.ttl(10).cname("alias.example", "pool.example");
    answer.ttl(300);
    answer
        .a("pool.example", [10, 0, 0, 1])
        .a("pool.example", [10, 0, 0, 2]);
    h.respond(&answer.build());
}

/// The case: a CNAME with TTL 10 s before A records with TTL
/// 300 s, one lookup, connects at 16, 31 and 46 s. Before: "✓ 1 lookup
/// (TTL 300 s)".
/// Checks docs/semantics.md section 8.
#[test]
fn an_answer_through_a_cname_expires_with_the_cname() {
    let mut h = Harness::new();
    h.at_secs(0);
    chained_lookup(&mut h, 1);
    for at in [16, 31, 46] {
        h.at_secs(at);
        h.syn("10.0.0.1", 443);
    }
    let s = h.service("pool.example");
    assert_eq!((s.ttl_min_secs, s.ttl_max_secs), (Some(10), Some(10)));
    let ttl = check_of(&s, Check::Ttl);
    assert_eq!(ttl.finding, Finding::DoesNotReresolve, "{}", ttl.text);
    assert_eq!(s.connections_after_expiry, 3);
    // The name the client asked, beside the canonical one.
    assert_eq!(
        s.asked_as.iter().map(|n| &**n).collect::<Vec<_>>(),
        ["alias.example."]
    );
}

/// Re-resolving the alias as its CNAME expires honours the TTL.
/// Checks docs/semantics.md section 8.
#[test]
fn re_resolving_as_the_cname_expires_honours_the_ttl() {
    let mut h = Harness::new();
    for (i, at) in [0u64, 10, 20, 30].into_iter().enumerate() {
        h.at_secs(at);
        chained_lookup(&mut h, i as u16);
        h.syn(&format!("10.0.0.{}", 1 + i % 2), 443);
    }
    let s = h.service("pool.example");
    let ttl = check_of(&s, Check::Ttl);
    assert_eq!(ttl.finding, Finding::HonoursTtl, "{}", ttl.text);
}

/// A name asked directly is not "asked as" anything.
/// Checks docs/semantics.md section 8.
#[test]
fn a_name_asked_directly_has_no_alias() {
    let mut h = Harness::new();
    h.lookup(1, "web.example", 60, &[1, 2]);
    assert!(h.service("web.example").asked_as.is_empty());
}
