//! Host mode, once at start: the owners of sockets opened before the trace.
//!
//! The connect hooks name a socket's process when it connects, and the
//! egress program names a UDP socket from the task sending its DNS. A
//! daemon that connected its socket to the resolver before connbal
//! started (nginx, HAProxy, c-ares keep one for their lifetime) passes no
//! connect hook; over TCP, or with `-a` for any pool of connections, its
//! packets may leave in softirq context, where the current task is anyone,
//! so its lookups and flows would belong to no process. This BPF iterator walks every
//! task's open files once (the kernel skips threads sharing their leader's
//! file table), the way Inspektor Gadget's socket enricher does, and
//! records the owner of each socket that matters.
//!
//! The packet programs know a socket by its cookie, and the iterator
//! cannot ask for one: the kernel types the `struct sock` reached from a
//! file as untrusted, which the cookie helper refuses. So the walk records
//! each socket by what a packet of it shows, its far end (cgroup, remote
//! address, own port, protocol), and the packet programs, missing an
//! owner by cookie, ask this table once and then remember the answer by
//! cookie. Only records pay for that, never other packets.
//!
//! No CO-RE in Rust eBPF: the offsets come from the running kernel's BTF,
//! set by the loader; left 0, the iterator records nothing.

use crate::kernel::{offset, read, AF_INET, AF_INET6};
use crate::{leader_comm, SOCKETS, SOCKETS_AT_START_MAX};
use aya_ebpf::{
    bindings::{file, seq_file},
    helpers::generated::{bpf_seq_write, bpf_sock_from_file},
    macros::map,
    maps::LruHashMap,
};
use connbal_common::{record::SocketOwner, DNS_PORT};

/// `struct socket.sk`.
#[no_mangle]
pub(crate) static SOCKET_SK_OFFSET: u32 = 0;
/// `struct sock_common`'s family, state, own port, remote port and
/// addresses, and network namespace (`skc_net`, whose first word is the
/// `struct net *`).
#[no_mangle]
pub(crate) static SK_FAMILY_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static SK_STATE_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static SK_NUM_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static SK_DPORT_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static SK_DADDR_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static SK_V6_DADDR_OFFSET: u32 = 0;
#[no_mangle]
static SK_NET_OFFSET: u32 = 0;
/// `struct sock.sk_protocol`.
#[no_mangle]
pub(crate) static SK_PROTOCOL_OFFSET: u32 = 0;
/// The socket's cgroup, as `bpf_skb_cgroup_id` reads it: `struct
/// sock.sk_cgrp_data` plus `sock_cgroup_data.cgroup`, then
/// `cgroup.kn`, then `kernfs_node.id`.
#[no_mangle]
static SK_CGROUP_OFFSET: u32 = 0;
#[no_mangle]
static CGROUP_KN_OFFSET: u32 = 0;
#[no_mangle]
static KN_ID_OFFSET: u32 = 0;
/// `struct net.net_cookie`.
#[no_mangle]
static NET_COOKIE_OFFSET: u32 = 0;
/// `struct task_struct.nsproxy` and `struct nsproxy.net_ns`: the network
/// namespace of a task.
#[no_mangle]
static TASK_NSPROXY_OFFSET: u32 = 0;
#[no_mangle]
static NSPROXY_NET_OFFSET: u32 = 0;
/// `struct task_struct.tgid` and `.pid`.
#[no_mangle]
static TASK_TGID_OFFSET: u32 = 0;
#[no_mangle]
static TASK_PID_OFFSET: u32 = 0;

/// A socket as its packets show it: what the walk keys on and a packet
/// without a known owner asks for.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Far {
    pub cgroup_id: u64,
    /// Network byte order, IPv4 in the first 4 bytes.
    pub remote: [u8; 16],
    pub local_port: u16,
    pub protocol: u8,
    pub version: u8,
    pub reserved: [u8; 4],
}

/// Sockets found open at start, by far end. LRU: with `--all-tcp` on a
/// host with more open connections than this, the oldest entries go, and
/// those sockets are named when they next connect or send to an address,
/// as before.
#[map]
static OPEN_SOCKETS: LruHashMap<Far, SocketOwner> =
    LruHashMap::with_max_entries(SOCKETS_AT_START_MAX, 0);

/// A socket's own port, protocol and IP version in one word, for
/// `adopt`'s five-register call.
#[inline(always)]
pub fn far_key(local_port: u16, protocol: u8, version: u8) -> u32 {
    u32::from(local_port) << 16 | u32::from(protocol) << 8 | u32::from(version)
}

/// Gives the socket `cookie` the owner the walk found for a socket with
/// this far end, if any: whether it did. Not inlined, so that its key
/// takes a stack frame of its own rather than the packet programs'
/// (which their DNS records nearly fill).
#[inline(never)]
pub fn adopt(cookie: u64, cgroup_id: u64, remote: &[u8; 16], far: u32) -> bool {
    let key = Far {
        cgroup_id,
        remote: *remote,
        local_port: (far >> 16) as u16,
        protocol: (far >> 8) as u8,
        version: far as u8,
        reserved: [0; 4],
    };
    // SAFETY: a lookup in our own map; the value goes straight into the
    // other.
    match unsafe { OPEN_SOCKETS.get(key) } {
        Some(owner) => SOCKETS.insert(cookie, owner, 0).is_ok(),
        None => false,
    }
}

/// The cookie of `task`'s network namespace; 0 when the offsets are
/// unknown or a read fails (the record then names no namespace, as a
/// record without a process does).
#[inline(always)]
pub fn task_netns_cookie(task: *const u8) -> u64 {
    let nsproxy_at = offset(&TASK_NSPROXY_OFFSET);
    if task.is_null() || nsproxy_at == 0 {
        return 0;
    }
    read::<*const u8>(task, nsproxy_at)
        .filter(|nsproxy| !nsproxy.is_null())
        .and_then(|nsproxy| read::<*const u8>(nsproxy, offset(&NSPROXY_NET_OFFSET)))
        .filter(|net| !net.is_null())
        .and_then(|net| read::<u64>(net, offset(&NET_COOKIE_OFFSET)))
        .unwrap_or(0)
}

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;

/// The kernel's `struct bpf_iter_meta`, of which only the output is used.
#[repr(C)]
pub struct IterMeta {
    pub seq: *mut seq_file,
    session_id: u64,
    seq_num: u64,
}

/// The kernel's `struct bpf_iter__task_file`, the iterator's context.
#[repr(C)]
pub struct TaskFile {
    pub meta: *mut IterMeta,
    pub task: *const u8,
    pub fd: u32,
    pub file: *mut file,
}

/// Writes one byte per recorded socket to the iterator's output, so the
/// loader can say how many it found.
#[no_mangle]
#[link_section = "iter/task_file"]
pub extern "C" fn connbal_open_sockets(ctx: *mut TaskFile) -> i32 {
    // SAFETY: the kernel hands an iterator its context; every pointer in it
    // is checked for null before use.
    unsafe {
        let (meta, task, file) = ((*ctx).meta, (*ctx).task, (*ctx).file);
        if meta.is_null() || task.is_null() || file.is_null() {
            return 0;
        }
        if record_owner(task, file).is_some() {
            let seq: *mut seq_file = (*meta).seq;
            let one = 1u8;
            let _ = bpf_seq_write(seq, core::ptr::addr_of!(one).cast(), 1);
        }
    }
    0
}

/// The socket behind `file`, if it is one that matters, recorded with
/// `task` as its owner: one connected to port 53 (any protocol), and with
/// `--all-tcp` every TCP socket connecting or connected, whose flows are
/// seen midstream.
#[inline(always)]
unsafe fn record_owner(task: *const u8, file: *mut file) -> Option<()> {
    let sk_at = offset(&SOCKET_SK_OFFSET);
    if sk_at == 0 {
        return None;
    }
    let socket = bpf_sock_from_file(file).cast::<u8>().cast_const();
    if socket.is_null() {
        return None;
    }
    let sk: *const u8 = read(socket, sk_at)?;
    if sk.is_null() {
        return None;
    }
    let family: u16 = read(sk, offset(&SK_FAMILY_OFFSET))?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let port = u16::from_be(read(sk, offset(&SK_DPORT_OFFSET))?);
    let protocol: u16 = read(sk, offset(&SK_PROTOCOL_OFFSET))?;
    if port != DNS_PORT {
        let state: u8 = read(sk, offset(&SK_STATE_OFFSET))?;
        if !(crate::flag(&crate::ALL_TCP)
            && protocol == IPPROTO_TCP
            && port != 0
            && (state == TCP_ESTABLISHED || state == TCP_SYN_SENT))
        {
            return None;
        }
    }
    let mut remote = [0u8; 16];
    let v6: [u8; 16] = read(sk, offset(&SK_V6_DADDR_OFFSET)).unwrap_or_default();
    // An IPv6 socket talking to a v4-mapped address sends IPv4 packets.
    let version = if family == AF_INET || v6[..12] == V4_MAPPED {
        let v4: [u8; 4] = read(sk, offset(&SK_DADDR_OFFSET))?;
        remote[..4].copy_from_slice(&v4);
        4
    } else {
        remote = v6;
        6
    };
    let cgroup_id = read::<*const u8>(sk, offset(&SK_CGROUP_OFFSET))
        .and_then(|cgroup| read::<*const u8>(cgroup, offset(&CGROUP_KN_OFFSET)))
        .and_then(|kn| read::<u64>(kn, offset(&KN_ID_OFFSET)))?;
    let netns_cookie = read::<*const u8>(sk, offset(&SK_NET_OFFSET))
        .and_then(|net| read::<u64>(net, offset(&NET_COOKIE_OFFSET)))
        .unwrap_or(0);
    let owner = SocketOwner {
        netns_cookie,
        tgid: read(task, offset(&TASK_TGID_OFFSET))?,
        pid: read(task, offset(&TASK_PID_OFFSET))?,
        comm: leader_comm(task)?,
        asked_addr: remote,
        asked_port: port,
        asked_version: version,
        reserved: [0; 5],
    };
    let far = Far {
        cgroup_id,
        remote,
        local_port: read(sk, offset(&SK_NUM_OFFSET))?,
        protocol: protocol as u8,
        version,
        reserved: [0; 4],
    };
    OPEN_SOCKETS.insert(far, owner, 0).ok()
}

pub const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
