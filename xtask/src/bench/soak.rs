//! `cargo xtask bench-soak`: connbal as an always-on agent. A trace with
//! `--metrics` under ever-new names (the load's `DnsChurn` mix: a name and
//! four addresses per query, until every table is at its cap), scraped
//! once a second, while slow clients of the metrics port ask and never
//! read; prints connbal's resident memory over time, the exposition's size
//! and scrape time, and records lost.

use super::{build_release, report_count, start_trace, stop_trace};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const METRICS: &str = "127.0.0.1:9479";
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// One scrape, as the scraper saw it.
#[derive(Clone, Copy, Default)]
struct Scraped {
    bytes: usize,
    millis: u128,
    records: u64,
    lost: u64,
}

pub fn soak(
    root: &Path,
    seconds: u64,
    (rate, max_series): (u64, usize),
    (slow_readers, window): (usize, Option<&str>),
) -> Result<()> {
    use crate::load::{self, Mix};
    if !crate::lab::is_root() {
        bail!("bench-soak attaches eBPF programs in namespaces: run it as root");
    }
    let connbal = build_release(root)?;
    let lab = crate::lab::Lab::new()?;
    let max_series = max_series.to_string();
    let mut args = vec!["--metrics", METRICS, "--metrics-max-series", &max_series];
    if let Some(window) = window {
        args.extend(["--window", window]);
    }
    let trace = start_trace(&lab, &connbal, &args)?;
    let pid = trace.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(Mutex::new(Scraped::default()));
    let netns = format!("/var/run/netns/{}", lab.client_ns);

    // Slow readers: ask, never read, hold the connection to the end.
    let slow = in_netns(&netns, {
        let stop = Arc::clone(&stop);
        move || {
            let held: Vec<TcpStream> = (0..slow_readers)
                .filter_map(|_| {
                    let mut s = TcpStream::connect(METRICS).ok()?;
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n")
                        .ok()?;
                    Some(s)
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
            }
            held.len()
        }
    })?;
    let scraper = in_netns(&netns, {
        let (stop, last) = (Arc::clone(&stop), Arc::clone(&last));
        move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if let Some(text) = scrape() {
                    let counter = |name: &str| {
                        let prefix = format!("connbal_input_events_total{{counter=\"{name}\"}} ");
                        text.lines()
                            .find_map(|l| l.strip_prefix(&prefix))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0)
                    };
                    *last.lock().unwrap() = Scraped {
                        bytes: text.len(),
                        millis: started.elapsed().as_millis(),
                        records: counter("records"),
                        lost: counter("kernel_records_lost"),
                    };
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
            }
        }
    })?;

    println!("connbal trace --iface --metrics --metrics-max-series {max_series} under {rate} lookups/s of ever-new names ({seconds} s), scraped every second, {slow_readers} metrics clients that never read:\n");
    println!("| time | RSS MiB | peak RSS MiB | exposition MiB | last scrape ms | records | records lost |");
    println!("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let duration = Duration::from_secs(seconds);
    let sent = std::thread::scope(|scope| {
        let load = scope.spawn(|| load::run_paced(&lab, Mix::DnsChurn, duration, Some(rate)));
        let mut next = started + SAMPLE_EVERY;
        while !load.is_finished() {
            std::thread::sleep(Duration::from_millis(200));
            if Instant::now() >= next {
                next += SAMPLE_EVERY;
                print_sample(pid, started, *last.lock().unwrap());
            }
        }
        load.join().expect("the load thread")
    })?;
    print_sample(pid, started, *last.lock().unwrap());
    let peak = status_kib(pid, "VmHWM:").unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let held = slow.join().expect("the slow readers")?;
    scraper.join().expect("the scraper")?;
    let report = stop_trace(trace)?;
    let records_lost = report_count(&report, &["input", "kernel", "records_lost"])?;
    let records = report_count(&report, &["input", "records"])?;
    let built = report_count(&report, &["input", "reports_built"])?;
    println!(
        "\n{} lookups sent; {records} records read, {records_lost} lost; {built} reports built; peak RSS {:.0} MiB; {held} slow readers held.",
        sent.dns_queries,
        peak as f64 / 1024.0
    );
    Ok(())
}

fn print_sample(pid: u32, started: Instant, last: Scraped) {
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
    println!(
        "| {} s | {} | {} | {:.1} | {} | {} | {} |",
        started.elapsed().as_secs(),
        mib(status_kib(pid, "VmRSS:")),
        mib(status_kib(pid, "VmHWM:")),
        last.bytes as f64 / f64::from(1 << 20),
        last.millis,
        last.records,
        last.lost,
    );
}

/// A field of /proc/PID/status in KiB.
pub(super) fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()
}

/// One whole scrape of the metrics port, or `None` if it failed.
fn scrape() -> Option<String> {
    scrape_at(METRICS)
}

/// One whole scrape of the metrics port at `address`, or `None` if it
/// failed.
pub(super) fn scrape_at(address: &str) -> Option<String> {
    let mut s = TcpStream::connect(address).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let file = std::fs::File::open(netns).with_context(|| format!("opening {netns}"))?;
    Ok(std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(f())
    }))
}
