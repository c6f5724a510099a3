//! Types and predicates shared by the connbal eBPF program and userspace.
//!
//! Everything here is `no_std` and allocation-free so the kernel side can use
//! it. The classification predicates live here, not in either consumer, so
//! the in-kernel pre-filter and the replay decoder keep exactly the same
//! notion of "interesting packet" (spec section 1).
#![no_std]
#![forbid(unsafe_code)]
#![expect(
    clippy::inline_always,
    reason = "the eBPF program calls these per packet; BPF-to-BPF calls cost, and the verifier tracks bounds best through inlined code"
)]

/// DNS is recognised purely by port, in either direction (spec 1.1).
pub const DNS_PORT: u16 = 53;

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A connection attempt is a SYN without ACK. The original's filter,
/// `tcp[13] == 2`, also required ECE and CWR to be clear; connbal counts
/// ECN-setup SYNs (SYN|ECE|CWR, RFC 3168), which macOS, iOS and Linux with
/// `net.ipv4.tcp_ecn=1` send (an extension, docs/semantics.md).
#[inline(always)]
pub const fn is_connection_attempt(flags: u8) -> bool {
    flags & !(tcp_flags::ECE | tcp_flags::CWR) == tcp_flags::SYN
}

/// A segment that may answer a connection attempt: a SYN-ACK (answered) or
/// an RST (refused). The aggregator matches it to an attempt by its
/// 4-tuple; anything else about a connection needs no record.
#[inline(always)]
pub const fn is_attempt_reply(flags: u8) -> bool {
    flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN)
        == tcp_flags::SYN | tcp_flags::ACK
        || flags & tcp_flags::RST != 0
}

/// FIN or RST ends a flow for `--all-tcp` bookkeeping (spec 4).
#[inline(always)]
pub const fn closes_flow(flags: u8) -> bool {
    flags & (tcp_flags::FIN | tcp_flags::RST) != 0
}

#[inline(always)]
pub const fn is_dns_port(src_port: u16, dst_port: u16) -> bool {
    src_port == DNS_PORT || dst_port == DNS_PORT
}

/// What the pre-filter does with one TCP segment. Both the kernel program
/// and the replay decoder ask this, so live and offline see the same events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpVerdict {
    /// Nothing the aggregator needs.
    Drop,
    /// A connection attempt or, with `--all-tcp`, a flow event.
    Segment,
    /// A DNS-over-TCP segment carrying payload (also used for its flags).
    DnsPayload,
}

#[inline(always)]
pub const fn classify_tcp(
    flags: u8,
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
    all_tcp: bool,
) -> TcpVerdict {
    if is_dns_port(src_port, dst_port) {
        if payload_len > 0 {
            return TcpVerdict::DnsPayload;
        }
        // A SYN carries the initial sequence number the reassembler needs;
        // FIN/RST let it drop the stream early.
        if flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0 {
            return TcpVerdict::Segment;
        }
    }
    if all_tcp || is_connection_attempt(flags) || is_attempt_reply(flags) {
        TcpVerdict::Segment
    } else {
        TcpVerdict::Drop
    }
}

/// Ring-buffer records from the kernel program to userspace.
///
/// One `#[repr(C)]` layout used by both sides. Alignment is 8 at most, as
/// `bpf_ringbuf_reserve` requires. Userspace decodes records from bytes
/// with [`RecordHeader::from_bytes`], so it never transmutes kernel memory.
pub mod record {
    /// Most DNS payload bytes copied per record. A power of two so the
    /// kernel can prove the copy length is in [1, MAX] with a mask (see
    /// connbal-ebpf). Covers EDNS's usual 1232-byte UDP size and a full
    /// 1460-byte TCP segment; longer payloads are cut and flagged.
    pub const MAX_DNS_PAYLOAD: usize = 2048;

    pub const KIND_DNS: u8 = 1;
    pub const KIND_TCP: u8 = 2;
    /// Host mode: a socket sent a UDP datagram from port 53, so it answers
    /// DNS (a stub, a cache, a forwarder). The header only (its addresses,
    /// ports and owner), once per socket while the kernel remembers it:
    /// the aggregator does not judge a resolver on the backends of the
    /// names it looks up for others.
    pub const KIND_SERVER: u8 = 3;
    /// Host mode: a new TCP connection whose destination a DNAT changed
    /// (kube-proxy's Service rules, Docker's published ports): the header
    /// holds the client (source) and the address the client asked for
    /// (destination, the VIP), and a [`NatRecord`]'s tail the backend the
    /// kernel chose. Header and tail, no owner.
    pub const KIND_NAT: u8 = 4;
    /// Host mode: a `getaddrinfo` call in libc returned (uprobes): the
    /// name asked and the addresses given, with the caller as owner. A
    /// lookup that never became a DNS packet (nss-resolve's Varlink to
    /// systemd-resolved, nscd, /etc/hosts) is seen only here. A
    /// [`LookupRecord`].
    pub const KIND_LOOKUP: u8 = 5;
    /// Host mode: the bytes a TCP connection to a VIP carried, a
    /// [`TrafficRecord`]: the header holds the client (source) and the
    /// address it connected to (destination), as its socket knows them,
    /// with no owner. Sent when the connection closes; the walk over open
    /// connections at a report (an iterator, not the ring) writes the
    /// same record with `BIT_STILL_OPEN`.
    pub const KIND_TRAFFIC: u8 = 6;

    /// `RecordHeader::bits`: the DNS payload came over TCP.
    pub const BIT_TCP: u8 = 1;
    /// `RecordHeader::bits`: fewer bytes were copied than the packet held.
    pub const BIT_TRUNCATED: u8 = 2;
    /// `RecordHeader::bits`, `--all-tcp` only: the kernel's flow table had
    /// not seen this flow (or had forgotten it). The kernel table decides
    /// this in live mode, so userspace keeps no flow table of its own.
    pub const BIT_FLOW_NEW: u8 = 4;
    /// `RecordHeader::bits`: the packet's socket is known; `cgroup_id` and
    /// `socket_cookie` are set.
    pub const BIT_SOCKET: u8 = 8;
    /// `RecordHeader::bits`: the process that last connected or sent on the
    /// socket is known; `tgid`, `pid`, `comm` and `netns_cookie` are set.
    pub const BIT_PROCESS: u8 = 16;
    /// `RecordHeader::bits` of a [`KIND_TRAFFIC`] record: the connection
    /// was still open, and its bytes are so far.
    pub const BIT_STILL_OPEN: u8 = 32;

    /// Which owner fields records carry. The loader writes it, as a byte,
    /// into the program's `OWNERS` global before load (read-only data, so
    /// the verifier prunes what is not asked for); ordered, so `>=` reads
    /// "at least".
    #[repr(u8)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Owners {
        /// Nothing: `--iface` by address, no helper calls at all.
        Nothing = 0,
        /// The socket's cgroup and cookie.
        Socket = 1,
        /// Also the process (host mode, where the connect and sendmsg
        /// hooks fill the socket table).
        Process = 2,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RecordHeader {
        pub kind: u8,
        /// 4 or 6.
        pub ip_version: u8,
        /// Byte 13 of the TCP header; 0 for UDP.
        pub tcp_flags: u8,
        pub bits: u8,
        pub tcp_seq: u32,
        /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
        pub ktime_ns: u64,
        /// Network byte order; IPv4 in the first 4 bytes.
        pub src_addr: [u8; 16],
        pub dst_addr: [u8; 16],
        pub src_port: u16,
        pub dst_port: u16,
        /// Payload bytes that follow the header in a DNS record (fewer than
        /// the packet carried when `BIT_TRUNCATED` is set).
        pub copied_len: u16,
        pub reserved: u16,
        /// Who owns the packet's socket (host mode, and TC egress where the
        /// kernel knows the socket): valid with `BIT_SOCKET`.
        pub cgroup_id: u64,
        pub socket_cookie: u64,
        /// Valid with `BIT_PROCESS`: from the socket's last connect or
        /// sendmsg, the only hooks that run in the process's context.
        pub netns_cookie: u64,
        pub tgid: u32,
        pub pid: u32,
        pub comm: [u8; 16],
    }

    pub const HEADER_LEN: usize = core::mem::size_of::<RecordHeader>();

    /// The process behind a socket, remembered by the kernel program at
    /// connect and sendmsg (process context), keyed by socket cookie, and
    /// copied into the records of the socket's packets.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SocketOwner {
        pub netns_cookie: u64,
        pub tgid: u32,
        pub pid: u32,
        pub comm: [u8; 16],
        /// Where the last connect or sendmsg asked to go, before any NAT
        /// (network byte order, IPv4 in the first 4 bytes; `asked_port` 0
        /// when unknown). A UDP datagram a DNAT moved away from port 53
        /// (Docker's embedded DNS: 127.0.0.11:53 to a high port) is still
        /// the query the app sent there.
        pub asked_addr: [u8; 16],
        pub asked_port: u16,
        pub asked_version: u8,
        pub reserved: [u8; 5],
    }

    /// A DNS record: header plus payload, reserved at this fixed size
    /// because the verifier needs a constant reservation.
    ///
    /// Two sizes: most DNS messages fit `SHORT_DNS_PAYLOAD`, and a smaller
    /// slot leaves the ring room for four times as many of them.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct DnsRecord<const N: usize = MAX_DNS_PAYLOAD> {
        pub header: RecordHeader,
        pub payload: [u8; N],
    }

    /// A [`KIND_NAT`] record: the header, then where the connection really
    /// goes.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct NatRecord {
        pub header: RecordHeader,
        /// Network byte order, IPv4 in the first 4 bytes.
        pub backend_addr: [u8; 16],
        pub backend_port: u16,
        pub reserved: [u8; 6],
    }

    /// Bytes after the header in a [`NatRecord`] that carry the backend.
    pub const NAT_TAIL_LEN: usize = 18;

    /// A [`KIND_TRAFFIC`] record: the header, then the payload bytes the
    /// connection carried each way (from `tcp_sock`: what was sent, each
    /// byte once however often retransmitted, and what was received,
    /// SYN and FIN not counted).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct TrafficRecord {
        pub header: RecordHeader,
        pub bytes_sent: u64,
        pub bytes_received: u64,
    }

    /// Bytes of a [`TrafficRecord`], header included.
    pub const TRAFFIC_LEN: usize = HEADER_LEN + 16;

    const _: () = assert!(core::mem::size_of::<TrafficRecord>() == TRAFFIC_LEN);

    /// An address a DNAT was seen behind (a VIP), as the kernel's `VIPS`
    /// map keys it: userspace adds each when it first sees a translation
    /// to it, and only connections to these pay for a [`TrafficRecord`].
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VipKey {
        /// Network byte order, IPv4 in the first 4 bytes.
        pub addr: [u8; 16],
        /// Host byte order.
        pub port: u16,
        /// 4 or 6.
        pub version: u8,
        pub reserved: [u8; 5],
    }

    /// Bytes of a [`VipKey`].
    pub const VIP_KEY_LEN: usize = 24;

    const _: () = assert!(core::mem::size_of::<VipKey>() == VIP_KEY_LEN);

    impl VipKey {
        /// The key as the kernel's map holds it.
        pub fn to_bytes(&self) -> [u8; VIP_KEY_LEN] {
            let mut b = [0; VIP_KEY_LEN];
            b[..16].copy_from_slice(&self.addr);
            b[16..18].copy_from_slice(&self.port.to_ne_bytes());
            b[18] = self.version;
            b
        }
    }

    /// Bytes of the name asked a [`LookupRecord`] holds, its NUL included:
    /// a DNS name in presentation form is at most 253.
    pub const LOOKUP_NAME_LEN: usize = 256;
    /// Addresses a [`LookupRecord`] holds, at most (distinct in a row:
    /// glibc lists each address once per socket type).
    pub const LOOKUP_ADDRESSES: usize = 16;

    /// A [`KIND_LOOKUP`] record: the header (its owner fields set, with
    /// `BIT_PROCESS`; no socket, no addresses), then the call.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct LookupRecord {
        pub header: RecordHeader,
        /// `bpf_ktime_get_ns()` when the call began (the header's is when
        /// it returned): a DNS answer the caller received in between was
        /// this lookup on the wire.
        pub started_ns: u64,
        /// NUL-terminated, as the caller passed it.
        pub name: [u8; LOOKUP_NAME_LEN],
        /// Network byte order, IPv4 in the first 4 bytes; `versions` says
        /// which.
        pub addresses: [[u8; 16]; LOOKUP_ADDRESSES],
        pub versions: [u8; LOOKUP_ADDRESSES],
        /// Entries of `addresses` filled.
        pub count: u8,
        pub reserved: [u8; 7],
    }

    /// Where a [`LookupRecord`]'s fields sit after the header.
    pub mod lookup_offset {
        use super::{HEADER_LEN, LOOKUP_ADDRESSES, LOOKUP_NAME_LEN};
        pub const STARTED_NS: usize = HEADER_LEN;
        pub const NAME: usize = STARTED_NS + 8;
        pub const ADDRESSES: usize = NAME + LOOKUP_NAME_LEN;
        pub const VERSIONS: usize = ADDRESSES + 16 * LOOKUP_ADDRESSES;
        pub const COUNT: usize = VERSIONS + LOOKUP_ADDRESSES;
        pub const END: usize = COUNT + 1;
    }

    const _: () = assert!(
        core::mem::offset_of!(LookupRecord, count) == lookup_offset::COUNT
            && core::mem::offset_of!(LookupRecord, name) == lookup_offset::NAME
            && core::mem::offset_of!(LookupRecord, addresses) == lookup_offset::ADDRESSES
    );

    /// The payload size of the short DNS slot (a power of two, like
    /// `MAX_DNS_PAYLOAD`).
    pub const SHORT_DNS_PAYLOAD: usize = 512;

    const _: () = assert!(HEADER_LEN == 104);
    const _: () = assert!(core::mem::align_of::<DnsRecord>() <= 8);

    /// Where each field of [`RecordHeader`] sits in a ring-buffer item: the
    /// `#[repr(C)]` layout, written down once for the byte-level readers
    /// and writers (a test checks it against `offset_of!`).
    pub mod offset {
        pub const KIND: usize = 0;
        pub const IP_VERSION: usize = 1;
        pub const TCP_FLAGS: usize = 2;
        pub const BITS: usize = 3;
        pub const TCP_SEQ: usize = 4;
        pub const KTIME_NS: usize = 8;
        pub const SRC_ADDR: usize = 16;
        pub const DST_ADDR: usize = 32;
        pub const SRC_PORT: usize = 48;
        pub const DST_PORT: usize = 50;
        pub const COPIED_LEN: usize = 52;
        pub const RESERVED: usize = 54;
        pub const CGROUP_ID: usize = 56;
        pub const SOCKET_COOKIE: usize = 64;
        pub const NETNS_COOKIE: usize = 72;
        pub const TGID: usize = 80;
        pub const PID: usize = 84;
        pub const COMM: usize = 88;
    }

    impl RecordHeader {
        /// Reads a header from the start of a ring-buffer item.
        pub fn from_bytes(b: &[u8]) -> Option<Self> {
            let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
            let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
            let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let u64_at = |i: usize| {
                let mut a = [0; 8];
                a.copy_from_slice(&b[i..i + 8]);
                u64::from_ne_bytes(a)
            };
            let array = |i: usize| {
                let mut a = [0; 16];
                a.copy_from_slice(&b[i..i + 16]);
                a
            };
            Some(Self {
                kind: b[offset::KIND],
                ip_version: b[offset::IP_VERSION],
                tcp_flags: b[offset::TCP_FLAGS],
                bits: b[offset::BITS],
                ktime_ns: u64_at(offset::KTIME_NS),
                src_addr: array(offset::SRC_ADDR),
                dst_addr: array(offset::DST_ADDR),
                src_port: u16_at(offset::SRC_PORT),
                dst_port: u16_at(offset::DST_PORT),
                tcp_seq: u32_at(offset::TCP_SEQ),
                copied_len: u16_at(offset::COPIED_LEN),
                reserved: u16_at(offset::RESERVED),
                cgroup_id: u64_at(offset::CGROUP_ID),
                socket_cookie: u64_at(offset::SOCKET_COOKIE),
                netns_cookie: u64_at(offset::NETNS_COOKIE),
                tgid: u32_at(offset::TGID),
                pid: u32_at(offset::PID),
                comm: array(offset::COMM),
            })
        }

        /// The header as the kernel writes it (tests build records with it).
        pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
            let mut b = [0; HEADER_LEN];
            let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
            put(offset::KIND, &[self.kind]);
            put(offset::IP_VERSION, &[self.ip_version]);
            put(offset::TCP_FLAGS, &[self.tcp_flags]);
            put(offset::BITS, &[self.bits]);
            put(offset::KTIME_NS, &self.ktime_ns.to_ne_bytes());
            put(offset::SRC_ADDR, &self.src_addr);
            put(offset::DST_ADDR, &self.dst_addr);
            put(offset::SRC_PORT, &self.src_port.to_ne_bytes());
            put(offset::DST_PORT, &self.dst_port.to_ne_bytes());
            put(offset::TCP_SEQ, &self.tcp_seq.to_ne_bytes());
            put(offset::COPIED_LEN, &self.copied_len.to_ne_bytes());
            put(offset::RESERVED, &self.reserved.to_ne_bytes());
            put(offset::CGROUP_ID, &self.cgroup_id.to_ne_bytes());
            put(offset::SOCKET_COOKIE, &self.socket_cookie.to_ne_bytes());
            put(offset::NETNS_COOKIE, &self.netns_cookie.to_ne_bytes());
            put(offset::TGID, &self.tgid.to_ne_bytes());
            put(offset::PID, &self.pid.to_ne_bytes());
            put(offset::COMM, &self.comm);
            b
        }
    }

    /// Counter slots in the kernel's `COUNTERS` array: one 64-byte line
    /// of `SLOTS_PER_CPU` u64s per CPU, at `cpu * SLOTS_PER_CPU + slot`. A
    /// plain mmap-able array rather than a per-CPU map, so userspace can
    /// read it through shared memory after dropping CAP_BPF (with
    /// `kernel.unprivileged_bpf_disabled` set, every bpf() call needs it).
    pub mod counter {
        pub const PACKETS_SEEN: u32 = 0;
        pub const RECORDS_EMITTED: u32 = 1;
        /// Reservation failed: the ring was full.
        pub const RECORDS_LOST: u32 = 2;
        pub const DNS_TRUNCATED: u32 = 3;
        /// IP fragments: not decoded in the kernel (a non-first fragment
        /// has no transport header, a first one not the whole message).
        pub const IP_FRAGMENTS: u32 = 4;
        pub const COUNT: u32 = 5;
        /// A cache line per CPU, so CPUs never share one.
        pub const SLOTS_PER_CPU: u32 = 8;
        /// The kernel object's default; the loader sets the real CPU count.
        pub const DEFAULT_CPUS: u32 = 256;
    }

    /// Key of the kernel's `--all-tcp` flow table: both endpoints, the
    /// smaller (address, port) first, so either direction finds the flow.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FlowKey {
        pub addr_a: [u8; 16],
        pub addr_b: [u8; 16],
        pub port_a: u16,
        pub port_b: u16,
        pub ip_version: u32,
    }

    /// A flow of the `--all-tcp` tables, kernel and userspace alike; its
    /// rule is [`FlowState::observe`](crate::record::FlowState::observe).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FlowState {
        pub last_seen_ns: u64,
        pub closed: u32,
        pub reserved: u32,
    }
}

/// What one segment means for the `--all-tcp` bookkeeping of its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// The flow was not known (or was forgotten): spec 4 counts it.
    New,
    /// The flow just closed (FIN or RST).
    Closed,
    Nothing,
}

/// Spec 4's `-a` rule, written once for the kernel's flow table and the
/// aggregator's: a flow counts when first seen, or seen again after it was
/// forgotten (TIME_WAIT after a close, or idle past keepalive); a SYN
/// reopens a closed flow (port reuse).
impl record::FlowState {
    /// The state of a flow first seen at `now_ns` with a segment of `flags`.
    #[inline(always)]
    pub const fn first_seen(now_ns: u64, flags: u8) -> Self {
        Self {
            last_seen_ns: now_ns,
            closed: closes_flow(flags) as u32,
            reserved: 0,
        }
    }

    /// Whether the flow is forgotten by `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, now_ns: u64) -> bool {
        let limit = if self.closed != 0 {
            flow_timing::TIME_WAIT_NANOS
        } else {
            flow_timing::IDLE_NANOS
        };
        now_ns.saturating_sub(self.last_seen_ns) >= limit
    }

    /// One more segment of a known flow, at `now_ns`.
    #[inline(always)]
    pub fn observe(&mut self, now_ns: u64, flags: u8) -> FlowEvent {
        let closes = closes_flow(flags);
        let forgotten = self.expired(now_ns);
        self.last_seen_ns = now_ns;
        if forgotten {
            self.closed = u32::from(closes);
            return FlowEvent::New;
        }
        if flags & tcp_flags::SYN != 0 {
            self.closed = 0;
        }
        if closes && self.closed == 0 {
            self.closed = 1;
            return FlowEvent::Closed;
        }
        FlowEvent::Nothing
    }
}

/// `--all-tcp` flow-table timing, shared so the kernel's table and the
/// aggregator's forget flows alike.
pub mod flow_timing {
    /// How long a closed flow is remembered: 2 × MSL as Linux uses (60 s).
    pub const TIME_WAIT_NANOS: u64 = 60 * 1_000_000_000;
    /// An open flow idle this long is forgotten: longer than the 2-hour TCP
    /// keepalive default, so idle keepalive connections are not recounted.
    pub const IDLE_NANOS: u64 = 3 * 3600 * 1_000_000_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syn_without_ack_is_an_attempt_ecn_bits_or_not() {
        use tcp_flags::*;
        assert!(is_connection_attempt(SYN));
        assert!(is_connection_attempt(SYN | ECE | CWR), "ECN-setup SYN");
        assert!(is_connection_attempt(SYN | ECE));
        assert!(!is_connection_attempt(SYN | ACK));
        assert!(!is_connection_attempt(SYN | ACK | ECE), "ECN-setup SYN-ACK");
        assert!(!is_connection_attempt(SYN | RST));
        assert!(!is_connection_attempt(ACK));
    }

    #[test]
    fn syn_acks_and_resets_may_answer_attempts_nothing_else_does() {
        use tcp_flags::*;
        for reply in [SYN | ACK, SYN | ACK | ECE, RST, RST | ACK] {
            assert!(is_attempt_reply(reply), "{reply:#x}");
            assert_eq!(
                classify_tcp(reply, 80, 40000, 0, false),
                TcpVerdict::Segment
            );
        }
        for other in [SYN, ACK, ACK | PSH, FIN | ACK, SYN | ACK | FIN] {
            assert!(!is_attempt_reply(other), "{other:#x}");
        }
        assert_eq!(
            classify_tcp(ACK | PSH, 80, 40000, 100, false),
            TcpVerdict::Drop
        );
    }

    #[test]
    fn bulk_data_is_dropped_unless_all_tcp() {
        let flags = tcp_flags::ACK | tcp_flags::PSH;
        assert_eq!(
            classify_tcp(flags, 443, 50000, 1400, false),
            TcpVerdict::Drop
        );
        assert_eq!(
            classify_tcp(flags, 443, 50000, 1400, true),
            TcpVerdict::Segment
        );
    }

    #[test]
    fn header_round_trips_through_bytes() {
        let h = record::RecordHeader {
            kind: record::KIND_DNS,
            ip_version: 6,
            tcp_flags: 0x18,
            bits: record::BIT_TCP,
            ktime_ns: 0x0102_0304_0506_0708,
            src_addr: [1; 16],
            dst_addr: [2; 16],
            src_port: 53,
            dst_port: 40000,
            tcp_seq: 99,
            copied_len: 100,
            reserved: 0,
            cgroup_id: 0x1234,
            socket_cookie: 0x5678,
            netns_cookie: 0x9abc,
            tgid: 41,
            pid: 42,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        let bytes = h.to_bytes();
        assert_eq!(record::RecordHeader::from_bytes(&bytes), Some(h));
        assert_eq!(
            record::RecordHeader::from_bytes(&bytes[..record::HEADER_LEN - 1]),
            None
        );
    }

    #[test]
    fn named_offsets_are_the_repr_c_layout() {
        use core::mem::offset_of;
        use record::{offset, RecordHeader as H};
        let layout = [
            (offset::KIND, offset_of!(H, kind)),
            (offset::IP_VERSION, offset_of!(H, ip_version)),
            (offset::TCP_FLAGS, offset_of!(H, tcp_flags)),
            (offset::BITS, offset_of!(H, bits)),
            (offset::KTIME_NS, offset_of!(H, ktime_ns)),
            (offset::SRC_ADDR, offset_of!(H, src_addr)),
            (offset::DST_ADDR, offset_of!(H, dst_addr)),
            (offset::SRC_PORT, offset_of!(H, src_port)),
            (offset::DST_PORT, offset_of!(H, dst_port)),
            (offset::TCP_SEQ, offset_of!(H, tcp_seq)),
            (offset::COPIED_LEN, offset_of!(H, copied_len)),
            (offset::RESERVED, offset_of!(H, reserved)),
            (offset::CGROUP_ID, offset_of!(H, cgroup_id)),
            (offset::SOCKET_COOKIE, offset_of!(H, socket_cookie)),
            (offset::NETNS_COOKIE, offset_of!(H, netns_cookie)),
            (offset::TGID, offset_of!(H, tgid)),
            (offset::PID, offset_of!(H, pid)),
            (offset::COMM, offset_of!(H, comm)),
        ];
        for (named, actual) in layout {
            assert_eq!(named, actual);
        }
    }

    #[test]
    fn a_flow_counts_when_new_and_again_once_forgotten() {
        use record::FlowState;
        let (syn, ack, fin) = (
            tcp_flags::SYN,
            tcp_flags::ACK,
            tcp_flags::FIN | tcp_flags::ACK,
        );
        let mut flow = FlowState::first_seen(0, syn);
        assert_eq!(flow.observe(1, ack), FlowEvent::Nothing);
        assert_eq!(flow.observe(2, fin), FlowEvent::Closed);
        // The last ACK of the close is the same flow (TIME_WAIT).
        assert_eq!(flow.observe(3, ack), FlowEvent::Nothing);
        // A SYN reuses the port: the flow is open again, not new.
        assert_eq!(flow.observe(4, syn), FlowEvent::Nothing);
        assert_eq!(flow.closed, 0);
        // Idle past keepalive: forgotten, so it counts again.
        let later = 4 + flow_timing::IDLE_NANOS;
        assert!(flow.expired(later));
        assert_eq!(flow.observe(later, ack), FlowEvent::New);
        // Closed flows are forgotten after TIME_WAIT.
        let closed = FlowState::first_seen(0, fin);
        assert!(!closed.expired(flow_timing::TIME_WAIT_NANOS - 1));
        assert!(closed.expired(flow_timing::TIME_WAIT_NANOS));
    }

    #[test]
    fn dns_over_tcp_payload_is_kept() {
        let flags = tcp_flags::ACK | tcp_flags::PSH;
        assert_eq!(
            classify_tcp(flags, 53, 50000, 90, false),
            TcpVerdict::DnsPayload
        );
        assert_eq!(
            classify_tcp(tcp_flags::ACK, 50000, 53, 0, false),
            TcpVerdict::Drop
        );
        assert_eq!(
            classify_tcp(tcp_flags::SYN | tcp_flags::ACK, 53, 50000, 0, false),
            TcpVerdict::Segment
        );
    }
}
