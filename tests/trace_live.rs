//! `connbal trace` against real traffic, as root, in network namespaces:
//! dnsmasq answers, dig and curl in the client namespace make the plan in
//! xtask/src/record.rs, and `connbal trace` runs in the client namespace on
//! its veth. tcpdump records the same traffic at the same time, and
//! `connbal replay` of that capture must give the identical report: the
//! proof that both modes share one aggregator and that the kernel filter
//! drops nothing that matters.
//!
//! These tests share one kernel, so they run one at a time.

mod common;
use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use xtask::lab::{Lab, SERVER_V4};
use xtask::record;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const TOOLS: &[&str] = &[
    "ip", "dnsmasq", "dig", "curl", "tcpdump", "bpftool", "tc", "python3", "nft",
];
const WAIT: Duration = Duration::from_secs(20);

/// Starts `connbal trace --iface <client veth> ARGS` in the client
/// namespace and waits until it says it is attached.
fn start_trace(lab: &Lab, args: &[&str]) -> Trace {
    let mut command = lab.client(env!("CARGO_BIN_EXE_connbal"));
    command
        .args(["trace", "--iface", &lab.client_if])
        .args(args);
    Trace::spawn(command)
}

/// Live tests need root and the tools; they hold the lock for their run.
fn live() -> Option<std::sync::MutexGuard<'static, ()>> {
    live_tests(&ONE_AT_A_TIME, TOOLS)
}

fn expected_all_tcp() -> String {
    expected_default().replace("203.000.113.013:?\t0\t10\t", "203.000.113.013:80\t1\t10\t")
}

/// Ids of TCX links whose program is connbal's.
fn connbal_tcx_links() -> Vec<u64> {
    let progs = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool prog show");
    let progs: serde_json::Value = serde_json::from_slice(&progs.stdout).expect("bpftool JSON");
    let ours: Vec<u64> = progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "connbal_tc")
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let links = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("bpftool link show");
    let links: serde_json::Value = serde_json::from_slice(&links.stdout).expect("bpftool JSON");
    links
        .as_array()
        .unwrap()
        .iter()
        // bpftool 7.1 predates the name and prints BPF_LINK_TYPE_TCX as 11.
        .filter(|l| {
            (l["type"] == "tcx" || l["type"] == 11)
                && l["prog_id"].as_u64().is_some_and(|id| ours.contains(&id))
        })
        .filter_map(|l| l["id"].as_u64())
        .collect()
}

fn netlink_filters(lab: &Lab, direction: &str) -> String {
    let out = lab
        .client("tc")
        .args(["filter", "show", "dev", &lab.client_if, direction])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn live_trace_and_replay_of_tcpdump_give_the_identical_report() {
    let Some(_guard) = live() else { return };
    let mut lab = record::prepare_lab().expect("lab");
    let held = lab
        .hold_connection(record::HELD.parse().unwrap())
        .expect("held connection");
    // Two traces on the same interface at once: both must work.
    let plain = start_trace(&lab, &[]);
    let all_tcp = start_trace(&lab, &["-a", "--format", "json"]);
    let capture = lab.dir.join("live.pcap");
    let client_if = lab.client_if.clone();
    let tcpdump = lab
        .start_tcpdump(&client_if, &capture, &[])
        .expect("tcpdump");
    for step in record::plan() {
        record::run_step(&lab, &step).expect("plan step");
    }
    held.release().expect("release held connection");
    std::thread::sleep(Duration::from_millis(300));
    lab.interrupt(tcpdump).expect("stop tcpdump");
    let plain = plain.stop("-INT");
    let all_tcp = all_tcp.stop("-TERM");

    // The live report is the plan's, line for line (see tests/common for
    // why each line is what it is)...
    assert!(plain.status.success(), "{}", plain.stderr);
    assert_eq!(plain.stdout, expected_default(), "stderr: {}", plain.stderr);
    assert!(!plain.stderr.contains("lost"), "{}", plain.stderr);
    // ...and replay of what tcpdump saw gives the identical report.
    let replayed = replay(&[capture.to_str().unwrap()]);
    assert_eq!(stdout(&replayed), plain.stdout);

    // With -a the kernel's flow table catches the connection held open
    // since before the trace started; SIGTERM still prints the report.
    assert!(all_tcp.status.success(), "{}", all_tcp.stderr);
    let json: serde_json::Value = serde_json::from_str(&all_tcp.stdout).expect("JSON report");
    let mut tsv = Vec::new();
    let rows: Vec<connbal::aggregator::Row> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| connbal::aggregator::Row {
            client: r["client"].as_str().unwrap().parse().unwrap(),
            backend: r["backend"].as_str().unwrap().parse().unwrap(),
            port: r["port"].as_u64().map(|p| p as u16),
            conns: r["conns"].as_u64().unwrap(),
            dns: r["dns"].as_u64().unwrap(),
            name: r["name"].as_str().unwrap().into(),
            outcomes: None,
            srv: serde_json::from_value(r["srv"].clone()).unwrap(),
            first_in_answers: r["first_in_answers"].as_u64().unwrap(),
            first_name: None,
            address_dns: 0,
        })
        .collect();
    connbal::output::write_tsv_rows(&mut tsv, &rows).unwrap();
    assert_eq!(String::from_utf8(tsv).unwrap(), expected_all_tcp());
    assert_eq!(
        stdout(&replay(&["-a", capture.to_str().unwrap()])),
        expected_all_tcp()
    );
    assert_eq!(json["interrupted"], true);
    assert_eq!(json["input"]["kernel"]["records_lost"], 0);
    assert!(
        json["input"]["kernel"]["packets_seen"].as_u64().unwrap()
            > json["input"]["records"].as_u64().unwrap()
    );
}

#[test]
fn kill_9_leaves_no_tcx_link_behind() {
    let Some(_guard) = live() else { return };
    let lab = Lab::new().expect("lab");
    let before = connbal_tcx_links();
    let trace = start_trace(&lab, &["--attach", "tcx"]);
    let during = connbal_tcx_links();
    assert_eq!(
        during.len(),
        before.len() + 2,
        "ingress and egress links while tracing"
    );
    trace.signal("-KILL");
    let finished = trace.wait();
    assert!(!finished.status.success());
    wait_until(
        Duration::from_secs(5),
        || connbal_tcx_links().len() == before.len(),
        || format!("TCX links survived kill -9: {:?}", connbal_tcx_links()),
    );
}

#[test]
fn netlink_filters_left_by_kill_9_are_removed_at_the_next_start() {
    let Some(_guard) = live() else { return };
    let lab = Lab::new().expect("lab");
    let trace = start_trace(&lab, &["--attach", "netlink"]);
    assert!(netlink_filters(&lab, "ingress").contains("connbal_tc"));
    assert!(netlink_filters(&lab, "egress").contains("connbal_tc"));
    trace.signal("-KILL");
    let _ = trace.wait();
    // Netlink filters outlive the process (unlike TCX links)...
    assert!(
        netlink_filters(&lab, "ingress").contains("connbal_tc"),
        "expected a stale filter to test the cleanup on"
    );
    // ...so the next connbal (here in the default mode) removes them.
    let next = start_trace(&lab, &["--duration", "1s"]).wait();
    assert!(next.status.success(), "{}", next.stderr);
    assert!(
        !netlink_filters(&lab, "ingress").contains("connbal_tc"),
        "{}",
        netlink_filters(&lab, "ingress")
    );
    assert!(!netlink_filters(&lab, "egress").contains("connbal_tc"));

    // A normal exit in netlink mode leaves nothing either.
    let clean = start_trace(&lab, &["--attach", "netlink", "--duration", "1s"]).wait();
    assert!(clean.status.success(), "{}", clean.stderr);
    assert!(!netlink_filters(&lab, "ingress").contains("connbal_tc"));
}

fn qdiscs(lab: &Lab) -> String {
    let out = lab
        .client("tc")
        .args(["qdisc", "show", "dev", &lab.client_if])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lock files of this lab's client interface in /run/connbal.
fn lock_files(lab: &Lab) -> Vec<String> {
    let suffix = format!("-{}.lock", lab.client_if);
    std::fs::read_dir("/run/connbal")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(&suffix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn netlink_mode_removes_the_clsact_qdisc_it_added_and_only_that() {
    let Some(_guard) = live() else { return };
    let lab = Lab::new().expect("lab");
    assert!(!qdiscs(&lab).contains("clsact"), "{}", qdiscs(&lab));

    // Two runs overlap: the first to leave keeps the qdisc the second's
    // filters hang on; the last removes it, and the lock file.
    let first = start_trace(&lab, &["--attach", "netlink"]);
    let second = start_trace(&lab, &["--attach", "netlink"]);
    assert!(qdiscs(&lab).contains("clsact"));
    let finished = first.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(qdiscs(&lab).contains("clsact"), "{}", qdiscs(&lab));
    assert!(netlink_filters(&lab, "ingress").contains("connbal_tc"));
    let finished = second.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(!qdiscs(&lab).contains("clsact"), "{}", qdiscs(&lab));
    assert_eq!(lock_files(&lab), Vec::<String>::new());
    // The last one out leaves no empty /run/connbal either (the tests of
    // this binary run one at a time, so no other lock is expected).
    assert!(
        !std::path::Path::new("/run/connbal").exists(),
        "{:?}",
        std::fs::read_dir("/run/connbal").map(Iterator::count)
    );

    // Killed, it leaves qdisc and filters; the next run (TCX) removes both.
    let killed = start_trace(&lab, &["--attach", "netlink"]);
    killed.signal("-KILL");
    let _ = killed.wait();
    assert!(qdiscs(&lab).contains("clsact"));
    let next = start_trace(&lab, &["--duration", "1s"]).wait();
    assert!(next.status.success(), "{}", next.stderr);
    assert!(!qdiscs(&lab).contains("clsact"), "{}", qdiscs(&lab));
    assert_eq!(lock_files(&lab), Vec::<String>::new());

    // A clsact qdisc that was there before, with someone else's filter on
    // it, is left as it was.
    let tc = |args: &[&str]| {
        let out = lab.client("tc").args(args).output().unwrap();
        assert!(out.status.success(), "tc {args:?}: {out:?}");
    };
    tc(&["qdisc", "add", "dev", &lab.client_if, "clsact"]);
    // u32 with a classid and no action: cls_u32 is built in where action
    // modules and matchall may not be.
    tc(&[
        "filter",
        "add",
        "dev",
        &lab.client_if,
        "ingress",
        "protocol",
        "all",
        "u32",
        "match",
        "u32",
        "0",
        "0",
        "classid",
        "1:1",
    ]);
    let finished = start_trace(&lab, &["--attach", "netlink", "--duration", "1s"]).wait();
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(qdiscs(&lab).contains("clsact"), "{}", qdiscs(&lab));
    assert!(netlink_filters(&lab, "ingress").contains("u32"));
    assert!(!netlink_filters(&lab, "ingress").contains("connbal_tc"));
}

#[test]
fn an_overfilled_small_ring_counts_and_reports_its_drops() {
    let Some(_guard) = live() else { return };
    let mut lab = Lab::new().expect("lab");
    // Two addresses: the answers that do arrive make a service to judge.
    lab.start_dnsmasq(
        "203.0.113.11 web.connbal.test\n203.0.113.12 web.connbal.test\n",
        &[],
    )
    .expect("dnsmasq");
    // One page: room for a single DNS record at a time.
    let trace = start_trace(&lab, &["--ring-size", "4096", "--format", "json"]);
    let to = SocketAddr::from((SERVER_V4, 53));
    let sent = lab
        .flood_udp(
            to,
            &xtask::gen::dns_query(7, "web.connbal.test", 1),
            20_000,
            Duration::from_secs(5),
        )
        .expect("flood");
    assert!(sent > 1000, "only {sent} packets sent");
    std::thread::sleep(Duration::from_millis(300));
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    let json: serde_json::Value = serde_json::from_str(&finished.stdout).expect("JSON report");
    let lost = json["input"]["kernel"]["records_lost"].as_u64().unwrap();
    assert!(lost > 0, "no drops with a one-page ring: {json}");
    assert!(
        finished
            .stderr
            .contains(&format!("connbal: warning: {lost} records lost")),
        "{}",
        finished.stderr
    );
    // The report still came out, covering what did arrive.
    assert!(json["input"]["records"].as_u64().unwrap() > 0);
    // And every verdict says it may be wrong, and why, so that an alert
    // can leave it out.
    let services = json["services"].as_array().unwrap();
    assert!(!services.is_empty(), "{json}");
    for service in services {
        for verdict in service["verdicts"].as_array().unwrap() {
            assert_eq!(verdict["complete"], false, "{verdict}");
            assert_eq!(verdict["incomplete"]["reason"], "records_lost", "{verdict}");
            assert!(verdict["text"].as_str().unwrap().contains("may be wrong"));
        }
    }
}

/// A DNS datagram larger than the veth's MTU leaves as IP fragments: the
/// TC program decodes none of them and counts each, and `-v` says so.
#[test]
fn ip_fragments_are_counted_not_decoded() {
    let Some(_guard) = live() else { return };
    let mut lab = Lab::new().expect("lab");
    lab.start_dnsmasq("203.0.113.11 web.connbal.test\n", &[])
        .expect("dnsmasq");
    let trace = start_trace(&lab, &["-v", "--format", "json"]);
    let mut large = xtask::gen::dns_query(7, "web.connbal.test", 1);
    // 4,000 bytes over a 1,500-byte MTU: three fragments each.
    large.resize(4000, 0);
    let to = SocketAddr::from((SERVER_V4, 53));
    let sent = lab
        .flood_udp(to, &large, 5, Duration::from_secs(5))
        .expect("send");
    assert_eq!(sent, 5);
    std::thread::sleep(Duration::from_millis(300));
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    let json: serde_json::Value = serde_json::from_str(&finished.stdout).expect("JSON report");
    assert_eq!(
        json["input"]["kernel"]["ip_fragments"].as_u64(),
        Some(15),
        "{json}"
    );
    assert!(
        finished.stderr.contains("kernel_ip_fragments: 15\n"),
        "{}",
        finished.stderr
    );
}

#[test]
fn one_of_two_interfaces_going_away_leaves_the_trace_on_the_other() {
    // A pod's veth comes and goes; the trace of the others goes on.
    let Some(_guard) = live() else { return };
    let lab = record::prepare_lab().expect("lab");
    let (extra, peer) = ("cbx0", "cbx1");
    xtask::lab::run(Command::new("ip").args([
        "-n",
        &lab.client_ns,
        "link",
        "add",
        extra,
        "type",
        "veth",
        "peer",
        "name",
        peer,
    ]))
    .expect("a second veth");
    xtask::lab::run(Command::new("ip").args(["-n", &lab.client_ns, "link", "set", extra, "up"]))
        .expect("up");
    let trace = start_trace(&lab, &["-i", extra, "--format", "json"]);
    xtask::lab::run(Command::new("ip").args(["-n", &lab.client_ns, "link", "del", extra]))
        .expect("delete the second veth");
    std::thread::sleep(Duration::from_millis(600));
    // Still tracing the first: a lookup made now is counted.
    look_up_web(&lab);
    std::thread::sleep(Duration::from_millis(300));
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains(&format!(
            "interface {extra} disappeared; still tracing {}",
            lab.client_if
        )),
        "{}",
        finished.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&finished.stdout).expect("JSON report");
    assert_eq!(json["input"]["interfaces_gone"], serde_json::json!([extra]));
    assert_eq!(
        json["counters"]["responses_matched"], 1,
        "{}",
        json["counters"]
    );
}

#[test]
fn deleting_the_interface_ends_the_trace_with_the_report() {
    let Some(_guard) = live() else { return };
    let lab = record::prepare_lab().expect("lab");
    let trace = start_trace(&lab, &[]);
    for step in record::plan().iter().take(4) {
        record::run_step(&lab, step).expect("plan step");
    }
    xtask::lab::run(Command::new("ip").args(["-n", &lab.client_ns, "link", "del", &lab.client_if]))
        .expect("delete veth");
    let finished = trace.wait();
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains(&format!("interface {} disappeared", lab.client_if)),
        "{}",
        finished.stderr
    );
    // Two lookups of web and connections to .11 and .12 were made before.
    assert!(
        finished
            .stdout
            .contains("203.000.113.011:80\t1\t2\tweb.connbal.test."),
        "{}",
        finished.stdout
    );
    assert!(
        finished
            .stdout
            .contains("203.000.113.012:80\t1\t2\tweb.connbal.test."),
        "{}",
        finished.stdout
    );
}

#[test]
fn without_privileges_it_names_the_missing_capabilities() {
    let Some(_guard) = live() else { return };
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .args([
            env!("CARGO_BIN_EXE_connbal"),
            "trace",
            "--iface",
            "lo",
            "--duration",
            "1s",
        ])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"),
        "{err}"
    );
    assert!(err.contains("sudo connbal trace"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_unknown_interface_is_a_clear_error() {
    // Checked before privileges, so this runs anywhere.
    let out = connbal()
        .args(["trace", "--iface", "nosuchif0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), "connbal: no such interface: nosuchif0\n");
}

/// `Name:\tvalue` lines of /proc/PID/status.
fn proc_status(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// `field` of every thread of process `pid`, by thread name: capabilities
/// are per thread, and /proc/PID/status shows the main thread's alone.
fn thread_status(pid: &str, field: &str) -> Vec<(String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task");
    let mut found: Vec<(String, String)> = tasks
        .flatten()
        .map(|task| {
            let tid = task.file_name().to_string_lossy().to_string();
            let status = |f: &str| proc_status(&format!("{pid}/task/{tid}"), f);
            (status("Name"), status(field))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn once_attached_the_trace_holds_no_capabilities() {
    let Some(_guard) = live() else { return };
    let lab = record::prepare_lab().expect("lab");
    // TCX: every capability goes; with --user also root.
    for args in [
        &["--attach", "tcx"][..],
        &["--attach", "tcx", "--user", "nobody"],
    ] {
        let trace = start_trace(&lab, args);
        let pid = trace.pid();
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
            assert_eq!(
                proc_status(&pid, set),
                "0000000000000000",
                "{set} with {args:?}"
            );
            // Every thread: the ring buffer's reader too.
            let threads = thread_status(&pid, set);
            assert!(threads.len() >= 2, "{threads:?}");
            assert!(
                threads.iter().all(|(_, caps)| caps == "0000000000000000"),
                "{set} with {args:?}: {threads:?}"
            );
        }
        assert_eq!(proc_status(&pid, "NoNewPrivs"), "1");
        if args.contains(&"--user") {
            assert!(
                proc_status(&pid, "Uid").starts_with("65534\t"),
                "{}",
                proc_status(&pid, "Uid")
            );
        }
        // It still works unprivileged: a lookup and a connection are counted.
        for step in record::plan().iter().take(2) {
            record::run_step(&lab, step).expect("plan step");
        }
        let finished = trace.stop("-INT");
        assert!(finished.status.success(), "{}", finished.stderr);
        assert!(
            finished
                .stdout
                .contains("203.000.113.011:80\t1\t1\tweb.connbal.test."),
            "{args:?}: {}",
            finished.stdout
        );
    }
    // Netlink: only CAP_NET_ADMIN (bit 12) stays, to remove the filters on exit.
    let trace = start_trace(&lab, &["--attach", "netlink", "--user", "nobody"]);
    assert_eq!(proc_status(&trace.pid(), "CapEff"), "0000000000001000");
    let threads = thread_status(&trace.pid(), "CapEff");
    assert!(
        threads.iter().all(|(_, caps)| caps == "0000000000001000"),
        "{threads:?}"
    );
    assert_eq!(proc_status(&trace.pid(), "CapBnd"), "0000000000001000");
    let finished = trace.stop("-TERM");
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        !netlink_filters(&lab, "ingress").contains("connbal_tc"),
        "filters removed on exit"
    );
}

#[test]
fn interval_prints_reports_while_running() {
    let Some(_guard) = live() else { return };
    let lab = record::prepare_lab().expect("lab");
    let trace = start_trace(
        &lab,
        &[
            "--interval",
            "300ms",
            "--duration",
            "2s",
            "--format",
            "json",
        ],
    );
    for step in record::plan().iter().take(2) {
        record::run_step(&lab, step).expect("plan step");
    }
    let finished = trace.wait();
    assert!(finished.status.success(), "{}", finished.stderr);
    // One JSON document per line: the periodic reports, then the final one.
    let reports: Vec<serde_json::Value> = finished
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(reports.len() >= 4, "{} reports", reports.len());
    let last = reports.last().unwrap();
    assert_eq!(last["interrupted"], false, "ended by --duration");
    let web11 = last["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["backend"] == "203.0.113.11")
        .expect("the lookup's row");
    assert_eq!(
        (web11["conns"].as_u64(), web11["dns"].as_u64()),
        (Some(1), Some(1))
    );
    // Reports are cumulative: no row count goes down from one to the next.
    let rows = |r: &serde_json::Value| r["rows"].as_array().map_or(0, Vec::len);
    assert!(reports.windows(2).all(|w| rows(&w[0]) <= rows(&w[1])));
    // Each says what it covers: from the start of the trace to its own time,
    // so the start stays and the end moves on, about 300 ms a report.
    let duration = |r: &serde_json::Value| r["span"]["duration_s"].as_f64().expect("a span");
    assert!(reports
        .windows(2)
        .all(|w| w[0]["span"]["start"] == w[1]["span"]["start"]
            && w[0]["span"]["end"].as_str() <= w[1]["span"]["end"].as_str()));
    assert!(
        (0.2..1.0).contains(&duration(&reports[0])),
        "{}",
        reports[0]["span"]
    );
    assert!((1.9..3.0).contains(&duration(last)), "{}", last["span"]);
}

/// The report's rows with connections, as (backend, port, conns, name).
fn connected_rows(tsv: &str) -> Vec<(String, String, u64, String)> {
    tsv.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let (backend, port) = f[1].rsplit_once(':')?;
            let conns: u64 = f[2].parse().ok()?;
            // Back from the zero-padded report form to plain addresses.
            let backend: std::net::IpAddr = if let Some(v6) = backend.strip_prefix('[') {
                v6.trim_end_matches(']').parse().ok()?
            } else {
                let octets: Vec<u8> = backend.split('.').map(|o| o.parse().unwrap()).collect();
                std::net::IpAddr::from([octets[0], octets[1], octets[2], octets[3]])
            };
            (conns > 0).then(|| {
                (
                    backend.to_string(),
                    port.to_string(),
                    conns,
                    f[4].to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn events_and_metrics_follow_a_live_trace() {
    let Some(_guard) = live() else { return };
    let lab = record::prepare_lab().expect("lab");
    let trace = start_trace(
        &lab,
        &["--events", "--format", "tsv", "--metrics", "127.0.0.1:9464"],
    );
    assert!(
        trace
            .stderr_seen
            .iter()
            .any(|l| l.contains("metrics at http://127.0.0.1:9464/metrics")),
        "{:?}",
        trace.stderr_seen
    );
    for step in record::plan() {
        record::run_step(&lab, &step).expect("plan step");
    }
    std::thread::sleep(Duration::from_millis(300));
    // A real HTTP client, in the namespace the trace runs in.
    let curl = |path: &str| {
        let out = lab
            .client("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code} %{content_type}",
            ])
            .arg(format!("http://127.0.0.1:9464{path}"))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let metrics = curl("/metrics");
    let missing = curl("/nothing-here");
    // A DaemonSet's probes.
    assert_eq!(curl("/healthz"), "ok\n\n200 text/plain; charset=utf-8");
    assert_eq!(curl("/readyz"), "ready\n\n200 text/plain; charset=utf-8");
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);

    // With --events the report goes to stderr, and is the plan's.
    let report: String = finished
        .stderr
        .lines()
        .filter(|l| !l.starts_with("connbal:") && !l.is_empty())
        .flat_map(|l| [l, "\n"])
        .collect();
    assert_eq!(report, expected_default());
    let expected = connected_rows(&report);
    assert!(!expected.is_empty());

    // Events: one JSON line each; connections to known backends add up to
    // the report's counts.
    let mut seen = std::collections::HashMap::<(String, String), u64>::default();
    let mut answers = 0;
    for line in finished.stdout.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        match e["event"].as_str().unwrap() {
            "connection" if !e["name"].is_null() => {
                *seen
                    .entry((e["backend"].as_str().unwrap().into(), e["port"].to_string()))
                    .or_default() += 1;
            }
            "dns_answer" => answers += 1,
            _ => {}
        }
    }
    for (backend, port, conns, _) in &expected {
        assert_eq!(
            seen.get(&(backend.clone(), port.clone())),
            Some(conns),
            "{backend}:{port}"
        );
    }
    assert!(answers >= 10, "{answers} answers");

    // Metrics: OpenMetrics, one series per row, the verdicts, the kernel's
    // counters.
    assert!(
        metrics
            .ends_with("# EOF\n\n200 application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{metrics}"
    );
    for (backend, port, conns, name) in &expected {
        let series = format!(
            "connbal_connections_total{{client=\"198.51.100.10\",server_address=\"{backend}\",server_port=\"{port}\",dns_question_name=\"{name}\"}} {conns}\n"
        );
        let series = series.replace(
            "client=\"198.51.100.10\",server_address=\"2001",
            "client=\"2001:db8:100::10\",server_address=\"2001",
        );
        assert!(metrics.contains(&series), "missing {series}in\n{metrics}");
    }
    assert!(metrics.contains(
        "connbal_service_verdict_ok{client=\"198.51.100.10\",dns_question_name=\"web.connbal.test.\",check=\"ttl\"} 0\n"
    ), "{metrics}");
    assert!(metrics.contains("connbal_input_events_total{counter=\"kernel_records_lost\"} 0\n"));
    assert!(metrics.contains("connbal_metrics_folded_series 0\n"));
    assert!(
        metrics.contains(&format!(
            "connbal_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    assert!(
        missing.ends_with("404 text/plain; charset=utf-8"),
        "{missing}"
    );
}

#[test]
fn interval_redraws_the_table_in_place_on_a_terminal() {
    let Some(_guard) = live() else { return };
    if !tools_available(&["tmux"]) {
        return;
    }
    let lab = record::prepare_lab().expect("lab");
    let pane = Tmux::run(&format!(
        "ip netns exec {} {} trace --iface {} --interval 300ms --duration 4s",
        lab.client_ns,
        shell_quote(std::path::Path::new(env!("CARGO_BIN_EXE_connbal"))),
        lab.client_if
    ));
    let attached = pane.watch(WAIT, |s| {
        s.contains("connbal: tracing") || s.contains("no lookup with several backends")
    });
    assert!(
        attached.last().unwrap().contains("connbal: tracing")
            || attached
                .last()
                .unwrap()
                .contains("no lookup with several backends"),
        "{}",
        attached.last().unwrap()
    );
    for step in record::plan().iter().take(4) {
        record::run_step(&lab, step).expect("plan step");
    }
    pane.finished(false);
    let screen = pane.capture_visible();
    // Printed one after another, the ~13 reports would fill the screen with
    // repeated client headers; redrawn, one table is left.
    assert_eq!(
        screen.matches("client 198.51.100.10").count(),
        1,
        "{screen}"
    );
    assert!(screen.contains("  web.connbal.test.  "), "{screen}");
}

/// `-i eth0 -i eth0` is one interface: attached once, not a second attach
/// that the kernel refuses.
#[test]
fn naming_an_interface_twice_traces_it_once() {
    let Some(_guard) = live() else { return };
    let lab = Lab::new().expect("lab");
    let client_if = lab.client_if.clone();
    let trace = start_trace(&lab, &["--iface", &client_if]);
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    assert_eq!(
        finished.stderr.matches(&client_if).count(),
        1,
        "listed once: {}",
        finished.stderr
    );
}

/// One lookup of web.connbal.test (four A records) from the client.
fn look_up_web(lab: &Lab) {
    let dig = lab
        .client("dig")
        .args([&format!("@{SERVER_V4}"), "+short", "web.connbal.test"])
        .output()
        .expect("dig");
    assert!(dig.status.success());
}

/// `connbal trace` on the lab's client interface as the user nobody, with
/// CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON and nothing else: what the
/// README's setcap install gives.
fn capabilities_only(lab: &Lab) -> Command {
    let mut command = lab.client("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+net_admin,+perfmon",
            "--ambient-caps=+bpf,+net_admin,+perfmon",
            "--bounding-set=-all,+bpf,+net_admin,+perfmon",
        ])
        .args([env!("CARGO_BIN_EXE_connbal"), "trace", "--iface"])
        .args([&lab.client_if, "--format", "tsv"]);
    command
}

/// The capabilities the README and the error name are enough: an
/// unprivileged user with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (and
/// nothing else) traces, and sees a lookup made meanwhile.
#[test]
fn the_documented_capabilities_are_enough_without_root() {
    let Some(_guard) = live() else { return };
    let lab = record::prepare_lab().expect("lab");
    let trace = Trace::spawn(capabilities_only(&lab));
    look_up_web(&lab);
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    let report = finished.stdout;
    assert_eq!(
        report
            .lines()
            .filter(|l| l.ends_with("web.connbal.test."))
            .count(),
        4,
        "the lookup's four backends: {report}"
    );
}

/// Run as the README's capabilities-only install runs it, connbal's
/// handles (BPF links, the ring buffer) cannot be taken by another process
/// of the same user: with every capability dropped it would otherwise be
/// ptrace-accessible to them (/proc/PID/fd, pidfd_getfd).
#[test]
fn another_process_of_the_same_user_cannot_take_its_handles() {
    let Some(_guard) = live() else { return };
    let lab = record::prepare_lab().expect("lab");
    let trace = Trace::spawn(capabilities_only(&lab));
    let pid = trace.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "connbal", "the traced pid is connbal's");
    let same_user = |what: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=-all", "--bounding-set=-all", "ls"])
            .arg(format!("/proc/{pid}/{what}"))
            .output()
            .expect("setpriv ls")
    };
    let fds = same_user("fd");
    assert!(
        !fds.status.success(),
        "a same-user process listed connbal's descriptors: {}",
        String::from_utf8_lossy(&fds.stdout)
    );
    assert!(
        String::from_utf8_lossy(&fds.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&fds.stderr)
    );
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
}

/// One connect() is one attempt with its outcome, live and in replay: a
/// backend that answers, one that refuses (nothing listens: a reset), one
/// whose SYNs an nftables rule drops (the SYN and its retransmissions, one
/// attempt, unanswered), and the client's own address, whose SYN `-i lo`
/// sees leave and arrive (once).
#[test]
fn each_connect_is_one_attempt_with_its_outcome() {
    let Some(_guard) = live() else { return };
    let mut lab = Lab::new().expect("lab");
    let (answers, refuses, drops) = ("203.0.113.61", "203.0.113.62", "203.0.113.63");
    for backend in [answers, refuses, drops] {
        lab.add_backend(backend.parse().unwrap()).expect("backend");
    }
    lab.serve_tcp(&[8061]).expect("listener");
    for rule in [
        "add table inet connbal_test",
        "add chain inet connbal_test input { type filter hook input priority 0 ; }",
        "add rule inet connbal_test input tcp dport 8063 drop",
    ] {
        let out = lab.server("nft").args(rule.split(' ')).output().unwrap();
        assert!(out.status.success(), "nft {rule}: {out:?}");
    }
    let own = xtask::lab::CLIENT_V4;
    lab.start_dnsmasq(
        &format!(
            "{answers} svc.connbal.test\n{refuses} svc.connbal.test\n{drops} svc.connbal.test\n{own} svc.connbal.test\n"
        ),
        &[],
    )
    .expect("dnsmasq");
    let capture = lab.dir.join("attempts.pcap");
    let client_if = lab.client_if.clone();
    let tcpdump = lab
        .start_tcpdump(&client_if, &capture, &[])
        .expect("tcpdump");
    let mut command = lab.client(env!("CARGO_BIN_EXE_connbal"));
    command.args([
        "trace",
        "--iface",
        &lab.client_if,
        "--iface",
        "lo",
        "--format",
        "json",
    ]);
    let trace = Trace::spawn(command);
    let dig = lab
        .client("dig")
        .args([
            &format!("@{}", xtask::lab::SERVER_V4),
            "+short",
            "svc.connbal.test",
            "A",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dig.stdout).lines().count(), 4);
    let script = format!(
        r#"
import socket
listener = socket.socket()
listener.bind(("{own}", 8099))
listener.listen()
for host, port, timeout in [("{answers}", 8061, 3), ("{refuses}", 8062, 3), ("{drops}", 8063, 3.5), ("{own}", 8099, 3)]:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        print("connected")
    except OSError as e:
        print(type(e).__name__)
"#
    );
    let python = lab
        .client("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&python.stdout),
        "connected\nConnectionRefusedError\nTimeoutError\nconnected\n",
        "{python:?}"
    );
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    lab.interrupt(tcpdump).expect("tcpdump stops");

    // (backend, port, conns, answered, refused, unanswered)
    let outcomes = |json: &serde_json::Value| -> Vec<(String, u64, u64, u64, u64, u64)> {
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["conns"].as_u64() > Some(0))
            .map(|r| {
                let o = &r["outcomes"];
                (
                    r["backend"].as_str().unwrap().to_string(),
                    r["port"].as_u64().unwrap(),
                    r["conns"].as_u64().unwrap(),
                    o["answered"].as_u64().unwrap(),
                    o["refused"].as_u64().unwrap(),
                    o["unanswered"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let expected = vec![
        (own.to_string(), 8099, 1, 1, 0, 0),
        (answers.to_string(), 8061, 1, 1, 0, 0),
        (refuses.to_string(), 8062, 1, 0, 1, 0),
        (drops.to_string(), 8063, 1, 0, 0, 1),
    ];
    let live: serde_json::Value = serde_json::from_str(&finished.stdout).expect("JSON");
    assert_eq!(outcomes(&live), expected, "{}", finished.stdout);
    let counters = &live["counters"];
    assert_eq!(counters["connection_attempts"], 4);
    // At least: the dropped SYN's retransmissions (1 s and 3 s), and the
    // lo SYN seen a second time.
    assert!(
        counters["connection_attempts_repeated"].as_u64() >= Some(3),
        "{counters}"
    );
    let failing = live["services"][0]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["check"] == "failing_backends")
        .expect("a failing_backends verdict");
    assert_eq!(failing["ok"], false);

    // The capture of the client interface alone (no lo): the same outcomes
    // for the three remote backends.
    let replayed: serde_json::Value = serde_json::from_str(&stdout(&replay(&[
        "--format",
        "json",
        capture.to_str().unwrap(),
    ])))
    .expect("JSON");
    assert_eq!(outcomes(&replayed), expected[1..].to_vec());
}

#[test]
fn a_lock_file_of_a_dead_namespace_is_not_read_as_the_live_ones() {
    // Namespace inodes are reused: a lock file left by a run in a namespace
    // since gone, marked "connbal created clsact", must not make a run in a
    // new namespace with the same inode delete the administrator's qdisc.
    let Some(_guard) = live() else { return };
    let lab = Lab::new().expect("lab");
    let out = lab
        .client("stat")
        .args(["-L", "-c", "%i", "/proc/self/ns/net"])
        .output()
        .unwrap();
    let inode = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let iface = &lab.client_if;
    std::fs::create_dir_all("/run/connbal").unwrap();
    let stale = [
        // An older connbal's name: the namespace's inode alone.
        format!("/run/connbal/{inode}-{iface}.lock"),
        // Another namespace's cookie, the same inode (reused).
        format!("/run/connbal/1-{inode}-{iface}.lock"),
        // A namespace whose inode no live namespace has.
        format!("/run/connbal/2-1-{iface}.lock"),
    ];
    for path in &stale {
        std::fs::write(path, "connbal created clsact\n").unwrap();
    }
    let tc = |args: &[&str]| {
        let out = lab.client("tc").args(args).output().unwrap();
        assert!(out.status.success(), "tc {args:?}: {out:?}");
    };
    tc(&["qdisc", "add", "dev", iface, "clsact"]);
    let finished = start_trace(&lab, &["--attach", "netlink", "--duration", "1s"]).wait();
    let left: Vec<bool> = stale
        .iter()
        .map(|p| std::path::Path::new(p).exists())
        .collect();
    for path in &stale {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir("/run/connbal");
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        qdiscs(&lab).contains("clsact"),
        "the administrator's qdisc was deleted: {}",
        qdiscs(&lab)
    );
    // The inode-named and the dead namespace's files are swept; the one
    // whose inode is alive again is kept (its cookie says it is not ours).
    assert_eq!(left, [false, true, false]);
    assert!(!netlink_filters(&lab, "ingress").contains("connbal_tc"));
}

#[test]
fn scraping_under_load_costs_the_trace_no_record() {
    // A report on a busy host takes a while to build; the ring must not
    // fill meanwhile. Ever-new names make every scrape's report large, a
    // small ring makes any stall of its reader show as records lost, and
    // the scrapes come back to back.
    let Some(_guard) = live() else { return };
    let lab = Lab::new().expect("lab");
    let port = "127.0.0.1:9473";
    let trace = start_trace(
        &lab,
        &["--ring-size", "256K", "--metrics", port, "--format", "json"],
    );
    let rate: u64 = std::env::var("CONNBAL_TEST_STORM_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    let (sent, scrapes) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let churn = xtask::load::Mix::DnsChurn;
            xtask::load::run_paced(&lab, churn, Duration::from_secs(8), Some(rate))
        });
        let mut scrapes = 0u32;
        while !load.is_finished() {
            let out = lab
                .client("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "20"])
                .arg(format!("http://{port}/metrics"))
                .output()
                .unwrap();
            scrapes += u32::from(out.status.success());
        }
        (load.join().unwrap().expect("load"), scrapes)
    });
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    let json: serde_json::Value = serde_json::from_str(&finished.stdout).expect("JSON report");
    let input = &json["input"];
    assert!(scrapes >= 3, "{scrapes} scrapes answered");
    assert!(input["reports_built"].as_u64().unwrap() >= 3, "{input}");
    assert!(sent.dns_queries > 50_000, "{sent:?}");
    assert_eq!(
        input["kernel"]["records_lost"], 0,
        "{scrapes} scrapes, {sent:?}: {input}"
    );
}
