//! Netlink filters survive SIGKILL, so before attaching, filters of ours
//! that no live connbal owns are removed. Ownership is a shared flock per
//! interface held for the whole run: whoever can take it exclusively knows
//! no other connbal is tracing that interface. The last one out also
//! deletes the clsact qdisc, when connbal created it and no filter is left
//! on it, and the lock file.

use super::{clsact, LoaderError};
use aya::programs::tc::{self, TcAttachType};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

const LOCK_DIR: &str = "/run/connbal";
/// The lock file of `iface` in this network namespace.
fn lock_path(iface: &str) -> PathBuf {
    let netns =
        fs::metadata("/proc/self/ns/net").map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m));
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
