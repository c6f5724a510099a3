//! Snoop version 2 (RFC 1761), as written by Solaris `snoop -o` and
//! `editcap -F snoop`. Hand-written: no maintained crate reads snoop.
//!
//! File header: 8-byte magic "snoop\0\0\0", version (2), datalink type, all
//! big-endian. Each record: original length, included length, record length
//! (header + data + padding), cumulative drops, seconds, microseconds; the
//! reader advances by the record length, after checking it.

use super::{at_end, need, timestamp, Frame, LinkType, Problem, MAX_FRAME};
use crate::capture::stream::ByteStream;

const MAGIC: &[u8; 8] = b"snoop\0\0\0";
const FILE_HEADER: usize = 16;
const RECORD_HEADER: usize = 24;

pub struct Snoop;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Snoop {
    pub fn open(stream: &mut ByteStream) -> Result<Self, Problem> {
        let header = need(stream, FILE_HEADER, "snoop file header")?;
        if &header[..8] != MAGIC {
            return Err(Problem::Malformed("snoop file header: bad magic".into()));
        }
        let version = be32(header, 8);
        if version != 2 {
            return Err(Problem::Unsupported {
                what: "snoop version",
                value: version.to_string(),
            });
        }
        // RFC 1761 datalink 4 is Ethernet; Wireshark also maps 0 (IEEE
        // 802.3) to Ethernet framing, as Solaris wrote it for some NICs.
        match be32(header, 12) {
            0 | 4 => {}
            other => {
                return Err(Problem::Unsupported {
                    what: "snoop datalink type",
                    value: other.to_string(),
                })
            }
        }
        stream.consume(FILE_HEADER);
        Ok(Self)
    }

    #[expect(
        clippy::unused_self,
        reason = "every format's reader has this shape; snoop's keeps no state between records"
    )]
    pub fn next<'s>(
        &mut self,
        stream: &'s mut ByteStream,
    ) -> Result<Option<(Frame<'s>, usize)>, Problem> {
        if at_end(stream)? {
            return Ok(None);
        }
        let header = need(stream, RECORD_HEADER, "snoop record header")?;
        let original = be32(header, 0);
        let included = be32(header, 4);
        let record = be32(header, 8);
        let (secs, micros) = (be32(header, 16), be32(header, 20));
        if (record as usize) < RECORD_HEADER {
            return Err(Problem::BadLength {
                what: "snoop record length",
                detail: format!("{record} is smaller than the 24-byte record header"),
            });
        }
        if record > MAX_FRAME || included > MAX_FRAME {
            return Err(Problem::BadLength {
                what: "snoop record",
                detail: format!(
                    "record length {record}, included length {included}; limit is {MAX_FRAME}"
                ),
            });
        }
        if included > record - RECORD_HEADER as u32 {
            return Err(Problem::BadLength {
                what: "snoop included length",
                detail: format!(
                    "{included} exceeds record length {record} minus the 24-byte header"
                ),
            });
        }
        let bytes = need(stream, record as usize, "snoop record data")?;
        let data = &bytes[RECORD_HEADER..RECORD_HEADER + included as usize];
        let frame = Frame {
            ts: timestamp(i64::from(secs), u64::from(micros), 1_000_000),
            link: LinkType::Ethernet,
            data,
            wire_len: original.max(included),
        };
        Ok(Some((frame, record as usize)))
    }
}
