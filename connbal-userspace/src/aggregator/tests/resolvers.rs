//! Caching stubs and resolvers: well-behaved setups the TTL and unused
//! backends checks must not fail (docs/semantics.md section 8).

use super::*;
use verdict::{Check, Finding};

const UPSTREAM: &str = "198.51.100.1";

impl Harness {
    /// A lookup of `name` by `client` from `port`, asked of `server`,
    /// answered with 10.0.0.1 to .4.
    fn lookup_via(&mut self, (client, port): (&str, u16), server: &str, id: u16, ttl: u32) {
        let name = "web.example";
        let query = MessageBuilder::new(id, false, [1, 0, 0, 0])
            .question(name, TYPE_A)
            .build();
        self.udp(sock(client, port), sock(server, 53), &query);
        let mut answer = MessageBuilder::new(id, true, [1, 4, 0, 0]);
        answer.ttl(ttl).question(name, TYPE_A);
        for last in 1..=4 {
            answer.a(name, [10, 0, 0, last]);
        }
        self.udp(sock(server, 53), sock(client, port), &answer.build());
    }
}

/// getaddrinfo before every connect, through systemd-resolved's stub on
/// 127.0.0.53: the recommended setup. Before: ✗ "resolves before every
/// connection".
/// Checks docs/semantics.md section 8.
#[test]
fn resolving_per_connect_through_a_local_cache_is_fine() {
    let mut h = Harness::new();
    for i in 0..12u16 {
        h.lookup_via((CLIENT, 41000 + i), "127.0.0.53", i, 300);
        h.syn(&format!("10.0.0.{}", 1 + i % 4), 443);
        h.advance_ms(500);
    }
    let s = h.service("web.example");
    let ttl = check_of(&s, Check::Ttl);
    assert_eq!(ttl.finding, Finding::ThroughLocalResolver, "{}", ttl.text);
    assert!(ttl.ok);
    assert!(ttl.text.contains("127.0.0.53"), "{}", ttl.text);
}

/// The same client asking a remote server each time is still told.
/// Checks docs/semantics.md section 8.
#[test]
fn resolving_per_connect_upstream_is_still_reported() {
    let mut h = Harness::new();
    for i in 0..12u16 {
        h.lookup_via((CLIENT, 41000 + i), UPSTREAM, i, 300);
        h.syn(&format!("10.0.0.{}", 1 + i % 4), 443);
        h.advance_ms(500);
    }
    let s = h.service("web.example");
    let ttl = check_of(&s, Check::Ttl);
    assert_eq!(ttl.finding, Finding::ResolvesBeforeEveryConnection);
    assert!(!ttl.ok);
}

/// dnsmasq as a cache: it asks upstream some 0.16 s before each 5 s TTL
/// ends, and serves the client. It honours the TTL, and as a resolver it
/// is not judged on the backends it never connects to. Before: ✗
/// "re-resolves within the TTL" and ✗ "no connection to any of the 4".
/// Checks docs/semantics.md section 8.
#[test]
fn a_caching_resolver_refreshing_early_honours_the_ttl_and_is_not_judged_on_backends() {
    let mut h = Harness::new();
    for i in 0..6u16 {
        // SERVER is the cache: upstream from its own address...
        h.lookup_via((SERVER, 5353), UPSTREAM, 100 + i, 5);
        // ...and answering the client.
        h.lookup_via((CLIENT, 42000 + i), SERVER, 200 + i, 5);
        h.syn(&format!("10.0.0.{}", 1 + i % 4), 443);
        h.advance_ms(4_840 - 6);
    }
    let report = h.agg.report();
    let cache = report
        .services
        .iter()
        .find(|s| s.client.to_string() == SERVER)
        .expect("the cache's own lookups are reported");
    assert!(cache.resolver);
    let ttl = check_of(cache, Check::Ttl);
    assert_eq!(ttl.finding, Finding::HonoursTtl, "{}", ttl.text);
    assert!(cache
        .verdicts
        .iter()
        .all(|v| v.check != Check::UnusedBackends));
    assert!(cache.verdicts.iter().all(|v| v.ok), "{:?}", cache.verdicts);
    // The client it serves is judged as ever.
    let client = report
        .services
        .iter()
        .find(|s| s.client.to_string() == CLIENT)
        .unwrap();
    assert!(!client.resolver);
    assert!(client
        .verdicts
        .iter()
        .any(|v| v.check == Check::UnusedBackends));
}
