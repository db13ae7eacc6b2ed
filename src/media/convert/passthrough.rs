//! Cameras that encode H.264 themselves: their access units go to the
//! viewers untouched (no decode, no re-encode: on a Pi Zero that is the
//! difference between 720p and a thumbnail). What is left for roomcam is
//! to check each buffer (a camera can send garbage) and to know which are
//! IDRs; the pipeline puts SPS/PPS back in front of IDRs that lack them
//! ([`ParameterSets`](crate::media::encoders::h264::ParameterSets)).

use std::time::Duration;

use crate::media::encoders::h264::nal_units;
use crate::media::{EncodedVideo, MediaError};

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;

/// Turns one buffer from an H.264 camera into an access unit to send, or
/// says why it cannot be one.
pub fn camera_access_unit(buffer: &[u8], duration: Duration) -> Result<EncodedVideo, MediaError> {
    let bad = |why: &str| Err(MediaError::Decoder(format!("H.264 from the camera: {why}")));
    if !(buffer.starts_with(&[0, 0, 1]) || buffer.starts_with(&[0, 0, 0, 1])) {
        return bad("not Annex-B (no start code at the beginning)");
    }
    let (mut pictures, mut keyframe) = (0usize, false);
    for nal in nal_units(buffer) {
        let Some(&header) = nal.first() else { return bad("empty NAL unit") };
        if header & 0x80 != 0 {
            return bad("NAL unit with the forbidden bit set");
        }
        let nal_type = header & 0x1F;
        if (NAL_SLICE..=NAL_IDR).contains(&nal_type) {
            pictures += 1;
            keyframe |= nal_type == NAL_IDR;
        }
    }
    if pictures == 0 {
        return bad("no picture in the buffer");
    }
    // A camera's own H.264 has no layers roomcam knows of.
    Ok(EncodedVideo { data: bytes::Bytes::copy_from_slice(buffer), keyframe, duration, temporal_layer: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::encoders::h264::nal_types;
    use crate::media::sources::H264TestCamera;
    use crate::media::{CameraFrame, VideoSource};

    const FRAME: Duration = Duration::from_millis(40);

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for (buffer, why) in [
            (&b""[..], "start code"),
            (&b"\xff\xd8\xff\xe0JFIF"[..], "start code"),
            (&[0, 0, 0, 1][..], "empty NAL"),
            (&[0, 0, 0, 1, 0x80 | 0x65, 1, 2][..], "forbidden bit"),
            (&[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce][..], "no picture"),
            (&[0, 0, 1, 0x09, 0xf0][..], "no picture"),
        ] {
            let e = camera_access_unit(buffer, FRAME).unwrap_err().to_string();
            assert!(e.contains(why), "{buffer:?}: {e}");
        }
    }

    #[test]
    fn keyframes_are_recognised_and_buffers_kept_as_they_are() {
        let mut camera = H264TestCamera::new(320, 240, 30, Duration::from_millis(200), false).unwrap().without_pacing();
        let mut idrs = 0;
        for _ in 0..20 {
            let Ok(CameraFrame::H264(raw)) = camera.next_frame() else { panic!("not H.264") };
            let au = camera_access_unit(&raw.data, FRAME).unwrap();
            assert_eq!(au.keyframe, nal_types(&raw.data).contains(&5));
            assert_eq!(au.data, raw.data);
            assert_eq!(au.duration, FRAME);
            idrs += usize::from(au.keyframe);
        }
        assert!(idrs >= 3, "{idrs} IDRs in 20 frames at a 6-frame GOP");
    }
}
