//! Writers for the three capture formats, for synthetic test captures, fuzz
//! seeds and `cargo xtask gen-capture`. They write what the readers read,
//! including the variants real files use (big-endian pcap, nanosecond pcap,
//! big-endian pcapng sections, several interfaces).

use super::LinkType;
use std::io::{self, Write};

pub struct OwnedFrame {
    pub ts_nanos: u64,
    pub data: Vec<u8>,
    /// Wire length; `data.len()` unless the frame stands for a cut one.
    pub wire_len: u32,
}

fn linktype_code(link: LinkType) -> u32 {
    match link {
        LinkType::Ethernet => 1,
        LinkType::LinuxSll => 113,
        LinkType::LinuxSll2 => 276,
        LinkType::RawIp => 101,
        LinkType::Null => 0,
        LinkType::Loop => 108,
        LinkType::Ppp => 9,
        LinkType::Nflog => 239,
        LinkType::Pktap => 258,
        LinkType::Other(code) => u32::from(code),
    }
}

fn u16b(v: u16, big: bool) -> [u8; 2] {
    if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

fn u32b(v: u32, big: bool) -> [u8; 4] {
    if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PcapOptions {
    pub big_endian: bool,
    pub nanos: bool,
}

pub fn pcap_header(out: &mut impl Write, link: LinkType, opts: PcapOptions) -> io::Result<()> {
    let magic = if opts.nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let big = opts.big_endian;
    out.write_all(&u32b(magic, big))?;
    out.write_all(&u16b(2, big))?;
    out.write_all(&u16b(4, big))?;
    out.write_all(&[0; 8])?;
    out.write_all(&u32b(262_144, big))?;
    out.write_all(&u32b(linktype_code(link), big))
}

pub fn pcap_record(out: &mut impl Write, frame: &OwnedFrame, opts: PcapOptions) -> io::Result<()> {
    let big = opts.big_endian;
    let secs = (frame.ts_nanos / 1_000_000_000) as u32;
    let sub = frame.ts_nanos % 1_000_000_000;
    let frac = if opts.nanos { sub } else { sub / 1000 } as u32;
    for v in [secs, frac, frame.data.len() as u32, frame.wire_len] {
        out.write_all(&u32b(v, big))?;
    }
    out.write_all(&frame.data)
}

pub fn snoop_header(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"snoop\0\0\0")?;
    out.write_all(&2u32.to_be_bytes())?;
    out.write_all(&4u32.to_be_bytes())
}

pub fn snoop_record(out: &mut impl Write, frame: &OwnedFrame) -> io::Result<()> {
    let padded = frame.data.len().next_multiple_of(4);
    let record = (24 + padded) as u32;
    let secs = (frame.ts_nanos / 1_000_000_000) as u32;
    let micros = ((frame.ts_nanos % 1_000_000_000) / 1000) as u32;
    for v in [
        frame.wire_len,
        frame.data.len() as u32,
        record,
        0,
        secs,
        micros,
    ] {
        out.write_all(&v.to_be_bytes())?;
    }
    out.write_all(&frame.data)?;
    out.write_all(&[0; 3][..padded - frame.data.len()])
}

pub fn pcapng_section(out: &mut impl Write, big: bool) -> io::Result<()> {
    out.write_all(&[0x0a, 0x0d, 0x0d, 0x0a])?;
    out.write_all(&u32b(28, big))?;
    out.write_all(&u32b(0x1a2b_3c4d, big))?;
    out.write_all(&u16b(1, big))?;
    out.write_all(&u16b(0, big))?;
    out.write_all(&(-1i64).to_le_bytes())?;
    out.write_all(&u32b(28, big))
}

/// An interface with nanosecond timestamps (if_tsresol = 9).
pub fn pcapng_interface(out: &mut impl Write, link: LinkType, big: bool) -> io::Result<()> {
    out.write_all(&u32b(1, big))?;
    out.write_all(&u32b(32, big))?;
    out.write_all(&u16b(linktype_code(link) as u16, big))?;
    out.write_all(&[0, 0])?;
    out.write_all(&u32b(262_144, big))?;
    // if_tsresol option (code 9, length 1, value 9), padded, then opt_endofopt.
    out.write_all(&u16b(9, big))?;
    out.write_all(&u16b(1, big))?;
    out.write_all(&[9, 0, 0, 0])?;
    out.write_all(&[0; 4])?;
    out.write_all(&u32b(32, big))
}

pub fn pcapng_packet(
    out: &mut impl Write,
    interface: u32,
    frame: &OwnedFrame,
    big: bool,
) -> io::Result<()> {
    let padded = frame.data.len().next_multiple_of(4);
    let total = (32 + padded) as u32;
    out.write_all(&u32b(6, big))?;
    out.write_all(&u32b(total, big))?;
    out.write_all(&u32b(interface, big))?;
    out.write_all(&u32b((frame.ts_nanos >> 32) as u32, big))?;
    out.write_all(&u32b(frame.ts_nanos as u32, big))?;
    out.write_all(&u32b(frame.data.len() as u32, big))?;
    out.write_all(&u32b(frame.wire_len, big))?;
    out.write_all(&frame.data)?;
    out.write_all(&[0; 3][..padded - frame.data.len()])?;
    out.write_all(&u32b(total, big))
}

/// Writes a whole pcap file into memory.
pub fn pcap_bytes(link: LinkType, frames: &[OwnedFrame], opts: PcapOptions) -> Vec<u8> {
    let mut out = Vec::new();
    pcap_header(&mut out, link, opts).expect("Vec write");
    for f in frames {
        pcap_record(&mut out, f, opts).expect("Vec write");
    }
    out
}

pub fn snoop_bytes(frames: &[OwnedFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    snoop_header(&mut out).expect("Vec write");
    for f in frames {
        snoop_record(&mut out, f).expect("Vec write");
    }
    out
}

pub fn pcapng_bytes(link: LinkType, frames: &[OwnedFrame], big: bool) -> Vec<u8> {
    let mut out = Vec::new();
    pcapng_section(&mut out, big).expect("Vec write");
    pcapng_interface(&mut out, link, big).expect("Vec write");
    for f in frames {
        pcapng_packet(&mut out, 0, f, big).expect("Vec write");
    }
    out
}
