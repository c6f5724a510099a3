//! Host mode: the bytes each connection to a VIP carried.
//!
//! "One pod gets everything" is most often one long-lived connection
//! (kubernetes/kubernetes#37932: "are you re-using connections?"), which
//! the count of connections per backend cannot show. The socket keeps
//! what it carried (`struct tcp_sock`), so it is read twice, never per
//! packet:
//!
//! - when the connection closes, on the `inet_sock_set_state` tracepoint,
//!   which fires a few times per TCP connection on the host and leaves
//!   after one compare unless the new state is `TCP_CLOSE`;
//! - for connections still open, at each report, by a walk over every
//!   task's open files (the iterator `connbal_open_traffic`), since the
//!   long-lived connection is the usual case.
//!
//! What the socket counts is payload: sent, `bytes_sent` less
//! `bytes_retrans` (each byte once; `bytes_acked` would count the SYN and
//! FIN); received, `bytes_received` less the one its peer's FIN took,
//! when it came (`SOCK_DONE`).
//!
//! Both record only connections to an address in `VIPS`, which the NAT
//! tracepoint fills as it sees a DNAT behind it, before the connection's
//! first byte, so even the first connection to a VIP is counted (with
//! `--no-vip-backends`, neither it nor these run). The socket knows the
//! VIP, not the backend (the DNAT is conntrack's), so
//! userspace joins each record to the translation it saw for the same
//! client and VIP.
//!
//! No CO-RE in Rust eBPF: the offsets come from the running kernel's BTF,
//! set by the loader; left 0, nothing is recorded.

use crate::emit;
use crate::kernel::{offset, read, AF_INET, AF_INET6};
use crate::open_sockets::{
    TaskFile, SK_DADDR_OFFSET, SK_DPORT_OFFSET, SK_FAMILY_OFFSET, SK_PROTOCOL_OFFSET,
    SK_STATE_OFFSET, SK_V6_DADDR_OFFSET, SOCKET_SK_OFFSET, V4_MAPPED,
};
use aya_ebpf::{
    bindings::seq_file,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_seq_write, bpf_sock_from_file},
    },
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use connbal_common::record::{
    RecordHeader, TrafficRecord, VipKey, BIT_STILL_OPEN, KIND_TRAFFIC, TRAFFIC_LEN,
};

/// `struct sock_common`'s own addresses and flags.
#[no_mangle]
static SK_RCV_SADDR_OFFSET: u32 = 0;
#[no_mangle]
static SK_V6_RCV_SADDR_OFFSET: u32 = 0;
#[no_mangle]
static SK_FLAGS_OFFSET: u32 = 0;
/// `struct inet_sock.inet_sport`: the socket's own port, which stays when
/// closing has given `skc_num` back (`inet_put_port`, before the
/// tracepoint fires).
#[no_mangle]
static INET_SPORT_OFFSET: u32 = 0;
/// `struct tcp_sock.bytes_sent`, `.bytes_retrans` and `.bytes_received`.
#[no_mangle]
static TCP_BYTES_SENT_OFFSET: u32 = 0;
#[no_mangle]
static TCP_BYTES_RETRANS_OFFSET: u32 = 0;
#[no_mangle]
static TCP_BYTES_RECEIVED_OFFSET: u32 = 0;

/// The addresses a DNAT was seen behind. LRU, so a host with more VIPs
/// than this keeps the busiest.
#[map]
static VIPS: LruHashMap<VipKey, u8> = LruHashMap::with_max_entries(1 << 12, 0);

/// A DNAT was seen behind `addr`:`port` (network byte order address, IPv4
/// in the first 4 bytes): count the bytes of connections to it.
#[inline(always)]
pub fn watch(version: u8, addr: [u8; 16], port: u16) {
    let key = VipKey {
        addr,
        port,
        version,
        reserved: [0; 5],
    };
    let _ = VIPS.insert(key, 1, 0);
}

const IPPROTO_TCP: u16 = 6;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: u8 = 10;
/// `enum sock_flags`'s `SOCK_DONE`, set by `tcp_fin` (unchanged since
/// the enum began).
const SOCK_DONE: u64 = 1 << 1;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn connbal_closed(ctx: BtfTracePointContext) -> i32 {
    // The tracepoint's arguments are (sk, oldstate, newstate).
    let newstate: i32 = ctx.arg(2);
    if newstate == TCP_CLOSE {
        let sk: *const u8 = ctx.arg(0);
        if let Some(record) = traffic(sk, 0) {
            emit(record);
        }
    }
    0
}

/// Writes a record per open connection to a VIP to the iterator's output.
#[no_mangle]
#[link_section = "iter/task_file"]
pub extern "C" fn connbal_open_traffic(ctx: *mut TaskFile) -> i32 {
    // SAFETY: the kernel hands an iterator its context; every pointer in it
    // is checked for null before use.
    unsafe {
        let (meta, file) = ((*ctx).meta, (*ctx).file);
        if meta.is_null() || file.is_null() {
            return 0;
        }
        let sk_at = offset(&SOCKET_SK_OFFSET);
        if sk_at == 0 {
            return 0;
        }
        let socket = bpf_sock_from_file(file).cast::<u8>().cast_const();
        if socket.is_null() {
            return 0;
        }
        let Some(sk) = read::<*const u8>(socket, sk_at).filter(|sk| !sk.is_null()) else {
            return 0;
        };
        let state: u8 = read(sk, offset(&SK_STATE_OFFSET)).unwrap_or(TCP_LISTEN);
        if state == TCP_CLOSE as u8 || state == TCP_LISTEN {
            return 0;
        }
        if let Some(record) = traffic(sk, BIT_STILL_OPEN) {
            let seq: *mut seq_file = (*(*ctx).meta).seq;
            let _ = bpf_seq_write(seq, core::ptr::addr_of!(record).cast(), TRAFFIC_LEN as u32);
        }
    }
    0
}

/// What TCP socket `sk` carried, if it is connected to a VIP.
#[inline(always)]
fn traffic(sk: *const u8, bits: u8) -> Option<TrafficRecord> {
    let sent_at = offset(&TCP_BYTES_SENT_OFFSET);
    if sk.is_null() || sent_at == 0 {
        return None;
    }
    let protocol: u16 = read(sk, offset(&SK_PROTOCOL_OFFSET))?;
    if protocol != IPPROTO_TCP {
        return None;
    }
    let family: u16 = read(sk, offset(&SK_FAMILY_OFFSET))?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let mut key = VipKey {
        port: u16::from_be(read(sk, offset(&SK_DPORT_OFFSET))?),
        ..VipKey::default()
    };
    let mut local = [0u8; 16];
    let v6: [u8; 16] = read(sk, offset(&SK_V6_DADDR_OFFSET)).unwrap_or_default();
    // An IPv6 socket talking to a v4-mapped address sends IPv4 packets.
    if family == AF_INET || v6[..12] == V4_MAPPED {
        let remote: [u8; 4] = read(sk, offset(&SK_DADDR_OFFSET))?;
        key.addr[..4].copy_from_slice(&remote);
        key.version = 4;
    } else {
        key.addr = v6;
        key.version = 6;
    }
    // SAFETY: a lookup in our own map.
    unsafe { VIPS.get(key) }?;
    if key.version == 4 {
        let own: [u8; 4] = read(sk, offset(&SK_RCV_SADDR_OFFSET))?;
        local[..4].copy_from_slice(&own);
    } else {
        local = read(sk, offset(&SK_V6_RCV_SADDR_OFFSET))?;
    }
    let sent: u64 = read(sk, sent_at)?;
    let retransmitted: u64 = read(sk, offset(&TCP_BYTES_RETRANS_OFFSET))?;
    let received: u64 = read(sk, offset(&TCP_BYTES_RECEIVED_OFFSET))?;
    let flags: u64 = read(sk, offset(&SK_FLAGS_OFFSET))?;
    let fin = u64::from(flags & SOCK_DONE != 0);
    Some(TrafficRecord {
        header: RecordHeader {
            kind: KIND_TRAFFIC,
            ip_version: key.version,
            bits,
            // SAFETY: helper call without arguments.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            src_addr: local,
            src_port: u16::from_be(read(sk, offset(&INET_SPORT_OFFSET))?),
            dst_addr: key.addr,
            dst_port: key.port,
            ..RecordHeader::default()
        },
        bytes_sent: sent.saturating_sub(retransmitted),
        bytes_received: received.saturating_sub(fin),
    })
}
