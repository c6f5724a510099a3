//! Classic libpcap files: both byte orders, microsecond and nanosecond
//! timestamps. Headers and records are parsed with pcap-parser; lengths are
//! bounded here before any read is sized by them.

use super::{at_end, need, timestamp, Frame, LinkType, Problem, MAX_FRAME};
use crate::capture::stream::ByteStream;
use pcap_parser::pcap::{parse_pcap_frame, parse_pcap_frame_be, parse_pcap_header};

const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

pub struct Pcap {
    big_endian: bool,
    units_per_sec: u64,
    link: LinkType,
}

/// The link type in a pcap header's 32-bit field, as libpcap reads it: the
/// low 16 bits. Bits 26 to 31 may carry the FCS length (Ethernet written
/// as 0x30000001), and only the reserved bits 16 to 25 make it invalid.
fn link_type(field: u32) -> Result<LinkType, Problem> {
    const RESERVED: u32 = 0x03FF_0000;
    let code = field & 0xFFFF;
    if field & RESERVED != 0 {
        return Err(Problem::Unsupported {
            what: "pcap link type field (reserved bits set)",
            value: format!("{field:#010x}"),
        });
    }
    LinkType::from_linktype(code as i32).ok_or_else(|| Problem::Unsupported {
        what: "pcap link type",
        value: super::linktype_name(code),
    })
}

impl Pcap {
    pub fn open(stream: &mut ByteStream) -> Result<Self, Problem> {
        let bytes = need(stream, FILE_HEADER, "pcap file header")?;
        let (_, header) = parse_pcap_header(bytes)
            // pcap-parser's errors are nom's debug values; say what failed.
            .map_err(|_| Problem::Malformed("pcap file header: its fields do not parse".into()))?;
        let link = link_type(header.network.0 as u32)?;
        let units_per_sec = if header.is_nanosecond_precision() {
            1_000_000_000
        } else {
            1_000_000
        };
        stream.consume(FILE_HEADER);
        Ok(Self {
            big_endian: header.is_bigendian(),
            units_per_sec,
            link,
        })
    }

    pub fn next<'s>(
        &mut self,
        stream: &'s mut ByteStream,
    ) -> Result<Option<(Frame<'s>, usize)>, Problem> {
        if at_end(stream)? {
            return Ok(None);
        }
        let header = need(stream, RECORD_HEADER, "pcap record header")?;
        let caplen_bytes = [header[8], header[9], header[10], header[11]];
        let caplen = if self.big_endian {
            u32::from_be_bytes(caplen_bytes)
        } else {
            u32::from_le_bytes(caplen_bytes)
        };
        if caplen > MAX_FRAME {
            return Err(Problem::BadLength {
                what: "pcap captured length",
                detail: format!("{caplen} exceeds the {MAX_FRAME}-byte limit"),
            });
        }
        let record_len = RECORD_HEADER + caplen as usize;
        let bytes = need(stream, record_len, "pcap record data")?;
        let parsed = if self.big_endian {
            parse_pcap_frame_be(bytes)
        } else {
            parse_pcap_frame(bytes)
        };
        let (_, block) = parsed.map_err(|_| {
            Problem::Malformed(format!(
                "pcap record header: a {caplen}-byte record does not parse"
            ))
        })?;
        let frame = Frame {
            ts: timestamp(
                i64::from(block.ts_sec),
                u64::from(block.ts_usec),
                self.units_per_sec,
            ),
            link: self.link,
            data: block.data,
            wire_len: block.origlen.max(caplen),
        };
        Ok(Some((frame, record_len)))
    }
}
