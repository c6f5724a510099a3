//! Checks docs/semantics.md section 7 (clients) live.
//!
//! Host mode (`connbal trace` without `--iface`), as root, against real
//! processes in cgroups and network namespaces this test creates: cgroup
//! programs are attached only to the test's own cgroup, never to the root
//! of the hierarchy, and everything is removed afterwards.
//!
//! The client namespace resolves through a caching dnsmasq on 127.0.0.53,
//! as systemd-resolved is on Ubuntu. Python apps in cgroups of their own
//! call getaddrinfo before every connection. The address join sees one
//! lookup from 198.51.100.10 and every connection from it; host mode must
//! see each app's own lookups and connections, and the stub as a client of
//! its own, known as a resolver by its socket answering on port 53.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use xtask::cgroup::TestCgroup;
use xtask::lab::Lab;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const TOOLS: &[&str] = &[
    "ip", "dnsmasq", "dig", "python3", "bpftool", "nft", "musl-gcc", "gcc", "go",
];
const NAME: &str = "web.connbal.test";
/// The app's choice among the sorted answer, connection by connection:
/// 5 to the first backend, 3 to the second, 2 to the fourth, none to the
/// third.
const PLAN_A: &[usize] = &[0, 0, 1, 0, 3, 1, 0, 3, 1, 0];
/// A second app in the same namespace (same address), another spread.
const PLAN_B: &[usize] = &[2, 2, 2, 2, 1, 2];

fn live() -> Option<std::sync::MutexGuard<'static, ()>> {
    live_tests(&ONE_AT_A_TIME, TOOLS)
}

/// The app: resolve, pick a backend by the plan, connect, fetch, close;
/// prints each backend it chose.
const APP: &str = r#"
import socket, sys
name, plan = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
for choice in plan:
    addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    addr = addrs[choice % len(addrs)]
    with socket.create_connection((addr, 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    print(addr, flush=True)
"#;

/// A JVM app: the main thread resolves (through the JVM's own address
/// cache), a pool of four worker threads connects, one connection each in
/// turn; prints each backend it chose.
const JAVA_APP: &str = r#"
import java.net.*;
import java.util.*;
import java.util.concurrent.*;

public class App {
    public static void main(String[] args) throws Exception {
        String name = args[0];
        ExecutorService pool = Executors.newFixedThreadPool(4);
        for (String choice : args[1].split(",")) {
            List<String> addrs = new ArrayList<>();
            for (InetAddress a : InetAddress.getAllByName(name)) {
                if (a instanceof Inet4Address) addrs.add(a.getHostAddress());
            }
            Collections.sort(addrs);
            String addr = addrs.get(Integer.parseInt(choice) % addrs.size());
            pool.submit(() -> {
                try (Socket s = new Socket()) {
                    s.connect(new InetSocketAddress(addr, 80), 5000);
                    s.getOutputStream().write("GET / HTTP/1.0\r\n\r\n".getBytes());
                    s.getInputStream().readAllBytes();
                }
                return null;
            }).get();
            System.out.println(addr);
        }
        pool.shutdown();
    }
}
"#;

/// An SRV app: before each connection it asks its resolver for the SRV
/// set (a hand-built query: Python's standard library has no SRV lookup),
/// takes the target the plan chooses among those of the best priority,
/// resolves it with getaddrinfo, connects and fetches; prints the target
/// and the address it used.
const SRV_APP: &str = r#"
import random, socket, struct, sys
name, plan = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
server = next(l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver"))

def read_name(msg, at):
    labels, after = [], None
    while msg[at]:
        if msg[at] >= 0xC0:
            after = at + 2 if after is None else after
            at = ((msg[at] & 0x3F) << 8) | msg[at + 1]
            continue
        labels.append(msg[at + 1:at + 1 + msg[at]].decode())
        at += 1 + msg[at]
    return ".".join(labels), at + 1 if after is None else after

def srv(name):
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    query = struct.pack(">6H", random.randrange(65536), 0x0100, 1, 0, 0, 0) + qname + struct.pack(">2H", 33, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(query, (server, 53))
        msg = s.recv(4096)
    count = struct.unpack(">H", msg[6:8])[0]
    at = read_name(msg, 12)[1] + 4
    found = []
    for _ in range(count):
        at = read_name(msg, at)[1]
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[at:at + 10])
        at += 10
        if rtype == 33:
            priority, _, port = struct.unpack(">3H", msg[at:at + 6])
            found.append((priority, read_name(msg, at + 6)[0], port))
        at += rdlen
    return sorted(found)

for choice in plan:
    targets = srv(name)
    best = [t for t in targets if t[0] == targets[0][0]]
    _, target, port = best[choice % len(best)]
    addr = socket.getaddrinfo(target, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    with socket.create_connection((addr, port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    print(target, addr, flush=True)
"#;

/// The app, each lookup and connection made by a worker thread that names
/// itself with prctl(PR_SET_NAME), as thread pools do (`worker-N`); prints
/// each backend it chose.
const THREADED_APP: &str = r#"
import ctypes, socket, sys, threading
name, plan = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15

def work(n, choice, chosen):
    libc.prctl(PR_SET_NAME, f"worker-{n}".encode(), 0, 0, 0)
    addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    addr = addrs[choice % len(addrs)]
    with socket.create_connection((addr, 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    chosen.append(addr)

for n, choice in enumerate(plan):
    chosen = []
    worker = threading.Thread(target=work, args=(n % 4, choice, chosen))
    worker.start()
    worker.join()
    print(chosen[0], flush=True)
"#;

struct HostLab {
    lab: Lab,
    cgroups: TestCgroup,
    app_script: std::path::PathBuf,
}

impl HostLab {
    /// The namespace lab with its authoritative dnsmasq and backends, and
    /// a caching stub on 127.0.0.53 in the client namespace, in the test's
    /// `stub` cgroup.
    fn new(tag: &str) -> HostLab {
        let lab = xtask::record::prepare_lab().expect("namespace lab");
        let mut cgroups = TestCgroup::new(tag).expect("test cgroup");
        let stub = cgroups.child("stub").unwrap();
        let mut host = HostLab {
            app_script: lab.dir.join("app.py"),
            lab,
            cgroups,
        };
        std::fs::write(&host.app_script, APP).unwrap();
        let client_ns = host.lab.client_ns.clone();
        host.lab
            .start_stub(&client_ns, "127.0.0.53", |program| {
                TestCgroup::command_in(&stub, program)
            })
            .expect("stub resolver");
        host.lab.client_resolv_conf("127.0.0.53").unwrap();
        host
    }

    /// Runs the app in cgroup `cgroup` of the test, in the client
    /// namespace, and returns the backends it chose.
    fn run_app(&mut self, cgroup: &str, plan: &[usize]) -> Vec<String> {
        let ns = self.lab.client_ns.clone();
        self.run_app_in(&ns, cgroup, plan)
    }

    /// Runs the app in cgroup `cgroup` of the test, in namespace `ns`.
    fn run_app_in(&mut self, ns: &str, cgroup: &str, plan: &[usize]) -> Vec<String> {
        let script = self.app_script.clone();
        self.run_in(ns, cgroup, &["python3", script.to_str().unwrap()], plan)
    }

    /// Runs the app on `name` instead of the lab's usual one.
    fn run_app_on(&mut self, cgroup: &str, name: &str, plan: &[usize]) -> Vec<String> {
        let script = self.app_script.clone();
        let ns = self.lab.client_ns.clone();
        self.run_with_name(
            &ns,
            cgroup,
            (&["python3", script.to_str().unwrap()], name),
            plan,
        )
    }

    /// Runs the SRV app on `_app._tcp.connbal.test` in cgroup `cgroup`, in
    /// the client namespace; returns "target address" per connection.
    fn run_srv_app(&mut self, cgroup: &str, plan: &[usize]) -> Vec<String> {
        let script = self.lab.dir.join("srv_app.py");
        std::fs::write(&script, SRV_APP).unwrap();
        let ns = self.lab.client_ns.clone();
        self.run_with_name(
            &ns,
            cgroup,
            (
                &["python3", script.to_str().unwrap()],
                "_app._tcp.connbal.test",
            ),
            plan,
        )
    }

    /// A fresh namespace's IPv6 addresses are tentative until duplicate
    /// address detection ends (about a second); until then curl's happy
    /// eyeballs falls back to IPv4. Waits for it, as a booted host has.
    fn wait_for_ipv6(&self) {
        for ns in [&self.lab.client_ns, &self.lab.server_ns] {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let out = Command::new("ip")
                    .args(["-n", ns, "-6", "addr", "show", "tentative"])
                    .output()
                    .expect("ip addr");
                if out.stdout.is_empty() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "IPv6 addresses still tentative in {ns}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// curl `url` `times` times in cgroup `cgroup` of the client namespace;
    /// returns the address each run connected to.
    fn run_curl(&mut self, cgroup: &str, url: &str, times: usize) -> Vec<String> {
        let dir = self.cgroups.child(cgroup).unwrap();
        let mut used = Vec::new();
        for _ in 0..times {
            // Its exit status is the backend's business (it may close
            // without an HTTP answer); where it connected is what counts.
            let out = TestCgroup::command_in(&dir, "ip")
                .args(["netns", "exec", &self.lab.client_ns])
                .args(["curl", "-s", "-o", "/dev/null"])
                .args(["--max-time", "5", "-w", "%{remote_ip}\\n"])
                .arg(url)
                .output()
                .expect("run curl");
            used.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string),
            );
        }
        used
    }

    /// Runs the JVM app in cgroup `cgroup`, in the client namespace.
    fn run_java_app(&mut self, cgroup: &str, plan: &[usize]) -> Vec<String> {
        let source = self.lab.dir.join("App.java");
        std::fs::write(&source, JAVA_APP).unwrap();
        let ns = self.lab.client_ns.clone();
        self.run_in(&ns, cgroup, &["java", source.to_str().unwrap()], plan)
    }

    /// Runs `program` with the name and plan in cgroup `cgroup` of the
    /// test, in namespace `ns`, and returns the backends it chose.
    fn run_in(&mut self, ns: &str, cgroup: &str, program: &[&str], plan: &[usize]) -> Vec<String> {
        self.run_with_name(ns, cgroup, (program, NAME), plan)
    }

    fn run_with_name(
        &mut self,
        ns: &str,
        cgroup: &str,
        (program, name): (&[&str], &str),
        plan: &[usize],
    ) -> Vec<String> {
        let dir = self.cgroups.child(cgroup).unwrap();
        let plan = plan.iter().map(usize::to_string).collect::<Vec<_>>();
        let out = TestCgroup::command_in(&dir, "ip")
            .args(["netns", "exec", ns])
            .args(program)
            .args([name, &plan.join(",")])
            .output()
            .expect("run the app");
        assert!(
            out.status.success(),
            "app failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// `connbal trace --cgroup CGROUP ARGS`, attached.
fn host_trace(cgroup: &str, args: &[&str]) -> Trace {
    let mut command = connbal();
    command.args(["trace", "--cgroup", cgroup]).args(args);
    Trace::spawn(command)
}

/// SIGINT, then the JSON report and stderr once it exits.
fn stop_json(trace: Trace) -> (serde_json::Value, String) {
    let (stdout, stderr) = stop(trace);
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{stdout}\n{stderr}"));
    (json, stderr)
}

/// The report's clients are exactly `clients`: the app one client named
/// by its process, beside the stub resolver.
fn assert_clients(
    services: &std::collections::BTreeMap<String, serde_json::Value>,
    clients: &[&String],
    stderr: &str,
) {
    assert_eq!(
        services.keys().collect::<std::collections::BTreeSet<_>>(),
        clients.iter().copied().collect(),
        "one client per app, named by its process: {stderr}"
    );
}

/// Stops the trace; its clients are the stub and one app, `command` in
/// cgroup `cgroup`, with a lookup before each of its connections and every
/// connection where its log `chosen` says. The report, for more checks.
fn assert_one_app_beside_the_stub(
    trace: Trace,
    root: &str,
    (command, cgroup): (&str, &str),
    chosen: &[String],
) -> serde_json::Value {
    let (json, stderr) = stop_json(trace);
    let services = services(&json);
    let app = format!("{command} in {root}/{cgroup}");
    let stub = format!("dnsmasq in {root}/stub");
    assert_clients(&services, &[&stub, &app], &stderr);
    let s = &services[&app];
    assert_eq!(s["lookups"], chosen.len() as u64, "{s}");
    assert_eq!(s["connections"], chosen.len() as u64, "{s}");
    assert_eq!(row_counts(&json, &app), counts(chosen));
    json
}

/// SIGINT, then the report (stdout) and stderr once it exits.
fn stop(trace: Trace) -> (String, String) {
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    (finished.stdout, finished.stderr)
}

fn counts(chosen: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for addr in chosen {
        *counts.entry(addr.clone()).or_default() += 1;
    }
    counts
}

/// The JSON report's services for `name`, by client display string.
fn services(json: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == format!("{NAME}."))
        .map(|s| (s["client"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

/// Connections per backend address for one client, from the JSON rows.
fn row_counts(json: &serde_json::Value, client: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in json["rows"].as_array().unwrap() {
        if row["client"] == client && row["name"] == format!("{NAME}.") {
            let conns = row["conns"].as_u64().unwrap();
            if conns > 0 {
                *counts
                    .entry(row["backend"].as_str().unwrap().to_string())
                    .or_default() += conns;
            }
        }
    }
    counts
}

#[test]
fn apps_behind_a_local_stub_are_seen_with_their_own_lookups_and_connections() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("stub");
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let chosen_a = host.run_app("app-a", PLAN_A);
    let chosen_b = host.run_app("app-b", PLAN_B);
    let (json, stderr) = stop_json(trace);
    let services = services(&json);
    let app_a = format!("python3 in {root}/app-a");
    let app_b = format!("python3 in {root}/app-b");
    let stub = format!("dnsmasq in {root}/stub");
    assert_eq!(
        services.keys().collect::<std::collections::BTreeSet<_>>(),
        [&stub, &app_a, &app_b].into_iter().collect(),
        "one client per app and one for the stub, not one address: {stderr}"
    );

    // Each app: a lookup before every connection, every connection where
    // it made it.
    for (client, plan, chosen) in [(&app_a, PLAN_A, &chosen_a), (&app_b, PLAN_B, &chosen_b)] {
        let s = &services[client];
        assert_eq!(s["lookups"], plan.len() as u64, "{client}: {s}");
        assert_eq!(s["connections"], plan.len() as u64, "{client}: {s}");
        assert_eq!(row_counts(&json, client), counts(chosen), "{client}");
        // Through the cache on its own host: the recommended setup, ok.
        let ttl = verdict(s, "ttl");
        assert_eq!(ttl["finding"], "through_local_resolver", "{s}");
        assert_eq!(ttl["ok"], true, "{s}");
        // The SYN-ACKs reach the app's socket, and settle its attempts.
        let failing = verdict(s, "failing_backends");
        assert_eq!(failing["finding"], "all_answered", "{s}");
        assert_eq!(s["client_info"]["command"], "python3");
        assert_eq!(
            s["client_info"]["cgroup"],
            format!("{}", client.split(" in ").nth(1).unwrap())
        );
        assert!(!s["pids"].as_array().unwrap().is_empty());
    }
    // Each getaddrinfo call went over DNS to the stub: counted once, at
    // its answer, which reached the calling thread during the call.
    let counters = &json["counters"];
    assert_eq!(
        (
            &counters["libc_lookups"],
            &counters["libc_lookups_seen_as_dns"]
        ),
        (&0.into(), &((PLAN_A.len() + PLAN_B.len()) as u64).into()),
        "{counters}"
    );

    // The stub: its own upstream lookup (the apps' others came from its
    // cache), and no connection.
    let s = &services[&stub];
    assert_eq!(s["connections"], 0, "{s}");
    assert!(s["lookups"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        s["lookups"].as_u64().unwrap() < PLAN_A.len() as u64,
        "the stub answers from its cache: {s}"
    );
    assert_eq!(s["client_info"]["command"], "dnsmasq");
    // Its socket on port 53 answered the apps: a resolver, not judged on
    // the backends it never connects to, and nothing to page on.
    assert_eq!(s["resolver"], true, "{s}");
    let checks: Vec<&str> = s["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert!(!checks.contains(&"unused_backends"), "{s}");
    assert!(
        s["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["ok"] == true),
        "{s}"
    );

    // The address view of the same traffic, for contrast: every lookup the
    // apps made went to 127.0.0.53, none of it leaves as one per app.
    assert!(json["input"]["cgroups"] == serde_json::json!([root]));
}

/// A "container": its own network namespace and a docker-shaped cgroup,
/// resolving through Docker's embedded DNS as dockerd sets it up (a
/// resolver on 127.0.0.11 at a high port, reached through a DNAT of
/// 127.0.0.11:53), its traffic leaving through a bridge with MASQUERADE in the
/// "host" namespace. Host mode names the app by its container; the
/// address view sees only the host's address.
#[test]
fn a_container_behind_nat_is_named_from_its_runtime_cgroup() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("ctr");
    let ctr_ns = host.lab.add_container().expect("container namespace");
    let id = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
    let dockerd = host.cgroups.child("system.slice/docker.service").unwrap();
    // As dockerd does it: the resolver on a high port, and a DNAT from
    // 127.0.0.11:53 in the container's namespace. The socket hooks see the
    // query after the DNAT, to the high port.
    host.lab
        .start_docker_embedded_dns(&ctr_ns, |program| TestCgroup::command_in(&dockerd, program))
        .expect("the container's embedded DNS");
    host.lab.resolv_conf(&ctr_ns, "127.0.0.11").unwrap();
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let chosen = host.run_app_in(&ctr_ns, &format!("system.slice/docker-{id}.scope"), PLAN_B);
    let (stdout, stderr) = stop(trace);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let services = services(&json);
    let app = "python3 in docker 3f2a1b4c5d6e";
    let s = services
        .get(app)
        .unwrap_or_else(|| panic!("{app} in {:?}: {stderr}", services.keys()));
    assert_eq!(s["client_info"]["container"], id);
    assert_eq!(s["client_info"]["container_runtime"], "docker");
    assert_eq!(s["lookups"], PLAN_B.len() as u64, "{s}");
    assert_eq!(s["connections"], PLAN_B.len() as u64, "{s}");
    assert_eq!(row_counts(&json, app), counts(&chosen));
    // The container's stub is a client of its own, under dockerd's unit.
    let stub = format!("dnsmasq in {root}/system.slice/docker.service");
    assert_eq!(services[&stub]["connections"], 0);
    assert_eq!(services[&stub]["client_info"]["unit"], "docker.service");
}

#[test]
fn by_ip_in_host_mode_keys_on_the_network_namespace_and_address() {
    // docs/semantics.md section 7: by address, the apps of one namespace
    // merge into their address; 127.0.0.1 of another namespace is another
    // client.
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("byip");
    let ctr_ns = host.lab.add_container().expect("container namespace");
    let ctr_stub = host.cgroups.child("ctr-stub").unwrap();
    host.lab
        .start_stub(&ctr_ns, "127.0.0.11", |program| {
            TestCgroup::command_in(&ctr_stub, program)
        })
        .expect("the container's stub");
    host.lab.resolv_conf(&ctr_ns, "127.0.0.11").unwrap();
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json", "--by", "ip"]);
    host.run_app("app-a", PLAN_A);
    host.run_app("app-b", PLAN_B);
    host.run_app_in(&ctr_ns, "app-c", PLAN_B);
    let (stdout, stderr) = stop(trace);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let services = services(&json);
    // The apps asked their stubs over loopback; the stubs asked upstream
    // from their namespaces' addresses. Both namespaces are the test's,
    // not the tracer's, so each loopback client names its namespace.
    let loopback: Vec<&serde_json::Value> = services
        .iter()
        .filter(|(client, _)| client.starts_with("127.0.0.1 (netns cookie "))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(loopback.len(), 2, "{:?}: {stderr}", services.keys());
    let mut lookups: Vec<u64> = loopback
        .iter()
        .map(|s| s["lookups"].as_u64().unwrap())
        .collect();
    lookups.sort_unstable();
    let mut want = vec![PLAN_B.len() as u64, (PLAN_A.len() + PLAN_B.len()) as u64];
    want.sort_unstable();
    assert_eq!(lookups, want, "{loopback:?}");
    let cookies: Vec<&serde_json::Value> = loopback
        .iter()
        .map(|s| &s["client_info"]["netns_cookie"])
        .collect();
    assert!(cookies.iter().all(|c| c.is_u64()), "{cookies:?}");
    assert_ne!(cookies[0], cookies[1]);
    for s in &loopback {
        assert_eq!(s["client_info"]["address"], "127.0.0.1");
        assert_eq!(
            s["connections"], 0,
            "connections come from the namespaces' own addresses"
        );
    }
    assert!(!services.contains_key("127.0.0.1"), "{:?}", services.keys());
}

#[test]
fn events_name_the_process_and_thread_behind_each_socket() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("events");
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--events", "--format", "json"]);
    host.run_app("app-a", PLAN_A);
    let (stdout, stderr) = stop(trace);
    let app = format!("python3 in {root}/app-a");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|e: &serde_json::Value| e["client"] == app.as_str())
        .collect();
    let connections: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "connection")
        .collect();
    let answers: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "dns_answer")
        .collect();
    assert_eq!(connections.len(), PLAN_A.len(), "{stdout}\n{stderr}");
    assert_eq!(answers.len(), PLAN_A.len(), "{stdout}");
    // One single-threaded Python process made every lookup and attempt.
    let pid = &connections[0]["pid"];
    assert!(pid.as_u64().is_some_and(|p| p > 1), "{}", connections[0]);
    for event in connections.iter().chain(&answers) {
        assert_eq!(&event["pid"], pid, "{event}");
        assert_eq!(event["tid"], *pid, "the main thread: {event}");
    }
}

#[test]
fn kill_9_leaves_no_cgroup_program_behind() {
    let Some(_guard) = live() else { return };
    let cgroups = TestCgroup::new("kill9").expect("test cgroup");
    let attached = || -> String {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(&cgroups.root)
            .output()
            .expect("bpftool cgroup show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!attached().contains("connbal"), "nothing attached before");
    let trace = host_trace(&cgroups.relative_root(), &[]);
    let shown = attached();
    for program in [
        "connbal_cgroup_egress",
        "connbal_cgroup_ingress",
        "connbal_connect4",
        "connbal_connect6",
    ] {
        // bpftool shows program names cut to 15 characters.
        assert!(
            shown.contains(&program[..15]),
            "{program} attached: {shown}"
        );
    }
    // A sendmsg hook anywhere makes the kernel lock the socket around
    // every unconnected UDP send on the host (BENCHMARKS.md).
    assert!(!shown.contains("sendmsg"), "a sendmsg hook: {shown}");
    let killed = trace.stop("-KILL");
    assert!(!killed.status.success());
    wait_until(
        Duration::from_secs(5),
        || !attached().contains("connbal"),
        || format!("programs left after kill -9: {}", attached()),
    );
}

#[test]
fn sighup_ends_the_trace_with_its_report_and_says_why() {
    // A closed terminal or a process manager's reload sends SIGHUP: the
    // report, nothing left attached, and JSON says what ended the trace.
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("hup");
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    host.run_app("app-a", PLAN_A);
    let finished = trace.stop("-HUP");
    assert!(
        finished.status.success(),
        "{:?}: {}",
        finished.status,
        finished.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&finished.stdout).expect("JSON report");
    assert_eq!(json["input"]["ended"], "signal SIGHUP", "{}", json["input"]);
    assert_eq!(json["error"], serde_json::Value::Null);
    let app = format!("python3 in {root}/app-a");
    assert_eq!(services(&json)[&app]["connections"], PLAN_A.len() as u64);
    let shown = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(&host.cgroups.root)
        .output()
        .expect("bpftool cgroup show");
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("connbal"));
}

#[test]
fn a_live_trace_ends_when_the_reader_of_its_reports_goes_away() {
    // `connbal trace --interval 1s | head -1` used to trace on forever.
    use std::io::BufRead as _;
    let Some(_guard) = live() else { return };
    let cgroups = TestCgroup::new("epipe").expect("test cgroup");
    let mut child = connbal()
        .args(["trace", "--cgroup", &cgroups.relative_root()])
        .args(["--interval", "1s", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connbal trace");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .expect("a first report");
    assert!(first.starts_with('{'), "{first}");
    // The reader is gone (dropped above); the next report finds no one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("connbal trace kept tracing after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn slow_readers_and_a_scrape_storm_share_one_rendering() {
    // 200 scrapers that ask and never read, then 40 at once: the storm is
    // answered from one report (not one per scrape, on the thread that
    // drains the ring), and the next scrape still comes.
    use std::io::{Read as _, Write as _};
    let Some(_guard) = live() else { return };
    let cgroups = TestCgroup::new("scrape").expect("test cgroup");
    let port = "127.0.0.1:9471";
    let trace = host_trace(&cgroups.relative_root(), &["--metrics", port]);
    let ask = |stream: &mut std::net::TcpStream| {
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: connbal\r\nConnection: close\r\n\r\n")
            .unwrap();
    };
    let slow: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(port).expect("connect");
            ask(&mut stream);
            stream
        })
        .collect();
    let scrape = move || -> String {
        let mut stream = std::net::TcpStream::connect(port).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        ask(&mut stream);
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .expect("the scrape's answer");
        text
    };
    let built = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("connbal_input_events_total{counter=\"reports_built\"} "))
            .unwrap_or_else(|| panic!("no reports_built in {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let before = built(&scrape());
    let storm: Vec<_> = (0..40).map(|_| std::thread::spawn(scrape)).collect();
    let answers: Vec<String> = storm.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 200")));
    std::thread::sleep(Duration::from_millis(1100));
    let after = built(&scrape());
    // The storm lasts well under two seconds: at most two reports for it,
    // and one for the last scrape.
    assert!(after - before <= 3, "{before} then {after} reports built");
    drop(slow);
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
}

#[test]
fn flags_of_the_other_mode_are_refused_in_one_line() {
    // They used to be accepted and ignored.
    for (args, says) in [
        (&["trace", "--attach", "tcx"][..], "--attach"),
        (&["trace", "--attach", "netlink"][..], "--attach"),
    ] {
        let out = connbal().args(args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("connbal: {says} ")), "{err}");
    }
}

#[test]
fn a_cgroup_that_does_not_exist_is_one_clear_line() {
    let out = connbal()
        .args(["trace", "--cgroup", "/no/such/connbal-cgroup"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--cgroup /no/such/connbal-cgroup: no such cgroup"),
        "{err}"
    );
}

/// A real Prometheus, with the shipped rules (deploy/prometheus), scraping
/// `connbal trace --metrics` over the issue's lab of real programs: a
/// well-behaved Python app (resolves per connect through the local cache,
/// spreads evenly), a JVM whose pool threads connect, curl on a dual-stack
/// name, an app on two names sharing one address set, an app asking for
/// an alias, an SRV app and a health checker of one of its targets, the
/// caching stub, and one misbehaving app (takes the first address every
/// time): the alert is pending for exactly the misbehaving app's failing
/// checks, and for nothing else.
#[test]
fn the_shipped_alerts_fire_for_the_misbehaving_client_only() {
    let Some(_guard) = live() else { return };
    if !tools_available(&["prometheus", "curl"]) {
        return;
    }
    let mut host = HostLab::new("alerts");
    let root = host.cgroups.relative_root();
    let connbal_port = free_loopback_port();
    let trace = host_trace(&root, &["--metrics", &format!("127.0.0.1:{connbal_port}")]);
    let even: Vec<usize> = (0..12).map(|i| i % 4).collect();
    host.wait_for_ipv6();
    host.run_app("app-good", &even);
    host.run_app("app-pinned", &[0; 12]);
    host.run_java_app("app-jvm", &even);
    // Enough connections that 2 of 4 backends unused would not be chance,
    // were it judged across both families.
    host.run_curl("curl", "http://dual.connbal.test/", 16);
    let alternate: Vec<usize> = (0..8).map(|i| i % 2).collect();
    host.run_app_on("app-names", "db.connbal.test", &alternate);
    host.run_app_on("app-names", "api.connbal.test", &alternate);
    host.run_app_on("app-alias", "alias.connbal.test", &even);
    host.run_srv_app("app-srv", &alternate);
    host.run_app_on("checker", "s1.connbal.test", &[0; 4]);

    let prometheus = Prometheus::start(&host.lab.dir, &[connbal_port]);
    // Every second a scrape and a rule evaluation: wait until the alerts
    // have settled (the same set twice, three seconds apart), at most 40 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut last = None;
    let alerts = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the alerts never settled: {last:?}\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_secs(3));
        let now = prometheus.alerts();
        if !now.is_empty() && last.as_ref() == Some(&now) {
            break now;
        }
        last = Some(now);
    };
    drop(prometheus);
    let (_, stderr) = stop(trace);

    let pinned = format!("python3 in {root}/app-pinned");
    let expected: std::collections::BTreeSet<(String, String, String)> =
        ["unused_backends", "balance"]
            .into_iter()
            .map(|check| {
                (
                    "ConnbalVerdictFailing".to_string(),
                    pinned.clone(),
                    check.to_string(),
                )
            })
            .collect();
    assert_eq!(alerts, expected, "{stderr}");
}

/// The fleet (issue 27): two "nodes", each an agent on its own cgroup
/// subtree with its own instance of one app, and one real Prometheus
/// scraping both with the shipped recording rules. node-a's app is pinned
/// to the first backend, node-b's spreads over the other three: each
/// node's own verdict is "uneven", the fleet's spread is even, and the
/// recording rule's chi-square equals the one summed offline from the two
/// JSON reports' cells. Every query of the shipped Grafana dashboard
/// answers from that Prometheus.
#[test]
fn a_fleets_balance_is_its_nodes_cells_summed_in_promql() {
    let Some(_guard) = live() else { return };
    if !tools_available(&["prometheus", "curl"]) {
        assert!(std::env::var("CI").is_err(), "CI needs prometheus and curl");
        eprintln!("skipped: no prometheus or curl");
        return;
    }
    let mut host = HostLab::new("fleet");
    let root = host.cgroups.relative_root();
    let ports = [free_loopback_port(), free_loopback_port()];
    assert_ne!(ports[0], ports[1]);
    let mut traces = Vec::new();
    for (node, port) in ["node-a", "node-b"].iter().zip(ports) {
        host.cgroups.child(node).unwrap();
        let metrics = format!("127.0.0.1:{port}");
        traces.push(host_trace(
            &format!("{root}/{node}"),
            &["--format", "json", "--metrics", &metrics],
        ));
    }
    let prometheus = Prometheus::start(&host.lab.dir, &ports);
    host.run_app("node-a/app", &[0; 6]);
    let spread: Vec<usize> = (0..36).map(|i| 1 + i % 3).collect();
    host.run_app("node-b/app", &spread);
    let name = "web.connbal.test.";
    let query = |rule: &str| -> Option<f64> {
        let result = prometheus.query(&format!(
            "{rule}{{process_executable_name=\"python3\",dns_question_name=\"{name}\"}}"
        ));
        result.first()?["value"][1].as_str()?.parse().ok()
    };
    // Both agents scraped since the apps finished: all 42 connections in
    // the fleet's cells.
    let connections = || {
        prometheus
            .query(&format!(
                "sum(connbal:fleet_balance_connections{{process_executable_name=\"python3\",dns_question_name=\"{name}\"}})"
            ))
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
    };
    wait_until(
        Duration::from_secs(30),
        || connections() == Some(42.0) && query("connbal:fleet_balance_chi_square").is_some(),
        || format!("{:?}\n{}", connections(), prometheus.log()),
    );
    let fleet_chi_square = query("connbal:fleet_balance_chi_square").unwrap();
    let fleet_uneven = query("connbal:fleet_balance_uneven").unwrap();
    // Every query of the shipped Grafana dashboard answers from this
    // Prometheus, for this app and name.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/connbal.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$app", "python3")
                .replace("$name", name);
            let answer = prometheus.query(&expr);
            assert!(
                !answer.is_empty(),
                "{}: {expr} returned nothing",
                panel["title"]
            );
            asked += 1;
        }
    }
    assert!(asked >= 5, "{asked}");
    drop(prometheus);
    // Offline, from the agents' own reports: each node's cells, summed.
    let mut cells: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (trace, node) in traces.into_iter().zip(["node-a", "node-b"]) {
        let (json, _) = stop_json(trace);
        let client = format!("python3 in {root}/{node}/app");
        let s = service_where(&json, |s| {
            s["client"] == client.as_str() && s["name"] == name
        });
        // Alone, each node is uneven.
        assert!(
            s["balance"]["p_value"].as_f64().unwrap() < 0.01,
            "{node}: {s}"
        );
        for cell in s["balance_cells"].as_array().unwrap() {
            let entry = cells
                .entry(cell["backend"].as_str().unwrap().to_string())
                .or_default();
            entry.0 += cell["connections"].as_f64().unwrap();
            entry.1 += cell["expected"].as_f64().unwrap();
        }
    }
    assert_eq!(cells.len(), 4, "{cells:?}");
    let offline: f64 = cells
        .values()
        .map(|&(observed, expected)| (observed - expected).powi(2) / expected)
        .sum();
    assert!(
        (fleet_chi_square - offline).abs() < 1e-6,
        "rule {fleet_chi_square}, offline {offline}"
    );
    // Together, the fleet is even.
    assert!(
        fleet_uneven < 0.5,
        "uneven {fleet_uneven}, chi-square {fleet_chi_square}"
    );
}

/// A JVM resolves on its main thread and connects from a pool of worker
/// threads ("pool-1-thread-1" to "-4"): one app, one client ("java"), with
/// every connection. Named by thread, it was five clients, and the
/// workers' connections, made by clients that never looked the name up,
/// counted nowhere.
#[test]
fn a_jvm_is_one_client_whatever_its_threads_are_called() {
    let Some(_guard) = live() else { return };
    if !tools_available(&["java", "javac"]) {
        return;
    }
    let mut host = HostLab::new("jvm");
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let plan: Vec<usize> = (0..8).map(|i| i % 4).collect();
    let chosen = host.run_java_app("jvm", &plan);
    let (json, stderr) = stop_json(trace);
    let services = services(&json);
    let jvm = format!("java in {root}/jvm");
    let stub = format!("dnsmasq in {root}/stub");
    assert_clients(&services, &[&stub, &jvm], &stderr);
    let s = &services[&jvm];
    assert_eq!(s["connections"], plan.len() as u64, "{s}");
    assert_eq!(row_counts(&json, &jvm), counts(&chosen));
    // The JVM's own address cache answers most lookups: it asked less
    // often than it connected, and never needed to within the TTL.
    assert!(s["lookups"].as_u64().unwrap() >= 1, "{s}");
    let checks: std::collections::BTreeMap<&str, bool> = s["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["check"].as_str().unwrap(), v["ok"] == true))
        .collect();
    assert!(checks.values().all(|ok| *ok), "{s}");
}

/// curl against a dual-stack name (2 A and 2 AAAA records) through the
/// caching stub, eight times: following RFC 6724 it uses IPv6 only. Judged
/// over all four backends, that read "2 of 4 backends got no connection;
/// not chance" for every dual-stack service; judged within IPv6, as the
/// client chose, it says so.
#[test]
fn curl_on_a_dual_stack_name_is_judged_within_the_family_it_used() {
    let Some(_guard) = live() else { return };
    if !tools_available(&["curl"]) {
        return;
    }
    let mut host = HostLab::new("dual");
    host.wait_for_ipv6();
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let used = host.run_curl("curl", "http://dual.connbal.test/", 8);
    let (json, _) = stop_json(trace);
    assert_eq!(used.len(), 8, "{used:?}");
    assert!(
        used.iter().all(|a| a.contains(':')),
        "curl preferred IPv6 here, as RFC 6724 has it: {used:?}"
    );
    let client = format!("curl in {root}/curl");
    let s = service_where(&json, |s| {
        s["client"] == client.as_str() && s["name"] == "dual.connbal.test."
    });
    assert_eq!(s["connections"], 8, "{s}");
    assert_eq!(s["backends"], 4, "{s}");
    assert_eq!(s["family_used"], "ipv6", "{s}");
    let unused = verdict(s, "unused_backends");
    let text = unused["text"].as_str().unwrap();
    assert!(text.contains("IPv6 only, as RFC 6724 prefers"), "{text}");
    // Within IPv6: both AAAA backends used is "all used", never "2 of 4
    // got no connection".
    let v6_used = counts(&used).len();
    if v6_used == 2 {
        assert_eq!(unused["finding"], "all_used", "{s}");
    }
    assert!(!text.contains("of 4"), "{text}");
    // curl takes the first address of each answer; the stub rotates them,
    // so its spread follows the rotation: said, not flagged.
    assert_eq!(verdict(s, "answer_order")["ok"], true, "{s}");
}

/// Two names on one address set (vhosts, a CDN): an app resolves `db`
/// before each of 10 connections, then `api` before each of 5, both on
/// .95 and .96. Before, the backends carried the first name only: one
/// service `db` with 15 connections, and `api` nowhere. And an alias: an
/// app asking for `alias.connbal.test` (CNAME to mid, to pool) is reported
/// under pool with the name it asked.
#[test]
fn names_sharing_addresses_and_aliases_are_reported_as_the_app_asked() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("names");
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let db = host.run_app_on("app", "db.connbal.test", &[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    let api = host.run_app_on("app", "api.connbal.test", &[0, 1, 0, 1, 0]);
    let alias = host.run_app_on("aliased", "alias.connbal.test", &[0, 1, 2, 0]);
    let (json, _) = stop_json(trace);
    let service = |client: &str, name: &str| -> serde_json::Value {
        service_where(&json, |s| s["client"] == client && s["name"] == name).clone()
    };
    let app = format!("python3 in {root}/app");
    let db_s = service(&app, "db.connbal.test.");
    let api_s = service(&app, "api.connbal.test.");
    assert_eq!(
        (&db_s["lookups"], &db_s["connections"]),
        (&10.into(), &10.into()),
        "{db_s}"
    );
    assert_eq!(
        (&api_s["lookups"], &api_s["connections"]),
        (&5.into(), &5.into()),
        "{api_s}"
    );
    assert_eq!(db.len() + api.len(), 15);
    // db's answer was still unexpired when api's connections were made:
    // said, never failed.
    assert_eq!(verdict(&api_s, "shared_addresses")["ok"], true, "{api_s}");
    let aliased = service(&format!("python3 in {root}/aliased"), "pool.connbal.test.");
    assert_eq!(aliased["connections"], alias.len() as u64, "{aliased}");
    assert_eq!(
        aliased["asked_as"],
        serde_json::json!(["alias.connbal.test."]),
        "{aliased}"
    );
}

/// A pool of long-lived connections opened before the trace, kept busy:
/// the app resolves again only after the trace began, when its flows were
/// already seen. Under `-a` they count once that answer names their
/// backends, while still open. Before: "0 connections, no connection to
/// any of the 3 backends", with every flow seen midstream.
const POOL_APP: &str = r#"
import select, socket, sys
name, n = sys.argv[1], int(sys.argv[2])
addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
conns = [socket.create_connection((addrs[i % len(addrs)], 80), timeout=5) for i in range(n)]
for c in conns:
    c.sendall(b"GET / HTTP/1.0\r\n")
print("open", flush=True)
# Busy until told to go on: a header line on each connection every 0.3 s
# (the backends wait for the blank line that ends the request).
while not select.select([sys.stdin], [], [], 0.3)[0]:
    for c in conns:
        c.sendall(b"X-Busy: 1\r\n")
sys.stdin.readline()
socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
for c in conns:
    c.sendall(b"\r\n")
    while c.recv(4096):
        pass
    c.close()
print("done", flush=True)
"#;

#[test]
fn a_pool_opened_before_the_trace_counts_once_its_app_resolves_again() {
    use std::io::{BufRead as _, Write as _};
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("pool");
    let root = host.cgroups.relative_root();
    let script = host.lab.dir.join("pool.py");
    std::fs::write(&script, POOL_APP).unwrap();
    let dir = host.cgroups.child("pool").unwrap();
    let mut app = TestCgroup::command_in(&dir, "ip")
        .args(["netns", "exec", &host.lab.client_ns, "python3"])
        .arg(&script)
        .args(["pool.connbal.test", "6"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the pool app");
    let mut lines = std::io::BufReader::new(app.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    // By app: sockets connected before the trace passed no hook; the walk
    // at start names their process, so the flows belong to the app that
    // resolves, not to a client with no command.
    let trace = host_trace(&root, &["-a", "--format", "json"]);
    // Its busy lines now meet the kernel's flow table: six flows, seen
    // midstream, to backends no answer has named yet.
    std::thread::sleep(Duration::from_millis(700));
    writeln!(app.stdin.as_mut().unwrap(), "go").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "done");
    assert!(app.wait().unwrap().success());
    let (json, _) = stop_json(trace);
    let client = format!("python3 in {root}/pool");
    let s = service_where(&json, |s| {
        s["client"] == client.as_str() && s["name"] == "pool.connbal.test."
    });
    assert_eq!(s["lookups"], 1, "{s}");
    assert_eq!(s["connections"], 6, "{s}\n{}", json["counters"]);
    assert_eq!(verdict(s, "unused_backends")["finding"], "all_used", "{s}");
    // Found open, they were made before: never late.
    assert_eq!(s["connections_after_expiry"], 0, "{s}");
}

#[test]
fn a_daemon_resolving_over_a_socket_opened_before_the_trace_is_one_client() {
    use std::io::BufRead as _;
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("daemon");
    let root = host.cgroups.relative_root();
    let script = host.lab.dir.join("daemon.py");
    std::fs::write(&script, RESOLVER_SOCKET_DAEMON).unwrap();
    let gate = host.lab.dir.join("gate");
    let dir = host.cgroups.child("daemon").unwrap();
    let plan = PLAN_A;
    let mut daemon = TestCgroup::command_in(&dir, "ip")
        .args(["netns", "exec", &host.lab.client_ns, "python3"])
        .arg(&script)
        .args(["127.0.0.53", NAME, &plan_text(plan)])
        .arg(&gate)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let mut lines = std::io::BufReader::new(daemon.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    let trace = host_trace(&root, &["--format", "json"]);
    std::fs::write(&gate, "").unwrap();
    let chosen: Vec<String> = lines
        .by_ref()
        .map(Result::unwrap)
        .take_while(|line| line != "done")
        .collect();
    assert!(daemon.wait().unwrap().success());
    // Without the walk at start, its lookups are a client with no process
    // (its bare cgroup) and its connections follow no lookup of its own.
    let json = assert_one_app_beside_the_stub(trace, &root, ("python3", "daemon"), &chosen);
    assert!(
        json["input"]["open_sockets_owned"].as_u64() >= Some(1),
        "{}",
        json["input"]
    );
}

/// An app that resolves and connects as fast as it can, for up to 30 s:
/// load for the agent while it is stopped.
const BUSY_APP: &str = r#"
import socket, sys, time
name, deadline = sys.argv[1], time.time() + 30
i = 0
while time.time() < deadline:
    addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    try:
        with socket.create_connection((addrs[i % len(addrs)], 80), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass
    except OSError:
        pass
    i += 1
"#;

/// A pod is stopped with SIGTERM, mid-load: the agent serving metrics
/// under a client resolving and connecting as fast as it can exits 0
/// with its report, and leaves nothing attached. (How fast it exits is
/// `cargo xtask bench-load`'s to measure, not a test's.)
#[test]
fn sigterm_under_load_exits_zero_with_its_report_and_nothing_attached() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("term");
    let root = host.cgroups.relative_root();
    let script = host.lab.dir.join("busy.py");
    std::fs::write(&script, BUSY_APP).unwrap();
    let metrics = format!("127.0.0.1:{}", free_loopback_port());
    let trace = host_trace(&root, &["--format", "json", "--metrics", &metrics]);
    let dir = host.cgroups.child("busy").unwrap();
    let mut busy = TestCgroup::command_in(&dir, "ip")
        .args(["netns", "exec", &host.lab.client_ns, "python3"])
        .arg(&script)
        .arg(NAME)
        .spawn()
        .expect("start the busy app");
    let attached = || -> String {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(&host.cgroups.root)
            .output()
            .expect("bpftool cgroup show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(attached().contains("connbal"), "attached while tracing");
    let stopped = std::time::Instant::now();
    let finished = trace.stop("-TERM");
    let took = stopped.elapsed();
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(
        finished.status.success(),
        "{:?} after {took:?}: {}",
        finished.status,
        finished.stderr
    );
    assert!(!attached().contains("connbal"), "left: {}", attached());
    let json: serde_json::Value = serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{}", finished.stderr));
    assert_eq!(
        json["input"]["ended"], "signal SIGTERM",
        "{}",
        json["input"]
    );
    let s = &services(&json)[&format!("python3 in {root}/busy")];
    assert!(s["lookups"].as_u64() > Some(10), "under load: {s}");
    assert!(s["connections"].as_u64() > Some(10), "under load: {s}");
}

/// musl's resolver (Alpine's, and every static musl binary's) sends each
/// query with `sendto` on a UDP socket it never connects, so no connect
/// hook names it; the query's egress does, run in the sender's own
/// syscall. Its lookups and connections are one client, in the network
/// namespace the kernel gives its sockets.
#[test]
fn a_musl_app_resolving_with_sendto_is_one_client() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("musl");
    let root = host.cgroups.relative_root();
    let binary = build_musl_client(&host.lab.dir);
    let ns = host.lab.client_ns.clone();
    let trace = host_trace(&root, &["--format", "json"]);
    let chosen = host.run_in(&ns, "musl", &[binary.to_str().unwrap()], PLAN_A);
    let json = assert_one_app_beside_the_stub(trace, &root, ("musl-client", "musl"), &chosen);
    let s = &services(&json)[&format!("musl-client in {root}/musl")];
    assert_eq!(s["client_info"]["command"], "musl-client", "{s}");
    // By address, its loopback lookups belong to its namespace, which the
    // kernel program read from the sending task: the cookie the kernel
    // gives a socket there.
    let truth = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c"])
        .arg(
            "import socket; s = socket.socket(); \
             print(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), 'little'))",
        )
        .output()
        .expect("read the namespace's cookie");
    let truth: u64 = String::from_utf8_lossy(&truth.stdout)
        .trim()
        .parse()
        .unwrap();
    let trace = host_trace(&root, &["--format", "json", "--by", "ip"]);
    host.run_in(&ns, "musl", &[binary.to_str().unwrap()], PLAN_B);
    let (json, stderr) = stop_json(trace);
    let s = service_where(&json, |s| s["client_info"]["address"] == "127.0.0.1");
    assert_eq!(s["client_info"]["netns_cookie"], truth, "{s}\n{stderr}");
    assert_eq!(s["lookups"], PLAN_B.len() as u64, "{s}");
}

/// nss-resolve, as Fedora, RHEL and Arch ship it: glibc asks a real
/// systemd-resolved over Varlink, and no DNS packet leaves the app. The
/// getaddrinfo probes see each lookup, the app's own, and resolved's
/// monitor gives each its TTL: asking the cache on its host before every
/// connection is fine. Without the monitor the lookups carry no TTL;
/// resolved's upstream lookups are its own. Without the probes
/// (`--no-getaddrinfo`) the app's connections go to addresses it never
/// looked up, and it is not in the report at all.
#[test]
fn an_app_resolving_over_nss_resolve_is_one_client_with_its_lookups() {
    let Some(_guard) = live_with_host_resolvers() else {
        return;
    };
    let mut host = HostLab::new("nssresolve");
    let root = host.cgroups.relative_root();
    let ns = host.lab.client_ns.clone();
    let daemon = host.cgroups.child("resolved").unwrap();
    let resolved = host
        .lab
        .start_resolved(&ns, |program| TestCgroup::command_in(&daemon, program))
        .expect("systemd-resolved");
    let app = behind(
        &resolved,
        &["python3", &host.app_script.display().to_string()],
    );
    let app: Vec<&str> = app.iter().map(String::as_str).collect();

    // A C client that resolves once, connects and exits, run once per
    // connection: each process gone right after its lookup.
    let short = build_glibc_client(&host.lab.dir);
    let short_lived = behind(&resolved, &[&short.display().to_string()]);
    let short_lived: Vec<&str> = short_lived.iter().map(String::as_str).collect();

    let monitor = resolved.monitor_socket().display().to_string();
    let trace = host_trace(&root, &["--format", "json", "--resolved-monitor", &monitor]);
    let chosen = host.run_in(&ns, "app", &app, PLAN_A);
    let mut chosen_short = Vec::new();
    for &choice in PLAN_B {
        chosen_short.extend(host.run_in(&ns, "short", &short_lived, &[choice]));
    }
    let (json, stderr) = stop_json(trace);
    let found = services(&json);
    let client = format!("python3 in {root}/app");
    let daemon = format!("systemd-resolve in {root}/resolved");
    let short = format!("gai-client in {root}/short");
    assert_clients(&found, &[&client, &daemon, &short], &stderr);
    let s = &found[&short];
    assert_eq!(
        (&s["lookups"], &s["connections"]),
        (&(PLAN_B.len() as u64).into(), &(PLAN_B.len() as u64).into()),
        "{s}"
    );
    assert_eq!(row_counts(&json, &short), counts(&chosen_short));
    let s = &found[&client];
    assert_eq!(s["lookups"], PLAN_A.len() as u64, "{s}");
    assert_eq!(s["connections"], PLAN_A.len() as u64, "{s}");
    assert_eq!(row_counts(&json, &client), counts(&chosen));
    // The lab's TTL, from resolved's answers; every lookup after the
    // first came within it, from the cache on its host.
    assert_eq!(
        (&s["ttl_min_secs"], &s["ttl_max_secs"]),
        (&300.into(), &300.into()),
        "{s}"
    );
    assert_eq!(s["lookups_within_ttl"], PLAN_A.len() as u64 - 1, "{s}");
    assert_eq!(
        verdict(s, "ttl")["finding"],
        "through_local_resolver",
        "{s}"
    );
    assert_eq!(found[&daemon]["connections"], 0);
    let counters = &json["counters"];
    let calls = (PLAN_A.len() + PLAN_B.len()) as u64;
    assert_eq!(
        (
            &counters["libc_lookups"],
            &counters["libc_lookups_given_a_ttl"],
            &counters["libc_lookups_seen_as_dns"]
        ),
        (&calls.into(), &calls.into(), &0.into()),
        "{counters}"
    );

    // Without the monitor: the same lookups, no TTL to judge them by.
    let trace = host_trace(&root, &["--format", "json", "--resolved-monitor", "none"]);
    host.run_in(&ns, "app", &app, PLAN_B);
    let (json, stderr) = stop_json(trace);
    let s = &services(&json)[&client];
    assert_eq!(s["lookups"], PLAN_B.len() as u64, "{s}\n{stderr}");
    assert_eq!(verdict(s, "ttl")["finding"], "ttl_unknown", "{s}");

    // A monitor named that is not there: one line, before any record.
    let out = connbal()
        .args([
            "trace",
            "--cgroup",
            &root,
            "--resolved-monitor",
            "/nonexistent/monitor",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        "connbal: --resolved-monitor: connecting to systemd-resolved's monitor /nonexistent/monitor: No such file or directory (os error 2)",
        "{err}"
    );

    let trace = host_trace(&root, &["--format", "json", "--no-getaddrinfo"]);
    host.run_in(&ns, "app", &app, PLAN_B);
    let (json, stderr) = stop_json(trace);
    let without = services(&json);
    assert!(!without.contains_key(&client), "{stderr}\n{without:?}");
    assert_eq!(json["counters"]["libc_lookups"], 0);
}

/// `program` as run on a host whose resolver is `resolver`.
fn behind(resolver: &xtask::resolved::HostResolver, program: &[&str]) -> Vec<String> {
    let mut wrapped = resolver.wrapper();
    wrapped.extend(program.iter().map(ToString::to_string));
    wrapped
}

/// The live lock, when systemd-resolved and nscd are unpacked too.
fn live_with_host_resolvers() -> Option<std::sync::MutexGuard<'static, ()>> {
    let guard = live()?;
    if !xtask::resolved::unpacked() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !in_ci,
            "CI=true but systemd-resolved and nscd are not unpacked (cargo xtask test does it)"
        );
        eprintln!("skipped: systemd-resolved and nscd are not unpacked (cargo xtask test does it, as root)");
        return None;
    }
    Some(guard)
}

/// nscd, as RHEL hosts long ran it: glibc asks it over its socket (or
/// reads its shared cache), and nscd asks DNS itself, on its own socket.
/// The app's lookups are its own, with no TTL; nscd's upstream lookups are
/// nscd's.
#[test]
fn an_app_resolving_through_nscd_is_one_client_with_its_lookups() {
    let Some(_guard) = live_with_host_resolvers() else {
        return;
    };
    let mut host = HostLab::new("nscd");
    let root = host.cgroups.relative_root();
    let ns = host.lab.client_ns.clone();
    let daemon = host.cgroups.child("nscd").unwrap();
    let nscd = host
        .lab
        .start_nscd(&ns, |program| TestCgroup::command_in(&daemon, program))
        .expect("nscd");
    let app = behind(&nscd, &["python3", &host.app_script.display().to_string()]);
    let app: Vec<&str> = app.iter().map(String::as_str).collect();
    let trace = host_trace(&root, &["--format", "json"]);
    let chosen = host.run_in(&ns, "app", &app, PLAN_A);
    let (json, stderr) = stop_json(trace);
    let found = services(&json);
    let client = format!("python3 in {root}/app");
    let s = &found[&client];
    assert_eq!(s["lookups"], PLAN_A.len() as u64, "{s}\n{stderr}");
    assert_eq!(s["connections"], PLAN_A.len() as u64, "{s}");
    assert_eq!(row_counts(&json, &client), counts(&chosen));
    assert_eq!(verdict(s, "ttl")["finding"], "ttl_unknown", "{s}");
    // nscd asked the namespace's stub itself: its lookup, not the app's.
    let nscd_client = format!("nscd in {root}/nscd");
    assert!(
        found.contains_key(&nscd_client),
        "{stderr}\n{:?}",
        found.keys()
    );
    assert_eq!(found[&nscd_client]["connections"], 0);
    let counters = &json["counters"];
    assert_eq!(
        (
            &counters["libc_lookups"],
            &counters["libc_lookups_seen_as_dns"]
        ),
        (&(PLAN_A.len() as u64).into(), &0.into()),
        "{counters}"
    );
}

/// Go's own resolver (`PreferGo`, a static binary with no cgo): it sends
/// its DNS itself and never calls getaddrinfo, so its lookups are seen at
/// its sockets alone, once each.
#[test]
fn a_go_app_with_the_pure_go_resolver_is_one_client() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("go");
    let root = host.cgroups.relative_root();
    let binary = build_go_client(&host.lab.dir);
    let ns = host.lab.client_ns.clone();
    let trace = host_trace(&root, &["--format", "json"]);
    let chosen = host.run_in(&ns, "go", &[binary.to_str().unwrap()], PLAN_A);
    let json = assert_one_app_beside_the_stub(trace, &root, ("go-client", "go"), &chosen);
    let counters = &json["counters"];
    assert_eq!(
        (
            &counters["libc_lookups"],
            &counters["libc_lookups_seen_as_dns"]
        ),
        (&0.into(), &0.into()),
        "{counters}"
    );
}

/// A child process killed and reaped when the test ends, failed or not.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// musl linked dynamically, as on Alpine: getaddrinfo is in musl's own
/// loader, which host mode probes too, and musl's resolver sends its DNS
/// with `sendto` from the calling thread. Each lookup is seen twice, at
/// the socket and in getaddrinfo, and counts once.
#[test]
fn a_dynamic_musl_app_is_probed_and_counted_once() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("muslso");
    let root = host.cgroups.relative_root();
    let binary = build_dynamic_musl_client(&host.lab.dir);
    let ns = host.lab.client_ns.clone();
    // A musl process running when the trace starts: its loader is probed.
    let _sleeper = KilledOnDrop(
        Command::new(build_musl_sleeper(&host.lab.dir))
            .arg("60")
            .spawn()
            .expect("start the musl sleeper"),
    );
    let trace = host_trace(&root, &["--format", "json"]);
    let chosen = host.run_in(&ns, "musl", &[binary.to_str().unwrap()], PLAN_A);
    let json = assert_one_app_beside_the_stub(trace, &root, ("musl-dynamic", "musl"), &chosen);
    let counters = &json["counters"];
    assert_eq!(
        (
            &counters["libc_lookups"],
            &counters["libc_lookups_seen_as_dns"]
        ),
        (&0.into(), &(PLAN_A.len() as u64).into()),
        "{counters}"
    );
}

/// NodeLocal DNSCache as Kubernetes runs it: a cache on a link-local
/// address (169.254.20.10) of the node, which every pod's
/// resolv.conf names. One app asks it over UDP, one over TCP (glibc's
/// `use-vc`, as a truncated answer or `options use-vc` makes it); each is
/// one client with its own lookups and connections, and the cache a
/// client of its own.
#[test]
fn apps_behind_a_node_local_cache_are_counted_over_udp_and_tcp() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("nodelocal");
    let ns = host.lab.client_ns.clone();
    let root = host.cgroups.relative_root();
    // On a dummy interface in Kubernetes; this kernel has no dummy
    // driver, and a local address routes the same on loopback.
    let status = Command::new("ip")
        .args(["-n", &ns, "addr", "add", "169.254.20.10/32", "dev", "lo"])
        .status();
    assert!(status.unwrap().success(), "ip addr add 169.254.20.10");
    let cache = host.cgroups.child("nodelocaldns").unwrap();
    host.lab
        .start_stub(&ns, "169.254.20.10", |program| {
            TestCgroup::command_in(&cache, program)
        })
        .expect("node-local cache");
    host.lab.client_resolv_conf("169.254.20.10").unwrap();
    let trace = host_trace(&root, &["--format", "json"]);
    let script = host.app_script.display().to_string();
    let over_udp = host.run_in(&ns, "udp", &["python3", &script], PLAN_A);
    let over_tcp = host.run_in(
        &ns,
        "tcp",
        &["env", "RES_OPTIONS=use-vc", "python3", &script],
        PLAN_B,
    );
    let (json, stderr) = stop_json(trace);
    let services = services(&json);
    let udp = format!("python3 in {root}/udp");
    let tcp = format!("python3 in {root}/tcp");
    let cache = format!("dnsmasq in {root}/nodelocaldns");
    assert_clients(&services, &[&cache, &tcp, &udp], &stderr);
    for (app, plan, chosen) in [(&udp, PLAN_A, &over_udp), (&tcp, PLAN_B, &over_tcp)] {
        let s = &services[app];
        assert_eq!(s["lookups"], plan.len() as u64, "{s}");
        assert_eq!(s["connections"], plan.len() as u64, "{s}");
        assert_eq!(row_counts(&json, app), counts(chosen), "{app}");
    }
    // The TCP app's lookups were TCP: one connection to the cache each.
    let counters = &json["counters"];
    assert_eq!(
        counters["connection_attempts"].as_u64().unwrap()
            - counters["connection_attempts_to_backends"]
                .as_u64()
                .unwrap(),
        PLAN_B.len() as u64,
        "{counters}"
    );
}

/// A pool that resolved once and never asks again keeps connecting to an
/// address DNS has since dropped. Its own answer stays in force (it never
/// replaced it), so before only "does not re-resolve" was said; another
/// app on the host was given the fresher answer, and the address is
/// stale.
const STALE_POOL: &str = r#"
import socket, sys
name = sys.argv[1]
addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
def fetch(addr):
    with socket.create_connection((addr, 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
fetch(addrs[0])
print(addrs[0], flush=True)
sys.stdin.readline()
for _ in range(3):
    fetch(addrs[0])
print("done", flush=True)
"#;

#[test]
fn a_pool_still_using_an_address_dns_dropped_since_is_stale() {
    use std::io::{BufRead as _, Write as _};
    use xtask::record::failover;
    let Some(_guard) = live() else { return };
    let mut lab = Lab::new().expect("namespace lab");
    for line in failover::BEFORE.lines() {
        let addr = line.split_whitespace().next().unwrap();
        lab.add_backend(addr.parse().unwrap()).unwrap();
    }
    lab.start_dnsmasq(
        failover::BEFORE,
        &[format!("--local-ttl={}", failover::TTL_SECS)],
    )
    .expect("dnsmasq");
    lab.serve_tcp(&[80]).expect("backends");
    lab.client_resolv_conf(&xtask::lab::SERVER_V4.to_string())
        .unwrap();
    let mut cgroups = TestCgroup::new("stale").expect("test cgroup");
    let root = cgroups.relative_root();
    let script = lab.dir.join("stale.py");
    std::fs::write(&script, STALE_POOL).unwrap();
    let trace = host_trace(&root, &["--format", "json"]);

    let pool_dir = cgroups.child("pool").unwrap();
    let mut pool = TestCgroup::command_in(&pool_dir, "ip")
        .args(["netns", "exec", &lab.client_ns, "python3"])
        .arg(&script)
        .arg(failover::NAME)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the pool");
    let mut lines = std::io::BufReader::new(pool.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), failover::DROPPED);
    // DNS drops it; another app on the host is given the fresher answer.
    lab.reload_hosts(
        failover::AFTER,
        failover::NAME,
        &["203.0.113.62", "203.0.113.63"],
    )
    .expect("reload");
    let other_dir = cgroups.child("other").unwrap();
    let other = TestCgroup::command_in(&other_dir, "ip")
        .args(["netns", "exec", &lab.client_ns, "dig", "+short"])
        .arg(failover::NAME)
        .output()
        .expect("dig");
    assert!(other.status.success());
    // Past the pool's own answer's TTL and the grace, it connects again.
    std::thread::sleep(Duration::from_millis(failover::PAUSE_MILLIS));
    writeln!(pool.stdin.as_mut().unwrap(), "go").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "done");
    assert!(pool.wait().unwrap().success());
    let (json, _) = stop_json(trace);
    let client = format!("python3 in {root}/pool");
    let s = service_where(&json, |s| s["client"] == client.as_str());
    assert_eq!(s["lookups"], 1, "{s}");
    assert_eq!(s["connections"], 4, "{s}");
    let stale = verdict(s, "stale_backends");
    assert_eq!(stale["finding"], "stale", "{s}");
    assert_eq!(s["stale_backends"][0]["address"], failover::DROPPED, "{s}");
    assert_eq!(s["stale_backends"][0]["connections"], 3, "{s}");
}

/// `--cgroup` repeated: the apps of each named subtree, none of a sibling;
/// one subtree removed mid-trace is dropped with a warning while the trace
/// goes on; a subtree inside another is refused (its records would count
/// twice).
#[test]
fn several_cgroups_are_traced_together_and_one_may_go() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("many");
    let root = host.cgroups.relative_root();
    for name in ["a", "b", "c"] {
        host.cgroups.child(name).unwrap();
    }
    let nested = connbal()
        .args(["trace", "--cgroup", &root, "--cgroup", &format!("{root}/a")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&nested.stderr);
    assert!(!nested.status.success(), "{said}");
    assert!(
        said.contains(&format!("--cgroup {root}/a is inside --cgroup {root}")),
        "{said}"
    );

    let (a, b) = (format!("{root}/a"), format!("{root}/b"));
    let mut command = connbal();
    command.args(["trace", "--cgroup", &a, "--cgroup", &b, "--format", "json"]);
    let trace = Trace::spawn(command);
    let chosen_a = host.run_app("a", PLAN_A);
    let chosen_b = host.run_app("b", PLAN_B);
    host.run_app("c", PLAN_B);
    std::fs::remove_dir(host.cgroups.root.join("b")).expect("remove cgroup b");
    // The trace checks its cgroups four times a second; a removed one
    // must not end it while another remains.
    std::thread::sleep(Duration::from_millis(800));
    let chosen_a_later = host.run_app("a", PLAN_B);
    let (json, stderr) = stop_json(trace);
    assert!(
        stderr.contains(&format!("cgroup {b} disappeared; still tracing the others")),
        "{stderr}"
    );
    assert_eq!(json["input"]["cgroups"], serde_json::json!([a, b]));
    assert_eq!(json["input"]["cgroups_gone"], serde_json::json!([b]));
    assert_eq!(json["input"]["ended"], "signal SIGINT");
    let services = services(&json);
    let clients: Vec<&String> = services.keys().collect();
    let (app_a, app_b) = (format!("python3 in {a}"), format!("python3 in {b}"));
    assert_eq!(clients, [&app_a, &app_b], "c and the stub are not traced");
    let mut both = chosen_a.clone();
    both.extend(chosen_a_later);
    assert_eq!(row_counts(&json, &app_a), counts(&both));
    assert_eq!(row_counts(&json, &app_b), counts(&chosen_b));
}

/// A reader that stops reading fills the pipe. The trace must neither
/// block on it (SIGTERM ignored, records not drained) nor keep its programs
/// attached: reports are skipped while it tracks on, and the last report
/// waits a bounded time after detaching.
#[test]
fn sigterm_ends_a_trace_whose_stdout_nobody_reads() {
    let Some(_guard) = live() else { return };
    let cgroups = TestCgroup::new("stall").expect("test cgroup");
    let mut child = connbal()
        .args(["trace", "--cgroup", &cgroups.relative_root()])
        .args(["--interval", "50ms", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connbal trace");
    // Held, never read; the smallest pipe fills within a few reports.
    let unread = child.stdout.take().unwrap();
    nix::fcntl::fcntl(&unread, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).expect("F_SETPIPE_SZ");
    let stderr = xtask::lab::line_reader(child.stderr.take().unwrap());
    let mut seen = xtask::lab::wait_for_line(
        &stderr,
        "is not being read fast enough",
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("no warning about skipped reports: {e}")
    });
    let attached = || -> String {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(&cgroups.root)
            .output()
            .expect("bpftool cgroup show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(attached().contains("connbal"), "attached while tracing");
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    // Detached at once, though the last report has nowhere to go yet.
    wait_until(
        Duration::from_secs(3),
        || !attached().contains("connbal"),
        || format!("programs still attached after SIGTERM: {}", attached()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM ignored while stdout is full");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(unread);
    seen.extend(stderr.iter());
    let said = seen.join("\n");
    assert!(
        !status.success(),
        "the last report was lost: an error: {said}"
    );
    assert!(
        said.contains("stdout was not read for 10 s: the last report was not written"),
        "{said}"
    );
}

/// docs/semantics.md section 7 applies sections 2 to 5 per client: an app
/// that resolves the SRV set and connects to its targets is a client of
/// the SRV name, spread over its two equal targets; a health checker in
/// another cgroup that resolves one target by name and connects never
/// asked for the SRV record and is not its client. Before, SRV targets
/// were shared by every client (issue 24, item 8).
#[test]
fn an_srv_app_is_judged_on_its_targets_and_a_checker_of_one_target_is_not_its_client() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("srv");
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let plan: Vec<usize> = (0..12).map(|i| i % 2).collect();
    let used = host.run_srv_app("srv-app", &plan);
    let checker_used = host.run_app_on("checker", "s1.connbal.test", &[0; 4]);
    let (json, stderr) = stop_json(trace);
    assert_eq!(used.len(), 12, "{used:?}");
    assert_eq!(checker_used, ["203.0.113.97"; 4], "{checker_used:?}");

    let app = format!("python3 in {root}/srv-app");
    let s = service_where(&json, |s| {
        s["client"] == app.as_str() && s["name"] == "_app._tcp.connbal.test."
    });
    assert_eq!(s["connections"], 12, "{s}\n{stderr}");
    assert_eq!(s["backends"], 2, "{s}");
    let addresses: Vec<String> = used
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    let mut by_backend = BTreeMap::new();
    for row in json["rows"].as_array().unwrap() {
        if row["client"] == app.as_str() && row["name"] == "_app._tcp.connbal.test." {
            let address = row["backend"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string();
            *by_backend.entry(address).or_insert(0u64) += row["conns"].as_u64().unwrap();
        }
    }
    assert_eq!(by_backend, counts(&addresses), "{s}");
    for v in s["verdicts"].as_array().unwrap() {
        assert_eq!(v["ok"], true, "a well-behaved SRV client: {v}");
    }
    let checker = format!("python3 in {root}/checker");
    let of_checker: Vec<&serde_json::Value> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["client"] == checker.as_str() && s["name"] == "_app._tcp.connbal.test.")
        .collect();
    assert!(
        of_checker.is_empty(),
        "the checker never asked for the SRV set: {of_checker:?}"
    );
}

/// A long-running host: 70,000 cgroups come and go in batches of 1,000,
/// each batch seen by the trace (a lookup from one of them makes it walk
/// the subtree and name all the batch), more than the name table's 65,536.
/// An app in a cgroup made after all that is still named, not shown by id
/// (issue 25 item 5).
#[test]
fn live_cgroups_are_named_after_70000_came_and_went() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("churn");
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let ns = host.lab.client_ns.clone();
    for batch in 0..70 {
        let dirs: Vec<std::path::PathBuf> = (0..1000)
            .map(|i| host.cgroups.root.join(format!("gone-{batch}-{i}")))
            .collect();
        for dir in &dirs {
            std::fs::create_dir(dir).expect("a cgroup");
        }
        let seen = TestCgroup::command_in(&dirs[0], "ip")
            .args(["netns", "exec", &ns, "dig", "+short", "+tries=1", "+time=2"])
            .args(["@127.0.0.53", "web.connbal.test"])
            .output()
            .expect("dig");
        assert!(seen.status.success(), "{seen:?}");
        // The trace reads records every 50 ms; the batch must still be
        // there when it walks.
        std::thread::sleep(Duration::from_millis(150));
        for dir in &dirs {
            std::fs::remove_dir(dir).expect("remove a cgroup");
        }
    }
    host.run_app("live-app", PLAN_B);
    let (json, stderr) = stop_json(trace);
    let input = &json["input"];
    assert!(input["cgroups_forgotten"].as_u64().unwrap() > 0, "{input}");
    assert_eq!(input["cgroup_names_refused"], 0, "{input}\n{stderr}");
    let app = format!("python3 in {root}/live-app");
    assert_eq!(services(&json)[&app]["connections"], PLAN_B.len() as u64);
}

/// An app is its process: a Python app whose worker threads rename
/// themselves with prctl (`worker-0`..`worker-3`, what `comm` then says
/// for each thread) and each resolve and connect is one client named
/// `python3`, not four named after threads (issue 23). The trace is
/// stopped (SIGSTOP) while the app runs, so the app is gone, and its
/// /proc with it, before any of its records is read: the kernel program
/// names the process from its thread-group leader. With the thread's own
/// name in the records (no BTF offsets), it is four clients `worker-N`.
#[test]
fn a_python_app_whose_threads_rename_themselves_is_one_client() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("prctl");
    let script = host.lab.dir.join("threaded_app.py");
    std::fs::write(&script, THREADED_APP).unwrap();
    let root = host.cgroups.relative_root();
    let trace = host_trace(&root, &["--format", "json"]);
    let plan: Vec<usize> = (0..8).map(|i| i % 4).collect();
    let ns = host.lab.client_ns.clone();
    let tracer = trace.child.id().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill").args([sig, &tracer]).status().unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    let chosen = host.run_in(
        &ns,
        "threads",
        &["python3", script.to_str().unwrap()],
        &plan,
    );
    signal("-CONT");
    assert_one_app_beside_the_stub(trace, &root, ("python3", "threads"), &chosen);
}

/// `--window` live: an app pinned to one backend, then, after more than
/// the window with nothing to trace, spread evenly, then quiet again. A
/// report soon after the even spread judges it alone (the trace's clock
/// moved the window while the app was quiet), and the last, a window
/// later, judges nothing: no balance verdict. The counts hold every
/// connection throughout, as each log says.
#[test]
fn a_live_window_judges_the_recent_spread_and_counts_the_whole_trace() {
    let Some(_guard) = live() else { return };
    let mut host = HostLab::new("window");
    let root = host.cgroups.relative_root();
    // Marks every 10 s: a report within 5 s of the even spread's end has
    // its older mark at least 21 s after the pinned connections and no
    // later than the first even one (they take well under 5 s).
    let trace = host_trace(
        &root,
        &["--format", "json", "--window", "20s", "--interval", "4s"],
    );
    let pinned = host.run_app("app", &[0; 12]);
    std::thread::sleep(Duration::from_secs(21));
    let plan: Vec<usize> = (0..16).map(|i| i % 4).collect();
    let even = host.run_app("app", &plan);
    let even_done = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_secs(21));
    let (stdout, stderr) = stop(trace);
    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}: {stdout}")))
        .collect();
    let app = format!("python3 in {root}/app");
    let name = "web.connbal.test.";
    let service = |report: &serde_json::Value| {
        service_where(report, |s| s["client"] == app.as_str() && s["name"] == name).clone()
    };
    let ended = |report: &serde_json::Value| {
        humantime::parse_rfc3339(report["span"]["end"].as_str().unwrap()).unwrap()
    };
    let mut whole = counts(&pinned);
    for (backend, n) in counts(&even) {
        *whole.entry(backend).or_default() += n;
    }
    // The first report after the even spread, and the last.
    let soon = reports
        .iter()
        .find(|r| ended(r) > even_done)
        .unwrap_or_else(|| panic!("no report after the spread: {stdout}\n{stderr}"));
    assert!(
        ended(soon).duration_since(even_done).unwrap() < Duration::from_secs(5),
        "{soon}"
    );
    let last = reports.last().unwrap();
    for report in [soon, last] {
        let s = service(report);
        assert_eq!(s["connections"], 28, "{s}\n{stderr}");
        assert_eq!(s["lookups"], 28, "{s}");
        for row in report["rows"].as_array().unwrap() {
            if row["client"] == app.as_str() && row["name"] == name {
                let backend = row["backend"].as_str().unwrap();
                assert_eq!(row["conns"], whole[backend], "{row}");
            }
        }
        assert!(
            report["window"]["verdicts_since"].is_string(),
            "{}",
            report["window"]
        );
    }
    let s = service(soon);
    assert_eq!(s["window"]["connections"], 16, "{s}");
    assert_eq!(s["window"]["lookups"], 16, "{s}");
    let cells: BTreeMap<String, u64> = s["balance_cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let backend = c["backend"].as_str().unwrap().to_string();
            (backend, c["connections"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(cells, counts(&even), "{s}");
    assert_eq!(
        verdict(&s, "balance")["finding"],
        "consistent_with_random",
        "{s}"
    );
    let s = service(last);
    assert_eq!(s["window"]["connections"], 0, "{s}");
    assert!(
        s["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["check"] != "balance"),
        "{s}"
    );
}
