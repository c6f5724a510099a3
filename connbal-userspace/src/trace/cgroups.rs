//! cgroup v2 for host mode: where the hierarchy is mounted, which
//! directory `--cgroup` means, and the path of a cgroup id (the inode of
//! its directory), for names a person recognises.

use crate::aggregator::Cgroup;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Directories walked at most, so a host with a runaway number of cgroups
/// costs bounded memory and time.
const MAX_CGROUPS: usize = 1 << 16;
const MAX_DEPTH: usize = 32;
/// An unknown id (a container just started) triggers a new walk; one that
/// a walk did not find waits this long before it may trigger another.
const RETRY_MISSING_AFTER: Duration = Duration::from_secs(1);
/// Ids remembered as not found, at most (then the oldest misses are
/// forgotten wholesale).
const MAX_MISSES: usize = 1024;
/// A name outlives its cgroup this long, for the records still in flight
/// from it (clients already counted keep their names regardless).
const FORGET_GONE_AFTER: Duration = Duration::from_mins(5);
/// The longest a live trace goes without walking the subtree.
const REWALK_AFTER: Duration = Duration::from_mins(1);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    #[error("no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo); host mode needs one (Linux 4.5+, cgroup2)")]
    NotMounted,
    #[error("--cgroup {arg}: no such cgroup under {mount} (give the directory, or the path /proc/PID/cgroup shows)")]
    NoSuchCgroup { arg: String, mount: String },
    #[error("--cgroup {inner} is inside --cgroup {outer}: its sockets would be counted twice; give only {outer}")]
    Nested { inner: String, outer: String },
}

/// The mount point of the cgroup v2 hierarchy: `/sys/fs/cgroup` on current
/// distributions, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn find_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    mount_in(&text).ok_or(CgroupError::NotMounted)
}

/// The cgroup2 mount point in mountinfo text: the fifth field, on a line
/// whose filesystem type (after " - ") is cgroup2.
fn mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        (rest.split_whitespace().next()? == "cgroup2")
            .then(|| fields.split_whitespace().nth(4).map(unescape))
            .flatten()
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(code) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// The directory `--cgroup ARG` names: a directory under the mount, or a
/// path relative to it as `/proc/PID/cgroup` shows it (`/system.slice/x`).
pub fn resolve(mount: &Path, arg: &Path) -> Result<PathBuf, CgroupError> {
    let under_mount = arg.starts_with(mount) && arg.is_dir();
    let candidate = if under_mount {
        arg.to_path_buf()
    } else {
        mount.join(arg.strip_prefix("/").unwrap_or(arg))
    };
    if candidate.is_dir() {
        Ok(candidate)
    } else {
        Err(CgroupError::NoSuchCgroup {
            arg: arg.display().to_string(),
            mount: mount.display().to_string(),
        })
    }
}

/// The directories of every `--cgroup`, none inside another: the programs
/// of both would run on its sockets, and each record would count twice.
pub fn resolve_all(mount: &Path, args: &[PathBuf]) -> Result<Vec<PathBuf>, CgroupError> {
    let dirs = args
        .iter()
        .map(|arg| resolve(mount, arg))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, inner) in dirs.iter().enumerate() {
        for (j, outer) in dirs.iter().enumerate() {
            if i != j && inner.starts_with(outer) {
                return Err(CgroupError::Nested {
                    inner: relative(mount, inner),
                    outer: relative(mount, outer),
                });
            }
        }
    }
    Ok(dirs)
}

/// The path of a cgroup relative to the mount, as `/proc/PID/cgroup`
/// shows it.
pub fn relative(mount: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(mount).unwrap_or(dir);
    format!("/{}", rel.display())
}

/// Who a record's cgroup id is: attribution behind one small trait
/// (RustNet's `ProcessLookup` is the model), so that an enrichment that
/// needs I/O (a container runtime's API, the kubelet) is another
/// implementation, cached per cgroup id outside the pure aggregator.
/// `cgroup` runs on the event path: it must answer from memory, or after
/// at most a bounded walk of the cgroup tree.
pub trait CgroupLookup {
    fn cgroup(&mut self, id: u64) -> Cgroup;
}

/// Cgroup ids to paths under the traced subtree, learnt by walking it; each
/// cgroup is named (its workload read from the path) once, when first
/// found. Names of cgroups gone for `FORGET_GONE_AFTER` are forgotten, and
/// sooner when the table is full, so a long-running agent names every live
/// cgroup; what still does not fit is refused and counted.
pub struct CgroupNames {
    mount: PathBuf,
    scopes: Vec<PathBuf>,
    cap: usize,
    named: HashMap<u64, Named>,
    /// Ids a walk did not find, and when.
    missing: HashMap<u64, Instant>,
    walks: u64,
    last_walk: Instant,
    pub forgotten: u64,
    pub refused: u64,
    /// Ids forgotten since the trace last took them, to forget their
    /// clients too.
    forgotten_ids: Vec<u64>,
    /// Where containers get their runtime's names, when there is one.
    runtime_api: Option<Arc<super::runtimes::RuntimeApi>>,
    /// Cgroups named as they were created, when watching works.
    watch: Option<super::cgroup_watch::CgroupWatch>,
}

struct Named {
    cgroup: Cgroup,
    /// The last walk that found its directory.
    found_by: u64,
    /// When a walk first missed it.
    gone_since: Option<Instant>,
    /// Whether its container was queued for its runtime's names: on the
    /// first record, so containers that never resolve or connect cost no
    /// request.
    asked: bool,
}

impl CgroupNames {
    pub fn new(mount: PathBuf, scopes: Vec<PathBuf>) -> Self {
        Self::with_cap(mount, scopes, MAX_CGROUPS)
    }

    fn with_cap(mount: PathBuf, scopes: Vec<PathBuf>, cap: usize) -> Self {
        let mut names = Self {
            mount,
            scopes,
            cap,
            named: HashMap::new(),
            missing: HashMap::new(),
            walks: 0,
            last_walk: Instant::now(),
            forgotten: 0,
            refused: 0,
            forgotten_ids: Vec::new(),
            runtime_api: None,
            watch: None,
        };
        names.walk();
        names
    }

    /// The cgroup with id `id`, its path if known. An id not seen before
    /// walks the subtree again (a cgroup created since); one that was not
    /// found waits a second before it may walk again, so a flood of odd ids
    /// costs at most a walk per id per second.
    pub fn lookup(&mut self, id: u64) -> Cgroup {
        if !self.named.contains_key(&id) {
            self.take_created();
        }
        if !self.named.contains_key(&id) {
            let recently_missed = self
                .missing
                .get(&id)
                .is_some_and(|at| at.elapsed() < RETRY_MISSING_AFTER);
            if !recently_missed {
                self.walk();
                if !self.named.contains_key(&id) {
                    if self.missing.len() >= MAX_MISSES {
                        self.missing.clear();
                    }
                    self.missing.insert(id, Instant::now());
                }
            }
        }
        let Some(named) = self.named.get_mut(&id) else {
            return Cgroup::named(id, None);
        };
        if !named.asked {
            named.asked = true;
            if let (Some(api), Some(container)) =
                (&mut self.runtime_api, &named.cgroup.workload.container)
            {
                api.ask(container);
            }
        }
        named.cgroup.clone()
    }

    /// Containers get their runtime's names through `api`.
    pub fn name_containers_with(&mut self, api: super::runtimes::RuntimeApi) {
        self.runtime_api = Some(Arc::new(api));
    }

    /// Names cgroups as they are created, from now on (`cgroup_watch`).
    pub fn watch_creations(&mut self) -> Result<(), super::cgroup_watch::WatchError> {
        let watch = super::cgroup_watch::CgroupWatch::start(
            self.mount.clone(),
            &self.scopes,
            self.runtime_api.clone(),
        )?;
        self.watch = Some(watch);
        Ok(())
    }

    /// The cgroups the watcher named since last time, into the table
    /// (their containers were asked about at creation).
    fn take_created(&mut self) {
        let Some(watch) = &self.watch else {
            return;
        };
        for cgroup in watch.take() {
            if self.named.len() >= self.cap || self.named.contains_key(&cgroup.id) {
                continue;
            }
            self.named.insert(
                cgroup.id,
                Named {
                    cgroup,
                    found_by: self.walks,
                    gone_since: None,
                    asked: true,
                },
            );
        }
    }

    /// What asking the runtimes for names ran into.
    pub fn runtime_notes(&self) -> Vec<String> {
        self.runtime_api
            .as_ref()
            .map(|api| api.notes())
            .unwrap_or_default()
    }

    /// A walk when none ran for `REWALK_AFTER`: without new cgroups no
    /// lookup walks, and cgroups that went would never be noticed. Returns
    /// the ids forgotten since the last call, whose clients the trace then
    /// forgets too.
    pub fn refresh(&mut self) -> Vec<u64> {
        self.take_created();
        if self.last_walk.elapsed() >= REWALK_AFTER {
            self.walk();
        }
        std::mem::take(&mut self.forgotten_ids)
    }

    /// Every directory of the subtree (bounded), then the table brought up
    /// to date: found ones marked, gone ones forgotten after the grace
    /// time, new ones named while there is room (made by forgetting every
    /// gone one early, when needed).
    fn walk(&mut self) {
        self.walks += 1;
        let walk = self.walks;
        let now = Instant::now();
        self.last_walk = now;
        let mut new = Vec::new();
        for (id, dir) in self.directories() {
            match self.named.get_mut(&id) {
                Some(named) => {
                    named.found_by = walk;
                    named.gone_since = None;
                }
                None => new.push((id, dir)),
            }
        }
        let before = self.named.len();
        let forgotten_ids = &mut self.forgotten_ids;
        self.named.retain(|id, named| {
            if named.found_by == walk {
                return true;
            }
            let since = *named.gone_since.get_or_insert(now);
            let keep = now.duration_since(since) < FORGET_GONE_AFTER;
            if !keep {
                forgotten_ids.push(*id);
            }
            keep
        });
        self.forgotten += (before - self.named.len()) as u64;
        for (id, dir) in new {
            if self.named.len() >= self.cap {
                let full = self.named.len();
                let forgotten_ids = &mut self.forgotten_ids;
                self.named.retain(|id, named| {
                    let keep = named.found_by == walk;
                    if !keep {
                        forgotten_ids.push(*id);
                    }
                    keep
                });
                self.forgotten += (full - self.named.len()) as u64;
            }
            if self.named.len() >= self.cap {
                self.refused += 1;
                continue;
            }
            let path = Arc::from(relative(&self.mount, &dir));
            self.named.insert(
                id,
                Named {
                    cgroup: Cgroup::named(id, Some(path)),
                    found_by: walk,
                    gone_since: None,
                    asked: false,
                },
            );
        }
    }

    /// The subtrees' directories and their ids, at most `MAX_CGROUPS`.
    fn directories(&self) -> Vec<(u64, PathBuf)> {
        let mut found = Vec::new();
        let mut pending: Vec<(PathBuf, usize)> =
            self.scopes.iter().map(|scope| (scope.clone(), 0)).collect();
        while let Some((dir, depth)) = pending.pop() {
            if found.len() >= MAX_CGROUPS {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            if depth < MAX_DEPTH {
                if let Ok(entries) = fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            pending.push((entry.path(), depth + 1));
                        }
                    }
                }
            }
            found.push((meta.ino(), dir));
        }
        found
    }
}

impl CgroupLookup for CgroupNames {
    fn cgroup(&mut self, id: u64) -> Cgroup {
        self.lookup(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_comes_from_mountinfo() {
        let hybrid = "25 24 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(mount_in(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(mount_in("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
        let spaced = "30 23 0:26 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(mount_in(spaced), Some(PathBuf::from("/mnt/cg two")));
    }

    #[test]
    fn relative_paths_are_as_proc_shows_them() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(relative(mount, Path::new("/sys/fs/cgroup/a/b")), "/a/b");
        assert_eq!(relative(mount, mount), "/");
    }

    #[test]
    fn a_cgroup_is_named_once_with_its_workload_and_keeps_its_name() {
        // Plain directories stand in for the cgroup tree: naming reads only
        // their inode numbers and paths.
        let mount = std::env::temp_dir().join(format!("connbal-names-{}", std::process::id()));
        let id = "ab".repeat(32);
        let container = mount.join("docker").join(&id);
        fs::create_dir_all(&container).unwrap();
        let ino = fs::metadata(&container).unwrap().ino();
        let mut names = CgroupNames::new(mount.clone(), vec![mount.clone()]);
        let first = names.cgroup(ino);
        fs::remove_dir_all(&mount).unwrap();
        let again = names.cgroup(ino);
        assert_eq!(
            first.path.as_deref(),
            Some(format!("/docker/{id}").as_str())
        );
        let container = first
            .workload
            .container
            .as_ref()
            .expect("a docker container");
        assert_eq!(
            (container.runtime, container.id.as_str()),
            ("docker", id.as_str())
        );
        // The same name, from the cache, after the directory is gone.
        assert!(Arc::ptr_eq(&first.workload, &again.workload));
        assert_eq!(again.path, first.path);
    }

    #[test]
    fn a_full_table_makes_room_by_forgetting_gone_cgroups_and_counts_what_it_refuses() {
        // A long-running host: more cgroups come and go than the table
        // holds. The live ones keep getting names; gone ones make room.
        let mount = std::env::temp_dir().join(format!("connbal-churn-{}", std::process::id()));
        let make = |name: &str| {
            let dir = mount.join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::metadata(&dir).unwrap().ino()
        };
        // The table holds the root and three more.
        let first: Vec<u64> = ["a", "b", "c"].iter().map(|n| make(n)).collect();
        let mut names = CgroupNames::with_cap(mount.clone(), vec![mount.clone()], 4);
        assert!(first.iter().all(|&id| names.cgroup(id).path.is_some()));
        // Made before the others go, so that no inode number is reused
        // (cgroup2 ids never are; a plain file system's may be).
        let later: Vec<u64> = ["d", "e", "f"].iter().map(|n| make(n)).collect();
        for gone in ["a", "b", "c"] {
            fs::remove_dir(mount.join(gone)).unwrap();
        }
        for &id in &later {
            assert!(names.cgroup(id).path.is_some(), "a live cgroup is named");
        }
        assert_eq!(names.forgotten, 3);
        assert_eq!(names.refused, 0);
        // Their ids go to the trace once, for their clients to be
        // forgotten too.
        let mut forgotten = names.refresh();
        forgotten.sort_unstable();
        let mut gone = first.clone();
        gone.sort_unstable();
        assert_eq!(forgotten, gone);
        assert!(names.refresh().is_empty());
        // Four live ones (the root, d, e, f) fill it: a fifth is refused,
        // counted, and shown by id.
        let fifth = make("g");
        assert_eq!(names.cgroup(fifth).path, None);
        assert_eq!(names.refused, 1);
        fs::remove_dir_all(&mount).unwrap();
    }
}
