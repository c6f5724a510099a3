//! Helpers shared by the integration tests.
#![expect(dead_code, reason = "each test binary uses a different subset")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

pub fn connbal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_connbal"))
}

pub fn replay(args: &[&str]) -> Output {
    connbal()
        .arg("replay")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run connbal")
}

/// Runs `connbal replay ARGS` with `input` on stdin.
pub fn replay_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = connbal()
        .arg("replay")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run connbal");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 report")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Byte offsets where each record of a little-endian pcap file starts,
/// plus the file length: for cutting captures at record boundaries.
pub fn pcap_record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        starts.push(at);
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + caplen;
    }
    starts.push(bytes.len());
    starts
}

/// The report for the plan, line by line. Rows are sorted by client, then
/// name, then backend (spec 5: stable sorted order); `_` sorts before
/// letters, and IPv4 clients before IPv6 ones.
pub fn expected_default() -> String {
    let big = (71..=80).map(|n| {
        // A 10-target SRV set (port 7000) too large for UDP without EDNS:
        // dnsmasq's UDP answer has TC set and 7 of the records, which the
        // client ignores (RFC 2181 section 9), and so does connbal; the TCP
        // retry carries all 10 targets with their A records in the
        // additional section: dns 1 each. One connection, to .73.
        let conns = i32::from(n == 73);
        format!("198.051.100.010\t203.000.113.0{n}:7000\t{conns}\t1\t_big._tcp.connbal.test.")
    });
    let rest = [
        // SRV lookup of _xmpp-client._tcp: 3 targets with their A records in
        // the additional section, each counted once through the SRV target
        // (spec 3), under the service name, per SRV port 5222 (spec 4)...
        "198.051.100.010\t203.000.113.021:5222\t0\t1\t_xmpp-client._tcp.connbal.test.",
        // ...plus the client's own A lookup of xmpp2: a single answer, but for
        // a known SRV target, so it counts (dns 2); 2 connections to it.
        "198.051.100.010\t203.000.113.022:5222\t2\t2\t_xmpp-client._tcp.connbal.test.",
        "198.051.100.010\t203.000.113.023:5222\t0\t1\t_xmpp-client._tcp.connbal.test.",
        // alias -> CNAME mid -> CNAME pool (3 A records; 5 answers > 2, so the
        // CNAMEs do not abandon the message); credited to the canonical name,
        // twice.
        // One connection each to .31 and .33; .32 never: port `?`, conns 0.
        "198.051.100.010\t203.000.113.031:80\t1\t2\tpool.connbal.test.",
        "198.051.100.010\t203.000.113.032:?\t0\t2\tpool.connbal.test.",
        "198.051.100.010\t203.000.113.033:80\t1\t2\tpool.connbal.test.",
        // One lookup over TCP (reassembled from the stream), 4 addresses, one
        // connection.
        "198.051.100.010\t203.000.113.041:80\t1\t1\ttcp.connbal.test.",
        "198.051.100.010\t203.000.113.042:?\t0\t1\ttcp.connbal.test.",
        "198.051.100.010\t203.000.113.043:?\t0\t1\ttcp.connbal.test.",
        "198.051.100.010\t203.000.113.044:?\t0\t1\ttcp.connbal.test.",
        // 10 lookups of a 4-address name, one before each of 10 connections,
        // spread 4/3/0/3: the app resolves before every connect.
        "198.051.100.010\t203.000.113.011:80\t4\t10\tweb.connbal.test.",
        "198.051.100.010\t203.000.113.012:80\t3\t10\tweb.connbal.test.",
        "198.051.100.010\t203.000.113.013:?\t0\t10\tweb.connbal.test.",
        "198.051.100.010\t203.000.113.014:80\t3\t10\tweb.connbal.test.",
        // The AAAA set (Extension), asked and used over IPv6: 3 lookups,
        // connections 2/1/0. IPv6 backends print as [addr]:port, the client
        // in compressed form.
        "2001:db8:100::10\t[2001:db8:200::1]:443\t2\t3\tv6.connbal.test.",
        "2001:db8:100::10\t[2001:db8:200::2]:443\t1\t3\tv6.connbal.test.",
        "2001:db8:100::10\t[2001:db8:200::3]:?\t0\t3\tv6.connbal.test.",
        // Not here: one.connbal.test (a single A answer is not a backend set)
        // and 203.0.113.99 (never in DNS), though both got connections.
    ];
    big.chain(rest.iter().map(std::string::ToString::to_string))
        .fold(String::new(), |mut text, line| {
            text.push_str(&line);
            text.push('\n');
            text
        })
}

/// Whether root-only tests should run here. Off root they skip with a
/// printed reason, except under CI=true, where skipping is a failure.
pub fn root_tests_enabled(tools: &[&str]) -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut reasons = Vec::new();
    if !xtask::lab::is_root() {
        reasons.push("not running as root".to_string());
    }
    let missing = xtask::lab::missing_tools(tools);
    if !missing.is_empty() {
        reasons.push(format!("missing tools: {}", missing.join(", ")));
    }
    if reasons.is_empty() {
        return true;
    }
    let reason = reasons.join("; ");
    assert!(!in_ci, "CI=true but this root test cannot run: {reason}");
    eprintln!("skipped: {reason}");
    false
}

/// For root tests that share one kernel: `None` (skip, with the reason
/// printed) when they cannot run here, else the lock that makes them run
/// one at a time, held for the test.
pub fn live_tests(
    lock: &'static std::sync::Mutex<()>,
    tools: &[&str],
) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !root_tests_enabled(tools) {
        return None;
    }
    Some(
        lock.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Whether tests needing these tools (but not root) can run. Under CI=true
/// a missing tool fails the test instead of skipping it.
pub fn tools_available(tools: &[&str]) -> bool {
    let missing = xtask::lab::missing_tools(tools);
    if missing.is_empty() {
        return true;
    }
    let reason = format!("missing tools: {}", missing.join(", "));
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!in_ci, "CI=true but this test cannot run: {reason}");
    eprintln!("skipped: {reason}");
    false
}

/// A tmux server of its own (a private socket), running one command in a
/// pane of a fixed size; killed on drop, even when the test fails.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn run(shell_command: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "connbal-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "200", "-y", "60"])
            // The pane stays after the command, so its output can be read.
            .arg(format!("{shell_command}; echo '<<done>>'; sleep 120"))
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        Self { socket }
    }

    /// The pane's text, scrollback included; with `escapes`, the colour
    /// and attribute sequences too.
    pub fn capture(&self, escapes: bool) -> String {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket, "capture-pane", "-p", "-S", "-"]);
        if escapes {
            cmd.arg("-e");
        }
        let out = cmd.output().expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Only what is on screen now, without the scrollback.
    pub fn capture_visible(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `until` holds, at most `timeout`; returns every
    /// capture taken, the last one last.
    pub fn watch(&self, timeout: std::time::Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let screen = self.capture(false);
            let done = until(&screen);
            seen.push(screen);
            if done || std::time::Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits for the command to finish and returns the final pane.
    pub fn finished(&self, escapes: bool) -> String {
        let seen = self.watch(std::time::Duration::from_mins(1), |s| {
            s.contains("<<done>>")
        });
        let last = seen.last().expect("at least one capture");
        assert!(last.contains("<<done>>"), "command did not finish:\n{last}");
        self.capture(escapes)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// Quotes a path for the shell tmux runs the command with.
pub fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Polls `done` every 50 ms until it holds; fails with `what()` (which
/// says what is still wrong) after `limit`.
pub fn wait_until(
    limit: std::time::Duration,
    mut done: impl FnMut() -> bool,
    what: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{}", what());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// How long a trace gets to attach, and to exit after a signal.
pub const TRACE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A running `connbal trace`, from `Trace::spawn` until it exits.
pub struct Trace {
    pub child: std::process::Child,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    pub stderr_seen: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
}

pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Trace {
    /// Starts `command` (a `connbal trace …`, however wrapped: in a
    /// namespace, under setpriv) and waits until it says it is attached.
    pub fn spawn(mut command: Command) -> Trace {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start connbal trace");
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
            text
        });
        let stderr_lines = xtask::lab::line_reader(child.stderr.take().unwrap());
        let mut trace = Trace {
            child,
            stderr_lines,
            stderr_seen: Vec::new(),
            stdout,
        };
        match xtask::lab::wait_for_line(&trace.stderr_lines, "connbal: tracing ", TRACE_WAIT) {
            Ok(seen) => {
                trace.stderr_seen = seen;
                trace
            }
            Err(e) => {
                let _ = trace.child.kill();
                panic!("connbal trace did not attach: {e}");
            }
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, signal: &str) {
        assert!(Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .unwrap()
            .success());
    }

    /// Waits (bounded) for the process to end by itself.
    pub fn wait(mut self) -> Finished {
        let deadline = std::time::Instant::now() + TRACE_WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("connbal trace did not exit in {TRACE_WAIT:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let stdout = self.stdout.join().unwrap();
        // The stderr thread ends at EOF; collect what it read.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Ok(line) = self
            .stderr_lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            self.stderr_seen.push(line);
        }
        Finished {
            status,
            stdout,
            stderr: self.stderr_seen.join("\n"),
        }
    }

    pub fn stop(self, signal: &str) -> Finished {
        self.signal(signal);
        self.wait()
    }
}

/// The report of the failover capture (`xtask::record::record_failover`),
/// as JSON: what its plan makes certain, with `exact` also the numbers
/// that depend on the recording's timing (the committed capture's).
pub fn check_failover_report(json: &serde_json::Value, exact: bool) {
    use xtask::record::failover;
    let services = json["services"].as_array().expect("services");
    assert_eq!(services.len(), 1, "{json}");
    let s = &services[0];
    assert_eq!(s["name"], format!("{}.", failover::NAME));
    let rows: Vec<(String, u64, u64)> = json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["backend"].as_str().unwrap().to_string(),
                r["conns"].as_u64().unwrap(),
                r["dns"].as_u64().unwrap(),
            )
        })
        .collect();
    // .61 was in the first answer only; each backend got one connection
    // per round, and .61 one more after it was dropped.
    assert_eq!(
        rows,
        [
            ("203.0.113.61".to_string(), 2, 1),
            ("203.0.113.62".to_string(), 2, 2),
            ("203.0.113.63".to_string(), 2, 2),
        ]
    );
    assert_eq!(s["answer_sets"], 2);
    assert_eq!(s["lookups"], 2);
    assert_eq!(s["connections_after_expiry"], 0);
    let expect = |check: &str, finding: &str, ok: bool| {
        let v = verdict(s, check);
        assert_eq!(
            (v["finding"].as_str(), v["ok"].as_bool()),
            (Some(finding), Some(ok)),
            "{v}"
        );
        v
    };
    expect("unused_backends", "all_used", true);
    expect("ttl", "honours_ttl", true);
    expect("failing_backends", "all_answered", true);
    // In force: 3 connections over three addresses, then 2 over two; 1/2/2
    // is exactly what was expected, so chi-square is 0.
    let balance = expect("balance", "consistent_with_random", true);
    assert_eq!(s["balance"]["chi_square"], 0.0, "{balance}");
    assert_eq!(s["balance"]["over_answers_in_force"], true);
    let stale = expect("stale_backends", "stale", false);
    let list = s["stale_backends"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{s}");
    assert_eq!(list[0]["address"], failover::DROPPED);
    assert_eq!(list[0]["connections"], 1);
    // The pause past the first answer's expiry, less the grace.
    let after = list[0]["max_secs_after_expiry"].as_f64().unwrap();
    let pause = failover::PAUSE_MILLIS as f64 / 1000.0 - f64::from(failover::TTL_SECS);
    assert!(after > pause - 0.5 && after < pause + 5.0, "{after}");
    if exact {
        assert_eq!(
            stale["text"],
            "connections to addresses DNS no longer offers: 203.0.113.61: 1 connection up to 2.1 s after the last answer holding it expired"
        );
    }
}

/// The service's verdict of `check`, which it must have.
pub fn verdict<'a>(service: &'a serde_json::Value, check: &str) -> &'a serde_json::Value {
    service["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["check"] == check)
        .unwrap_or_else(|| panic!("no {check} verdict: {service}"))
}

/// The report's one service `matching`, which it must have.
pub fn service_where(
    json: &serde_json::Value,
    matching: impl Fn(&serde_json::Value) -> bool,
) -> &serde_json::Value {
    json["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| matching(s))
        .unwrap_or_else(|| panic!("no such service: {json}"))
}

/// A daemon in the way of nginx, HAProxy or c-ares: one UDP socket
/// connected to its resolver (argv 1) for its lifetime, opened before the
/// trace; prints `open`, waits (60 s at most) for the gate file (argv 4),
/// then for each choice of the plan (argv 3, comma-separated) looks the
/// name (argv 2) up with a plain `send` on that socket (which passes
/// neither the connect nor the sendmsg hook) and connects to the chosen
/// backend of the sorted answer; prints each, then `done`.
pub const RESOLVER_SOCKET_DAEMON: &str = r#"
import os, socket, struct, sys, time
server, name, plan, gate = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")], sys.argv[4]
resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
resolver.connect((server, 53))
resolver.settimeout(5)
print("open", flush=True)
deadline = time.time() + 60
while not os.path.exists(gate) and time.time() < deadline:
    time.sleep(0.05)
qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
def skip_name(r, i):
    while r[i]:
        if r[i] & 0xC0 == 0xC0:
            return i + 2
        i += r[i] + 1
    return i + 1
def lookup(qid):
    resolver.send(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1))
    r = resolver.recv(4096)
    i, addrs = skip_name(r, 12) + 4, []
    for _ in range(struct.unpack(">H", r[6:8])[0]):
        i = skip_name(r, i)
        kind, _, _, length = struct.unpack(">HHIH", r[i:i + 10])
        i += 10
        if kind == 1:
            addrs.append(socket.inet_ntoa(r[i:i + length]))
        i += length
    return sorted(addrs)
for n, choice in enumerate(plan):
    addrs = lookup(n + 1)
    addr = addrs[choice % len(addrs)]
    with socket.create_connection((addr, 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    print(addr, flush=True)
print("done", flush=True)
"#;

/// A plan as the apps take it: choices, comma-separated.
pub fn plan_text(plan: &[usize]) -> String {
    plan.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A Prometheus server on loopback with the shipped rules, scraping
/// connbal every second; stopped (and its data removed with the lab's
/// directory) on drop.
pub struct Prometheus {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    /// The network namespace it runs in (`ip netns exec`), if not this one.
    ns: Option<String>,
}

impl Prometheus {
    pub fn start(dir: &std::path::Path, connbal_ports: &[u16]) -> Prometheus {
        Self::start_in(None, dir, connbal_ports)
    }

    /// In network namespace `ns`, when given (where the agents it scrapes
    /// listen), scraping an agent on each of `connbal_ports`.
    pub fn start_in(ns: Option<&str>, dir: &std::path::Path, connbal_ports: &[u16]) -> Prometheus {
        let rules = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/prometheus/connbal.rules.yml")
            .canonicalize()
            .expect("the shipped rules");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: connbal\n    static_configs:\n      - targets: [{}]\n",
                rules.display(),
                connbal_ports
                    .iter()
                    .map(|port| format!("'127.0.0.1:{port}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .unwrap();
        let port = free_loopback_port();
        let log = dir.join("prometheus.log");
        let child = in_ns(ns, "prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            port,
            log,
            ns: ns.map(str::to_string),
        }
    }

    /// GET `path` of its HTTP API, as JSON (null when it does not answer).
    fn api(&self, path: &str) -> serde_json::Value {
        let out = in_ns(self.ns.as_deref(), "curl")
            .args(["-sf", "--max-time", "5", "-G"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// An instant PromQL query's result vector (empty when none yet).
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        self.api(&format!("/api/v1/query?query={encoded}"))["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The alerts pending or firing, as (alertname, client, check).
    pub fn alerts(&self) -> std::collections::BTreeSet<(String, String, String)> {
        self.api("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let label = |l: &str| a["labels"][l].as_str().unwrap_or_default().to_string();
                (label("alertname"), label("client"), label("check"))
            })
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, run in network namespace `ns` when given.
fn in_ns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, program]);
            command
        }
        None => Command::new(program),
    }
}

/// Debian's Python, whose modules are the packages `cargo xtask setup`
/// installs (python3-yaml, python3-kubernetes): a `python3` earlier on
/// PATH (a pyenv shim) may not see them.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// deploy/kubernetes/connbal.yaml.
pub fn manifest_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/connbal.yaml")
}

/// The documents of deploy/kubernetes/connbal.yaml, as JSON (through
/// Python's YAML reader: no YAML crate is a dependency).
pub fn manifests() -> Vec<serde_json::Value> {
    let path = manifest_path();
    let out = Command::new(SYSTEM_PYTHON)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the manifests as JSON")
}

/// The manifest of `kind`.
pub fn manifest(kind: &str) -> serde_json::Value {
    manifests()
        .into_iter()
        .find(|m| m["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes/connbal.yaml"))
}

/// A C client built with musl (`musl-gcc -static`), whose resolver sends
/// each query with `sendto` on an unconnected UDP socket: the case no
/// connect hook sees. Like the Python apps: for each choice of the plan
/// (argv 2, comma-separated) it resolves the name (argv 1) with
/// getaddrinfo, connects to port 80 of the chosen address of the sorted
/// answer, sends a request, reads to the end; prints each address.
const MUSL_CLIENT: &str = r#"
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int by_text(const void *a, const void *b) { return strcmp(a, b); }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME PLAN\n", argv[0]);
        return 2;
    }
    for (char *choice = strtok(argv[2], ","); choice; choice = strtok(NULL, ",")) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found;
        int error = getaddrinfo(argv[1], "80", &hints, &found);
        if (error) {
            fprintf(stderr, "getaddrinfo %s: %s\n", argv[1], gai_strerror(error));
            return 1;
        }
        char addrs[16][INET_ADDRSTRLEN];
        int n = 0;
        for (struct addrinfo *ai = found; ai && n < 16; ai = ai->ai_next) {
            char text[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, text, sizeof text);
            int seen = 0;
            for (int i = 0; i < n; i++) seen |= !strcmp(addrs[i], text);
            if (!seen) strcpy(addrs[n++], text);
        }
        freeaddrinfo(found);
        qsort(addrs, n, sizeof addrs[0], by_text);
        const char *addr = addrs[atoi(choice) % n];
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(80)};
        inet_pton(AF_INET, addr, &to.sin_addr);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct timeval timeout = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        if (connect(fd, (struct sockaddr *)&to, sizeof to)) {
            perror(addr);
            return 1;
        }
        const char request[] = "GET / HTTP/1.0\r\n\r\n";
        if (write(fd, request, sizeof request - 1) < 0) {
            perror("write");
            return 1;
        }
        char buf[4096];
        while (read(fd, buf, sizeof buf) > 0) {
        }
        close(fd);
        printf("%s\n", addr);
        fflush(stdout);
    }
    return 0;
}
"#;

/// The same client in Go with the pure-Go resolver (`PreferGo`, and no
/// cgo at all): its lookups are DNS it sends itself, never getaddrinfo.
const GO_CLIENT: &str = r#"package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	name, plan := os.Args[1], strings.Split(os.Args[2], ",")
	resolver := &net.Resolver{PreferGo: true}
	for _, choice := range plan {
		addrs, err := resolver.LookupIP(context.Background(), "ip4", name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lookup:", err)
			os.Exit(1)
		}
		texts := []string{}
		for _, a := range addrs {
			texts = append(texts, a.String())
		}
		sort.Strings(texts)
		n, _ := strconv.Atoi(choice)
		addr := texts[n%len(texts)]
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "80"), 5*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				break
			}
		}
		conn.Close()
		fmt.Println(addr)
	}
}
"#;

/// Builds `GO_CLIENT` into `dir` as `go-client`, statically (CGO off), and
/// returns its path.
pub fn build_go_client(dir: &Path) -> PathBuf {
    let source = dir.join("go-client.go");
    let binary = dir.join("go-client");
    std::fs::write(&source, GO_CLIENT).expect("write the Go client's source");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .env("HOME", dir)
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

/// Builds `MUSL_CLIENT` into `dir` as the static binary `musl-client`
/// (its process name), and returns its path.
pub fn build_musl_client(dir: &Path) -> PathBuf {
    build_c_client(dir, ("musl-gcc", &["-static"]), "musl-client")
}

/// The same client against musl, dynamically linked as on Alpine (its
/// getaddrinfo is in musl's loader, `ld-musl-x86_64.so.1`), as
/// `musl-dynamic`.
pub fn build_dynamic_musl_client(dir: &Path) -> PathBuf {
    build_c_client(dir, ("musl-gcc", &[]), "musl-dynamic")
}

/// A dynamically linked musl program that sleeps for the seconds given:
/// it keeps musl's loader mapped, as a long-running Alpine process does.
pub fn build_musl_sleeper(dir: &Path) -> PathBuf {
    build_c(
        dir,
        ("musl-gcc", &[]),
        ("musl-sleeper", "#include <stdlib.h>\n#include <unistd.h>\nint main(int c, char **v) { return c > 1 ? (int)sleep(atoi(v[1])) : 2; }\n"),
    )
}

/// The same client against glibc, dynamically linked as most programs
/// are (its getaddrinfo goes through NSS), as `gai-client`.
pub fn build_glibc_client(dir: &Path) -> PathBuf {
    build_c_client(dir, ("gcc", &[]), "gai-client")
}

fn build_c_client(dir: &Path, compiler: (&str, &[&str]), name: &str) -> PathBuf {
    build_c(dir, compiler, (name, MUSL_CLIENT))
}

fn build_c(dir: &Path, (compiler, flags): (&str, &[&str]), (name, code): (&str, &str)) -> PathBuf {
    let source = dir.join(format!("{name}.c"));
    let binary = dir.join(name);
    std::fs::write(&source, code).expect("write the C program's source");
    let out = Command::new(compiler)
        .args(flags)
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}
