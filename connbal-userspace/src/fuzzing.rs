//! Entry points for the fuzz targets in fuzz/ (not part of the CLI). Each
//! drives the real code path end to end and returns the report, so the
//! fuzzer also exercises report building.

use crate::aggregator::{Config, Event, Segment, Timestamp};
use crate::capture::stream::ByteStream;
use crate::capture::{CaptureReader, Frame, LinkType};
use crate::decode::{decode_sliced, quick_ip, Found, FrameDecoder, Quick};
use crate::pipeline::Pipeline;
use std::net::SocketAddr;

/// A whole capture file: reader, decoder, aggregator, report.
pub fn capture(data: &[u8], all_tcp: bool) {
    let Ok(mut reader) = CaptureReader::open(ByteStream::from_bytes(data.to_vec()), "fuzz") else {
        return;
    };
    // Events on, so their path is fuzzed too, serialised as --events would.
    let config = Config {
        all_tcp,
        filter: None,
        events: true,
        ..Config::default()
    };
    let mut decoder = FrameDecoder::new(all_tcp);
    let mut pipeline = Pipeline::with_events_to(config, std::io::sink());
    while let Ok(Some(frame)) = reader.next_frame() {
        decoder.frame(&frame, |event| pipeline.event(event));
    }
    decoder.finish();
    let _ = (decoder.stats(), pipeline.report());
}

/// A capture of one format: inputs that do not start with the format's
/// magic get `header` prepended, so mutations are spent on records. The
/// last byte picks `--all-tcp`.
pub fn capture_of_format(data: &[u8], header: &[u8]) {
    let all_tcp = data.last().is_some_and(|b| b & 1 == 1);
    if data.starts_with(&header[..4]) {
        capture(data, all_tcp);
    } else {
        capture(&[header, data].concat(), all_tcp);
    }
}

/// Arbitrary frames: `[link][len hi][len lo][bytes...]` repeated.
pub fn frames(mut data: &[u8]) {
    let all_tcp = data.first().is_some_and(|b| b & 1 == 1);
    let config = Config {
        all_tcp,
        filter: None,
        events: false,
        ..Config::default()
    };
    let mut decoder = FrameDecoder::new(all_tcp);
    let mut pipeline = Pipeline::with_events_to(config, std::io::sink());
    let mut n = 0u64;
    while let [link, hi, lo, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (bytes, tail) = rest.split_at(len);
        data = tail;
        let link = match link % 10 {
            0 | 1 => LinkType::Ethernet,
            2 => LinkType::LinuxSll,
            3 => LinkType::LinuxSll2,
            4 => LinkType::Null,
            5 => LinkType::Loop,
            6 => LinkType::Ppp,
            7 => LinkType::Nflog,
            8 => LinkType::Pktap,
            _ => LinkType::RawIp,
        };
        n += 1;
        let frame = Frame {
            ts: Timestamp(n * 3_000_000_000),
            link,
            data: bytes,
            wire_len: bytes.len() as u32 + u32::from(*hi & 1),
        };
        // The fast path may only decide as the full decoder does, silently.
        let quick = match quick_ip(&frame, all_tcp) {
            Quick::Full => None,
            Quick::Drop => Some(None),
            Quick::Event(e) => Some(Some(e)),
        };
        if let Some(quick) = quick {
            let full = decode_sliced(&frame, all_tcp);
            let same = match (&quick, &full.found) {
                (None, Found::Dropped) => true,
                (Some(quick), Found::Event(full)) => format!("{quick:?}") == format!("{full:?}"),
                _ => false,
            };
            assert!(
                same && !full.tunnelled,
                "fast path decided {quick:?} for {:?}, the full decoder {full:?}",
                frame.data
            );
        }
        decoder.frame(&frame, |event| pipeline.event(event));
    }
    decoder.finish();
    let _ = (decoder.stats(), pipeline.report());
}

/// DNS over TCP: segments of one flow in both directions,
/// `[flags][direction+seq delta hi][seq delta lo][len][payload...]`.
pub fn tcp_reassembly(mut data: &[u8]) {
    let client: SocketAddr = "192.0.2.10:40000".parse().expect("literal");
    let server: SocketAddr = "192.0.2.53:53".parse().expect("literal");
    let mut pipeline = Pipeline::with_events_to(Config::default(), std::io::sink());
    let mut seqs = [1000u32, 5000u32];
    let mut n = 0u64;
    while let [flags, hi, lo, len, rest @ ..] = data {
        let len = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        data = tail;
        let dir = usize::from(hi >> 7);
        let delta = i32::from(i16::from_be_bytes([hi & 0x7f, *lo]) - 0x2000);
        let seq = seqs[dir].wrapping_add_signed(delta);
        seqs[dir] = seq.wrapping_add(payload.len() as u32);
        let (src, dst) = if dir == 0 {
            (client, server)
        } else {
            (server, client)
        };
        n += 1;
        let segment = Segment {
            ts: Timestamp(n),
            src,
            dst,
            flags: *flags,
            seq,
            payload,
            truncated: flags & 0x40 != 0 && !payload.is_empty(),
            ack: None,
            first_of_flow: None,
            owner: None,
        };
        pipeline.event(&Event::Tcp(segment));
    }
    let _ = pipeline.report();
}
