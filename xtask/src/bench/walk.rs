//! `cargo xtask bench-walk`: what host mode's walk over open connections
//! to VIPs costs a report, against the number of open files on the host.
//!
//! The walk (the task-file iterator `connbal_open_traffic`) visits every
//! open file of every process, so its time grows with the host's open
//! files, not with connbal's connections. The lab: kube-proxy's iptables
//! rules for a Service in the node's namespace, a pod client holding one
//! connection to it open (so there is something to walk for), and helper
//! processes each holding 19,000 unconnected sockets. Host mode runs with
//! `--interval 1s`; its JSON says how long its longest walk took.

use super::{build_release, start_host_trace, stop_trace};
use anyhow::{bail, Context, Result};
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sockets each helper process holds: under this machine's hard limit of
/// open files (20,000), which root cannot raise here.
const PER_HOLDER: u64 = 19_000;
const HOLDER: &str = "
import socket, sys, time
keep = [socket.socket() for _ in range(int(sys.argv[1]))]
print('held', flush=True)
time.sleep(120)
";
const SERVICE: &str = "one.connbal.test";
const VIP: &str = "203.0.113.50";

pub fn walk(root: &Path, extra: &[u64]) -> Result<()> {
    if !crate::lab::is_root() {
        bail!("bench-walk attaches eBPF programs and makes namespaces: run it as root");
    }
    let connbal = build_release(root)?;
    let mut lab = crate::record::prepare_lab()?;
    let pods = lab.add_pods(3)?;
    let node = lab.server_ns.clone();
    for rule in crate::lab::kube_proxy_iptables_rules(VIP, &pods, false) {
        crate::lab::run(lab.command_in(&node, "iptables").args(&rule))?;
    }
    lab.client_resolv_conf(&crate::lab::SERVER_V4.to_string())?;
    let script = lab.dir.join("reusing.py");
    std::fs::write(&script, crate::lab::REUSING_CLIENT)?;
    let mut cgroups = crate::cgroup::TestCgroup::new("bench-walk")?;
    let app = cgroups.child("app")?;
    let app_name = format!("{}/app", cgroups.relative_root());
    println!("Host mode's walk over open connections to VIPs (the task-file iterator), before each report of `--interval 1s`, a pod client holding one connection behind a VIP; helper processes hold unconnected sockets:\n");
    println!("| sockets held by helpers | open files on the host | walks | longest walk, ms | µs per open file |");
    println!("|---|---|---|---|---|");
    for &sockets in extra {
        let trace = start_host_trace(&connbal, &app_name, &["--interval", "1s"])?;
        let ready = lab.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut client = crate::cgroup::TestCgroup::command_in(&app, "ip")
            .args(["netns", "exec", &lab.client_ns, "python3"])
            .arg(&script)
            .args([SERVICE, "10", "0"])
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the client")?;
        let measured = (|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !ready.exists() {
                if Instant::now() > deadline {
                    bail!("the client never got ready");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let holders = hold(sockets)?;
            let files = open_files();
            // A few reports, each walking at most every ten seconds: the
            // first walk after the helpers started, and the last report's.
            std::thread::sleep(Duration::from_secs(3));
            let json = stop_trace(trace)?;
            for mut holder in holders {
                let _ = holder.kill();
                let _ = holder.wait();
            }
            Ok((files, json))
        })();
        let _ = client.kill();
        let _ = client.wait();
        let (files, json) = measured?;
        let last = json
            .lines()
            .rfind(|l| l.starts_with('{'))
            .context("no JSON report")?;
        let report: serde_json::Value = serde_json::from_str(last)?;
        let walks = &report["input"]["open_connection_walks"];
        let longest_us = walks["longest_us"]
            .as_u64()
            .with_context(|| format!("no walk in the report: {walks}"))?;
        println!(
            "| {sockets} | {files} | {} | {:.1} | {:.2} |",
            walks["walks"],
            longest_us as f64 / 1000.0,
            longest_us as f64 / files.max(1) as f64,
        );
    }
    Ok(())
}

/// Helper processes holding `sockets` unconnected sockets between them.
fn hold(sockets: u64) -> Result<Vec<Child>> {
    let mut holders = Vec::new();
    let mut left = sockets;
    while left > 0 {
        let here = left.min(PER_HOLDER);
        left -= here;
        let mut holder = Command::new("python3")
            .args(["-c", HOLDER, &here.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a socket holder")?;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().context("holder's stdout")?)
            .read_line(&mut line)?;
        holders.push(holder);
        if line.trim() != "held" {
            for mut holder in holders {
                let _ = holder.kill();
                let _ = holder.wait();
            }
            bail!("a socket holder could not open {here} sockets");
        }
    }
    Ok(holders)
}

/// Open files of every process on the host, as /proc lists them.
fn open_files() -> u64 {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0;
    };
    processes
        .flatten()
        .filter(|p| p.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|p| std::fs::read_dir(p.path().join("fd")).ok())
        .map(|fds| fds.count() as u64)
        .sum()
}
