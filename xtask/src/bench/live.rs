//! `cargo xtask bench-live`: the per-packet cost of the classifier against
//! the empty one, drops by ring size, and connbal trace beside the
//! tcpdump pipeline, under bounded loads in the lab's namespaces.

use super::{
    build_release, inside_cgroup, measure_cpu, median, process_cpu, prog_stats, report_count,
    report_rows, spread, start_host_trace, start_trace, stop_trace, BpfStats, Pipeline, PACED_RATE,
    PACED_ROUNDS,
};
use anyhow::{bail, Result};
use std::path::Path;

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
            let records = report_count(&json, &["input", "records"])?;
            let per_100k = if records > 0 {
                cpu * 1000.0 * 100_000.0 / records as f64
            } else {
                0.0
            };
            println!(
                "| {program} | {label} | {packets} | {:.0} | {ns:.1} | {records} | {} | {cpu:.2} | {} |",
                packets as f64 / seconds as f64,
                report_count(&json, &["input", "kernel", "records_lost"])?,
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
            report_count(&json, &["input", "records"])?,
            report_count(&json, &["input", "kernel", "records_lost"])?,
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
        report_count(&trace_json, &["input", "kernel", "records_lost"])?
    );
    println!("| tcpdump -w - … \\| connbal replay - | {:.2} (tcpdump {tcpdump_cpu:.2} + replay {replay_cpu:.2}) | not measured (cBPF socket filter and packet copies in softirq) | {dropped} |", tcpdump_cpu + replay_cpu);
    let identical = report_rows(&trace_json)? == report_rows(&replay_json)?;
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
