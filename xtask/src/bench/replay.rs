//! `cargo xtask bench-replay`: times `connbal replay` on the synthetic
//! capture, from a file and from a pipe, default and `-a`, several runs
//! each, and prints a Markdown table of medians and spreads for
//! BENCHMARKS.md. Wall time, user and system CPU and peak RSS come from
//! GNU time (`/usr/bin/time`) wrapped around connbal alone, so `cat` in the
//! pipe case is not charged to connbal.

use super::{build_release, median, report_count, spread};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    wall: f64,
    cpu: f64,
    rss_kib: f64,
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
    let packets = report_count(&String::from_utf8(out.stdout)?, &["input", "packets"])?;
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
