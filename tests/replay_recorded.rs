//! Replays of real traffic recorded in network namespaces by
//! `cargo xtask record-captures` (xtask/src/record.rs has the plan: dnsmasq
//! answers, `dig` lookups and `curl` connections from 198.51.100.10 and
//! 2001:db8:100::10). The same traffic was captured six ways; every one
//! must give the report the plan and the spec predict.

mod common;
use common::*;

const CAPTURES: [&str; 6] = [
    "recorded/veth.pcap",
    "recorded/veth-nano.pcap",
    "recorded/veth.pcapng",
    "recorded/veth.snoop",
    "recorded/any-sll.pcap",
    "recorded/any-sll2.pcap",
];

#[test]
fn every_capture_format_gives_the_planned_report() {
    for capture in CAPTURES {
        let out = replay(&[data(capture).to_str().unwrap()]);
        assert!(out.status.success(), "{capture}: {}", stderr(&out));
        assert_eq!(stdout(&out), expected_default(), "{capture}");
        assert_eq!(stderr(&out), "", "{capture}: no warnings expected");
    }
}

#[test]
fn all_tcp_adds_only_the_connection_open_before_the_capture() {
    // Spec 4: with -a, the first segment of a flow not yet seen counts. The
    // plan held one connection to 203.0.113.13:80 open from before the
    // capture and used it at the end; every other connection starts inside
    // the capture, so everything else is as in the default mode.
    let want = expected_default().replace(
        "203.000.113.013:?\t0\t10\tweb.connbal.test.",
        "203.000.113.013:80\t1\t10\tweb.connbal.test.",
    );
    for capture in CAPTURES {
        let out = replay(&["-a", data(capture).to_str().unwrap()]);
        assert!(out.status.success(), "{capture}: {}", stderr(&out));
        assert_eq!(stdout(&out), want, "{capture}");
    }
}

#[test]
fn filter_matches_the_name_asked_or_the_name_credited() {
    // The client asked for alias.connbal.test, and the answer credits the
    // canonical name pool.connbal.test: `-F pool` (the name the report
    // shows) and `-F alias` (the name asked) both give its rows.
    let pcap = data("recorded/veth.pcap");
    let rows_for = |name: &str| -> String {
        expected_default()
            .lines()
            .filter(|l| l.ends_with(name))
            .flat_map(|l| [l, "\n"])
            .collect()
    };
    assert_eq!(
        stdout(&replay(&["-F", "pool", pcap.to_str().unwrap()])),
        rows_for("\tpool.connbal.test.")
    );
    assert_eq!(
        stdout(&replay(&["-F", "alias", pcap.to_str().unwrap()])),
        rows_for("\tpool.connbal.test.")
    );
    assert_eq!(
        stdout(&replay(&["--filter", "web.", pcap.to_str().unwrap()])),
        rows_for("\tweb.connbal.test.")
    );
}

#[test]
fn json_has_the_same_rows_and_the_counters() {
    let out = replay(&[
        "--format",
        "json",
        data("recorded/veth.snoop").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), expected_default().lines().count());
    let xmpp2 = rows
        .iter()
        .find(|r| r["backend"] == "203.0.113.22")
        .expect("xmpp2 row");
    assert_eq!(xmpp2["client"], "198.51.100.10");
    assert_eq!(xmpp2["port"], 5222);
    assert_eq!(xmpp2["conns"], 2);
    assert_eq!(xmpp2["dns"], 2);
    assert_eq!(xmpp2["name"], "_xmpp-client._tcp.connbal.test.");
    let unused = rows
        .iter()
        .find(|r| r["backend"] == "203.0.113.32")
        .expect("pool .32 row");
    assert_eq!(unused["port"], serde_json::Value::Null, "port ? is null");
    // The plan makes 21 lookups (10 web, xmpp SRV, xmpp2, 2 alias, 3 v6,
    // tcp, the large SRV over UDP then TCP, one); all are answered, but the
    // truncated UDP answer is ignored: 20 matched. 23 SYNs: 21 curl
    // connections and the two dig-over-TCP connections.
    let c = &json["counters"];
    assert_eq!(
        (
            c["queries_tracked"].as_u64(),
            c["responses_matched"].as_u64()
        ),
        (Some(21), Some(20))
    );
    assert_eq!(c["ignored_truncated_responses"], 1);
    assert_eq!(c["connection_attempts"], 23);
    assert_eq!(c["dns_messages"], 42);
    assert_eq!(json["input"]["malformed_packets_skipped"], 0);
    assert!(json["input"]["packets"].as_u64().unwrap() > 38);
    assert_eq!(json["error"], serde_json::Value::Null);
}

#[test]
fn verbose_prints_counters_to_stderr_only() {
    let out = replay(&["-v", data("recorded/veth.pcap").to_str().unwrap()]);
    assert_eq!(stdout(&out), expected_default());
    let err = stderr(&out);
    for counter in [
        "packets: ",
        "dns_messages: 42",
        "unmatched_responses: 0",
        "malformed_packets_skipped: 0",
        "malformed_dns_skipped: 0",
    ] {
        assert!(err.contains(counter), "{counter} missing from:\n{err}");
    }
}

#[test]
fn a_pipe_gives_the_same_report_as_the_file() {
    for capture in CAPTURES {
        let bytes = std::fs::read(data(capture)).unwrap();
        assert_eq!(
            stdout(&replay_stdin(&["-"], &bytes)),
            expected_default(),
            "{capture} via -"
        );
        assert_eq!(
            stdout(&replay_stdin(&[], &bytes)),
            expected_default(),
            "{capture} via no argument"
        );
    }
}

/// `--events`: one JSON line per matched answer and per connection attempt
/// on stdout, in capture order, agreeing with the report (now on stderr).
#[test]
fn events_agree_with_the_report() {
    use std::collections::HashMap;
    let out = replay(&[
        "--events",
        "--format",
        "json",
        data("recorded/veth.pcap").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stderr(&out)).expect("JSON report");
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in capture order");

    // Connections to known backends, per (backend, port), equal the rows.
    let mut conns: HashMap<(String, u64), u64> = HashMap::new();
    let mut unknown = 0;
    for e in events.iter().filter(|e| e["event"] == "connection") {
        assert_eq!(e["midstream"], false);
        if e["name"].is_null() {
            unknown += 1;
            continue;
        }
        let key = (
            e["backend"].as_str().unwrap().to_string(),
            e["port"].as_u64().unwrap(),
        );
        *conns.entry(key).or_default() += 1;
    }
    let mut expected: HashMap<(String, u64), u64> = HashMap::new();
    for row in report["rows"].as_array().unwrap() {
        if let (Some(port), Some(n @ 1..)) = (row["port"].as_u64(), row["conns"].as_u64()) {
            expected.insert((row["backend"].as_str().unwrap().to_string(), port), n);
        }
    }
    assert_eq!(conns, expected);
    // Attempts to addresses never in DNS (the DNS server's TCP port for the
    // retried lookups, and the plan's two addresses outside any answer)
    // show with a null name.
    assert_eq!(unknown, 4);

    // Answers that named backends, per name, equal the services' lookups
    // for names asked with one question type.
    let answers_for = |name: &str| {
        events
            .iter()
            .filter(|e| e["event"] == "dns_answer")
            .filter(|e| {
                e["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["name"] == name)
            })
            .count() as u64
    };
    for service in report["services"].as_array().unwrap() {
        let name = service["name"].as_str().unwrap();
        if name == "web.connbal.test." || name == "pool.connbal.test." {
            assert_eq!(
                answers_for(name),
                service["lookups"].as_u64().unwrap(),
                "{name}"
            );
        }
    }
    assert_eq!(answers_for("web.connbal.test."), 10);
}

/// The capture filter the README and `replay --help` give for
/// `tcpdump -w - FILTER | connbal replay -`. libpcap's `tcp[tcpflags]`
/// reads IPv4 only, so IPv6 connection attempts are matched by hand: next
/// header TCP (6) and, 40 + 13 bytes in, SYN or RST: attempts, and the
/// SYN-ACKs and resets that tell what became of them.
const PIPELINE_FILTER: &str =
    "port 53 or tcp[tcpflags] & (tcp-syn|tcp-rst) != 0 or (ip6[6] == 6 and ip6[53] & 0x06 != 0)";

/// Runs the recorded capture through `tcpdump -r … -w - FILTER` and returns
/// connbal's report of what came out.
fn through_tcpdump(filter: &str) -> String {
    through_tcpdump_as(filter, "tsv")
}

fn through_tcpdump_as(filter: &str, format: &str) -> String {
    let capture = data("recorded/veth.pcap");
    let tcpdump = std::process::Command::new("tcpdump")
        .args(["-r"])
        .arg(&capture)
        .args(["-w", "-", filter])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("run tcpdump");
    assert!(tcpdump.status.success());
    stdout(&replay_stdin(&["--format", format], &tcpdump.stdout))
}

#[test]
fn the_documented_tcpdump_filter_keeps_ipv6_connection_attempts() {
    if !tools_available(&["tcpdump"]) {
        return;
    }
    let readme = std::fs::read_to_string(data("../../README.md")).unwrap();
    assert!(
        readme.contains(PIPELINE_FILTER),
        "the README gives this filter"
    );
    let whole = stdout(&replay(&[
        "--format",
        "tsv",
        data("recorded/veth.pcap").to_str().unwrap(),
    ]));
    assert!(whole.contains("[2001:db8:200::1]:443\t2\t"), "{whole}");
    assert_eq!(through_tcpdump(PIPELINE_FILTER), whole);
    // The attempts' outcomes (and every verdict) survive the filter too.
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let whole_json = json(&stdout(&replay(&[
        "--format",
        "json",
        data("recorded/veth.pcap").to_str().unwrap(),
    ])));
    let filtered_json = json(&through_tcpdump_as(PIPELINE_FILTER, "json"));
    assert!(whole_json["rows"][0]["outcomes"].is_object());
    assert_eq!(filtered_json["rows"], whole_json["rows"]);
    assert_eq!(filtered_json["services"], whole_json["services"]);
    // The filter it replaces lost them: IPv4-only tcp[tcpflags].
    let naive = through_tcpdump("udp port 53 or tcp port 53 or tcp[tcpflags] == tcp-syn");
    assert!(!naive.contains("[2001:db8:200::1]:443\t2\t"), "{naive}");
}

/// A name whose answer changed mid-run (dnsmasq reloaded without
/// 203.0.113.61) and a client that connected to the dropped address after
/// looking up again: the one stale backend, and everything else balanced.
#[test]
fn the_failover_capture_names_its_stale_backend() {
    let out = replay(&[
        "--format",
        "json",
        data("recorded/failover.pcap").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    check_failover_report(&json, true);
}

#[test]
fn the_summary_under_a_filter_counts_the_filtered_names_answers_and_attempts() {
    // `-F web` is about web's answers and the attempts that followed
    // them, out of every attempt seen: the same filter for both numbers.
    let pcap = data("recorded/veth.pcap");
    let pcap = pcap.to_str().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&replay(&["-F", "web", "--format", "json", pcap]))).unwrap();
    let connections: u64 = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .sum();
    let table = stdout(&replay(&["-F", "web", "--format", "table", pcap]));
    let summary = table.lines().last().unwrap();
    let want = format!(
        "289 packets, {} DNS answers for -F web, {connections} connection attempts to their backends (of {}) in",
        json["counters"]["responses_matched"], json["counters"]["connection_attempts"],
    );
    assert!(summary.starts_with(&want), "{summary}\nwant: {want}");
    assert!(connections < json["counters"]["connection_attempts"].as_u64().unwrap());
}
