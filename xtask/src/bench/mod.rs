//! The benchmarks, one file each: `replay` (`cargo xtask bench-replay`),
//! `churn` (`bench-churn`), `live` (`bench-live`), `load` (`bench-load`),
//! `lookups` (`bench-getaddrinfo`),
//! `profile` (`bench-profile`) and `soak` (`bench-soak`); `overhead.rs`
//! uses the pieces here too. What they share: the release build, traces
//! and the tcpdump pipeline started and stopped, CPU accounting, BPF run
//! statistics, and connbal's JSON reports read as JSON.

mod churn;
mod live;
mod load;
mod lookups;
mod profile;
mod replay;
mod soak;
mod walk;

pub use churn::churn;
pub use live::live;
pub use load::load;
pub use lookups::lookups;
pub use profile::profile;
pub use replay::replay;
pub use soak::soak;
pub use walk::walk;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// DNS queries per second in the paced comparison; connection attempts
/// run at a quarter of it and bulk TCP at RATE/64 writes of 64 KiB.
pub(crate) const PACED_RATE: u64 = 20_000;

pub(crate) const PACED_ROUNDS: usize = 3;

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
    let own =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        });
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
    let programs: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).context("reading `bpftool -j prog show`")?;
    let mut total = (0, 0);
    for program in programs
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with(name)))
    {
        // bpftool leaves both out while kernel.bpf_stats_enabled was never
        // on for the program: then it has run for 0 ns, as far as anyone
        // measured.
        let field = |key: &str| program[key].as_u64().unwrap_or(0);
        total.0 += field("run_time_ns");
        total.1 += field("run_cnt");
    }
    Ok(total)
}

/// A loaded program's own cost in isolation: the kernel's
/// `BPF_PROG_TEST_RUN` on `packet` (an Ethernet frame) `repeat` times, as
/// `bpftool prog run` reports its average, in ns. Free of the hook's and
/// the statistics' own cost, and of the machine's noise, so it shows
/// what a program's code adds over an empty one to a few nanoseconds.
pub(crate) fn prog_test_run_ns(name: &str, packet: &Path, repeat: u32) -> Result<f64> {
    let out = crate::lab::run(Command::new("bpftool").args(["-j", "prog", "show", "name", name]))?;
    // One object per program of that name, as a JSON array or alone.
    let shown: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading `bpftool -j prog show name`")?;
    let id = shown.as_array().and_then(|a| a.first()).unwrap_or(&shown)["id"]
        .as_u64()
        .with_context(|| format!("no loaded program named {name}"))?;
    let out = crate::lab::run(Command::new("bpftool").args([
        "prog",
        "run",
        "id",
        &id.to_string(),
        "data_in",
        &packet.display().to_string(),
        "repeat",
        &repeat.to_string(),
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    text.split("duration (average): ")
        .nth(1)
        .and_then(|rest| rest.split("ns").next())
        .and_then(|ns| ns.trim().parse::<f64>().ok())
        .with_context(|| format!("no duration in `bpftool prog run` of {name}: {text}"))
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

/// The count at `path` in a connbal JSON report (`["input", "records"]`);
/// a key that is missing is an error that names it, never a 0.
pub(crate) fn report_count(json: &str, path: &[&str]) -> Result<u64> {
    let report: serde_json::Value =
        serde_json::from_str(json).context("reading connbal's JSON report")?;
    let mut at = &report;
    for key in path {
        at = at
            .get(key)
            .with_context(|| format!("connbal's JSON report has no {}", path.join(".")))?;
    }
    at.as_u64().with_context(|| {
        format!(
            "{} in connbal's JSON report is not a count: {at}",
            path.join(".")
        )
    })
}

/// The rows of a JSON report, for comparing two reports.
pub(crate) fn report_rows(json: &str) -> Result<serde_json::Value> {
    let report: serde_json::Value =
        serde_json::from_str(json).context("reading connbal's JSON report")?;
    report
        .get("rows")
        .cloned()
        .context("connbal's JSON report has no rows")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_are_read_by_path_and_a_missing_one_is_an_error() {
        let json =
            r#"{"rows": [{"conns": 3}], "input": {"records": 12, "kernel": {"records_lost": 0}}}"#;
        assert_eq!(report_count(json, &["input", "records"]).unwrap(), 12);
        assert_eq!(
            report_count(json, &["input", "kernel", "records_lost"]).unwrap(),
            0
        );
        // Text splitting read this as 0; it is an error that names the key.
        let missing = report_count(json, &["input", "packets"]).unwrap_err();
        assert!(missing.to_string().contains("input.packets"), "{missing}");
        assert!(report_count("not json", &["input"]).is_err());
        assert_eq!(
            report_rows(json).unwrap(),
            serde_json::json!([{"conns": 3}])
        );
    }
}
