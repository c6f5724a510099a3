//! Reading the kernel's own structures, for the programs that must (the
//! open-socket iterator, the NAT tracepoint): no CO-RE in Rust eBPF, so
//! each offset is a global the loader sets from the running kernel's BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// An offset global, read volatile: passed by value, the compiler would
/// fold the 0 it was built with.
#[inline(always)]
pub fn offset(global: &u32) -> usize {
    // SAFETY: a plain read of a static the loader may have rewritten.
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// `T` at `at` bytes from `base`, through the probe helper.
#[inline(always)]
pub fn read<T>(base: *const u8, at: usize) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(base.add(at).cast::<T>()).ok() }
}
