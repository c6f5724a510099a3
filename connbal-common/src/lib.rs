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
