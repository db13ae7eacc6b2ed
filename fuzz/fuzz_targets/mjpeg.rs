#![no_main]
//! Camera buffers: MJPEG decode, and raw conversions with lying sizes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roomcam::media::fuzzing::camera_buffer(data));
