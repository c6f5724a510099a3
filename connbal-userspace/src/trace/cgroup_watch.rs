//! Cgroups named as they are created. A `docker run --rm` client can live
//! a few tens of milliseconds after its first lookup, and its cgroup goes
//! with it: named when its records are read, it was often gone already
//! (`curl in cgroup 1440605`). The VFS reports every mkdir to inotify, on
//! cgroupfs as on any filesystem, so a thread watching the traced subtree
//! names each new cgroup as it appears, before its first process runs, and
//! asks its runtime for the container's names while the container exists.
//!
//! inotify rather than the `cgroup_mkdir` tracepoint: the tracepoint's
//! cgroup id needs `cgroup->kn->id` read through kernel structure offsets,
//! and its tracefs form needs tracefs mounted, which this machine kind and
//! many container hosts do not have. The walk on an unknown id stays as the
//! fallback (a full inotify queue, a watch limit reached).

use super::cgroups::relative;
use super::runtimes::RuntimeApi;
use crate::aggregator::Cgroup;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Directories watched at most (the walk's bound).
const MAX_WATCHES: usize = 1 << 16;
const MAX_DEPTH: usize = 32;
/// New cgroups waiting for the loop; past it they are named by the walk.
const QUEUED_MAX: usize = 4096;
/// How often the thread looks at its stop flag, should its wake-up be
/// missed.
const POLL_MS: u16 = 200;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("inotify_init1: {0}")]
    Init(nix::Error),
    #[error("starting the cgroup watcher thread: {0}")]
    Thread(std::io::Error),
}

/// The watcher thread and the cgroups it named, for the loop to take.
pub struct CgroupWatch {
    created: Receiver<Cgroup>,
    stop: Arc<AtomicBool>,
    /// Dropped to wake the thread at once: its end then polls readable
    /// (end of file), so a stopping trace does not wait out a poll.
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl CgroupWatch {
    /// Watches `scopes` (directories under `mount`) and every directory
    /// below them; a new container's names are asked of `api`.
    pub fn start(
        mount: PathBuf,
        scopes: &[PathBuf],
        api: Option<Arc<RuntimeApi>>,
    ) -> Result<Self, WatchError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(WatchError::Init)?;
        let mut watcher = Watcher {
            inotify,
            mount,
            dirs: HashMap::new(),
            api,
        };
        for scope in scopes {
            watcher.watch_tree(scope);
        }
        let (tx, created) = sync_channel(QUEUED_MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = UnixStream::pair().map_err(WatchError::Thread)?;
        let thread = std::thread::Builder::new()
            .name("connbal-cgroups".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || watcher.run(&tx, &stop, &woken)
            })
            .map_err(WatchError::Thread)?;
        Ok(Self {
            created,
            stop,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// The cgroups created since the last call.
    pub fn take(&self) -> impl Iterator<Item = Cgroup> + '_ {
        self.created.try_iter()
    }
}

impl Drop for CgroupWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Watcher {
    inotify: Inotify,
    mount: PathBuf,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    api: Option<Arc<RuntimeApi>>,
}

impl Watcher {
    /// `root` and the directories below it, bounded in number and depth.
    fn watch_tree(&mut self, root: &Path) {
        let mut pending = vec![(root.to_path_buf(), 0)];
        while let Some((dir, depth)) = pending.pop() {
            if !self.watch(&dir) {
                return;
            }
            if depth < MAX_DEPTH {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            pending.push((entry.path(), depth + 1));
                        }
                    }
                }
            }
        }
    }

    /// False when no more may be watched.
    fn watch(&mut self, dir: &Path) -> bool {
        if self.dirs.len() >= MAX_WATCHES {
            return false;
        }
        let flags = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR;
        match self.inotify.add_watch(dir, flags) {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_path_buf());
                true
            }
            // Gone already: nothing to watch. The user's watch limit: the
            // walk names the rest.
            Err(nix::Error::ENOENT | nix::Error::ENOTDIR) => true,
            Err(_) => false,
        }
    }

    fn run(mut self, tx: &SyncSender<Cgroup>, stop: &AtomicBool, woken: &UnixStream) {
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(woken.as_fd(), PollFlags::POLLIN),
            ];
            if !matches!(poll(&mut fds, PollTimeout::from(POLL_MS)), Ok(n) if n > 0) {
                continue;
            }
            if fds[1].any().unwrap_or(false) {
                continue;
            }
            let Ok(events) = self.inotify.read_events() else {
                continue;
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.dirs.remove(&event.wd);
                    continue;
                }
                let is_dir_created = event.mask.contains(AddWatchFlags::IN_CREATE)
                    && event.mask.contains(AddWatchFlags::IN_ISDIR);
                let (Some(parent), Some(name)) = (self.dirs.get(&event.wd), event.name) else {
                    continue;
                };
                if !is_dir_created {
                    continue;
                }
                let dir = parent.join(name);
                // The id is the directory's inode: read it now, while it
                // exists.
                let Ok(meta) = std::fs::metadata(&dir) else {
                    continue;
                };
                let cgroup =
                    Cgroup::named(meta.ino(), Some(Arc::from(relative(&self.mount, &dir))));
                if let (Some(api), Some(container)) = (&self.api, &cgroup.workload.container) {
                    api.ask(container);
                }
                // Full: the walk names it when its records come.
                let _ = tx.try_send(cgroup);
                self.watch_tree(&dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory is named with its id as it appears, and the name stays
    /// after it is gone (a plain directory tree stands in for cgroupfs:
    /// inotify treats every filesystem's mkdir alike).
    #[test]
    fn a_new_directory_is_named_as_it_appears() {
        let root = std::env::temp_dir().join(format!("connbal-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("parent")).unwrap();
        let watch = CgroupWatch::start(root.clone(), std::slice::from_ref(&root), None).unwrap();
        let leaf = root.join("parent/short-lived");
        std::fs::create_dir(&leaf).unwrap();
        let id = std::fs::metadata(&leaf).unwrap().ino();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut named = Vec::new();
        while named.is_empty() && std::time::Instant::now() < deadline {
            named.extend(watch.take());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::remove_dir(&leaf).unwrap();
        let cgroup = named.first().expect("the new directory, named");
        assert_eq!(cgroup.id, id);
        assert_eq!(cgroup.path.as_deref(), Some("/parent/short-lived"));
        drop(watch);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
