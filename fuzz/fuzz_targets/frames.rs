//! Arbitrary link-layer frames through the decoder and the aggregator.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| connbal::fuzzing::frames(data));
