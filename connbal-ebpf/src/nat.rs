//! Host mode: where a DNAT sent a new TCP connection.
//!
//! A Kubernetes Service's clients resolve its name to one address, the
//! VIP, and the kernel picks the pod per connection (kube-proxy's iptables
//! or nftables rules; Docker's published ports work the same way). DNS
//! never names the pods, so the balance behind the VIP is only known from
//! the NAT itself. Two places see it:
//!
//! - a client's own socket, when the DNAT ran in its own OUTPUT chain (a
//!   host-network client): the connect hook kept the address it asked for,
//!   and the SYN leaves for the pod. The packet programs record the flow
//!   as the client asked (`as_asked`), so that its replies, which conntrack
//!   returns from the VIP, match, plus a `KIND_NAT` record of the pod;
//! - the transmit of the translated SYN (`connbal_nat`, on the
//!   `net_dev_start_xmit` tracepoint), for clients whose DNAT happens
//!   after their packet left their namespace (a pod, translated in the
//!   node's PREROUTING): the packet's conntrack entry holds both tuples.
//!   It fires for every packet sent on the host, so it reads one word,
//!   the entry's state, and leaves unless the packet opens a connection
//!   (conntrack's `IP_CT_NEW`): one probe read per other packet.
//!
//! No CO-RE in Rust eBPF: the offsets come from the running kernel's BTF;
//! left 0, the tracepoint program records nothing.

use crate::emit;
use crate::kernel::{offset, read, AF_INET, AF_INET6};
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use connbal_common::{
    record::{NatRecord, RecordHeader, SocketOwner, KIND_NAT},
    tcp_flags,
};

/// `struct sk_buff._nfct`: the conntrack entry's address, its state in
/// the low 3 bits.
#[no_mangle]
static SKB_NFCT_OFFSET: u32 = 0;
/// `struct nf_conn.status` and `.tuplehash`.
#[no_mangle]
static CT_STATUS_OFFSET: u32 = 0;
#[no_mangle]
static CT_TUPLEHASH_OFFSET: u32 = 0;
/// The size of `struct nf_conntrack_tuple_hash` (the reply direction's
/// follows the original's) and the offset of its `tuple`.
#[no_mangle]
static TUPLEHASH_SIZE: u32 = 0;
#[no_mangle]
static TUPLEHASH_TUPLE_OFFSET: u32 = 0;

/// `enum ip_conntrack_info`'s `IP_CT_NEW`, and the mask of `_nfct`'s state.
const IP_CT_NEW: u64 = 2;
const NFCT_INFOMASK: u64 = 7;
/// `IPS_DST_NAT`: the destination was translated.
const IPS_DST_NAT: u64 = 1 << 5;
const IPPROTO_TCP: u8 = 6;
/// Within `struct nf_conntrack_tuple` (40 bytes, unchanged since conntrack
/// began; the loader checks the size): `src` then `dst`, each an address
/// (16 bytes), a port (2), then `src.l3num` (u16) or `dst.protonum` (u8).
const TUPLE_DST: usize = 20;
const MAN_PORT: usize = 16;
const SRC_L3NUM: usize = 18;
const DST_PROTONUM: usize = 38;

#[btf_tracepoint(function = "net_dev_start_xmit")]
pub fn connbal_nat(ctx: BtfTracePointContext) -> i32 {
    let _ = translated_syn(&ctx);
    0
}

#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "`_nfct` is an unsigned long at the offset BTF gave, aligned as the kernel laid it out"
)]
fn translated_syn(ctx: &BtfTracePointContext) -> Option<()> {
    let nfct_at = offset(&SKB_NFCT_OFFSET);
    if nfct_at == 0 {
        return None;
    }
    let skb: *const u8 = ctx.arg(0);
    // A plain load, not a probe read: the tracepoint hands a trusted
    // `struct sk_buff *`, and the verifier checks the offset (a constant
    // to it, from read-only data) against the kernel's BTF. This is the
    // one read every packet sent on the host pays.
    // SAFETY: see above; the kernel turns a fault into a zero.
    let nfct: u64 = unsafe { core::ptr::read(skb.add(nfct_at).cast::<u64>()) };
    if nfct & NFCT_INFOMASK != IP_CT_NEW {
        return None;
    }
    let ct = (nfct & !NFCT_INFOMASK) as *const u8;
    let status: u64 = read(ct, offset(&CT_STATUS_OFFSET))?;
    if status & IPS_DST_NAT == 0 {
        return None;
    }
    // SAFETY: pointer arithmetic only; every read goes through the probe.
    let original =
        unsafe { ct.add(offset(&CT_TUPLEHASH_OFFSET) + offset(&TUPLEHASH_TUPLE_OFFSET)) };
    // SAFETY: as above.
    let reply = unsafe { original.add(offset(&TUPLEHASH_SIZE)) };
    let protocol: u8 = read(original, DST_PROTONUM)?;
    if protocol != IPPROTO_TCP {
        return None;
    }
    let version = match read::<u16>(original, SRC_L3NUM)? {
        AF_INET => 4,
        AF_INET6 => 6,
        _ => return None,
    };
    let record = NatRecord {
        header: RecordHeader {
            kind: KIND_NAT,
            ip_version: version,
            // SAFETY: helper call without arguments.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            src_addr: read(original, 0)?,
            src_port: u16::from_be(read(original, MAN_PORT)?),
            dst_addr: read(original, TUPLE_DST)?,
            dst_port: u16::from_be(read(original, TUPLE_DST + MAN_PORT)?),
            ..RecordHeader::default()
        },
        backend_addr: read(reply, 0)?,
        backend_port: u16::from_be(read(reply, MAN_PORT)?),
        reserved: [0; 6],
    };
    // Every translated SYN passes here, a host-network client's too (its
    // OUTPUT chain's DNAT is as new at transmit), so this is where the
    // traffic programs learn the VIP, before the connection's first byte.
    // Not in `as_asked`: the packet programs' stack has no room for it.
    crate::traffic::watch(version, record.header.dst_addr, record.header.dst_port);
    emit(record);
    Some(())
}

/// A TCP record leaving a socket whose connect asked for another address
/// than the packet now goes to (a DNAT in the client's own OUTPUT chain):
/// recorded as the client asked, and for its SYN a `KIND_NAT` record of
/// where it went. Not inlined: the packet programs' stack is nearly full.
#[inline(never)]
pub fn as_asked(header: &mut RecordHeader, owner: &SocketOwner) {
    if owner.asked_port == 0 {
        return;
    }
    // An IPv6 socket asked for a v4-mapped address sends IPv4.
    let mut asked = owner.asked_addr;
    let asked_version = if owner.asked_version == 6 && asked[..12] == V4_MAPPED {
        asked = [0; 16];
        asked[..4].copy_from_slice(&owner.asked_addr[12..]);
        4
    } else {
        owner.asked_version
    };
    if asked_version != header.ip_version
        || (asked == header.dst_addr && owner.asked_port == header.dst_port)
    {
        return;
    }
    let syn = header.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
    let (backend_addr, backend_port) = (header.dst_addr, header.dst_port);
    header.dst_addr = asked;
    header.dst_port = owner.asked_port;
    if !syn {
        return;
    }
    emit(NatRecord {
        header: RecordHeader {
            kind: KIND_NAT,
            ip_version: header.ip_version,
            ktime_ns: header.ktime_ns,
            src_addr: header.src_addr,
            src_port: header.src_port,
            dst_addr: asked,
            dst_port: owner.asked_port,
            ..RecordHeader::default()
        },
        backend_addr,
        backend_port,
        reserved: [0; 6],
    });
}

const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
