//! Loading the committed eBPF object and attaching it to interfaces.
//!
//! Attachment: TCX links on Linux 6.6+ (they vanish with the process, even
//! on SIGKILL), otherwise a filter on a clsact qdisc over netlink (Linux
//! 4.5+). Netlink filters survive SIGKILL, so before attaching, filters of
//! ours that no live connbal owns are removed. Ownership is a shared flock
//! per interface held for the whole run: whoever can take it exclusively
//! knows no other connbal is tracing that interface. The last one out
//! also deletes the clsact qdisc, when connbal created it and no filter is
//! left on it, and the lock file.

use super::clsact;
use super::counters::MappedCounters;
use crate::tally::counter_set;
use aya::maps::{Map, MapData, RingBuf};
use aya::programs::tc::{self, NlOptions, SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, LinkOrder, ProgramError,
};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfError, EbpfLoader};
use connbal_common::record::counter;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Built by `cargo xtask build-ebpf`; see `ebpf/*.sources.sha256`.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../ebpf/connbal.bpf.o");
const PROGRAM: &str = "connbal_tc";
/// The empty classifier, for measuring the per-packet floor.
const NOOP_PROGRAM: &str = "connbal_noop";
/// Records carry the socket's owner (cgroup, cookie) and its process.
pub const OWNERS_SOCKET: u8 = 1;
pub const OWNERS_PROCESS: u8 = 2;
/// Host mode: packets at the socket, both ways.
const CGROUP_SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("connbal_cgroup_egress", CgroupSkbAttachType::Egress),
    ("connbal_cgroup_ingress", CgroupSkbAttachType::Ingress),
];
/// Host mode: the process behind each socket, at connect and sendmsg.
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "connbal_connect4",
    "connbal_connect6",
    "connbal_sendmsg4",
    "connbal_sendmsg6",
];
/// Host mode's floor (`--noop-program`): empty programs on the same hooks.
const EMPTY_CGROUP_SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("connbal_empty_skb_egress", CgroupSkbAttachType::Egress),
    ("connbal_empty_skb_ingress", CgroupSkbAttachType::Ingress),
];
const EMPTY_SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "connbal_empty_connect4",
    "connbal_empty_connect6",
    "connbal_empty_sendmsg4",
    "connbal_empty_sendmsg6",
];
const LOCK_DIR: &str = "/run/connbal";

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
        text.push_str(&format!(": {cause}"));
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
    /// What owner fields records carry: 0 none, 1 the socket (cgroup and
    /// cookie), 2 the process too. Host mode sets 2 itself.
    pub owners: u8,
    pub debug_log: bool,
    pub ring_size: u64,
    pub attach: AttachMode,
    /// Attach the empty programs instead (benchmarks only).
    pub noop: bool,
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
    /// Held for the run: tells later connbal runs these filters are live.
    /// Declared after `ebpf`, so dropped after the filters are detached.
    _claims: Vec<InterfaceClaim>,
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

/// The object loaded, with its counters mapped: what both placements
/// start from.
fn load(options: &Options, owners: u8) -> Result<(Ebpf, MappedCounters), LoaderError> {
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
    let mut ebpf = EbpfLoader::new()
        .override_global("ALL_TCP", &all_tcp, true)
        .override_global("DEBUG_LOG", &debug_log, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .override_global("OWNERS", &owners, true)
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
    Ok((ebpf, counters))
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

/// Host mode: the cgroup_skb programs and the connect/sendmsg hooks on the
/// cgroup v2 directory `cgroup`, so every socket in its subtree is seen,
/// in every network namespace, including those of processes started later.
///
/// Attached as links (Linux 5.7+), which the kernel removes when the last
/// fd closes, so nothing survives `kill -9`. A cgroup link always runs
/// beside the cgroup's other programs (systemd's, a CNI's), as
/// BPF_F_ALLOW_MULTI does; the kernel refuses the flag itself on links, so
/// the mode passed is `Single` (no flags).
pub fn load_and_attach_cgroup(cgroup: &Path, options: &Options) -> Result<Loaded, LoaderError> {
    let (mut ebpf, counters) = load(options, OWNERS_PROCESS)?;
    let shown = cgroup.display().to_string();
    let dir = File::open(cgroup).map_err(|source| LoaderError::OpenCgroup {
        path: shown.clone(),
        source,
    })?;
    let (skb_programs, sock_addr_programs) = if options.noop {
        (EMPTY_CGROUP_SKB_PROGRAMS, EMPTY_SOCK_ADDR_PROGRAMS)
    } else {
        (CGROUP_SKB_PROGRAMS, SOCK_ADDR_PROGRAMS)
    };
    for (name, attach_type) in skb_programs {
        let program: &mut CgroupSkb = program(&mut ebpf, name)?;
        program.load().map_err(program_error)?;
        program
            .attach(&dir, attach_type, CgroupAttachMode::Single)
            .map_err(|source| LoaderError::AttachCgroup {
                program: name,
                path: shown.clone(),
                source,
            })?;
    }
    for name in sock_addr_programs {
        let program: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        program.load().map_err(program_error)?;
        program
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|source| LoaderError::AttachCgroup {
                program: name,
                path: shown.clone(),
                source,
            })?;
    }
    Ok(Loaded {
        ebpf,
        counters,
        mode: None,
        interfaces: Vec::new(),
        _claims: Vec::new(),
    })
}

pub fn load_and_attach(interfaces: &[String], options: &Options) -> Result<Loaded, LoaderError> {
    let interfaces = interfaces
        .iter()
        .map(|name| {
            interface_index(name)
                .map(|index| (name.clone(), index))
                .ok_or_else(|| LoaderError::NoSuchInterface(name.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Declared before `ebpf`, so that on an early return it drops after the
    // filters are detached, as in `Loaded`.
    let mut claims = Vec::new();
    let (mut ebpf, counters) = load(options, options.owners)?;
    let name = if options.noop { NOOP_PROGRAM } else { PROGRAM };
    let program: &mut SchedClassifier = program(&mut ebpf, name)?;
    program.load().map_err(program_error)?;
    let mode = match options.attach {
        AttachMode::Auto
            if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) =>
        {
            AttachMode::Tcx
        }
        AttachMode::Auto => AttachMode::Netlink,
        chosen => chosen,
    };
    for (iface, index) in &interfaces {
        // Only netlink filters outlive a killed connbal and need the lock
        // that tells stale ones from live ones. TCX links go with their
        // process, so TCX takes no lock: no file in the root-owned
        // /run/connbal, which a run with capabilities instead of root
        // could not create, and none left behind.
        if mode == AttachMode::Netlink {
            claims.push(claim_interface(iface, *index)?);
        } else {
            remove_stale_netlink_filters(iface, *index);
        }
        for (attach_type, direction) in [
            (TcAttachType::Ingress, "ingress"),
            (TcAttachType::Egress, "egress"),
        ] {
            let attach_options = match mode {
                AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
                _ => TcAttachOptions::TcxOrder(LinkOrder::default()),
            };
            program
                .attach_with_options(iface, attach_type, attach_options)
                .map_err(|source| LoaderError::Attach {
                    iface: iface.clone(),
                    direction,
                    source,
                })?;
        }
    }
    Ok(Loaded {
        ebpf,
        counters,
        mode: Some(mode),
        interfaces,
        _claims: claims,
    })
}

/// The lock file of `iface` in this network namespace.
fn lock_path(iface: &str) -> PathBuf {
    let netns = fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0);
    PathBuf::from(LOCK_DIR).join(format!("{netns}-{iface}.lock"))
}

/// What a lock file holds when connbal, not the administrator, created the
/// interface's clsact qdisc: the last connbal to leave deletes it then.
const CREATED_CLSACT: &[u8] = b"connbal created clsact\n";

/// A claim is retried when the lock file it locked was meanwhile removed by
/// a connbal leaving; two or three tries are the most a real race takes.
const CLAIM_ATTEMPTS: usize = 8;

/// A netlink-mode run's hold on one interface: a shared flock on the
/// interface's lock file, kept for the run. Dropped after the programs (so
/// after their filters are detached), the last connbal out removes what
/// connbal created: the clsact qdisc and the lock file.
struct InterfaceClaim {
    iface: String,
    index: u32,
    path: PathBuf,
    lock: Option<Flock<File>>,
}

impl Drop for InterfaceClaim {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        // Another live connbal holds it shared: its filters stay, and so
        // do the qdisc and the file.
        if lock.relock(FlockArg::LockExclusiveNonblock).is_ok() {
            release_last(&lock, &self.iface, self.index, &self.path);
        }
    }
}

/// Whether the locked `file` is still the one at `path`: a connbal that
/// released the interface may have removed it between our open and lock.
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(locked), Ok(linked)) => locked.ino() == linked.ino() && locked.dev() == linked.dev(),
        _ => false,
    }
}

/// With the lock held exclusively (no live connbal on `iface`): deletes the
/// clsact qdisc when connbal created it and no filter is left on it, then
/// the lock file.
fn release_last(lock: &File, iface: &str, index: u32, path: &Path) {
    use std::os::unix::fs::FileExt;
    if !still_linked(lock, path) {
        return;
    }
    let mut marker = [0u8; CREATED_CLSACT.len()];
    let created = lock.read_exact_at(&mut marker, 0).is_ok() && marker == CREATED_CLSACT;
    // A filter left by anyone else keeps the qdisc (and with it the
    // marker, so a later last connbal tries again).
    if created {
        match clsact::has_filters(index) {
            Ok(false) => {
                if let Err(e) = clsact::delete(index) {
                    if e.raw_os_error() != Some(libc::ENOENT)
                        && e.raw_os_error() != Some(libc::EINVAL)
                    {
                        eprintln!("connbal: warning: could not remove the clsact qdisc connbal added to {iface}: {e}");
                    }
                }
            }
            Ok(true) => return,
            Err(e) => {
                eprintln!("connbal: warning: could not list the filters on {iface} to remove connbal's clsact qdisc: {e}");
                return;
            }
        }
    }
    let _ = fs::remove_file(path);
}

/// TCX mode takes no lock, but still removes netlink filters a killed
/// netlink-mode connbal left on `iface`: when its lock file exists and no
/// live connbal holds it (and then the qdisc and file too, as the last
/// netlink-mode connbal would have). Best effort: without the file (or the
/// right to open it) there is nothing known to be stale.
fn remove_stale_netlink_filters(iface: &str, index: u32) {
    let path = lock_path(iface);
    let Ok(file) = OpenOptions::new().write(true).read(true).open(&path) else {
        return;
    };
    if let Ok(exclusive) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        if still_linked(&exclusive, &path) {
            detach_stale_filters(iface);
            release_last(&exclusive, iface, index, &path);
        }
    }
}

/// Removes our netlink filters from `iface`, both ways; called only once a
/// lock says no live connbal owns them.
fn detach_stale_filters(iface: &str) {
    for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
        // NotFound (nothing stale) is the usual answer.
        let _ = tc::qdisc_detach_program(iface, attach_type, PROGRAM);
    }
}

/// Takes the interface's shared lock and makes sure it has a clsact qdisc.
/// Whoever gets the lock exclusively (no live connbal on `iface`) first
/// removes our filters left by a connbal that died without detaching
/// (SIGKILL), and notes in the lock file when it is connbal that adds the
/// qdisc.
fn claim_interface(iface: &str, index: u32) -> Result<InterfaceClaim, LoaderError> {
    use std::os::unix::fs::FileExt;
    let lock_error = |path: &Path, source| LoaderError::Lock {
        path: path.display().to_string(),
        source,
    };
    let path = lock_path(iface);
    for _ in 0..CLAIM_ATTEMPTS {
        fs::create_dir_all(LOCK_DIR).map_err(|e| lock_error(Path::new(LOCK_DIR), e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| lock_error(&path, e))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(exclusive) => {
                if !still_linked(&exclusive, &path) {
                    continue;
                }
                detach_stale_filters(iface);
                // An error is an existing qdisc (ours from a killed run, or
                // the administrator's): not ours to delete unless marked.
                if tc::qdisc_add_clsact(iface).is_ok() {
                    exclusive
                        .write_all_at(CREATED_CLSACT, 0)
                        .map_err(|e| lock_error(&path, e))?;
                }
                exclusive
                    .relock(FlockArg::LockSharedNonblock)
                    .map_err(|e| lock_error(&path, e.into()))?;
                exclusive
            }
            // Another connbal is tracing this interface (leave its filters
            // be), or is claiming or leaving it: wait for that to end.
            Err((file, _)) => {
                let shared = Flock::lock(file, FlockArg::LockShared)
                    .map_err(|(_, e)| lock_error(&path, e.into()))?;
                if !still_linked(&shared, &path) {
                    continue;
                }
                // Someone may have deleted the qdisc by hand meanwhile.
                let _ = tc::qdisc_add_clsact(iface);
                shared
            }
        };
        return Ok(InterfaceClaim {
            iface: iface.to_string(),
            index,
            path,
            lock: Some(lock),
        });
    }
    Err(lock_error(
        &path,
        io::Error::other("removed by other connbal runs at every attempt"),
    ))
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
