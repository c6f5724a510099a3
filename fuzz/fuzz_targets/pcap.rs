//! The pcap reader (and everything after it). Inputs that do not start with
//! the format's header get one, so mutations are spent on records.
#![no_main]

use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"\xd4\xc3\xb2\xa1\x02\0\x04\0\0\0\0\0\0\0\0\0\0\0\x04\0\x01\0\0\0";

fuzz_target!(|data: &[u8]| connbal::fuzzing::capture_of_format(data, HEADER));
