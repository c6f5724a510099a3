//! connbal's in-kernel pre-filter, in two placements that share one parser:
//!
//! - a TC classifier on ingress and egress of named interfaces (`--iface`),
//!   which sees Ethernet frames;
//! - host mode: cgroup_skb programs on a cgroup v2 subtree (every socket of
//!   every process in it, in every network namespace), which see IP
//!   packets at the socket, plus cgroup connect hooks that remember which
//!   process owns each socket (unconnected UDP sockets are named by their
//!   first DNS datagram, whose egress runs in the sender's context).
//!
//! It keeps only what the aggregator needs (spec section 1): DNS messages
//! (UDP port 53 either way, and TCP port-53 segments that carry payload),
//! TCP connection attempts, and with `--all-tcp` one record when a flow is
//! first seen and one when it closes. Everything else returns after parsing
//! the IP and TCP headers' first bytes: bulk TCP data, the common case,
//! costs a few bounds checks and compares. In host mode a packet counts
//! from its local client's side only: queries and attempts on egress,
//! responses on ingress, so a loopback stub's traffic is not seen twice and
//! a local server's inbound queries are not taken for its own lookups.
//!
//! Every program only observes: TC returns TC_ACT_UNSPEC (the next program
//! or filter decides), cgroup programs return 1 (allow).
//!
//! Minimum kernel: 5.8 (BPF ring buffer); TCX attachment needs 6.6, older
//! kernels get a clsact qdisc filter from the loader. Host mode needs 5.7
//! for links that go away with the process, and `bpf_get_current_comm` in
//! sock_addr programs (6.0's cgroup helpers).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_MMAPABLE, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        TC_ACT_UNSPEC,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_comm as raw_get_current_comm,
            bpf_get_current_task, bpf_get_netns_cookie, bpf_get_socket_cookie,
            bpf_probe_read_kernel as raw_probe_read_kernel, bpf_skb_cgroup_id, bpf_skb_load_bytes,
        },
    },
    macros::{cgroup_skb, cgroup_sock_addr, classifier, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{SkBuffContext, SockAddrContext, TcContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
use connbal_common::record::{
    counter, DnsRecord, FlowKey, FlowState, Owners, RecordHeader, SocketOwner, BIT_FLOW_NEW,
    BIT_PROCESS, BIT_SOCKET, BIT_TCP, BIT_TRUNCATED, KIND_DNS, KIND_SERVER, KIND_TCP,
    MAX_DNS_PAYLOAD, SHORT_DNS_PAYLOAD,
};
use connbal_common::{
    classify_tcp, is_attempt_reply, is_connection_attempt, is_dns_port, FlowEvent, TcpVerdict,
    DNS_PORT,
};
use core::mem::size_of;

mod kernel;
mod lookups;
mod nat;
mod open_sockets;
mod traffic;

/// Set by the loader before load (read-only data, so the verifier prunes
/// the branches that depend on it).
#[no_mangle]
static ALL_TCP: u8 = 0;
#[no_mangle]
static DEBUG_LOG: u8 = 0;
/// Which owner fields records carry: an `Owners` as a byte, set by the
/// loader.
#[no_mangle]
static OWNERS: u8 = Owners::Nothing as u8;
/// Bytes waiting in the ring before a submit wakes the reader (set by the
/// loader to a quarter of the ring). Below it records are submitted
/// without a wakeup and userspace drains them on a short timer: waking the
/// reader for every record cost more than everything else together.
#[no_mangle]
static WAKEUP_BYTES: u64 = 1 << 20;

/// Where the thread-group leader's name is: the byte offsets of
/// `task_struct.group_leader` and `task_struct.comm`, read by the loader
/// from the running kernel's BTF (no CO-RE in Rust eBPF). 0: unknown, and
/// the calling thread's name is taken instead.
#[no_mangle]
static LEADER_OFFSET: u32 = 0;
#[no_mangle]
static COMM_OFFSET: u32 = 0;

/// Sized by the loader from `--ring-size`.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Sized by the loader to the number of possible CPUs.
#[map]
static COUNTERS: Array<u64> = Array::with_max_entries(
    counter::DEFAULT_CPUS * counter::SLOTS_PER_CPU,
    BPF_F_MMAPABLE,
);

/// `--all-tcp` flows. LRU, so a flood of new flows evicts old entries
/// instead of failing; an evicted flow seen again counts again.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(1 << 16, 0);

/// Host mode: the process behind each socket, by socket cookie, from its
/// last connect or, for an unconnected UDP socket, its first DNS datagram. LRU, so sockets that closed long ago make room.
#[map]
static SOCKETS: LruHashMap<u64, SocketOwner> = LruHashMap::with_max_entries(1 << 16, 0);

/// Host mode: where `adopt_sender` builds an owner before storing it.
#[map]
static OWNER_SCRATCH: PerCpuArray<SocketOwner> = PerCpuArray::with_max_entries(1, 0);

/// Host mode: sockets found open at start (`open_sockets`), at most.
const SOCKETS_AT_START_MAX: u32 = 1 << 14;

/// Host mode: sockets seen answering DNS, by cookie, so that each is
/// reported once (`KIND_SERVER`) rather than with every response. LRU, so
/// a server socket forgotten is reported again, which costs one record.
#[map]
static SERVER_SOCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(1 << 12, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// IPv6 extension headers walked, at most.
const MAX_IPV6_EXTENSIONS: usize = 4;

#[classifier]
pub fn connbal_tc(ctx: TcContext) -> i32 {
    bump(counter::PACKETS_SEEN);
    let _ = inspect(&Packet::new(ctx.skb.skb, Hook::Tc));
    TC_ACT_UNSPEC
}

/// Host mode, packets leaving a socket: its queries and connection attempts.
#[cgroup_skb(egress)]
pub fn connbal_cgroup_egress(ctx: SkBuffContext) -> i32 {
    bump(counter::PACKETS_SEEN);
    let _ = inspect(&Packet::new(ctx.skb.skb, Hook::SocketEgress));
    CGROUP_ALLOW
}

/// Host mode, packets arriving at a socket: the responses to its queries.
#[cgroup_skb(ingress)]
pub fn connbal_cgroup_ingress(ctx: SkBuffContext) -> i32 {
    bump(counter::PACKETS_SEEN);
    let _ = inspect(&Packet::new(ctx.skb.skb, Hook::SocketIngress));
    CGROUP_ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn connbal_connect4(ctx: SockAddrContext) -> i32 {
    remember_owner(&ctx, false);
    CGROUP_ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connbal_connect6(ctx: SockAddrContext) -> i32 {
    remember_owner(&ctx, true);
    CGROUP_ALLOW
}

/// What a cgroup program returns to let the packet or call through.
const CGROUP_ALLOW: i32 = 1;

/// Where the program runs, which decides what a packet starts with and
/// which of its directions count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// TC: Ethernet frames, both directions, whoever the sender.
    Tc,
    /// cgroup_skb: IP packets at the socket, sent by a local client.
    SocketEgress,
    /// cgroup_skb: IP packets at the socket, received by a local client.
    SocketIngress,
}

/// The address a connect asked for, as the app gave it (before
/// any NAT): (IP version, address in network byte order). `v6`: the
/// program is an IPv6 hook; the verifier lets each read only its own
/// family's field, so the choice is made per program, not at run time.
#[inline(always)]
fn asked_address(ctx: &SockAddrContext, v6: bool) -> (u8, [u8; 16]) {
    let mut addr = [0u8; 16];
    // SAFETY: reading fields of the context the kernel handed us, the one
    // this program's attach type allows.
    unsafe {
        let sa = &*ctx.sock_addr;
        if v6 {
            let words = sa.user_ip6;
            for (chunk, word) in addr.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            (6, addr)
        } else {
            // user_ip4 is in network byte order: its bytes as stored.
            addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
            (4, addr)
        }
    }
}

/// Remembers the calling process as the owner of the socket it connects
/// (connect runs in its context; packets later may not), with the address
/// it asked for. Every connect: TCP connection attempts follow it, and a
/// connected UDP socket's sends pass no other hook.
///
/// Unconnected UDP sockets (musl's resolver, dnsmasq and other stubs, a
/// resolver answering) are named by their first DNS datagram instead
/// (`adopt_sender`). A sendmsg hook would name them too, but the kernel
/// takes the socket's lock around every unconnected `sendto` on the host
/// once any cgroup has one, which cost a UDP request/response service
/// about 5% of its rate (BENCHMARKS.md).
#[inline(always)]
fn remember_owner(ctx: &SockAddrContext, v6: bool) {
    // SAFETY: reading a field of the context the kernel handed us.
    let port = u16::from_be(unsafe { (*ctx.sock_addr).user_port } as u16);
    // SAFETY: helper calls on the context the kernel handed us.
    let (cookie, netns_cookie) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let (asked_version, asked_addr) = asked_address(ctx, v6);
    let owner = SocketOwner {
        netns_cookie,
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        comm: process_comm(),
        asked_addr,
        asked_port: port,
        asked_version,
        reserved: [0; 5],
    };
    let _ = SOCKETS.insert(cookie, owner, 0);
}

/// The process's name: its thread-group leader's `comm`, not the calling
/// thread's. Threads name themselves (`pool-1-thread-2`, `isc-net-0000`,
/// a Python worker's prctl), and an app is its process; read here, in the
/// process's context, it is right even for a process gone before its
/// records are read.
#[inline(always)]
fn process_comm() -> [u8; 16] {
    // SAFETY: bpf_get_current_task has no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    leader_comm(task).unwrap_or_else(|| bpf_get_current_comm().unwrap_or_default())
}

/// `task`'s thread-group leader's `comm`; `None` when the offsets are
/// unknown or a read fails.
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "bpf_probe_read_kernel copies through the helper; the pointer is never dereferenced"
)]
fn leader_comm(task: *const u8) -> Option<[u8; 16]> {
    // SAFETY: plain reads of statics the loader may have rewritten.
    let (leader_at, comm_at) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!(LEADER_OFFSET)),
            core::ptr::read_volatile(core::ptr::addr_of!(COMM_OFFSET)),
        )
    };
    if leader_at == 0 || comm_at == 0 {
        return None;
    }
    // SAFETY: the reads go through bpf_probe_read_kernel, which fails
    // cleanly on a bad address, at offsets the running kernel's BTF gave.
    unsafe {
        bpf_probe_read_kernel(task.add(leader_at as usize).cast::<*const u8>())
            .and_then(|leader| {
                bpf_probe_read_kernel(leader.add(comm_at as usize).cast::<[u8; 16]>())
            })
            .ok()
    }
}

/// Does nothing: the floor that `cargo xtask bench-live` measures the real
/// classifier's per-packet cost against. Never attached in normal use.
#[classifier]
pub fn connbal_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Empty programs on host mode's four hooks: its floor, which `cargo xtask
/// bench-overhead` measures host mode against (the hooks themselves cost
/// something before any program runs). Never attached in normal use.
#[cgroup_skb(egress)]
pub fn connbal_empty_skb_egress(_ctx: SkBuffContext) -> i32 {
    CGROUP_ALLOW
}

#[cgroup_skb(ingress)]
pub fn connbal_empty_skb_ingress(_ctx: SkBuffContext) -> i32 {
    CGROUP_ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn connbal_empty_connect4(_ctx: SockAddrContext) -> i32 {
    CGROUP_ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connbal_empty_connect6(_ctx: SockAddrContext) -> i32 {
    CGROUP_ALLOW
}

#[inline(always)]
fn flag(global: &u8) -> bool {
    // SAFETY: a plain read of a static the loader may have rewritten
    // before load; volatile so the compiler does not fold the default.
    unsafe { core::ptr::read_volatile(global) != 0 }
}

/// Submit flags: wake the reader only once a batch has built up.
#[inline(always)]
fn submit_flags() -> u64 {
    // SAFETY: a plain read of a static the loader may have rewritten.
    let threshold = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(WAKEUP_BYTES)) };
    if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= threshold {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

#[inline(always)]
fn bump(slot: u32) {
    // SAFETY: helper call without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(value) = COUNTERS.get_ptr_mut(cpu * counter::SLOTS_PER_CPU + slot) {
        // SAFETY: this CPU's own slot; TC programs run with migration
        // disabled and the egress path with bottom halves off, so nothing
        // else on this CPU writes it meanwhile. Userspace only reads.
        unsafe { *value += 1 };
    }
}

/// The packet under inspection, whichever program got it: TC and
/// cgroup_skb both hand over an `__sk_buff`.
struct Packet {
    skb: *mut __sk_buff,
    hook: Hook,
}

impl Packet {
    #[inline(always)]
    fn new(skb: *mut __sk_buff, hook: Hook) -> Self {
        Self { skb, hook }
    }

    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: reading a field of the context the kernel handed us.
        unsafe { (*self.skb).data as usize }
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { (*self.skb).data_end as usize }
    }

    /// Bytes in the packet, paged data included.
    #[inline(always)]
    fn len(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.skb).len }
    }
}

impl EbpfContext for Packet {
    fn as_ptr(&self) -> *mut core::ffi::c_void {
        self.skb.cast()
    }
}

/// A copy of `N` bytes of linear packet data at `offset`, if present.
#[inline(always)]
fn bytes<const N: usize>(ctx: &Packet, offset: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked against data_end just above; unaligned read
    // because packet headers have no alignment guarantee.
    Some(unsafe { ((start + offset) as *const [u8; N]).read_unaligned() })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// What the IP layer tells the transport parser.
struct Ip {
    version: u8,
    protocol: u8,
    l4: usize,
    /// End of the IP payload (excludes link-layer padding).
    end: usize,
    /// Where the source address starts (the destination follows it). The
    /// addresses are only read for packets that produce a record, so bulk
    /// data never pays for copying them.
    addrs: usize,
}

/// Source and destination as 16-byte arrays (IPv4 in the first 4 bytes).
#[inline(always)]
fn addresses(ctx: &Packet, ip: &Ip) -> Option<([u8; 16], [u8; 16])> {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if ip.version == 4 {
        let a: [u8; 8] = bytes(ctx, ip.addrs)?;
        src[..4].copy_from_slice(&a[..4]);
        dst[..4].copy_from_slice(&a[4..]);
    } else {
        let a: [u8; 32] = bytes(ctx, ip.addrs)?;
        src.copy_from_slice(&a[..16]);
        dst.copy_from_slice(&a[16..]);
    }
    Some((src, dst))
}

#[inline(always)]
fn inspect(ctx: &Packet) -> Option<()> {
    let hook = ctx.hook;
    let ip = if hook == Hook::Tc {
        ethernet(ctx)?
    } else {
        // At the socket the packet starts with its IP header. (Twenty
        // bytes, not one: the verifier learns no range from the one-byte
        // check, which LLVM turns into comparing data with data_end.)
        let first: [u8; 20] = bytes(ctx, 0)?;
        match first[0] >> 4 {
            4 => ipv4(ctx, 0)?,
            6 => ipv6(ctx, 0)?,
            _ => return None,
        }
    };
    match ip.protocol {
        IPPROTO_TCP => tcp(ctx, &ip, hook),
        IPPROTO_UDP => udp(ctx, &ip, hook),
        _ => None,
    }
}

#[inline(always)]
fn ethernet(ctx: &Packet) -> Option<Ip> {
    let eth: [u8; 14] = bytes(ctx, 0)?;
    let mut proto = be16([eth[12], eth[13]]);
    let mut offset = 14;
    // Up to two in-band VLAN tags (802.1Q, QinQ); offloaded tags are not
    // in the packet data at all.
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let tag: [u8; 4] = bytes(ctx, offset)?;
        proto = be16([tag[2], tag[3]]);
        offset += 4;
    }
    match proto {
        ETH_P_IP => ipv4(ctx, offset),
        ETH_P_IPV6 => ipv6(ctx, offset),
        _ => None,
    }
}

/// Host mode counts a packet from its local client's side only: what a
/// socket sends to port 53 and its connection attempts on egress; what it
/// receives from port 53, and the SYN-ACKs and resets answering its
/// attempts, on ingress. `-a` flows count either way.
#[inline(always)]
fn local_client_side(hook: Hook, src_port: u16, dst_port: u16, flags: u8) -> bool {
    match hook {
        Hook::Tc => true,
        Hook::SocketEgress => {
            dst_port == DNS_PORT || (is_connection_attempt(flags) && src_port != DNS_PORT)
        }
        Hook::SocketIngress => {
            src_port == DNS_PORT || (is_attempt_reply(flags) && dst_port != DNS_PORT)
        }
    }
}

#[inline(always)]
fn ipv4(ctx: &Packet, offset: usize) -> Option<Ip> {
    let h: [u8; 20] = bytes(ctx, offset)?;
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || header_len < 20 {
        return None;
    }
    // A fragment (more to come, or an offset): a non-first one has no
    // transport header, and a first one not the whole DNS message. Counted
    // so that `-v` says what was not decoded; replay reassembles them, and
    // at a socket (host mode) datagrams are whole.
    if be16([h[6], h[7]]) & 0x3fff != 0 {
        bump(counter::IP_FRAGMENTS);
        return None;
    }
    Some(Ip {
        version: 4,
        protocol: h[9],
        l4: offset + header_len,
        end: offset + usize::from(be16([h[2], h[3]])),
        addrs: offset + 12,
    })
}

#[inline(always)]
fn ipv6(ctx: &Packet, offset: usize) -> Option<Ip> {
    let h: [u8; 40] = bytes(ctx, offset)?;
    let mut next = h[6];
    let mut l4 = offset + 40;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte
            // units, not counting the first 8.
            0 | 43 | 60 => {
                let e: [u8; 2] = bytes(ctx, l4)?;
                next = e[0];
                l4 += (usize::from(e[1]) + 1) * 8;
            }
            // Fragment header: decoded only when it fragments nothing (an
            // atomic fragment: offset 0, no more to come); otherwise counted,
            // as for IPv4.
            44 => {
                let e: [u8; 4] = bytes(ctx, l4)?;
                if be16([e[2], e[3]]) & 0xfff9 != 0 {
                    bump(counter::IP_FRAGMENTS);
                    return None;
                }
                next = e[0];
                l4 += 8;
            }
            // Authentication header: length in 4-byte units, minus 2.
            51 => {
                let e: [u8; 2] = bytes(ctx, l4)?;
                next = e[0];
                l4 += (usize::from(e[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    Some(Ip {
        version: 6,
        protocol: next,
        l4,
        end: offset + 40 + usize::from(be16([h[4], h[5]])),
        addrs: offset + 8,
    })
}

#[inline(always)]
fn tcp(ctx: &Packet, ip: &Ip, hook: Hook) -> Option<()> {
    // Ports, sequence number, data offset and flags: the first 14 bytes.
    let t: [u8; 14] = bytes(ctx, ip.l4)?;
    let flags = t[13];
    let (src_port, mut dst_port) = (be16([t[0], t[1]]), be16([t[2], t[3]]));
    let payload = ip.l4 + usize::from(t[12] >> 4) * 4;
    let payload_len = ip.end.saturating_sub(payload);
    // DNS over TCP to Docker's embedded DNS, seen after its DNAT (to a high
    // port): the stream the app opened to 127.0.0.11:53.
    let mut asked_dst = None;
    if hook == Hook::SocketEgress && dst_port != DNS_PORT && docker_dns_destination(ctx, ip) {
        if let Some(asked) = asked_dns(ctx, ip, src_port) {
            asked_dst = Some(asked);
            dst_port = DNS_PORT;
        }
    }
    // What the default mode keeps; bulk data stops here unless -a.
    let verdict = classify_tcp(flags, src_port, dst_port, payload_len, false);
    let all_tcp = flag(&ALL_TCP);
    if verdict == TcpVerdict::Drop && !all_tcp {
        return None;
    }
    let local = local_client_side(hook, src_port, dst_port, flags);
    if !local && !all_tcp {
        return None;
    }
    let (src, mut dst) = addresses(ctx, ip)?;
    if let Some(asked) = asked_dst {
        dst = asked;
    }
    let mut bits = BIT_TCP;
    if all_tcp {
        match track_flow(ip.version, &src, &dst, src_port, dst_port, flags) {
            FlowEvent::New => bits |= BIT_FLOW_NEW,
            FlowEvent::Nothing if verdict == TcpVerdict::Drop || !local => return None,
            FlowEvent::Closed | FlowEvent::Nothing => {}
        }
    }
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let header = header(ctx, ip, (src, dst), (src_port, dst_port), flags, seq, bits);
    match verdict {
        TcpVerdict::DnsPayload => emit_dns(ctx, header, payload, payload_len),
        _ => emit_header(header),
    }
    Some(())
}

#[inline(always)]
fn udp(ctx: &Packet, ip: &Ip, hook: Hook) -> Option<()> {
    let u: [u8; 8] = bytes(ctx, ip.l4)?;
    let (src_port, dst_port) = (be16([u[0], u[1]]), be16([u[2], u[3]]));
    if !is_dns_port(src_port, dst_port) {
        // Leaving a socket for 127.0.0.11, not port 53: Docker's embedded
        // DNS after its DNAT, when the app asked for port 53.
        if hook == Hook::SocketEgress && docker_dns_destination(ctx, ip) {
            return dnat_query(ctx, ip, (src_port, dst_port), u);
        }
        return None;
    }
    if !local_client_side(hook, src_port, dst_port, 0) {
        if hook == Hook::SocketEgress && src_port == DNS_PORT {
            note_server_socket(ctx, ip, (src_port, dst_port));
        }
        return None;
    }
    let (payload, payload_len) = udp_payload(ip, u);
    let (src, dst) = addresses(ctx, ip)?;
    let header = header(ctx, ip, (src, dst), (src_port, dst_port), 0, 0, 0);
    emit_dns(ctx, header, payload, payload_len);
    Some(())
}

/// Where a UDP datagram's payload starts, and its length. The UDP length,
/// not the frame, bounds it, so Ethernet padding is never taken for DNS
/// bytes.
#[inline(always)]
fn udp_payload(ip: &Ip, udp: [u8; 8]) -> (usize, usize) {
    let payload = ip.l4 + 8;
    let udp_payload = usize::from(be16([udp[4], udp[5]])).saturating_sub(8);
    (payload, udp_payload.min(ip.end.saturating_sub(payload)))
}

/// The kernel's flow table under spec 4's `-a` rule
/// (`FlowState::observe`, shared with the aggregator): a flow yields a
/// record when first seen (or seen again after it was forgotten) and when
/// it closes.
#[inline(always)]
fn track_flow(
    version: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    src_port: u16,
    dst_port: u16,
    flags: u8,
) -> FlowEvent {
    let forward = (src, src_port) <= (dst, dst_port);
    let key = if forward {
        FlowKey {
            addr_a: *src,
            addr_b: *dst,
            port_a: src_port,
            port_b: dst_port,
            ip_version: u32::from(version),
        }
    } else {
        FlowKey {
            addr_a: *dst,
            addr_b: *src,
            port_a: dst_port,
            port_b: src_port,
            ip_version: u32::from(version),
        }
    };
    // SAFETY: helper call; no memory is passed but the key.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(state) = FLOWS.get_ptr_mut(key) {
        // SAFETY: the pointer is to this map's value, valid while we run;
        // concurrent updates from another CPU can only make the decision
        // stale, not unsafe.
        let state = unsafe { &mut *state };
        return state.observe(now, flags);
    }
    let _ = FLOWS.insert(key, FlowState::first_seen(now, flags), 0);
    FlowEvent::New
}

#[inline(always)]
fn header(
    ctx: &Packet,
    ip: &Ip,
    (src, dst): ([u8; 16], [u8; 16]),
    (src_port, dst_port): (u16, u16),
    flags: u8,
    seq: u32,
    bits: u8,
) -> RecordHeader {
    let mut header = RecordHeader {
        kind: KIND_TCP,
        ip_version: ip.version,
        tcp_flags: flags,
        bits,
        // SAFETY: helper call without arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        src_addr: src,
        dst_addr: dst,
        src_port,
        dst_port,
        tcp_seq: seq,
        ..RecordHeader::default()
    };
    add_owner(ctx, ip.protocol, &mut header);
    header
}

/// The packet's socket and, when a connect on it was seen (or the socket
/// was open when the trace started, or is a UDP socket sending DNS), its
/// process. Only records
/// pay for this, never the packets dropped above, and only when the
/// loader asked for owners.
#[inline(always)]
fn add_owner(ctx: &Packet, protocol: u8, header: &mut RecordHeader) {
    // SAFETY: a plain read of a static the loader may have rewritten.
    let owners = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(OWNERS)) };
    if owners < Owners::Socket as u8 {
        return;
    }
    // SAFETY: helper calls on the context the kernel handed us; both
    // return 0 when the packet has no socket (TC ingress).
    let (cookie, cgroup_id) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_skb_cgroup_id(ctx.skb),
        )
    };
    if cookie == 0 {
        return;
    }
    header.bits |= BIT_SOCKET;
    header.socket_cookie = cookie;
    header.cgroup_id = cgroup_id;
    if owners < Owners::Process as u8 {
        return;
    }
    // The socket's far end and its own port, by direction.
    let (remote, local_port) = if ctx.hook == Hook::SocketIngress {
        (&header.src_addr, header.dst_port)
    } else {
        (&header.dst_addr, header.src_port)
    };
    let far = open_sockets::far_key(local_port, protocol, header.ip_version);
    let mut owner = socket_owner(cookie, cgroup_id, remote, far);
    if owner.is_none()
        && ctx.hook == Hook::SocketEgress
        && protocol == IPPROTO_UDP
        && adopt_sender(
            cookie,
            cgroup_id,
            &header.dst_addr,
            asked_port_version(header.dst_port, header.ip_version),
        )
    {
        // SAFETY: a lookup in our own map; the caller copies out what it
        // needs.
        owner = unsafe { SOCKETS.get(cookie) };
    }
    if let Some(owner) = owner {
        header.bits |= BIT_PROCESS;
        header.netns_cookie = owner.netns_cookie;
        header.tgid = owner.tgid;
        header.pid = owner.pid;
        header.comm = owner.comm;
        if ctx.hook == Hook::SocketEgress && protocol == IPPROTO_TCP {
            nat::as_asked(header, owner);
        }
    }
}

/// The owner the hooks recorded for the socket, or else the one the walk
/// at start found for a socket like it (then remembered by cookie, so the
/// walk's table is asked once per socket).
#[inline(always)]
fn socket_owner(
    cookie: u64,
    cgroup_id: u64,
    remote: &[u8; 16],
    far: u32,
) -> Option<&'static SocketOwner> {
    // SAFETY: lookups in our own map; the caller copies out what it needs.
    unsafe {
        if let Some(owner) = SOCKETS.get(cookie) {
            return Some(owner);
        }
        if !open_sockets::adopt(cookie, cgroup_id, remote, far) {
            return None;
        }
        SOCKETS.get(cookie)
    }
}

/// Whether a packet goes to 127.0.0.11, Docker's embedded DNS, the one
/// loopback resolver reached through a DNAT (systemd-resolved, dnsmasq
/// and other stubs listen on port 53 itself): the one check every other
/// UDP datagram and TCP segment pays for the DNAT case, so that busy
/// loopback traffic (a statsd client, sidecar proxies, local databases)
/// pays a compare, never a map lookup.
#[inline(always)]
fn docker_dns_destination(ctx: &Packet, ip: &Ip) -> bool {
    ip.version == 4 && bytes::<4>(ctx, ip.addrs + 4).is_some_and(|b| b == DOCKER_DNS)
}

const DOCKER_DNS: [u8; 4] = [127, 0, 0, 11];

/// The address a packet's socket asked for, when its last connect asked
/// for port 53 in the packet's IP version (or it is an unconnected UDP
/// socket sending to Docker's DNS): the DNS server the app meant, before a
/// DNAT moved it.
#[inline(always)]
fn asked_dns(ctx: &Packet, ip: &Ip, local_port: u16) -> Option<[u8; 16]> {
    // SAFETY: helper calls on the context the kernel handed us.
    let (cookie, cgroup_id) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_skb_cgroup_id(ctx.skb),
        )
    };
    // A DNAT keeps Docker's address and moves only the port, so a socket
    // open since before the trace is still found by its far address.
    let (_, remote) = addresses(ctx, ip)?;
    let far = open_sockets::far_key(local_port, ip.protocol, ip.version);
    match socket_owner(cookie, cgroup_id, &remote, far) {
        Some(owner) => (owner.asked_port == DNS_PORT && owner.asked_version == ip.version)
            .then_some(owner.asked_addr),
        // An unconnected UDP socket (musl's resolver sends with `sendto`)
        // leaves no asked address behind. Docker's DNAT of 127.0.0.11 moves
        // only port 53, and nothing else listens there: such a datagram is
        // a query to 127.0.0.11:53, sent by the task running this program.
        None if ip.protocol == IPPROTO_UDP && docker_dns_destination(ctx, ip) => {
            let mut asked = [0u8; 16];
            asked[..4].copy_from_slice(&DOCKER_DNS);
            adopt_sender(cookie, cgroup_id, &asked, asked_port_version(DNS_PORT, 4))
                .then_some(asked)
        }
        None => None,
    }
}

/// Names an unconnected UDP socket after the task sending its DNS
/// datagram, and remembers that by cookie for the datagrams that follow
/// (the responses arrive in softirq context, where the current task is
/// anyone). A UDP send runs the egress program synchronously in the
/// sender's own syscall (`udp_sendmsg` down to `ip_finish_output`, before
/// any queue); the cgroup check refuses the rest: a socket handed to a
/// process in another cgroup, or one that moved since it opened it.
/// `asked`: the address the datagram went to, as the app gave it.
/// Not inlined, and its owner is built in a per-CPU scratch slot, not on
/// the stack: the packet programs' DNS records leave it 64 bytes.
#[inline(never)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the borrow hands the map helper the scratch slot itself; a copy would take the stack"
)]
fn adopt_sender(cookie: u64, cgroup_id: u64, asked: &[u8; 16], port_version: u32) -> bool {
    // SAFETY: helper call without arguments.
    if cookie == 0 || unsafe { bpf_get_current_cgroup_id() } != cgroup_id {
        return false;
    }
    let Some(owner) = OWNER_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `owner` is this CPU's scratch slot, which nothing else uses
    // while this program runs; bpf_get_current_task has no preconditions.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let owner = &mut *owner;
        owner.netns_cookie = open_sockets::task_netns_cookie(task);
        owner.tgid = (pid_tgid >> 32) as u32;
        owner.pid = pid_tgid as u32;
        owner.asked_addr = *asked;
        owner.asked_port = (port_version >> 8) as u16;
        owner.asked_version = port_version as u8;
        owner.reserved = [0; 5];
        leader_comm_into(task, &mut owner.comm);
        SOCKETS.insert(cookie, &*owner, 0).is_ok()
    }
}

/// `task`'s thread-group leader's name written into `comm` in place (the
/// copy `leader_comm` returns would take stack), or the calling thread's
/// when the offsets are unknown or a read fails.
#[inline(always)]
fn leader_comm_into(task: *const u8, comm: &mut [u8; 16]) {
    let dst: *mut core::ffi::c_void = comm.as_mut_ptr().cast();
    // SAFETY: plain reads of statics the loader may have rewritten.
    let (leader_at, comm_at) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!(LEADER_OFFSET)),
            core::ptr::read_volatile(core::ptr::addr_of!(COMM_OFFSET)),
        )
    };
    if leader_at != 0 && comm_at != 0 {
        if let Some(leader) = kernel::read::<*const u8>(task, leader_at as usize) {
            // SAFETY: the helper fails cleanly on a bad address and writes
            // at most 16 bytes into `comm`.
            let read = unsafe {
                raw_probe_read_kernel(dst, 16, leader.wrapping_add(comm_at as usize).cast())
            };
            if read == 0 {
                return;
            }
        }
    }
    // SAFETY: writes at most 16 bytes into `comm`.
    unsafe { raw_get_current_comm(dst, 16) };
}

/// A port and an IP version in one word, for `adopt_sender`'s
/// five-register call.
#[inline(always)]
fn asked_port_version(port: u16, version: u8) -> u32 {
    u32::from(port) << 8 | u32::from(version)
}

/// A UDP datagram a DNAT moved off port 53: when its socket asked for
/// port 53 (`asked_dns`), it is that DNS query, recorded as the app
/// sent it (to the address and port it asked for), so that the response,
/// which conntrack returns from port 53, finds it.
#[inline(always)]
fn dnat_query(ctx: &Packet, ip: &Ip, (src_port, _): (u16, u16), udp: [u8; 8]) -> Option<()> {
    let asked = asked_dns(ctx, ip, src_port)?;
    let (payload, payload_len) = udp_payload(ip, udp);
    let (src, _) = addresses(ctx, ip)?;
    let header = header(ctx, ip, (src, asked), (src_port, DNS_PORT), 0, 0, 0);
    emit_dns(ctx, header, payload, payload_len);
    Some(())
}

/// A socket answering DNS, reported the first time it is seen doing so.
#[inline(always)]
fn note_server_socket(ctx: &Packet, ip: &Ip, ports: (u16, u16)) -> Option<()> {
    // SAFETY: a helper call on the context the kernel handed us.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: a lookup in our own map; nothing is kept from it.
    if cookie == 0 || unsafe { SERVER_SOCKETS.get(cookie) }.is_some() {
        return None;
    }
    // Full (an LRU never is) or raced by another CPU: at worst reported
    // twice, which the aggregator takes as once.
    let _ = SERVER_SOCKETS.insert(cookie, 1, 0);
    let addresses = addresses(ctx, ip)?;
    let mut header = header(ctx, ip, addresses, ports, 0, 0, 0);
    header.kind = KIND_SERVER;
    emit_header(header);
    Some(())
}

/// A header-only record: a TCP segment, or a server socket.
#[inline(always)]
fn emit_header(header: RecordHeader) {
    emit(header);
}

/// A fixed-size record into the ring, counted as emitted or lost.
#[inline(always)]
fn emit<T: 'static>(record: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(submit_flags());
            bump(counter::RECORDS_EMITTED);
        }
        None => bump(counter::RECORDS_LOST),
    }
}

/// Copies the DNS payload straight from the skb into a reserved ring slot,
/// a short one when the message fits.
#[inline(always)]
fn emit_dns(ctx: &Packet, header: RecordHeader, payload: usize, payload_len: usize) {
    if payload_len <= SHORT_DNS_PAYLOAD {
        emit_dns_into::<SHORT_DNS_PAYLOAD>(ctx, header, payload, payload_len);
    } else {
        emit_dns_into::<MAX_DNS_PAYLOAD>(ctx, header, payload, payload_len);
    }
}

#[inline(always)]
fn emit_dns_into<const N: usize>(
    ctx: &Packet,
    mut header: RecordHeader,
    payload: usize,
    payload_len: usize,
) {
    let Some(mut entry) = EVENTS.reserve::<DnsRecord<N>>(0) else {
        bump(counter::RECORDS_LOST);
        if flag(&DEBUG_LOG) {
            debug!(ctx, "ring buffer full: DNS record lost");
        }
        return;
    };
    // The skb length covers paged data too, which bpf_skb_load_bytes reads.
    let available = payload_len.min((ctx.len() as usize).saturating_sub(payload));
    let copy = available.min(N);
    let record = entry.as_mut_ptr();
    if copy > 0 {
        // The verifier must see a length in [1, N]: hide `copy - 1` from
        // the optimiser (which would otherwise reorder the checks) and mask
        // it; N is a power of two.
        let masked = (core::hint::black_box(copy - 1) & (N - 1)) + 1;
        // SAFETY: `record` points to a reserved DnsRecord<N>; the
        // destination is its payload array of N bytes and `masked` is at
        // most that; the helper checks the source range in the skb.
        let loaded = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.cast_const().cast(),
                payload as u32,
                core::ptr::addr_of_mut!((*record).payload).cast(),
                masked as u32,
            )
        };
        if loaded != 0 {
            entry.discard(0);
            bump(counter::RECORDS_LOST);
            return;
        }
    }
    header.kind = KIND_DNS;
    header.copied_len = copy as u16;
    if copy < payload_len {
        header.bits |= BIT_TRUNCATED;
        bump(counter::DNS_TRUNCATED);
    }
    // SAFETY: writing the header field of the reserved record.
    unsafe { core::ptr::addr_of_mut!((*record).header).write(header) };
    entry.submit(submit_flags());
    bump(counter::RECORDS_EMITTED);
}

const _: () = assert!(size_of::<RecordHeader>().is_multiple_of(8));

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
