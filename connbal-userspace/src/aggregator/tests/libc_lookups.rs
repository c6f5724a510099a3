//! Lookups seen in libc's getaddrinfo (host mode): counted once, with no
//! TTL (docs/semantics.md section 3, "Lookups in libc").

use super::*;
use std::net::IpAddr;
use verdict::{Check, Finding};

fn app(tid: u32) -> Owner {
    let mut command = [0u8; 16];
    command[..4].copy_from_slice(b"java");
    Owner {
        cgroup: client::cgroup(7, Some("/app")),
        socket: 0,
        process: Some(Process {
            tgid: 100,
            pid: tid,
            command,
            netns_cookie: 1,
        }),
    }
}

fn host_mode() -> Harness {
    Harness::with(Config {
        by: ClientBy::App,
        match_sockets: true,
        ..Config::default()
    })
}

const BACKENDS: [&str; 2] = ["10.0.0.1", "10.0.0.2"];

impl Harness {
    /// A getaddrinfo call by `owner`'s thread that began `took_ms` ago.
    fn libc_lookup(&mut self, owner: &Owner, name: &str, took_ms: u64) {
        let addresses: Vec<IpAddr> = BACKENDS.iter().map(|a| a.parse().unwrap()).collect();
        let ts = self.ts();
        self.agg.process(&Event::Lookup(Lookup {
            ts,
            started: Timestamp(ts.0 - took_ms * 1_000_000),
            name,
            addresses: &addresses,
            owner: Some(owner),
        }));
        self.advance_ms(1);
    }

    fn owned_syn(&mut self, owner: &Owner, backend: &str) {
        self.next_port = self.next_port.wrapping_add(1);
        let event = Event::Tcp(Segment {
            ts: self.ts(),
            src: sock(CLIENT, self.next_port),
            dst: sock(backend, 443),
            flags: SYN,
            seq: 1,
            payload: &[],
            truncated: false,
            ack: None,
            first_of_flow: None,
            owner: Some(owner),
        });
        self.agg.process(&event);
        self.advance_ms(1);
    }

    /// A query from `owner`'s socket and its matched answer.
    fn owned_exchange(&mut self, owner: &Owner, id: u16, name: &str) {
        let query = MessageBuilder::new(id, false, [1, 0, 0, 0])
            .question(name, TYPE_A)
            .build();
        let mut answer = MessageBuilder::new(id, true, [1, 2, 0, 0]);
        answer.ttl(30).question(name, TYPE_A);
        answer.a(name, [10, 0, 0, 1]).a(name, [10, 0, 0, 2]);
        let answer = answer.build();
        let (client, server) = (sock(CLIENT, CLIENT_PORT), sock("127.0.0.1", 53));
        for (src, dst, payload) in [(client, server, &query), (server, client, &answer)] {
            self.agg.process(&Event::Udp(Datagram {
                ts: self.ts(),
                src,
                dst,
                payload,
                truncated: false,
                owner: Some(owner),
            }));
            self.advance_ms(1);
        }
    }
}

/// nss-resolve: no DNS packet leaves the app, and its lookups and
/// connections are still its own, with no TTL to judge them by.
#[test]
fn lookups_that_never_became_dns_are_the_app_s_with_no_ttl() {
    let mut h = host_mode();
    let java = app(101);
    for round in 0..3 {
        h.libc_lookup(&java, "web.svc.example", 2);
        for i in 0..4 {
            h.owned_syn(&java, BACKENDS[(round + i) % 2]);
        }
    }
    let s = h.service("web.svc.example");
    assert_eq!(s.client.to_string(), "java in /app");
    assert_eq!((s.lookups, s.connections, s.backends_used), (3, 12, 2));
    assert_eq!((s.ttl_min_secs, s.ttl_max_secs), (None, None));
    assert_eq!(check_of(&s, Check::Ttl).finding, Finding::TtlUnknown);
    assert_eq!(
        check_of(&s, Check::UnusedBackends).finding,
        Finding::AllUsed
    );
    let c = h.counters();
    assert_eq!((c.libc_lookups, c.libc_lookups_seen_as_dns), (3, 0));
}

/// A call that went over DNS (through a stub on loopback, say) was
/// counted at its answer; its return counts nothing more. Another thread's
/// call at the same moment, answered otherwise, still counts.
#[test]
fn a_call_whose_answer_reached_its_thread_counts_once() {
    let mut h = host_mode();
    let (caller, other) = (app(101), app(102));
    h.owned_exchange(&caller, 5, "web.svc.example");
    h.libc_lookup(&caller, "web.svc.example", 5);
    assert_eq!(h.service("web.svc.example").lookups, 1);
    let c = h.counters();
    assert_eq!((c.libc_lookups, c.libc_lookups_seen_as_dns), (0, 1));
    h.libc_lookup(&other, "web.svc.example", 5);
    assert_eq!(h.counters().libc_lookups, 1);
    // The caller's next call began after that answer: a cache answered it.
    h.advance_ms(1000);
    h.libc_lookup(&caller, "web.svc.example", 5);
    assert_eq!(h.counters().libc_lookups, 2);
}

/// A numeric host is no lookup; `--by ip` has no address to credit a call
/// to; a caller with no process known cannot be matched to its answers.
#[test]
fn calls_that_cannot_be_credited_are_skipped_and_counted() {
    let mut h = host_mode();
    h.libc_lookup(&app(101), "10.0.0.1", 1);
    let mut bare = app(101);
    bare.process = None;
    h.libc_lookup(&bare, "web.svc.example", 1);
    let mut by_ip = Harness::with(Config::default());
    by_ip.libc_lookup(&app(101), "web.svc.example", 1);
    assert_eq!(h.counters().libc_lookups_skipped, 2);
    assert_eq!(by_ip.counters().libc_lookups_skipped, 1);
    assert!(h.agg.report().services.is_empty());
    assert!(by_ip.agg.report().services.is_empty());
}

impl Harness {
    /// systemd-resolved's answer for `name`, as its monitor streams it.
    fn resolver_answer(&mut self, name: &str, ttl: u32) {
        let addresses: Vec<IpAddr> = BACKENDS.iter().map(|a| a.parse().unwrap()).collect();
        self.agg.process(&Event::ResolverAnswer(ResolverAnswer {
            ts: self.ts(),
            name,
            ttl,
            addresses: &addresses,
        }));
    }
}

/// nss-resolve with systemd-resolved's monitor: each call takes the TTL of
/// resolved's answer to it, and asking it before every connection is the
/// recommended setup (a cache on the host), not a client re-resolving too
/// often. An answer for another name, or long before, gives nothing.
#[test]
fn calls_answered_by_systemd_resolved_take_its_ttl() {
    let mut h = host_mode();
    let java = app(101);
    for i in 0..4 {
        h.resolver_answer("web.svc.example", 30);
        h.libc_lookup(&java, "web.svc.example", 2);
        h.owned_syn(&java, BACKENDS[i % 2]);
    }
    let s = h.service("web.svc.example");
    assert_eq!((s.lookups, s.lookups_within_ttl), (4, 3));
    assert_eq!((s.ttl_min_secs, s.ttl_max_secs), (Some(30), Some(30)));
    let ttl = check_of(&s, Check::Ttl);
    assert_eq!(ttl.finding, Finding::ThroughLocalResolver);
    assert!(ttl.text.contains("without DNS"), "{}", ttl.text);
    assert_eq!(h.counters().libc_lookups_given_a_ttl, 4);

    h.resolver_answer("other.example", 30);
    h.libc_lookup(&java, "api.svc.example", 2);
    h.resolver_answer("late.example", 30);
    h.advance_ms(5_000);
    h.libc_lookup(&java, "late.example", 2);
    assert_eq!(h.counters().libc_lookups_given_a_ttl, 4);
}

/// `--events`: a lookup seen in getaddrinfo is a DNS answer event of its
/// own question type, from no server, naming the caller's thread and the
/// backends it credited; one that went over DNS is that answer's event
/// alone.
#[test]
fn events_show_a_libc_lookup_once_with_its_thread() {
    let mut h = Harness::with(Config {
        by: ClientBy::App,
        match_sockets: true,
        events: true,
        ..Config::default()
    });
    let java = app(101);
    h.libc_lookup(&java, "web.svc.example", 2);
    h.owned_exchange(&java, 7, "api.svc.example");
    h.libc_lookup(&java, "api.svc.example", 5);
    let events: Vec<serde_json::Value> = h
        .agg
        .take_observations()
        .map(|o| serde_json::to_value(&o).unwrap())
        .collect();
    let answers: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| e["event"] == "dns_answer")
        .map(|e| {
            (
                e["question"].as_str().unwrap(),
                e["qtype"].as_str().unwrap(),
                e["server"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        answers,
        [
            ("web.svc.example.", "getaddrinfo", "0.0.0.0"),
            ("api.svc.example.", "A", "127.0.0.1"),
        ],
        "{events:?}"
    );
    let first = &events[0];
    assert_eq!((&first["pid"], &first["tid"]), (&100.into(), &101.into()));
    assert_eq!(first["backends"].as_array().unwrap().len(), 2, "{first}");
}
