#![no_main]
//! A viewer's SDP and its candidates, as roomcam checks them.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roomcam::fuzzing::remote_description(data));
