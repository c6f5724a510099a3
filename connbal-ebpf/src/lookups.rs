//! Host mode: `getaddrinfo` in libc, where lookups start. With
//! nss-resolve (glibc asks systemd-resolved over Varlink) or nscd, a
//! lookup never becomes a DNS packet the socket programs could see; here
//! it is seen whatever carried it: the name asked and the addresses given,
//! credited to the calling process.
//!
//! A uprobe on entry remembers the call's arguments per thread; a
//! uretprobe on return walks the `addrinfo` list the call built (bounded)
//! and emits one `KIND_LOOKUP` record. Uprobes fire in every process
//! mapping the probed libc, so the entry probe first asks whether the
//! caller is in a traced cgroup and returns at once when not.

use crate::{bump, leader_comm_into, open_sockets, submit_flags, EVENTS};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task,
            bpf_probe_read_user as bpf_probe_read_user_raw, bpf_probe_read_user_str,
        },
    },
    macros::{map, uprobe, uretprobe},
    maps::{CgroupArray, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use connbal_common::record::{
    counter, LookupRecord, RecordHeader, BIT_PROCESS, BIT_SOCKET, KIND_LOOKUP, LOOKUP_ADDRESSES,
    LOOKUP_NAME_LEN,
};
use core::ffi::c_void;

/// The cgroups host mode traces, set by the loader (their directories'
/// fds) from slot 0 on; an empty slot answers no.
#[map]
static TRACED_CGROUPS: CgroupArray = CgroupArray::with_max_entries(TRACED_CGROUPS_MAX, 0);
const TRACED_CGROUPS_MAX: u32 = 8;

/// A call in progress, by thread (`pid_tgid`): its arguments and start.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingLookup {
    node: u64,
    res: u64,
    started_ns: u64,
}

/// LRU: a thread that never returns (killed inside the call) leaves an
/// entry that newer calls push out.
#[map]
static PENDING_LOOKUPS: LruHashMap<u64, PendingLookup> = LruHashMap::with_max_entries(1 << 12, 0);

/// `struct addrinfo` on LP64 (glibc and musl alike): `ai_family` at 4,
/// `ai_addr` at 24, `ai_next` at 40.
const AI_FAMILY: u64 = 4;
const AI_ADDR: u64 = 24;
const AI_NEXT: u64 = 40;
/// `sin_addr` and `sin6_addr` within their sockaddr.
const SIN_ADDR: u64 = 4;
const SIN6_ADDR: u64 = 8;
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
/// List entries walked, at most: glibc gives each address once per socket
/// type (three without a hint).
const MAX_ENTRIES: usize = 32;

/// `int getaddrinfo(const char *node, const char *service, const struct
/// addrinfo *hints, struct addrinfo **res)`.
#[uprobe]
pub fn connbal_getaddrinfo(ctx: ProbeContext) -> u32 {
    let _ = lookup_started(&ctx);
    0
}

#[uretprobe]
pub fn connbal_getaddrinfo_return(ctx: RetProbeContext) -> u32 {
    let _ = lookup_returned(&ctx);
    0
}

#[inline(always)]
fn lookup_started(ctx: &ProbeContext) -> Option<()> {
    let node: u64 = ctx.arg(0)?;
    let res: u64 = ctx.arg(3)?;
    if node == 0 || res == 0 || !traced() {
        return None;
    }
    let pending = PendingLookup {
        node,
        res,
        // SAFETY: helper call without arguments.
        started_ns: unsafe { bpf_ktime_get_ns() },
    };
    PENDING_LOOKUPS
        .insert(bpf_get_current_pid_tgid(), pending, 0)
        .ok()
}

/// Whether the caller is in one of the traced cgroups' subtrees.
#[inline(always)]
fn traced() -> bool {
    for index in 0..TRACED_CGROUPS_MAX {
        if TRACED_CGROUPS.current_task_under_cgroup(index) == Ok(true) {
            return true;
        }
    }
    false
}

#[inline(always)]
fn lookup_returned(ctx: &RetProbeContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once; the entry is removed right after.
    let pending = unsafe { PENDING_LOOKUPS.get(id) }.copied()?;
    let _ = PENDING_LOOKUPS.remove(id);
    let returned: i32 = ctx.ret();
    if returned != 0 {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<LookupRecord>(0) else {
        bump(counter::RECORDS_LOST);
        return None;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` is the reserved slot, written field by field; the
    // user-memory reads go through helpers that fail cleanly.
    let filled = unsafe { fill(record, &pending, id) };
    if filled {
        entry.submit(submit_flags());
        bump(counter::RECORDS_EMITTED);
    } else {
        entry.discard(0);
    }
    Some(())
}

/// Writes the whole record; false when the name cannot be read or no
/// address came back.
#[inline(always)]
unsafe fn fill(record: *mut LookupRecord, pending: &PendingLookup, pid_tgid: u64) -> bool {
    let name = core::ptr::addr_of_mut!((*record).name);
    let read = bpf_probe_read_user_str(
        name.cast(),
        LOOKUP_NAME_LEN as u32,
        pending.node as *const c_void,
    );
    if read <= 1 {
        return false;
    }
    let count = addresses(record, pending.res);
    if count == 0 {
        return false;
    }
    (*record).count = count as u8;
    (*record).reserved = [0; 7];
    (*record).started_ns = pending.started_ns;
    let task = bpf_get_current_task() as *const u8;
    let mut header = RecordHeader {
        kind: KIND_LOOKUP,
        bits: BIT_SOCKET | BIT_PROCESS,
        ktime_ns: bpf_ktime_get_ns(),
        cgroup_id: bpf_get_current_cgroup_id(),
        netns_cookie: open_sockets::task_netns_cookie(task),
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        ..RecordHeader::default()
    };
    leader_comm_into(task, &mut header.comm);
    core::ptr::addr_of_mut!((*record).header).write(header);
    true
}

/// Copies the list's IPv4 and IPv6 addresses into the record, each once
/// in a row; returns how many.
///
/// The count lives in the record, not in a register: read back from
/// memory it is a number the verifier does not track exactly, so the
/// states of each turn of the loop fold into a few instead of one per
/// count so far (which ran past the verifier's limit).
#[inline(always)]
unsafe fn addresses(record: *mut LookupRecord, res: u64) -> usize {
    (*record).count = 0;
    let Ok(mut entry) = bpf_probe_read_user(res as *const u64) else {
        return 0;
    };
    for _ in 0..MAX_ENTRIES {
        let count = usize::from(core::ptr::read_volatile(core::ptr::addr_of!(
            (*record).count
        )));
        if entry == 0 || count >= LOOKUP_ADDRESSES {
            break;
        }
        let family = bpf_probe_read_user((entry + AI_FAMILY) as *const i32).unwrap_or(0);
        let sockaddr = bpf_probe_read_user((entry + AI_ADDR) as *const u64).unwrap_or(0);
        entry = bpf_probe_read_user((entry + AI_NEXT) as *const u64).unwrap_or(0);
        let (version, at, len) = match family {
            AF_INET => (4u8, SIN_ADDR, 4u32),
            AF_INET6 => (6u8, SIN6_ADDR, 16u32),
            _ => continue,
        };
        let slot = count & (LOOKUP_ADDRESSES - 1);
        let address = core::ptr::addr_of_mut!((*record).addresses[slot]);
        *address = [0; 16];
        if sockaddr == 0
            || bpf_probe_read_user_raw(address.cast(), len, (sockaddr + at) as *const c_void) != 0
        {
            continue;
        }
        let previous = count.wrapping_sub(1) & (LOOKUP_ADDRESSES - 1);
        let repeated = count > 0
            && (*record).versions[previous] == version
            && (*record).addresses[previous] == *address;
        if !repeated {
            (*record).versions[slot] = version;
            (*record).count = (count + 1) as u8;
        }
    }
    usize::from((*record).count)
}
