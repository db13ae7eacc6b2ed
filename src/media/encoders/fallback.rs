//! A hardware encoder that fails in the middle of a call (its device
//! returns errors, hangs, or goes away with its module) must not end the
//! viewers' calls: from the first failure on, pictures go to OpenH264.
//! The viewers see one new IDR with new parameter sets, which browsers
//! decode without renegotiating.

use crate::media::{EncodedVideo, I420Frame, MediaError, VideoEncoder};

/// Makes the encoder to fall back to, only when it is needed: OpenH264's
/// state costs memory a board with a working hardware encoder never uses.
pub type EncoderFactory = Box<dyn FnMut() -> Result<Box<dyn VideoEncoder>, MediaError> + Send>;

pub struct FallbackEncoder {
    primary: Option<Box<dyn VideoEncoder>>,
    primary_label: String,
    make_fallback: EncoderFactory,
    fallback: Option<Box<dyn VideoEncoder>>,
    /// The last target congestion control set, for the fallback's start.
    target: Option<(u64, u32)>,
}

impl FallbackEncoder {
    pub fn new(
        primary: Box<dyn VideoEncoder>,
        primary_label: impl Into<String>,
        make_fallback: EncoderFactory,
    ) -> Self {
        Self {
            primary: Some(primary),
            primary_label: primary_label.into(),
            make_fallback,
            fallback: None,
            target: None,
        }
    }

    /// Whether the primary encoder failed and the fallback encodes now.
    pub fn fell_back(&self) -> bool {
        self.primary.is_none()
    }

    fn fall_back(&mut self, why: &MediaError) -> Result<&mut Box<dyn VideoEncoder>, MediaError> {
        log::warn!(
            "hardware encoder {} failed ({why}); encoding with OpenH264 from now on, the viewers keep their calls",
            self.primary_label
        );
        self.primary = None;
        let mut encoder = (self.make_fallback)()?;
        if let Some((bitrate_bps, fps)) = self.target {
            encoder.set_target(bitrate_bps, fps)?;
        }
        Ok(self.fallback.insert(encoder))
    }

    fn current(&mut self) -> Result<&mut Box<dyn VideoEncoder>, MediaError> {
        match self.fallback {
            Some(ref mut encoder) => Ok(encoder),
            None => self.fall_back(&MediaError::Encoder("no encoder".into())),
        }
    }
}

impl VideoEncoder for FallbackEncoder {
    fn encode(&mut self, frame: &I420Frame, force_keyframe: bool) -> Result<Option<EncodedVideo>, MediaError> {
        if let Some(primary) = self.primary.as_mut() {
            match primary.encode(frame, force_keyframe) {
                Ok(encoded) => return Ok(encoded),
                // The same picture, from the new encoder: its first is an IDR.
                Err(e) => return self.fall_back(&e)?.encode(frame, true),
            }
        }
        self.current()?.encode(frame, force_keyframe)
    }

    fn set_target(&mut self, bitrate_bps: u64, fps: u32) -> Result<(), MediaError> {
        self.target = Some((bitrate_bps, fps));
        if let Some(primary) = self.primary.as_mut() {
            match primary.set_target(bitrate_bps, fps) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.fall_back(&e)?;
                    return Ok(());
                }
            }
        }
        self.current()?.set_target(bitrate_bps, fps)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use super::*;
    use crate::media::{H264Encoder, H264Settings};

    /// Works `good` times, then fails every call.
    struct FailsAfter {
        good: usize,
        calls: Arc<AtomicUsize>,
    }

    impl VideoEncoder for FailsAfter {
        fn encode(&mut self, _: &I420Frame, _: bool) -> Result<Option<EncodedVideo>, MediaError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.good {
                Ok(Some(EncodedVideo {
                    data: bytes::Bytes::from_static(b"\0\0\0\x01\x65hw"),
                    keyframe: true,
                    duration: std::time::Duration::from_millis(40),
                    temporal_layer: 0,
                }))
            } else {
                Err(MediaError::Encoder("VIDIOC_DQBUF: No such device".into()))
            }
        }
    }

    fn openh264() -> EncoderFactory {
        Box::new(|| {
            Ok(Box::new(H264Encoder::new(H264Settings {
                width: 64,
                height: 48,
                bitrate_kbps: 200,
                ..H264Settings::default()
            })?) as Box<dyn VideoEncoder>)
        })
    }

    #[test]
    fn a_failing_hardware_encoder_hands_the_same_picture_to_openh264_as_an_idr() {
        let calls = Arc::new(AtomicUsize::new(0));
        let primary = Box::new(FailsAfter { good: 2, calls: calls.clone() });
        let mut encoder = FallbackEncoder::new(primary, "/dev/video11 (bcm2835-codec-encode)", openh264());
        let frame = I420Frame::black(64, 48, SystemTime::now()).unwrap();
        for _ in 0..2 {
            let out = encoder.encode(&frame, false).unwrap().unwrap();
            assert_eq!(&out.data[..], b"\0\0\0\x01\x65hw", "the hardware encodes while it works");
        }
        assert!(!encoder.fell_back());
        let out = encoder.encode(&frame, false).unwrap().expect("the failed picture still comes out");
        assert!(encoder.fell_back());
        assert!(out.keyframe, "the first picture after the switch is an IDR");
        let types = crate::media::encoders::h264::nal_types(&out.data);
        assert!(types.contains(&7) && types.contains(&8), "with its SPS and PPS: {types:?}");
        let mut decoder = crate::media::H264Decoder::new().unwrap();
        assert!(decoder.decode(&out.data).unwrap().is_some(), "and it decodes on its own");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the hardware is not asked again");
        let next = encoder.encode(&frame, false).unwrap();
        assert!(next.is_some_and(|n| !n.keyframe), "then ordinary pictures");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_target_that_fails_also_switches_and_the_fallback_starts_at_it() {
        struct RejectsTargets;
        impl VideoEncoder for RejectsTargets {
            fn encode(&mut self, _: &I420Frame, _: bool) -> Result<Option<EncodedVideo>, MediaError> {
                unreachable!("never asked after its target failed")
            }
            fn set_target(&mut self, _: u64, _: u32) -> Result<(), MediaError> {
                Err(MediaError::Encoder("VIDIOC_S_CTRL: Input/output error".into()))
            }
        }
        let mut encoder = FallbackEncoder::new(Box::new(RejectsTargets), "hw", openh264());
        encoder.set_target(150_000, 25).unwrap();
        assert!(encoder.fell_back());
        let frame = I420Frame::black(64, 48, SystemTime::now()).unwrap();
        assert!(encoder.encode(&frame, false).unwrap().is_some_and(|v| v.keyframe));
    }
}
