//! One test (at least) per clause of docs/semantics.md, each citing its
//! section. Each drives the aggregator with hand-built events and checks
//! the report.

use super::dns::{CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_SRV};
use super::*;
use crate::output::render_tsv as render;
use crate::testing::MessageBuilder;
use connbal_common::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN};
use std::net::SocketAddr;

const SERVER: &str = "192.0.2.53";
const CLIENT: &str = "172.16.101.190";
const CLIENT_PORT: u16 = 40000;

struct Harness {
    agg: Aggregator,
    now_ms: u64,
    /// Each connect() gets its own ephemeral port, as a real client's do:
    /// SYNs with the same 4-tuple and sequence number are one attempt.
    next_port: u16,
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

impl Harness {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        Self {
            agg: Aggregator::new(config),
            now_ms: 1_000_000,
            next_port: 50000,
        }
    }

    fn ts(&self) -> Timestamp {
        Timestamp(self.now_ms * 1_000_000)
    }

    fn advance_ms(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let event = Event::Udp(Datagram {
            ts: self.ts(),
            src,
            dst,
            payload,
            truncated: false,
            owner: None,
        });
        self.agg.process(&event);
        self.advance_ms(1);
    }

    fn query_from(&mut self, client: &str, id: u16, name: &str, qtype: u16) {
        let msg = MessageBuilder::new(id, false, [1, 0, 0, 0])
            .question(name, qtype)
            .build();
        self.udp(sock(client, CLIENT_PORT), sock(SERVER, 53), &msg);
    }

    fn query(&mut self, id: u16, name: &str, qtype: u16) {
        self.query_from(CLIENT, id, name, qtype);
    }

    fn respond_to(&mut self, client: &str, msg: &[u8]) {
        self.udp(sock(SERVER, 53), sock(client, CLIENT_PORT), msg);
    }

    fn respond(&mut self, msg: &[u8]) {
        self.respond_to(CLIENT, msg);
    }

    fn segment(&mut self, src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, payload: &[u8]) {
        self.segment_acking(src, dst, (flags, seq, None), payload);
    }

    /// A segment as a capture has it: with its acknowledgment number.
    fn segment_acking(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        (flags, seq, ack): (u8, u32, Option<u32>),
        payload: &[u8],
    ) {
        let event = Event::Tcp(Segment {
            ts: self.ts(),
            src,
            dst,
            flags,
            seq,
            payload,
            truncated: false,
            ack,
            first_of_flow: None,
            owner: None,
        });
        self.agg.process(&event);
        self.advance_ms(1);
    }

    /// A new connect(): returns its client socket.
    fn syn_from(&mut self, client: &str, backend: &str, port: u16) -> SocketAddr {
        self.next_port = self.next_port.wrapping_add(1);
        let from = sock(client, self.next_port);
        self.segment(from, sock(backend, port), SYN, 1, &[]);
        from
    }

    fn syn(&mut self, backend: &str, port: u16) -> SocketAddr {
        self.syn_from(CLIENT, backend, port)
    }

    /// The client looks `name` up and gets `address` alone (a VIP).
    fn answered_alone(&mut self, name: &str, address: [u8; 4]) {
        self.query(1, name, TYPE_A);
        self.respond(
            &MessageBuilder::new(1, true, [1, 1, 0, 0])
                .question(name, TYPE_A)
                .a(name, address)
                .build(),
        );
    }

    fn tsv(&self) -> String {
        render(&self.agg.report())
    }

    fn counters(&self) -> Counters {
        self.agg.counters()
    }
}

fn four_a_answer(id: u16, name: &str) -> Vec<u8> {
    MessageBuilder::new(id, true, [1, 4, 0, 0])
        .question(name, TYPE_A)
        .a(name, [172, 16, 100, 149])
        .a(name, [172, 16, 100, 219])
        .a(name, [172, 16, 100, 245])
        .a(name, [172, 16, 101, 21])
        .build()
}

/// Spec 5's worked example, rebuilt from the story it tells: 16 lookups of a
/// 4-address name, 16 connections spread 5/3/2/6, and one SRV lookup of 3
/// XMPP servers of which one got a connection.
/// Checks docs/semantics.md section 5, the worked example.
#[test]
fn spec_worked_example() {
    let mut h = Harness::new();
    let web = "web.svc.acct.us-west-1.cns.joyent.com";
    let spread = [
        ("172.16.100.149", 5),
        ("172.16.100.219", 3),
        ("172.16.100.245", 2),
        ("172.16.101.21", 6),
    ];
    let mut plan: Vec<&str> = spread
        .iter()
        .flat_map(|&(addr, n)| std::iter::repeat_n(addr, n))
        .collect();
    plan.rotate_left(3);
    for (i, backend) in plan.iter().enumerate() {
        h.query(i as u16, web, TYPE_A);
        h.respond(&four_a_answer(i as u16, web));
        h.syn(backend, 80);
    }
    let xmpp = "_xmpp-client._tcp.example.com";
    h.query(100, xmpp, TYPE_SRV);
    let mut b = MessageBuilder::new(100, true, [1, 3, 0, 3]);
    b.question(xmpp, TYPE_SRV);
    for t in ["x1", "x2", "x3"] {
        b.srv(xmpp, 5222, &format!("{t}.example.com"));
    }
    for (t, last) in [("x1", 123), ("x2", 124), ("x3", 125)] {
        b.a(&format!("{t}.example.com"), [165, 225, 123, last]);
    }
    h.respond(&b.build());
    h.syn("165.225.123.124", 5222);

    assert_eq!(
        h.tsv(),
        "172.016.101.190\t165.225.123.123:5222\t0\t1\t_xmpp-client._tcp.example.com.\n\
         172.016.101.190\t165.225.123.124:5222\t1\t1\t_xmpp-client._tcp.example.com.\n\
         172.016.101.190\t165.225.123.125:5222\t0\t1\t_xmpp-client._tcp.example.com.\n\
         172.016.101.190\t172.016.100.149:80\t5\t16\tweb.svc.acct.us-west-1.cns.joyent.com.\n\
         172.016.101.190\t172.016.100.219:80\t3\t16\tweb.svc.acct.us-west-1.cns.joyent.com.\n\
         172.016.101.190\t172.016.100.245:80\t2\t16\tweb.svc.acct.us-west-1.cns.joyent.com.\n\
         172.016.101.190\t172.016.101.021:80\t6\t16\tweb.svc.acct.us-west-1.cns.joyent.com.\n"
    );
    let c = h.counters();
    assert_eq!(
        (
            c.queries_tracked,
            c.responses_matched,
            c.connection_attempts
        ),
        (17, 17, 17)
    );
}

/// The verdicts for the worked example are what its "Reading it" paragraph
/// says, except that 5/3/2/6 over 16 connections is what random choice
/// gives about half the time, so it is not called uneven.
/// Checks docs/semantics.md section 8.
#[test]
fn worked_example_verdicts() {
    use verdict::{Check, Finding};
    let mut h = Harness::new();
    let web = "web.svc.acct.us-west-1.cns.joyent.com";
    let spread = [
        ("172.16.100.149", 5),
        ("172.16.100.219", 3),
        ("172.16.100.245", 2),
        ("172.16.101.21", 6),
    ];
    let mut i = 0u16;
    for (backend, n) in spread {
        for _ in 0..n {
            h.query(i, web, TYPE_A);
            h.respond(&four_a_answer(i, web));
            h.syn(backend, 80);
            h.advance_ms(5_000);
            i += 1;
        }
    }
    let report = h.agg.report();
    assert_eq!(report.services.len(), 1);
    let service = &report.services[0];
    assert_eq!(
        (
            service.lookups,
            service.lookups_within_ttl,
            service.connections,
            service.backends,
            service.backends_used
        ),
        (16, 15, 16, 4, 4)
    );
    assert_eq!(service.ttl_min_secs, Some(300));
    let findings: Vec<(Check, Finding, bool)> = service
        .verdicts
        .iter()
        .map(|v| (v.check, v.finding, v.ok))
        .collect();
    assert_eq!(
        findings,
        [
            (Check::UnusedBackends, Finding::AllUsed, true),
            (Check::Balance, Finding::ConsistentWithRandom, true),
            (Check::AnswerOrder, Finding::FirstNotPreferred, true),
            (Check::Ttl, Finding::ResolvesBeforeEveryConnection, false),
        ],
        "{:#?}",
        service.verdicts
    );
    assert_eq!(
        service.verdicts[3].text,
        "resolves before every connection: 16 lookups for 16 connections, 15 of them within the TTL 300 s"
    );
}

/// Lookups spaced further apart than the TTL honour it.
/// Checks docs/semantics.md section 8.
#[test]
fn lookups_after_the_ttl_expired_honour_it() {
    use verdict::{Check, Finding};
    let mut h = Harness::new();
    let web = "web.example.com";
    for i in 0..4u16 {
        h.query(i, web, TYPE_A);
        h.respond(
            &MessageBuilder::new(i, true, [1, 2, 0, 0])
                .ttl(30)
                .question(web, TYPE_A)
                .a(web, [10, 0, 0, 1])
                .a(web, [10, 0, 0, 2])
                .build(),
        );
        h.syn("10.0.0.1", 443);
        h.advance_ms(31_000);
    }
    let report = h.agg.report();
    let ttl = report.services[0]
        .verdicts
        .iter()
        .find(|v| v.check == Check::Ttl)
        .unwrap();
    assert_eq!(ttl.finding, Finding::HonoursTtl, "{}", ttl.text);
}

/// Checks docs/semantics.md section 8.
#[test]
fn srv_priorities_and_weights_reach_the_verdicts() {
    use verdict::{Check, Expectation, Finding};
    let mut h = Harness::new();
    let svc = "_db._tcp.example.com";
    h.query(1, svc, TYPE_SRV);
    let mut b = MessageBuilder::new(1, true, [1, 3, 0, 3]);
    b.ttl(60).question(svc, TYPE_SRV);
    b.weighted_srv(svc, 10, 60, 5432, "p1.example.com");
    b.weighted_srv(svc, 10, 40, 5432, "p2.example.com");
    b.weighted_srv(svc, 20, 1, 5432, "backup.example.com");
    b.a("p1.example.com", [10, 1, 0, 1]);
    b.a("p2.example.com", [10, 1, 0, 2]);
    b.a("backup.example.com", [10, 1, 0, 3]);
    h.respond(&b.build());
    for _ in 0..6 {
        h.syn("10.1.0.1", 5432);
    }
    for _ in 0..4 {
        h.syn("10.1.0.3", 5432);
    }
    let report = h.agg.report();
    assert!(report.rows().all(|r| r.srv.is_some()));
    let s = &report.services[0];
    assert_eq!(&*s.name, "_db._tcp.example.com.");
    let v = |check| s.verdicts.iter().find(|v| v.check == check).unwrap();
    assert_eq!(v(Check::SrvPriority).finding, Finding::PriorityIgnored);
    assert_eq!(v(Check::Ttl).finding, Finding::SingleLookup);
    assert_eq!(v(Check::UnusedBackends).finding, Finding::UnusedByChance);
    assert_eq!(
        s.balance.as_ref().unwrap().expected,
        Expectation::SrvWeights
    );
}

// --- Section 2: tracking queries -------------------------------------------

/// Checks docs/semantics.md section 2.
#[test]
fn only_single_question_in_class_a_aaaa_srv_queries_are_tracked() {
    let mut h = Harness::new();
    h.query(1, "mx.example", 15); // MX: not tracked
    let two_questions = MessageBuilder::new(2, false, [2, 0, 0, 0])
        .question("a.example", TYPE_A)
        .question("b.example", TYPE_A)
        .build();
    h.udp(sock(CLIENT, CLIENT_PORT), sock(SERVER, 53), &two_questions);
    let chaos = MessageBuilder::new(3, false, [1, 0, 0, 0])
        .name("c.example")
        .u16(TYPE_A)
        .u16(3)
        .build();
    h.udp(sock(CLIENT, CLIENT_PORT), sock(SERVER, 53), &chaos);
    h.query(4, "v6.example", TYPE_AAAA);
    let c = h.counters();
    assert_eq!(c.queries_tracked, 1, "only the AAAA query");
    assert_eq!(c.ignored_multiple_questions, 1);
    // The untracked MX query means its multi-answer response matches nothing.
    h.respond(
        &MessageBuilder::new(1, true, [1, 2, 0, 0])
            .question("mx.example", 15)
            .a("mx.example", [1, 1, 1, 1])
            .a("mx.example", [1, 1, 1, 2])
            .build(),
    );
    assert_eq!(h.counters().unmatched_responses, 1);
    assert_eq!(h.tsv(), "");
}

/// Checks docs/semantics.md section 2, `-F`.
#[test]
fn filter_skips_queries_whose_name_lacks_the_substring() {
    let mut h = Harness::with(Config {
        filter: Some("svc".into()),
        ..Config::default()
    });
    h.query(1, "web.svc.example", TYPE_A);
    h.query(2, "other.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.svc.example"));
    h.respond(&four_a_answer(2, "other.example"));
    assert_eq!(h.tsv().lines().count(), 4);
    assert!(h.tsv().lines().all(|l| l.ends_with("web.svc.example.")));
    // The answer to the query -F left out is not a loss: counted apart.
    assert_eq!(h.counters().unmatched_responses, 0);
    assert_eq!(h.counters().responses_filtered_out, 1);
}

/// `-F` matches the name asked or the canonical name the answer gives: a
/// client asking for an alias of pool.example is in `-F pool`.
/// Checks docs/semantics.md section 2, `-F`.
#[test]
fn filter_matches_the_canonical_name_after_cnames() {
    let mut h = Harness::with(Config {
        filter: Some("pool".into()),
        ..Config::default()
    });
    h.query(1, "alias.example", TYPE_A);
    let mut answer = MessageBuilder::new(1, true, [1, 3, 0, 0]);
    answer
        .question("alias.example", TYPE_A)
        .cname("alias.example", "pool.example")
        .a("pool.example", [10, 0, 0, 1])
        .a("pool.example", [10, 0, 0, 2]);
    h.respond(&answer.build());
    let tsv = h.tsv();
    assert_eq!(tsv.lines().count(), 2, "{tsv}");
    assert!(tsv.lines().all(|l| l.ends_with("\tpool.example.")));
    assert_eq!(h.counters().responses_filtered_out, 0);
}

/// Checks docs/semantics.md section 2.
#[test]
fn pending_queries_expire_on_the_originals_sweep_schedule() {
    // Sweeps run when the capture clock has moved more than 10 s since the
    // last sweep, and remove queries at least 10 s old.
    let mut h = Harness::new();
    h.query(1, "late.example", TYPE_A); // t=0: first event, sweep clock starts
    h.advance_ms(10_500);
    h.respond(&four_a_answer(1, "late.example")); // sweep at 10.5 s removes it
    assert_eq!(h.counters().pending_expired, 1);
    assert_eq!(h.counters().unmatched_responses, 1);

    h.advance_ms(4_000); // t≈14.5 s
    h.query(2, "slow.example", TYPE_A);
    h.advance_ms(8_000); // t≈22.5 s: only 12 s since the last sweep...
    h.query(3, "other.example", TYPE_A); // ...so this event sweeps (slow is 8 s old, kept)
    h.advance_ms(3_000); // slow is now 11 s old, but no sweep is due
    h.respond(&four_a_answer(2, "slow.example"));
    assert_eq!(
        h.counters().responses_matched,
        1,
        "matched between sweeps, as the original did"
    );
}

// --- Section 3: matching responses ----------------------------------------

/// Checks docs/semantics.md section 3.
#[test]
fn a_response_must_match_id_endpoints_port_and_name() {
    let mut h = Harness::new();
    h.query(7, "web.example", TYPE_A);
    h.respond(&four_a_answer(8, "web.example")); // wrong id
    h.respond(&four_a_answer(7, "other.example")); // wrong name
    h.respond_to("172.16.101.191", &four_a_answer(7, "web.example")); // wrong client
    h.udp(
        sock("192.0.2.54", 53),
        sock(CLIENT, CLIENT_PORT),
        &four_a_answer(7, "web.example"),
    ); // wrong server
    h.udp(
        sock(SERVER, 53),
        sock(CLIENT, CLIENT_PORT + 1),
        &four_a_answer(7, "web.example"),
    ); // wrong port
    assert_eq!(h.counters().unmatched_responses, 5);
    assert_eq!(h.tsv(), "");
    h.respond(&four_a_answer(7, "WEB.example")); // DNS names compare case-insensitively
    assert_eq!(h.tsv().lines().count(), 4);
}

/// Checks docs/semantics.md section 3.
#[test]
fn a_duplicate_response_counts_nothing() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    h.respond(&four_a_answer(1, "web.example"));
    assert!(
        h.tsv().lines().all(|l| l.contains("\t0\t1\t")),
        "{}",
        h.tsv()
    );
    assert_eq!(h.counters().unmatched_responses, 1);
}

/// Checks docs/semantics.md section 3, A records.
#[test]
fn a_single_a_answer_is_not_a_backend_set() {
    let mut h = Harness::new();
    h.query(1, "one.example", TYPE_A);
    h.respond(
        &MessageBuilder::new(1, true, [1, 1, 0, 0])
            .question("one.example", TYPE_A)
            .a("one.example", [192, 0, 2, 1])
            .build(),
    );
    h.syn("192.0.2.1", 80);
    assert_eq!(h.tsv(), "");
    assert_eq!(h.counters().responses_matched, 1);
}

/// Behind a VIP (issue 26): connections to the one address of an answer
/// are counted by the backend a DNAT chose, whichever of the attempt and
/// its translation comes first; a retransmitted SYN is the same attempt;
/// a translation too far from its attempt, or never seen, leaves the
/// attempt untranslated; translations of connections to other addresses
/// count nowhere.
#[test]
fn connections_to_a_vip_are_counted_by_the_backend_the_nat_chose() {
    let mut h = Harness::new();
    h.answered_alone("api.example", [10, 96, 0, 10]);
    let vip = sock("10.96.0.10", 80);
    let nat = |h: &mut Harness, client: SocketAddr, backend: &str| {
        let event = Event::Nat(Translation {
            ts: h.ts(),
            client,
            asked: vip,
            backend: sock(backend, 8080),
        });
        h.agg.process(&event);
        h.advance_ms(1);
    };
    // The attempt first (a pod's SYN, translated on the node), twice.
    for _ in 0..2 {
        let from = h.syn("10.96.0.10", 80);
        h.segment(from, vip, SYN, 1, &[]);
        nat(&mut h, from, "10.244.1.1");
    }
    // The translation first (a host-network client's own socket).
    let from = sock(CLIENT, 40001);
    nat(&mut h, from, "10.244.1.2");
    h.segment(from, vip, SYN, 1, &[]);
    // A translation long after its attempt is not its translation.
    let late = h.syn("10.96.0.10", 80);
    h.advance_ms(6_000);
    nat(&mut h, late, "10.244.1.3");
    // Translations of connections to addresses no answer gave alone.
    nat(&mut h, sock(CLIENT, 40002), "10.244.1.3");
    let report = h.agg.report();
    assert_eq!(report.behind_vips.len(), 1, "{:?}", report.behind_vips);
    let spread = &report.behind_vips[0];
    assert_eq!(&*spread.name, "api.example.");
    assert_eq!(spread.vip, vip);
    assert_eq!(spread.connections, 4);
    assert_eq!(spread.untranslated, 1);
    assert_two_pods_then_one(spread);
    // A name of several addresses is a backend set, not a VIP.
    assert!(report.services.is_empty());
}

/// Both VIP tests' spread: two connections to the first pod, one to the
/// second, busiest first.
fn assert_two_pods_then_one(spread: &VipSpread) {
    let backends: Vec<(String, u64)> = spread
        .backends
        .iter()
        .map(|b| (b.backend.to_string(), b.connections))
        .collect();
    assert_eq!(
        backends,
        [
            ("10.244.1.1:8080".to_string(), 2),
            ("10.244.1.2:8080".to_string(), 1)
        ]
    );
}

/// Behind a VIP in replay: a capture holding a SYN before the node's DNAT
/// (to the VIP) and after it (to the pod) joins them by their initial
/// sequence number, which NAT never rewrites; a SYN with another ISN is
/// another connection.
#[test]
fn a_syn_seen_before_and_after_the_dnat_gives_the_translation() {
    let mut h = Harness::new();
    h.answered_alone("api.example", [10, 96, 0, 10]);
    let vip = sock("10.96.0.10", 80);
    for (port, isn, pod) in [
        (50001, 777, "10.244.1.1"),
        (50002, 778, "10.244.1.2"),
        (50003, 779, "10.244.1.1"),
    ] {
        let from = sock(CLIENT, port);
        h.segment(from, vip, SYN, isn, &[]);
        h.segment(from, sock(pod, 8080), SYN, isn, &[]);
    }
    // Its other side never captured, or NAT'd another ISN: untranslated.
    let from = sock(CLIENT, 50004);
    h.segment(from, vip, SYN, 900, &[]);
    h.segment(from, sock("10.244.1.2", 8080), SYN, 901, &[]);
    let report = h.agg.report();
    let spread = &report.behind_vips[0];
    assert_eq!((spread.connections, spread.untranslated), (4, 1));
    assert_two_pods_then_one(spread);
}

/// Behind a VIP (issue 26, item 4): the bytes each connection carried,
/// at its close and so far while open, counted for the backend its
/// translation named: one connection carrying nearly all of them is what
/// "one pod gets everything" usually is. A walk that no longer sees an
/// open connection leaves its bytes as last seen, no longer open; bytes
/// of connections never joined to a backend count nowhere.
#[test]
fn the_bytes_behind_a_vip_show_how_few_connections_carried_them() {
    let mut h = Harness::with(Config {
        connection_bytes: true,
        ..Config::default()
    });
    h.answered_alone("api.example", [10, 96, 0, 10]);
    let vip = sock("10.96.0.10", 80);
    let connect = |h: &mut Harness, pod: &str| {
        let from = h.syn("10.96.0.10", 80);
        h.agg.process(&Event::Nat(Translation {
            ts: h.ts(),
            client: from,
            asked: vip,
            backend: sock(pod, 8080),
        }));
        h.advance_ms(1);
        from
    };
    let carried = |h: &mut Harness, from, sent, received, open| {
        h.agg.process(&Event::Traffic(Carried {
            ts: h.ts(),
            client: from,
            asked: vip,
            sent,
            received,
            open,
        }));
    };
    let busy = connect(&mut h, "10.244.1.1");
    let small: Vec<SocketAddr> = (0..3).map(|_| connect(&mut h, "10.244.1.2")).collect();
    assert_eq!(h.agg.open_behind_vips(), 4);
    for &from in &small {
        carried(&mut h, from, 100, 900, false);
    }
    // A close seen twice counts once; an unknown connection nowhere.
    carried(&mut h, small[0], 100, 900, false);
    carried(&mut h, sock(CLIENT, 1), 5, 5, false);
    let report = h.agg.report();
    let traffic = report.behind_vips[0].traffic.clone().unwrap();
    assert_eq!(
        (
            traffic.bytes,
            traffic.connections_measured,
            traffic.still_open
        ),
        (3_000, 3, 0)
    );
    assert_eq!(traffic.connections_for_most_bytes, Some(3));
    // The long-lived connection, so far, from a walk.
    h.advance_ms(1_000);
    carried(&mut h, busy, 40_000, 960_000, true);
    let report = h.agg.report();
    let spread = &report.behind_vips[0];
    let traffic = spread.traffic.clone().unwrap();
    assert_eq!(
        (
            traffic.bytes,
            traffic.connections_measured,
            traffic.still_open
        ),
        (1_003_000, 4, 1)
    );
    assert_eq!(traffic.connections_for_most_bytes, Some(1));
    assert_eq!(traffic.busiest[0].backend, sock("10.244.1.1", 8080));
    assert_eq!(traffic.busiest[0].bytes, 1_000_000);
    let bytes: Vec<(String, u64, Option<u64>)> = spread
        .backends
        .iter()
        .map(|b| (b.backend.to_string(), b.connections, b.bytes))
        .collect();
    assert_eq!(
        bytes,
        [
            ("10.244.1.2:8080".to_string(), 3, Some(3_000)),
            ("10.244.1.1:8080".to_string(), 1, Some(1_000_000)),
        ]
    );
    // A later walk that misses it: closed unseen, counted as last seen.
    h.advance_ms(1_000);
    carried(&mut h, sock(CLIENT, 2), 1, 1, true);
    let traffic = h.agg.report().behind_vips[0].traffic.clone().unwrap();
    assert_eq!((traffic.bytes, traffic.still_open), (1_003_000, 0));
    // Its close: final bytes, replacing those so far.
    carried(&mut h, busy, 50_000, 1_150_000, false);
    assert_eq!(h.agg.open_behind_vips(), 0);
    let traffic = h.agg.report().behind_vips[0].traffic.clone().unwrap();
    assert_eq!(
        (
            traffic.bytes,
            traffic.connections_measured,
            traffic.still_open
        ),
        (1_203_000, 4, 0)
    );
}

/// A backend's bytes are a counter in the metrics: they never go down.
/// A connection walked while open and then no longer followed, because
/// its client port was used again before its close was seen or because
/// the table of open connections pushed it out, keeps the bytes the walk
/// saw, as one that closed between two walks does.
#[test]
fn a_backends_bytes_never_go_down_when_an_open_connection_is_no_longer_followed() {
    let mut h = Harness::with(Config {
        connection_bytes: true,
        ..Config::default()
    });
    h.answered_alone("api.example", [10, 96, 0, 10]);
    let connect = |h: &mut Harness, from: SocketAddr, vip_port: u16, isn: u32, pod: &str| {
        let vip = sock("10.96.0.10", vip_port);
        h.segment(from, vip, SYN, isn, &[]);
        h.agg.process(&Event::Nat(Translation {
            ts: h.ts(),
            client: from,
            asked: vip,
            backend: sock(pod, 8080),
        }));
    };
    let walked = |h: &mut Harness, from: SocketAddr, bytes: u64| {
        h.agg.process(&Event::Traffic(Carried {
            ts: h.ts(),
            client: from,
            asked: sock("10.96.0.10", 80),
            sent: bytes,
            received: 0,
            open: true,
        }));
    };
    let pod_bytes = |h: &Harness| -> Vec<(String, Option<u64>)> {
        let report = h.agg.report();
        let spread = report
            .behind_vips
            .iter()
            .find(|s| s.vip.port() == 80)
            .unwrap();
        let mut bytes: Vec<(String, Option<u64>)> = spread
            .backends
            .iter()
            .map(|b| (b.backend.to_string(), b.bytes))
            .collect();
        bytes.sort();
        bytes
    };
    let oldest = sock(CLIENT, 1);
    let reused = sock(CLIENT, 2);
    connect(&mut h, oldest, 80, 1, "10.244.1.1");
    connect(&mut h, reused, 80, 1, "10.244.1.2");
    walked(&mut h, oldest, 5_000);
    walked(&mut h, reused, 700);
    let before = vec![
        ("10.244.1.1:8080".to_string(), Some(5_000)),
        ("10.244.1.2:8080".to_string(), Some(700)),
    ];
    assert_eq!(pod_bytes(&h), before);
    // The same client port again, a new connection (another ISN).
    h.advance_ms(100);
    connect(&mut h, reused, 80, 2, "10.244.1.2");
    assert_eq!(pod_bytes(&h), before);
    // Enough connections to another port of the VIP to fill the table.
    for port in 1..=u16::MAX {
        connect(&mut h, sock(CLIENT, port), 81, 1, "10.244.1.3");
    }
    assert_eq!(h.agg.open_behind_vips(), 1 << 16);
    assert_eq!(pod_bytes(&h), before);
}

/// Without any bytes counted (replay, `--no-vip-backends`) a level has no
/// traffic and its backends no bytes, as before, and no connection is
/// kept waiting for them.
#[test]
fn a_vip_without_bytes_counted_says_nothing_of_traffic() {
    let mut h = Harness::new();
    h.answered_alone("api.example", [10, 96, 0, 10]);
    let vip = sock("10.96.0.10", 80);
    let from = h.syn("10.96.0.10", 80);
    h.agg.process(&Event::Nat(Translation {
        ts: h.ts(),
        client: from,
        asked: vip,
        backend: sock("10.244.1.1", 8080),
    }));
    // Nothing kept for bytes that will never come.
    assert_eq!(h.agg.open_behind_vips(), 0);
    let spread = &h.agg.report().behind_vips[0];
    assert!(spread.traffic.is_none());
    assert_eq!(spread.backends[0].bytes, None);
}

/// Checks docs/semantics.md section 3.
#[test]
fn opt_and_authority_records_are_skipped() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    let msg = MessageBuilder::new(1, true, [1, 2, 1, 1])
        .question("web.example", TYPE_A)
        .a("web.example", [192, 0, 2, 1])
        .a("web.example", [192, 0, 2, 2])
        .a("ns.example", [192, 0, 2, 99]) // authority section: skipped
        .opt()
        .build();
    h.respond(&msg);
    assert_eq!(h.tsv(), "172.016.101.190\t192.000.002.001:?\t0\t1\tweb.example.\n172.016.101.190\t192.000.002.002:?\t0\t1\tweb.example.\n");
}

/// Checks docs/semantics.md section 3.
#[test]
fn a_record_of_another_class_abandons_the_rest() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    let msg = MessageBuilder::new(1, true, [1, 3, 0, 0])
        .question("web.example", TYPE_A)
        .a("web.example", [192, 0, 2, 1])
        .record("web.example", TYPE_A, 3, &[192, 0, 2, 2])
        .a("web.example", [192, 0, 2, 3])
        .build();
    h.respond(&msg);
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t192.000.002.001:?\t0\t1\tweb.example.\n"
    );
}

/// Checks docs/semantics.md section 3, CNAME records.
#[test]
fn cname_with_at_most_two_answers_abandons_the_message() {
    let mut h = Harness::new();
    h.query(1, "alias.example", TYPE_A);
    let msg = MessageBuilder::new(1, true, [1, 2, 0, 0])
        .question("alias.example", TYPE_A)
        .cname("alias.example", "real.example")
        .a("real.example", [192, 0, 2, 1])
        .build();
    h.respond(&msg);
    assert_eq!(h.tsv(), "");
}

/// Checks docs/semantics.md section 3, the name credited.
#[test]
fn cname_to_a_multi_address_name_credits_the_canonical_name() {
    let mut h = Harness::new();
    h.query(1, "alias.example", TYPE_A);
    let msg = MessageBuilder::new(1, true, [1, 3, 0, 0])
        .question("alias.example", TYPE_A)
        .cname("alias.example", "real.example")
        .a("real.example", [192, 0, 2, 1])
        .a("real.example", [192, 0, 2, 2])
        .build();
    h.respond(&msg);
    h.syn("192.0.2.2", 443);
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t192.000.002.001:?\t0\t1\treal.example.\n172.016.101.190\t192.000.002.002:443\t1\t1\treal.example.\n"
    );
}

fn srv_answer(
    id: u16,
    service: &str,
    targets: &[(&str, u16)],
    additional: &[(&str, [u8; 4])],
) -> Vec<u8> {
    let mut b = MessageBuilder::new(
        id,
        true,
        [1, targets.len() as u16, 0, additional.len() as u16],
    );
    b.question(service, TYPE_SRV);
    for (target, port) in targets {
        b.srv(service, *port, target);
    }
    for (owner, addr) in additional {
        b.a(owner, *addr);
    }
    b.build()
}

/// Checks docs/semantics.md section 3, SRV records.
#[test]
fn srv_target_looked_up_separately_counts_even_with_one_address() {
    let mut h = Harness::new();
    h.query(1, "_db._tcp.example", TYPE_SRV);
    h.respond(&srv_answer(
        1,
        "_db._tcp.example",
        &[("db1.example", 5432), ("db2.example", 5433)],
        &[],
    ));
    assert_eq!(h.tsv(), "", "SRV registration alone counts nothing");
    h.query(2, "db1.example", TYPE_A);
    h.respond(
        &MessageBuilder::new(2, true, [1, 1, 0, 0])
            .question("db1.example", TYPE_A)
            .a("db1.example", [192, 0, 2, 11])
            .build(),
    );
    h.syn("192.0.2.11", 5432);
    h.syn("192.0.2.11", 5432);
    // Named after the service, port from the SRV record, dns = SRV count.
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t192.000.002.011:5432\t2\t1\t_db._tcp.example.\n"
    );
}

/// Checks docs/semantics.md section 3, SRV records.
#[test]
fn additional_records_count_only_for_known_srv_targets() {
    let mut h = Harness::new();
    h.query(1, "_s._tcp.example", TYPE_SRV);
    h.respond(&srv_answer(
        1,
        "_s._tcp.example",
        &[("t1.example", 8080)],
        &[
            ("t1.example", [192, 0, 2, 1]),
            ("stray.example", [192, 0, 2, 2]),
        ],
    ));
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t192.000.002.001:8080\t0\t1\t_s._tcp.example.\n"
    );
}

/// Checks docs/semantics.md section 6 (per real port) and 4.
#[test]
fn srv_counts_stay_on_real_ports() {
    // The original could credit SRV counts to a port never in any SRV answer
    // once a backend had been seen through SRV twice and connected to on
    // another port. Here SRV counts stay on 5222 and the extra port shows
    // its connection with a DNS count of 0.
    let mut h = Harness::new();
    for id in 1..=2 {
        h.query(id, "_x._tcp.example", TYPE_SRV);
        h.respond(&srv_answer(
            id,
            "_x._tcp.example",
            &[("t.example", 5222)],
            &[("t.example", [192, 0, 2, 7])],
        ));
    }
    h.syn("192.0.2.7", 5269);
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t192.000.002.007:5222\t0\t2\t_x._tcp.example.\n172.016.101.190\t192.000.002.007:5269\t1\t0\t_x._tcp.example.\n"
    );
}

/// Checks docs/semantics.md section 4 and 5.
#[test]
fn a_target_with_several_srv_ports_gets_a_row_per_port() {
    let mut h = Harness::new();
    h.query(1, "_x._tcp.example", TYPE_SRV);
    h.respond(&srv_answer(
        1,
        "_x._tcp.example",
        &[("t.example", 5222), ("t.example", 5223)],
        &[("t.example", [192, 0, 2, 7])],
    ));
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t192.000.002.007:5222\t0\t1\t_x._tcp.example.\n172.016.101.190\t192.000.002.007:5223\t0\t1\t_x._tcp.example.\n"
    );
}

/// Checks docs/semantics.md section 3, AAAA.
#[test]
fn aaaa_sets_count_like_a_sets() {
    let mut h = Harness::new();
    let client = "2001:db8::2";
    h.query_from(client, 1, "v6.example", TYPE_AAAA);
    let msg = MessageBuilder::new(1, true, [1, 2, 0, 0])
        .question("v6.example", TYPE_AAAA)
        .aaaa("v6.example", "2001:db8::10".parse().unwrap())
        .aaaa("v6.example", "2001:db8::11".parse().unwrap())
        .build();
    h.respond_to(client, &msg);
    h.syn_from(client, "2001:db8::11", 443);
    assert_eq!(h.tsv(), "2001:db8::2\t[2001:db8::10]:?\t0\t1\tv6.example.\n2001:db8::2\t[2001:db8::11]:443\t1\t1\tv6.example.\n");
}

/// Checks docs/semantics.md section 2.
#[test]
fn messages_with_over_1000_answers_are_ignored() {
    let mut h = Harness::new();
    h.query(1, "big.example", TYPE_A);
    let mut b = MessageBuilder::new(1, true, [1, 1001, 0, 0]);
    b.question("big.example", TYPE_A);
    for i in 0..1001u32 {
        b.a("big.example", (0xc000_0200 + i).to_be_bytes());
    }
    h.respond(&b.build());
    assert_eq!(h.counters().ignored_too_many_answers, 1);
    assert_eq!(h.tsv(), "");
}

// --- Section 4: backends and connections ----------------------------------

/// Checks docs/semantics.md section 4.
#[test]
fn connections_to_addresses_never_in_dns_are_not_reported() {
    let mut h = Harness::new();
    h.syn("198.51.100.1", 80);
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    h.syn_from("172.16.101.191", "172.16.100.149", 80); // another client's backend set
    assert!(!h.tsv().contains("198.051"));
    assert!(h.tsv().lines().all(|l| l.contains(":?\t0\t1\t")));
    assert_eq!(h.counters().connection_attempts, 2);
    assert_eq!(h.counters().connections_to_backends, 0);
}

/// Checks docs/semantics.md section 1, connection attempts.
#[test]
fn only_a_bare_syn_counts_without_all_tcp() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    let (c, b) = (sock(CLIENT, 50000), sock("172.16.100.149", 80));
    h.segment(c, b, ACK | PSH, 5, b"GET /");
    h.segment(b, c, SYN | ACK, 9, &[]);
    assert!(h.tsv().lines().all(|l| l.contains(":?\t0\t")));
}

/// Checks docs/semantics.md section 4, `-a`.
#[test]
fn all_tcp_counts_a_flow_open_before_the_capture_once_either_way() {
    let mut h = Harness::with(Config {
        all_tcp: true,
        ..Config::default()
    });
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    let (c, b) = (sock(CLIENT, 50000), sock("172.16.100.149", 80));
    // Mid-flow: first segment is from the backend to the client.
    h.segment(b, c, ACK | PSH, 100, b"data");
    h.segment(c, b, ACK, 7, &[]);
    h.segment(c, b, FIN | ACK, 7, &[]);
    h.segment(b, c, FIN | ACK, 104, &[]);
    h.segment(c, b, ACK, 8, &[]); // the final ACK of the close: not a new flow
    assert_eq!(
        h.tsv().lines().find(|l| l.contains("100.149")).unwrap(),
        "172.016.101.190\t172.016.100.149:80\t1\t1\tweb.example."
    );
    assert_eq!(h.counters().flows_seen_midstream, 1);
}

/// Checks docs/semantics.md section 4, `-a`.
#[test]
fn all_tcp_matches_default_mode_when_every_connection_starts_inside() {
    let run = |all_tcp| {
        let mut h = Harness::with(Config {
            all_tcp,
            ..Config::default()
        });
        h.query(1, "web.example", TYPE_A);
        h.respond(&four_a_answer(1, "web.example"));
        for (i, backend) in ["172.16.100.149", "172.16.100.149", "172.16.100.219"]
            .iter()
            .enumerate()
        {
            let (c, b) = (sock(CLIENT, 50000 + i as u16), sock(backend, 80));
            h.segment(c, b, SYN, 1, &[]);
            h.segment(b, c, SYN | ACK, 1, &[]);
            h.segment(c, b, ACK, 2, &[]);
            h.segment(c, b, FIN | ACK, 2, &[]);
            h.segment(b, c, FIN | ACK, 2, &[]);
            h.segment(c, b, ACK, 3, &[]);
        }
        h.tsv()
    };
    assert_eq!(run(true), run(false));
    assert!(run(false).contains("172.016.100.149:80\t2\t1\t"));
}

// --- DNS over TCP (Extension) ---------------------------------------------

/// Checks docs/semantics.md section 1, DNS over TCP.
#[test]
fn dns_over_tcp_is_reassembled_per_flow() {
    let mut h = Harness::new();
    let (c, s) = (sock(CLIENT, 41000), sock(SERVER, 53));
    let query = MessageBuilder::new(9, false, [1, 0, 0, 0])
        .question("tcp.example", TYPE_A)
        .build();
    let answer = four_a_answer(9, "tcp.example");
    let frame = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
    h.segment(c, s, SYN, 1000, &[]);
    h.segment(s, c, SYN | ACK, 5000, &[]);
    h.segment(c, s, ACK | PSH, 1001, &frame(&query));
    let a = frame(&answer);
    // The answer arrives in two segments, the second first.
    h.segment(s, c, ACK | PSH, 5001 + 10, &a[10..]);
    assert_eq!(h.tsv(), "");
    h.segment(s, c, ACK, 5001, &a[..10]);
    assert_eq!(h.tsv().lines().count(), 4, "{}", h.tsv());
    assert_eq!(h.counters().dns_messages, 2);
}

/// A length-prefixed DNS message, as DNS over TCP sends it.
fn tcp_framed(message: &[u8]) -> Vec<u8> {
    [&(message.len() as u16).to_be_bytes()[..], message].concat()
}

/// Checks docs/semantics.md section 1, DNS over TCP: a gap the peer has
/// acknowledged (suricata-verify's dns-tcp-ts-gap: the capture lost the
/// client's second query) never fills, so the query after it is read when
/// the server's answer acknowledges it, before that answer, and matches.
#[test]
fn dns_over_tcp_goes_on_past_a_gap_the_peer_acknowledged() {
    let mut h = Harness::new();
    let (c, s) = (sock(CLIENT, 41000), sock(SERVER, 53));
    let query = |id| {
        tcp_framed(
            &MessageBuilder::new(id, false, [1, 0, 0, 0])
                .question("tcp.example", TYPE_A)
                .build(),
        )
    };
    let answer = |id| tcp_framed(&four_a_answer(id, "tcp.example"));
    let (q_len, a_len) = (query(0).len() as u32, answer(0).len() as u32);
    h.segment(c, s, SYN, 1000, &[]);
    h.segment(s, c, SYN | ACK, 5000, &[]);
    h.segment_acking(c, s, (ACK | PSH, 1001, Some(5001)), &query(0));
    h.segment_acking(s, c, (ACK | PSH, 5001, Some(1001 + q_len)), &answer(0));
    // Query 1 is not in the capture; its answer is, acknowledging it.
    h.segment_acking(
        s,
        c,
        (ACK | PSH, 5001 + a_len, Some(1001 + 2 * q_len)),
        &answer(1),
    );
    h.segment_acking(
        c,
        s,
        (ACK | PSH, 1001 + 2 * q_len, Some(5001 + 2 * a_len)),
        &query(2),
    );
    h.segment_acking(
        s,
        c,
        (ACK | PSH, 5001 + 2 * a_len, Some(1001 + 3 * q_len)),
        &answer(2),
    );
    let counters = h.counters();
    assert_eq!(counters.responses_matched, 2, "{counters:?}");
    assert_eq!(counters.unmatched_responses, 1, "{counters:?}");
    assert_eq!(counters.tcp_dns_resynchronised, 1, "{counters:?}");
}

/// Checks docs/semantics.md section 1, DNS over TCP: after a gap, a
/// length prefix sent in a segment of its own (dig, glibc) and the message
/// in the next begin a message together (dnscap's dnso1tcp-midmiss).
#[test]
fn dns_over_tcp_resumes_at_a_length_prefix_sent_alone() {
    let mut h = Harness::new();
    let (c, s) = (sock(CLIENT, 41000), sock(SERVER, 53));
    let query = MessageBuilder::new(7, false, [1, 0, 0, 0])
        .question("tcp.example", TYPE_A)
        .build();
    let framed = tcp_framed(&query);
    let answer = tcp_framed(&four_a_answer(7, "tcp.example"));
    h.segment(c, s, SYN, 1000, &[]);
    h.segment(s, c, SYN | ACK, 5000, &[]);
    // 30 bytes of the client's stream were never captured.
    let after_gap = 1001 + 30;
    h.segment_acking(c, s, (ACK | PSH, after_gap, Some(5001)), &framed[..2]);
    h.segment_acking(c, s, (ACK | PSH, after_gap + 2, Some(5001)), &framed[2..]);
    let end = after_gap + framed.len() as u32;
    h.segment_acking(s, c, (ACK | PSH, 5001, Some(end)), &answer);
    let counters = h.counters();
    assert_eq!(counters.responses_matched, 1, "{counters:?}");
    assert_eq!(counters.tcp_dns_unplaced_segments, 0, "{counters:?}");
    assert_eq!(h.tsv().lines().count(), 4, "{}", h.tsv());
}

// --- Section 6: what the original got wrong --------------------------------

/// Checks docs/semantics.md section 6, malformed messages.
#[test]
fn malformed_answers_are_skipped_and_counted_and_the_query_stays_pending() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    let mut bad = four_a_answer(1, "web.example");
    let len = bad.len();
    bad[len - 5] = 200; // last RDLENGTH now points past the end
    h.respond(&bad);
    assert_eq!(h.counters().malformed_dns_skipped, 1);
    assert_eq!(h.tsv(), "");
    h.respond(&four_a_answer(1, "web.example"));
    assert_eq!(h.tsv().lines().count(), 4);
}

/// Checks docs/semantics.md section 6, ports.
#[test]
fn a_backend_keeps_any_number_of_ports() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    for port in 8000..8040 {
        h.syn("172.16.100.149", port);
    }
    assert_eq!(
        h.tsv().lines().filter(|l| l.contains("100.149")).count(),
        40
    );
}

/// Checks docs/semantics.md section 6, names.
#[test]
fn names_longer_than_255_presentation_bytes_are_kept_whole() {
    // 4 labels of 60 bytes with escapes: over 255 bytes once presented.
    let label = "\u{1}".repeat(60);
    let name = [label.as_str(); 4].join(".");
    let mut h = Harness::new();
    h.query(1, &name, TYPE_A);
    h.respond(&four_a_answer(1, &name));
    let shown = h
        .tsv()
        .lines()
        .next()
        .unwrap()
        .rsplit('\t')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(shown.len(), 4 * 60 * 4 + 4);
    assert!(shown.starts_with("\\001\\001"));
}

/// Checks docs/semantics.md section 2 and 3, class IN.
#[test]
fn class_in_constant_matches_the_wire_value() {
    assert_eq!(CLASS_IN, 1);
}

/// Checks docs/semantics.md section 4, `-a`.
#[test]
fn all_tcp_trusts_a_flow_verdict_from_the_source() {
    // Live mode: the kernel's flow table says which segment starts a flow
    // and sends only those (and closes); the aggregator must not second-guess.
    let mut h = Harness::with(Config {
        all_tcp: true,
        ..Config::default()
    });
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    let (c, b) = (sock(CLIENT, 50000), sock("172.16.100.149", 80));
    for first_of_flow in [Some(true), Some(false), Some(false)] {
        let event = Event::Tcp(Segment {
            ts: h.ts(),
            src: c,
            dst: b,
            flags: ACK,
            seq: 1,
            payload: &[],
            truncated: false,
            ack: None,
            first_of_flow,
            owner: None,
        });
        h.agg.process(&event);
        h.advance_ms(4 * 3600 * 1000); // longer than the aggregator's own idle limit
    }
    assert!(
        h.tsv().contains("172.016.100.149:80\t1\t1\t"),
        "{}",
        h.tsv()
    );
}

/// Checks docs/semantics.md section 3, the TC bit.
#[test]
fn a_truncated_response_counts_nothing_and_the_retry_counts_once() {
    // dnsmasq answers a large SRV set over UDP with TC set and the records
    // that fit; the client ignores that and asks again over TCP.
    let mut h = Harness::new();
    let targets = [("t1.example", 7000), ("t2.example", 7000)];
    let extra = [
        ("t1.example", [192, 0, 2, 1]),
        ("t2.example", [192, 0, 2, 2]),
    ];
    h.query(1, "_big._tcp.example", TYPE_SRV);
    let mut partial = srv_answer(1, "_big._tcp.example", &targets[..1], &extra[..1]);
    partial[2] |= 0x02; // TC
    h.respond(&partial);
    assert_eq!(h.tsv(), "");
    assert_eq!(h.counters().ignored_truncated_responses, 1);
    h.query(2, "_big._tcp.example", TYPE_SRV);
    h.respond(&srv_answer(2, "_big._tcp.example", &targets, &extra));
    assert_eq!(
        h.tsv(),
        "172.016.101.190\t192.000.002.001:7000\t0\t1\t_big._tcp.example.\n172.016.101.190\t192.000.002.002:7000\t0\t1\t_big._tcp.example.\n"
    );
}

/// Section 7: in host mode two apps that share an address (two containers
/// on one private address, or two processes behind NAT) and even a query
/// id are two clients; each response comes back on its query's socket and
/// is credited to that query's app.
/// Checks docs/semantics.md section 7.
#[test]
fn owners_sharing_an_address_and_a_query_id_stay_apart() {
    let mut h = Harness::with(Config {
        by: ClientBy::App,
        match_sockets: true,
        ..Config::default()
    });
    let owner = |path: &str, socket: u64, command: &[u8]| {
        let mut comm = [0u8; 16];
        comm[..command.len()].copy_from_slice(command);
        Owner {
            cgroup: client::cgroup(socket * 10, Some(path)),
            socket,
            process: Some(Process {
                tgid: socket as u32,
                pid: socket as u32,
                command: comm,
                netns_cookie: 1,
            }),
        }
    };
    let (a, b) = (owner("/a", 1, b"curl"), owner("/b", 2, b"wget"));
    let query = MessageBuilder::new(7, false, [1, 0, 0, 0])
        .question("web.example", TYPE_A)
        .build();
    let answer = four_a_answer(7, "web.example");
    let (client, server) = (sock(CLIENT, CLIENT_PORT), sock(SERVER, 53));
    let ts = h.ts();
    for (src, dst, payload, owner) in [
        (client, server, &query, &a),
        (client, server, &query, &b),
        (server, client, &answer, &b),
        (server, client, &answer, &a),
    ] {
        h.agg.process(&Event::Udp(Datagram {
            ts,
            src,
            dst,
            payload,
            truncated: false,
            owner: Some(owner),
        }));
    }
    for (seq, owner, backend) in [
        (1, &a, "172.16.100.149"),
        (2, &b, "172.16.101.21"),
        (3, &b, "172.16.101.21"),
    ] {
        h.agg.process(&Event::Tcp(Segment {
            ts,
            src: sock(CLIENT, 50000),
            dst: sock(backend, 443),
            flags: SYN,
            seq,
            payload: &[],
            truncated: false,
            ack: None,
            first_of_flow: None,
            owner: Some(owner),
        }));
    }
    let report = h.agg.report();
    let seen: Vec<(String, u64, u64, Vec<u32>)> = report
        .services
        .iter()
        .map(|s| {
            (
                s.client.to_string(),
                s.lookups,
                s.connections,
                s.pids.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("curl in /a".to_string(), 1, 1, vec![1]),
            ("wget in /b".to_string(), 1, 2, vec![2]),
        ]
    );
    assert_eq!(h.counters().responses_matched, 2);
}

/// A response is the query's: a stub's answer arriving on the app's socket
/// counts for the app, whatever the response packet's own owner says.
/// Checks docs/semantics.md section 7.
#[test]
fn a_response_is_credited_to_its_query_s_client() {
    let mut h = Harness::with(Config {
        by: ClientBy::Cgroup,
        ..Config::default()
    });
    let owner = |id: u64| Owner {
        cgroup: client::cgroup(id, Some(if id == 1 { "/app" } else { "/stub" })),
        socket: 0,
        process: None,
    };
    let (app, stub) = (owner(1), owner(2));
    let query = MessageBuilder::new(9, false, [1, 0, 0, 0])
        .question("web.example", TYPE_A)
        .build();
    let answer = four_a_answer(9, "web.example");
    let (client, server) = (sock(CLIENT, CLIENT_PORT), sock(SERVER, 53));
    let ts = h.ts();
    h.agg.process(&Event::Udp(Datagram {
        ts,
        src: client,
        dst: server,
        payload: &query,
        truncated: false,
        owner: Some(&app),
    }));
    h.agg.process(&Event::Udp(Datagram {
        ts,
        src: server,
        dst: client,
        payload: &answer,
        truncated: false,
        owner: Some(&stub),
    }));
    let report = h.agg.report();
    assert_eq!(report.services.len(), 1);
    assert_eq!(report.services[0].client.to_string(), "/app");
}

/// One connect() is one attempt, however many times its SYN is seen: the
/// three retransmissions to a backend that drops SYNs, and the copy a
/// second interface shows (`trace -i lo`), have its 4-tuple and ISN.
/// Checks docs/semantics.md section 1, attempts and their replies.
#[test]
fn retransmitted_and_twice_seen_syns_are_one_attempt_with_its_outcome() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    let (live, refusing, dropping) = ("172.16.100.149", "172.16.100.219", "172.16.100.245");
    // Answered: the SYN twice (two interfaces), then the SYN-ACK twice.
    let c = h.syn(live, 80);
    h.segment(c, sock(live, 80), SYN, 1, &[]);
    h.segment(sock(live, 80), c, SYN | ACK, 900, &[]);
    h.segment(sock(live, 80), c, SYN | ACK, 900, &[]);
    // Refused: nothing listens, a reset comes back.
    let c = h.syn(refusing, 80);
    h.segment(sock(refusing, 80), c, RST | ACK, 0, &[]);
    // Dropped: the SYN and three retransmissions, no reply.
    let c = h.syn(dropping, 80);
    for _ in 0..3 {
        h.advance_ms(1000);
        h.segment(c, sock(dropping, 80), SYN, 1, &[]);
    }
    // An ECN-setup SYN is an attempt too.
    let c = sock(CLIENT, 61000);
    h.segment(c, sock(live, 80), SYN | ECE | CWR, 5, &[]);
    h.segment(sock(live, 80), c, SYN | ACK | ECE, 77, &[]);

    assert_eq!(
        h.tsv(),
        "172.016.101.190\t172.016.100.149:80\t2\t1\tweb.example.\n\
         172.016.101.190\t172.016.100.219:80\t1\t1\tweb.example.\n\
         172.016.101.190\t172.016.100.245:80\t1\t1\tweb.example.\n\
         172.016.101.190\t172.016.101.021:?\t0\t1\tweb.example.\n"
    );
    let report = h.agg.report();
    let outcomes: Vec<Option<Outcomes>> = report.rows().map(|r| r.outcomes).collect();
    let o = |answered, refused, unanswered| {
        Some(Outcomes {
            answered,
            refused,
            unanswered,
        })
    };
    assert_eq!(outcomes, [o(2, 0, 0), o(0, 1, 0), o(0, 0, 1), o(0, 0, 0)]);
    let c = &report.counters;
    assert_eq!(
        (c.connection_attempts, c.connection_attempts_repeated),
        (4, 4)
    );
    let failing = report.services[0]
        .verdicts
        .iter()
        .find(|v| v.check == verdict::Check::FailingBackends)
        .unwrap();
    assert!(!failing.ok);
    assert_eq!(
        failing.text,
        "172.16.100.219:80 refused 1 of 1; 172.16.100.245:80 left 1 of 1 unanswered; \
         the client reached the other backends 2 times, so part of their share is failover, not choice"
    );
}

/// A capture of SYNs alone (the original's filter) holds no reply: it
/// cannot tell a dead backend from a live one, so no outcome is claimed.
/// Checks docs/semantics.md section 1, attempt replies.
#[test]
fn without_any_reply_in_the_input_outcomes_are_not_claimed() {
    let mut h = Harness::new();
    h.query(1, "web.example", TYPE_A);
    h.respond(&four_a_answer(1, "web.example"));
    h.syn("172.16.100.149", 80);
    let report = h.agg.report();
    assert!(report.rows().all(|r| r.outcomes.is_none()));
    assert!(report.services[0]
        .verdicts
        .iter()
        .all(|v| v.check != verdict::Check::FailingBackends));
}

/// An A answer for `name` holding 10.0.0.`lasts`, with `ttl`.
fn answer_of(id: u16, name: &str, ttl: u32, lasts: &[u8]) -> Vec<u8> {
    let mut m = MessageBuilder::new(id, true, [1, lasts.len() as u16, 0, 0]);
    m.question(name, TYPE_A).ttl(ttl);
    for &last in lasts {
        m.a(name, [10, 0, 0, last]);
    }
    m.build()
}

impl Harness {
    fn lookup(&mut self, id: u16, name: &str, ttl: u32, lasts: &[u8]) {
        self.query(id, name, TYPE_A);
        self.respond(&answer_of(id, name, ttl, lasts));
    }

    fn at_secs(&mut self, secs: u64) {
        let target = 1_000_000 + secs * 1000;
        assert!(target >= self.now_ms, "time runs forward in a test");
        self.now_ms = target;
    }

    fn service(&self, name: &str) -> Service {
        let report = self.agg.report();
        report
            .services
            .into_iter()
            .find(|s| s.name.trim_end_matches('.') == name)
            .expect("the service is reported")
    }
}

fn check_of(s: &Service, check: verdict::Check) -> &verdict::Verdict {
    s.verdicts
        .iter()
        .find(|v| v.check == check)
        .unwrap_or_else(|| panic!("no {check:?} verdict in {:?}", s.verdicts))
}

/// The scale-down: the first answer holds 4 addresses, every later
/// one 2, and the client follows DNS: 1/1/9/9. Judged against the answer
/// in force, the expected counts are 0.5, 0.5, 9.5, 9.5; the two cells
/// under one pool into one (2 seen, 1 expected), so chi-square is
/// 1 + 2·0.5²/9.5 over 2 degrees of freedom, p = e^(-χ²/2) ≈ 0.59. Against
/// 4 equal shares it was "uneven, p = 0.005".
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_that_follows_a_scale_down_is_balanced() {
    let mut h = Harness::new();
    h.lookup(1, "web.example", 30, &[1, 2, 3, 4]);
    h.syn("10.0.0.1", 80);
    h.syn("10.0.0.2", 80);
    for i in 0..9u16 {
        // Each lookup once the previous answer expired.
        h.at_secs(31 + u64::from(i) * 31);
        h.lookup(10 + i, "web.example", 30, &[3, 4]);
        h.syn("10.0.0.3", 80);
        h.syn("10.0.0.4", 80);
    }
    let s = h.service("web.example");
    let b = s.balance.as_ref().expect("judged");
    let chi_square = 1.0 + 2.0 * 0.25 / 9.5;
    assert!((b.chi_square - chi_square).abs() < 1e-9, "{}", b.chi_square);
    assert_eq!(b.degrees_of_freedom, 2);
    assert!((b.p_value - (-chi_square / 2.0).exp()).abs() < 1e-9);
    assert!(b.over_answers_in_force);
    let v = check_of(&s, verdict::Check::Balance);
    assert_eq!(
        v.finding,
        verdict::Finding::ConsistentWithRandom,
        "{}",
        v.text
    );
    assert_eq!(s.answer_sets, 2);
    let stale = check_of(&s, verdict::Check::StaleBackends);
    assert_eq!(stale.finding, verdict::Finding::NoneStale);
    assert!(stale.ok);
    assert_eq!(
        check_of(&s, verdict::Check::UnusedBackends).finding,
        verdict::Finding::AllUsed
    );
    assert_eq!(
        check_of(&s, verdict::Check::Ttl).finding,
        verdict::Finding::HonoursTtl
    );
}

/// Its mirror: after the same scale-down, a client that keeps choosing
/// among all four, though it looks the name up again and is told two.
/// Its connections to the two withdrawn addresses after their last answer
/// expired are stale; the rest are judged for balance as usual.
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_that_ignores_a_scale_down_is_uneven_and_stale() {
    let mut h = Harness::new();
    h.lookup(1, "web.example", 30, &[1, 2, 3, 4]);
    h.syn("10.0.0.1", 80);
    h.syn("10.0.0.2", 80);
    h.at_secs(10);
    h.lookup(2, "web.example", 30, &[3, 4]);
    for i in 0..9u64 {
        h.at_secs(100 + i * 10);
        for last in ["10.0.0.1", "10.0.0.2"] {
            if i < 4 {
                h.syn(last, 80);
            }
        }
        h.syn("10.0.0.3", 80);
        h.syn("10.0.0.4", 80);
        if i % 2 == 0 {
            h.lookup(20 + i as u16, "web.example", 30, &[3, 4]);
        }
    }
    let s = h.service("web.example");
    let stale = check_of(&s, verdict::Check::StaleBackends);
    assert!(!stale.ok);
    assert_eq!(stale.finding, verdict::Finding::Stale);
    // 10.0.0.1's last answer expired at 30 s; its last stale connection
    // came at 130 s.
    assert_eq!(
        stale.text,
        "connections to addresses DNS no longer offers: \
         10.0.0.1: 4 connections up to 100 s after the last answer holding it expired; \
         10.0.0.2: 4 connections up to 100 s after the last answer holding it expired"
    );
    assert_eq!(s.stale_backends.len(), 2);
    assert_eq!(s.stale_backends[0].connections, 4);
}

/// The JVM-cache case: one lookup with TTL 5 s, then 20
/// connections every 5 s. The first is within the TTL, the other 19 come
/// 5 to 95 s after the answer expired.
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_that_never_re_resolves_is_told() {
    let mut h = Harness::new();
    h.lookup(1, "web.example", 5, &[1, 2]);
    for k in 0..20u64 {
        h.at_secs(k * 5 + 1);
        h.syn(if k % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" }, 80);
    }
    let s = h.service("web.example");
    let v = check_of(&s, verdict::Check::Ttl);
    assert!(!v.ok);
    assert_eq!(v.finding, verdict::Finding::DoesNotReresolve);
    assert_eq!(
        v.text,
        "18 connections up to 91 s after the answer expired (TTL 5 s): this client does not re-resolve"
    );
    assert_eq!(s.connections_after_expiry, 18);
    // The first two came within the TTL and its one-second grace; the
    // answer arrived 1 ms after the test's time 0.
    let max = s.max_secs_after_expiry.unwrap();
    assert!((max - 90.999).abs() < 1e-9, "{max}");
}

/// Its mirror: a client that looks up again whenever the answer expired
/// honours the TTL, and connections within the TTL are not late.
/// Checks docs/semantics.md section 8.
#[test]
fn a_client_that_re_resolves_on_expiry_is_ok() {
    let mut h = Harness::new();
    for k in 0..20u64 {
        h.at_secs(k * 6);
        h.lookup(k as u16 + 1, "web.example", 5, &[1, 2]);
        h.syn(if k % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" }, 80);
        h.at_secs(k * 6 + 4);
        h.syn("10.0.0.1", 80);
    }
    let s = h.service("web.example");
    let v = check_of(&s, verdict::Check::Ttl);
    assert!(v.ok, "{}", v.text);
    assert_eq!(v.finding, verdict::Finding::HonoursTtl);
    assert_eq!(s.connections_after_expiry, 0);
    assert!(s
        .verdicts
        .iter()
        .all(|v| v.check != verdict::Check::StaleBackends));
}

/// Random timelines through the whole aggregator: answers that change,
/// TTLs from 0 up, connections early, late and to withdrawn addresses.
/// Whatever the order, the verdicts stay within their bounds.
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        /// Seconds later, an answer with these of 8 addresses and TTL.
        Lookup { after: u16, addresses: u8, ttl: u32 },
        /// Seconds later, a connect to address 10.0.0.`1 + to % 8`.
        Connect { after: u16, to: u8, answered: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u16..120, any::<u8>(), prop_oneof![Just(0u32), 1u32..600]).prop_map(
                |(after, addresses, ttl)| Step::Lookup {
                    after,
                    addresses,
                    ttl
                }
            ),
            (0u16..120, any::<u8>(), any::<bool>()).prop_map(|(after, to, answered)| {
                Step::Connect {
                    after,
                    to,
                    answered,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            // A failure prints its minimal input; no file is left behind.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn verdicts_stay_bounded_on_random_timelines(steps in prop::collection::vec(step(), 1..80)) {
            let mut h = Harness::new();
            let mut lookups = 0u64;
            let mut connects = 0u64;
            for (i, s) in steps.iter().enumerate() {
                match *s {
                    Step::Lookup { after, addresses, ttl } => {
                        h.advance_ms(u64::from(after) * 1000);
                        // At least two addresses: one alone is not a service.
                        let lasts: Vec<u8> = (1..=8u8)
                            .filter(|b| addresses & (1 << (b - 1)) != 0)
                            .collect();
                        let lasts = if lasts.len() < 2 { vec![1, 2] } else { lasts };
                        h.lookup(i as u16, "web.example", ttl, &lasts);
                        lookups += 1;
                    }
                    Step::Connect { after, to, answered } => {
                        h.advance_ms(u64::from(after) * 1000);
                        let backend = format!("10.0.0.{}", 1 + to % 8);
                        let from = h.syn(&backend, 80);
                        if answered {
                            h.segment(sock(&backend, 80), from, SYN | ACK, 9, &[]);
                        }
                        connects += 1;
                    }
                }
            }
            let report = h.agg.report();
            prop_assert!(report.services.len() <= 1);
            for s in &report.services {
                prop_assert!(s.connections <= connects);
                prop_assert!(s.answer_sets <= lookups);
                prop_assert!(s.connections_after_expiry <= s.connections);
                let stale: u64 = s.stale_backends.iter().map(|b| b.connections).sum();
                prop_assert!(stale + s.connections_after_expiry <= s.connections);
                if let Some(b) = &s.balance {
                    prop_assert!(b.chi_square.is_finite() && b.chi_square >= 0.0, "{b:?}");
                    prop_assert!((0.0..=1.0).contains(&b.p_value), "{b:?}");
                    prop_assert!(b.degrees_of_freedom >= 1 && b.degrees_of_freedom < 8);
                    prop_assert!(b.min_share <= b.max_share);
                }
                for v in &s.verdicts {
                    prop_assert!(!v.text.is_empty() && !v.text.contains('\n'), "{v:?}");
                    prop_assert!(!v.text.contains("NaN") && !v.text.contains("inf"), "{v:?}");
                }
                let checks: Vec<_> = s.verdicts.iter().map(|v| v.check).collect();
                let mut unique = checks.clone();
                unique.dedup();
                prop_assert_eq!(checks.len(), unique.len());
            }
        }
    }
}

mod answer_order;
mod cname_chains;
mod completeness;
mod dual_stack;
mod forget_clients;
mod libc_lookups;
mod resolvers;
mod shared_names;
mod srv_per_client;
mod stale_host_wide;
mod waiting_flows;
mod window;
mod wording;
