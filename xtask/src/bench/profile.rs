//! `cargo xtask bench-profile`: the side-by-side comparison under
//! `perf record -a`, and where the machine's time went by symbol.

use super::{build_release, start_trace, stop_trace, Command, Pipeline, PACED_RATE};
use anyhow::{bail, Result};
use std::path::Path;

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
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
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
    for (i, (observer, comms, _)) in profiles.iter().enumerate() {
        let cpu = busy(comms);
        println!(
            "| {observer} | {:.1}% | {cpu:.2} | {} |",
            100.0 - cpu / (cpus * seconds as f64) * 100.0,
            // The first observer is the load alone: the baseline itself.
            if i == 0 {
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
