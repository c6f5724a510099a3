//! IP fragments as the decoder finds them: which datagram each belongs to
//! and where it goes in it, for the reassembler (`defrag`). The decoder
//! hands fragments back instead of placing them, so decoding stays a pure
//! function of the frame.

use crate::time::Timestamp;
use etherparse::{IpFragOffset, IpNumber, LaxNetSlice};
use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The datagram a fragment belongs to (RFC 791's and RFC 8200's
/// identification, with the addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatagramId {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        id: u32,
    },
}

/// One fragment, as the decoder found it.
#[derive(Debug)]
pub struct Fragment<'a> {
    pub datagram: DatagramId,
    pub ts: Timestamp,
    pub offset: IpFragOffset,
    pub more_fragments: bool,
    /// The protocol of the datagram's payload (IPv6: the fragment
    /// header's next header).
    pub protocol: IpNumber,
    /// Borrowed from the frame, except where IPv6 extension headers the
    /// slicer read past the fragment header are put back in front.
    pub data: Cow<'a, [u8]>,
    /// The snap length or the IP header's length cut its data.
    pub cut: bool,
}

/// The IP payload of a fragmented packet, as the slicer found it.
pub(super) struct Piece<'a> {
    pub ts: Timestamp,
    pub protocol: IpNumber,
    pub data: &'a [u8],
    pub cut: bool,
}

/// The fragment `piece` is, with what identifies its datagram; `None` for
/// an IPv6 packet whose fragment header cannot be found.
pub(super) fn fragment_of<'a>(
    net: Option<&LaxNetSlice<'a>>,
    piece: &Piece<'a>,
) -> Option<Fragment<'a>> {
    match net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            Some(Fragment {
                datagram: DatagramId::V4 {
                    src: h.source_addr(),
                    dst: h.destination_addr(),
                    id: h.identification(),
                },
                ts: piece.ts,
                offset: h.fragments_offset(),
                more_fragments: h.more_fragments(),
                protocol: piece.protocol,
                data: Cow::Borrowed(piece.data),
                cut: piece.cut,
            })
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let exts = v6.extensions().slice();
            let header = v6.extensions().clone().into_iter().find_map(|e| match e {
                etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f),
                _ => None,
            })?;
            // What follows the fragment header is the fragment's data; when
            // the slicer read extension headers past it (they belong to the
            // fragmentable part), they go first.
            let after = header.slice().as_ptr() as usize + header.slice().len();
            let read_past = exts
                .get(after.saturating_sub(exts.as_ptr() as usize)..)
                .filter(|e| !e.is_empty());
            let data = match read_past {
                Some(e) => Cow::Owned([e, piece.data].concat()),
                None => Cow::Borrowed(piece.data),
            };
            let h = v6.header();
            Some(Fragment {
                datagram: DatagramId::V6 {
                    src: h.source_addr(),
                    dst: h.destination_addr(),
                    id: header.identification(),
                },
                ts: piece.ts,
                offset: header.fragment_offset(),
                more_fragments: header.more_fragments(),
                protocol: header.next_header(),
                data,
                cut: piece.cut,
            })
        }
        _ => None,
    }
}
