//! Host mode: an app is a process, not a thread. The kernel program can
//! only read the calling thread's name (`bpf_get_current_comm`), and a JVM,
//! a Go program or a thread pool names its threads ("Thread-3",
//! "C2 CompilerThre", "pool-1-thread-2"): by that name one app is split
//! into as many clients as it has threads. The process's name is its
//! main thread's, which `/proc/TGID/comm` gives; read once per process and
//! remembered briefly, so a record costs a hash lookup.
//!
//! The kernel program reads the thread-group leader's name itself where
//! the kernel has BTF (the loader hands it `task_struct`'s offsets, see
//! `btf`), which also names a process gone before its records are read;
//! this is the fallback without BTF, and catches a process that renamed
//! its main thread after the socket was named (its last connect, or an
//! unconnected UDP socket's first DNS datagram).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Processes remembered at most; past it the table starts afresh (each
/// live process costs one more read).
const MAX_PROCESSES: usize = 1 << 16;
/// A name is read again after this long: a process id reused by a new
/// program, or a process that renamed its main thread.
const REREAD_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct ProcessNames {
    /// `/proc` shows the kernel's process ids (the tracer is in the
    /// initial pid namespace); elsewhere it would name other processes, so
    /// the thread's own name is kept.
    enabled: bool,
    names: HashMap<u32, ([u8; 16], Instant), foldhash::fast::RandomState>,
    /// Names read from /proc (each a file read).
    pub reads: u64,
}

impl ProcessNames {
    pub fn new() -> Self {
        Self {
            enabled: in_initial_pid_namespace(),
            names: HashMap::default(),
            reads: 0,
        }
    }

    /// The name of process `tgid`, whose thread named `thread` made the
    /// call; the thread's name when the process is gone (a short-lived
    /// one, exited before its records were read) or cannot be read.
    pub fn command(&mut self, tgid: u32, thread: [u8; 16], now: Instant) -> [u8; 16] {
        if !self.enabled {
            return thread;
        }
        if let Some(&(name, read)) = self.names.get(&tgid) {
            if now.duration_since(read) < REREAD_AFTER {
                return name;
            }
        }
        if self.names.len() >= MAX_PROCESSES {
            self.names.clear();
        }
        self.reads += 1;
        let name = read_comm(tgid).unwrap_or(thread);
        self.names.insert(tgid, (name, now));
        name
    }
}

/// `/proc/TGID/comm`, NUL-padded as the kernel's `comm`.
fn read_comm(tgid: u32) -> Option<[u8; 16]> {
    let text = std::fs::read(format!("/proc/{tgid}/comm")).ok()?;
    let text = text.strip_suffix(b"\n").unwrap_or(&text);
    let mut comm = [0u8; 16];
    let len = text.len().min(15);
    comm[..len].copy_from_slice(&text[..len]);
    Some(comm)
}

/// Whether this process sees the kernel's own process ids: `NSpid` in
/// /proc/self/status lists one id per pid namespace it is in.
fn in_initial_pid_namespace() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|ids| ids.split_whitespace().count() == 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_named_by_its_process() {
        let mut names = ProcessNames::new();
        assert!(names.enabled, "the tests run in the initial pid namespace");
        let me = std::process::id();
        let mut thread = [0u8; 16];
        thread[..8].copy_from_slice(b"Thread-3");
        let now = Instant::now();
        let name = names.command(me, thread, now);
        let expected = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&name).trim_end_matches('\0'),
            expected.trim_end()
        );
        // Remembered: no second read.
        names.command(me, thread, now);
        assert_eq!(names.reads, 1);
        // A process gone keeps its thread's name.
        assert_eq!(names.command(u32::MAX, thread, now), thread);
    }
}
