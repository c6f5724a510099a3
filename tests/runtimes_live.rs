//! Checks docs/semantics.md section 7 (clients) against a real container
//! runtime: Debian's dockerd, started by this test in a network namespace
//! of its own (the host's firewall untouched), with `--cgroup-parent` a
//! cgroup this test created, so connbal's programs attach there and
//! nowhere else. No registry is reachable: the image is a minbase Debian
//! with python3 (mmdebstrap, cached in /var/cache/connbal-test), imported.
//!
//! podman runs the same way (no daemon; netavark's bridge and aardvark-dns
//! in that namespace, its network configuration in the test's directory).
//!
//! connbal asks each runtime's API (dockerd's socket, podman's `system
//! service`) for the client containers' names and compose labels.
//!
//! The scenario is the one Docker users run most: a user-defined network,
//! so containers resolve through Docker's embedded DNS (127.0.0.11, reached
//! through a DNAT to a high port inside each container), three backends
//! sharing `--network-alias web` (Docker's DNS round robin), and two
//! clients: one resolves before each of 12 connects, one resolves once and
//! keeps the first address for 8.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xtask::cgroup::TestCgroup;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const DOCKER_TOOLS: &[&str] = &[
    "dockerd",
    "docker",
    "mmdebstrap",
    "iptables",
    "nsenter",
    "ip",
];
const PODMAN_TOOLS: &[&str] = &["podman", "mmdebstrap", "nsenter", "ip", "pkill"];
const CONTAINERD_TOOLS: &[&str] = &[
    "containerd",
    "ctr",
    "mmdebstrap",
    "nsenter",
    "ip",
    "pkill",
    "tar",
];

/// A DNS server for the containerd scenario (no runtime DNS there), on
/// the address given: every A query gets the three backends, each on a
/// loopback address of the namespace. Its last argument is the test's
/// directory, so that the runtime's clean-up finds it.
const DNS_SERVER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    q, peer = s.recvfrom(512)
    qid, = struct.unpack(">H", q[:2])
    end = 12
    while q[end]:
        end += q[end] + 1
    question = q[12:end + 5]
    answers = b"".join(
        b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(a)
        for a in ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    )
    s.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 3, 0, 0) + question + answers, peer)
"#;
const IMAGE: &str = "connbal-test:python3";
const RUN_CONTAINERD: &str = "/run/containerd";
const ROOTFS: &str = "/var/cache/connbal-test/rootfs-bookworm-python3.tar";

/// A backend: answers each connection with a few bytes and closes it
/// (python3-minimal has no http.server).
const BACKEND: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
    c.close()
"#;

/// A backend on the address given as its first argument (the containerd
/// scenario's, on the namespace's loopback).
const BACKEND_AT: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 80))
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
    c.close()
"#;

/// A client: `each` resolves before every connection and goes round the
/// sorted answer; `once` resolves once and keeps the first address.
/// Prints the address of each connection.
const CLIENT: &str = r#"
import socket, sys
name, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
addrs = None
for i in range(n):
    if mode == "each" or addrs is None:
        addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    addr = addrs[i % len(addrs)] if mode == "each" else addrs[0]
    with socket.create_connection((addr, 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    print(addr, flush=True)
"#;

/// A client run in two halves: after the first it prints `half` and waits
/// for the gate file (the test stops a backend meanwhile). `each`
/// resolves before every connection, `once` keeps the first address.
/// Prints the address of each connection, `failed ADDR` for one that
/// failed.
const FAILOVER_CLIENT: &str = r#"
import os, socket, sys, time
name, mode, n, gate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
addrs = None
for i in range(n):
    if i == n // 2:
        print("half", flush=True)
        deadline = time.time() + 60
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.05)
    if mode == "each" or addrs is None:
        addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    addr = addrs[i % len(addrs)] if mode == "each" else addrs[0]
    try:
        with socket.create_connection((addr, 80), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass
        print(addr, flush=True)
    except OSError:
        print("failed", addr, flush=True)
"#;

/// A client that resolves over TCP before every connection, asking
/// Docker's embedded DNS (127.0.0.11:53) itself, as resolvers with `use-vc`
/// or a truncated answer do; goes round the sorted answer and prints the
/// address of each connection.
const TCP_CLIENT: &str = r#"
import random, socket, struct, sys
name, n = sys.argv[1], int(sys.argv[2])

def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def resolve(name):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    with socket.create_connection(("127.0.0.11", 53), timeout=5) as s:
        s.sendall(struct.pack(">H", len(query)) + query)
        (length,) = struct.unpack(">H", recv_exactly(s, 2))
        r = recv_exactly(s, length)
    answers = struct.unpack(">H", r[6:8])[0]
    i = 12 + len(qname) + 4
    addrs = set()
    for _ in range(answers):
        if r[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while r[i]:
                i += r[i] + 1
            i += 1
        rtype, _, _, rdlength = struct.unpack(">HHIH", r[i:i + 10])
        i += 10
        if rtype == 1:
            addrs.add(socket.inet_ntoa(r[i:i + 4]))
        i += rdlength
    return sorted(addrs)

for i in range(n):
    addrs = resolve(name)
    addr = addrs[i % len(addrs)]
    with socket.create_connection((addr, 80), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    print(addr, flush=True)
"#;

/// A container runtime run by this test: its CLI pointed at state in a
/// directory of its own, inside a network namespace of its own (so its
/// bridges and firewall rules are there, not on the host), its
/// containers' cgroups under one this test made. Everything it made is
/// removed on drop.
struct Runtime {
    ns: String,
    dir: PathBuf,
    /// The CLI and its global flags.
    cli: Vec<String>,
    /// Flags every `run` needs here.
    run_flags: Vec<String>,
    /// dockerd; podman's API service (podman itself has no daemon).
    daemon: Option<std::process::Child>,
    /// Where connbal asks for container names: the Docker Engine API's
    /// socket; containerd's state directory.
    api: PathBuf,
    /// Whether /run/containerd was there before: containerd's shims put
    /// their sockets in /run/containerd/s whatever the daemon's state
    /// directories, and leave the directory behind.
    had_run_containerd: bool,
    cgroups: TestCgroup,
}

impl Runtime {
    fn prepare(name: &str) -> (String, PathBuf, TestCgroup) {
        let ns = format!("connbal-{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        std::fs::create_dir_all(dir.join("app")).unwrap();
        let cgroups = TestCgroup::new(name).expect("test cgroup");
        run(Command::new("ip").args(["netns", "add", &ns]));
        run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        (ns, dir, cgroups)
    }

    /// Debian's dockerd. nsenter, not `ip netns exec`: that remounts /sys,
    /// which hides the cgroup mounts dockerd needs.
    fn docker() -> Runtime {
        let (ns, dir, cgroups) = Self::prepare("docker");
        let socket = format!("--host=unix://{}", dir.join("docker.sock").display());
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("dockerd")
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(&socket)
            .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
            .arg(format!("--cgroup-parent={}", cgroups.relative_root()))
            .args(["--bridge=none", "--storage-driver=vfs"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .expect("start dockerd");
        let runtime = Runtime {
            api: dir.join("docker.sock"),
            had_run_containerd: Path::new(RUN_CONTAINERD).exists(),
            ns,
            dir,
            cli: vec!["docker".into(), socket],
            run_flags: Vec::new(),
            daemon: Some(daemon),
            cgroups,
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        while !runtime.cmd(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                runtime.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        runtime
    }

    /// Debian's podman (netavark and aardvark-dns), rootful, its network
    /// configuration in the test's directory rather than /etc.
    fn podman() -> Runtime {
        let (ns, dir, cgroups) = Self::prepare("podman");
        let cli = vec![
            "nsenter".to_string(),
            format!("--net=/run/netns/{ns}"),
            "podman".into(),
            format!("--root={}", dir.join("root").display()),
            format!("--runroot={}", dir.join("run").display()),
            format!("--tmpdir={}", dir.join("tmp").display()),
            format!("--network-config-dir={}", dir.join("networks").display()),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=none".into(),
        ];
        // Its default rlimits are above these machines' hard limits.
        let run_flags = vec![
            "--ulimit=nofile=1024:1024".into(),
            "--ulimit=nproc=4096:4096".into(),
            format!("--cgroup-parent={}", cgroups.relative_root()),
        ];
        // Its Docker-compatible API, as `systemctl start podman.socket`
        // would serve it, over the same state.
        let api = dir.join("podman.sock");
        let (program, global) = cli.split_first().unwrap();
        let daemon = Command::new(program)
            .args(global)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", api.display()))
            .env("TMPDIR", dir.join("tmp"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .expect("start podman system service");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !api.exists() {
            assert!(Instant::now() < deadline, "podman's API did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Runtime {
            api,
            had_run_containerd: Path::new(RUN_CONTAINERD).exists(),
            ns,
            dir,
            cli,
            run_flags,
            daemon: Some(daemon),
            cgroups,
        }
    }

    /// Debian's containerd (its CRI plugin off: no kubelet here), driven
    /// with `ctr` in the `k8s.io` namespace, as kubelet's containers are.
    fn containerd() -> Runtime {
        let (ns, dir, cgroups) = Self::prepare("containerd");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let address = dir.join("containerd.sock");
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("containerd")
            .arg(format!("--root={}", dir.join("root").display()))
            .arg(format!("--state={}", dir.join("state").display()))
            .arg(format!("--address={}", address.display()))
            .arg(format!("--config={}", config.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .expect("start containerd");
        let runtime = Runtime {
            api: dir.join("state"),
            had_run_containerd: Path::new(RUN_CONTAINERD).exists(),
            ns,
            cli: vec![
                "ctr".into(),
                format!("--address={}", address.display()),
                "--namespace=k8s.io".into(),
            ],
            run_flags: vec!["--rootfs".into(), "--net-host".into()],
            dir,
            daemon: Some(daemon),
            cgroups,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !runtime.cmd(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                runtime.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        runtime
    }

    /// The test image, the `webnet` network, and three backends sharing
    /// the alias `web` (the runtime's DNS round robin).
    fn start_backends(&self) {
        self.ok(&["import", rootfs(), IMAGE]);
        self.ok(&["network", "create", "webnet"]);
        for i in 1..=3 {
            self.ok(&[
                "run",
                "-d",
                "--network",
                "webnet",
                "--network-alias",
                "web",
                "--name",
                &format!("backend{i}"),
                IMAGE,
                "python3",
                "-c",
                BACKEND,
            ]);
        }
    }

    /// connbal on the runtime's cgroups, JSON, asking its API for names.
    fn trace(&self) -> Trace {
        self.trace_with(&[])
    }

    /// The same, with more flags.
    fn trace_with(&self, extra: &[&str]) -> Trace {
        let mut command = connbal();
        command.args(["trace", "--cgroup", &self.cgroups.relative_root()]);
        command.args(["--format", "json", "--runtime-socket"]);
        command.arg(&self.api).args(extra);
        Trace::spawn(command)
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let (program, global) = self.cli.split_first().unwrap();
        let mut command = Command::new(program);
        command.args(global);
        if let Some((&"run", rest)) = args.split_first() {
            command.arg("run").args(&self.run_flags).args(rest);
        } else {
            command.args(args);
        }
        command
            .env("TMPDIR", self.dir.join("tmp"))
            .output()
            .expect("run the runtime's CLI")
    }

    /// The CLI with ARGS, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "{} {}: {}\n{}",
            self.cli[0],
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let ids = self.cmd(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.cmd(&["rm", "-f", id]);
        }
        let _ = self.cmd(&["network", "rm", "-f", "webnet"]);
        if let Some(daemon) = self.daemon.as_mut() {
            let _ = Command::new("kill")
                .args(["-TERM", &daemon.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        // Helpers the runtime left running with its state (aardvark-dns).
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.dir.display().to_string()])
            .status();
        // What it left mounted under its state (container namespaces,
        // layers).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|p| Path::new(p).starts_with(&self.dir))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for point in points {
                let _ = Command::new("umount").args(["-l", point]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !self.had_run_containerd {
            // Only when empty: anything else there is not ours. ctr's fifos
            // and runc's state go there too.
            let run = Path::new(RUN_CONTAINERD);
            for dir in ["s", "fifo", "runc/k8s.io", "runc"] {
                let _ = std::fs::remove_dir(run.join(dir));
            }
            let _ = std::fs::remove_dir(RUN_CONTAINERD);
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        // The cgroupfs driver also made the parent (and the containers'
        // directories) in each cgroup v1 hierarchy of this hybrid layout.
        let parent = self.cgroups.relative_root();
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for entry in entries.flatten() {
                let dir = entry.path().join(parent.trim_start_matches('/'));
                if let Ok(children) = std::fs::read_dir(&dir) {
                    for child in children.flatten() {
                        if child.file_type().is_ok_and(|t| t.is_dir()) {
                            let _ = std::fs::remove_dir(child.path());
                        }
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// Processes a test started beside a runtime, killed and reaped when it
/// ends, however it ends.
struct Helpers(Vec<std::process::Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGINT, then the JSON report, which must come with a clean exit.
fn report_of(trace: Trace) -> serde_json::Value {
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{}", finished.stdout))
}

fn run(command: &mut Command) {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's root filesystem, built once per machine (once per run of
/// the tests, whichever asks first).
fn rootfs() -> &'static str {
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = Path::new(ROOTFS);
    if !path.is_file() {
        // A directory here is an earlier build that mmdebstrap wrote as a
        // tree (it takes the format from the name, and `.partial` is no
        // archive's): built again, as a tarball this time.
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let partial = format!("{ROOTFS}.partial");
        let _ = std::fs::remove_dir_all(&partial);
        let _ = std::fs::remove_file(&partial);
        run(Command::new("mmdebstrap").args([
            "--variant=minbase",
            "--include=python3-minimal",
            "--format=tar",
            "--quiet",
            "bookworm",
            &partial,
        ]));
        std::fs::rename(&partial, ROOTFS).unwrap();
    }
    ROOTFS
}

/// The scenario on `runtime`: backends, the trace, both clients; the JSON
/// report and what each client chose.
fn scenario(runtime: &Runtime) -> (serde_json::Value, Vec<String>, Vec<String>) {
    runtime.start_backends();
    std::fs::write(runtime.dir.join("app/client.py"), CLIENT).unwrap();
    let volume = format!("{}:/app:ro", runtime.dir.join("app").display());

    let trace = runtime.trace();
    // Short-lived (`--rm`), named, and labelled as compose labels them.
    let client = |mode: &str, n: &str| -> Vec<String> {
        runtime
            .ok(&[
                "run",
                "--rm",
                "--network",
                "webnet",
                "-v",
                &volume,
                "--name",
                &format!("shop-{mode}-1"),
                "--label",
                "com.docker.compose.project=shop",
                "--label",
                &format!("com.docker.compose.service={mode}"),
                IMAGE,
                "python3",
                "/app/client.py",
                "web",
                mode,
                n,
            ])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let each = client("each", "12");
    let once = client("once", "8");
    std::thread::sleep(Duration::from_millis(300));
    let json = report_of(trace);
    (json, each, once)
}

/// Each client container is one service with exactly the lookups and
/// connections it made, connection by connection.
fn assert_exact(json: &serde_json::Value, each: &[String], once: &[String]) {
    assert_eq!(json["counters"]["unmatched_responses"], 0, "{json}");
    let services: Vec<&serde_json::Value> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "web." || s["name"] == "web.dns.podman.")
        .collect();
    assert_eq!(
        services.len(),
        2,
        "one service per client container: {json}"
    );
    let by_lookups = |lookups: u64| {
        services
            .iter()
            .find(|s| s["lookups"] == lookups)
            .unwrap_or_else(|| panic!("no client with {lookups} lookups: {json}"))
    };
    for (s, chosen, mode) in [
        (by_lookups(12), each, "each"),
        (by_lookups(1), once, "once"),
    ] {
        assert_eq!(s["connections"], chosen.len() as u64, "{s}");
        assert_eq!(s["client_info"]["command"], "python3", "{s}");
        assert_eq!(rows_of(json, s), counts(chosen), "{s}");
        // Named as its runtime names it, from the runtime's API.
        let info = &s["client_info"];
        assert_eq!(info["container_name"], format!("shop-{mode}-1"), "{s}");
        assert_eq!(info["compose_project"], "shop", "{s}");
        assert_eq!(info["compose_service"], mode, "{s}");
        // podman calls it localhost/connbal-test:python3.
        assert!(info["image"].as_str().unwrap().ends_with(IMAGE), "{s}");
        assert!(
            s["client"]
                .as_str()
                .unwrap()
                .ends_with(&format!(" shop-{mode}-1")),
            "{s}"
        );
    }
    // The runtime's round robin, followed: 4/4/4 over the three backends.
    assert_eq!(counts(each).values().collect::<Vec<_>>(), [&4, &4, &4]);
}

/// Docker resolves through its embedded DNS on 127.0.0.11, reached through
/// a DNAT to a high port in each container: before, none of it was seen
/// (0 services; the queries went to the high port, and all 13 responses
/// were unmatched).
#[test]
fn containers_on_a_user_defined_docker_network_are_counted_exactly() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, DOCKER_TOOLS) else {
        return;
    };
    let docker = Runtime::docker();
    let (json, each, once) = scenario(&docker);
    assert_exact(&json, &each, &once);
}

/// podman (netavark, aardvark-dns on the bridge's address, no DNAT): it was
/// exact already; this keeps it so.
#[test]
fn containers_on_a_podman_network_are_counted_exactly() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, PODMAN_TOOLS) else {
        return;
    };
    let podman = Runtime::podman();
    let (json, each, once) = scenario(&podman);
    assert_exact(&json, &each, &once);
    // Named by its runtime, from the cgroup podman made.
    let services = json["services"].as_array().unwrap();
    assert!(
        services
            .iter()
            .filter(|s| s["client_info"]["command"] == "python3")
            .all(|s| s["client_info"]["container_runtime"] == "podman"),
        "{json}"
    );
}

fn counts(chosen: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for addr in chosen {
        *counts.entry(addr.clone()).or_default() += 1;
    }
    counts
}

/// Connections per backend of one service, from the JSON rows.
fn rows_of(json: &serde_json::Value, service: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in json["rows"].as_array().unwrap() {
        if row["client"] == service["client"] && row["name"] == service["name"] {
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

/// Failover from a stopped container: midway through two clients' runs,
/// the backend the pinning client chose is stopped. Docker's DNS stops
/// offering it, so the client that resolves before every connection goes
/// on over the other two, all answered; the pinning client keeps trying
/// the stopped one, and its failed attempts are counted and judged
/// (failing_backends), each report row equal to the clients' logs.
#[test]
fn a_client_fails_over_from_a_stopped_docker_container() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, DOCKER_TOOLS) else {
        return;
    };
    let docker = Runtime::docker();
    docker.start_backends();
    std::fs::write(docker.dir.join("app/client.py"), FAILOVER_CLIENT).unwrap();
    let volume = format!("{}:/app", docker.dir.join("app").display());
    let gate = docker.dir.join("app/gate");

    let trace = docker.trace();
    let start = |mode: &str, n: &str| {
        docker
            .ok(&[
                "run",
                "-d",
                "--network",
                "webnet",
                "-v",
                &volume,
                "--name",
                &format!("failover-{mode}"),
                IMAGE,
                "python3",
                "/app/client.py",
                "web",
                mode,
                n,
                "/app/gate",
            ])
            .trim()
            .to_string()
    };
    let (each, once) = (start("each", "12"), start("once", "8"));
    let logs = |id: &str| -> Vec<String> {
        docker
            .ok(&["logs", id])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_mins(1);
    while !(logs(&each).contains(&"half".to_string()) && logs(&once).contains(&"half".to_string()))
    {
        assert!(
            Instant::now() < deadline,
            "the clients did not reach half way"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stop the backend the pinning client chose.
    let pinned = logs(&once)[0].clone();
    let stopped = (1..=3)
        .map(|i| format!("backend{i}"))
        .find(|b| {
            docker
                .ok(&[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    b,
                ])
                .trim()
                == pinned
        })
        .expect("the pinned backend");
    docker.ok(&["stop", "-t", "1", &stopped]);
    std::fs::write(&gate, "").unwrap();
    for id in [&each, &once] {
        assert_eq!(docker.ok(&["wait", id]).trim(), "0");
    }
    std::thread::sleep(Duration::from_millis(300));
    let json = report_of(trace);

    let service = |container: &str| {
        service_where(&json, |s| {
            s["name"] == "web." && s["client_info"]["container_name"] == container
        })
    };
    // Per backend: (answered, failed) from a client's log.
    let outcomes_logged = |lines: &[String]| {
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for line in lines.iter().filter(|l| *l != "half") {
            match line.strip_prefix("failed ") {
                Some(addr) => by.entry(addr.to_string()).or_default().1 += 1,
                None => by.entry(line.clone()).or_default().0 += 1,
            }
        }
        by
    };
    let outcomes_reported = |s: &serde_json::Value| {
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for row in json["rows"].as_array().unwrap() {
            if row["client"] == s["client"] && row["name"] == s["name"] && row["conns"] != 0 {
                let o = &row["outcomes"];
                let failed = o["refused"].as_u64().unwrap() + o["unanswered"].as_u64().unwrap();
                let entry = by
                    .entry(row["backend"].as_str().unwrap().to_string())
                    .or_default();
                entry.0 += o["answered"].as_u64().unwrap();
                entry.1 += failed;
            }
        }
        by
    };

    let each_log = logs(&each);
    let s = service("failover-each");
    assert_eq!(s["lookups"], 12, "{s}");
    assert_eq!(outcomes_reported(s), outcomes_logged(&each_log), "{s}");
    assert!(
        !each_log.iter().any(|l| l.starts_with("failed")),
        "the resolving client never met the stopped backend: {each_log:?}"
    );
    assert_eq!(verdict(s, "failing_backends")["ok"], true, "{s}");
    // After the stop, its answers left the stopped backend out.
    assert!(!each_log[7..].contains(&pinned), "{each_log:?}");

    let once_log = logs(&once);
    let s = service("failover-once");
    assert_eq!(s["lookups"], 1, "{s}");
    let logged = outcomes_logged(&once_log);
    assert_eq!(logged[&pinned], (4, 4), "{once_log:?}");
    assert_eq!(outcomes_reported(s), logged, "{s}");
    let failing = verdict(s, "failing_backends");
    assert_eq!(failing["ok"], false, "{s}");
    assert!(
        failing["text"].as_str().unwrap().contains(&pinned),
        "{failing}"
    );
}

/// DNS over TCP to Docker's embedded DNS: the container connects to
/// 127.0.0.11:53 and a DNAT moves the stream to a high port, which is all
/// the socket's egress hook sees. Before, the queries were not recorded at
/// all (the stream's segments went to a port other than 53) and the client
/// was missing from the report.
#[test]
fn dns_over_tcp_through_dockers_dnat_is_counted() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, DOCKER_TOOLS) else {
        return;
    };
    let docker = Runtime::docker();
    docker.start_backends();
    std::fs::write(docker.dir.join("app/tcp_client.py"), TCP_CLIENT).unwrap();
    web_client_counted_exactly(
        &docker,
        "tcp-client",
        &["python3", "/app/tcp_client.py", "web", "9"],
    );
}

/// Runs `command` to its end in a container `name` on webnet, with the
/// test's app directory at /app, under a trace; checks that its client
/// resolved `web` before each of its 9 connections and connected where
/// its log (one address a line) says, 3 to each backend. Its service,
/// for more checks.
fn web_client_counted_exactly(docker: &Runtime, name: &str, command: &[&str]) -> serde_json::Value {
    let trace = docker.trace();
    let chosen = run_web_client(docker, (name, &[]), command);
    web_client_in(&report_of(trace), name, &chosen)
}

/// Runs `command` to its end in a container `name` on webnet with `flags`
/// and the test's app directory at /app; returns its log.
fn run_web_client(
    docker: &Runtime,
    (name, flags): (&str, &[&str]),
    command: &[&str],
) -> Vec<String> {
    let volume = format!("{}:/app:ro", docker.dir.join("app").display());
    let run = [
        &["run", "--network", "webnet", "-v", &volume, "--name", name][..],
        flags,
        &[IMAGE],
        command,
    ]
    .concat();
    let chosen: Vec<String> = docker.ok(&run).lines().map(str::to_string).collect();
    std::thread::sleep(Duration::from_millis(300));
    chosen
}

/// Checks that client `name` resolved `web` before each of its 9
/// connections and connected where `chosen` says, 3 to each backend;
/// returns its service.
fn web_client_in(json: &serde_json::Value, name: &str, chosen: &[String]) -> serde_json::Value {
    let s = service_where(json, |s| s["client_info"]["container_name"] == name);
    assert_eq!(s["name"], "web.", "{s}");
    assert_eq!(s["lookups"], 9, "{s}");
    assert_eq!(s["connections"], 9, "{s}");
    assert_eq!(rows_of(json, s), counts(chosen), "{s}");
    assert_eq!(counts(chosen).values().collect::<Vec<_>>(), [&3, &3, &3]);
    s.clone()
}

/// A container started after the trace began, resolving `web` from its
/// own /etc/hosts (`--add-host`): no DNS at all, so only getaddrinfo sees
/// its lookups, in a libc file no process mapped when the trace began.
/// With `--rescan-libc` the helper probes it within 500 ms of the
/// container's start, and the client is counted exactly; without, its
/// lookups are not seen and it is not in the report.
#[test]
fn a_container_of_an_image_started_later_is_probed_with_rescan_libc() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, DOCKER_TOOLS) else {
        return;
    };
    let docker = Runtime::docker();
    std::fs::write(docker.dir.join("app/client.py"), CLIENT).unwrap();
    let trace = docker.trace_with(&["--rescan-libc"]);
    docker.start_backends();
    let hosts: Vec<String> = (1..=3)
        .map(|i| {
            let address = docker.ok(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &format!("backend{i}"),
            ]);
            format!("web:{}", address.trim())
        })
        .collect();
    let flags: Vec<&str> = hosts
        .iter()
        .flat_map(|h| ["--add-host", h.as_str()])
        .collect();
    // The helper looks every 500 ms for processes started since; this
    // dockerd's vfs driver gives each container a libc file of its own, so
    // the client waits for a look before its first lookup.
    let command = [
        "sh",
        "-c",
        "sleep 2; exec python3 /app/client.py web each 9",
    ];
    let chosen = run_web_client(&docker, ("hosts-client", &flags), &command);
    // The helper is connbal's one child, and holds only what probing
    // needs: CAP_SYS_ADMIN (21), CAP_SYS_PTRACE (19), CAP_DAC_READ_SEARCH
    // (2), CAP_PERFMON (38) and CAP_BPF (39); connbal itself holds none.
    let trace_pid = trace.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{trace_pid}/task/{trace_pid}/children")).unwrap();
    let helper = children
        .split_whitespace()
        .next()
        .expect("the helper")
        .to_string();
    let cap_eff = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(cap_eff(&helper), "000000c000280004");
    assert_eq!(cap_eff(&trace_pid), "0000000000000000");
    let json = report_of(trace);
    assert!(
        !std::path::Path::new(&format!("/proc/{helper}")).exists(),
        "the helper outlived the trace"
    );
    web_client_in(&json, "hosts-client", &chosen);
    let counters = &json["counters"];
    assert_eq!(counters["libc_lookups"], 9, "{counters}");
    assert_eq!(counters["libc_lookups_seen_as_dns"], 0, "{counters}");

    // Without it: the image's libc is not probed (its backends restarted
    // after the trace began), and the client is not in the report.
    for i in 1..=3 {
        docker.ok(&["stop", "-t", "1", &format!("backend{i}")]);
    }
    let trace = docker.trace();
    for i in 1..=3 {
        docker.ok(&["start", &format!("backend{i}")]);
    }
    run_web_client(&docker, ("hosts-client-2", &flags), &command);
    let json = report_of(trace);
    let unseen = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["client_info"]["container_name"] != "hosts-client-2");
    assert!(unseen, "{json}");
    assert_eq!(json["counters"]["libc_lookups"], 0);
}

/// A static musl binary in a container: musl's resolver sends each query
/// to 127.0.0.11:53 with `sendto` on a socket it never connects, and
/// Docker's DNAT moves it to a high port before the socket's egress
/// program sees it. No hook names that socket; the egress program takes
/// the task sending it, and the query is the one sent to 127.0.0.11:53.
#[test]
fn a_musl_container_resolving_with_sendto_through_dockers_dnat_is_counted() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, &[DOCKER_TOOLS, &["musl-gcc"]].concat()) else {
        return;
    };
    let docker = Runtime::docker();
    docker.start_backends();
    build_musl_client(&docker.dir.join("app"));
    let plan = [0, 1, 2, 0, 1, 2, 0, 1, 2];
    let s = web_client_counted_exactly(
        &docker,
        "musl-client",
        &["/app/musl-client", "web", &plan_text(&plan)],
    );
    assert_eq!(s["client_info"]["command"], "musl-client", "{s}");
}

/// A daemon container started before the trace, resolving over one UDP
/// socket it connected to Docker's embedded DNS at start (as nginx,
/// HAProxy and c-ares do): its queries leave through Docker's DNAT to a
/// high port, from a socket no hook saw connect. The walk at start gives
/// the socket its owner, and the DNAT'd query is still the one the app
/// sent to 127.0.0.11:53.
#[test]
fn a_daemon_container_resolving_over_a_socket_from_before_the_trace_is_counted() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, DOCKER_TOOLS) else {
        return;
    };
    let docker = Runtime::docker();
    docker.start_backends();
    std::fs::write(docker.dir.join("app/daemon.py"), RESOLVER_SOCKET_DAEMON).unwrap();
    std::fs::create_dir_all(docker.dir.join("gate")).unwrap();
    let app = format!("{}:/app:ro", docker.dir.join("app").display());
    let gate = format!("{}:/gate", docker.dir.join("gate").display());
    let plan = [0, 1, 2, 0, 1, 2, 0, 1, 2];
    docker.ok(&[
        "run",
        "-d",
        "--network",
        "webnet",
        "-v",
        &app,
        "-v",
        &gate,
        "--name",
        "daemon",
        IMAGE,
        "python3",
        "/app/daemon.py",
        "127.0.0.11",
        "web",
        &plan_text(&plan),
        "/gate/go",
    ]);
    let logs = || docker.ok(&["logs", "daemon"]);
    wait_until(Duration::from_secs(30), || logs().contains("open"), logs);
    let trace = docker.trace();
    std::fs::write(docker.dir.join("gate/go"), "").unwrap();
    wait_until(Duration::from_mins(1), || logs().contains("done"), logs);
    let chosen: Vec<String> = logs()
        .lines()
        .filter(|line| !matches!(*line, "open" | "done"))
        .map(str::to_string)
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let json = report_of(trace);
    let s = service_where(&json, |s| s["client_info"]["container_name"] == "daemon");
    assert_eq!(s["name"], "web.", "{s}");
    assert_eq!(s["lookups"], plan.len() as u64, "{s}");
    assert_eq!(s["connections"], plan.len() as u64, "{s}");
    assert_eq!(rows_of(&json, s), counts(&chosen), "{s}");
    assert_eq!(counts(&chosen).values().collect::<Vec<_>>(), [&3, &3, &3]);
}

/// connbal's image (deploy/image/Dockerfile), built by the real daemon and
/// run the way the DaemonSet runs it: the host's network and cgroup
/// namespace, cgroup2 mounted read-only, every capability dropped but
/// CAP_SYS_ADMIN (CAP_BPF and CAP_PERFMON, which this Docker cannot name)
/// and CAP_NET_ADMIN. It traces the other containers on the same daemon,
/// serves their spread as metrics, and on `docker stop` (SIGTERM) exits 0
/// with nothing left attached. A real Prometheus scrapes it.
#[test]
fn the_agent_image_traces_the_other_containers_as_the_daemonset_runs_it() {
    let tools = [DOCKER_TOOLS, &["curl", "bpftool", "prometheus", "python3"]].concat();
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, &tools) else {
        return;
    };
    let docker = Runtime::docker();
    docker.start_backends();
    // No registry here: the imported rootfs stands in for the base image,
    // by its name.
    docker.ok(&["tag", IMAGE, "debian:bookworm-slim"]);
    // The build context holds what the Dockerfile copies: the binary under
    // test, where a release build puts it.
    let context = docker.dir.join("image");
    std::fs::create_dir_all(context.join("target/release")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_connbal"),
        context.join("target/release/connbal"),
    )
    .unwrap();
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/Dockerfile");
    std::fs::copy(&dockerfile, context.join("Dockerfile")).unwrap();
    docker.ok(&["build", "-t", "connbal:test", context.to_str().unwrap()]);
    let root = docker.cgroups.relative_root();
    let cgroup2 = xtask::cgroup::mount().expect("cgroup2 mount");
    let mount = format!("{}:{}:ro", cgroup2.display(), cgroup2.display());
    let socket = format!("{}:/run/docker.sock", docker.api.display());
    // The DaemonSet's own arguments (deploy/kubernetes/connbal.yaml),
    // scoped to this test's cgroups.
    let daemonset = manifest("DaemonSet");
    let args: Vec<&str> = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the DaemonSet's args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut run = vec![
        "run",
        "-d",
        "--name",
        "connbal-agent",
        "--network",
        "host",
        "--cgroupns",
        "host",
        "--cap-drop",
        "ALL",
        // Debian's Docker 20.10 predates CAP_BPF and CAP_PERFMON in its
        // capability list ("unknown capability"); CAP_SYS_ADMIN is what
        // they split from, and what connbal accepts in their place.
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        &mount,
        "-v",
        &socket,
        "connbal:test",
    ];
    run.extend(&args);
    run.extend(["--cgroup", &root]);
    docker.ok(&run);
    let scrape = || {
        Command::new("ip")
            .args(["netns", "exec", &docker.ns, "curl", "-sf"])
            .arg("http://127.0.0.1:9464/metrics")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    let logs = || {
        let out = docker.cmd(&["logs", "connbal-agent"]);
        format!("{}{}", stdout(&out), stderr(&out))
    };
    wait_until(Duration::from_secs(30), || scrape().contains("# EOF"), logs);
    std::fs::write(docker.dir.join("app/client.py"), CLIENT).unwrap();
    let volume = format!("{}:/app:ro", docker.dir.join("app").display());
    let chosen: Vec<String> = docker
        .ok(&[
            "run",
            "--rm",
            "--network",
            "webnet",
            "-v",
            &volume,
            "--name",
            "shop-each-1",
            IMAGE,
            "python3",
            "/app/client.py",
            "web",
            "each",
            "12",
        ])
        .lines()
        .map(str::to_string)
        .collect();
    let by_backend = counts(&chosen);
    // Every backend's series, with the client's container by name.
    let all_there = |text: &str| {
        by_backend.iter().all(|(backend, n)| {
            text.lines().any(|line| {
                line.starts_with("connbal_connections_total{")
                    && line.contains(&format!("server_address=\"{backend}\""))
                    && line.contains("container_name=\"shop-each-1\"")
                    && line.ends_with(&format!(" {n}"))
            })
        })
    };
    wait_until(
        Duration::from_secs(10),
        || all_there(&scrape()),
        || format!("{by_backend:?}\n{}\n{}", scrape(), logs()),
    );
    // And a real Prometheus, on the same network, sees the same spread.
    let prometheus = Prometheus::start_in(Some(&docker.ns), &docker.dir, &[9464]);
    let scraped = || -> BTreeMap<String, u64> {
        prometheus
            .query("sum by (server_address) (connbal_connections_total{container_name=\"shop-each-1\"})")
            .iter()
            .filter_map(|sample| {
                let backend = sample["metric"]["server_address"].as_str()?.to_string();
                let value = sample["value"][1].as_str()?.parse().ok()?;
                Some((backend, value))
            })
            .collect()
    };
    wait_until(
        Duration::from_secs(30),
        || scraped() == by_backend,
        || format!("{by_backend:?} != {:?}\n{}", scraped(), prometheus.log()),
    );
    drop(prometheus);
    let stop = docker.ok(&["stop", "-t", "10", "connbal-agent"]);
    assert!(stop.contains("connbal-agent"), "{stop}");
    let exit = docker.ok(&["inspect", "-f", "{{.State.ExitCode}}", "connbal-agent"]);
    assert_eq!(exit.trim(), "0", "{}", logs());
    let attached = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup2.join(root.trim_start_matches('/')))
        .output()
        .unwrap();
    assert!(
        stdout(&attached).trim().is_empty(),
        "left attached: {}",
        stdout(&attached)
    );
}

/// A pod's container on containerd, started as kubelet starts them (in
/// containerd's `k8s.io` namespace, kubelet's pod annotations in its OCI
/// spec, a 64-hex id, `--rm`): named `namespace/pod/container` from its
/// spec, with its lookups and connections exact.
#[test]
fn a_pods_container_on_containerd_is_named_from_kubelets_annotations() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, CONTAINERD_TOOLS) else {
        return;
    };
    let containerd = Runtime::containerd();
    let dir = containerd.dir.clone();
    let netns = format!("--net=/run/netns/{}", containerd.ns);
    // `ctr run --net-host` gives the container the host's resolv.conf:
    // the DNS server listens on its first nameserver's address, in the
    // test's namespace.
    let nameserver = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .map(|a| a.trim().to_string())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or_else(|| "127.0.0.53".into());
    run(Command::new("ip").args([
        "-n",
        &containerd.ns,
        "addr",
        "add",
        &format!("{nameserver}/32"),
        "dev",
        "lo",
    ]));
    // The DNS server and the backends, outside the traced cgroup.
    let tag = dir.display().to_string();
    let mut helpers = Helpers(Vec::new());
    for (script, arg) in [
        (DNS_SERVER, nameserver.as_str()),
        (BACKEND_AT, "127.0.0.2"),
        (BACKEND_AT, "127.0.0.3"),
        (BACKEND_AT, "127.0.0.4"),
    ] {
        helpers.0.push(
            Command::new("nsenter")
                .args([&netns, "python3", "-c", script, arg, &tag])
                .stdout(Stdio::null())
                .spawn()
                .expect("start a helper"),
        );
    }
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    run(Command::new("tar").args([
        "-C",
        &dir.join("rootfs").display().to_string(),
        "-xf",
        rootfs(),
    ]));
    std::fs::write(dir.join("app/client.py"), CLIENT).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let root = containerd.cgroups.relative_root();
    let metrics = format!("127.0.0.1:{}", free_loopback_port());
    let mut command = connbal();
    command.args(["trace", "--cgroup", &root, "--format", "json"]);
    command.args(["--metrics", &metrics]);
    command.arg("--runtime-state").arg(&containerd.api);
    let trace = Trace::spawn(command);
    let id = "5e".repeat(32);
    let mount = |src: &str, dst: &str| {
        format!(
            "type=bind,src={},dst={dst},options=rbind:ro",
            dir.join(src).display()
        )
    };
    let chosen: Vec<String> = containerd
        .ok(&[
            "run",
            "--rm",
            "--cgroup",
            &format!("{root}/{id}"),
            "--mount",
            &mount("app", "/app"),
            "--annotation",
            "io.kubernetes.cri.sandbox-name=web-5d9c",
            "--annotation",
            "io.kubernetes.cri.sandbox-namespace=prod",
            "--annotation",
            "io.kubernetes.cri.container-name=app",
            &dir.join("rootfs").display().to_string(),
            &id,
            "/usr/bin/python3",
            "/app/client.py",
            "web.test",
            "each",
            "9",
        ])
        .lines()
        .map(str::to_string)
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The metrics name the pod with OpenTelemetry's k8s labels.
    let exposition = String::from_utf8(
        Command::new("curl")
            .args(["-sf", &format!("http://{metrics}/metrics")])
            .output()
            .expect("curl")
            .stdout,
    )
    .unwrap();
    let lookups = "connbal_service_lookups_total{client=\"python3 in containerd prod/web-5d9c/app\",dns_question_name=\"web.test.\",process_executable_name=\"python3\",container_name=\"prod/web-5d9c/app\",k8s_namespace_name=\"prod\",k8s_pod_name=\"web-5d9c\",k8s_container_name=\"app\"} 9\n";
    assert!(exposition.contains(lookups), "{lookups}{exposition}");
    let json = report_of(trace);
    let s = service_where(&json, |s| s["name"] == "web.test.");
    let info = &s["client_info"];
    assert_eq!(
        s["client"], "python3 in containerd prod/web-5d9c/app",
        "{s}"
    );
    assert_eq!(info["container"], id, "{s}");
    assert_eq!(info["pod_name"], "web-5d9c", "{s}");
    assert_eq!(info["pod_namespace"], "prod", "{s}");
    assert_eq!(info["pod_container"], "app", "{s}");
    assert_eq!(s["lookups"], 9, "{s}");
    assert_eq!(rows_of(&json, s), counts(&chosen), "{s}");
    assert_eq!(counts(&chosen).values().collect::<Vec<_>>(), [&3, &3, &3]);
}
