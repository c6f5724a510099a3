//! `cargo xtask bench-replay`: times `connbal replay` on the synthetic
//! capture, from a file and from a pipe, default and `-a`, several runs
//! each, and prints a Markdown table of medians and spreads for
//! BENCHMARKS.md. Wall time, user and system CPU and peak RSS come from
//! GNU time (`/usr/bin/time`) wrapped around connbal alone, so `cat` in the
//! pipe case is not charged to connbal.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    wall: f64,
    cpu: f64,
    rss_kib: f64,
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn time_once(connbal: &Path, capture: &Path, all_tcp: bool, pipe: bool) -> Result<Run> {
    let flags = if all_tcp { "-a" } else { "" };
    let command = format!("'{}' replay {flags}", connbal.display());
    time_command(&command, capture, pipe)
}

/// Runs `command FILE` (or `cat FILE | command -` for a pipe) under GNU
/// time, output discarded; the time is of `command` alone.
fn time_command(command: &str, capture: &Path, pipe: bool) -> Result<Run> {
    let out = tempfile_path("connbal-bench-time");
    let time = format!("/usr/bin/time -f '%e %U %S %M' -o '{}'", out.display());
    let script = if pipe {
        format!(
            "cat '{}' | {time} {command} - > /dev/null",
            capture.display()
        )
    } else {
        format!("{time} {command} '{}' > /dev/null", capture.display())
    };
    let status = Command::new("bash").args(["-c", &script]).status()?;
    if !status.success() {
        bail!("benchmark run failed: {script}");
    }
    let text = std::fs::read_to_string(&out)?;
    let fields: Vec<f64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [wall, user, sys, rss] = fields[..] else {
        bail!("unexpected time output: {text}")
    };
    Ok(Run {
        wall,
        cpu: user + sys,
        rss_kib: rss,
    })
}

fn tempfile_path(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()))
}

/// Packets in a capture (from connbal's own counters) and the file's size.
fn size_of_capture(connbal: &Path, capture: &Path) -> Result<(f64, f64)> {
    let out = Command::new(connbal)
        .args(["replay", "--format", "json"])
        .arg(capture)
        .output()?;
    let packets = json_number(&String::from_utf8(out.stdout)?, "packets");
    if packets == 0 {
        bail!("{} holds no packets", capture.display());
    }
    Ok((packets as f64, std::fs::metadata(capture)?.len() as f64))
}

pub fn replay(root: &Path, runs: usize) -> Result<()> {
    if !Path::new("/usr/bin/time").exists() {
        crate::setup::apt_install(&["time"])?;
    }
    let connbal = build_release(root)?;
    side_by_side(root, &connbal, runs)?;
    let dir = root.join("target/bench");
    if !dir.join("synthetic.snoop").exists() {
        let (packets, bytes) = crate::gen::generate(&dir, 3_000_000, 1)?;
        eprintln!("generated {packets} packets, {bytes} bytes");
    }
    println!("| input | mode | source | packets/s (median, min–max) | MB/s | user+sys CPU s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for format in ["snoop", "pcap", "pcapng"] {
        let capture = dir.join(format!("synthetic.{format}"));
        let (packets, bytes) = size_of_capture(&connbal, &capture)?;
        for all_tcp in [false, true] {
            for pipe in [false, true] {
                // One warm-up run so the page cache holds the file.
                time_once(&connbal, &capture, all_tcp, pipe)?;
                let results: Vec<Run> = (0..runs)
                    .map(|_| time_once(&connbal, &capture, all_tcp, pipe))
                    .collect::<Result<_>>()?;
                let mut pps: Vec<f64> = results.iter().map(|r| packets / r.wall / 1e6).collect();
                let mut mbs: Vec<f64> = results.iter().map(|r| bytes / r.wall / 1e6).collect();
                let mut cpu: Vec<f64> = results.iter().map(|r| r.cpu).collect();
                let mut rss: Vec<f64> = results.iter().map(|r| r.rss_kib / 1024.0).collect();
                let (pps_lo, pps_hi) = spread(&pps);
                let (mbs_lo, mbs_hi) = spread(&mbs);
                println!(
                    "| {format} | {} | {} | {:.2} M ({pps_lo:.2}–{pps_hi:.2}) | {:.0} ({mbs_lo:.0}–{mbs_hi:.0}) | {:.2} | {:.1} |",
                    if all_tcp { "-a" } else { "default" },
                    if pipe { "pipe" } else { "file" },
                    median(&mut pps),
                    median(&mut mbs),
                    median(&mut cpu),
                    median(&mut rss),
                );
            }
        }
    }
    Ok(())
}

/// The original tool's build script, beside the project's checkout.
fn original_build_script(root: &Path) -> PathBuf {
    root.join("../shared/reference/snoop-conn-balance/build.sh")
}

/// The original (built `-O2` by its reference script) and connbal on the
/// original's traffic mix, and `cat` of the same file, alternating run by
/// run so that drift in the machine's speed falls on all alike. Prints a
/// Markdown table with each tool's median wall time, its spread, and the
/// ratios the targets are stated in.
fn side_by_side(root: &Path, connbal: &Path, runs: usize) -> Result<()> {
    let script = original_build_script(root);
    if !script.exists() {
        println!(
            "(side by side skipped: the original's source is not at {})\n",
            script.display()
        );
        return Ok(());
    }
    let original = root.join("target/bench/connbal-original");
    let status = Command::new("sh").arg(&script).arg(&original).status()?;
    if !status.success() {
        bail!("building the original with {} failed", script.display());
    }
    let dir = root.join("target/bench");
    let capture = dir.join("original-mix.snoop");
    if !capture.exists() {
        let (packets, bytes) = crate::gen::generate_original_mix(&dir, 3_000_000, 1)?;
        eprintln!("generated {packets} packets, {bytes} bytes of the original's mix");
    }
    let (packets, bytes) = size_of_capture(connbal, &capture)?;
    println!(
        "Side by side on {} ({:.0} packets, {:.2} GB), {runs} alternating runs each:\n",
        capture.display(),
        packets,
        bytes / 1e9
    );
    println!("| mode | program | source | wall s (median, min–max) | packets/s | × original | % of cat | user+sys CPU s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for all_tcp in [false, true] {
        let flags = if all_tcp { "-a" } else { "" };
        let contenders: [(&str, String, bool); 4] = [
            ("cat", "cat".to_string(), false),
            (
                "original -O2",
                format!("'{}' {flags} -f", original.display()),
                false,
            ),
            (
                "connbal",
                format!("'{}' replay {flags}", connbal.display()),
                false,
            ),
            (
                "connbal",
                format!("'{}' replay {flags}", connbal.display()),
                true,
            ),
        ];
        // One warm-up round so the page cache holds the file.
        for (_, command, pipe) in &contenders {
            time_command(command, &capture, *pipe)?;
        }
        let mut results: Vec<Vec<Run>> = contenders.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs {
            for (i, (_, command, pipe)) in contenders.iter().enumerate() {
                results[i].push(time_command(command, &capture, *pipe)?);
            }
        }
        let median_wall =
            |i: usize| median(&mut results[i].iter().map(|r| r.wall).collect::<Vec<_>>());
        let (cat, original_wall) = (median_wall(0), median_wall(1));
        for (i, (name, _, pipe)) in contenders.iter().enumerate() {
            let mut wall: Vec<f64> = results[i].iter().map(|r| r.wall).collect();
            let (lo, hi) = spread(&wall);
            let wall = median(&mut wall);
            let mut cpu: Vec<f64> = results[i].iter().map(|r| r.cpu).collect();
            let mut rss: Vec<f64> = results[i].iter().map(|r| r.rss_kib / 1024.0).collect();
            println!(
                "| {} | {name} | {} | {wall:.3} ({lo:.3}–{hi:.3}) | {:.2} M | {:.2} | {:.0}% | {:.2} | {:.1} |",
                if all_tcp { "-a" } else { "default" },
                if *pipe { "pipe" } else { "file" },
                packets / wall / 1e6,
                original_wall / wall,
                cat / wall * 100.0,
                median(&mut cpu),
                median(&mut rss),
            );
        }
    }
    println!();
    Ok(())
}

pub fn build_release(root: &Path) -> Result<PathBuf> {
    crate::lab::run(Command::new("cargo").current_dir(root).args([
        "build",
        "--release",
        "-p",
        "connbal-userspace",
    ]))?;
    Ok(root.join("target/release/connbal"))
}

/// `kernel.bpf_stats_enabled` on for the benchmark, restored on drop.
pub(crate) struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(crate) fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(BPF_STATS)?.trim().to_string();
        std::fs::write(BPF_STATS, "1")?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.before);
    }
}

/// DNS queries per second in the paced comparison; connection attempts
/// run at a quarter of it and bulk TCP at RATE/64 writes of 64 KiB.
const PACED_RATE: u64 = 20_000;

const PACED_ROUNDS: usize = 3;

/// CPU seconds used by every task on the machine so far: the scheduler's
/// sum_exec_runtime (nanoseconds, /proc/*/task/*/schedstat) of every other
/// process's threads, plus getrusage for this one, whose load-generator
/// threads come and go (their time stays in the process total, and
/// getrusage scales it to the precise runtime).
///
/// Why not /proc/stat: its user/system/softirq columns are sampled at the
/// tick, and on this VM gave 0.06–5.2 CPU-s for the same load. This kernel
/// has no IRQ time accounting, so softirq work (the TC classifier on
/// ingress, AF_PACKET's taps and copies) is charged to the task it
/// interrupted or to ksoftirqd, and is in these runtimes. Tasks of other
/// processes that exit in between are missed; none do during a run.
fn machine_task_cpu() -> f64 {
    let me = std::process::id().to_string();
    let mut nanos: u64 = 0;
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for process in processes.flatten() {
        let pid = process.file_name();
        let pid = pid.to_string_lossy();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(process.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                nanos += stat
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    let own = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        })
        .unwrap_or(0.0);
    nanos as f64 / 1e9 + own
}

/// Machine CPU seconds (machine_task_cpu) while `work` runs.
fn measure_cpu<T>(work: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let before = machine_task_cpu();
    let done = work()?;
    Ok((machine_task_cpu() - before, done))
}

/// `tcpdump -w - FILTER | connbal replay -`, the pipeline connbal trace
/// replaces.
pub(crate) struct Pipeline {
    tcpdump: std::process::Child,
    replay: std::process::Child,
    tcpdump_lines: std::sync::mpsc::Receiver<String>,
}

impl Pipeline {
    pub(crate) fn start(lab: &crate::lab::Lab, connbal: &Path) -> Result<Self> {
        let mut tcpdump = lab
            .client("tcpdump")
            .args(["-i", &lab.client_if, "-U", "-w", "-", PIPELINE_FILTER])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let tcpdump_lines = crate::lab::line_reader(tcpdump.stderr.take().unwrap());
        let replay = Command::new(connbal)
            .args(["replay", "--format", "json", "-"])
            .stdin(std::process::Stdio::from(tcpdump.stdout.take().unwrap()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        // The load starts only once tcpdump is capturing.
        crate::lab::wait_for_line(
            &tcpdump_lines,
            "listening on",
            std::time::Duration::from_secs(20),
        )
        .context("tcpdump did not start")?;
        Ok(Self {
            tcpdump,
            replay,
            tcpdump_lines,
        })
    }

    /// Stops tcpdump; returns replay's JSON report and tcpdump's drop line.
    pub(crate) fn stop(mut self) -> Result<(String, String)> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.tcpdump.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        self.tcpdump.wait()?;
        let report = String::from_utf8(self.replay.wait_with_output()?.stdout)?;
        // tcpdump's statistics are its last stderr lines.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let dropped = self
            .tcpdump_lines
            .try_iter()
            .find(|l| l.contains("dropped by kernel"))
            .map_or("?".to_string(), |l| l.trim().to_string());
        Ok((report, dropped))
    }
}

pub(crate) const PIPELINE_FILTER: &str =
    "udp port 53 or tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn";

/// (run_time_ns, run_cnt) summed over loaded programs whose name starts
/// with `name` (bpftool shows full names from BTF, older ones 15 bytes).
pub(crate) fn prog_stats(name: &str) -> Result<(u64, u64)> {
    let out = crate::lab::run(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let text = String::from_utf8(out.stdout)?;
    let mut total = (0, 0);
    // bpftool's JSON is one array of flat objects; pick fields by hand to
    // avoid a JSON dependency in xtask.
    for object in text.split("},{") {
        if !object.contains(&format!("\"name\":\"{name}")) {
            continue;
        }
        let field = |key: &str| -> u64 {
            object
                .split(&format!("\"{key}\":"))
                .nth(1)
                .map(|rest| {
                    rest.chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                })
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        total.0 += field("run_time_ns");
        total.1 += field("run_cnt");
    }
    Ok(total)
}

/// User plus system CPU seconds of a running process.
fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks / hz
}

pub(crate) struct Tracer {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

pub(crate) fn start_trace(lab: &crate::lab::Lab, connbal: &Path, extra: &[&str]) -> Result<Tracer> {
    let mut command = lab.client(connbal.to_str().unwrap());
    command
        .args(["trace", "--iface", &lab.client_if, "--format", "json"])
        .args(extra);
    spawn_trace(command)
}

/// Host mode on `cgroup` (a test cgroup, relative to the mount).
pub(crate) fn start_host_trace(connbal: &Path, cgroup: &str, extra: &[&str]) -> Result<Tracer> {
    let mut command = Command::new(connbal);
    command
        .args(["trace", "--cgroup", cgroup, "--format", "json"])
        .args(extra);
    spawn_trace(command)
}

/// Runs `work` with this process (every thread, the load generators
/// included) moved into `cgroup`, then moves it back, so host mode sees
/// exactly the load's sockets.
fn inside_cgroup<T>(cgroup: &Path, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let original = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("this process's cgroup v2")?
        .to_string();
    let mount = crate::cgroup::mount()?;
    let pid = std::process::id().to_string();
    std::fs::write(cgroup.join("cgroup.procs"), &pid)?;
    let result = work();
    std::fs::write(
        mount
            .join(original.trim_start_matches('/'))
            .join("cgroup.procs"),
        &pid,
    )?;
    result
}

fn spawn_trace(mut command: Command) -> Result<Tracer> {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let rx = crate::lab::line_reader(child.stderr.take().unwrap());
    crate::lab::wait_for_line(&rx, "connbal: tracing", std::time::Duration::from_secs(20))
        .context("connbal trace did not attach")?;
    Ok(Tracer { child, stderr: rx })
}

/// Stops a trace with SIGINT; returns its JSON report.
pub(crate) fn stop_trace(t: Tracer) -> Result<String> {
    use std::io::Read;
    let Tracer { mut child, stderr } = t;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out)?;
    child.wait()?;
    drop(stderr);
    Ok(out)
}

fn json_number(json: &str, key: &str) -> u64 {
    json.split(&format!("\"{key}\":"))
        .nth(1)
        .map(|rest| {
            rest.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The report rows of a JSON report, for comparing two reports.
fn json_rows(json: &str) -> String {
    let start = json.find("\"rows\"").unwrap_or(0);
    let end = json.find("\"input\"").unwrap_or(json.len());
    json[start..end].split_whitespace().collect()
}

pub fn live(root: &Path, seconds: u64) -> Result<()> {
    use crate::load::{self, Mix};
    if !crate::lab::is_root() {
        bail!("bench-live attaches eBPF programs in namespaces: run it as root");
    }
    let missing = crate::lab::missing_tools(&["ethtool", "bpftool", "tcpdump", "ip"]);
    if !missing.is_empty() {
        crate::setup::apt_install(&["ethtool", "bpftool", "tcpdump"])?;
    }
    let connbal = build_release(root)?;
    let duration = std::time::Duration::from_secs(seconds);
    let _stats = BpfStats::enable()?;
    let lab = crate::lab::Lab::new()?;
    load::wire_sized_packets(&lab)?;

    println!("Per-packet cost of the classifier (bpf_stats run_time_ns / run_cnt), {seconds} s per phase. Host mode runs its cgroup_skb programs on both the client's and the server's sockets (the load's two ends are one process in the traced cgroup), and counts both directions:\n");
    println!("| program | traffic | packets | packets/s | ns/packet | records | records lost | userspace CPU s | CPU ms per 100k records |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut cgroups = crate::cgroup::TestCgroup::new("bench")?;
    let load_cgroup = cgroups.child("load")?;
    let load_cgroup_name = format!("{}/load", cgroups.relative_root());
    // "connbal_cgroup_" sums the egress and ingress programs.
    for (program, name, extra, host) in [
        (
            "TC: empty (floor)",
            "connbal_noop",
            &["--noop-program"][..],
            false,
        ),
        ("TC: connbal --iface", "connbal_tc", &[][..], false),
        ("host mode: connbal", "connbal_cgroup_", &[][..], true),
    ] {
        for (label, mix) in [
            ("bulk TCP", Mix::Bulk),
            ("DNS", Mix::Dns),
            ("SYN", Mix::Syn),
        ] {
            let trace = if host {
                start_host_trace(&connbal, &load_cgroup_name, &[])?
            } else {
                start_trace(&lab, &connbal, extra)?
            };
            let pid = trace.child.id();
            let before = prog_stats(name)?;
            if host {
                inside_cgroup(&load_cgroup, || load::run(&lab, mix, duration))?;
            } else {
                load::run(&lab, mix, duration)?;
            }
            let after = prog_stats(name)?;
            let cpu = process_cpu(pid);
            let json = stop_trace(trace)?;
            let packets = after.1 - before.1;
            let ns = (after.0 - before.0) as f64 / packets.max(1) as f64;
            let records = json_number(&json, "records");
            let per_100k = if records > 0 {
                cpu * 1000.0 * 100_000.0 / records as f64
            } else {
                0.0
            };
            println!(
                "| {program} | {label} | {packets} | {:.0} | {ns:.1} | {records} | {} | {cpu:.2} | {} |",
                packets as f64 / seconds as f64,
                json_number(&json, "records_lost"),
                if records > 0 { format!("{per_100k:.1}") } else { "-".into() }
            );
        }
    }

    println!("\nDrop point: DNS at the generator's full rate, {seconds} s, by ring size:\n");
    println!("| ring size | records | records lost | lost % |");
    println!("|---|---|---|---|");
    for ring in ["4K", "64K", "1M", "8M", "32M", "64M"] {
        let trace = start_trace(&lab, &connbal, &["--ring-size", ring])?;
        load::run(&lab, Mix::Dns, duration)?;
        let json = stop_trace(trace)?;
        let (records, lost) = (
            json_number(&json, "records"),
            json_number(&json, "records_lost"),
        );
        println!(
            "| {ring} | {records} | {lost} | {:.2} |",
            100.0 * lost as f64 / (records + lost).max(1) as f64
        );
    }

    println!("\nWhole-machine CPU under the same paced mixed load ({PACED_RATE} DNS queries/s, {} connection attempts/s, {} MB/s bulk), {seconds} s each, {PACED_ROUNDS} rounds; the load alone is the baseline of its round. CPU is the scheduler's runtime of every task on the machine (see machine_task_cpu: softirq work included, precise to the nanosecond):\n", PACED_RATE / 4, PACED_RATE / 64 * 64 / 1000);
    println!("| observer | CPU s, median (min–max) | above the load alone, median (min–max) | queries, attempts, MB sent (last round) |");
    println!("|---|---|---|---|");
    let paced = || load::run_paced(&lab, Mix::All, duration, Some(PACED_RATE));
    let shown = |s: &load::Sent| {
        format!(
            "{}, {}, {}",
            s.dns_queries,
            s.connection_attempts,
            s.bulk_bytes / 1_000_000
        )
    };
    // A discarded round first: the previous phase leaves deferred kernel
    // work behind, which inflated the first measurement.
    measure_cpu(paced)?;
    let mut totals: [Vec<f64>; 3] = Default::default();
    let mut above: [Vec<f64>; 2] = Default::default();
    let mut last_sent: [load::Sent; 3] = Default::default();
    for _ in 0..PACED_ROUNDS {
        let (baseline, sent) = measure_cpu(paced)?;
        totals[0].push(baseline);
        last_sent[0] = sent;

        let trace = start_trace(&lab, &connbal, &[])?;
        let (with_trace, sent) = measure_cpu(paced)?;
        let _ = stop_trace(trace)?;
        totals[1].push(with_trace);
        above[0].push(with_trace - baseline);
        last_sent[1] = sent;

        let pipeline = Pipeline::start(&lab, &connbal)?;
        let (with_pipeline, sent) = measure_cpu(paced)?;
        pipeline.stop()?;
        totals[2].push(with_pipeline);
        above[1].push(with_pipeline - baseline);
        last_sent[2] = sent;
    }
    let summary = |values: &mut Vec<f64>| {
        let (lo, hi) = spread(values);
        format!("{:.2} ({lo:.2}–{hi:.2})", median(values))
    };
    let [mut base, mut traced, mut piped] = totals;
    let [mut trace_above, mut pipe_above] = above;
    println!(
        "| none (load alone) | {} | - | {} |",
        summary(&mut base),
        shown(&last_sent[0])
    );
    println!(
        "| connbal trace | {} | {} | {} |",
        summary(&mut traced),
        summary(&mut trace_above),
        shown(&last_sent[1])
    );
    println!(
        "| tcpdump -w - … \\| connbal replay - | {} | {} | {} |",
        summary(&mut piped),
        summary(&mut pipe_above),
        shown(&last_sent[2])
    );
    println!(
        "\nconnbal trace's extra CPU is {:.0}% of the pipeline's (medians).",
        100.0 * median(&mut trace_above) / median(&mut pipe_above)
    );

    println!("\nSide by side, same mixed load, same {seconds} s:\n");
    let trace = start_trace(&lab, &connbal, &[])?;
    let trace_pid = trace.child.id();
    let pipeline = Pipeline::start(&lab, &connbal)?;
    let before = prog_stats("connbal_tc")?;
    load::run(&lab, Mix::All, duration)?;
    // tcpdump (without --immediate-mode) hands over a TPACKET_V3 block when
    // it fills or after its 1 s timeout; stopping it earlier loses the last
    // partial block without counting a drop.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = prog_stats("connbal_tc")?;
    let (trace_cpu, tcpdump_cpu, replay_cpu) = (
        process_cpu(trace_pid),
        process_cpu(pipeline.tcpdump.id()),
        process_cpu(pipeline.replay.id()),
    );
    let trace_json = stop_trace(trace)?;
    let (replay_json, dropped) = pipeline.stop()?;
    let kernel_prog_s = (after.0 - before.0) as f64 / 1e9;
    println!("| pipeline | CPU s (user+sys of its processes) | in-kernel filter s | drops |");
    println!("|---|---|---|---|");
    println!(
        "| connbal trace | {trace_cpu:.2} | {kernel_prog_s:.3} (classifier, all packets) | {} records lost |",
        json_number(&trace_json, "records_lost")
    );
    println!("| tcpdump -w - … \\| connbal replay - | {:.2} (tcpdump {tcpdump_cpu:.2} + replay {replay_cpu:.2}) | not measured (cBPF socket filter and packet copies in softirq) | {dropped} |", tcpdump_cpu + replay_cpu);
    let identical = json_rows(&trace_json) == json_rows(&replay_json);
    println!(
        "\nReports identical: {}",
        if identical { "yes" } else { "NO" }
    );
    if !identical {
        std::fs::write("/tmp/connbal-bench-trace.json", &trace_json)?;
        std::fs::write("/tmp/connbal-bench-replay.json", &replay_json)?;
        println!("(both reports written to /tmp/connbal-bench-{{trace,replay}}.json)");
    }
    Ok(())
}

/// `cargo xtask bench-profile`: where the side-by-side CPU goes, by symbol,
/// kernel and user, under the paced mixed load. perf samples the whole
/// machine (cpu-clock on this VM, which has no hardware counters), so
/// softirq work shows under whichever task it interrupted.
pub fn profile(root: &Path, seconds: u64) -> Result<()> {
    use crate::load::{self, Mix};
    if !crate::lab::is_root() {
        bail!("bench-profile attaches eBPF programs in namespaces: run it as root");
    }
    if !crate::lab::missing_tools(&["perf"]).is_empty() {
        bail!("bench-profile needs perf (apt install linux-perf)");
    }
    let connbal = build_release(root)?;
    let duration = std::time::Duration::from_secs(seconds);
    let lab = crate::lab::Lab::new()?;
    load::wire_sized_packets(&lab)?;
    let dir = root.join("target/bench/profile");
    std::fs::create_dir_all(&dir)?;
    // A discarded round first, as in bench-live.
    load::run_paced(&lab, Mix::All, duration, Some(PACED_RATE))?;
    let mut profiles = Vec::new();
    for observer in ["load alone", "connbal trace", "tcpdump pipeline"] {
        let trace = match observer {
            "connbal trace" => Some(start_trace(&lab, &connbal, &[])?),
            _ => None,
        };
        let pipeline = match observer {
            "tcpdump pipeline" => Some(Pipeline::start(&lab, &connbal)?),
            _ => None,
        };
        let data = dir.join(format!("{}.data", observer.replace(' ', "-")));
        let mut perf = Command::new("perf")
            .args(["record", "-a", "-F", "1999", "-o"])
            .arg(&data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        load::run_paced(&lab, Mix::All, duration, Some(PACED_RATE))?;
        perf.wait()?;
        if let Some(trace) = trace {
            stop_trace(trace)?;
        }
        if let Some(pipeline) = pipeline {
            pipeline.stop()?;
        }
        profiles.push((
            observer,
            perf_shares(&data, "comm")?,
            perf_shares(&data, "sym")?,
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = |comms: &[(String, f64)]| {
        let idle = comms
            .iter()
            .find(|(c, _)| c == "swapper")
            .map_or(0.0, |(_, p)| *p);
        (100.0 - idle) / 100.0 * cpus * seconds as f64
    };
    let base = busy(&profiles[0].1);
    println!("Paced mixed load ({PACED_RATE} DNS queries/s), {seconds} s per observer, perf record -a at 1999 Hz:\n");
    println!("| observer | idle | busy CPU-s | above the load alone |");
    println!("|---|---|---|---|");
    for (observer, comms, _) in &profiles {
        let cpu = busy(comms);
        println!(
            "| {observer} | {:.1}% | {cpu:.2} | {} |",
            100.0 - cpu / (cpus * seconds as f64) * 100.0,
            if cpu == base {
                "-".to_string()
            } else {
                format!("{:.2}", cpu - base)
            }
        );
    }
    let alone = &profiles[0].2;
    for (observer, _, symbols) in &profiles[1..] {
        let mut grown: Vec<(f64, &str)> = symbols
            .iter()
            .map(|(sym, p)| {
                let before = alone
                    .iter()
                    .find(|(s, _)| s == sym)
                    .map_or(0.0, |(_, b)| *b);
                (p - before, sym.as_str())
            })
            .collect();
        grown.sort_by(|a, b| b.0.total_cmp(&a.0));
        println!("\nSymbols that grew most with {observer}, in percent of all samples:\n");
        println!("| growth | symbol |");
        println!("|---|---|");
        for (delta, sym) in grown.iter().take(15) {
            println!("| {delta:+.2} | `{sym}` |");
        }
    }
    println!("\nperf data: {}", dir.display());
    Ok(())
}

/// (key, percent of samples) from `perf report --sort KEY`.
fn perf_shares(data: &Path, key: &str) -> Result<Vec<(String, f64)>> {
    let out = crate::lab::run(
        Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", key])
            .args(["--percent-limit", "0.02", "-i"])
            .arg(data),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (percent, name) = l.trim().split_once('%')?;
            Some((name.trim().to_string(), percent.trim().parse().ok()?))
        })
        .collect())
}
