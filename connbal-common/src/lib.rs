//! Types and predicates shared by the connbal eBPF program and userspace.
//!
//! Everything here is `no_std` and allocation-free so the kernel side can use
//! it. The classification predicates live here, not in either consumer, so
//! the in-kernel pre-filter and the replay decoder keep exactly the same
//! notion of "interesting packet" (spec section 1).
#![no_std]
#![forbid(unsafe_code)]

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

/// A connection attempt is a segment whose flag byte is exactly SYN
/// (`tcp[13] == 0x02`), as the original's capture filter had it. ECN-setup
/// SYNs (SYN|ECE|CWR) are deliberately not attempts, matching the original.
#[inline(always)]
pub const fn is_connection_attempt(flags: u8) -> bool {
    flags == tcp_flags::SYN
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
    if all_tcp || is_connection_attempt(flags) {
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

    /// `RecordHeader::bits`: the DNS payload came over TCP.
    pub const BIT_TCP: u8 = 1;
    /// `RecordHeader::bits`: fewer bytes were copied than the packet held.
    pub const BIT_TRUNCATED: u8 = 2;
    /// `RecordHeader::bits`, `--all-tcp` only: the kernel's flow table had
    /// not seen this flow (or had forgotten it). The kernel table decides
    /// this in live mode, so userspace keeps no flow table of its own.
    pub const BIT_FLOW_NEW: u8 = 4;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RecordHeader {
        pub kind: u8,
        /// 4 or 6.
        pub ip_version: u8,
        /// Byte 13 of the TCP header; 0 for UDP.
        pub tcp_flags: u8,
        pub bits: u8,
        pub ifindex: u32,
        /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
        pub ktime_ns: u64,
        /// Network byte order; IPv4 in the first 4 bytes.
        pub src_addr: [u8; 16],
        pub dst_addr: [u8; 16],
        pub src_port: u16,
        pub dst_port: u16,
        pub tcp_seq: u32,
        /// Payload bytes that follow the header in a DNS record.
        pub copied_len: u16,
        /// Payload bytes the packet carried.
        pub wire_len: u16,
        pub _reserved: u32,
    }

    pub const HEADER_LEN: usize = core::mem::size_of::<RecordHeader>();

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

    /// The payload size of the short DNS slot (a power of two, like
    /// `MAX_DNS_PAYLOAD`).
    pub const SHORT_DNS_PAYLOAD: usize = 512;

    const _: () = assert!(HEADER_LEN == 64);
    const _: () = assert!(core::mem::align_of::<DnsRecord>() <= 8);

    impl RecordHeader {
        /// Reads a header from the start of a ring-buffer item.
        pub fn from_bytes(b: &[u8]) -> Option<Self> {
            if b.len() < HEADER_LEN {
                return None;
            }
            let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
            let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let mut src_addr = [0; 16];
            let mut dst_addr = [0; 16];
            src_addr.copy_from_slice(&b[16..32]);
            dst_addr.copy_from_slice(&b[32..48]);
            let mut ktime = [0; 8];
            ktime.copy_from_slice(&b[8..16]);
            Some(Self {
                kind: b[0],
                ip_version: b[1],
                tcp_flags: b[2],
                bits: b[3],
                ifindex: u32_at(4),
                ktime_ns: u64::from_ne_bytes(ktime),
                src_addr,
                dst_addr,
                src_port: u16_at(48),
                dst_port: u16_at(50),
                tcp_seq: u32_at(52),
                copied_len: u16_at(56),
                wire_len: u16_at(58),
                _reserved: u32_at(60),
            })
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
        pub const COUNT: u32 = 4;
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

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct FlowState {
        pub last_seen_ns: u64,
        pub closed: u32,
        pub _reserved: u32,
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
    fn only_a_bare_syn_is_an_attempt() {
        assert!(is_connection_attempt(tcp_flags::SYN));
        assert!(!is_connection_attempt(tcp_flags::SYN | tcp_flags::ACK));
        assert!(!is_connection_attempt(
            tcp_flags::SYN | tcp_flags::ECE | tcp_flags::CWR
        ));
        assert!(!is_connection_attempt(tcp_flags::ACK));
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
            ifindex: 7,
            ktime_ns: 0x0102_0304_0506_0708,
            src_addr: [1; 16],
            dst_addr: [2; 16],
            src_port: 53,
            dst_port: 40000,
            tcp_seq: 99,
            copied_len: 100,
            wire_len: 3000,
            _reserved: 0,
        };
        let mut bytes = [0u8; record::HEADER_LEN];
        bytes[0] = h.kind;
        bytes[1] = h.ip_version;
        bytes[2] = h.tcp_flags;
        bytes[3] = h.bits;
        bytes[4..8].copy_from_slice(&h.ifindex.to_ne_bytes());
        bytes[8..16].copy_from_slice(&h.ktime_ns.to_ne_bytes());
        bytes[16..32].copy_from_slice(&h.src_addr);
        bytes[32..48].copy_from_slice(&h.dst_addr);
        bytes[48..50].copy_from_slice(&h.src_port.to_ne_bytes());
        bytes[50..52].copy_from_slice(&h.dst_port.to_ne_bytes());
        bytes[52..56].copy_from_slice(&h.tcp_seq.to_ne_bytes());
        bytes[56..58].copy_from_slice(&h.copied_len.to_ne_bytes());
        bytes[58..60].copy_from_slice(&h.wire_len.to_ne_bytes());
        assert_eq!(record::RecordHeader::from_bytes(&bytes), Some(h));
        assert_eq!(record::RecordHeader::from_bytes(&bytes[..63]), None);
        // The offsets used above are the repr(C) layout's.
        assert_eq!(core::mem::offset_of!(record::RecordHeader, src_port), 48);
        assert_eq!(core::mem::offset_of!(record::RecordHeader, wire_len), 58);
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
