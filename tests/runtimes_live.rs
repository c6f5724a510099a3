//! Checks docs/semantics.md section 7 (clients) against a real container
//! runtime: Debian's dockerd, started by this test in a network namespace
//! of its own (the host's firewall untouched), with `--cgroup-parent` a
//! cgroup this test created, so connbal's programs attach there and
//! nowhere else. No registry is reachable: the image is a minbase Debian
//! with python3 (mmdebstrap, cached in /var/cache/connbal-test), imported.
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
const TOOLS: &[&str] = &[
    "dockerd",
    "docker",
    "mmdebstrap",
    "iptables",
    "nsenter",
    "ip",
];
const IMAGE: &str = "connbal-test:python3";
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

/// dockerd in a network namespace of its own, its state in a directory of
/// its own; stopped, and everything it made removed, on drop.
struct Dockerd {
    ns: String,
    dir: PathBuf,
    child: std::process::Child,
    /// Its containers' cgroups go under this one.
    cgroups: TestCgroup,
}

impl Dockerd {
    fn start() -> Dockerd {
        let ns = format!("connbal-dk-{}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        std::fs::create_dir_all(dir.join("app")).unwrap();
        let cgroups = TestCgroup::new("docker").expect("test cgroup");
        run(Command::new("ip").args(["netns", "add", &ns]));
        run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        // nsenter, not `ip netns exec`: that remounts /sys, which hides
        // the cgroup mounts dockerd needs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("dockerd")
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!(
                "--host=unix://{}",
                dir.join("docker.sock").display()
            ))
            .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
            .arg(format!("--cgroup-parent={}", cgroups.relative_root()))
            .args(["--bridge=none", "--storage-driver=vfs"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .expect("start dockerd");
        let dockerd = Dockerd {
            ns,
            dir,
            child,
            cgroups,
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        while !dockerd.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg(format!(
                "--host=unix://{}",
                self.dir.join("docker.sock").display()
            ))
            .args(args)
            .output()
            .expect("run docker")
    }

    /// `docker ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let _ = self.docker(&["network", "prune", "-f"]);
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What dockerd and its containerd leave mounted under their roots
        // (network namespaces of containers, the vfs layers).
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
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        // The cgroupfs driver also made the parent in each cgroup v1
        // hierarchy of this hybrid layout: remove those too.
        let parent = self.cgroups.relative_root();
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for entry in entries.flatten() {
                let dir = entry.path().join(parent.trim_start_matches('/'));
                if dir.is_dir() {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's root filesystem, built once per machine.
fn rootfs() -> &'static str {
    if !Path::new(ROOTFS).exists() {
        std::fs::create_dir_all(Path::new(ROOTFS).parent().unwrap()).unwrap();
        let partial = format!("{ROOTFS}.partial");
        run(Command::new("mmdebstrap").args([
            "--variant=minbase",
            "--include=python3-minimal",
            "--quiet",
            "bookworm",
            &partial,
        ]));
        std::fs::rename(&partial, ROOTFS).unwrap();
    }
    ROOTFS
}

#[test]
fn containers_on_a_user_defined_docker_network_are_counted_exactly() {
    let Some(_guard) = live_tests(&ONE_AT_A_TIME, TOOLS) else {
        return;
    };
    let docker = Dockerd::start();
    docker.ok(&["import", rootfs(), IMAGE]);
    docker.ok(&["network", "create", "webnet"]);
    for i in 1..=3 {
        docker.ok(&[
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
    std::fs::write(docker.dir.join("app/client.py"), CLIENT).unwrap();
    let volume = format!("{}:/app:ro", docker.dir.join("app").display());

    let root = docker.cgroups.relative_root();
    let mut command = connbal();
    command.args(["trace", "--cgroup", &root, "--format", "json"]);
    let trace = Trace::spawn(command);
    let client = |mode: &str, n: &str| -> Vec<String> {
        docker
            .ok(&[
                "run",
                "--rm",
                "--network",
                "webnet",
                "-v",
                &volume,
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
    let finished = trace.stop("-INT");
    assert!(finished.status.success(), "{}", finished.stderr);
    let json: serde_json::Value = serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}\n{}", finished.stdout));

    // Before, none of it: the queries, DNAT'd to the embedded resolver's
    // high port, were never seen, and all 13 responses were unmatched.
    assert_eq!(json["counters"]["unmatched_responses"], 0, "{json}");
    let services: Vec<&serde_json::Value> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "web.")
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
    for (s, chosen) in [(by_lookups(12), &each), (by_lookups(1), &once)] {
        assert_eq!(s["connections"], chosen.len() as u64, "{s}");
        assert_eq!(s["client_info"]["command"], "python3", "{s}");
        assert_eq!(rows_of(&json, s), counts(chosen), "{s}");
    }
    // Docker's round robin, followed: 4/4/4 over the three backends.
    assert_eq!(counts(&each).values().collect::<Vec<_>>(), [&4, &4, &4]);
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
