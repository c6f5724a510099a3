//! Capture file readers: snoop v2, pcap and pcapng, detected from their
//! magic bytes, streamed from a file or a pipe.
//!
//! Every length read from the file is checked before it sizes a read or an
//! allocation, and every damage report names the byte offset of the record
//! that was wrong.

mod pcap;
mod pcapng;
mod snoop;
pub mod stream;
pub mod write;

use crate::time::Timestamp;
use std::io;
use stream::ByteStream;

/// Largest frame any reader accepts: the snap length tcpdump and Wireshark
/// never exceed for the link types we read.
pub const MAX_FRAME: u32 = 262_144;

/// Link layers the decoder understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// Linux cooked capture v1 (`tcpdump -i any`, older libpcap).
    LinuxSll,
    /// Linux cooked capture v2 (`tcpdump -i any`, libpcap 1.10+).
    LinuxSll2,
    /// Raw IP: version taken from the first nibble.
    RawIp,
    /// BSD loopback (macOS `lo0`): the address family in 4 bytes, in the
    /// writer's byte order.
    Null,
    /// OpenBSD loopback: the address family in network byte order.
    Loop,
    /// PPP, with or without the HDLC address and control bytes.
    Ppp,
    /// Linux NFLOG (`tcpdump -i nflog:N`): the packet in a TLV.
    Nflog,
    /// Apple PKTAP (macOS `tcpdump -i any`): a per-packet header, then a
    /// frame of the link type it names.
    Pktap,
    /// A pcapng interface of a link type connbal does not decode: its
    /// frames are skipped and counted, with a warning naming the type.
    Other(u16),
}

impl LinkType {
    /// From a pcap/pcapng LINKTYPE_* value.
    pub fn from_linktype(code: i32) -> Option<Self> {
        match code {
            1 => Some(Self::Ethernet),
            113 => Some(Self::LinuxSll),
            276 => Some(Self::LinuxSll2),
            // LINKTYPE_RAW, and the OpenBSD/NetBSD DLT_RAW values some
            // writers leak into files, and LINKTYPE_IPV4 / LINKTYPE_IPV6.
            101 | 12 | 14 | 228 | 229 => Some(Self::RawIp),
            0 => Some(Self::Null),
            108 => Some(Self::Loop),
            9 => Some(Self::Ppp),
            239 => Some(Self::Nflog),
            258 => Some(Self::Pktap),
            _ => None,
        }
    }
}

/// A LINKTYPE_* value as people know it: `LINKTYPE_IEEE802_11_RADIOTAP
/// (127)`, or the bare number for one this table does not name (it holds
/// the types met in the captures of packet tools' test suites).
pub fn linktype_name(code: u32) -> String {
    let name = match code {
        0 => "LINKTYPE_NULL",
        1 => "LINKTYPE_ETHERNET",
        6 => "LINKTYPE_IEEE802_5",
        8 => "LINKTYPE_SLIP",
        9 => "LINKTYPE_PPP",
        10 => "LINKTYPE_FDDI",
        50 => "LINKTYPE_PPP_HDLC",
        51 => "LINKTYPE_PPP_ETHER",
        100 => "LINKTYPE_ATM_RFC1483",
        101 => "LINKTYPE_RAW",
        104 => "LINKTYPE_C_HDLC",
        105 => "LINKTYPE_IEEE802_11",
        107 => "LINKTYPE_FRELAY",
        108 => "LINKTYPE_LOOP",
        113 => "LINKTYPE_LINUX_SLL",
        114 => "LINKTYPE_LTALK",
        119 => "LINKTYPE_IEEE802_11_PRISM",
        122 => "LINKTYPE_IP_OVER_FC",
        123 => "LINKTYPE_SUNATM",
        127 => "LINKTYPE_IEEE802_11_RADIOTAP",
        138 => "LINKTYPE_APPLE_IP_OVER_IEEE1394",
        143 => "LINKTYPE_DOCSIS",
        147..=162 => "LINKTYPE_USER",
        163 => "LINKTYPE_IEEE802_11_AVS",
        165 => "LINKTYPE_BACNET_MS_TP",
        187 => "LINKTYPE_BLUETOOTH_HCI_H4",
        189 => "LINKTYPE_USB_LINUX",
        195 => "LINKTYPE_IEEE802_15_4_WITHFCS",
        201 => "LINKTYPE_BLUETOOTH_HCI_H4_WITH_PHDR",
        220 => "LINKTYPE_USB_LINUX_MMAPPED",
        227 => "LINKTYPE_CAN_SOCKETCAN",
        228 => "LINKTYPE_IPV4",
        229 => "LINKTYPE_IPV6",
        239 => "LINKTYPE_NFLOG",
        249 => "LINKTYPE_USBPCAP",
        251 => "LINKTYPE_BLUETOOTH_LE_LL",
        253 => "LINKTYPE_NETLINK",
        254 => "LINKTYPE_BLUETOOTH_LINUX_MONITOR",
        256 => "LINKTYPE_BLUETOOTH_LE_LL_WITH_PHDR",
        258 => "LINKTYPE_PKTAP",
        263 => "LINKTYPE_IPOIB",
        276 => "LINKTYPE_LINUX_SLL2",
        _ => return code.to_string(),
    };
    format!("{name} ({code})")
}

#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length on the wire; more than `data.len()` when the snap length cut it.
    pub wire_len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Snoop,
    Pcap,
    Pcapng,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot open: {0}")]
    Open(io::Error),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("input is empty")]
    Empty,
    #[error("gzip-compressed input; decompress it first (zcat FILE | connbal replay -)")]
    Compressed,
    #[error("not a snoop, pcap or pcapng capture (starts with {0})")]
    UnknownFormat(String),
    #[error("truncated {what}: needs {need} bytes, input ends after {have}")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("impossible {what}: {detail}")]
    BadLength { what: &'static str, detail: String },
    #[error("unsupported {what} {value}")]
    Unsupported { what: &'static str, value: String },
    #[error("malformed {0}")]
    Malformed(String),
    #[error("no packet on a link type connbal decodes ({0})")]
    NothingReadable(String),
}

/// A damaged or unreadable container: where and what.
#[derive(Debug, thiserror::Error)]
pub struct CaptureError {
    pub path: String,
    pub offset: u64,
    pub problem: Problem,
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Problem::Open(_) => write!(f, "{}: {}", self.path, self.problem),
            _ => write!(f, "{}: byte {}: {}", self.path, self.offset, self.problem),
        }
    }
}

impl CaptureError {
    pub fn is_interrupted(&self) -> bool {
        matches!(&self.problem, Problem::Io(e) if e.kind() == io::ErrorKind::Interrupted)
    }
}

enum Reader {
    Snoop(snoop::Snoop),
    Pcap(pcap::Pcap),
    Pcapng(pcapng::Pcapng),
}

pub struct CaptureReader {
    stream: ByteStream,
    reader: Reader,
    path: String,
    /// Bytes of the frame last handed out, consumed on the next call so the
    /// frame can borrow the buffer without a copy.
    consume_next: usize,
}

/// Reads `need` bytes or reports what was missing.
fn need<'s>(
    stream: &'s mut ByteStream,
    need: usize,
    what: &'static str,
) -> Result<&'s [u8], Problem> {
    let have = stream.fill(need)?;
    if have.len() < need {
        return Err(Problem::Truncated {
            what,
            need: need as u64,
            have: have.len() as u64,
        });
    }
    Ok(&have[..need])
}

/// True at a clean end of input: no bytes at all where a record would start.
fn at_end(stream: &mut ByteStream) -> Result<bool, Problem> {
    Ok(stream.fill(1)?.is_empty())
}

impl CaptureReader {
    pub fn open(mut stream: ByteStream, path: impl Into<String>) -> Result<Self, CaptureError> {
        let path = path.into();
        let fail = |problem| CaptureError {
            path: path.clone(),
            offset: 0,
            problem,
        };
        let buffered = stream.fill(4).map_err(|e| fail(e.into()))?;
        let head = &buffered[..buffered.len().min(4)];
        let format = match head {
            [] => return Err(fail(Problem::Empty)),
            [0x1f, 0x8b, ..] => return Err(fail(Problem::Compressed)),
            short if short.len() < 4 => {
                let have = short.len() as u64;
                return Err(fail(Problem::Truncated {
                    what: "file header",
                    need: 4,
                    have,
                }));
            }
            b"snoo" => Format::Snoop,
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => Format::Pcap,
            [0x0a, 0x0d, 0x0d, 0x0a] => Format::Pcapng,
            other => {
                let shown: Vec<String> = other.iter().map(|b| format!("{b:02x}")).collect();
                return Err(fail(Problem::UnknownFormat(shown.join(" "))));
            }
        };
        let reader = match format {
            Format::Snoop => snoop::Snoop::open(&mut stream).map(Reader::Snoop),
            Format::Pcap => pcap::Pcap::open(&mut stream).map(Reader::Pcap),
            Format::Pcapng => Ok(Reader::Pcapng(pcapng::Pcapng::default())),
        }
        .map_err(|problem| CaptureError {
            path: path.clone(),
            offset: stream.offset(),
            problem,
        })?;
        Ok(Self {
            stream,
            reader,
            path,
            consume_next: 0,
        })
    }

    pub fn format(&self) -> Format {
        match self.reader {
            Reader::Snoop(_) => Format::Snoop,
            Reader::Pcap(_) => Format::Pcap,
            Reader::Pcapng(_) => Format::Pcapng,
        }
    }

    /// The name errors use for the input.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next frame, `None` at a clean end of input.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        self.stream.consume(std::mem::take(&mut self.consume_next));
        let start = self.stream.offset();
        let result = match &mut self.reader {
            Reader::Snoop(r) => r.next(&mut self.stream),
            Reader::Pcap(r) => r.next(&mut self.stream),
            Reader::Pcapng(r) => r.next(&mut self.stream),
        };
        match result {
            Ok(Some((frame, record_len))) => {
                self.consume_next = record_len;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(problem) => {
                // pcapng steps over non-packet blocks within one call; the
                // error belongs to the block after them.
                let skipped = match &self.reader {
                    Reader::Pcapng(r) => r.skipped_this_call,
                    _ => 0,
                };
                Err(CaptureError {
                    path: self.path.clone(),
                    offset: start + skipped,
                    problem,
                })
            }
        }
    }

    /// Blocks of the container skipped on purpose (pcapng blocks that
    /// carry no packet).
    pub fn blocks_skipped(&self) -> u64 {
        match &self.reader {
            Reader::Pcapng(r) => r.blocks_skipped,
            _ => 0,
        }
    }

    /// Bytes of input fully read so far.
    /// Whether reading should end now (a signal; for a pipe, once its
    /// writer had time to flush).
    pub fn stopped(&mut self) -> bool {
        self.stream.stopped()
    }

    pub fn offset(&self) -> u64 {
        self.stream.offset() + self.consume_next as u64
    }
}

/// Converts seconds plus a fraction in `units_per_sec` into a timestamp,
/// saturating instead of overflowing on hostile values.
fn timestamp(secs: i64, frac: u64, units_per_sec: u64) -> Timestamp {
    let nanos = (u128::from(frac) * 1_000_000_000 / u128::from(units_per_sec.max(1))) as u64;
    Timestamp::from_secs_nanos(secs.max(0) as u64, nanos)
}

#[cfg(test)]
mod tests;
