//! H.264 via OpenH264: the encoder that feeds WebRTC, and a decoder used by
//! tests and the programmatic viewer to look at what was actually sent.

use std::time::{Duration, SystemTime};

use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::YUVSource;
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_FRAME_RATE, ENCODER_OPTION_MAX_BITRATE,
    ENCODER_OPTION_RC_FRAME_SKIP, ENCODER_OPTION_SVC_ENCODE_PARAM_EXT, SBitrateInfo, SEncParamExt, SPATIAL_LAYER_0,
    SPATIAL_LAYER_ALL,
};

use crate::media::{EncodedVideo, I420Frame, MediaError, VideoEncoder};

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

#[derive(Clone, Debug)]
pub struct H264Settings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// OpenH264 worker threads (0 = one per core). Only pays off together
    /// with `max_slice_bytes`: OpenH264 threads over slices, and a single
    /// slice per picture leaves the other cores idle.
    pub threads: u16,
    /// Cap each slice (NAL unit) at this many bytes; with a value under the
    /// RTP payload size every NAL fits one packet (no FU-A fragmentation).
    pub max_slice_bytes: Option<u32>,
    /// A periodic IDR as a safety net for viewers whose PLI got lost;
    /// `None` = only on request.
    pub keyframe_interval: Option<Duration>,
    /// Let rate control drop frames to hold the bitrate (the encoder then
    /// returns `Ok(None)` for them).
    pub allow_frame_skip: bool,
    /// Faster but larger output; the Pi has little CPU to spare.
    pub low_complexity: bool,
    /// 1, or 2: every other picture is then a non-reference one (temporal
    /// layer 1) that a viewer can be spared without breaking its decoding
    /// (see `crate::rate` for who gets only layer 0).
    pub temporal_layers: u8,
}

impl Default for H264Settings {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 30,
            bitrate_kbps: 1_000,
            threads: 1,
            max_slice_bytes: None,
            keyframe_interval: Some(Duration::from_secs(10)),
            allow_frame_skip: true,
            low_complexity: false,
            temporal_layers: 1,
        }
    }
}

/// The lowest level that holds the stream, as `level_idc` (31 = 3.1), but
/// never below 3.1: browsers offer `profile-level-id=42e01f` (Constrained
/// Baseline 3.1), so a smaller picture gains nothing from advertising less.
/// The hardware encoder is given the same.
pub(crate) fn level_idc_for(width: u32, height: u32, fps: u32) -> u8 {
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let mbps = mbs * u64::from(fps);
    if mbs <= 3_600 && mbps <= 108_000 {
        31
    } else if mbs <= 5_120 && mbps <= 216_000 {
        32
    } else if mbs <= 8_192 && mbps <= 245_760 {
        40
    } else if mbs <= 8_704 && mbps <= 522_240 {
        42
    } else {
        51
    }
}

fn level_for(width: u32, height: u32, fps: u32) -> Level {
    match level_idc_for(width, height, fps) {
        31 => Level::Level_3_1,
        32 => Level::Level_3_2,
        40 => Level::Level_4_0,
        42 => Level::Level_4_2,
        _ => Level::Level_5_1,
    }
}

/// Borrowed view of an [`I420Frame`] for OpenH264. Only built from a frame
/// whose buffer size was checked, because OpenH264's own slice wrapper
/// asserts (panics) on mismatches.
struct I420View<'a> {
    width: usize,
    height: usize,
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
}

impl<'a> I420View<'a> {
    fn new(frame: &'a I420Frame) -> Option<Self> {
        let (y, u, v) = frame.planes()?;
        Some(Self { width: frame.width as usize, height: frame.height as usize, y, u, v })
    }
}

impl YUVSource for I420View<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }
    fn y(&self) -> &[u8] {
        self.y
    }
    fn u(&self) -> &[u8] {
        self.u
    }
    fn v(&self) -> &[u8] {
        self.v
    }
}

/// Splits Annex-B into NAL units (start codes stripped).
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    openh264::nal_units(annexb).map(|nal| {
        let start = nal.iter().position(|&b| b != 0).map_or(nal.len(), |p| p + 1);
        &nal[start.min(nal.len())..]
    })
}

/// NAL unit types (low five bits of the header) in an Annex-B buffer.
pub fn nal_types(annexb: &[u8]) -> Vec<u8> {
    nal_units(annexb).filter_map(|n| n.first().map(|h| h & 0x1F)).collect()
}

/// Constrained Baseline H.264 encoder (OpenH264), Annex-B output.
pub struct H264Encoder {
    inner: Encoder,
    settings: H264Settings,
    last_capture: Option<SystemTime>,
    timestamp: Duration,
    encoded_any: bool,
    /// A keyframe was asked for and has not come out yet (the request must
    /// survive a frame that rate control skipped).
    idr_pending: bool,
    parameter_sets: ParameterSets,
    frame_duration: Duration,
    /// A rate set with [`VideoEncoder::set_target`] that OpenH264 has not
    /// been told yet: it initialises itself on the first frame, and takes no
    /// options before that.
    pending_target: Option<(u64, u32)>,
    /// `timestamp` of the last frame that came out (rate control skips some).
    last_output: Option<Duration>,
    /// Whether OpenH264 has been told `temporal_layers` (the wrapper always
    /// initialises it with one, and takes no options before the first frame).
    layers_applied: bool,
}

impl H264Encoder {
    pub fn new(settings: H264Settings) -> Result<Self, MediaError> {
        let s = &settings;
        if I420Frame::expected_len(s.width, s.height).is_none() || s.width > 3840 || s.height > 2160 {
            return Err(MediaError::Unsupported(format!("H.264 encode at {}x{}", s.width, s.height)));
        }
        if !(1..=2).contains(&s.temporal_layers) {
            return Err(MediaError::Unsupported(format!("{} temporal layers", s.temporal_layers)));
        }
        if !(1..=120).contains(&s.fps) || !(50..=50_000).contains(&s.bitrate_kbps) {
            return Err(MediaError::Unsupported(format!("H.264 at {} fps, {} kb/s", s.fps, s.bitrate_kbps)));
        }
        let intra = s.keyframe_interval.map_or(0, |d| ((d.as_secs_f64() * f64::from(s.fps)).round() as u32).max(1));
        let mut config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(level_for(s.width, s.height, s.fps))
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(s.bitrate_kbps * 1_000))
            .max_frame_rate(FrameRate::from_hz(s.fps as f32))
            .skip_frames(s.allow_frame_skip)
            .num_threads(s.threads)
            .complexity(if s.low_complexity { Complexity::Low } else { Complexity::Medium })
            // Same IDs on every IDR: a late joiner's decoder needs nothing
            // but the IDR's own SPS/PPS.
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .intra_frame_period(IntraFramePeriod::from_num_frames(intra))
            .vui(VuiConfig::bt601());
        if let Some(max) = s.max_slice_bytes {
            config = config.max_slice_len(max.max(200));
        }
        let inner = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| MediaError::Encoder(format!("openh264 init: {e}")))?;
        let layers_applied = s.temporal_layers == 1;
        Ok(Self {
            inner,
            layers_applied,
            frame_duration: Duration::from_nanos(1_000_000_000 / u64::from(s.fps)),
            settings,
            last_capture: None,
            timestamp: Duration::ZERO,
            encoded_any: false,
            idr_pending: false,
            parameter_sets: ParameterSets::default(),
            pending_target: None,
            last_output: None,
        })
    }

    pub fn settings(&self) -> &H264Settings {
        &self.settings
    }

    /// Tells the initialised encoder the new rate through its run-time
    /// options: nothing is re-created, so no IDR follows.
    fn apply_target(&mut self, bitrate_bps: u64, fps: u32) -> Result<(), MediaError> {
        let ceiling_bps = u64::from(self.settings.bitrate_kbps) * 1_000;
        let bitrate = bitrate_bps.clamp(1, ceiling_bps.max(1)).min(i32::MAX as u64) as i32;
        // The wrapper set the maximum to the initial target; a target above
        // the maximum is clamped to it by OpenH264, so the maximum goes first.
        let mut max = SBitrateInfo { iLayer: SPATIAL_LAYER_0, iBitrate: ceiling_bps.min(i32::MAX as u64) as i32 };
        self.set_option(ENCODER_OPTION_MAX_BITRATE, &raw mut max, "maximum bitrate")?;
        // Layer 0 is what rate control reads; the total is kept equal so that
        // a later parameter update does not bring the old figure back.
        let mut layer = SBitrateInfo { iLayer: SPATIAL_LAYER_0, iBitrate: bitrate };
        self.set_option(ENCODER_OPTION_BITRATE, &raw mut layer, "bitrate")?;
        let mut total = SBitrateInfo { iLayer: SPATIAL_LAYER_ALL, iBitrate: bitrate };
        self.set_option(ENCODER_OPTION_BITRATE, &raw mut total, "total bitrate")?;
        let fps = fps.clamp(1, self.settings.fps);
        let mut rate = fps as f32;
        self.set_option(ENCODER_OPTION_FRAME_RATE, &raw mut rate, "frame rate")?;
        // Frame skipping is what holds a rate the content cannot fit in;
        // re-asserted because OpenH264 resets it on some parameter changes.
        let mut skip = self.settings.allow_frame_skip;
        self.set_option(ENCODER_OPTION_RC_FRAME_SKIP, &raw mut skip, "frame skip")?;
        Ok(())
    }

    /// Re-parameterises the initialised encoder with `temporal_layers`; its
    /// next picture is an IDR.
    fn apply_temporal_layers(&mut self) -> Result<(), MediaError> {
        let mut params = SEncParamExt::default();
        // SAFETY: initialised encoder; GetOption fills an SEncParamExt for this option.
        let status =
            unsafe { self.inner.raw_api().get_option(ENCODER_OPTION_SVC_ENCODE_PARAM_EXT, (&raw mut params).cast()) };
        if status != 0 {
            return Err(MediaError::Encoder(format!("openh264: reading the parameters failed ({status})")));
        }
        params.iTemporalLayerNum = i32::from(self.settings.temporal_layers);
        self.set_option(ENCODER_OPTION_SVC_ENCODE_PARAM_EXT, &raw mut params, "temporal layers")?;
        self.layers_applied = true;
        self.idr_pending = true;
        Ok(())
    }

    fn set_option<T>(&mut self, option: ENCODER_OPTION, value: *mut T, what: &str) -> Result<(), MediaError> {
        // SAFETY: the encoder is initialised (a frame was encoded), and each
        // option is given the type OpenH264 reads for it (SBitrateInfo for
        // the bitrates, float for the frame rate, bool for frame skip),
        // alive for the duration of the call.
        let status = unsafe { self.inner.raw_api().set_option(option, value.cast()) };
        if status == 0 {
            Ok(())
        } else {
            Err(MediaError::Encoder(format!("openh264: setting the {what} failed ({status})")))
        }
    }
}

/// The newest SPS and PPS of a stream (with their start codes), put back in
/// front of any IDR that comes without them: a viewer that joins late needs
/// them with every IDR, and many H.264 cameras send them only once, when
/// streaming starts.
#[derive(Debug, Default)]
pub struct ParameterSets {
    sets: Vec<u8>,
}

impl ParameterSets {
    /// Takes an IDR access unit: remembers its SPS and PPS when it has both,
    /// otherwise returns it with the remembered ones in front.
    pub fn complete_idr(&mut self, idr: Vec<u8>) -> Vec<u8> {
        let sets: Vec<&[u8]> = openh264::nal_units(&idr)
            .filter(|n| nal_types(n).first().is_some_and(|&t| t == NAL_SPS || t == NAL_PPS))
            .collect();
        let types = nal_types(&idr);
        if types.contains(&NAL_SPS) && types.contains(&NAL_PPS) {
            self.sets = sets.concat();
            idr
        } else if self.sets.is_empty() {
            idr
        } else {
            let mut with_sets = Vec::with_capacity(self.sets.len() + idr.len());
            with_sets.extend_from_slice(&self.sets);
            with_sets.extend_from_slice(&idr);
            with_sets
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

impl VideoEncoder for H264Encoder {
    fn encode(&mut self, frame: &I420Frame, force_keyframe: bool) -> Result<Option<EncodedVideo>, MediaError> {
        let view = I420View::new(frame).ok_or_else(|| {
            MediaError::Encoder(format!(
                "frame {}x{} has {} bytes, I420 needs {:?}",
                frame.width,
                frame.height,
                frame.data.len(),
                I420Frame::expected_len(frame.width, frame.height)
            ))
        })?;
        if self.encoded_any && !self.layers_applied {
            self.apply_temporal_layers()?;
        }
        if self.encoded_any
            && let Some((bitrate_bps, fps)) = self.pending_target.take()
        {
            self.apply_target(bitrate_bps, fps)?;
        }
        self.idr_pending |= force_keyframe;
        if self.idr_pending {
            self.inner.force_intra_frame();
        }
        // Rate control budgets bits by timestamp. Advance by the real capture
        // gap, so frames dropped upstream ("latest frame wins") leave a gap,
        // but never by less than one frame period, so frames fed faster than
        // real time (tests, benchmarks) still get a whole frame's budget.
        // Clamped so a wall-clock jump cannot derail it.
        let gap = self
            .last_capture
            .and_then(|last| frame.captured_at.duration_since(last).ok())
            .unwrap_or(self.frame_duration)
            .clamp(self.frame_duration, Duration::from_secs(1));
        self.last_capture = Some(frame.captured_at);
        self.timestamp += if self.encoded_any { gap } else { Duration::ZERO };
        self.encoded_any = true;
        let ts = openh264::Timestamp::from_millis(self.timestamp.as_millis() as u64);
        let out = self.inner.encode_at(&view, ts).map_err(|e| MediaError::Encoder(format!("openh264: {e}")))?;
        let frame_type = out.frame_type();
        if matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let mut data = out.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        let keyframe = frame_type == FrameType::IDR;
        // The picture's layer (a frame's NAL units all share it; the
        // parameter sets' layer says 0).
        let temporal_layer = (0..out.num_layers())
            .filter_map(|i| out.layer(i))
            .map(|layer| layer.raw_info().uiTemporalId)
            .max()
            .unwrap_or(0);
        if keyframe {
            self.idr_pending = false;
            data = self.parameter_sets.complete_idr(data);
        }
        // The RTP clock advances by each frame's duration: the time since the
        // frame before it that came out, so that frames skipped (by rate
        // control, or by a lowered frame rate) leave their time in the clock
        // instead of slowing it down.
        let duration = self.last_output.map_or(self.frame_duration, |last| self.timestamp.saturating_sub(last));
        self.last_output = Some(self.timestamp);
        Ok(Some(EncodedVideo { data: bytes::Bytes::from(data), keyframe, duration, temporal_layer }))
    }

    fn set_target(&mut self, bitrate_bps: u64, fps: u32) -> Result<(), MediaError> {
        if self.encoded_any {
            self.apply_target(bitrate_bps, fps)
        } else {
            self.pending_target = Some((bitrate_bps, fps));
            Ok(())
        }
    }
}

/// OpenH264 decoder, Annex-B in, tightly packed I420 out.
pub struct H264Decoder {
    inner: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self, MediaError> {
        let inner = Decoder::new().map_err(|e| MediaError::Decoder(format!("openh264 init: {e}")))?;
        Ok(Self { inner })
    }

    /// Decodes one access unit (or parameter sets). `Ok(None)` when no
    /// picture came out yet; corrupt input is an error, never a panic.
    /// `captured_at` of the result is the decode time (the test pattern's
    /// stamp carries the real capture time).
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<I420Frame>, MediaError> {
        if annexb.is_empty() {
            return Ok(None);
        }
        let Some(yuv) = self.inner.decode(annexb).map_err(|e| MediaError::Decoder(format!("openh264: {e}")))? else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        let len = I420Frame::expected_len(w as u32, h as u32)
            .ok_or_else(|| MediaError::Decoder(format!("decoded picture has odd size {w}x{h}")))?;
        let mut data = Vec::with_capacity(len);
        let short = || MediaError::Decoder(format!("decoded planes too small for {w}x{h}"));
        for (plane, stride, pw, ph) in [(yuv.y(), sy, w, h), (yuv.u(), su, w / 2, h / 2), (yuv.v(), sv, w / 2, h / 2)] {
            for row in 0..ph {
                let start = row * stride;
                data.extend_from_slice(plane.get(start..start + pw).ok_or_else(short)?);
            }
        }
        Ok(Some(I420Frame { width: w as u32, height: h as u32, data, captured_at: SystemTime::now() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fixtures::{looks_like_test_pattern, read_stamp};
    use crate::media::sources::TestPattern;

    const NAL_SLICE_IDR: u8 = 5;

    fn settings(w: u32, h: u32, kbps: u32) -> H264Settings {
        H264Settings { width: w, height: h, fps: 30, bitrate_kbps: kbps, ..H264Settings::default() }
    }

    fn encode_n(enc: &mut H264Encoder, src: &mut TestPattern, n: usize, key_at: &[usize]) -> Vec<EncodedVideo> {
        (0..n).filter_map(|i| enc.encode(&src.next_picture(), key_at.contains(&i)).unwrap()).collect()
    }

    #[test]
    fn sps_is_constrained_baseline_and_level_fits_42e01f() {
        let mut enc = H264Encoder::new(settings(640, 480, 800)).unwrap();
        let mut src = TestPattern::new(640, 480, 30).unwrap().without_pacing();
        let first = enc.encode(&src.next_picture(), false).unwrap().expect("first frame");
        assert!(first.keyframe);
        assert_eq!(first.data[..4], [0, 0, 0, 1], "Annex-B start code");
        let sps = nal_units(&first.data).find(|n| n[0] & 0x1F == NAL_SPS).expect("SPS");
        assert_eq!(sps[1], 0x42, "profile_idc 66 (baseline)");
        assert_eq!(sps[2] & 0x40, 0x40, "constraint_set1_flag: constrained baseline");
        assert!(sps[3] <= 0x1F, "level_idc {} above 3.1", sps[3]);
    }

    #[test]
    fn level_choice() {
        assert!(matches!(level_for(640, 480, 30), Level::Level_3_1));
        assert!(matches!(level_for(1280, 720, 30), Level::Level_3_1));
        assert!(matches!(level_for(1280, 720, 60), Level::Level_3_2));
        assert!(matches!(level_for(1920, 1080, 30), Level::Level_4_0));
    }

    #[test]
    fn roundtrip_keeps_stamp_and_bars_at_modest_bitrate() {
        for &(w, h, kbps) in &[(320, 240, 250), (640, 480, 600)] {
            let mut enc = H264Encoder::new(settings(w, h, kbps)).unwrap();
            let mut dec = H264Decoder::new().unwrap();
            let mut src = TestPattern::new(w, h, 30).unwrap().without_pacing();
            let mut numbers = Vec::new();
            for i in 0..45 {
                let frame = src.next_picture();
                let Some(ev) = enc.encode(&frame, false).unwrap() else { continue };
                assert_eq!(ev.keyframe, i == 0, "only the first frame is an IDR");
                let pic = dec.decode(&ev.data).unwrap().expect("a picture per access unit");
                assert_eq!((pic.width, pic.height), (w, h));
                let stamp = read_stamp(&pic).unwrap_or_else(|| panic!("{w}x{h} frame {i}: stamp unreadable"));
                assert_eq!(stamp.captured_unix_ms, read_stamp(&frame).unwrap().captured_unix_ms);
                assert!(looks_like_test_pattern(&pic), "{w}x{h} frame {i}: bars not recognised");
                numbers.push(stamp.frame_number);
            }
            assert!(numbers.len() >= 40, "{w}x{h}: only {} frames came out", numbers.len());
            assert!(numbers.windows(2).all(|p| p[1] > p[0]), "{numbers:?}");
        }
    }

    #[test]
    fn forced_keyframe_is_idr_with_parameter_sets_and_decodes_standalone() {
        let mut enc = H264Encoder::new(settings(320, 240, 300)).unwrap();
        let mut src = TestPattern::new(320, 240, 30).unwrap().without_pacing();
        let out = encode_n(&mut enc, &mut src, 20, &[12]);
        let keys: Vec<usize> = out.iter().enumerate().filter(|(_, e)| e.keyframe).map(|(i, _)| i).collect();
        assert_eq!(keys.len(), 2, "initial IDR plus the forced one");
        for &k in &keys {
            let types = nal_types(&out[k].data);
            assert!(
                types.contains(&NAL_SPS) && types.contains(&NAL_PPS) && types.contains(&NAL_SLICE_IDR),
                "{types:?}"
            );
        }
        let p_types = nal_types(&out[1].data);
        assert!(!p_types.contains(&NAL_SLICE_IDR) && !p_types.contains(&NAL_SPS), "{p_types:?}");
        // A viewer that joins at the second IDR decodes from there on.
        let mut late = H264Decoder::new().unwrap();
        let pic = late.decode(&out[keys[1]].data).unwrap().expect("late joiner decodes the IDR");
        assert!(read_stamp(&pic).is_some());
        let next = late.decode(&out[keys[1] + 1].data).unwrap().expect("and the P frame after it");
        assert!(read_stamp(&next).unwrap().frame_number > read_stamp(&pic).unwrap().frame_number);
    }

    #[test]
    fn periodic_keyframes() {
        let s = H264Settings { keyframe_interval: Some(Duration::from_millis(500)), ..settings(320, 240, 300) };
        let mut enc = H264Encoder::new(s).unwrap();
        let mut src = TestPattern::new(320, 240, 30).unwrap().without_pacing();
        let keys = encode_n(&mut enc, &mut src, 40, &[]).iter().filter(|e| e.keyframe).count();
        assert!((2..=4).contains(&keys), "{keys} keyframes in 40 frames with a 15-frame period");
    }

    #[test]
    fn bitrate_is_roughly_honoured() {
        // Noise, so that rate control (not content) sets the size.
        let mut x: u32 = 0x1234_5678;
        let mut noise = |t: SystemTime| {
            let data = (0..I420Frame::expected_len(320, 240).unwrap())
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            I420Frame { width: 320, height: 240, data, captured_at: t }
        };
        let t0 = SystemTime::now();
        for kbps in [150u32, 600] {
            let mut enc = H264Encoder::new(settings(320, 240, kbps)).unwrap();
            // 3 s of frames, stamped 1/30 s apart but encoded flat out.
            let bytes: usize = (0..90)
                .filter_map(|i| enc.encode(&noise(t0 + Duration::from_millis(i * 1000 / 30)), false).unwrap())
                .skip(1)
                .map(|e| e.data.len())
                .sum();
            let kbps_out = bytes as f64 * 8.0 / 3.0 / 1000.0;
            assert!(
                kbps_out > f64::from(kbps) * 0.5 && kbps_out < f64::from(kbps) * 1.6,
                "asked {kbps} kb/s, got {kbps_out:.0}"
            );
        }
    }

    /// Encodes `seconds` of the busy pattern at 25 fps (stamped 40 ms apart,
    /// encoded flat out); returns the bitrate that came out, in kbit/s (over
    /// the frames' own durations), and how many of the frames were IDRs.
    fn busy_rate(enc: &mut H264Encoder, src: &mut TestPattern, t: &mut SystemTime, seconds: u32) -> (f64, usize) {
        let (mut bits, mut media_time, mut idrs) = (0usize, Duration::ZERO, 0);
        for _ in 0..seconds * 25 {
            *t += Duration::from_millis(40);
            let frame = I420Frame { captured_at: *t, ..src.next_picture() };
            if let Some(ev) = enc.encode(&frame, false).unwrap() {
                bits += ev.data.len() * 8;
                media_time += ev.duration;
                idrs += usize::from(ev.keyframe);
            }
        }
        (bits as f64 / media_time.as_secs_f64() / 1000.0, idrs)
    }

    fn busy_encoder() -> (H264Encoder, TestPattern) {
        // No periodic IDR: any IDR in these runs would be the rate change's.
        let s = H264Settings { fps: 25, keyframe_interval: None, ..settings(640, 480, 1_500) };
        (H264Encoder::new(s).unwrap(), TestPattern::busy(640, 480, 25).unwrap().without_pacing())
    }

    /// With two temporal layers every other picture is layer 1, and a viewer
    /// given only layer 0 decodes every picture it gets: half the frame rate,
    /// the stamps in order. Prints the base layer's share of the bits, which
    /// `crate::rate::BASE_LAYER_SHARE` is set from.
    #[test]
    fn layer_1_pictures_can_be_left_out() {
        let s = H264Settings { fps: 25, keyframe_interval: None, temporal_layers: 2, ..settings(640, 480, 1_500) };
        let mut enc = H264Encoder::new(s).unwrap();
        let mut src = TestPattern::busy(640, 480, 25).unwrap().without_pacing();
        let mut t = SystemTime::now();
        let mut out = Vec::new();
        for _ in 0..150 {
            t += Duration::from_millis(40);
            let frame = I420Frame { captured_at: t, ..src.next_picture() };
            out.extend(enc.encode(&frame, false).unwrap());
        }
        // The first picture was encoded before the layers were set: skip to
        // the IDR that follows it.
        let start = out.iter().skip(1).position(|e| e.keyframe).expect("an IDR once layered") + 1;
        let layered = &out[start..];
        let layers: Vec<u8> = layered.iter().map(|e| e.temporal_layer).collect();
        assert!(layers.iter().filter(|&&l| l == 1).count() * 3 >= layers.len(), "too few layer 1 pictures: {layers:?}");
        assert!(layers.windows(2).all(|w| w != [1, 1]), "two layer 1 pictures in a row: {layers:?}");
        let bytes =
            |layer: u8| layered.iter().filter(|e| e.temporal_layer == layer).map(|e| e.data.len()).sum::<usize>();
        let share = bytes(0) as f64 / (bytes(0) + bytes(1)) as f64;
        println!(
            "test-busy 640x480@25, 1500 kbit/s, 2 temporal layers: layer 0 has {:.0} % of the bits",
            share * 100.0
        );

        let mut decoder = H264Decoder::new().unwrap();
        let mut stamps = Vec::new();
        for picture in layered.iter().filter(|e| e.temporal_layer == 0) {
            let frame = decoder.decode(&picture.data).unwrap().expect("a picture from each layer 0 access unit");
            stamps.push(read_stamp(&frame).expect("stamp readable").frame_number);
        }
        assert!(stamps.len() >= 60, "{} layer 0 pictures", stamps.len());
        assert!(stamps.windows(2).all(|w| w[1] > w[0]), "stamps out of order: {stamps:?}");
    }

    #[test]
    fn the_busy_pattern_fills_the_ceiling_and_keeps_its_stamp() {
        let (mut enc, mut src) = busy_encoder();
        let mut t = SystemTime::now();
        busy_rate(&mut enc, &mut src, &mut t, 1);
        let (kbps, _) = busy_rate(&mut enc, &mut src, &mut t, 4);
        println!("test-busy at 640x480@25, 1500 kbit/s ceiling: {kbps:.0} kbit/s ({:.1} %)", kbps / 15.0);
        assert!(kbps >= 0.95 * 1_500.0, "the busy pattern filled only {kbps:.0} of 1500 kbit/s");
        // And it is still the test pattern on the far side.
        let mut dec = H264Decoder::new().unwrap();
        let (mut enc, mut src) = busy_encoder();
        for i in 0..10 {
            let frame = src.next_picture();
            let Some(ev) = enc.encode(&frame, false).unwrap() else { continue };
            let pic = dec.decode(&ev.data).unwrap().expect("a picture");
            assert_eq!(read_stamp(&pic), read_stamp(&frame), "frame {i}: stamp");
            assert!(looks_like_test_pattern(&pic), "frame {i}: bars");
        }
    }

    #[test]
    fn the_rate_follows_a_lowered_target_without_an_idr() {
        let (mut enc, mut src) = busy_encoder();
        let mut t = SystemTime::now();
        let (before, _) = busy_rate(&mut enc, &mut src, &mut t, 3);
        enc.set_target(500_000, 25).unwrap();
        // Rate control's window is about a second: the first two are settling.
        let (settling, idrs_settling) = busy_rate(&mut enc, &mut src, &mut t, 2);
        let (after, idrs_after) = busy_rate(&mut enc, &mut src, &mut t, 3);
        println!("1500 kbit/s target: {before:.0} kbit/s; 500: {settling:.0} in the first 2 s, then {after:.0}");
        assert_eq!(idrs_settling + idrs_after, 0, "the change brought an IDR");
        assert!((350.0..650.0).contains(&after), "asked for 500 kbit/s, got {after:.0}");
        // And back up.
        enc.set_target(1_500_000, 25).unwrap();
        let (_, idrs_raising) = busy_rate(&mut enc, &mut src, &mut t, 2);
        let (raised, idrs) = busy_rate(&mut enc, &mut src, &mut t, 3);
        println!("back to 1500 kbit/s: {raised:.0} kbit/s after 2 s");
        assert_eq!(idrs_raising + idrs, 0, "raising the rate brought an IDR");
        assert!(raised > 1_200.0, "back at 1500 kbit/s, got {raised:.0}");
    }

    #[test]
    fn a_target_set_before_the_first_frame_applies_from_the_start() {
        let (mut enc, mut src) = busy_encoder();
        enc.set_target(400_000, 25).unwrap();
        let mut t = SystemTime::now();
        busy_rate(&mut enc, &mut src, &mut t, 2);
        let (kbps, _) = busy_rate(&mut enc, &mut src, &mut t, 3);
        assert!((280.0..520.0).contains(&kbps), "asked for 400 kbit/s, got {kbps:.0}");
    }

    #[test]
    fn rejects_bad_settings_and_frames() {
        assert!(matches!(H264Encoder::new(settings(641, 480, 500)), Err(MediaError::Unsupported(_))));
        assert!(matches!(H264Encoder::new(settings(640, 480, 0)), Err(MediaError::Unsupported(_))));
        let mut enc = H264Encoder::new(settings(320, 240, 300)).unwrap();
        let bad = I420Frame { width: 320, height: 240, data: vec![0; 1000], captured_at: SystemTime::now() };
        assert!(matches!(enc.encode(&bad, false), Err(MediaError::Encoder(_))));
        // Still usable afterwards.
        let mut src = TestPattern::new(320, 240, 30).unwrap().without_pacing();
        assert!(enc.encode(&src.next_picture(), false).unwrap().unwrap().keyframe);
    }

    #[test]
    fn multi_threaded_sliced_output_decodes() {
        let s = H264Settings { threads: 2, max_slice_bytes: Some(1_000), ..settings(640, 480, 1_500) };
        let mut enc = H264Encoder::new(s).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let mut src = TestPattern::new(640, 480, 30).unwrap().without_pacing();
        for ev in encode_n(&mut enc, &mut src, 10, &[]) {
            for nal in nal_units(&ev.data) {
                assert!(nal.len() <= 1_100, "NAL of {} bytes", nal.len());
            }
            let pic = dec.decode(&ev.data).unwrap().unwrap();
            assert!(read_stamp(&pic).is_some());
        }
    }

    #[test]
    fn decoder_survives_garbage() {
        let mut dec = H264Decoder::new().unwrap();
        assert!(dec.decode(&[]).unwrap().is_none());
        let mut x: u32 = 0x9E37_79B9;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        for len in [1usize, 4, 5, 16, 100, 1_000, 10_000] {
            let mut junk: Vec<u8> = (0..len).map(|_| rnd()).collect();
            let _ = dec.decode(&junk);
            // Junk that looks like NAL units (start codes + random headers).
            if len >= 5 {
                junk[..4].copy_from_slice(&[0, 0, 0, 1]);
            }
            let _ = dec.decode(&junk);
        }
        // A P frame with no IDR before it cannot produce a picture.
        let mut enc = H264Encoder::new(settings(320, 240, 300)).unwrap();
        let mut src = TestPattern::new(320, 240, 30).unwrap().without_pacing();
        let out = encode_n(&mut enc, &mut src, 3, &[]);
        let mut fresh = H264Decoder::new().unwrap();
        assert!(!matches!(fresh.decode(&out[2].data), Ok(Some(_))));
        // And after all that the first decoder still works on a real IDR.
        let pic = dec.decode(&out[0].data).unwrap().expect("IDR decodes after garbage");
        assert!(read_stamp(&pic).is_some());
    }
}
