//! Loading the committed eBPF object, then attaching it, one file per
//! attach type (bpfman's `multiprog/` is the model): `cgroup` (host mode's
//! cgroup links), `tc` (the classifier on interfaces, as a TCX link or a
//! netlink filter), and `netlink` with `clsact` (what a netlink filter
//! needs: the clsact qdisc, and the locks that tell a live run's filters
//! from a killed one's).

mod cgroup;
mod clsact;
mod lookups;
mod nat;
mod netlink;
mod open_sockets;
mod tc;
pub mod traffic;

pub use cgroup::load_and_attach_cgroup;
pub use lookups::{run_prober, LibcProbes, Prober, ProberError, Probing};
pub use tc::load_and_attach;

use super::btf::{ConntrackLayout, SocketLayout};
use super::counters::MappedCounters;
use crate::tally::counter_set;
use aya::maps::{Map, MapData, RingBuf};
use aya::programs::{tp_btf::BtfTracePointLinkId, BtfTracePoint, ProgramError, UProbe};
use aya::{Ebpf, EbpfError, EbpfLoader};
use connbal_common::record::{counter, Owners};
use serde::Serialize;
use std::fmt::Write as _;
use std::io;

/// Built by `cargo xtask build-ebpf`; see `ebpf/*.sources.sha256`.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/connbal.bpf.o");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX on Linux 6.6 and later, netlink (clsact) before.
    Auto,
    Tcx,
    Netlink,
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("connbal trace needs {missing} to load and attach its eBPF programs; run it as root (sudo connbal trace ...) or grant the capabilities (setcap cap_bpf,cap_net_admin,cap_perfmon+ep)")]
    Privileges { missing: String },
    #[error("--ring-size {0}: must be a power of two, at least 4096 (one page) and at most 1 GiB")]
    RingSize(u64),
    #[error("this kernel cannot create BPF map `{map}` ({source}); connbal trace needs BPF ring buffers (Linux 5.8 or later)")]
    Map { map: String, source: io::Error },
    #[error("the kernel rejected connbal's BPF type information (BTF): {0}")]
    Btf(String),
    #[error("the kernel's verifier rejected connbal's eBPF program ({source}){hint}")]
    Verifier {
        source: io::Error,
        log: String,
        hint: &'static str,
    },
    #[error("loading the eBPF program: {0}")]
    Load(String),
    #[error("attaching to {iface} {direction}: {source}")]
    Attach {
        iface: String,
        direction: &'static str,
        source: ProgramError,
    },
    #[error("opening cgroup {path}: {source}")]
    OpenCgroup { path: String, source: io::Error },
    #[error("attaching {program} to cgroup {path}: {}", chain(source))]
    AttachCgroup {
        program: &'static str,
        path: String,
        source: ProgramError,
    },
    #[error("{path}: {source}")]
    Lock { path: String, source: io::Error },
}

/// An error and its causes, `: `-separated (aya's syscall errors keep the
/// errno in their source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

impl LoaderError {
    /// The verifier's log, shown with `-v`.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            LoaderError::Verifier { log, .. } => Some(log),
            _ => None,
        }
    }
}

pub struct Options {
    pub all_tcp: bool,
    /// What owner fields records carry (host mode asks for the process).
    pub owners: Owners,
    pub debug_log: bool,
    pub ring_size: u64,
    pub attach: AttachMode,
    pub programs: Programs,
    /// Host mode: the uprobes on libc's getaddrinfo.
    pub libc: LibcProbing,
}

/// Host mode: whether and how libc's getaddrinfo is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibcProbing {
    /// `--no-getaddrinfo`, and `--iface`.
    Off,
    /// The libc files in use at start, by connbal before it drops its
    /// capabilities.
    AtStart,
    /// Those and the ones that come later, by the helper
    /// (`--rescan-libc`).
    Rescanning,
}

/// Which programs to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Programs {
    /// connbal's, all of them.
    All,
    /// Host mode without the NAT tracepoint, which runs for every packet
    /// the host sends (`--no-vip-backends`).
    WithoutVipBackends,
    /// The empty programs on the same hooks (`--noop-program`,
    /// benchmarks only).
    Empty,
}

counter_set! {
    /// Per-CPU counters of the kernel program, summed.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct KernelCounters {
        pub packets_seen: u64,
        pub records_emitted: u64,
        /// Records the ring buffer had no room for.
        pub records_lost: u64,
        pub dns_payloads_truncated: u64,
        /// IP fragments seen and not decoded (TC mode; `connbal replay`
        /// of a capture reassembles them, and host mode sees whole
        /// datagrams at the socket).
        pub ip_fragments: u64,
    }
}

pub struct Loaded {
    pub ebpf: Ebpf,
    counters: MappedCounters,
    /// How the program was attached (`tcx` or `netlink`); `None` in host
    /// mode.
    pub mode: Option<AttachMode>,
    pub interfaces: Vec<(String, u32)>,
    /// Host mode: how many sockets open before the trace were given their
    /// owner, or why none could be.
    pub open_sockets: Option<Result<u64, String>>,
    /// Host mode: the NAT tracepoint's link, or why it is not attached.
    pub nat: Option<Result<BtfTracePointLinkId, String>>,
    /// Host mode: the close tracepoint's link (the bytes connections to a
    /// VIP carried), or why not.
    pub traffic: Option<Result<BtfTracePointLinkId, String>>,
    /// Host mode: how libc's getaddrinfo is probed, or why it is not.
    pub lookups: Option<Result<lookups::Probing, String>>,
    /// Held for the run: tells later connbal runs these filters are live.
    /// Declared after `ebpf`, so dropped after the filters are detached.
    _claims: Vec<netlink::InterfaceClaim>,
}

impl Drop for Loaded {
    /// A tracepoint's or a uprobe's link waits out an RCU grace period as
    /// it goes (about 110 ms each here, more than everything else a stop
    /// does), so they go together, each on a thread of its own, before
    /// the rest: a pod being stopped exits sooner.
    fn drop(&mut self) {
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        for (name, id) in [
            (nat::PROGRAM, self.nat.take()),
            (traffic::CLOSED, self.traffic.take()),
        ] {
            let Some(Ok(id)) = id else { continue };
            if let Ok(tracepoint) = program::<BtfTracePoint>(&mut self.ebpf, name) {
                if let Ok(link) = tracepoint.take_link(id) {
                    links.push(Box::new(link));
                }
            }
        }
        if let Some(Ok(lookups::Probing::AtStart(_, probes))) = &mut self.lookups {
            for (name, id) in std::mem::take(probes) {
                if let Ok(probe) = program::<UProbe>(&mut self.ebpf, name) {
                    if let Ok(link) = probe.take_link(id) {
                        links.push(Box::new(link));
                    }
                }
            }
        }
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }
}

impl Loaded {
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, LoaderError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| LoaderError::Load("object has no EVENTS map".into()))?;
        RingBuf::try_from(map).map_err(|e| LoaderError::Load(e.to_string()))
    }

    pub fn counters(&self) -> KernelCounters {
        KernelCounters {
            packets_seen: self.counters.sum(counter::PACKETS_SEEN),
            records_emitted: self.counters.sum(counter::RECORDS_EMITTED),
            records_lost: self.counters.sum(counter::RECORDS_LOST),
            dns_payloads_truncated: self.counters.sum(counter::DNS_TRUNCATED),
            ip_fragments: self.counters.sum(counter::IP_FRAGMENTS),
        }
    }
}

pub fn interface_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The object loaded, with its counters mapped and the kernel's layouts
/// set: what both placements start from.
fn load(options: &Options) -> Result<Object, LoaderError> {
    if !super::privileges::missing().is_empty() {
        return Err(LoaderError::Privileges {
            missing: super::privileges::missing_text(),
        });
    }
    let ring_size = options.ring_size;
    if !ring_size.is_power_of_two() || !(4096..=1 << 30).contains(&ring_size) {
        return Err(LoaderError::RingSize(ring_size));
    }
    raise_memlock_limit();

    let cpus =
        aya::util::nr_cpus().map_err(|(path, e)| LoaderError::Load(format!("{path}: {e}")))?;
    let counter_entries = (cpus as u32).saturating_mul(counter::SLOTS_PER_CPU);
    let all_tcp = u8::from(options.all_tcp);
    let debug_log = u8::from(options.debug_log);
    let wakeup_bytes = ring_size / 4;
    let owners = options.owners as u8;
    // The process's name comes from its thread-group leader; without the
    // kernel's BTF the program takes the thread's, and userspace names
    // the process from /proc while it lives.
    let btf = (options.owners >= Owners::Process)
        .then(|| super::btf::Btf::read(std::path::Path::new(super::btf::VMLINUX)));
    let (leader_offset, comm_offset) = match &btf {
        Some(btf) => btf
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|btf| super::btf::leader_comm_offsets(btf).map_err(|e| e.to_string()))
            .unwrap_or_else(|error| {
                eprintln!("connbal: warning: processes are named from /proc only: {error}");
                (0, 0)
            }),
        None => (0, 0),
    };
    // Left 0 (no BTF, or a layout it does not describe), the iterator over
    // open sockets records nothing; the error goes to `record_owners`.
    let socket_layout = match &btf {
        Some(Ok(btf)) => super::btf::socket_layout(btf).map_err(|e| e.to_string()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("not asked for".into()),
    };
    let conntrack_layout = match &btf {
        Some(Ok(btf)) => super::btf::conntrack_layout(btf).map_err(|e| e.to_string()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("not asked for".into()),
    };
    let mut loader = EbpfLoader::new();
    let socket_globals = socket_layout.clone().unwrap_or_default().globals();
    let conntrack_globals = conntrack_layout.clone().unwrap_or_default().globals();
    for (name, value) in socket_globals.iter().chain(&conntrack_globals) {
        loader.override_global(name, value, true);
    }
    let mut ebpf = loader
        .override_global("ALL_TCP", &all_tcp, true)
        .override_global("DEBUG_LOG", &debug_log, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .override_global("OWNERS", &owners, true)
        .override_global("LEADER_OFFSET", &leader_offset, true)
        .override_global("COMM_OFFSET", &comm_offset, true)
        .map_max_entries("EVENTS", ring_size as u32)
        .map_max_entries("COUNTERS", counter_entries)
        .load(OBJECT)
        .map_err(load_error)?;
    // Map fds are already in the program's instructions; taking the map
    // out of `ebpf` only moves its fd.
    let counters = match ebpf.take_map("COUNTERS") {
        Some(Map::Array(data)) => MappedCounters::new(data, cpus).map_err(|e| {
            LoaderError::Load(format!(
                "mmap of the COUNTERS map: {e} (needs Linux 5.5 or later)"
            ))
        })?,
        _ => return Err(LoaderError::Load("object has no COUNTERS array".into())),
    };
    Ok(Object {
        ebpf,
        counters,
        socket_layout,
        conntrack_layout,
    })
}

/// The object as loaded, before any program is attached.
struct Object {
    ebpf: Ebpf,
    counters: MappedCounters,
    /// The offsets the open-socket iterator was given, or why none.
    socket_layout: Result<SocketLayout, String>,
    /// The offsets the NAT tracepoint was given, or why none.
    conntrack_layout: Result<ConntrackLayout, String>,
}

fn program<'e, P>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut P, LoaderError>
where
    &'e mut P: TryFrom<&'e mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| LoaderError::Load(format!("object has no program {name}")))?
        .try_into()
        .map_err(|e: ProgramError| LoaderError::Load(e.to_string()))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the
/// memory cgroup, where this is harmless.
fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    let _ = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY);
}

fn load_error(error: EbpfError) -> LoaderError {
    match error {
        EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) => {
            if io_error.raw_os_error() == Some(libc::EPERM) {
                let missing = super::privileges::missing();
                LoaderError::Privileges {
                    missing: if missing.is_empty() {
                        "CAP_BPF".into()
                    } else {
                        super::privileges::missing_text()
                    },
                }
            } else {
                LoaderError::Map {
                    map: name,
                    source: io_error,
                }
            }
        }
        EbpfError::BtfError(e) => LoaderError::Btf(e.to_string()),
        other => LoaderError::Load(other.to_string()),
    }
}

fn program_error(error: ProgramError) -> LoaderError {
    match error {
        // The verifier refuses what an unprivileged loader may not do
        // (pointer arithmetic without CAP_PERFMON, say) with EPERM or
        // EACCES: that is a missing capability, not a broken program.
        ProgramError::LoadError { ref io_error, .. }
            if matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
                && !super::privileges::missing().is_empty() =>
        {
            LoaderError::Privileges {
                missing: super::privileges::missing_text(),
            }
        }
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoaderError::Verifier {
            source: io_error,
            log: verifier_log.to_string(),
            hint: "; run with -v to see the verifier log",
        },
        other => LoaderError::Load(other.to_string()),
    }
}
