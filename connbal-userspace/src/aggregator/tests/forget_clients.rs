//! A live trace forgets the clients of cgroups gone a while, so that an
//! agent's memory follows what runs now.

use super::*;

/// Two clients resolve and connect; one is forgotten: it leaves the
/// report, counted, the other keeps every count, and the forgotten one
/// starts afresh if it comes back.
#[test]
fn a_forgotten_client_leaves_the_report_and_the_others_keep_their_counts() {
    let mut h = Harness::new();
    let gone = "172.16.9.9";
    for (id, client) in [(1, CLIENT), (2, gone)] {
        h.query_from(client, id, "web.example", TYPE_A);
        h.respond_to(client, &four_a_answer(id, "web.example"));
        for backend in ["172.16.100.149", "172.16.100.219"] {
            h.syn_from(client, backend, 80);
        }
    }
    let before = h.tsv();
    let kept: String = before
        .lines()
        .filter(|l| !l.starts_with("172.016.009.009"))
        .flat_map(|l| [l, "\n"])
        .collect();
    assert_ne!(kept, before);

    let gone_ip: std::net::IpAddr = gone.parse().unwrap();
    h.agg
        .forget_clients(&|client| client.to_string() == gone_ip.to_string());
    assert_eq!(h.tsv(), kept);
    assert_eq!(h.counters().clients_forgotten, 1);
    let report = h.agg.report();
    assert_eq!(report.services.len(), 1);
    assert_eq!(report.services[0].connections, 2);

    // Back again: a new client, counted from now.
    h.query_from(gone, 3, "web.example", TYPE_A);
    h.respond_to(gone, &four_a_answer(3, "web.example"));
    h.syn_from(gone, "172.16.100.149", 80);
    let report = h.agg.report();
    let back = report
        .services
        .iter()
        .find(|s| s.client.to_string() == gone_ip.to_string())
        .expect("the client, back");
    assert_eq!(back.connections, 1);
}
