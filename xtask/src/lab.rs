//! A two-namespace test network: a client and a server joined by a veth
//! pair, with dnsmasq, TCP listeners and capture tools running inside.
//!
//! All traffic stays inside namespaces this lab made, on documentation
//! address ranges (RFC 5737, RFC 3849). Every wait is bounded, and `Drop`
//! stops what the lab started and deletes its namespaces, also when a test
//! panics. A lab killed outright leaves namespaces named after its pid; the
//! next lab removes those whose process is gone.

use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x53);
/// Backends live on the server's loopback, in these ranges.
pub const BACKEND_NET_V4: &str = "203.0.113.0/24";
pub const BACKEND_NET_V6: &str = "2001:db8:200::/64";
/// The port the lab's pods serve on (`Lab::add_pods`).
pub const POD_PORT: u16 = 8080;
/// The pods' server: each connection gets the address it reached.
const POD_SERVER: &str = r#"
import socket, sys, threading
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", int(sys.argv[1])))
listener.listen(128)
# Its own address on connecting, and again for each line the client
# sends, until the client closes: a connection reused for many requests.
def answer(conn):
    with conn:
        me = conn.getsockname()[0].encode() + b"\n"
        conn.sendall(me)
        for _ in conn.makefile("rb"):
            conn.sendall(me)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=answer, args=(conn,), daemon=True).start()
"#;
/// Whether a pod answers: exits 0 once it does.
const POD_PROBE: &str = r"
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as s:
    assert s.recv(64).decode().strip() == sys.argv[1]
";

/// kube-proxy's iptables mode for a ClusterIP Service (`vip`, port 80)
/// with `pods` as endpoints (on `POD_PORT`): KUBE-SERVICES from
/// PREROUTING (pods) and OUTPUT (the node's own clients), a KUBE-SVC
/// chain choosing with `statistic mode random` at 1/N, then 1/(N-1), and
/// so on, and a KUBE-SEP chain per endpoint doing the DNAT.
///
/// With `affinity`, `sessionAffinity: ClientIP` as kube-proxy writes it: a
/// `recent` check per endpoint ahead of the random choice, and each
/// endpoint's chain remembering the client's address.
pub fn kube_proxy_iptables_rules(vip: &str, pods: &[Ipv4Addr], affinity: bool) -> Vec<Vec<String>> {
    let mut rules: Vec<Vec<String>> = Vec::new();
    let mut rule = |args: &str| rules.push(args.split(' ').map(str::to_string).collect());
    rule("-t nat -N KUBE-SERVICES");
    rule("-t nat -N KUBE-SVC-CONNBALTEST");
    rule("-t nat -A PREROUTING -m comment --comment kubernetes-service-portals -j KUBE-SERVICES");
    rule("-t nat -A OUTPUT -m comment --comment kubernetes-service-portals -j KUBE-SERVICES");
    rule(&format!(
        "-t nat -A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment default/one:http -m tcp --dport 80 -j KUBE-SVC-CONNBALTEST"
    ));
    let recent = "-m recent --mask 255.255.255.255 --rsource --name";
    for i in 0..pods.len() {
        let sep = format!("KUBE-SEP-CONNBALTEST{i}");
        rule(&format!("-t nat -N {sep}"));
        if affinity {
            rule(&format!(
                "-t nat -A KUBE-SVC-CONNBALTEST {recent} {sep} --rcheck --seconds 10800 --reap -j {sep}"
            ));
        }
    }
    for (i, pod) in pods.iter().enumerate() {
        let sep = format!("KUBE-SEP-CONNBALTEST{i}");
        let remember = if affinity {
            format!("{recent} {sep} --set ")
        } else {
            String::new()
        };
        rule(&format!(
            "-t nat -A {sep} -p tcp {remember}-m tcp -j DNAT --to-destination {pod}:{POD_PORT}"
        ));
        let left = pods.len() - i;
        if left > 1 {
            rule(&format!(
                "-t nat -A KUBE-SVC-CONNBALTEST -m statistic --mode random --probability {:.11} -j {sep}",
                1.0 / left as f64
            ));
        } else {
            rule(&format!("-t nat -A KUBE-SVC-CONNBALTEST -j {sep}"));
        }
    }
    rules
}

/// Holds one connection to the Service for many requests (the pod answers
/// each line with its address again), then makes short connections, logs
/// each ("held POD" and "short POD"), and keeps the first open until
/// killed, after touching `ready`.
pub const REUSING_CLIENT: &str = r#"
import socket, sys, time
name, requests, short, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def vip():
    return socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
held = socket.create_connection((vip(), 80), timeout=5)
answers = held.makefile("rb")
pod = answers.readline().strip().decode()
for _ in range(requests):
    held.sendall(b"x\n")
    assert answers.readline().strip().decode() == pod
print("held", pod, flush=True)
for _ in range(short):
    with socket.create_connection((vip(), 80), timeout=5) as s:
        print("short", s.makefile().readline().strip(), flush=True)
open(ready, "w").close()
time.sleep(120)
"#;

const PREFIX: &str = "cbl";
/// Upper bound on any single lab operation that waits.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Listeners stop by themselves after this, whatever happens to the lab.
const SERVER_LIFETIME: Duration = Duration::from_mins(10);

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args)).map(|_| ())
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Which of the tools a lab needs are missing from PATH.
pub fn missing_tools(tools: &[&str]) -> Vec<String> {
    tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(std::string::ToString::to_string)
        .collect()
}

pub struct Lab {
    /// Namespaces added beside the two (containers), deleted with the lab.
    extra_namespaces: Vec<String>,
    pub client_ns: String,
    pub server_ns: String,
    pub client_if: String,
    pub server_if: String,
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    stop_servers: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
    /// Whether this lab made /etc/netns itself (then it removes it, once
    /// empty, as it found the host).
    made_etc_netns: AtomicBool,
}

impl Lab {
    pub fn new() -> Result<Self> {
        remove_stale_labs();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("connbal-{tag}"));
        fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            extra_namespaces: Vec::new(),
            made_etc_netns: AtomicBool::new(false),
            client_ns: format!("{tag}c"),
            server_ns: format!("{tag}s"),
            client_if: format!("{tag}c0"),
            server_if: format!("{tag}s0"),
            dir,
            children: Vec::new(),
            stop_servers: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        if lab.client_if.len() > 15 {
            bail!("interface name {} too long", lab.client_if);
        }
        lab.build_network()
            .context("building the namespace network")?;
        Ok(lab)
    }

    fn build_network(&mut self) -> Result<()> {
        let (c, s) = (self.client_ns.clone(), self.server_ns.clone());
        ip(&["netns", "add", &c])?;
        ip(&["netns", "add", &s])?;
        ip(&[
            "link",
            "add",
            &self.client_if,
            "netns",
            &c,
            "type",
            "veth",
            "peer",
            "name",
            &self.server_if,
            "netns",
            &s,
        ])?;
        for (ns, dev, v4, v6) in [
            (&c, &self.client_if, CLIENT_V4, CLIENT_V6),
            (&s, &self.server_if, SERVER_V4, SERVER_V6),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&[
            "-n",
            &c,
            "route",
            "add",
            BACKEND_NET_V4,
            "via",
            &SERVER_V4.to_string(),
        ])?;
        ip(&[
            "-n",
            &c,
            "-6",
            "route",
            "add",
            BACKEND_NET_V6,
            "via",
            &SERVER_V6.to_string(),
        ])?;
        Ok(())
    }

    /// Puts a backend address on the server's loopback.
    pub fn add_backend(&self, addr: IpAddr) -> Result<()> {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        ip(&[
            "-n",
            &self.server_ns,
            "addr",
            "add",
            &format!("{addr}/{prefix}"),
            "dev",
            "lo",
        ])
    }

    pub fn command_in(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    pub fn client(&self, program: &str) -> Command {
        self.command_in(&self.client_ns, program)
    }

    pub fn server(&self, program: &str) -> Command {
        self.command_in(&self.server_ns, program)
    }

    /// Starts a long-running process that `Drop` will stop.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<u32> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.children.push((name.to_string(), child));
        Ok(pid)
    }

    /// Starts dnsmasq on the server with the given extra options, and waits
    /// until it answers.
    pub fn start_dnsmasq(&mut self, hosts: &str, options: &[String]) -> Result<()> {
        let hosts_file = self.dir.join("hosts");
        fs::write(&hosts_file, hosts)?;
        let mut cmd = self.server("dnsmasq");
        cmd.args([
            "--conf-file=/dev/null",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
        ])
        .arg(format!("--addn-hosts={}", hosts_file.display()))
        .arg(format!("--listen-address={SERVER_V4}"))
        .arg(format!("--listen-address={SERVER_V6}"))
        .args(["--user=root", "--local=/connbal.test/", "--log-facility=-"])
        .arg(format!(
            "--pid-file={}",
            self.dir.join("dnsmasq.pid").display()
        ))
        .args(options)
        // dnsmasq refuses a repeated flag: 300 s unless the caller chose.
        .args((!options.iter().any(|o| o.starts_with("--local-ttl="))).then_some("--local-ttl=300"))
        .stdout(Stdio::null())
        .stderr(File::create(self.dir.join("dnsmasq.log"))?);
        self.spawn("dnsmasq", cmd)?;
        self.wait_for_dns(&self.client_ns, &SERVER_V4.to_string())
            .with_context(|| format!("see {}", self.dir.join("dnsmasq.log").display()))
    }

    /// Gives dnsmasq new host data: rewrites its hosts file and sends
    /// SIGHUP, on which dnsmasq clears its cache and rereads the file.
    /// Returns once an A lookup of `changed` gives exactly `expected`.
    pub fn reload_hosts(&self, hosts: &str, changed: &str, expected: &[&str]) -> Result<()> {
        fs::write(self.dir.join("hosts"), hosts)?;
        let Some((_, dnsmasq)) = self.children.iter().find(|(n, _)| n == "dnsmasq") else {
            bail!("dnsmasq is not running in this lab");
        };
        signal(dnsmasq.id(), nix::sys::signal::Signal::SIGHUP);
        let mut want: Vec<&str> = expected.to_vec();
        want.sort_unstable();
        let deadline = Instant::now() + STEP_TIMEOUT;
        // Probed from the server's namespace, so that the client's capture
        // holds only the plan's own lookups.
        loop {
            let probe = self
                .command_in(&self.server_ns, "dig")
                .args([
                    &format!("@{SERVER_V4}"),
                    "+time=1",
                    "+tries=1",
                    "+short",
                    changed,
                    "A",
                ])
                .output()?;
            let text = String::from_utf8_lossy(&probe.stdout);
            let mut got: Vec<&str> = text.lines().map(str::trim).collect();
            got.sort_unstable();
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("dnsmasq still answers {got:?} for {changed} after SIGHUP");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits, at most STEP_TIMEOUT, until the DNS server at `server`
    /// answers from namespace `ns`.
    fn wait_for_dns(&self, ns: &str, server: &str) -> Result<()> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let probe = self
                .command_in(ns, "dig")
                .args([
                    &format!("@{server}"),
                    "+time=1",
                    "+tries=1",
                    "+short",
                    "connbal.test",
                    "SOA",
                ])
                .output();
            if probe.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the DNS server at {server} did not answer within {STEP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts tcpdump in the client namespace writing `file`, and returns
    /// once it is capturing.
    pub fn start_tcpdump(&mut self, iface: &str, file: &Path, extra: &[&str]) -> Result<u32> {
        let client = self.client_ns.clone();
        self.start_tcpdump_in(&client, iface, file, extra)
    }

    /// Starts tcpdump in namespace `ns` writing `file`, and returns once
    /// it is capturing.
    pub fn start_tcpdump_in(
        &mut self,
        ns: &str,
        iface: &str,
        file: &Path,
        extra: &[&str],
    ) -> Result<u32> {
        let mut cmd = self.command_in(ns, "tcpdump");
        cmd.args(["-i", iface, "-U", "-n", "--immediate-mode", "-w"])
            .arg(file)
            .args(extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting tcpdump")?;
        let lines = line_reader(child.stderr.take().expect("piped"));
        let pid = child.id();
        self.children.push((format!("tcpdump {iface}"), child));
        wait_for_line(&lines, "listening on", STEP_TIMEOUT)
            .context("tcpdump did not start listening")?;
        Ok(pid)
    }

    /// Stops a child with SIGINT (tcpdump flushes its file on it) and
    /// waits for it, bounded.
    pub fn interrupt(&mut self, pid: u32) -> Result<()> {
        let Some(i) = self.children.iter().position(|(_, c)| c.id() == pid) else {
            bail!("no child {pid}")
        };
        let (name, mut child) = self.children.remove(i);
        signal(pid, nix::sys::signal::Signal::SIGINT);
        wait_bounded(&mut child, STEP_TIMEOUT)
            .with_context(|| format!("{name} did not stop on SIGINT"))
    }

    /// Listens on every port given, on all server addresses, answering each
    /// connection with a minimal HTTP response.
    pub fn serve_tcp(&mut self, ports: &[u16]) -> Result<()> {
        let netns = File::open(format!("/var/run/netns/{}", self.server_ns))?;
        let ports = ports.to_vec();
        let stop = Arc::clone(&self.stop_servers);
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let listeners = (|| -> Result<Vec<TcpListener>> {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let mut listeners = Vec::new();
                for port in &ports {
                    let l = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port)))?;
                    l.set_nonblocking(true)?;
                    listeners.push(l);
                }
                Ok(listeners)
            })();
            let listeners = match listeners {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let end = Instant::now() + SERVER_LIFETIME;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let mut idle = true;
                for l in &listeners {
                    if let Ok((conn, _)) = l.accept() {
                        idle = false;
                        std::thread::spawn(move || answer_http(conn));
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        self.servers.push(handle);
        ready_rx
            .recv_timeout(STEP_TIMEOUT)
            .context("listener thread did not start")??;
        Ok(())
    }

    /// Opens a TCP connection from the client namespace and keeps it open
    /// until the returned handle is released.
    pub fn hold_connection(&self, to: SocketAddr) -> Result<HeldConnection> {
        let netns = File::open(format!("/var/run/netns/{}", self.client_ns))?;
        let (connected_tx, connected_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || -> Result<()> {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut stream = TcpStream::connect_timeout(&to, STEP_TIMEOUT)?;
            let _ = connected_tx.send(());
            // Held until released, at most the server lifetime.
            let _ = release_rx.recv_timeout(SERVER_LIFETIME);
            stream.set_read_timeout(Some(STEP_TIMEOUT))?;
            stream.write_all(b"GET /held HTTP/1.0\r\n\r\n")?;
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
            Ok(())
        });
        connected_rx
            .recv_timeout(STEP_TIMEOUT)
            .context("held connection did not connect")?;
        Ok(HeldConnection {
            release: release_tx,
            handle,
        })
    }
}

impl Lab {
    /// Sends `count` copies of `payload` over UDP from the client namespace
    /// to `to`, as fast as it can, for at most `limit`. Returns how many went.
    pub fn flood_udp(
        &self,
        to: SocketAddr,
        payload: &[u8],
        count: usize,
        limit: Duration,
    ) -> Result<usize> {
        let netns = File::open(format!("/var/run/netns/{}", self.client_ns))?;
        let payload = payload.to_vec();
        std::thread::spawn(move || -> Result<usize> {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let bind: SocketAddr = if to.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = std::net::UdpSocket::bind(bind)?;
            let end = Instant::now() + limit;
            let mut sent = 0;
            while sent < count && Instant::now() < end {
                if socket.send_to(&payload, to).is_ok() {
                    sent += 1;
                }
            }
            Ok(sent)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
    }

    /// A "container": a namespace of its own behind a bridge in the client
    /// namespace (the "host"), which forwards its traffic to the server
    /// with MASQUERADE (nftables), as Docker's default network does. The
    /// container is 192.0.2.2 (RFC 5737) and leaves as the client's
    /// address. Returns the namespace's name; deleted with the lab.
    pub fn add_container(&mut self) -> Result<String> {
        let ns = format!("{}k", self.client_ns.trim_end_matches('c'));
        let inside = format!("{ns}0");
        let outside = format!("{ns}1");
        let bridge = format!("{ns}b");
        ip(&["netns", "add", &ns])?;
        self.extra_namespaces.push(ns.clone());
        let host = self.client_ns.clone();
        ip(&[
            "link", "add", &inside, "netns", &ns, "type", "veth", "peer", "name", &outside,
            "netns", &host,
        ])?;
        ip(&["-n", &host, "link", "add", &bridge, "type", "bridge"])?;
        ip(&["-n", &host, "link", "set", &outside, "master", &bridge])?;
        ip(&["-n", &host, "addr", "add", "192.0.2.1/24", "dev", &bridge])?;
        for dev in [&bridge, &outside] {
            ip(&["-n", &host, "link", "set", dev, "up"])?;
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "addr", "add", "192.0.2.2/24", "dev", &inside])?;
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", "192.0.2.1"])?;
        run(self
            .command_in(&host, "sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]))?;
        for rule in [
            "add table ip connbal_lab".to_string(),
            "add chain ip connbal_lab post { type nat hook postrouting priority 100 ; }".into(),
            format!(
                "add rule ip connbal_lab post ip saddr 192.0.2.0/24 oifname {} masquerade",
                self.client_if
            ),
        ] {
            run(self.command_in(&host, "nft").args(rule.split(' ')))?;
        }
        Ok(ns)
    }

    /// Pods behind the server namespace, which plays the node: a namespace
    /// of their own holding 10.244.1.1 to 10.244.1.COUNT, each serving TCP
    /// `POD_PORT` and answering every connection with its own address and
    /// a newline, so that a client can log which pod it reached. The server
    /// routes and forwards to them (a node's pod network); what a Service
    /// does with its VIP is the caller's rules. Deleted with the lab.
    pub fn add_pods(&mut self, count: u8) -> Result<Vec<Ipv4Addr>> {
        let ns = format!("{}p", self.server_ns.trim_end_matches('s'));
        let inside = format!("{ns}0");
        let outside = format!("{ns}1");
        ip(&["netns", "add", &ns])?;
        self.extra_namespaces.push(ns.clone());
        let node = self.server_ns.clone();
        ip(&[
            "link", "add", &inside, "netns", &ns, "type", "veth", "peer", "name", &outside,
            "netns", &node,
        ])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            "10.244.0.254/16",
            "dev",
            &outside,
        ])?;
        ip(&["-n", &node, "link", "set", &outside, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let pods: Vec<Ipv4Addr> = (1..=count).map(|i| Ipv4Addr::new(10, 244, 1, i)).collect();
        for pod in &pods {
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{pod}/16"),
                "dev",
                &inside,
            ])?;
        }
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", "10.244.0.254"])?;
        run(self
            .command_in(&node, "sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"]))?;
        let mut server = self.command_in(&ns, "python3");
        server
            .args(["-c", POD_SERVER, &POD_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.join("pods.log"))?);
        self.spawn("pod server", server)?;
        // Up once the node reaches every pod.
        let deadline = Instant::now() + Duration::from_secs(10);
        for pod in &pods {
            loop {
                let reached = self
                    .command_in(&node, "python3")
                    .args(["-c", POD_PROBE, &pod.to_string(), &POD_PORT.to_string()])
                    .output()
                    .is_ok_and(|out| out.status.success());
                if reached {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("pod {pod} never answered on port {POD_PORT}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(pods)
    }

    /// The resolver the client namespace's programs use (see
    /// `resolv_conf`).
    pub fn client_resolv_conf(&self, nameserver: &str) -> Result<()> {
        self.resolv_conf(&self.client_ns, nameserver)
    }

    /// The resolver programs in `ns` use: `ip netns exec` bind-mounts
    /// /etc/netns/NS/resolv.conf over /etc/resolv.conf. Removed with the
    /// lab.
    pub fn resolv_conf(&self, ns: &str, nameserver: &str) -> Result<()> {
        let dir = Path::new("/etc/netns").join(ns);
        if !Path::new("/etc/netns").exists() {
            self.made_etc_netns.store(true, Ordering::Relaxed);
        }
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:2 attempts:2\n"),
        )?;
        Ok(())
    }

    /// Starts a caching dnsmasq in `ns` listening on `listen` and
    /// forwarding to the lab's server, as a local stub resolver
    /// (systemd-resolved's 127.0.0.53, Docker's 127.0.0.11) is; `wrap`
    /// lets the caller put it in a cgroup. Waits until it answers.
    pub fn start_stub(
        &mut self,
        ns: &str,
        listen: &str,
        wrap: impl FnOnce(&str) -> Command,
    ) -> Result<()> {
        self.start_stub_on(ns, (listen, 53), wrap)
    }

    /// Docker's embedded DNS as dockerd sets it up in a container on a
    /// user-defined network: a resolver on 127.0.0.11 at a high port, and
    /// a DNAT in the namespace's nat OUTPUT hook from 127.0.0.11:53 to it
    /// (conntrack turns the replies' source back into port 53). The
    /// container's programs ask 127.0.0.11:53 and never see the port.
    pub fn start_docker_embedded_dns(
        &mut self,
        ns: &str,
        wrap: impl FnOnce(&str) -> Command,
    ) -> Result<()> {
        const PORT: u16 = 40195;
        for rule in [
            "add table ip docker_embedded_dns".to_string(),
            "add chain ip docker_embedded_dns output { type nat hook output priority -100 ; }"
                .to_string(),
            format!(
                "add rule ip docker_embedded_dns output ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:{PORT}"
            ),
        ] {
            run(self.command_in(ns, "nft").arg(rule))?;
        }
        self.start_stub_on(ns, ("127.0.0.11", PORT), wrap)
    }

    fn start_stub_on(
        &mut self,
        ns: &str,
        (listen, port): (&str, u16),
        wrap: impl FnOnce(&str) -> Command,
    ) -> Result<()> {
        let mut cmd = wrap("ip");
        cmd.args(["netns", "exec", ns, "dnsmasq"])
            .args([
                "--conf-file=/dev/null",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--cache-size=1000",
                "--log-facility=-",
            ])
            .arg(format!("--listen-address={listen}"))
            .arg(format!("--port={port}"))
            .arg(format!("--server={SERVER_V4}"))
            .arg(format!(
                "--pid-file={}",
                self.dir.join(format!("stub-{listen}.pid")).display()
            ))
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.join(format!("stub-{listen}.log")))?);
        self.spawn("stub dnsmasq", cmd)?;
        self.wait_for_dns(ns, listen)
    }

    /// The interface's index inside its namespace.
    pub fn ifindex(&self, ns: &str, iface: &str) -> Result<u32> {
        let out = run(self
            .command_in(ns, "cat")
            .arg(format!("/sys/class/net/{iface}/ifindex")))?;
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    }
}

pub struct HeldConnection {
    release: mpsc::Sender<()>,
    handle: JoinHandle<Result<()>>,
}

impl HeldConnection {
    /// Sends a request over the connection, reads the answer, closes it.
    pub fn release(self) -> Result<()> {
        let _ = self.release.send(());
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("held connection thread panicked"))?
    }
}

fn answer_http(mut conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ =
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
}

/// Forwards each line a child writes (to stderr, say) to a channel.
pub fn line_reader(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits, at most `limit`, for a line containing `needle`; returns the
/// lines read on the way, that one included.
pub fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    needle: &str,
    limit: Duration,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return Ok(seen);
                }
            }
            Err(_) => bail!("no line containing {needle:?} within {limit:?}; saw {seen:?}"),
        }
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("killed after {limit:?}")
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        }
        for (_, child) in &mut self.children {
            let _ = wait_bounded(child, Duration::from_secs(3));
        }
        self.stop_servers.store(true, Ordering::Relaxed);
        for handle in self.servers.drain(..) {
            let _ = handle.join();
        }
        for ns in self
            .extra_namespaces
            .iter()
            .chain([&self.client_ns, &self.server_ns])
        {
            let _ = ip(&["netns", "del", ns]);
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        // Fails while another lab's files are in it, as it should.
        if self.made_etc_netns.load(Ordering::Relaxed) {
            let _ = fs::remove_dir("/etc/netns");
        }
        let _ = fs::remove_dir_all(&self.dir);
        // connbal keeps a lock file per interface it traced in netlink
        // mode; one whose interface went with the lab's namespace (a run
        // killed, or a filter of the test's own kept the qdisc) would stay.
        if let Ok(entries) = fs::read_dir("/run/connbal") {
            let ours = [
                format!("-{}.lock", self.client_if),
                format!("-{}.lock", self.server_if),
            ];
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if ours.iter().any(|suffix| name.ends_with(suffix.as_str())) {
                    let _ = fs::remove_file(entry.path());
                }
            }
            // And the directory, when that leaves it empty (a run that had
            // become nobody could not remove its file, nor it).
            let _ = fs::remove_dir("/run/connbal");
        }
    }
}

/// Deletes namespaces of labs whose process no longer exists.
fn remove_stale_labs() {
    let Ok(entries) = fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('x').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}
