use super::write::*;
use super::*;

fn frame(ts_nanos: u64, data: &[u8]) -> OwnedFrame {
    OwnedFrame {
        ts_nanos,
        data: data.to_vec(),
        wire_len: data.len() as u32,
    }
}

fn sample() -> Vec<OwnedFrame> {
    vec![
        frame(1_700_000_000_123_456_000, &[1; 60]),
        frame(1_700_000_001_000_001_000, &[2; 61]),
        frame(1_700_000_002_999_999_000, &[3; 1514]),
    ]
}

/// Every frame as (timestamp ns, bytes), or the error with its offset.
type ReadFrame = (u64, Vec<u8>, LinkType);

fn read_all(bytes: Vec<u8>) -> (Vec<ReadFrame>, Option<CaptureError>) {
    let mut reader = match CaptureReader::open(ByteStream::from_bytes(bytes), "test.cap") {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(f)) => frames.push((f.ts.0, f.data.to_vec(), f.link)),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn expect_same(bytes: Vec<u8>, link: LinkType) {
    let (frames, error) = read_all(bytes);
    assert!(error.is_none(), "{error:?}");
    let want: Vec<_> = sample()
        .into_iter()
        .map(|f| (f.ts_nanos, f.data, link))
        .collect();
    assert_eq!(frames, want);
}

#[test]
fn pcap_in_both_byte_orders_and_resolutions() {
    for big_endian in [false, true] {
        for nanos in [false, true] {
            expect_same(
                pcap_bytes(
                    LinkType::Ethernet,
                    &sample(),
                    PcapOptions { big_endian, nanos },
                ),
                LinkType::Ethernet,
            );
        }
    }
}

#[test]
fn pcapng_in_both_byte_orders() {
    expect_same(
        pcapng_bytes(LinkType::LinuxSll2, &sample(), false),
        LinkType::LinuxSll2,
    );
    expect_same(
        pcapng_bytes(LinkType::RawIp, &sample(), true),
        LinkType::RawIp,
    );
}

#[test]
fn snoop_round_trips() {
    expect_same(snoop_bytes(&sample()), LinkType::Ethernet);
}

#[test]
fn pcapng_sections_and_interfaces_are_tracked() {
    let s = sample();
    let mut bytes = Vec::new();
    pcapng_section(&mut bytes, false).unwrap();
    pcapng_interface(&mut bytes, LinkType::Ethernet, false).unwrap();
    pcapng_interface(&mut bytes, LinkType::LinuxSll, false).unwrap();
    pcapng_packet(&mut bytes, 1, &s[0], false).unwrap();
    pcapng_packet(&mut bytes, 0, &s[1], false).unwrap();
    // A new section in the other byte order forgets the old interfaces.
    pcapng_section(&mut bytes, true).unwrap();
    pcapng_interface(&mut bytes, LinkType::RawIp, true).unwrap();
    pcapng_packet(&mut bytes, 0, &s[2], true).unwrap();
    let (frames, error) = read_all(bytes);
    assert!(error.is_none(), "{error:?}");
    let links: Vec<LinkType> = frames.iter().map(|f| f.2).collect();
    assert_eq!(
        links,
        [LinkType::LinuxSll, LinkType::Ethernet, LinkType::RawIp]
    );
    assert_eq!(frames[2].0, s[2].ts_nanos);
}

/// The error's offset and message, with what was read before it.
fn damage(bytes: Vec<u8>) -> (usize, u64, String) {
    let (frames, error) = read_all(bytes);
    let error = error.expect("damage must be reported");
    let message = error.to_string();
    assert!(message.starts_with("test.cap: byte "), "{message}");
    assert!(!message.contains('\n'));
    (frames.len(), error.offset, message)
}

fn pcap_le(frames: &[OwnedFrame]) -> Vec<u8> {
    pcap_bytes(
        LinkType::Ethernet,
        frames,
        PcapOptions {
            big_endian: false,
            nanos: false,
        },
    )
}

#[test]
fn truncated_file_headers() {
    for bytes in [
        pcap_le(&[])[..20].to_vec(),
        snoop_bytes(&[])[..10].to_vec(),
        pcapng_bytes(LinkType::Ethernet, &[], false)[..10].to_vec(),
    ] {
        let (read, offset, message) = damage(bytes);
        assert_eq!((read, offset), (0, 0));
        assert!(message.contains("truncated"), "{message}");
    }
}

#[test]
fn truncated_record_header_keeps_earlier_frames() {
    let mut bytes = pcap_le(&sample());
    let full = bytes.len();
    bytes.extend_from_slice(&[0; 7]);
    let (read, offset, message) = damage(bytes);
    assert_eq!((read, offset as usize), (3, full));
    assert!(
        message.contains("truncated pcap record header: needs 16 bytes, input ends after 7"),
        "{message}"
    );
}

#[test]
fn truncated_record_data() {
    let mut bytes = snoop_bytes(&sample());
    bytes.truncate(bytes.len() - 100);
    let (read, _, message) = damage(bytes);
    assert_eq!(read, 2);
    assert!(message.contains("truncated snoop record data"), "{message}");

    let mut bytes = pcapng_bytes(LinkType::Ethernet, &sample(), false);
    bytes.truncate(bytes.len() - 1);
    let (read, _, message) = damage(bytes);
    assert_eq!(read, 2);
    assert!(message.contains("truncated pcapng block"), "{message}");
}

fn snoop_with_lengths(original: u32, included: u32, record: u32) -> Vec<u8> {
    let mut bytes = snoop_bytes(&sample()[..1]);
    for v in [original, included, record, 0, 0, 0] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(&[0; 64]);
    bytes
}

#[test]
fn snoop_record_length_smaller_than_its_header() {
    let (read, offset, message) = damage(snoop_with_lengths(10, 0, 20));
    assert_eq!((read, offset), (1, 16 + 24 + 60));
    assert!(
        message.contains("smaller than the 24-byte record header"),
        "{message}"
    );
}

#[test]
fn snoop_included_length_over_record_length() {
    let (_, _, message) = damage(snoop_with_lengths(60, 60, 64));
    assert!(message.contains("exceeds record length 64"), "{message}");
}

#[test]
fn lengths_near_2_pow_32_are_refused_before_reading() {
    let (_, _, message) = damage(snoop_with_lengths(u32::MAX, u32::MAX - 24, u32::MAX));
    assert!(message.contains("limit is 262144"), "{message}");

    let mut bytes = pcap_le(&sample()[..1]);
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&(u32::MAX - 3).to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let (_, _, message) = damage(bytes);
    assert!(
        message.contains("impossible pcap captured length: 4294967292"),
        "{message}"
    );
}

#[test]
fn pcapng_block_lengths_are_checked() {
    for bad_len in [8u32, 13, u32::MAX - 3, 64 * 1024 * 1024] {
        let mut bytes = pcapng_bytes(LinkType::Ethernet, &sample()[..1], false);
        let at = bytes.len();
        bytes.extend_from_slice(&6u32.to_le_bytes());
        bytes.extend_from_slice(&bad_len.to_le_bytes());
        bytes.extend_from_slice(&[0; 32]);
        let (read, offset, message) = damage(bytes);
        assert_eq!((read, offset as usize), (1, at));
        assert!(
            message.contains("impossible pcapng block length"),
            "{message}"
        );
    }
}

#[test]
fn pcapng_packet_for_an_undeclared_interface() {
    let mut bytes = pcapng_bytes(LinkType::Ethernet, &[], false);
    pcapng_packet(&mut bytes, 3, &sample()[0], false).unwrap();
    let (_, _, message) = damage(bytes);
    assert!(message.contains("undeclared interface 3"), "{message}");
}

#[test]
fn unknown_formats_and_link_types() {
    let (_, _, message) = damage(b"GET / HTTP/1.1\r\n".to_vec());
    assert!(
        message.contains("not a snoop, pcap or pcapng capture (starts with 47 45 54 20)"),
        "{message}"
    );
    let (_, _, message) = damage(vec![0x1f, 0x8b, 8, 0, 0]);
    assert!(message.contains("gzip"), "{message}");
    let (_, _, message) = damage(Vec::new());
    assert!(message.contains("input is empty"), "{message}");

    let mut bytes = pcap_le(&[]);
    bytes[20..24].copy_from_slice(&147u32.to_le_bytes());
    let (_, _, message) = damage(bytes);
    assert!(
        message.contains("unsupported pcap link type LINKTYPE_USER (147)"),
        "{message}"
    );
    // A code with no name: its number, once ("link type link type 274"
    // before).
    let mut bytes = pcap_le(&[]);
    bytes[20..24].copy_from_slice(&274u32.to_le_bytes());
    let (_, _, message) = damage(bytes);
    assert!(
        message.contains("unsupported pcap link type 274") && !message.contains("type link"),
        "{message}"
    );

    let mut bytes = snoop_bytes(&[]);
    bytes[12..16].copy_from_slice(&8u32.to_be_bytes());
    let (_, _, message) = damage(bytes);
    assert!(
        message.contains("unsupported snoop datalink type 8"),
        "{message}"
    );
}

/// dumpcap on several interfaces lists idle ones of other link types: a
/// radiotap interface before the Ethernet one holding the packets is no
/// reason to refuse the file. A packet on it comes out marked, for the
/// decoder to skip and count.
#[test]
fn pcapng_interfaces_of_other_link_types_do_not_stop_the_read() {
    let frames = sample();
    let mut bytes = Vec::new();
    pcapng_section(&mut bytes, false).unwrap();
    pcapng_interface(&mut bytes, LinkType::Other(127), false).unwrap();
    pcapng_interface(&mut bytes, LinkType::Ethernet, false).unwrap();
    for f in &frames {
        pcapng_packet(&mut bytes, 1, f, false).unwrap();
    }
    pcapng_packet(&mut bytes, 0, &frames[0], false).unwrap();
    let mut reader = CaptureReader::open(ByteStream::from_bytes(bytes), "idle.pcapng").unwrap();
    let mut links = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        links.push(frame.link);
    }
    let mut want = vec![LinkType::Ethernet; frames.len()];
    want.push(LinkType::Other(127));
    assert_eq!(links, want);
}

#[test]
fn zero_length_frames_are_read() {
    let frames = vec![frame(1, &[]), frame(2, &[9; 3])];
    for bytes in [
        pcap_le(&frames),
        snoop_bytes(&frames),
        pcapng_bytes(LinkType::Ethernet, &frames, false),
    ] {
        let (read, error) = read_all(bytes);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(read.len(), 2);
        assert!(read[0].1.is_empty());
    }
}

#[test]
fn unknown_pcapng_blocks_are_skipped_even_when_large() {
    let s = sample();
    let mut bytes = pcapng_bytes(LinkType::Ethernet, &s[..1], false);
    // A 2 MiB custom block (type 0x00000BAD) between two packets.
    let len = 2 * 1024 * 1024u32;
    bytes.extend_from_slice(&0xBADu32.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend(std::iter::repeat_n(0u8, len as usize - 12));
    bytes.extend_from_slice(&len.to_le_bytes());
    pcapng_packet(&mut bytes, 0, &s[1], false).unwrap();
    let (frames, error) = read_all(bytes);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(frames.len(), 2);
}

#[test]
fn a_packet_block_larger_than_the_parse_limit_is_refused() {
    let mut bytes = pcapng_bytes(LinkType::Ethernet, &[], false);
    bytes.extend_from_slice(&6u32.to_le_bytes());
    bytes.extend_from_slice(&(2 * 1024 * 1024u32).to_le_bytes());
    let (_, _, message) = damage(bytes);
    assert!(
        message.contains("impossible pcapng block length: 2097152"),
        "{message}"
    );
}

/// libpcap takes the link type from the low 16 bits; the top bits may say
/// the FCS length. Only the reserved bits make the field invalid.
#[test]
fn pcap_link_type_with_fcs_bits_is_read_like_libpcap() {
    let mut bytes = pcap_bytes(
        LinkType::Ethernet,
        &sample(),
        PcapOptions {
            big_endian: false,
            nanos: false,
        },
    );
    bytes[20..24].copy_from_slice(&0x3000_0001u32.to_le_bytes());
    expect_same(bytes.clone(), LinkType::Ethernet);
    bytes[20..24].copy_from_slice(&0x0001_0001u32.to_le_bytes());
    let (_, error) = read_all(bytes);
    assert!(
        error.unwrap().to_string().contains("reserved bits set"),
        "the reserved bits are refused"
    );
}

/// if_tsresol with its top bit set is a power of two (0x88: 2^-8 s).
#[test]
fn pcapng_binary_timestamp_resolution_is_read() {
    assert_eq!(pcapng::units_per_second(9), Some(1_000_000_000));
    assert_eq!(pcapng::units_per_second(6), Some(1_000_000));
    assert_eq!(pcapng::units_per_second(0x88), Some(256));
    assert_eq!(pcapng::units_per_second(0x80 | 63), Some(1 << 63));
    assert_eq!(pcapng::units_per_second(0x80 | 64), None);
    assert_eq!(pcapng::units_per_second(20), None);
    // 256,000 units and 128 more: 1000.5 s at 2^-8 s per unit.
    let mut bytes = pcapng_bytes(LinkType::Ethernet, &[frame(256_128, &[1; 60])], false);
    // The interface's if_tsresol value: after the 28-byte section header,
    // the block's type, length, link type, reserved, snap length and the
    // option's code and length.
    assert_eq!(bytes[48], 9);
    bytes[48] = 0x88;
    let (frames, error) = read_all(bytes);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 1_000_500_000_000);
}
