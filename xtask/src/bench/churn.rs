//! `cargo xtask bench-churn`: host mode as an always-on agent on a node
//! whose workloads come and go. Cgroups are made one after another under
//! the traced root, each runs a real lookup (`dig`) of a name of its own
//! and a connection attempt (`curl`), and is removed; the trace serves
//! metrics, scraped once a second. Prints resident memory, the services
//! in the exposition, and the clients forgotten over time: the agent's
//! memory and series should level off once gone clients are forgotten
//! (five minutes after their cgroup went), however many came and went.

use super::{build_release, report_count, start_host_trace, stop_trace};
use crate::lab::SERVER_V4;
use crate::load::{self, Mix};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

const METRICS: &str = "127.0.0.1:9477";
const SAMPLE_EVERY: Duration = Duration::from_mins(1);

pub fn churn(root: &Path, seconds: u64, rate: u64) -> Result<()> {
    if !crate::lab::is_root() {
        bail!("bench-churn attaches eBPF programs and makes cgroups: run it as root");
    }
    let missing = crate::lab::missing_tools(&["dig", "curl", "ip"]);
    if !missing.is_empty() {
        crate::setup::apt_install(&["bind9-dnsutils", "curl", "iproute2"])?;
    }
    let connbal = build_release(root)?;
    let lab = crate::lab::Lab::new()?;
    let mut cgroups = crate::cgroup::TestCgroup::new("churn")?;
    // Every service in the exposition (its default keeps the busiest
    // 1,667), so that the count shows what the agent holds.
    let trace = start_host_trace(
        &connbal,
        &cgroups.relative_root(),
        &["--metrics", METRICS, "--metrics-max-series", "1000000"],
    )?;
    let pid = trace.child.id();
    let duration = Duration::from_secs(seconds);
    println!("connbal trace --cgroup --metrics --metrics-max-series 1000000, {rate} cgroups a second made under the traced root for {seconds} s, each running dig (a name of its own) and curl (a refused connection) once, then removed; sampled every {} s:\n", SAMPLE_EVERY.as_secs());
    println!("| time | cgroups so far | RSS MiB | peak RSS MiB | services in the exposition | clients forgotten | records lost |");
    println!("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let made = std::thread::scope(|scope| -> Result<u64> {
        // The DNS server (four addresses a name) for the whole run; its own
        // client asks once a second from outside the traced cgroup.
        let server = scope.spawn(|| {
            load::run_paced(
                &lab,
                Mix::DnsChurn,
                duration + Duration::from_secs(2),
                Some(32),
            )
        });
        let mut made = 0u64;
        let mut next_sample = started + SAMPLE_EVERY;
        while started.elapsed() < duration {
            made += 1;
            let due = started + Duration::from_secs_f64(made as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let name = format!("c{made}");
            let dir = cgroups.child(&name)?;
            for program in [
                vec![
                    "dig".to_string(),
                    "+short".into(),
                    "+tries=1".into(),
                    "+time=1".into(),
                    format!("@{SERVER_V4}"),
                    format!("n{}.load.test", made % 60_000),
                ],
                vec![
                    "curl".to_string(),
                    "-s".into(),
                    "-m".into(),
                    "1".into(),
                    format!("http://{SERVER_V4}:{}/", load::CLOSED_PORT),
                ],
            ] {
                let _ = crate::cgroup::TestCgroup::command_in(&dir, "ip")
                    .args(["netns", "exec", &lab.client_ns])
                    .args(&program)
                    .output()
                    .with_context(|| format!("running {}", program[0]))?;
            }
            remove_cgroup(&dir)?;
            if Instant::now() >= next_sample {
                next_sample += SAMPLE_EVERY;
                print_sample(pid, started, made);
            }
        }
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the DNS server panicked"))??;
        Ok(made)
    })?;
    print_sample(pid, started, made);
    let report = stop_trace(trace)?;
    println!(
        "\n{made} cgroups made and removed; {} clients forgotten, {} records read, {} lost.",
        report_count(&report, &["counters", "clients_forgotten"])?,
        report_count(&report, &["input", "records"])?,
        report_count(&report, &["input", "kernel", "records_lost"])?,
    );
    Ok(())
}

/// A cgroup whose process has exited; the kernel may take a moment to
/// let go of it.
fn remove_cgroup(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
}

fn print_sample(pid: u32, started: Instant, made: u64) {
    let mib = |field: &str| {
        super::soak::status_kib(pid, field)
            .map_or("?".to_string(), |k| format!("{:.0}", k as f64 / 1024.0))
    };
    let text = super::soak::scrape_at(METRICS).unwrap_or_default();
    let services = text
        .lines()
        .filter(|l| l.starts_with("connbal_service_lookups_total{"))
        .count();
    let counter = |metric: &str, name: &str| {
        let prefix = format!("{metric}{{counter=\"{name}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    println!(
        "| {} s | {made} | {} | {} | {services} | {} | {} |",
        started.elapsed().as_secs(),
        mib("VmRSS:"),
        mib("VmHWM:"),
        counter("connbal_aggregator_events_total", "clients_forgotten"),
        counter("connbal_input_events_total", "kernel_records_lost"),
    );
}
