#![no_main]
//! A signaling session: room events and offer/answer/candidate payloads into the session core.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roomcam::fuzzing::room_messages(data));
