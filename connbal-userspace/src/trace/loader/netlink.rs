//! Netlink filters survive SIGKILL, so before attaching, filters of ours
//! that no live connbal owns are removed. Ownership is a shared flock per
//! interface held for the whole run: whoever can take it exclusively knows
//! no other connbal is tracing that interface. The last one out also
//! deletes the clsact qdisc, when connbal created it and no filter is left
//! on it, and the lock file.
//!
//! A lock file is named by its network namespace's cookie, which the kernel
//! never gives twice in a boot (/run is emptied at boot), and by its inode,
//! which is reused: an inode alone let a new namespace inherit a dead one's
//! "connbal created clsact" and delete an administrator's qdisc. The inode
//! serves the sweep of files whose namespace is gone.

use super::{clsact, LoaderError};
use aya::programs::tc::{self, TcAttachType};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

const LOCK_DIR: &str = "/run/connbal";
/// The lock file of `iface` in this network namespace.
fn lock_path(iface: &str) -> PathBuf {
    let cookie = crate::trace::netns::own_cookie().unwrap_or(0);
    PathBuf::from(LOCK_DIR).join(format!("{cookie}-{}-{iface}.lock", own_netns_inode()))
}

fn own_netns_inode() -> u64 {
    fs::metadata("/proc/self/ns/net").map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// The namespace cookie and inode a lock file's name carries; `None` for
/// a name of another shape (older connbal's `INODE-IFACE.lock`).
fn lock_name_namespace(name: &str) -> Option<(u64, u64)> {
    let mut parts = name.strip_suffix(".lock")?.splitn(3, '-');
    let cookie = parts.next()?.parse().ok()?;
    let inode = parts.next()?.parse().ok()?;
    parts.next().filter(|iface| !iface.is_empty())?;
    Some((cookie, inode))
}

/// Network namespaces alive now, by inode: those of processes, and those
/// kept by a bind mount (`ip netns add`). A namespace held only by an open
/// descriptor is missed; its lock file then goes early, and the worst
/// that costs is a clsact qdisc connbal created left in place.
fn live_netns_inodes() -> std::collections::HashSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut live = std::collections::HashSet::new();
    let pids = fs::read_dir("/proc").into_iter().flatten().flatten();
    let mounted = fs::read_dir("/run/netns").into_iter().flatten().flatten();
    for entry in pids.take(1 << 20) {
        if entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            if let Ok(meta) = fs::metadata(entry.path().join("ns/net")) {
                live.insert(meta.ino());
            }
        }
    }
    for entry in mounted.take(1 << 16) {
        if let Ok(meta) = fs::metadata(entry.path()) {
            live.insert(meta.ino());
        }
    }
    live
}

/// Removes lock files no live connbal holds whose namespace is gone (its
/// interfaces, filters and qdiscs went with it), and older connbal's
/// inode-named files, which a reused inode would misread.
fn sweep_dead_namespaces() {
    let own = crate::trace::netns::own_cookie().unwrap_or(0);
    let Ok(entries) = fs::read_dir(LOCK_DIR) else {
        return;
    };
    let mut live = None;
    for entry in entries.flatten().take(1 << 16) {
        let name = entry.file_name().to_string_lossy().into_owned();
        // connbal writes the suffix; a name of another case is not ours.
        if entry.path().extension().is_none_or(|ext| ext != "lock") {
            continue;
        }
        let dead = match lock_name_namespace(&name) {
            Some((cookie, _)) if cookie == own => false,
            Some((_, inode)) => !live.get_or_insert_with(live_netns_inodes).contains(&inode),
            None => true,
        };
        if !dead {
            continue;
        }
        let path = entry.path();
        let Ok(file) = OpenOptions::new().read(true).open(&path) else {
            continue;
        };
        if let Ok(exclusive) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            if still_linked(&exclusive, &path) {
                let _ = fs::remove_file(&path);
            }
        }
    }
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
pub(super) struct InterfaceClaim {
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
            if super::interface_index(&self.iface) == Some(self.index) {
                release_last(&lock, &self.iface, self.index, &self.path);
            } else if still_linked(&lock, &self.path) {
                // The interface went, and its qdisc and filters with it:
                // only the lock file is left to remove.
                remove_lock_file(&self.path);
            }
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
    remove_lock_file(path);
}

/// TCX mode takes no lock, but still removes netlink filters a killed
/// netlink-mode connbal left on `iface`: when its lock file exists and no
/// live connbal holds it (and then the qdisc and file too, as the last
/// netlink-mode connbal would have). Best effort: without the file (or the
/// right to open it) there is nothing known to be stale.
pub(super) fn remove_stale_filters(iface: &str, index: u32) {
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
        let _ = tc::qdisc_detach_program(iface, attach_type, super::tc::PROGRAM);
    }
}

/// Takes the interface's shared lock and makes sure it has a clsact qdisc.
/// Whoever gets the lock exclusively (no live connbal on `iface`) first
/// removes our filters left by a connbal that died without detaching
/// (SIGKILL), and notes in the lock file when it is connbal that adds the
/// qdisc.
pub(super) fn claim_interface(iface: &str, index: u32) -> Result<InterfaceClaim, LoaderError> {
    use std::os::unix::fs::FileExt;
    let lock_error = |path: &Path, source| LoaderError::Lock {
        path: path.display().to_string(),
        source,
    };
    let path = lock_path(iface);
    sweep_dead_namespaces();
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

/// Removes a lock file, and the lock directory once it is empty (the last
/// connbal out leaves no /run/connbal behind; with another's lock file in
/// it, removing the directory fails, as it should).
fn remove_lock_file(path: &Path) {
    let _ = fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::lock_name_namespace;

    #[test]
    fn lock_names_carry_the_namespace_cookie_and_inode() {
        assert_eq!(
            lock_name_namespace("8193-4026531840-eth0.lock"),
            Some((8193, 4_026_531_840))
        );
        // Interface names may hold dashes.
        assert_eq!(lock_name_namespace("7-42-veth-a-b.lock"), Some((7, 42)));
        // Older connbal's inode-only names, and strangers.
        assert_eq!(lock_name_namespace("4026531840-eth0.lock"), None);
        assert_eq!(lock_name_namespace("1-2-.lock"), None);
        assert_eq!(lock_name_namespace("notes.txt"), None);
    }
}
