//! Cgroups the host-mode tests create, and only those: connbal's cgroup
//! programs are attached to one of these, never to the root of the
//! hierarchy (these machines are shared). `Drop` moves every process out
//! (to the parent of the test root), kills what is left, and removes the
//! directories, also when a test panics.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn mount() -> Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    for line in text.lines() {
        let Some((fields, rest)) = line.split_once(" - ") else {
            continue;
        };
        if rest.split_whitespace().next() == Some("cgroup2") {
            if let Some(point) = fields.split_whitespace().nth(4) {
                return Ok(PathBuf::from(point));
            }
        }
    }
    bail!("no cgroup2 hierarchy mounted")
}

pub struct TestCgroup {
    /// The test's own root, directly under the mount.
    pub root: PathBuf,
    pub mount: PathBuf,
    children: Vec<PathBuf>,
}

impl TestCgroup {
    /// A new directory named after the test and this process under the
    /// cgroup2 mount; stale ones from dead test processes are removed first.
    pub fn new(tag: &str) -> Result<Self> {
        let mount = mount()?;
        remove_stale(&mount);
        let root = mount.join(format!("connbal-test-{}-{tag}", std::process::id()));
        fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root,
            mount,
            children: Vec::new(),
        })
    }

    /// A child cgroup `relative` (which may have several levels, such as a
    /// docker-shaped `system.slice/docker-<id>.scope`).
    pub fn child(&mut self, relative: &str) -> Result<PathBuf> {
        let path = self.root.join(relative);
        let mut at = self.root.clone();
        for part in Path::new(relative).components() {
            at.push(part);
            if !at.exists() {
                fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
                self.children.push(at.clone());
            }
        }
        Ok(path)
    }

    /// The test root as /proc/PID/cgroup shows it (`--cgroup` accepts it).
    pub fn relative_root(&self) -> String {
        format!(
            "/{}",
            self.root
                .strip_prefix(&self.mount)
                .unwrap_or(&self.root)
                .display()
        )
    }

    /// `program ARGS` run inside `cgroup`: a shell moves itself into the
    /// cgroup, then execs the program, so every process it starts is in it
    /// from its first instruction.
    pub fn command_in(cgroup: &Path, program: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"echo $$ > "$0/cgroup.procs" && exec "$@""#,
            &cgroup.display().to_string(),
            program,
        ]);
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let parent = self.root.parent().map(Path::to_path_buf);
        for dir in self
            .children
            .iter()
            .rev()
            .chain(std::iter::once(&self.root))
        {
            while Instant::now() < deadline {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                if procs.trim().is_empty() {
                    break;
                }
                for pid in procs.lines() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid.trim().parse().unwrap_or(0)),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    if let Some(parent) = &parent {
                        let _ = fs::write(parent.join("cgroup.procs"), pid);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Removes test cgroups whose creating process is gone.
fn remove_stale(mount: &Path) {
    let Ok(entries) = fs::read_dir(mount) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("connbal-test-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_tree(&entry.path());
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
