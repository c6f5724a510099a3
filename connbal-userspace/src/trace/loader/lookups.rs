//! Host mode: the uprobes on libc's `getaddrinfo` (see the kernel
//! program's `lookups.rs` for why), on every libc file processes map:
//! the host's, and each container's own (reached through `/proc/PID/root`,
//! since a uprobe is set on a file), those started later included.
//!
//! By default the files are those the processes running at start map,
//! probed by connbal itself before it drops its capabilities. A container
//! of an image started later brings a libc file of its own, and probing it
//! needs capabilities connbal no longer holds: a uprobe's perf event needs
//! CAP_SYS_ADMIN (the kernel asks no less for uprobes), reading other
//! processes' maps and roots CAP_SYS_PTRACE. With `--rescan-libc` a small
//! helper process does all the probing instead: `connbal libc-prober`,
//! started while connbal is root, keeping only those capabilities (and
//! CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH), taking no input but the end
//! of its stdin, and dying with connbal (PR_SET_PDEATHSIG). Every 500 ms it
//! looks at the processes started since and probes the libc files it has
//! not. Its links are its own, so they go with it. Opt-in: it is a process
//! that keeps CAP_SYS_ADMIN for the whole trace.

use super::{program, program_error, LoaderError};
use aya::maps::CgroupArray;
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use aya::programs::{ProbeKind, UProbe};
use aya::Ebpf;
use caps::Capability::{CAP_BPF, CAP_DAC_READ_SEARCH, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

const ENTRY: &str = "connbal_getaddrinfo";
const RETURN: &str = "connbal_getaddrinfo_return";
const SYMBOL: &str = "getaddrinfo";
/// Slots of the kernel's `TRACED_CGROUPS`.
const TRACED_CGROUPS_MAX: usize = 8;
/// Distinct libc files probed, at most: one per distinct image in use.
pub const MAX_LIBC_FILES: usize = 64;
/// Processes whose maps are read, at most, in one look.
const MAX_PROCESSES_READ: usize = 1 << 16;
/// How often the helper looks for processes started since: a program
/// that resolves within this of its container's start, in an image no
/// earlier process used, is missed until then.
const RESCAN: Duration = Duration::from_millis(500);
/// How long connbal waits for the helper's first look, at start.
const FIRST_LOOK: Duration = Duration::from_secs(20);

/// What was probed, as the helper last said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibcProbes {
    /// The libc files probed, as found (`/proc/PID/root/...`).
    pub files: Vec<PathBuf>,
    /// Files that could not be probed, and the first reason.
    pub failed: usize,
    pub first_failure: Option<String>,
}

impl LibcProbes {
    /// One file's probing, done or failed.
    fn note(&mut self, file: PathBuf, attached: Result<(), String>) {
        match attached {
            Ok(()) => self.files.push(file),
            Err(error) => {
                self.failed += 1;
                self.first_failure.get_or_insert(error);
            }
        }
    }
}

/// `probe` on `file`'s getaddrinfo, for every process; the error names
/// the file and the syscall's cause.
fn attach_to(probe: &mut UProbe, file: &Path) -> Result<UProbeLinkId, String> {
    probe
        .attach(SYMBOL, file, UProbeScope::AllProcesses)
        .map_err(|e| format!("{}: {}", file.display(), super::chain(&e)))
}

/// The helper, from connbal's side. Its status lines are read without
/// blocking, when asked: no thread of connbal's own (a thread started
/// before the capabilities are dropped would keep them).
#[derive(Debug)]
pub struct Prober {
    child: Child,
    stdout: ChildStdout,
    pending: Vec<u8>,
    status: LibcProbes,
}

impl Prober {
    /// What the helper last said it probed.
    pub fn probes(&mut self) -> LibcProbes {
        let mut chunk = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut self.stdout, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Ok(status) = serde_json::from_slice::<LibcProbes>(&line) {
                self.status = status;
            }
        }
        self.status.clone()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        // Its stdin closes with us too; kill it so that the probes go now.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the probes were attached.
#[derive(Debug)]
pub enum Probing {
    /// By connbal, once, to the libc files in use at start; with each
    /// probe's link, by program.
    AtStart(LibcProbes, Vec<(&'static str, UProbeLinkId)>),
    /// By the helper, at start and to those that come later.
    Rescanning(Prober),
}

impl Probing {
    pub fn probes(&mut self) -> LibcProbes {
        match self {
            Probing::AtStart(probes, _) => probes.clone(),
            Probing::Rescanning(prober) => prober.probes(),
        }
    }
}

/// Points the kernel's cgroup filter at `cgroups`, loads both probes, and
/// attaches them to the libc files in use now: itself, or with `rescan`
/// through the helper (after its first look, so that those running now are
/// probed before the trace begins).
pub fn attach(
    ebpf: &mut Ebpf,
    cgroups: &[(File, String)],
    rescan: bool,
) -> Result<Probing, LoaderError> {
    if cgroups.len() > TRACED_CGROUPS_MAX {
        return Err(LoaderError::Load(format!(
            "getaddrinfo is followed in at most {TRACED_CGROUPS_MAX} cgroup trees, not {}",
            cgroups.len()
        )));
    }
    let map = ebpf
        .map_mut("TRACED_CGROUPS")
        .ok_or_else(|| LoaderError::Load("object has no TRACED_CGROUPS map".into()))?;
    let mut traced = CgroupArray::try_from(map).map_err(|e| LoaderError::Load(e.to_string()))?;
    for (index, (dir, shown)) in cgroups.iter().enumerate() {
        traced
            .set(index as u32, dir.as_raw_fd(), 0)
            .map_err(|e| LoaderError::Load(format!("TRACED_CGROUPS slot for {shown}: {e}")))?;
    }
    let mut ids = Vec::new();
    for name in [ENTRY, RETURN] {
        let probe: &mut UProbe = program(ebpf, name)?;
        probe.load().map_err(program_error)?;
        let info = probe
            .info()
            .map_err(|e| LoaderError::Load(format!("{name}: {e}")))?;
        ids.push(info.id().to_string());
    }
    if !rescan {
        let mut probes = LibcProbes::default();
        let mut links = Vec::new();
        for file in LibcScan::default().new_files(Path::new("/proc")) {
            let attached = [ENTRY, RETURN].into_iter().try_for_each(|name| {
                let probe: &mut UProbe = program(ebpf, name).map_err(|e| e.to_string())?;
                links.push((name, attach_to(probe, &file)?));
                Ok(())
            });
            probes.note(file, attached);
        }
        return Ok(Probing::AtStart(probes, links));
    }
    let exe = std::env::current_exe()
        .map_err(|e| LoaderError::Load(format!("finding connbal's own binary: {e}")))?;
    let mut child = Command::new(&exe)
        .args(["libc-prober", "--entry-id", &ids[0], "--return-id", &ids[1]])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| LoaderError::Load(format!("starting {} libc-prober: {e}", exe.display())))?;
    let stdout = child.stdout.take().expect("piped");
    let mut prober = Prober {
        child,
        stdout,
        pending: Vec::new(),
        status: LibcProbes::default(),
    };
    // The first look, waited for; then the pipe is read without blocking.
    let mut fds = [nix::poll::PollFd::new(
        prober.stdout.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let wait = nix::poll::PollTimeout::try_from(FIRST_LOOK.as_millis() as i32)
        .unwrap_or(nix::poll::PollTimeout::MAX);
    let silent = || {
        LoaderError::Load(format!(
            "libc-prober said nothing in {} s",
            FIRST_LOOK.as_secs()
        ))
    };
    if !nix::poll::poll(&mut fds, wait).is_ok_and(|n| n > 0) {
        return Err(silent());
    }
    // One line: read it whole, keeping what follows.
    let mut chunk = [0u8; 4096];
    while !prober.pending.contains(&b'\n') {
        match std::io::Read::read(&mut prober.stdout, &mut chunk) {
            Ok(0) | Err(_) => return Err(silent()),
            Ok(n) => prober.pending.extend_from_slice(&chunk[..n]),
        }
    }
    nix::fcntl::fcntl(
        &prober.stdout,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| LoaderError::Load(format!("fcntl(O_NONBLOCK) on libc-prober's pipe: {e}")))?;
    prober.probes();
    Ok(Probing::Rescanning(prober))
}

#[derive(Debug, thiserror::Error)]
pub enum ProberError {
    #[error("libc-prober: program {id}: {source}")]
    Program {
        id: u32,
        source: aya::programs::ProgramError,
    },
    #[error("libc-prober: no loaded program has id {0}")]
    NoProgram(u32),
    #[error("libc-prober: {0}")]
    Privileges(#[from] super::super::privileges::DropError),
    #[error("libc-prober: prctl(PR_SET_PDEATHSIG): {0}")]
    DeathSignal(nix::errno::Errno),
}

/// `connbal libc-prober`: the helper. Takes the two programs connbal
/// loaded (by id, while still root), keeps only the capabilities probing
/// needs, and probes libc files until its stdin ends or connbal dies.
#[expect(
    unsafe_code,
    reason = "aya marks rebuilding a uprobe from a loaded program unsafe: the kernel's program type does not tell a uprobe from a kprobe"
)]
pub fn run_prober(entry_id: u32, return_id: u32) -> Result<(), ProberError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(ProberError::DeathSignal)?;
    if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
        // connbal died before the death signal was set.
        return Ok(());
    }
    let mut probes = Vec::new();
    for (id, kind, name) in [
        (entry_id, ProbeKind::Entry, ENTRY),
        (return_id, ProbeKind::Return, RETURN),
    ] {
        let info = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .ok_or(ProberError::NoProgram(id))?;
        // SAFETY: the id is connbal's own uprobe program of this kind, loaded
        // as such by the caller a moment ago.
        let probe = unsafe { UProbe::from_program_info(info, name.into(), kind) }
            .map_err(|source| ProberError::Program { id, source })?;
        probes.push(probe);
    }
    // A uprobe's perf event needs CAP_SYS_ADMIN (perf_uprobe_event_init),
    // CAP_PERFMON is not enough; attaching a program to it CAP_BPF; other
    // processes' maps and roots CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.
    super::super::privileges::keep_only(
        &[
            CAP_SYS_ADMIN,
            CAP_BPF,
            CAP_PERFMON,
            CAP_SYS_PTRACE,
            CAP_DAC_READ_SEARCH,
        ],
        None,
    )?;
    let mut scan = LibcScan::default();
    let mut status = LibcProbes::default();
    let mut said = None;
    loop {
        for file in scan.new_files(Path::new("/proc")) {
            let attached = probes
                .iter_mut()
                .try_for_each(|probe| attach_to(probe, &file).map(|_| ()));
            status.note(file, attached);
        }
        if said.as_ref() != Some(&status) {
            println!("{}", serde_json::to_string(&status).unwrap_or_default());
            said = Some(status.clone());
        }
        // Until the next look, or the end of stdin (connbal gone).
        let stdin = std::io::stdin();
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&stdin),
            nix::poll::PollFlags::POLLIN,
        )];
        let wait = nix::poll::PollTimeout::try_from(RESCAN.as_millis() as i32)
            .unwrap_or(nix::poll::PollTimeout::MAX);
        let ready = nix::poll::poll(&mut fds, wait);
        if ready.is_ok_and(|n| n > 0) {
            return Ok(());
        }
    }
}

/// What has been looked at: libc files (device and inode, as the maps
/// show them) and processes already read. Every new process is read, not
/// one per mount namespace: a container's namespace first holds `runc
/// init`, which maps the host's libc, then the image's program, which
/// maps the image's.
#[derive(Debug, Default)]
pub struct LibcScan {
    seen_files: HashSet<(String, u64)>,
    pids_read: HashSet<u32>,
    files: usize,
}

impl LibcScan {
    /// The libc files mapped by processes under `proc` started since the
    /// last look, one path per distinct file, within `MAX_LIBC_FILES` in
    /// all.
    pub fn new_files(&mut self, proc: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(proc) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut alive = HashSet::new();
        for entry in entries.flatten().take(MAX_PROCESSES_READ) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            alive.insert(pid);
            if !self.pids_read.insert(pid) {
                continue;
            }
            let dir = entry.path();
            let Ok(maps) = std::fs::read_to_string(dir.join("maps")) else {
                continue;
            };
            for (device, inode, path) in maps.lines().filter_map(libc_mapping) {
                if self.files < MAX_LIBC_FILES
                    && self.seen_files.insert((device.to_string(), inode))
                {
                    self.files += 1;
                    found.push(dir.join("root").join(path.trim_start_matches('/')));
                }
            }
        }
        // Pids reused later are read again.
        self.pids_read.retain(|pid| alive.contains(pid));
        found
    }
}

/// A line of `/proc/PID/maps` that maps a C library: (device, inode, path).
/// glibc's is `libc.so.6`; musl's is its dynamic loader
/// (`ld-musl-ARCH.so.1`) or `libc.musl-ARCH.so.1`, or Debian's
/// `.../x86_64-linux-musl/libc.so`.
fn libc_mapping(line: &str) -> Option<(&str, u64, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let (_range, _perms, _offset) = (fields.next()?, fields.next()?, fields.next()?);
    let device = fields.next()?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?;
    if inode == 0 || fields.next().is_some() {
        // Anonymous, or " (deleted)": a file replaced since it was mapped.
        return None;
    }
    let name = path.rsplit('/').next()?;
    let is_libc = name == "libc.so.6"
        || (name.starts_with("ld-musl-") && name.ends_with(".so.1"))
        || (name.starts_with("libc.musl-") && name.ends_with(".so.1"))
        || (name == "libc.so" && path.contains("musl"));
    is_libc.then_some((device, inode, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_mappings_are_glibc_and_musl_files_not_others() {
        let line =
            |path: &str| format!("7f0000000000-7f0000001000 r-xp 00028000 fd:01 1234 {path}");
        for path in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/ld-musl-x86_64.so.1",
            "/usr/lib/libc.musl-aarch64.so.1",
            "/usr/lib/x86_64-linux-musl/libc.so",
        ] {
            assert_eq!(
                libc_mapping(&line(path)),
                Some(("fd:01", 1234, path)),
                "{path}"
            );
        }
        for path in [
            "/usr/lib/x86_64-linux-gnu/libcap.so.2",
            "/usr/lib/libc.so",
            "/usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)",
            "[heap]",
        ] {
            assert_eq!(libc_mapping(&line(path)), None, "{path}");
        }
        assert_eq!(
            libc_mapping("7f0000000000-7f0000001000 rw-p 00000000 00:00 0 "),
            None
        );
    }

    #[test]
    fn this_process_s_libc_is_found_once() {
        let mut scan = LibcScan::default();
        let files = scan.new_files(std::path::Path::new("/proc"));
        // A second look finds nothing new.
        assert!(scan.new_files(std::path::Path::new("/proc")).is_empty());
        let mine = files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with("libc.so.6"))
            .count();
        // The test binary links glibc; every process on this host maps the
        // same file, found once.
        assert!(mine >= 1, "{files:?}");
        let mut names: Vec<_> = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
            .collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), before, "{files:?}");
    }
}
