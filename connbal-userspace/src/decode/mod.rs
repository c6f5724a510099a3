//! Frames to events. A frame's link layer (`link`) and any tunnel it
//! carries (`tunnel`) are taken off, the fixed-offset path (`fast`) answers
//! for the common case and the full decoder (`full`, etherparse's lax
//! slicer) for the rest; IP fragments are handed back (`fragment`) for the
//! reassembler (`defrag`). Decoding is a pure function of the frame: it
//! says what it found in a [`Decoded`], and [`FrameDecoder`], which replay
//! and the fuzz targets own, counts it, tracks the frames' span, and
//! feeds fragments to the reassembler.
//!
//! The same pre-filter as the kernel program (connbal_common) decides what
//! becomes an event; everything else is dropped here, before any work that
//! allocates.

mod defrag;
mod fast;
mod fragment;
mod frames;
mod full;
mod link;
#[cfg(test)]
mod tests;
mod tunnel;

pub use fast::{quick_ip, Quick};
pub use fragment::{DatagramId, Fragment};
pub use frames::FrameDecoder;
pub use full::decode_sliced;

use crate::aggregator::Event;
use crate::capture::Frame;
use crate::tally::counter_set;
use serde::Serialize;

counter_set! {
    /// What the capture side saw; reported with `-v` and in JSON.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct InputStats {
        pub packets: u64,
        pub bytes: u64,
        /// Frames whose headers were damaged (IPv4 IHL below 5, a TCP data
        /// offset past the frame, shorter than the link header, ...).
        pub malformed_packets_skipped: u64,
        /// Frames whose headers were cut short by the snap length.
        pub truncated_packets_skipped: u64,
        /// IP fragments given up: timed out (30 s for IPv4, 60 s for
        /// IPv6, in capture time), pushed out of a full table,
        /// inconsistent, cut by the snap length, or still incomplete at
        /// the end of the input.
        pub ip_fragments_skipped: u64,
        /// IP fragments that became part of a whole datagram.
        pub ip_fragments_reassembled: u64,
        /// Datagrams rebuilt from fragments, then decoded as any packet.
        pub ip_datagrams_reassembled: u64,
        /// Frames on a pcapng interface whose link type connbal does not
        /// decode (a warning names the type).
        pub unsupported_link_packets: u64,
        /// Frames that carry no IP (ARP, another address family or PPP
        /// protocol): read, and of no interest.
        pub non_ip_packets: u64,
        /// Container blocks that carry no packet (pcapng name resolution,
        /// statistics, custom blocks), skipped on purpose.
        pub capture_blocks_skipped: u64,
        /// Inner packets unwrapped from a tunnel or an encapsulation
        /// (VXLAN, Geneve, GRE, ERSPAN, IP-in-IP, PPPoE).
        pub tunnelled_packets: u64,
    }
}

/// What one frame held.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub found: Found<'a>,
    /// It came inside a tunnel or an encapsulation.
    pub tunnelled: bool,
}

impl<'a> Decoded<'a> {
    const fn new(found: Found<'a>, tunnelled: bool) -> Self {
        Self { found, tunnelled }
    }

    const fn plain(found: Found<'a>) -> Self {
        Self::new(found, false)
    }
}

/// What the innermost packet of a frame is, to the pre-filter.
#[derive(Debug)]
pub enum Found<'a> {
    /// Kept: a DNS message, a connection attempt or its reply, or with
    /// `-a` any segment.
    Event(Event<'a>),
    /// Well-formed, and dropped by the pre-filter (bulk data, other UDP,
    /// other protocols).
    Dropped,
    /// A fragment of an IP datagram.
    Fragment(Fragment<'a>),
    /// An IPv6 fragment whose fragment header cannot be found.
    UnplaceableFragment,
    /// Carries no IP (ARP, another address family or PPP protocol).
    NotIp,
    /// Headers damaged, or cut by the snap length (`cut_short`).
    Damaged { cut_short: bool },
    /// A frame of a link type connbal does not decode.
    UnsupportedLink,
}

/// What `frame` holds: the fixed-offset path first, the full decoder for
/// whatever it leaves.
#[inline]
pub fn decode<'a>(frame: &Frame<'a>, all_tcp: bool) -> Decoded<'a> {
    match quick_ip(frame, all_tcp) {
        Quick::Drop => Decoded::plain(Found::Dropped),
        Quick::Event(event) => Decoded::plain(Found::Event(event)),
        Quick::Full => decode_sliced(frame, all_tcp),
    }
}
