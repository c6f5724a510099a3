//! `connbal trace`: its flags, resolved into the library's options.

use clap::{Args, ValueEnum};
use connbal::aggregator::ClientBy;
use connbal::trace::loader::LibcProbing;
use connbal::trace::loader::{AttachMode, Programs};
use connbal::trace::{ResolvedMonitor, RuntimeSockets, TraceOptions};
use std::time::Duration;

pub const EXAMPLES: &str = "\
Examples:
  sudo connbal trace
  sudo connbal trace --cgroup /system.slice/docker-3f2a1b4c5d6e.scope -F api
  sudo connbal trace --by process --duration 10m -F svc.example.com
  sudo connbal trace --iface eth0
  sudo connbal trace -i eth0 -i eth1 -a --interval 30s --format json
  sudo connbal trace -i eth0 -F db.example.com --events | jq .
  sudo connbal trace -i eth0 --metrics 127.0.0.1:9464 --user nobody

Without --iface, connbal traces host-wide: eBPF programs on a cgroup v2
subtree (the whole hierarchy, or --cgroup) see every socket of every
process in it, in every network namespace, containers started later
included, and attribute each lookup and connection to its process and
cgroup. Clients are apps (cgroup and command) unless --by says otherwise.
With --iface, a TC filter sees the interfaces' packets (forwarded traffic,
routers, pod veths), and clients are addresses.

Requires root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and Linux 5.8 or later (BPF
ring buffers); host mode names processes with Linux 6.0's cgroup helpers.
Host mode's programs are links, and the TC filter is a TCX link on Linux
6.6+: they disappear with the process, even after kill -9. On older
kernels the TC filter is a clsact filter, which connbal removes on exit
and, after a crash, on its next start (with the clsact qdisc, when connbal
added it and no other filter is on it).

Output: on a terminal, a table per client and name with each backend's
share and the verdicts (unused backends, balance, TTL, stale backends,
failing backends, SRV priority; see connbal --help for their thresholds). Through a pipe, or with --format tsv, the original's line per
client, backend and port:
  client  backend:port  conns  times-in-DNS  name";

#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches: each bool is one --flag, resolved into the plan once"
)]
pub struct TraceArgs {
    /// Interface to trace, ingress and egress, with a TC filter; repeat for
    /// several. Without it, connbal traces host-wide, at the sockets.
    #[arg(short = 'i', long = "iface", value_name = "IF")]
    pub interfaces: Vec<String>,

    /// Host mode: only this cgroup v2 subtree (a container, a systemd
    /// slice, a pod): its directory under the cgroup2 mount, or its path as
    /// /proc/PID/cgroup shows it; repeat for several (none inside another).
    /// Default: the whole hierarchy.
    #[arg(long, value_name = "PATH", conflicts_with = "interfaces")]
    pub cgroup: Vec<std::path::PathBuf>,

    /// Host mode: a Docker Engine API socket (dockerd's, or Podman's
    /// compatible service) to ask for container names, images and compose
    /// and Kubernetes labels; repeat for several, `none` for none. Default:
    /// whichever of /run/docker.sock, /var/run/docker.sock and
    /// /run/podman/podman.sock exist.
    #[arg(long, value_name = "SOCKET", conflicts_with = "interfaces")]
    pub runtime_socket: Vec<std::path::PathBuf>,

    /// Host mode: a container runtime's state directory, where each running
    /// container's OCI spec carries the pod annotations kubelet sets
    /// (containerd's /run/containerd, CRI-O's /run/containers/storage);
    /// repeat for several. Default: those two, where they exist.
    #[arg(long, value_name = "DIR", conflicts_with = "interfaces")]
    pub runtime_state: Vec<std::path::PathBuf>,

    /// What makes a client: app (cgroup and command name; host mode's
    /// default), cgroup, process, or ip (the default with --iface).
    #[arg(long, value_enum)]
    pub by: Option<ByArg>,

    /// Stop after this long (e.g. 30s, 10m, 1h); default: until Ctrl-C.
    #[arg(long, value_parser = positive_duration)]
    pub duration: Option<Duration>,

    /// Also print the report every D while running (a table on a terminal
    /// is redrawn in place).
    #[arg(long, value_name = "D", value_parser = positive_duration)]
    pub interval: Option<Duration>,

    /// Ring buffer size in bytes (power of two; K, M, G suffixes). Drops are
    /// counted and reported; make it larger if any are.
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub ring_size: u64,

    /// How to attach: TCX (Linux 6.6+) or a clsact filter over netlink.
    #[arg(long, value_enum, default_value_t = AttachArg::Auto)]
    pub attach: AttachArg,

    /// Serve Prometheus/OpenMetrics metrics at http://ADDR/metrics:
    /// HOST:PORT (127.0.0.1:9464, localhost:9464; loopback is the safe
    /// choice) or :PORT for every address: connections and DNS appearances per client,
    /// backend, port and name; per-name lookups and verdicts; kernel,
    /// drop and eviction counters.
    #[arg(long, value_name = "ADDR", value_parser = listen_address)]
    pub metrics: Option<std::net::SocketAddr>,

    /// At most this many series in each scrape, all families together:
    /// the counters are always written, then the busiest services (with
    /// their verdicts), then the busiest backend rows; what does not fit is
    /// folded and counted in connbal_metrics_folded_series.
    #[arg(long, value_name = "N", default_value_t = connbal::output::metrics::DEFAULT_MAX_SERIES)]
    pub metrics_max_series: usize,

    /// After attaching, switch to this user (connbal drops every capability
    /// anyway; this also gives up root).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Print the kernel program's debug log lines (aya-log) to stderr.
    #[arg(long, hide = true)]
    pub kernel_debug: bool,

    /// Host mode: do not follow connections that a DNAT sends on after
    /// they leave their socket (pods behind a Kubernetes Service's VIP,
    /// translated on the node). That view needs a tracepoint on every
    /// packet the host sends, traced cgroup or not; a host-network
    /// client's own DNAT is still followed, at its socket.
    #[arg(long, conflicts_with = "interfaces")]
    pub no_vip_backends: bool,

    /// Host mode: do not probe libc's getaddrinfo. Those probes see the
    /// lookups that never become a DNS packet (glibc asking
    /// systemd-resolved over nss-resolve, nscd, /etc/hosts); each call
    /// costs the app a few microseconds.
    #[arg(long, conflicts_with = "interfaces")]
    pub no_getaddrinfo: bool,

    /// Host mode: systemd-resolved's monitor socket, whose answers give
    /// the getaddrinfo calls it served their TTL; `none` for none.
    /// Default: /run/systemd/resolve/io.systemd.Resolve.Monitor, if there.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["interfaces", "no_getaddrinfo"])]
    pub resolved_monitor: Option<std::path::PathBuf>,

    /// Host mode: probe the libc files of processes started later too (a
    /// container of a new image brings its own). A helper process does
    /// the probing and keeps CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON,
    /// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for the whole trace (the
    /// kernel asks CAP_SYS_ADMIN for a uprobe); without it, only those in
    /// use at start are probed and connbal keeps no capability at all.
    #[arg(long, conflicts_with_all = ["interfaces", "no_getaddrinfo"])]
    pub rescan_libc: bool,

    /// Attach empty programs instead (the classifier, or host mode's four):
    /// the floor for `cargo xtask bench-live` and `bench-overhead`.
    #[arg(long, hide = true)]
    pub noop_program: bool,

    #[command(flatten)]
    pub report: super::ReportArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ByArg {
    /// Cgroup plus command name: one program in one container.
    App,
    /// The cgroup: a container, a pod's container, a systemd unit.
    Cgroup,
    /// One process.
    Process,
    /// The address packets came from, as the original did (in host mode,
    /// in its network namespace: 127.0.0.1 of two containers is two).
    Ip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttachArg {
    /// TCX on Linux 6.6 and later, netlink (clsact) before.
    Auto,
    Tcx,
    Netlink,
}

impl TraceArgs {
    pub fn options(self) -> TraceOptions {
        TraceOptions {
            config: self.report.config(),
            format: self.report.format.map(Into::into),
            verbose: self.report.verbose,
            // `-i eth0 -i eth0` is one interface, attached once.
            interfaces: self
                .interfaces
                .iter()
                .enumerate()
                .filter(|(i, name)| !self.interfaces[..*i].contains(name))
                .map(|(_, name)| name.clone())
                .collect(),
            // `--cgroup a --cgroup a` is one subtree, attached once.
            cgroups: self
                .cgroup
                .iter()
                .enumerate()
                .filter(|(i, path)| !self.cgroup[..*i].contains(path))
                .map(|(_, path)| path.clone())
                .collect(),
            runtime_sockets: if self.runtime_socket.iter().any(|s| s.as_os_str() == "none") {
                RuntimeSockets::None
            } else if self.runtime_socket.is_empty() {
                RuntimeSockets::Default
            } else {
                RuntimeSockets::These(self.runtime_socket.clone())
            },
            runtime_states: self.runtime_state,
            by: self.by.map(|by| match by {
                ByArg::App => ClientBy::App,
                ByArg::Cgroup => ClientBy::Cgroup,
                ByArg::Process => ClientBy::Process,
                ByArg::Ip => ClientBy::Ip,
            }),
            duration: self.duration,
            interval: self.interval,
            ring_size: self.ring_size,
            attach: match self.attach {
                AttachArg::Auto => AttachMode::Auto,
                AttachArg::Tcx => AttachMode::Tcx,
                AttachArg::Netlink => AttachMode::Netlink,
            },
            kernel_debug: self.kernel_debug,
            user: self.user,
            programs: if self.noop_program {
                Programs::Empty
            } else if self.no_vip_backends {
                Programs::WithoutVipBackends
            } else {
                Programs::All
            },
            libc: if self.no_getaddrinfo || self.noop_program {
                LibcProbing::Off
            } else if self.rescan_libc {
                LibcProbing::Rescanning
            } else {
                LibcProbing::AtStart
            },
            resolved_monitor: match self.resolved_monitor {
                None => ResolvedMonitor::Default,
                Some(path) if path.as_os_str() == "none" => ResolvedMonitor::None,
                Some(path) => ResolvedMonitor::At(path),
            },
            metrics: self.metrics,
            metrics_max_series: self.metrics_max_series,
        }
    }
}

/// "4096", "256K", "8M", "1G" (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

/// A duration above zero and at most a year ("30s", "10m", "1h"): zero
/// would end a trace at once or report in a busy loop.
pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    const YEAR: Duration = Duration::from_hours(8760);
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than zero (e.g. 30s, 10m)".into());
    }
    if duration > YEAR {
        return Err("must be at most a year".into());
    }
    Ok(duration)
}

/// Where to serve metrics: `HOST:PORT` with an address or a name
/// (`localhost:9464`, resolved now), or `:PORT` for every IPv4 address, as
/// Prometheus exporters take it.
fn listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| format!("not a port: {port:?}"))?;
        return Ok((std::net::Ipv4Addr::UNSPECIFIED, port).into());
    }
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?}: {e} (give HOST:PORT or :PORT)"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn durations_must_be_positive_and_sane() {
        assert_eq!(positive_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("0").is_err());
        assert!(positive_duration("1000y").is_err());
        assert!(positive_duration("soon").is_err());
    }

    #[test]
    fn metrics_addresses_take_names_and_a_bare_port() {
        assert_eq!(listen_address(":9465").unwrap().to_string(), "0.0.0.0:9465");
        assert_eq!(
            listen_address("127.0.0.1:9464").unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert!(listen_address("localhost:9464").unwrap().ip().is_loopback());
        assert!(listen_address(":http").is_err());
        assert!(listen_address("9464").is_err());
    }
}
