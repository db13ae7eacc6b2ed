#![no_main]
//! RTCP feedback: the keyframe-request forwarder and the REMB reader.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roomcam::fuzzing::rtcp_feedback(data));
