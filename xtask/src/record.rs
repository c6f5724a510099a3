//! `cargo xtask record-captures`: real DNS and TCP traffic in a namespace
//! lab, recorded by tcpdump and converted with editcap, for the replay tests
//! in tests/replay_recorded.rs (which explain every expected line from this
//! plan).

use crate::lab::{Lab, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};
use anyhow::{Context, Result};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// dnsmasq's data: every name the plan looks up.
pub const HOSTS: &str = "\
203.0.113.11 web.connbal.test
203.0.113.12 web.connbal.test
203.0.113.13 web.connbal.test
203.0.113.14 web.connbal.test
203.0.113.21 xmpp1.connbal.test
203.0.113.22 xmpp2.connbal.test
203.0.113.23 xmpp3.connbal.test
203.0.113.31 pool.connbal.test
203.0.113.32 pool.connbal.test
203.0.113.33 pool.connbal.test
203.0.113.41 tcp.connbal.test
203.0.113.42 tcp.connbal.test
203.0.113.43 tcp.connbal.test
203.0.113.44 tcp.connbal.test
203.0.113.50 one.connbal.test
203.0.113.71 member-of-the-large-service-01.connbal.test
203.0.113.72 member-of-the-large-service-02.connbal.test
203.0.113.73 member-of-the-large-service-03.connbal.test
203.0.113.74 member-of-the-large-service-04.connbal.test
203.0.113.75 member-of-the-large-service-05.connbal.test
203.0.113.76 member-of-the-large-service-06.connbal.test
203.0.113.77 member-of-the-large-service-07.connbal.test
203.0.113.78 member-of-the-large-service-08.connbal.test
203.0.113.79 member-of-the-large-service-09.connbal.test
203.0.113.80 member-of-the-large-service-10.connbal.test
2001:db8:200::1 v6.connbal.test
2001:db8:200::2 v6.connbal.test
2001:db8:200::3 v6.connbal.test
203.0.113.91 dual.connbal.test
203.0.113.92 dual.connbal.test
2001:db8:200::11 dual.connbal.test
2001:db8:200::12 dual.connbal.test
203.0.113.95 db.connbal.test
203.0.113.96 db.connbal.test
203.0.113.95 api.connbal.test
203.0.113.96 api.connbal.test
203.0.113.97 s1.connbal.test
203.0.113.98 s2.connbal.test
";

pub fn dnsmasq_options() -> Vec<String> {
    let mut options: Vec<String> = ["xmpp1", "xmpp2", "xmpp3"]
        .iter()
        .map(|t| format!("--srv-host=_xmpp-client._tcp.connbal.test,{t}.connbal.test,5222,10,10"))
        .collect();
    // Ten SRV records with long target names: over 512 bytes, so a UDP
    // answer without EDNS comes back truncated and the client retries over TCP.
    options.extend((1..=10).map(|n| format!("--srv-host=_big._tcp.connbal.test,member-of-the-large-service-{n:02}.connbal.test,7000,10,10")));
    // An SRV set of two equal targets on port 80, for apps that resolve
    // SRV and connect (and health checkers that resolve one target).
    options.extend(
        ["s1", "s2"]
            .iter()
            .map(|t| format!("--srv-host=_app._tcp.connbal.test,{t}.connbal.test,80,0,10")),
    );
    // A CNAME chain: alias -> mid -> pool.
    options.push("--cname=alias.connbal.test,mid.connbal.test".into());
    options.push("--cname=mid.connbal.test,pool.connbal.test".into());
    options
}

/// One thing the client does.
pub enum Step {
    /// `dig` over UDP (or TCP) to the IPv4 (or IPv6) server address.
    Lookup {
        name: &'static str,
        qtype: &'static str,
        tcp: bool,
        v6: bool,
    },
    /// `dig +noedns` over UDP: a large answer comes back truncated and dig
    /// asks again over TCP, as any stub resolver would.
    LookupTruncating {
        name: &'static str,
        qtype: &'static str,
    },
    /// `curl http://ADDR/` by address: a connection with no lookup of its own.
    Connect(&'static str),
}

use Step::{Connect, Lookup, LookupTruncating};

const fn a(name: &'static str) -> Step {
    Lookup {
        name,
        qtype: "A",
        tcp: false,
        v6: false,
    }
}

/// The traffic the committed captures hold, in order.
pub fn plan() -> Vec<Step> {
    let mut steps = Vec::new();
    // A 4-address name resolved before every connection, 10 times, spread
    // 4/3/0/3 over .11/.12/.13/.14 (.13 only has the connection held open
    // since before the capture, which only -a sees).
    for backend in ["11", "12", "14", "11", "12", "14", "11", "12", "14", "11"] {
        steps.push(a("web.connbal.test"));
        steps.push(Connect(match backend {
            "11" => "203.0.113.11:80",
            "12" => "203.0.113.12:80",
            _ => "203.0.113.14:80",
        }));
    }
    // SRV with the targets' A records in the additional section, then the
    // client's own A lookup of the target it picks, and 2 connections.
    steps.push(Lookup {
        name: "_xmpp-client._tcp.connbal.test",
        qtype: "SRV",
        tcp: false,
        v6: false,
    });
    steps.push(a("xmpp2.connbal.test"));
    steps.push(Connect("203.0.113.22:5222"));
    steps.push(Connect("203.0.113.22:5222"));
    // A CNAME chain (alias -> mid -> pool, a 3-address name), looked up twice.
    steps.push(a("alias.connbal.test"));
    steps.push(Connect("203.0.113.31:80"));
    steps.push(a("alias.connbal.test"));
    steps.push(Connect("203.0.113.33:80"));
    // An AAAA set, asked over IPv6 so the client address matches its
    // connections.
    for backend in [
        "[2001:db8:200::1]:443",
        "[2001:db8:200::1]:443",
        "[2001:db8:200::2]:443",
    ] {
        steps.push(Lookup {
            name: "v6.connbal.test",
            qtype: "AAAA",
            tcp: false,
            v6: true,
        });
        steps.push(Connect(backend));
    }
    // DNS over TCP.
    steps.push(Lookup {
        name: "tcp.connbal.test",
        qtype: "A",
        tcp: true,
        v6: false,
    });
    steps.push(Connect("203.0.113.41:80"));
    // A large SRV set that only fits over TCP: UDP truncated, TCP retry.
    steps.push(LookupTruncating {
        name: "_big._tcp.connbal.test",
        qtype: "SRV",
    });
    steps.push(Connect("203.0.113.73:7000"));
    // Noise that must not show: a single-address name, and an address that
    // never appeared in DNS.
    steps.push(a("one.connbal.test"));
    steps.push(Connect("203.0.113.50:80"));
    steps.push(Connect("203.0.113.99:80"));
    steps
}

/// The connection open since before the capture started.
pub const HELD: &str = "203.0.113.13:80";

pub fn run_step(lab: &Lab, step: &Step) -> Result<()> {
    let mut cmd = match step {
        Lookup {
            name,
            qtype,
            tcp,
            v6,
        } => {
            let server = if *v6 {
                SERVER_V6.to_string()
            } else {
                SERVER_V4.to_string()
            };
            let mut cmd = lab.client("dig");
            cmd.args([
                format!("@{server}").as_str(),
                "+time=2",
                "+tries=1",
                name,
                qtype,
            ]);
            if *tcp {
                cmd.arg("+tcp");
            }
            cmd
        }
        LookupTruncating { name, qtype } => {
            let mut cmd = lab.client("dig");
            cmd.args([
                format!("@{SERVER_V4}").as_str(),
                "+time=2",
                "+tries=1",
                "+noedns",
                name,
                qtype,
            ]);
            cmd
        }
        Connect(addr) => {
            let mut cmd = lab.client("curl");
            cmd.args([
                "-sS",
                "-o",
                "/dev/null",
                "--max-time",
                "3",
                &format!("http://{addr}/"),
            ]);
            cmd
        }
    };
    crate::lab::run(&mut cmd).map(|_| ())
}

/// Builds the lab the plan needs: backends, dnsmasq, listeners.
pub fn prepare_lab() -> Result<Lab> {
    let mut lab = Lab::new()?;
    // Names may share addresses (db and api): each address once.
    let mut added = std::collections::HashSet::new();
    for line in HOSTS.lines() {
        let addr = line.split_whitespace().next().context("hosts line")?;
        if added.insert(addr) {
            lab.add_backend(addr.parse()?)?;
        }
    }
    lab.add_backend("203.0.113.99".parse()?)?;
    lab.start_dnsmasq(HOSTS, &dnsmasq_options())?;
    lab.serve_tcp(&[80, 443, 5222, 7000])?;
    Ok(lab)
}

/// The failover capture: a name whose answer changes mid-run, and a client
/// that keeps using the address DNS dropped.
pub mod failover {
    pub const NAME: &str = "failover.connbal.test";
    /// Short, so that the first answer has expired when the client, having
    /// looked up again, still connects to the dropped address.
    pub const TTL_SECS: u32 = 1;
    pub const BEFORE: &str = "\
203.0.113.61 failover.connbal.test
203.0.113.62 failover.connbal.test
203.0.113.63 failover.connbal.test
";
    /// .61 leaves the answer.
    pub const AFTER: &str = "\
203.0.113.62 failover.connbal.test
203.0.113.63 failover.connbal.test
";
    pub const DROPPED: &str = "203.0.113.61";
    /// Past the first answer's TTL and the report's one-second grace.
    pub const PAUSE_MILLIS: u64 = 3000;
}

/// Records `failover.pcap`: lookup (.61 .62 .63, TTL 1 s), a connection to
/// each, dnsmasq reloaded without .61, a pause past the TTL, the lookup
/// again (.62 .63), a connection to each, and one more to .61.
pub fn record_failover(out_dir: &Path) -> Result<()> {
    let mut lab = Lab::new()?;
    for line in failover::BEFORE.lines() {
        let addr = line.split_whitespace().next().context("hosts line")?;
        lab.add_backend(addr.parse()?)?;
    }
    lab.start_dnsmasq(
        failover::BEFORE,
        &[format!("--local-ttl={}", failover::TTL_SECS)],
    )?;
    lab.serve_tcp(&[80])?;
    let file = lab.dir.join("failover.pcap");
    let client_if = lab.client_if.clone();
    let pid = lab.start_tcpdump(&client_if, &file, &[])?;
    run_step(&lab, &a(failover::NAME))?;
    for backend in ["203.0.113.61:80", "203.0.113.62:80", "203.0.113.63:80"] {
        run_step(&lab, &Connect(backend))?;
    }
    lab.reload_hosts(
        failover::AFTER,
        failover::NAME,
        &["203.0.113.62", "203.0.113.63"],
    )?;
    std::thread::sleep(std::time::Duration::from_millis(failover::PAUSE_MILLIS));
    run_step(&lab, &a(failover::NAME))?;
    for backend in ["203.0.113.62:80", "203.0.113.63:80", "203.0.113.61:80"] {
        run_step(&lab, &Connect(backend))?;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    lab.interrupt(pid)?;
    fs::create_dir_all(out_dir)?;
    fs::copy(&file, out_dir.join("failover.pcap"))?;
    Ok(())
}

pub fn record(out_dir: &Path) -> Result<()> {
    record_failover(out_dir)?;
    let mut lab = prepare_lab()?;
    let held = lab.hold_connection(HELD.parse::<SocketAddr>()?)?;
    let veth = lab.dir.join("veth.pcap");
    let any = lab.dir.join("any.pcap");
    let client_if = lab.client_if.clone();
    let sll = lab.dir.join("any-sll.pcap");
    let nano = lab.dir.join("veth-nano.pcap");
    let pids = [
        lab.start_tcpdump(&client_if, &veth, &[])?,
        lab.start_tcpdump("any", &any, &[])?,
        lab.start_tcpdump("any", &sll, &["-y", "LINUX_SLL"])?,
        lab.start_tcpdump(&client_if, &nano, &["--time-stamp-precision=nano"])?,
    ];
    for step in plan() {
        run_step(&lab, &step)?;
    }
    held.release()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    for pid in pids {
        lab.interrupt(pid)?;
    }

    fs::create_dir_all(out_dir)?;
    fs::copy(&veth, out_dir.join("veth.pcap"))?;
    fs::copy(&any, out_dir.join("any-sll2.pcap"))?;
    fs::copy(&sll, out_dir.join("any-sll.pcap"))?;
    fs::copy(&nano, out_dir.join("veth-nano.pcap"))?;
    for (format, name) in [("pcapng", "veth.pcapng"), ("snoop", "veth.snoop")] {
        crate::lab::run(
            Command::new("editcap")
                .args(["-F", format])
                .arg(&veth)
                .arg(out_dir.join(name)),
        )?;
    }
    println!(
        "recorded into {} (client {CLIENT_V4} / {CLIENT_V6})",
        out_dir.display()
    );
    Ok(())
}
