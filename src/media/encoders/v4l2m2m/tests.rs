//! The encoder's logic against a fake device that behaves like
//! bcm2835-codec (an IDR on the first picture and on request, parameter
//! sets in a buffer of their own when the header mode is not honoured).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::*;
use crate::media::encoders::h264::nal_types;

#[derive(Clone, Debug, PartialEq)]
enum Call {
    Formats { coded: [u8; 4], raw: [u8; 4], width: u32, height: u32 },
    Control(Control),
    FrameRate(u32),
    Start,
    Picture { timestamp: Duration },
}

const SPS_PPS: &[u8] = b"\0\0\0\x01\x67\x42\xe0\x1f\0\0\0\x01\x68\xce";
const IDR: &[u8] = b"\0\0\0\x01\x65\x88idr";
const P: &[u8] = b"\0\0\0\x01\x41\x9ap";

#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    /// The last picture written, as the device saw its buffer.
    last_buffer: Arc<Mutex<Vec<u8>>>,
    layout: Option<RawLayout>,
    refuses: Vec<Control>,
    /// Parameter sets come in a buffer of their own before each IDR.
    separate_headers: bool,
    /// From this picture on, the device stops answering.
    hangs_after: Option<usize>,
    coded: VecDeque<CodedBuffer>,
    pictures: usize,
    key_next: bool,
}

impl Fake {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn controls(&self) -> Vec<Control> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Control(control) => Some(control),
                _ => None,
            })
            .collect()
    }
}

impl M2mDevice for Fake {
    fn label(&self) -> &str {
        "/dev/video11 (fake-codec)"
    }
    fn set_formats(&mut self, coded: [u8; 4], raw: [u8; 4], width: u32, height: u32) -> Result<RawLayout, M2mError> {
        self.calls.lock().unwrap().push(Call::Formats { coded, raw, width, height });
        Ok(self.layout.unwrap_or(RawLayout {
            width,
            height,
            bytes_per_line: width,
            size_image: width * height * 3 / 2,
        }))
    }
    fn set_control(&mut self, control: Control) -> Result<(), M2mError> {
        let refused = self.refuses.iter().any(|r| std::mem::discriminant(r) == std::mem::discriminant(&control));
        if refused {
            return Err(M2mError::ControlRejected {
                device: "fake".into(),
                control,
                reason: "Invalid argument".into(),
            });
        }
        if control == Control::ForceKeyframe {
            self.key_next = true;
        }
        self.calls.lock().unwrap().push(Call::Control(control));
        Ok(())
    }
    fn set_frame_rate(&mut self, fps: u32) -> Result<(), M2mError> {
        self.calls.lock().unwrap().push(Call::FrameRate(fps));
        Ok(())
    }
    fn start(&mut self) -> Result<(), M2mError> {
        self.calls.lock().unwrap().push(Call::Start);
        Ok(())
    }
    fn queue_picture(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize, timestamp: Duration) -> Result<(), M2mError> {
        let layout = self.layout.expect("formats are set before pictures");
        let mut buffer = vec![0u8; layout.size_image as usize];
        let used = fill(&mut buffer);
        assert!(used > 0, "the encoder wrote the picture");
        *self.last_buffer.lock().unwrap() = buffer;
        self.calls.lock().unwrap().push(Call::Picture { timestamp });
        let key = self.pictures == 0 || std::mem::take(&mut self.key_next);
        self.pictures += 1;
        if self.hangs_after.is_some_and(|n| self.pictures > n) {
            return Ok(());
        }
        if key && self.separate_headers {
            self.coded.push_back(CodedBuffer { data: SPS_PPS.to_vec(), keyframe: false });
            self.coded.push_back(CodedBuffer { data: IDR.to_vec(), keyframe: true });
        } else if key {
            self.coded.push_back(CodedBuffer { data: [SPS_PPS, IDR].concat(), keyframe: true });
        } else {
            self.coded.push_back(CodedBuffer { data: P.to_vec(), keyframe: false });
        }
        Ok(())
    }
    fn dequeue_coded(&mut self, _timeout: Duration) -> Result<CodedBuffer, M2mError> {
        self.coded.pop_front().ok_or(M2mError::Timeout { device: self.label().into(), what: "a coded buffer" })
    }
}

fn fake() -> Fake {
    Fake {
        layout: Some(RawLayout { width: 64, height: 48, bytes_per_line: 64, size_image: 64 * 48 * 3 / 2 }),
        ..Fake::default()
    }
}

fn settings() -> M2mSettings {
    M2mSettings::h264(64, 48, 25, 600)
}

fn frame_at(ms: u64) -> I420Frame {
    let mut frame = I420Frame::black(64, 48, SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).unwrap();
    // Every byte its own value: a layout mistake shows.
    for (i, b) in frame.data.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    frame
}

#[test]
fn controls_ids_and_values_are_videodev2s() {
    assert_eq!(Control::Bitrate(600_000).id_and_value(), (0x0099_09cf, 600_000));
    assert_eq!(Control::ForceKeyframe.id_and_value(), (0x0099_09e5, 1));
    assert_eq!(Control::RepeatSequenceHeader.id_and_value(), (0x0099_09e2, 1));
    assert_eq!(Control::ConstrainedBaseline.id_and_value(), (0x0099_0a6b, 1));
    assert_eq!(Control::Level(31).id_and_value(), (0x0099_0a67, 9));
    assert_eq!(Control::Level(40).id_and_value(), (0x0099_0a67, 11));
    assert_eq!(Control::IdrPeriod(250).id_and_value(), (0x0099_0a66, 250));
    assert_eq!(Control::ConstantBitrate.id_and_value(), (0x0099_09ce, 1));
    assert_eq!(Control::HeaderJoinedWithFirstFrame.id_and_value(), (0x0099_09d8, 1));
    assert_eq!(Control::GopSize(25).id_and_value(), (0x0099_09cb, 25));
}

#[test]
fn h264_is_set_up_for_browsers_before_streaming_starts() {
    let device = fake();
    let _encoder = V4l2M2mEncoder::with_device(device.clone(), settings()).unwrap();
    assert_eq!(
        device.calls(),
        vec![
            Call::Formats { coded: *b"H264", raw: *b"YU12", width: 64, height: 48 },
            Call::Control(Control::ConstrainedBaseline),
            Call::Control(Control::Level(31)),
            Call::Control(Control::ConstantBitrate),
            Call::Control(Control::Bitrate(600_000)),
            Call::Control(Control::RepeatSequenceHeader),
            Call::Control(Control::HeaderJoinedWithFirstFrame),
            Call::Control(Control::IdrPeriod(250)),
            Call::FrameRate(25),
            Call::Start,
        ]
    );
}

#[test]
fn a_device_without_constrained_baseline_is_refused_and_optional_controls_are_done_without() {
    let device = Fake { refuses: vec![Control::ConstrainedBaseline], ..fake() };
    let error = V4l2M2mEncoder::with_device(device, settings()).err().expect("refused");
    assert!(error.to_string().contains("Constrained Baseline"), "{error}");

    let device = Fake { refuses: vec![Control::ConstantBitrate, Control::HeaderJoinedWithFirstFrame], ..fake() };
    let mut encoder = V4l2M2mEncoder::with_device(device, settings()).expect("optional controls");
    assert!(encoder.encode(&frame_at(0), false).unwrap().is_some());
}

#[test]
fn every_idr_carries_the_parameter_sets_even_when_the_device_sends_them_apart() {
    let device = Fake { separate_headers: true, ..fake() };
    let mut encoder = V4l2M2mEncoder::with_device(device.clone(), settings()).unwrap();
    let first = encoder.encode(&frame_at(0), false).unwrap().unwrap();
    assert!(first.keyframe);
    assert_eq!(nal_types(&first.data), vec![7, 8, 5], "SPS, PPS, IDR in one access unit");
    let p = encoder.encode(&frame_at(40), false).unwrap().unwrap();
    assert!(!p.keyframe);
    assert_eq!(nal_types(&p.data), vec![1]);
    assert_eq!(p.duration, Duration::from_millis(40));
}

#[test]
fn a_keyframe_request_presses_force_key_frame_before_that_picture_and_only_then() {
    let device = fake();
    let mut encoder = V4l2M2mEncoder::with_device(device.clone(), settings()).unwrap();
    encoder.encode(&frame_at(0), false).unwrap();
    encoder.encode(&frame_at(40), false).unwrap();
    let before = device.calls().len();
    let key = encoder.encode(&frame_at(80), true).unwrap().unwrap();
    assert!(key.keyframe);
    assert_eq!(
        device.calls()[before..],
        [Call::Control(Control::ForceKeyframe), Call::Picture { timestamp: Duration::from_millis(80) }]
    );
    let after = encoder.encode(&frame_at(120), false).unwrap().unwrap();
    assert!(!after.keyframe);
    assert_eq!(device.controls().iter().filter(|c| **c == Control::ForceKeyframe).count(), 1);
}

#[test]
fn a_device_that_cannot_force_a_keyframe_is_asked_once() {
    let device = Fake { refuses: vec![Control::ForceKeyframe], ..fake() };
    let mut encoder = V4l2M2mEncoder::with_device(device.clone(), settings()).unwrap();
    encoder.encode(&frame_at(0), false).unwrap();
    for i in 1..5 {
        let out = encoder.encode(&frame_at(i * 40), true).unwrap().unwrap();
        assert!(!out.keyframe, "the fake makes no IDR unasked");
    }
    assert!(!encoder.can_force_keyframe);
    assert!(encoder.idr_pending, "the request waits for the periodic IDR");
}

#[test]
fn the_rate_changes_while_streaming_without_an_idr_or_a_restart() {
    let device = fake();
    let mut encoder = V4l2M2mEncoder::with_device(device.clone(), settings()).unwrap();
    encoder.encode(&frame_at(0), false).unwrap();
    let before = device.calls().len();
    encoder.set_target(310_000, 25).unwrap();
    assert_eq!(device.calls()[before..], [Call::Control(Control::Bitrate(310_000))]);
    let next = encoder.encode(&frame_at(40), false).unwrap().unwrap();
    assert!(!next.keyframe);
    assert_eq!(device.calls().iter().filter(|c| **c == Call::Start).count(), 1);
}

#[test]
fn a_lower_frame_rate_is_told_to_the_device_and_the_gaps_stay_in_the_clock() {
    let device = fake();
    let mut encoder = V4l2M2mEncoder::with_device(device.clone(), settings()).unwrap();
    encoder.set_target(150_000, 10).unwrap();
    assert!(device.calls().contains(&Call::FrameRate(10)), "its rate control budgets per picture");
    // The pipeline leaves pictures out (its FrameDecimator): 10 of 25 a second.
    let durations: Vec<Duration> = [0u64, 80, 200, 280, 400]
        .iter()
        .map(|&ms| encoder.encode(&frame_at(ms), false).unwrap().unwrap().duration)
        .collect();
    let ms: Vec<u128> = durations.iter().skip(1).map(Duration::as_millis).collect();
    assert_eq!(ms, [80, 120, 80, 120], "each picture lasts until the next one kept");
    encoder.set_target(150_000, 25).unwrap();
    assert_eq!(device.calls().iter().filter(|c| matches!(c, Call::FrameRate(_))).count(), 3, "25, 10, 25");
}

#[test]
fn pictures_land_at_the_drivers_stride_and_padded_chroma_offsets() {
    // bcm2835-codec style: lines padded to 96 bytes, height to 64 rows.
    let layout = RawLayout { width: 64, height: 48, bytes_per_line: 96, size_image: 96 * 64 * 3 / 2 };
    let device = Fake { layout: Some(layout), ..fake() };
    let mut encoder = V4l2M2mEncoder::with_device(device.clone(), settings()).unwrap();
    let frame = frame_at(0);
    encoder.encode(&frame, false).unwrap();
    let buffer = device.last_buffer.lock().unwrap().clone();
    let (y, u, v) = frame.planes().unwrap();
    for row in [0usize, 1, 47] {
        assert_eq!(&buffer[row * 96..row * 96 + 64], &y[row * 64..row * 64 + 64], "luma row {row}");
    }
    let u_start = 96 * 64;
    let v_start = u_start + 48 * 32;
    for row in [0usize, 23] {
        assert_eq!(&buffer[u_start + row * 48..u_start + row * 48 + 32], &u[row * 32..row * 32 + 32], "U row {row}");
        assert_eq!(&buffer[v_start + row * 48..v_start + row * 48 + 32], &v[row * 32..row * 32 + 32], "V row {row}");
    }
}

#[test]
fn a_hung_device_is_an_error_naming_it_and_a_wrong_frame_is_refused() {
    let device = Fake { hangs_after: Some(1), ..fake() };
    let mut encoder = V4l2M2mEncoder::with_device(device, settings()).unwrap();
    assert!(encoder.encode(&frame_at(0), false).unwrap().is_some());
    let error = encoder.encode(&frame_at(40), false).unwrap_err();
    assert!(error.to_string().contains("/dev/video11") && error.to_string().contains("hung"), "{error}");
    let wrong = I420Frame::black(32, 24, SystemTime::now()).unwrap();
    assert!(encoder.encode(&wrong, false).is_err());
}

#[test]
fn fwht_gets_its_gop_and_no_h264_controls() {
    let device = fake();
    let settings = M2mSettings { codec: FWHT, ..settings() };
    let _encoder = V4l2M2mEncoder::with_device(device.clone(), settings).unwrap();
    assert_eq!(device.controls(), vec![Control::GopSize(250)]);
}

#[test]
fn fwht_key_frames_are_read_from_the_frame_header() {
    let header = |flags: u32| {
        let mut h = vec![0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
        for word in [3u32, 640, 480, flags] {
            h.extend_from_slice(&word.to_be_bytes());
        }
        h
    };
    assert!(fwht_is_key_frame(&header(1 << 10)));
    assert!(!fwht_is_key_frame(&header(0)));
    let mut not_fwht = header(1 << 10);
    not_fwht[0] = 0;
    assert!(!fwht_is_key_frame(&not_fwht));
    assert!(!fwht_is_key_frame(&header(1 << 10)[..22]));
}
