//! pcapng: section header, interface description, enhanced and simple packet
//! blocks; any number of sections (each with its own byte order) and
//! interfaces. Other block types are skipped. Blocks are parsed with
//! pcap-parser once their length has been checked here.

use super::{at_end, need, timestamp, Frame, LinkType, Problem};
use crate::aggregator::Timestamp;
use crate::capture::stream::ByteStream;
use pcap_parser::pcapng::{parse_block_be, parse_block_le, Block};
use pcap_parser::traits::PcapNGPacketBlock;

const SHB_TYPE: u32 = 0x0A0D_0D0A;
const IDB_TYPE: u32 = 1;
const SPB_TYPE: u32 = 3;
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
            if !matches!(block_type, SHB_TYPE | IDB_TYPE | SPB_TYPE | EPB_TYPE) {
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
        .map_err(|e| Problem::Malformed(format!("pcapng block: {e:?}")))?;
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
                let link =
                    LinkType::from_linktype(i32::from(idb.linktype.0 as u16)).ok_or_else(|| {
                        Problem::Unsupported {
                            what: "pcapng link type",
                            value: idb.linktype.0.to_string(),
                        }
                    })?;
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
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let secs = (units / interface.units_per_sec) as i64;
                let frac = units % interface.units_per_sec;
                let ts = timestamp(
                    secs.saturating_add(interface.offset_secs),
                    frac,
                    interface.units_per_sec,
                );
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
        let limit = if matches!(block_type, SHB_TYPE | IDB_TYPE | SPB_TYPE | EPB_TYPE) {
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
