//! Stale is judged against what the name resolves to now, host-wide
//! (docs/semantics.md section 8, `stale_backends`).

use super::*;
use verdict::{Check, Finding};

/// The service of the harness's own client.
fn ours(h: &Harness) -> Service {
    h.agg
        .report()
        .services
        .into_iter()
        .find(|s| s.client.to_string() == CLIENT)
        .expect("the client's service")
}

/// The case: a pool resolved once and never asks again; DNS has
/// since dropped an address it keeps connecting to. Its own answer stays
/// in force, so before only "does not re-resolve" was said; the host saw
/// a fresher answer (another client's, or the stub's upstream one), and
/// the address is stale.
/// Checks docs/semantics.md section 8.
#[test]
fn a_pool_connecting_to_an_address_dropped_since_is_stale() {
    let mut h = Harness::new();
    h.at_secs(0);
    h.lookup(1, "web.example", 5, &[1, 2]);
    h.syn("10.0.0.1", 80);
    h.syn("10.0.0.2", 80);
    // Another client on the host asks at 20 s: .1 is gone.
    h.at_secs(20);
    h.query_from("172.16.9.9", 2, "web.example", TYPE_A);
    h.respond_to("172.16.9.9", &answer_of(2, "web.example", 5, &[2, 3]));
    h.at_secs(30);
    for _ in 0..3 {
        h.syn("10.0.0.1", 80);
    }
    h.syn("10.0.0.2", 80);
    let s = ours(&h);
    let stale = check_of(&s, Check::StaleBackends);
    assert_eq!(stale.finding, Finding::Stale, "{}", stale.text);
    assert_eq!(s.stale_backends.len(), 1, "{:?}", s.stale_backends);
    assert_eq!(s.stale_backends[0].address.to_string(), "10.0.0.1");
    assert_eq!(s.stale_backends[0].connections, 3);
    // .2 is still in DNS: that connection is late, not stale.
    assert_eq!(s.connections_after_expiry, 1);
    assert_eq!(check_of(&s, Check::Ttl).finding, Finding::DoesNotReresolve);
}

/// A client that asked after the fresher answer has its own, newer one:
/// nothing it holds was dropped since.
/// Checks docs/semantics.md section 8.
#[test]
fn an_answer_older_than_the_clients_own_does_not_make_it_stale() {
    let mut h = Harness::new();
    h.at_secs(0);
    h.query_from("172.16.9.9", 2, "web.example", TYPE_A);
    h.respond_to("172.16.9.9", &answer_of(2, "web.example", 5, &[2, 3]));
    h.at_secs(10);
    h.lookup(1, "web.example", 5, &[1, 2]);
    h.syn("10.0.0.1", 80);
    let s = ours(&h);
    assert!(s.stale_backends.is_empty(), "{:?}", s.stale_backends);
}
