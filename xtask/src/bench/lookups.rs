//! `cargo xtask bench-getaddrinfo`: what host mode's getaddrinfo probes
//! cost the apps that call it. A C program calls getaddrinfo("localhost")
//! (answered from /etc/hosts, so the call itself is short and the probes'
//! share shows) as fast as it can on one core, in three settings each
//! round: no trace; a trace whose cgroup the program is not in (the
//! probes fire in every process mapping the libc, and return at the
//! cgroup check); and a trace whose cgroup it is in (a record per call).

use super::{median, start_host_trace, stop_trace};
use crate::cgroup::TestCgroup;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

const PROGRAM: &str = r#"
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = atof(argv[1]), start = now(), end = start + seconds;
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    unsigned long calls = 0;
    while (now() < end) {
        for (int i = 0; i < 64; i++) {
            if (getaddrinfo("localhost", NULL, &hints, &res) != 0) return 1;
            freeaddrinfo(res);
            calls++;
        }
    }
    printf("%.1f\n", calls / (now() - start));
    return 0;
}
"#;

pub fn lookups(root: &Path, seconds: u64, rounds: usize) -> Result<()> {
    if !crate::lab::is_root() {
        bail!("bench-getaddrinfo attaches eBPF programs and makes cgroups: run it as root");
    }
    let connbal = super::build_release(root)?;
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let (source, binary) = (dir.join("gai.c"), dir.join("gai"));
    std::fs::write(&source, PROGRAM)?;
    crate::lab::run(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&binary)
            .arg(&source),
    )
    .context("gcc gai.c")?;
    let mut traced = TestCgroup::new("gai-traced")?;
    let mut other = TestCgroup::new("gai-other")?;
    let (traced_app, other_app) = (traced.child("app")?, other.child("app")?);
    let run_in = |cgroup: &Path| -> Result<f64> {
        let out = crate::lab::run(
            TestCgroup::command_in(cgroup, "taskset")
                .args(["-c", "0"])
                .arg(&binary)
                .arg(seconds.to_string()),
        )?;
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    let (mut bare, mut untraced, mut traced_rates) = (Vec::new(), Vec::new(), Vec::new());
    let mut emitted = Vec::new();
    for _ in 0..rounds {
        bare.push(run_in(&other_app)?);
        let trace = start_host_trace(&connbal, &traced.relative_root(), &[])?;
        untraced.push(run_in(&other_app)?);
        traced_rates.push(run_in(&traced_app)?);
        let json = stop_trace(trace)?;
        emitted.push(super::report_count(&json, &["counters", "libc_lookups"])?);
    }
    let (bare, untraced, traced_rate) = (
        median(&mut bare),
        median(&mut untraced),
        median(&mut traced_rates),
    );
    let added = |rate: f64| 1e9 / rate - 1e9 / bare;
    println!(
        "getaddrinfo(\"localhost\") (from /etc/hosts) on one core, {seconds} s a run, median of {rounds} rounds:\n"
    );
    println!("| | calls/s | ns a call | added ns a call | at 10k lookups/s |");
    println!("|---|---|---|---|---|");
    println!("| no trace | {bare:.0} | {:.0} | | |", 1e9 / bare);
    for (what, rate) in [
        (
            "traced elsewhere (the caller's cgroup is not traced)",
            untraced,
        ),
        ("traced (a record per call)", traced_rate),
    ] {
        println!(
            "| {what} | {rate:.0} | {:.0} | {:.0} | {:.1}% of a core |",
            1e9 / rate,
            added(rate),
            added(rate) * 10_000.0 / 1e7
        );
    }
    println!("\nlookups counted by the trace per traced run: {emitted:?}");
    Ok(())
}
