//! Host mode: the uprobes on libc's `getaddrinfo` (see the kernel
//! program's `lookups.rs` for why), on every libc file the processes
//! running at start have mapped: the host's, and each container's own
//! (reached through `/proc/PID/root`, since a uprobe is set on a file).

use super::{program, program_error, LoaderError};
use aya::maps::CgroupArray;
use aya::programs::uprobe::UProbeScope;
use aya::programs::UProbe;
use aya::Ebpf;
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const ENTRY: &str = "connbal_getaddrinfo";
const RETURN: &str = "connbal_getaddrinfo_return";
const SYMBOL: &str = "getaddrinfo";
/// Slots of the kernel's `TRACED_CGROUPS`.
const TRACED_CGROUPS_MAX: usize = 8;
/// Distinct libc files probed, at most: one per distinct image in use.
pub const MAX_LIBC_FILES: usize = 64;
/// Processes whose maps are read, at most, while looking for libc files.
const MAX_PROCESSES_READ: usize = 1 << 16;

/// What was probed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LibcProbes {
    /// The libc files probed, as found (`/proc/PID/root/...`).
    pub files: Vec<PathBuf>,
    /// Files that could not be probed, and the first reason.
    pub failed: usize,
    pub first_failure: Option<String>,
}

/// Points the kernel's cgroup filter at `cgroups`, loads both probes and
/// attaches them to every libc file in use. The links live in the programs,
/// which live in `ebpf`, and go with it.
pub fn attach(ebpf: &mut Ebpf, cgroups: &[(File, String)]) -> Result<LibcProbes, LoaderError> {
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
    for name in [ENTRY, RETURN] {
        let probe: &mut UProbe = program(ebpf, name)?;
        probe.load().map_err(program_error)?;
    }
    let mut probes = LibcProbes::default();
    for file in libc_files(std::path::Path::new("/proc")) {
        let attached = [ENTRY, RETURN].into_iter().try_for_each(|name| {
            let probe: &mut UProbe = program(ebpf, name)?;
            probe
                .attach(SYMBOL, &file, UProbeScope::AllProcesses)
                .map(|_| ())
                .map_err(|e| LoaderError::Load(format!("{name} on {}: {e}", file.display())))
        });
        match attached {
            Ok(()) => probes.files.push(file),
            Err(error) => {
                probes.failed += 1;
                probes.first_failure.get_or_insert(error.to_string());
            }
        }
    }
    Ok(probes)
}

/// The libc files mapped by the processes under `proc`, one path per
/// distinct file (device and inode, as the maps show them), at most
/// `MAX_LIBC_FILES`. One process per mount namespace is read when it maps
/// one: the others see the same files.
pub fn libc_files(proc: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    let mut seen_files = HashSet::new();
    let mut namespaces_done = HashSet::new();
    for entry in entries.flatten().take(MAX_PROCESSES_READ) {
        let pid = entry.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        let namespace = std::fs::read_link(dir.join("ns/mnt")).ok();
        if namespace
            .as_ref()
            .is_some_and(|ns| namespaces_done.contains(ns))
        {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(dir.join("maps")) else {
            continue;
        };
        let mut found = false;
        for (device, inode, path) in maps.lines().filter_map(libc_mapping) {
            found = true;
            if seen_files.insert((device.to_string(), inode)) && files.len() < MAX_LIBC_FILES {
                files.push(dir.join("root").join(path.trim_start_matches('/')));
            }
        }
        if let (true, Some(namespace)) = (found, namespace) {
            namespaces_done.insert(namespace);
        }
    }
    files
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
        let files = libc_files(std::path::Path::new("/proc"));
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
