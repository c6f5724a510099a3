//! `cargo xtask bench-overhead`: what tracing costs the host's own traffic.
//!
//! Real load generators between the lab's two namespaces, each run with
//! one observer at a time:
//! - `sockperf ping-pong`, 64-byte messages over UDP and over TCP, as fast
//!   as each answer comes back: the request rate and the latency
//!   percentiles of a small-packet request/response service;
//! - `iperf3`, one TCP stream: bulk throughput.
//!
//! The observers: nothing attached; the empty classifier (the floor of any
//! TC program); `connbal trace --iface` (TC); empty programs on host
//! mode's four hooks (its floor); host mode (`connbal trace --cgroup`,
//! cgroup programs on the client's sockets); and `tcpdump` with the same
//! filter feeding `connbal replay -`. Every observer runs once per
//! round, in an order rotated each round, and each result is divided by
//! the same round's run with nothing attached, so drift of the machine
//! between rounds cancels out.
//!
//! `kernel.bpf_stats_enabled` stays off for those runs: the statistics add
//! two clock reads to every program run, which a user does not pay. The
//! per-packet cost of each program under bulk load is measured in separate
//! iperf3 runs with the statistics on.
//!
//! Segmentation offloads are off on both veth ends (as in bench-live), so
//! every program sees wire-sized packets rather than 64 KiB GSO batches:
//! the per-packet costs are at their most visible.
//!
//! The client runs in a test cgroup of its own for every observer, which
//! host mode traces; the servers run in a sibling cgroup that nothing
//! traces, so host mode sees each packet once, at the client's socket, as
//! TC sees it once on the client's interface. Every load process is
//! pinned to one CPU. On this virtual machine a
//! client and server on two CPUs spent most of each round trip waking the
//! other CPU (25 µs p50 and 30k round trips/s, against 5.5 µs and 136k on
//! one CPU): the path under test vanished under the wake-up, and the rate
//! moved ±5% between identical runs, against ±0.5% on one. On one CPU the
//! round trip is CPU-bound, so every nanosecond a program adds to it
//! shows. The observers' own processes are not pinned.
//!
//! While each observer with programs is attached, each of its per-packet
//! programs also runs alone, in `BPF_PROG_TEST_RUN` (through `bpftool
//! prog run`), on a frame of each load: the difference from the empty
//! program on the same hook is what connbal's code adds, to a nanosecond
//! or so, free of the hook's cost and the machine's noise, which the
//! rates above cannot separate from a point or two. `--udp-only` runs
//! only the UDP ping-pong, the load host mode's rate target is about,
//! for many rounds in the time of a few.

use crate::bench::{self, median, spread, BpfStats, Pipeline};
use crate::lab::{Lab, SERVER_V4};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SOCKPERF_UDP_PORT: u16 = 11111;
const SOCKPERF_TCP_PORT: u16 = 11112;
const IPERF_PORT: u16 = 5201;
const MESSAGE_BYTES: &str = "64";
/// Generous bound on one load run beyond its own duration (start-up,
/// sockperf's warm-up, iperf3's result exchange).
const RUN_SLACK_SECONDS: u64 = 30;
/// The CPU every load process runs on (see the module's comment).
const LOAD_CPU: &str = "1";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Observer {
    Nothing,
    EmptyClassifier,
    Tc,
    EmptyHostMode,
    HostMode,
    /// Host mode without the NAT tracepoint, which runs on every packet
    /// the host sends: that tracepoint's share of host mode's cost.
    HostModeNoVip,
    Tcpdump,
}

const OBSERVERS: [Observer; 7] = [
    Observer::Nothing,
    Observer::EmptyClassifier,
    Observer::Tc,
    Observer::EmptyHostMode,
    Observer::HostMode,
    Observer::HostModeNoVip,
    Observer::Tcpdump,
];

impl Observer {
    fn label(self) -> &'static str {
        match self {
            Observer::Nothing => "nothing attached",
            Observer::EmptyClassifier => "TC: empty classifier",
            Observer::Tc => "connbal trace --iface (TC)",
            Observer::EmptyHostMode => "host mode: empty programs",
            Observer::HostMode => "connbal trace --cgroup (host mode)",
            Observer::HostModeNoVip => "connbal trace --cgroup --no-vip-backends",
            Observer::Tcpdump => "tcpdump -w - FILTER \\| connbal replay -",
        }
    }

    /// The programs whose bpf_stats measure this observer's per-packet
    /// cost: a name prefix ("connbal_cgroup_" sums the cgroup_skb egress
    /// and ingress programs; the connect hooks are not per-packet).
    fn programs(self) -> Option<&'static str> {
        match self {
            Observer::EmptyClassifier => Some("connbal_noop"),
            Observer::Tc => Some("connbal_tc"),
            Observer::EmptyHostMode => Some("connbal_empty_skb_"),
            Observer::HostMode | Observer::HostModeNoVip => Some("connbal_cgroup_"),
            Observer::Nothing | Observer::Tcpdump => None,
        }
    }

    /// Its per-packet programs by name, with their hook, for
    /// `BPF_PROG_TEST_RUN` (`--no-vip-backends` runs host mode's own,
    /// measured once).
    fn test_run(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Observer::Tc => &[("connbal_tc", "TC")],
            Observer::EmptyClassifier => &[("connbal_noop", "TC")],
            Observer::HostMode => &[
                ("connbal_cgroup_egress", "cgroup_skb egress"),
                ("connbal_cgroup_ingress", "cgroup_skb ingress"),
            ],
            Observer::EmptyHostMode => &[
                ("connbal_empty_skb_egress", "cgroup_skb egress"),
                ("connbal_empty_skb_ingress", "cgroup_skb ingress"),
            ],
            _ => &[],
        }
    }

    /// The empty programs on the same hooks, for connbal's own programs.
    fn floor(self) -> Option<Observer> {
        match self {
            Observer::Tc => Some(Observer::EmptyClassifier),
            Observer::HostMode | Observer::HostModeNoVip => Some(Observer::EmptyHostMode),
            _ => None,
        }
    }
}

/// Host mode's tracepoint on every packet sent (issue 26).
const NAT_TRACEPOINT: &str = "connbal_nat";

/// An observer while attached, until `detach` stops it.
enum Attached {
    Nothing,
    Trace(bench::Tracer),
    Pipeline(Pipeline),
}

impl Attached {
    fn detach(self) -> Result<()> {
        match self {
            Attached::Nothing => Ok(()),
            Attached::Trace(t) => bench::stop_trace(t).map(drop),
            Attached::Pipeline(p) => p.stop().map(drop),
        }
    }
}

struct Setup<'a> {
    lab: &'a Lab,
    connbal: &'a Path,
    /// The client's cgroup (host mode traces it), absolute and as
    /// `--cgroup` takes it.
    cgroup: &'a Path,
    cgroup_name: &'a str,
    seconds: u64,
}

impl Setup<'_> {
    fn attach(&self, observer: Observer) -> Result<Attached> {
        Ok(match observer {
            Observer::Nothing => Attached::Nothing,
            Observer::EmptyClassifier => Attached::Trace(bench::start_trace(
                self.lab,
                self.connbal,
                &["--noop-program"],
            )?),
            Observer::Tc => Attached::Trace(bench::start_trace(self.lab, self.connbal, &[])?),
            Observer::EmptyHostMode => Attached::Trace(bench::start_host_trace(
                self.connbal,
                self.cgroup_name,
                &["--noop-program"],
            )?),
            Observer::HostMode => Attached::Trace(bench::start_host_trace(
                self.connbal,
                self.cgroup_name,
                &[],
            )?),
            Observer::HostModeNoVip => Attached::Trace(bench::start_host_trace(
                self.connbal,
                self.cgroup_name,
                &["--no-vip-backends"],
            )?),
            Observer::Tcpdump => Attached::Pipeline(Pipeline::start(self.lab, self.connbal)?),
        })
    }

    /// `program ARGS` in the client namespace, inside the client's cgroup,
    /// pinned to the load's CPU, killed if it overruns its bound.
    fn client(&self, program: &str) -> Command {
        let mut command = crate::cgroup::TestCgroup::command_in(self.cgroup, "timeout");
        command.args([
            "-k",
            "5",
            &(self.seconds + RUN_SLACK_SECONDS).to_string(),
            "taskset",
            "-c",
            LOAD_CPU,
            "ip",
            "netns",
            "exec",
            &self.lab.client_ns,
            program,
        ]);
        command
    }

    fn run(&self, load: Load) -> Result<Measured> {
        match load {
            Load::PingPong { tcp } => self.ping_pong(tcp),
            Load::Bulk => self.bulk(),
        }
    }

    fn ping_pong(&self, tcp: bool) -> Result<Measured> {
        let port = if tcp {
            SOCKPERF_TCP_PORT
        } else {
            SOCKPERF_UDP_PORT
        };
        let mut command = self.client("sockperf");
        command
            .args(["ping-pong", "-i", &SERVER_V4.to_string()])
            .args(["-p", &port.to_string(), "-t", &self.seconds.to_string()])
            .args(["-m", MESSAGE_BYTES, "--mps=max"])
            .args(tcp.then_some("--tcp"));
        let out = crate::lab::run(&mut command)?;
        parse_sockperf(&String::from_utf8_lossy(&out.stdout))
    }

    fn bulk(&self) -> Result<Measured> {
        let mut command = self.client("iperf3");
        command
            .args(["-c", &SERVER_V4.to_string(), "-p", &IPERF_PORT.to_string()])
            .args(["-t", &self.seconds.to_string(), "-J"]);
        let out = crate::lab::run(&mut command)?;
        let bits = received_bits_per_second(&String::from_utf8_lossy(&out.stdout))
            .context("iperf3's JSON has no end.sum_received.bits_per_second")?;
        Ok(Measured {
            rate: bits / 1e9,
            p50: None,
            p99: None,
        })
    }
}

/// Waits, at most 10 s, until something in the server namespace listens
/// on `port`.
fn wait_listening(lab: &Lab, port: u16, udp: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = lab
            .server("ss")
            .args(["-H", "-n", "-l", if udp { "-u" } else { "-t" }])
            .arg(format!("sport = :{port}"))
            .output()?;
        if out.status.success() && !out.stdout.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} in the server namespace after 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    PingPong { tcp: bool },
    Bulk,
}

const LOADS: [Load; 3] = [
    Load::PingPong { tcp: false },
    Load::PingPong { tcp: true },
    Load::Bulk,
];

impl Load {
    fn label(self) -> &'static str {
        match self {
            Load::PingPong { tcp: false } => "sockperf ping-pong, UDP, 64 B",
            Load::PingPong { tcp: true } => "sockperf ping-pong, TCP, 64 B",
            Load::Bulk => "iperf3, one TCP stream",
        }
    }
}

/// One run's result: the rate (round trips per second, or Gbit/s for
/// bulk) and, for ping-pong, latency percentiles in microseconds.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Rate and percentiles from sockperf's summary, over the valid
/// duration (after its warm-up):
/// `[Valid Duration] RunTime=4.550 sec; SentMessages=…; ReceivedMessages=N`
/// and `---> percentile 99.000 =   35.617`.
fn parse_sockperf(text: &str) -> Result<Measured> {
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = line.split(key).nth(1)?;
        rest.trim_start()
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?
            .parse()
            .ok()
    };
    let valid = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .context("sockperf printed no [Valid Duration] line")?;
    let seconds = field(valid, "RunTime=").context("sockperf: no RunTime")?;
    let received = field(valid, "ReceivedMessages=").context("sockperf: no ReceivedMessages")?;
    let percentile = |which: &str| {
        text.lines()
            .find(|l| l.contains(&format!("percentile {which} =")))
            .and_then(|l| field(l, "="))
    };
    if seconds <= 0.0 || received <= 0.0 {
        bail!("sockperf received nothing ({valid})");
    }
    Ok(Measured {
        rate: received / seconds,
        p50: Some(percentile("50.000").context("sockperf: no 50th percentile")?),
        p99: Some(percentile("99.000").context("sockperf: no 99th percentile")?),
    })
}

/// `end.sum_received.bits_per_second` from iperf3's JSON (read by hand:
/// xtask carries no JSON parser).
fn received_bits_per_second(json: &str) -> Option<f64> {
    let after = json.split("\"sum_received\"").nth(1)?;
    let rest = after.split("\"bits_per_second\":").nth(1)?;
    rest.trim_start()
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '+' || c == '-'))
        .next()?
        .parse()
        .ok()
}

/// "median (min–max)" of per-round values.
fn summary(values: &[f64], decimals: usize) -> String {
    let mut sorted = values.to_vec();
    let (lo, hi) = spread(&sorted);
    format!(
        "{:.decimals$} ({lo:.decimals$}–{hi:.decimals$})",
        median(&mut sorted)
    )
}

/// Per-round ratios of `observer` to nothing attached, as percent change.
fn changes(of: &[f64], baseline: &[f64]) -> Vec<f64> {
    of.iter()
        .zip(baseline)
        .map(|(o, b)| 100.0 * (o / b - 1.0))
        .collect()
}

fn signed_summary(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    let (lo, hi) = spread(&sorted);
    format!("{:+.1}% ({lo:+.1} to {hi:+.1})", median(&mut sorted))
}

/// With `udp_only`, only the UDP ping-pong load, under every observer but
/// the tcpdump pipeline, and no bulk or per-packet runs: host mode's rate
/// target is a difference of one or two points, which three rounds of the
/// whole bench on this shared machine do not separate from noise.
pub fn run(root: &Path, seconds: u64, rounds: usize, udp_only: bool) -> Result<()> {
    if !crate::lab::is_root() {
        bail!("bench-overhead attaches eBPF programs in namespaces: run it as root");
    }
    if rounds == 0 || seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    let needed = [
        ("sockperf", "sockperf"),
        ("iperf3", "iperf3"),
        ("tcpdump", "tcpdump"),
        ("bpftool", "bpftool"),
        ("ethtool", "ethtool"),
        ("ss", "iproute2"),
        ("taskset", "util-linux"),
    ];
    let tools: Vec<&str> = needed.iter().map(|(t, _)| *t).collect();
    let missing = crate::lab::missing_tools(&tools);
    if !missing.is_empty() {
        let packages: Vec<&str> = needed
            .iter()
            .filter(|(t, _)| missing.iter().any(|m| m == t))
            .map(|(_, p)| *p)
            .collect();
        crate::setup::apt_install(&packages)?;
    }
    let connbal = bench::build_release(root)?;
    // Dropped in reverse: the lab (and the servers it started) first, then
    // the cgroup they ran in.
    let mut cgroups = crate::cgroup::TestCgroup::new("overhead")?;
    let client_cgroup = cgroups.child("client")?;
    let servers_cgroup = cgroups.child("servers")?;
    let cgroup_name = format!("{}/client", cgroups.relative_root());
    let mut lab = Lab::new()?;
    crate::load::wire_sized_packets(&lab)?;
    start_servers(&mut lab, &servers_cgroup)?;
    let setup = Setup {
        lab: &lab,
        connbal: &connbal,
        cgroup: &client_cgroup,
        seconds,
        cgroup_name: &cgroup_name,
    };

    let loads: Vec<Load> = LOADS
        .into_iter()
        .filter(|load| !udp_only || *load == Load::PingPong { tcp: false })
        .collect();
    let observers: Vec<usize> = (0..OBSERVERS.len())
        .filter(|&o| !udp_only || OBSERVERS[o] != Observer::Tcpdump)
        .collect();
    // A discarded run of each load first: the first one after the lab is
    // built pays for cold caches and ARP.
    for &load in &loads {
        setup.run(load)?;
    }
    let mut measured: Vec<Vec<Vec<Measured>>> =
        vec![vec![Vec::new(); OBSERVERS.len()]; LOADS.len()];
    let mut ns_per_packet: Vec<Vec<f64>> = vec![Vec::new(); OBSERVERS.len()];
    // Host mode's NAT tracepoint runs for every packet the host sends,
    // traced cgroup or not: its cost per run, apart.
    let mut nat_ns: Vec<f64> = Vec::new();
    let packets = write_test_packets(root)?;
    let mut isolated: Vec<Isolated> = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        for k in 0..observers.len() {
            let o = observers[(k + round) % observers.len()];
            let observer = OBSERVERS[o];
            let attached = setup.attach(observer)?;
            let outcome = (|| -> Result<()> {
                for (l, load) in LOADS.into_iter().enumerate() {
                    if loads.contains(&load) {
                        measured[l][o].push(setup.run(load)?);
                    }
                }
                for &(program, hook) in observer.test_run() {
                    for &(packet, ref path) in &packets {
                        let ns = bench::prog_test_run_ns(program, path, TEST_RUN_REPEAT)?;
                        Isolated::record(&mut isolated, hook, packet, observer, ns);
                    }
                }
                if let (Some(programs), false) = (observer.programs(), udp_only) {
                    let _stats = BpfStats::enable()?;
                    let before = bench::prog_stats(programs)?;
                    let nat_before = bench::prog_stats(NAT_TRACEPOINT)?;
                    setup.run(Load::Bulk)?;
                    let after = bench::prog_stats(programs)?;
                    let nat_after = bench::prog_stats(NAT_TRACEPOINT)?;
                    ns_per_packet[o]
                        .push((after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64);
                    if observer == Observer::HostMode {
                        nat_ns.push(
                            (nat_after.0 - nat_before.0) as f64
                                / (nat_after.1 - nat_before.1).max(1) as f64,
                        );
                    }
                }
                Ok(())
            })();
            let detached = attached.detach();
            outcome.with_context(|| format!("measuring with {}", observer.label()))?;
            detached.with_context(|| format!("detaching {}", observer.label()))?;
        }
        eprintln!(
            "bench-overhead: round {}/{rounds} done after {:.0} s",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    print_tables(seconds, rounds, &measured, &ns_per_packet, &nat_ns);
    print_isolated(&isolated);
    Ok(())
}

/// A hook and a packet, with the ns per run of connbal's program and of
/// the empty one there, a figure per round.
struct Isolated {
    hook: &'static str,
    packet: &'static str,
    connbal: Vec<f64>,
    empty: Vec<f64>,
}

impl Isolated {
    /// `observer`'s program on `hook` took `ns` a run on `packet`: connbal's
    /// own if the observer has an empty floor, else the empty one's.
    fn record(
        all: &mut Vec<Isolated>,
        hook: &'static str,
        packet: &'static str,
        observer: Observer,
        ns: f64,
    ) {
        let at = all
            .iter()
            .position(|i| (i.hook, i.packet) == (hook, packet))
            .unwrap_or_else(|| {
                all.push(Isolated {
                    hook,
                    packet,
                    connbal: Vec::new(),
                    empty: Vec::new(),
                });
                all.len() - 1
            });
        if observer.floor().is_some() {
            all[at].connbal.push(ns);
        } else {
            all[at].empty.push(ns);
        }
    }
}

/// Runs of each program in `BPF_PROG_TEST_RUN`, per measurement.
const TEST_RUN_REPEAT: u32 = 5_000_000;

/// The frames the programs are run on in isolation: what the ping-pong
/// client sends (a 64-byte UDP datagram to sockperf's port) and a bulk
/// TCP segment, as Ethernet frames (`BPF_PROG_TEST_RUN` takes one for
/// cgroup_skb programs too, and hands them the packet from its IP
/// header).
fn write_test_packets(root: &Path) -> Result<Vec<(&'static str, std::path::PathBuf)>> {
    let dir = root.join("target/bench-overhead");
    std::fs::create_dir_all(&dir)?;
    let frame = |protocol: u8, l4: Vec<u8>| -> Vec<u8> {
        let mut f = vec![2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 0x08, 0x00];
        let total = u16::try_from(20 + l4.len()).expect("small");
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
        f.extend_from_slice(&crate::lab::CLIENT_V4.octets());
        f.extend_from_slice(&SERVER_V4.octets());
        f.extend_from_slice(&l4);
        f
    };
    let mut udp = Vec::new();
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&SOCKPERF_UDP_PORT.to_be_bytes());
    udp.extend_from_slice(&(8u16 + 64).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[b'x'; 64]);
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&40000u16.to_be_bytes());
    tcp.extend_from_slice(&IPERF_PORT.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(&[b'y'; 1400]);
    let mut written = Vec::new();
    for (name, bytes) in [
        ("UDP, 64 B to sockperf", frame(17, udp)),
        ("TCP, 1400 B bulk segment", frame(6, tcp)),
    ] {
        let path = dir.join(format!("{}.frame", name.split(',').next().unwrap_or(name)));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push((name, path));
    }
    Ok(written)
}

fn print_isolated(isolated: &[Isolated]) {
    if isolated.is_empty() {
        return;
    }
    println!("\nEach program in isolation (`bpftool prog run`, BPF_PROG_TEST_RUN, {TEST_RUN_REPEAT} runs on one frame, once per round while its observer is attached), against the empty program on the same hook; both include the test loop's own cost, so the difference is the program's code:\n");
    println!(
        "| hook | packet | connbal's program, ns per run | empty program | beyond it (medians) |"
    );
    println!("|---|---|---|---|---|");
    for runs in isolated {
        if runs.connbal.is_empty() || runs.empty.is_empty() {
            continue;
        }
        let beyond = median(&mut runs.connbal.clone()) - median(&mut runs.empty.clone());
        println!(
            "| {} | {} | {} | {} | {beyond:+.0} |",
            runs.hook,
            runs.packet,
            summary(&runs.connbal, 0),
            summary(&runs.empty, 0),
        );
    }
}

/// Starts the sockperf and iperf3 servers in the server namespace, in
/// `cgroup` (not the traced one), and waits until each listens. The lab
/// stops them.
fn start_servers(lab: &mut Lab, cgroup: &Path) -> Result<()> {
    let server = SERVER_V4.to_string();
    let servers: [(&str, &str, Vec<String>); 3] = [
        (
            "sockperf server (UDP)",
            "sockperf",
            vec![
                "server".into(),
                "-i".into(),
                server.clone(),
                "-p".into(),
                SOCKPERF_UDP_PORT.to_string(),
            ],
        ),
        (
            "sockperf server (TCP)",
            "sockperf",
            vec![
                "server".into(),
                "--tcp".into(),
                "-i".into(),
                server.clone(),
                "-p".into(),
                SOCKPERF_TCP_PORT.to_string(),
            ],
        ),
        (
            "iperf3 server",
            "iperf3",
            vec![
                "-s".into(),
                "-B".into(),
                server.clone(),
                "-p".into(),
                IPERF_PORT.to_string(),
            ],
        ),
    ];
    for (name, program, args) in servers {
        let mut command = crate::cgroup::TestCgroup::command_in(cgroup, "taskset");
        command
            .args([
                "-c",
                LOAD_CPU,
                "ip",
                "netns",
                "exec",
                &lab.server_ns,
                program,
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        lab.spawn(name, command)?;
    }
    for (port, udp) in [
        (SOCKPERF_UDP_PORT, true),
        (SOCKPERF_TCP_PORT, false),
        (IPERF_PORT, false),
    ] {
        wait_listening(lab, port, udp)?;
    }
    Ok(())
}

fn print_tables(
    seconds: u64,
    rounds: usize,
    measured: &[Vec<Vec<Measured>>],
    ns_per_packet: &[Vec<f64>],
    nat_ns: &[f64],
) {
    let index = |wanted: Observer| OBSERVERS.iter().position(|o| *o == wanted).expect("listed");
    let nothing = index(Observer::Nothing);
    println!("Request/response, {seconds} s a run, {rounds} rounds. Each change is against the same round's run with nothing attached, median (min to max over rounds); \"beyond the empty programs\" is against the same round's run with empty programs on the same hooks, so it is connbal's own programs' share:\n");
    println!("| load | observer | round trips/s | change | beyond the empty programs | p50 µs | p99 µs | p99 change |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for (l, load) in LOADS.into_iter().enumerate() {
        if load == Load::Bulk || measured[l][nothing].is_empty() {
            continue;
        }
        let rates = |o: usize| -> Vec<f64> { measured[l][o].iter().map(|m| m.rate).collect() };
        let p99s = |o: usize| -> Vec<f64> { measured[l][o].iter().filter_map(|m| m.p99).collect() };
        let (base_rate, base_p99) = (rates(nothing), p99s(nothing));
        for (o, observer) in OBSERVERS.into_iter().enumerate() {
            if measured[l][o].is_empty() {
                continue;
            }
            let (rate, p99) = (rates(o), p99s(o));
            let p50: Vec<f64> = measured[l][o].iter().filter_map(|m| m.p50).collect();
            let beyond = observer.floor().map_or("-".to_string(), |floor| {
                signed_summary(&changes(&rate, &rates(index(floor))))
            });
            let (rate_change, p99_change) = if o == nothing {
                ("-".to_string(), "-".to_string())
            } else {
                let (r, p) = (changes(&rate, &base_rate), changes(&p99, &base_p99));
                if observer.floor().is_some() {
                    let (r_median, p_median) = (median(&mut r.clone()), median(&mut p.clone()));
                    verdicts.push(format!(
                        "- {}, {}: rate {r_median:+.1}% (target within 2%: {}), p99 {p_median:+.1}% (target within 5%: {})",
                        load.label(),
                        observer.label(),
                        met(r_median >= -2.0),
                        met(p_median <= 5.0),
                    ));
                }
                (signed_summary(&r), signed_summary(&p))
            };
            println!(
                "| {} | {} | {} | {rate_change} | {beyond} | {} | {} | {p99_change} |",
                load.label(),
                observer.label(),
                summary(&rate, 0),
                summary(&p50, 1),
                summary(&p99, 1),
            );
        }
    }

    let bulk = LOADS.iter().position(|l| *l == Load::Bulk).expect("listed");
    if measured[bulk][nothing].is_empty() {
        print_verdicts(&verdicts);
        return;
    }
    println!("\nBulk, {seconds} s a run, {rounds} rounds, same order:\n");
    println!("| observer | Gbit/s | change |");
    println!("|---|---|---|");
    let base: Vec<f64> = measured[bulk][nothing].iter().map(|m| m.rate).collect();
    for (o, observer) in OBSERVERS.into_iter().enumerate() {
        let rate: Vec<f64> = measured[bulk][o].iter().map(|m| m.rate).collect();
        let change = if o == nothing {
            "-".to_string()
        } else {
            signed_summary(&changes(&rate, &base))
        };
        println!(
            "| {} | {} | {change} |",
            observer.label(),
            summary(&rate, 2)
        );
    }

    println!("\nPer-packet cost under the bulk load (bpf_stats run_time_ns / run_cnt of the cgroup_skb or TC programs, in separate iperf3 runs with the statistics on), against the empty programs on the same hooks in the same round:\n");
    println!("| program | ns/packet | × its empty program |");
    println!("|---|---|---|");
    for (o, observer) in OBSERVERS.into_iter().enumerate() {
        let Some(programs) = observer.programs() else {
            continue;
        };
        let ns = &ns_per_packet[o];
        let ratio = observer.floor().map_or("-".to_string(), |floor| {
            let ratio: Vec<f64> = ns
                .iter()
                .zip(&ns_per_packet[index(floor)])
                .map(|(n, e)| n / e)
                .collect();
            let r_median = median(&mut ratio.clone());
            verdicts.push(format!(
                "- bulk, {}: {r_median:.2}× its empty program per packet (target within 2×: {})",
                observer.label(),
                met(r_median <= 2.0)
            ));
            summary(&ratio, 2)
        });
        println!(
            "| {} ({programs}…) | {} | {ratio} |",
            observer.label(),
            summary(ns, 1),
        );
    }
    if !nat_ns.is_empty() {
        let floor = &ns_per_packet[index(Observer::EmptyHostMode)];
        let ratio: Vec<f64> = nat_ns.iter().zip(floor).map(|(n, e)| n / e).collect();
        println!(
            "| host mode's NAT tracepoint, per packet sent host-wide ({NAT_TRACEPOINT}) | {} | {} |",
            summary(nat_ns, 1),
            summary(&ratio, 2)
        );
    }
    print_verdicts(&verdicts);
}

fn print_verdicts(verdicts: &[String]) {
    println!("\nTargets (medians):\n");
    for line in verdicts {
        println!("{line}");
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sockperf 3.7's closing lines, colour codes included.
    const SOCKPERF: &str = "sockperf: [Total Run] RunTime=5.000 sec; Warm up time=400 msec; SentMessages=378021; ReceivedMessages=378020
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=4.550 sec; SentMessages=341250; ReceivedMessages=341250
sockperf: \x1b[2;35m====> avg-latency=6.512 (std-dev=1.021)\x1b[0m
sockperf: ---> percentile 99.990 =   41.183
sockperf: ---> percentile 99.900 =   14.603
sockperf: ---> percentile 99.000 =    9.317
sockperf: ---> percentile 90.000 =    7.688
sockperf: ---> percentile 50.000 =    6.447
sockperf: ---> <MIN> observation =    4.463
";

    #[test]
    fn sockperf_rate_is_over_the_valid_duration_only() {
        let m = parse_sockperf(SOCKPERF).unwrap();
        assert!((m.rate - 341_250.0 / 4.55).abs() < 1e-6, "{}", m.rate);
        assert_eq!(m.p50, Some(6.447));
        assert_eq!(m.p99, Some(9.317));
    }

    #[test]
    fn sockperf_output_without_a_result_is_an_error() {
        assert!(parse_sockperf("sockperf: ERROR: connect failed").is_err());
        let nothing = SOCKPERF.replace("ReceivedMessages=341250", "ReceivedMessages=0");
        assert!(parse_sockperf(&nothing).is_err());
    }

    #[test]
    fn iperf3_throughput_is_the_receivers() {
        let json = r#"{"end": {"streams": [{"sender": {"bits_per_second": 1.5e9}}],
            "sum_sent": {"bytes": 9, "bits_per_second": 7200000000.5, "retransmits": 3},
            "sum_received": {"bytes": 8, "bits_per_second": 7.1e9}}}"#;
        assert_eq!(received_bits_per_second(json), Some(7.1e9));
        assert_eq!(received_bits_per_second(r#"{"error": "refused"}"#), None);
    }

    #[test]
    fn changes_are_per_round_percentages() {
        let c = changes(&[99.0, 102.0], &[100.0, 100.0]);
        assert!(
            (c[0] + 1.0).abs() < 1e-9 && (c[1] - 2.0).abs() < 1e-9,
            "{c:?}"
        );
        assert_eq!(signed_summary(&c), "+2.0% (-1.0 to +2.0)");
    }
}
