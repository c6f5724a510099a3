//! pcapng: section header, interface description, enhanced and simple packet
//! blocks; any number of sections (each with its own byte order) and
//! interfaces. Other block types are skipped. Blocks are parsed with
//! pcap-parser once their length has been checked here.

use super::{at_end, need, timestamp, Frame, LinkType, Problem};
use crate::capture::stream::ByteStream;
use crate::time::Timestamp;
use pcap_parser::pcapng::{parse_block_be, parse_block_le, Block};
use pcap_parser::traits::PcapNGPacketBlock;

const SHB_TYPE: u32 = 0x0A0D_0D0A;
const IDB_TYPE: u32 = 1;
const SPB_TYPE: u32 = 3;
/// The obsolete Packet Block: still written by old tools, and read by
/// tcpdump and Wireshark.
const PB_TYPE: u32 = 2;
const EPB_TYPE: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Blocks we parse (section, interface, packet) are held whole and parsed
/// by pcap-parser, which builds a vector of their options: bounding them
/// bounds that allocation. Far above a 256 KiB packet plus options.
const MAX_PARSED_BLOCK: u32 = 1024 * 1024;
/// Other blocks (name resolution, statistics, ...) are skipped unparsed, in
/// chunks, so they may be as large as Wireshark allows.
const MAX_BLOCK: u32 = 16 * 1024 * 1024;
/// Interfaces per section; real captures have a handful.
const MAX_INTERFACES: usize = 4096;

struct Interface {
    link: LinkType,
    units_per_sec: u64,
    offset_secs: i64,
}

impl Interface {
    fn timestamp(&self, units: u64) -> Timestamp {
        let secs = (units / self.units_per_sec) as i64;
        let frac = units % self.units_per_sec;
        timestamp(
            secs.saturating_add(self.offset_secs),
            frac,
            self.units_per_sec,
        )
    }
}

struct PacketAt {
    ts: Timestamp,
    link: LinkType,
    data: std::ops::Range<usize>,
    wire_len: u32,
}

#[derive(Default)]
pub struct Pcapng {
    /// `None` until the first section header.
    big_endian: Option<bool>,
    interfaces: Vec<Interface>,
    /// For simple packet blocks, which carry no timestamp.
    last_ts: Timestamp,
    /// Bytes of non-packet blocks consumed by the current `next` call, so
    /// an error can name the offset of the block that failed.
    pub skipped_this_call: u64,
    /// Blocks skipped on purpose: name resolution, statistics, custom and
    /// other blocks that carry no packet.
    pub blocks_skipped: u64,
}

impl Pcapng {
    pub fn next<'s>(
        &mut self,
        stream: &'s mut ByteStream,
    ) -> Result<Option<(Frame<'s>, usize)>, Problem> {
        self.skipped_this_call = 0;
        let (block_len, packet) = loop {
            if at_end(stream)? {
                return Ok(None);
            }
            let (block_type, block_len) = self.block_header(stream)?;
            if block_type == PB_TYPE {
                let bytes = need(stream, block_len, "pcapng packet block")?;
                let packet = self.packet_block(bytes)?;
                break (block_len, packet);
            }
            if !matches!(block_type, SHB_TYPE | IDB_TYPE | SPB_TYPE | EPB_TYPE) {
                self.blocks_skipped += 1;
                let skipped = stream.skip(block_len)?;
                if skipped < block_len {
                    return Err(Problem::Truncated {
                        what: "pcapng block",
                        need: block_len as u64,
                        have: skipped as u64,
                    });
                }
                self.skipped_this_call += block_len as u64;
                continue;
            }
            let bytes = need(stream, block_len, "pcapng block")?;
            if let Some(packet) = self.read_block(bytes)? {
                break (block_len, packet);
            }
            stream.consume(block_len);
            self.skipped_this_call += block_len as u64;
        };
        // The block is already buffered; slice the packet out of it again so
        // the frame can borrow the stream for the caller.
        let bytes = stream.fill(block_len)?;
        let frame = Frame {
            ts: packet.ts,
            link: packet.link,
            data: &bytes[packet.data],
            wire_len: packet.wire_len,
        };
        Ok(Some((frame, block_len)))
    }

    /// Applies one block; for a packet block returns where its data lies.
    fn read_block(&mut self, bytes: &[u8]) -> Result<Option<PacketAt>, Problem> {
        let block = match self.big_endian {
            Some(true) => parse_block_be(bytes),
            _ => parse_block_le(bytes),
        }
        .map(|(_, block)| block)
        // pcap-parser's errors are nom's debug values; say what failed.
        .map_err(|_| {
            Problem::Malformed(format!(
                "pcapng block: a {}-byte block of type {:#x} does not parse (a length or option inside it is wrong)",
                bytes.len(),
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
            ))
        })?;
        let within = |data: &[u8]| {
            // `data` is a sub-slice of `bytes`; its position is plain address
            // arithmetic, no pointer dereference.
            let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + data.len()
        };
        match block {
            Block::SectionHeader(shb) => {
                self.big_endian = Some(shb.big_endian());
                self.interfaces.clear();
            }
            Block::InterfaceDescription(idb) => {
                if self.interfaces.len() >= MAX_INTERFACES {
                    return Err(Problem::BadLength {
                        what: "pcapng section",
                        detail: format!("more than {MAX_INTERFACES} interfaces"),
                    });
                }
                // An interface of a type connbal does not decode is fine as
                // long as no packet of interest is on it (dumpcap lists
                // idle interfaces of every kind): its packets are skipped
                // and counted by the decoder.
                let code = idb.linktype.0 as u16;
                let link =
                    LinkType::from_linktype(i32::from(code)).unwrap_or(LinkType::Other(code));
                let units_per_sec = units_per_second(idb.if_tsresol).ok_or_else(|| {
                    Problem::Malformed(format!(
                        "interface description: if_tsresol {:#x}",
                        idb.if_tsresol
                    ))
                })?;
                self.interfaces.push(Interface {
                    link,
                    units_per_sec,
                    offset_secs: idb.if_tsoffset,
                });
            }
            Block::EnhancedPacket(epb) => {
                let Some(interface) = self.interfaces.get(epb.if_id as usize) else {
                    return Err(Problem::Malformed(format!(
                        "packet for undeclared interface {}",
                        epb.if_id
                    )));
                };
                let ts =
                    interface.timestamp((u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low));
                self.last_ts = ts;
                let data = within(epb.packet_data());
                let wire_len = epb.origlen.max(data.len() as u32);
                return Ok(Some(PacketAt {
                    ts,
                    link: interface.link,
                    data,
                    wire_len,
                }));
            }
            Block::SimplePacket(spb) => {
                let Some(interface) = self.interfaces.first() else {
                    return Err(Problem::Malformed(
                        "simple packet block before any interface".into(),
                    ));
                };
                let data = within(spb.packet_data());
                return Ok(Some(PacketAt {
                    ts: self.last_ts,
                    link: interface.link,
                    data,
                    wire_len: spb.orig_len(),
                }));
            }
            _ => {}
        }
        Ok(None)
    }

    /// The obsolete Packet Block (type 2): an Enhanced Packet Block with a
    /// 2-byte interface id and a drop count. pcap-parser does not read it.
    fn packet_block(&mut self, bytes: &[u8]) -> Result<PacketAt, Problem> {
        const DATA: usize = 28;
        let big = self.big_endian == Some(true);
        let word = |at: usize| {
            let raw = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
            if big {
                u32::from_be_bytes(raw)
            } else {
                u32::from_le_bytes(raw)
            }
        };
        if bytes.len() < DATA + 4 {
            return Err(Problem::BadLength {
                what: "pcapng packet block",
                detail: format!("{} bytes, shorter than its fixed fields", bytes.len()),
            });
        }
        let if_id = if big {
            u16::from_be_bytes([bytes[8], bytes[9]])
        } else {
            u16::from_le_bytes([bytes[8], bytes[9]])
        };
        let (ts_high, ts_low, caplen, origlen) = (word(12), word(16), word(20), word(24));
        let Some(interface) = self.interfaces.get(usize::from(if_id)) else {
            return Err(Problem::Malformed(format!(
                "packet for undeclared interface {if_id}"
            )));
        };
        // The data, padded to 4 bytes, must fit before the trailing length.
        if DATA + (caplen as usize).next_multiple_of(4) > bytes.len() - 4 {
            return Err(Problem::BadLength {
                what: "pcapng packet block captured length",
                detail: format!("{caplen} does not fit its {}-byte block", bytes.len()),
            });
        }
        let ts = interface.timestamp((u64::from(ts_high) << 32) | u64::from(ts_low));
        self.last_ts = ts;
        Ok(PacketAt {
            ts,
            link: interface.link,
            data: DATA..DATA + caplen as usize,
            wire_len: origlen.max(caplen),
        })
    }

    /// Reads the type and checked length of the block at the stream's
    /// position.
    fn block_header(&self, stream: &mut ByteStream) -> Result<(u32, usize), Problem> {
        let head = need(stream, 8, "pcapng block header")?;
        let block_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        // A section header's own byte-order magic says how to read its
        // length (the type is a palindrome).
        let big_endian = if block_type == SHB_TYPE {
            let with_bom = need(stream, 12, "pcapng section header")?;
            match u32::from_le_bytes([with_bom[8], with_bom[9], with_bom[10], with_bom[11]]) {
                BYTE_ORDER_MAGIC => false,
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                m => {
                    return Err(Problem::Malformed(format!(
                        "section header byte-order magic {m:#010x}"
                    )))
                }
            }
        } else {
            match self.big_endian {
                Some(big) => big,
                None => {
                    return Err(Problem::Malformed(
                        "first block is not a section header".into(),
                    ))
                }
            }
        };
        let head = stream.fill(8)?;
        let word = |at: usize| {
            let raw = [head[at], head[at + 1], head[at + 2], head[at + 3]];
            if big_endian {
                u32::from_be_bytes(raw)
            } else {
                u32::from_le_bytes(raw)
            }
        };
        let (block_type, len) = (word(0), word(4));
        let limit = if matches!(
            block_type,
            SHB_TYPE | IDB_TYPE | PB_TYPE | SPB_TYPE | EPB_TYPE
        ) {
            MAX_PARSED_BLOCK
        } else {
            MAX_BLOCK
        };
        if len < 12 || len % 4 != 0 || len > limit {
            return Err(Problem::BadLength {
                what: "pcapng block length",
                detail: format!("{len} (must be a multiple of 4 between 12 and {limit})"),
            });
        }
        Ok((block_type, len as usize))
    }
}

/// Timestamp units per second from `if_tsresol`: 10^n, or 2^n when the top
/// bit is set (0x88 is 2^-8 s). Hand-written because pcap-parser 0.17
/// refuses the power-of-two form, which the format allows. `None` when
/// the unit does not fit a u64 (finer than 10^-19 or 2^-63 s).
pub fn units_per_second(if_tsresol: u8) -> Option<u64> {
    let exponent = u32::from(if_tsresol & 0x7f);
    if if_tsresol & 0x80 != 0 {
        1u64.checked_shl(exponent).filter(|_| exponent < 64)
    } else {
        10u64.checked_pow(exponent)
    }
}
