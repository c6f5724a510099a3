//! The kernel program's counters, read through shared memory.
//!
//! `COUNTERS` is a BPF_F_MMAPABLE array (Linux 5.5+), mapped read-only
//! here, so reading it needs no bpf() call, and therefore no capability
//! once connbal has dropped them.
#![expect(
    unsafe_code,
    reason = "mmap of the kernel's counter array and loads from shared memory"
)]

use aya::maps::MapData;
use connbal_common::record::counter::SLOTS_PER_CPU;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct MappedCounters {
    base: NonNull<AtomicU64>,
    entries: usize,
    bytes: NonZeroUsize,
    cpus: usize,
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
}

impl MappedCounters {
    pub fn new(map: MapData, cpus: usize) -> nix::Result<Self> {
        let entries = cpus * SLOTS_PER_CPU as usize;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let bytes = NonZeroUsize::new((entries * 8).next_multiple_of(page))
            .ok_or(nix::errno::Errno::EINVAL)?;
        // SAFETY: maps the value area of a BPF_F_MMAPABLE array read-only
        // and shared, at offset 0, no longer than the array (rounded to a
        // page, as the kernel does); the fd is valid for the call and the
        // mapping holds its own reference to the map.
        let base = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                map.fd().as_fd(),
                0,
            )
        }?;
        Ok(Self {
            base: base.cast(),
            entries,
            bytes,
            cpus,
            _map: map,
        })
    }

    /// The sum over CPUs of one counter slot.
    pub fn sum(&self, slot: u32) -> u64 {
        (0..self.cpus)
            .map(|cpu| self.load(cpu * SLOTS_PER_CPU as usize + slot as usize))
            .sum()
    }

    fn load(&self, index: usize) -> u64 {
        assert!(index < self.entries);
        // SAFETY: in bounds of the mapping (checked above); array values are
        // naturally aligned u64s, which AtomicU64 matches in size and
        // alignment; the kernel writes them concurrently, hence an atomic
        // load rather than a plain read.
        unsafe { (*self.base.as_ptr().add(index)).load(Ordering::Relaxed) }
    }
}

impl Drop for MappedCounters {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once; no reference
        // into it outlives `self`.
        let _ = unsafe { munmap(self.base.cast(), self.bytes.get()) };
    }
}
