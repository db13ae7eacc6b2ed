#![no_main]
//! H.264 Annex-B ingestion: NAL parsing and decode.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roomcam::media::fuzzing::h264_stream(data));
