//! DNS-over-TCP reassembly: arbitrary segment sequences on a port-53 flow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| connbal::fuzzing::tcp_reassembly(data));
