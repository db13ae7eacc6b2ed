//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for
//! `tests/fuzz_corpus.rs`, which runs the same functions over the corpus
//! and over mutations of it with the stable toolchain. Each takes
//! arbitrary bytes and must never panic.

use std::time::SystemTime;

use super::convert::{MjpegDecoder, camera_access_unit, nv12_to_i420, yu12_to_i420, yuyv_to_i420};
use super::encoders::h264::{H264Decoder, ParameterSets, nal_types, nal_units};

/// A camera buffer claiming to be MJPEG (and, reinterpreted, raw formats
/// with sizes taken from the first bytes: a camera that lies about sizes).
pub fn camera_buffer(data: &[u8]) {
    let mut dec = MjpegDecoder::new();
    if let Ok(frame) = dec.decode(data, SystemTime::now()) {
        assert!(frame.planes().is_some(), "decoded frame has inconsistent planes");
    }
    let _ = MjpegDecoder::dimensions(data);
    if data.len() >= 4 {
        let w = u32::from(u16::from_le_bytes([data[0], data[1]]) % 4096);
        let h = u32::from(u16::from_le_bytes([data[2], data[3]]) % 4096);
        let stride = data.first().map_or(0, |&b| usize::from(b) * 4);
        let mut out = Vec::new();
        let _ = yuyv_to_i420(&data[4..], stride, w, h, &mut out);
        let _ = nv12_to_i420(&data[4..], stride, w, h, &mut out);
        let _ = yu12_to_i420(&data[4..], stride, w, h, &mut out);
    }
}

/// An H.264 Annex-B stream (camera passthrough or a peer): the checks a
/// passthrough camera's buffers go through, NAL parsing and decoding.
pub fn h264_stream(data: &[u8]) {
    let mut sets = ParameterSets::default();
    for buffer in [data, &data[data.len() / 2..]] {
        if let Ok(au) = camera_access_unit(buffer, std::time::Duration::from_millis(40))
            && au.keyframe
        {
            let completed = sets.complete_idr(au.data.to_vec());
            assert!(completed.len() >= au.data.len(), "parameter sets lost bytes");
        }
    }
    let _ = nal_types(data);
    for nal in nal_units(data) {
        let _ = nal.first();
    }
    if let Ok(mut dec) = H264Decoder::new() {
        // Whole input, then split at start codes as access units.
        let _ = dec.decode(data);
        for chunk in data.split(|&b| b == 0xFF).filter(|c| !c.is_empty()).take(8) {
            let _ = dec.decode(chunk);
        }
    }
}
