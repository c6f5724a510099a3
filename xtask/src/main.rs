#![forbid(unsafe_code)]
use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "connbal developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// What `gen-capture` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CaptureMix {
    /// DNS lookups (A, AAAA, SRV, CNAME), connections and bulk data, as
    /// snoop, pcap and pcapng.
    Synthetic,
    /// The original tool's benchmark mix, as snoop.
    Original,
}

#[derive(Subcommand)]
enum Task {
    /// Record real DNS + TCP traffic in network namespaces (root; needs
    /// dnsmasq, dig, curl, tcpdump, editcap) into tests/data/recorded.
    RecordCaptures {
        #[arg(long, default_value = "tests/data/recorded")]
        out: PathBuf,
    },
    /// Build the eBPF object (nightly + rust-src + bpf-linker) into
    /// connbal-userspace/ebpf/, with the hash of its sources.
    BuildEbpf,
    /// Install nightly's rust-src and bpf-linker (against nightly's LLVM 22).
    Setup,
    /// Write a deterministic synthetic capture (snoop, pcap, pcapng of the
    /// same traffic) for benchmarks: DNS lookups, connections, bulk data.
    GenCapture {
        #[arg(long, default_value_t = 3_000_000)]
        packets: u64,
        /// `original`: the original tool's benchmark mix (IPv4, mostly
        /// bulk), as DIR/original-mix.snoop.
        #[arg(long, value_enum, default_value_t = CaptureMix::Synthetic)]
        mix: CaptureMix,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// Benchmark `connbal replay` on the synthetic capture (file and pipe,
    /// default and -a); prints a Markdown table for BENCHMARKS.md.
    BenchReplay {
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Live benchmark (root): per-packet classifier cost against an empty
    /// classifier, drops, userspace CPU, and a side-by-side run against a
    /// tcpdump | connbal replay pipeline, under a bounded load in namespaces.
    BenchLive {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What tracing costs the host's own traffic (root): sockperf
    /// ping-pong (UDP, TCP) and iperf3 between namespaces, with nothing
    /// attached, the empty classifier, connbal trace --iface, host mode and
    /// tcpdump, alternating; prints changes against nothing attached.
    BenchOverhead {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Only the UDP ping-pong rate (host mode's target), without the
        /// tcpdump pipeline or the bulk and per-packet runs: many rounds
        /// in the time three full ones take.
        #[arg(long)]
        udp_only: bool,
    },
    /// The agent's CPU budget (root): new connections and DNS messages at
    /// a busy node's rates, observed by host mode, by connbal trace
    /// --iface and by the tcpdump pipeline in turn; prints each one's CPU
    /// in mCPU and what it lost.
    BenchLoad {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// New TCP connections per second.
        #[arg(long, default_value_t = 10_000)]
        connections: u64,
        /// DNS queries per second, each answered.
        #[arg(long, default_value_t = 4_000)]
        dns_queries: u64,
    },
    /// What host mode's walk over open connections to VIPs costs a report
    /// (root): a pod client behind a Service's VIP, and helper processes
    /// holding these many unconnected sockets in turn; prints the longest
    /// walk against the host's open files.
    BenchWalk {
        #[arg(long, value_delimiter = ',', default_values_t = [0, 95_000, 190_000, 380_000])]
        sockets: Vec<u64>,
    },
    /// Profile the side-by-side comparison (root, perf): the same paced
    /// load observed by nothing, by connbal trace and by the tcpdump
    /// pipeline, each under `perf record -a`; prints where the machine's
    /// time went by symbol.
    BenchProfile {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// An always-on agent (root): connbal trace --metrics under ever-new
    /// names, scraped every second, with metrics clients that never read;
    /// prints resident memory over time, the exposition's size and records
    /// lost.
    BenchSoak {
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// DNS lookups per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// connbal's --metrics-max-series (its default: 10,000).
        #[arg(long, default_value_t = 10_000)]
        max_series: usize,
        #[arg(long, default_value_t = 200)]
        slow_readers: usize,
        /// connbal's --window (e.g. 40s): its marks' memory under the same
        /// load.
        #[arg(long)]
        window: Option<String>,
    },
    /// What host mode's getaddrinfo probes cost the apps that call it
    /// (root): calls per second with no trace, traced elsewhere, traced.
    BenchGetaddrinfo {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Host mode under workload churn (root): cgroups made and removed
    /// under the traced root, each running a lookup and a connection
    /// attempt; prints memory, the services in the exposition and the
    /// clients forgotten over time.
    BenchChurn {
        #[arg(long, default_value_t = 1800)]
        seconds: u64,
        /// Cgroups made (and removed) per second.
        #[arg(long, default_value_t = 10)]
        rate: u64,
    },
    /// Write the memory-test flood (random queries and TCP segments) as a
    /// pcap file, for measuring with /usr/bin/time -v.
    GenFlood {
        #[arg(long, default_value_t = 5_000_000)]
        packets: u64,
        #[arg(long, default_value = "target/bench/flood.pcap")]
        out: PathBuf,
    },
    /// Replay every committed capture (and a small generated one) in every
    /// output format, with and without -a, and compare with
    /// tests/data/snapshots; --bless rewrites them after a deliberate
    /// change of output.
    Snapshots {
        #[arg(long)]
        bless: bool,
    },
    /// Install what the tests need (apt packages, as root) and run every
    /// test in the workspace. Extra arguments go to `cargo test`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::RecordCaptures { out } => {
            if !xtask::lab::is_root() {
                bail!("record-captures makes network namespaces: run it as root");
            }
            let missing =
                xtask::lab::missing_tools(&["ip", "dnsmasq", "dig", "curl", "tcpdump", "editcap"]);
            if !missing.is_empty() {
                bail!("missing tools: {} (apt-get install iproute2 dnsmasq-base bind9-dnsutils curl tcpdump wireshark-common)", missing.join(", "));
            }
            xtask::record::record(&out)
        }
        Task::BuildEbpf => xtask::ebpf::build(),
        Task::GenFlood { packets, out } => {
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
            xtask::gen::write_flood(&mut file, packets, 0x9e37_79b9_7f4a_7c15)?;
            println!("wrote {packets} packets to {}", out.display());
            Ok(())
        }
        Task::BenchLive { seconds } => xtask::bench::live(&xtask::ebpf::workspace_root(), seconds),
        Task::BenchOverhead {
            seconds,
            rounds,
            udp_only,
        } => xtask::overhead::run(&xtask::ebpf::workspace_root(), seconds, rounds, udp_only),
        Task::BenchWalk { sockets } => xtask::bench::walk(&xtask::ebpf::workspace_root(), &sockets),
        Task::BenchLoad {
            seconds,
            rounds,
            connections,
            dns_queries,
        } => xtask::bench::load(
            &xtask::ebpf::workspace_root(),
            seconds,
            rounds,
            xtask::load::Rates {
                connections,
                dns_queries,
            },
        ),
        Task::BenchGetaddrinfo { seconds, rounds } => {
            xtask::bench::lookups(&xtask::ebpf::workspace_root(), seconds, rounds)
        }
        Task::BenchChurn { seconds, rate } => {
            xtask::bench::churn(&xtask::ebpf::workspace_root(), seconds, rate)
        }
        Task::BenchProfile { seconds } => {
            xtask::bench::profile(&xtask::ebpf::workspace_root(), seconds)
        }
        Task::BenchSoak {
            seconds,
            rate,
            max_series,
            slow_readers,
            window,
        } => xtask::bench::soak(
            &xtask::ebpf::workspace_root(),
            seconds,
            (rate, max_series),
            (slow_readers, window.as_deref()),
        ),
        Task::BenchReplay { runs } => xtask::bench::replay(&xtask::ebpf::workspace_root(), runs),
        Task::GenCapture {
            packets,
            mix,
            seed,
            out,
        } => {
            match mix {
                CaptureMix::Synthetic => {
                    let (written, bytes) = xtask::gen::generate(&out, packets, seed)?;
                    println!("wrote {written} packets ({bytes} bytes of frames) to {}/synthetic.{{pcap,pcapng,snoop}}", out.display());
                    Ok(())
                }
                CaptureMix::Original => {
                    let (written, bytes) = xtask::gen::generate_original_mix(&out, packets, seed)?;
                    println!("wrote {written} packets ({bytes} bytes of frames) to {}/original-mix.snoop", out.display());
                    Ok(())
                }
            }
        }
        Task::Setup => xtask::ebpf::setup(),
        Task::Snapshots { bless } => xtask::snapshots::run(&xtask::ebpf::workspace_root(), bless),
        Task::Test { cargo_args } => {
            // Each step says what it is doing as it starts: on a fresh
            // machine the install and the first build take minutes.
            eprintln!("xtask: step 1/3: the test tools (apt-get, as root)");
            xtask::setup::install_test_packages()?;
            eprintln!("xtask: step 2/3: building every test (cargo's progress follows)");
            let built = std::process::Command::new(env!("CARGO"))
                .args(["test", "--workspace", "--no-run"])
                .args(&cargo_args)
                .status()?;
            if !built.success() {
                bail!("building the tests failed ({built})");
            }
            eprintln!("xtask: step 3/3: running every test");
            let mut child = std::process::Command::new(env!("CARGO"))
                .args(["test", "--workspace"])
                .args(&cargo_args)
                .stdout(std::process::Stdio::piped())
                .spawn()?;
            // Pass cargo's output through, and add up its per-binary
            // summaries into one closing line.
            let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
            let out = child.stdout.take().expect("piped");
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
                let line = line?;
                println!("{line}");
                if let Some(summary) = line.strip_prefix("test result: ") {
                    for part in summary.split([';', '.']) {
                        let mut words = part.split_whitespace();
                        if let (Some(n), Some(what)) = (
                            words.next().and_then(|n| n.parse::<u64>().ok()),
                            words.next(),
                        ) {
                            match what {
                                "passed" => passed += n,
                                "failed" => failed += n,
                                "ignored" => ignored += n,
                                _ => {}
                            }
                        }
                    }
                }
            }
            let status = child.wait()?;
            println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
            if !status.success() {
                bail!("cargo test failed ({status})");
            }
            Ok(())
        }
    }
}
