//! The pcapng reader (and everything after it). Inputs that do not start with
//! the format's header get one, so mutations are spent on records.
#![no_main]

use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x4d\x3c\x2b\x1a\x01\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\x1c\0\0\0";

fuzz_target!(|data: &[u8]| connbal::fuzzing::capture_of_format(data, HEADER));
