//! SRV targets belong to the client that asked for the SRV set
//! (docs/semantics.md sections 3 and 7).

use super::*;

/// A health checker (another client) resolving one SRV target by name and
/// connecting is not a client of the SRV service: it never asked for it.
/// Checks docs/semantics.md sections 3 and 7.
#[test]
fn another_client_resolving_a_target_is_not_a_client_of_the_srv_set() {
    let mut h = Harness::new();
    let svc = "_api._tcp.example.com";
    h.query(1, svc, TYPE_SRV);
    let mut b = MessageBuilder::new(1, true, [1, 2, 0, 2]);
    b.ttl(60).question(svc, TYPE_SRV);
    b.weighted_srv(svc, 0, 10, 8443, "a1.example.com");
    b.weighted_srv(svc, 1, 10, 8443, "a2.example.com");
    b.a("a1.example.com", [10, 2, 0, 1]);
    b.a("a2.example.com", [10, 2, 0, 2]);
    h.respond(&b.build());
    h.syn("10.2.0.1", 8443);

    let checker = "172.16.9.9";
    h.query_from(checker, 7, "a2.example.com", TYPE_A);
    let mut a = MessageBuilder::new(7, true, [1, 1, 0, 0]);
    a.ttl(60).question("a2.example.com", TYPE_A);
    a.a("a2.example.com", [10, 2, 0, 2]);
    h.respond_to(checker, &a.build());
    h.syn_from(checker, "10.2.0.2", 8443);

    let report = h.agg.report();
    let clients: Vec<String> = report
        .services
        .iter()
        .map(|s| s.client.to_string())
        .collect();
    assert_eq!(clients, [CLIENT], "{}", h.tsv());
    let api = &report.services[0];
    assert_eq!(api.connections, 1);
    let priority = check_of(api, verdict::Check::SrvPriority);
    assert!(priority.ok, "{}", priority.text);
}
