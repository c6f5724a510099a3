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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn time_once(connbal: &Path, capture: &Path, all_tcp: bool, pipe: bool) -> Result<Run> {
    let out = tempfile_path("connbal-bench-time");
    let flags = if all_tcp { "-a" } else { "" };
    let script = if pipe {
        format!(
            "cat '{}' | /usr/bin/time -f '%e %U %S %M' -o '{}' '{}' replay {flags} - > /dev/null",
            capture.display(),
            out.display(),
            connbal.display()
        )
    } else {
        format!(
            "/usr/bin/time -f '%e %U %S %M' -o '{}' '{}' replay {flags} '{}' > /dev/null",
            out.display(),
            connbal.display(),
            capture.display()
        )
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

/// Packets and bytes in a capture, from connbal's own counters.
fn size_of_capture(connbal: &Path, capture: &Path) -> Result<(f64, f64)> {
    let out = Command::new(connbal)
        .args(["replay", "--format", "json"])
        .arg(capture)
        .output()?;
    let json = String::from_utf8(out.stdout)?;
    let find = |key: &str| -> Result<f64> {
        let at = json
            .find(&format!("\"{key}\":"))
            .with_context(|| format!("{key} missing"))?;
        let rest = &json[at + key.len() + 3..];
        let number: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Ok(number.parse()?)
    };
    let file_bytes = std::fs::metadata(capture)?.len() as f64;
    Ok((find("packets")?, file_bytes))
}

pub fn replay(root: &Path, runs: usize) -> Result<()> {
    if !Path::new("/usr/bin/time").exists() {
        crate::setup::apt_install(&["time"])?;
    }
    crate::lab::run(Command::new("cargo").current_dir(root).args([
        "build",
        "--release",
        "-p",
        "connbal-userspace",
    ]))?;
    let connbal = root.join("target/release/connbal");
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
