//! `cargo xtask bench-load`: the agent's CPU budget. New TCP connections
//! and DNS messages at the rates a busy node sees (by default 10,000
//! connections and 4,000 answered queries, 8,000 DNS messages, a second:
//! Coroot publishes 200 mCPU at 10k requests/s, and Inspektor Gadget's DNS
//! tracer starts dropping at 8,192 events/s), observed in turn by host
//! mode, by `connbal trace --iface`, and by the peers' pattern, `tcpdump
//! -w - FILTER | connbal replay -`. Prints each observer's own CPU (user +
//! system of its processes over the load, in mCPU), what it lost, and the
//! rates the generators reached.
//!
//! The generators run in this process, both ends of the lab, so in host
//! mode (which traces the process's cgroup) the programs see the servers'
//! sockets too; they make no records there but a DNS server socket's one.

use super::{
    build_release, inside_cgroup, median, process_cpu, prog_stats, report_count, spread,
    start_host_trace, start_trace, stop_trace, BpfStats, Pipeline,
};
use crate::load::{self, Rates};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Observer {
    HostMode,
    Tc,
    Pipeline,
}

impl Observer {
    fn label(self) -> &'static str {
        match self {
            Observer::HostMode => "connbal trace --cgroup (host mode)",
            Observer::Tc => "connbal trace --iface (TC)",
            Observer::Pipeline => "tcpdump -w - FILTER \\| connbal replay -",
        }
    }
}

const OBSERVERS: [Observer; 3] = [Observer::HostMode, Observer::Tc, Observer::Pipeline];

/// Every program of connbal's, whichever observer attached it.
const PROGRAMS: &str = "connbal_";
const CLOSE_TRACEPOINT: &str = "connbal_closed";

/// Records (or packets) still in flight when the load stops: the trace
/// drains its ring on a timer, tcpdump hands over a block each second.
const SETTLE: Duration = Duration::from_millis(1500);

/// One observer's run.
struct Run {
    mcpu: f64,
    /// connbal's kernel programs' run time, per second of load, in mCPU
    /// (charged to whichever task or softirq ran them).
    kernel_mcpu: f64,
    lost: u64,
    connections_per_s: f64,
    dns_messages_per_s: f64,
    /// What its report counted, per second: proof that it saw the load.
    attempts_seen_per_s: f64,
    dns_seen_per_s: f64,
}

impl Run {
    fn new(
        seconds: u64,
        (cpu, kernel_ns): (f64, u64),
        lost: u64,
        done: &load::Done,
        report: &str,
    ) -> Result<Self> {
        let per_s = |n: u64| n as f64 / seconds as f64;
        Ok(Self {
            mcpu: cpu * 1000.0 / seconds as f64,
            kernel_mcpu: kernel_ns as f64 / 1e6 / seconds as f64,
            lost,
            connections_per_s: per_s(done.connections),
            dns_messages_per_s: per_s(2 * done.dns_queries),
            attempts_seen_per_s: per_s(report_count(report, &["counters", "connection_attempts"])?),
            dns_seen_per_s: per_s(report_count(report, &["counters", "dns_messages"])?),
        })
    }
}

pub fn load(root: &Path, seconds: u64, rounds: usize, rates: Rates) -> Result<()> {
    if !crate::lab::is_root() {
        bail!("bench-load attaches eBPF programs in namespaces: run it as root");
    }
    if !crate::lab::missing_tools(&["tcpdump", "ip"]).is_empty() {
        crate::setup::apt_install(&["tcpdump", "iproute2"])?;
    }
    let connbal = build_release(root)?;
    let duration = Duration::from_secs(seconds);
    let lab = crate::lab::Lab::new()?;
    let mut cgroups = crate::cgroup::TestCgroup::new("bench-load")?;
    let load_cgroup = cgroups.child("load")?;
    let load_cgroup_name = format!("{}/load", cgroups.relative_root());
    // The kernel programs' own time, from their run statistics (two clock
    // reads a run, on for the whole benchmark and for every observer).
    let _stats = BpfStats::enable()?;
    let mut runs: [Vec<Run>; 3] = Default::default();
    // Host mode's close tracepoint alone (issue 26): (ns, runs) per round.
    let mut closes: Vec<(u64, u64)> = Vec::new();
    for round in 0..rounds {
        for k in 0..OBSERVERS.len() {
            let o = (k + round) % OBSERVERS.len();
            let observer = OBSERVERS[o];
            let run = match observer {
                Observer::HostMode | Observer::Tc => {
                    let trace = if observer == Observer::HostMode {
                        start_host_trace(&connbal, &load_cgroup_name, &[])?
                    } else {
                        start_trace(&lab, &connbal, &[])?
                    };
                    let pid = trace.child.id();
                    let before = process_cpu(pid);
                    let kernel_before = prog_stats(PROGRAMS)?.0;
                    let closed_before = prog_stats(CLOSE_TRACEPOINT)?;
                    let done = if observer == Observer::HostMode {
                        inside_cgroup(&load_cgroup, || load::run_rates(&lab, duration, rates))?
                    } else {
                        load::run_rates(&lab, duration, rates)?
                    };
                    std::thread::sleep(SETTLE);
                    let cpu = process_cpu(pid) - before;
                    let kernel_ns = prog_stats(PROGRAMS)?.0 - kernel_before;
                    if observer == Observer::HostMode {
                        let after = prog_stats(CLOSE_TRACEPOINT)?;
                        closes.push((after.0 - closed_before.0, after.1 - closed_before.1));
                    }
                    let json = stop_trace(trace)?;
                    let lost = report_count(&json, &["input", "kernel", "records_lost"])?;
                    Run::new(seconds, (cpu, kernel_ns), lost, &done, &json)?
                }
                Observer::Pipeline => {
                    let pipeline = Pipeline::start(&lab, &connbal)?;
                    let pids = [pipeline.tcpdump.id(), pipeline.replay.id()];
                    let cpu_now = || pids.iter().map(|&p| process_cpu(p)).sum::<f64>();
                    let before = cpu_now();
                    let done = load::run_rates(&lab, duration, rates)?;
                    std::thread::sleep(SETTLE);
                    let cpu = cpu_now() - before;
                    let (json, dropped) = pipeline.stop()?;
                    let lost = dropped
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    Run::new(seconds, (cpu, 0), lost, &done, &json)?
                }
            };
            runs[o].push(run);
        }
        eprintln!("bench-load: round {}/{rounds} done", round + 1);
    }
    print_table(seconds, rounds, rates, &runs);
    print_closes(seconds, &closes);
    let mut stops = Vec::new();
    for _ in 0..rounds {
        stops.push(stop_under_load(
            &connbal,
            &lab,
            (&load_cgroup, &load_cgroup_name),
            rates,
        )?);
    }
    print_stops(rates, &stops);
    Ok(())
}

/// Host mode's close tracepoint, which runs on every TCP state change on
/// the host and records only connections to a VIP (none in this load).
fn print_closes(seconds: u64, closes: &[(u64, u64)]) {
    if closes.is_empty() {
        return;
    }
    let mut mcpu: Vec<f64> = closes
        .iter()
        .map(|&(ns, _)| ns as f64 / 1e6 / seconds as f64)
        .collect();
    let mut per_run: Vec<f64> = closes
        .iter()
        .map(|&(ns, runs)| ns as f64 / runs.max(1) as f64)
        .collect();
    let mut runs_per_s: Vec<f64> = closes
        .iter()
        .map(|&(_, runs)| runs as f64 / seconds as f64)
        .collect();
    let ((mcpu_min, mcpu_max), (ns_min, ns_max)) = (spread(&mcpu), spread(&per_run));
    println!(
        "\nOf host mode's kernel programs, the close tracepoint ({CLOSE_TRACEPOINT}, on every TCP state change on the host): {:.1} mCPU ({mcpu_min:.1}–{mcpu_max:.1}), {:.0} runs/s, {:.0} ns a run ({ns_min:.0}–{ns_max:.0})",
        median(&mut mcpu),
        median(&mut runs_per_s),
        median(&mut per_run),
    );
}

/// How a host-mode trace serving metrics ended on SIGTERM under the load.
struct Stop {
    took: Duration,
    success: bool,
    left_attached: bool,
}

/// A pod is stopped with SIGTERM: host mode with `--metrics` under the
/// load, SIGTERM three seconds in, timed until the process has exited.
fn stop_under_load(
    connbal: &Path,
    lab: &crate::lab::Lab,
    (cgroup, cgroup_name): (&Path, &str),
    rates: Rates,
) -> Result<Stop> {
    use std::io::Read as _;
    let trace = start_host_trace(connbal, cgroup_name, &["--metrics", "127.0.0.1:9478"])?;
    let super::Tracer { mut child, stderr } = trace;
    let mut stdout = child.stdout.take().context("trace's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut report = String::new();
        let _ = stdout.read_to_string(&mut report);
    });
    let (took, status) = inside_cgroup(cgroup, || {
        std::thread::scope(|scope| {
            let load = scope.spawn(|| load::run_rates(lab, Duration::from_secs(6), rates));
            std::thread::sleep(Duration::from_secs(3));
            let signalled = Instant::now();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            let status = child.wait()?;
            let took = signalled.elapsed();
            load.join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
            Ok((took, status))
        })
    })?;
    let _ = reader.join();
    drop(stderr);
    let shown = crate::lab::run(Command::new("bpftool").args(["cgroup", "show"]).arg(cgroup))?;
    Ok(Stop {
        took,
        success: status.success(),
        left_attached: String::from_utf8_lossy(&shown.stdout).contains("connbal"),
    })
}

fn print_stops(rates: Rates, stops: &[Stop]) {
    let mut millis: Vec<f64> = stops
        .iter()
        .map(|s| s.took.as_secs_f64() * 1000.0)
        .collect();
    let (lo, hi) = spread(&millis);
    let all_ok = stops.iter().all(|s| s.success && !s.left_attached);
    println!(
        "\nSIGTERM to exit, host mode with --metrics under the same load ({} connections/s, {} DNS messages/s), {} runs: median {:.0} ms ({lo:.0}–{hi:.0}); exit status 0 and nothing left attached in every run: {}",
        rates.connections,
        2 * rates.dns_queries,
        stops.len(),
        median(&mut millis),
        if all_ok { "yes" } else { "NO" }
    );
    println!(
        "- SIGTERM to exit: {hi:.0} ms at most (target within 1 s, exit 0, nothing attached: {})",
        if hi <= 1000.0 && all_ok {
            "met"
        } else {
            "not met"
        }
    );
}

fn print_table(seconds: u64, rounds: usize, rates: Rates, runs: &[Vec<Run>; 3]) {
    println!(
        "New connections at {} a second and DNS at {} answered queries ({} messages) a second, {seconds} s a run, {rounds} rounds, observers in an order rotated each round. CPU is user + system of the observer's own processes over the load and {} ms after it, per second of load; median (min–max):\n",
        rates.connections,
        rates.dns_queries,
        2 * rates.dns_queries,
        SETTLE.as_millis()
    );
    println!("| observer | mCPU | its kernel programs, mCPU | records lost (tcpdump: dropped), all rounds | connections/s made | attempts/s in its report | DNS messages/s made | in its report |");
    println!("|---|---|---|---|---|---|---|---|");
    let summary = |values: &mut Vec<f64>, digits: usize| {
        let (lo, hi) = spread(values);
        format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(values))
    };
    let mut verdicts = Vec::new();
    for (o, observer) in OBSERVERS.into_iter().enumerate() {
        let mut mcpu: Vec<f64> = runs[o].iter().map(|r| r.mcpu).collect();
        let kernel = if observer == Observer::Pipeline {
            // tcpdump's classic BPF filter and copies run in softirq, with
            // no statistics of their own.
            "not measured".to_string()
        } else {
            summary(&mut runs[o].iter().map(|r| r.kernel_mcpu).collect(), 1)
        };
        let mut conns: Vec<f64> = runs[o].iter().map(|r| r.connections_per_s).collect();
        let mut dns: Vec<f64> = runs[o].iter().map(|r| r.dns_messages_per_s).collect();
        let mut attempts_seen: Vec<f64> = runs[o].iter().map(|r| r.attempts_seen_per_s).collect();
        let mut dns_seen: Vec<f64> = runs[o].iter().map(|r| r.dns_seen_per_s).collect();
        let lost: u64 = runs[o].iter().map(|r| r.lost).sum();
        println!(
            "| {} | {} | {kernel} | {lost} | {} | {} | {} | {} |",
            observer.label(),
            summary(&mut mcpu, 0),
            summary(&mut conns, 0),
            summary(&mut attempts_seen, 0),
            summary(&mut dns, 0),
            summary(&mut dns_seen, 0),
        );
        if observer != Observer::Pipeline {
            let m = median(&mut mcpu);
            verdicts.push(format!(
                "- {}: {m:.0} mCPU, {lost} lost (target at most 200 mCPU with 0 lost: {})",
                observer.label(),
                if m <= 200.0 && lost == 0 {
                    "met"
                } else {
                    "not met"
                }
            ));
        }
    }
    println!("\nTargets (medians):\n");
    for line in verdicts {
        println!("{line}");
    }
}
