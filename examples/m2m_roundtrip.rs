//! The hardware encoder's plumbing on a real kernel driver, for the
//! emulated board (board/emulated/test.sh runs it in the guest, where
//! vicodec is loaded): roomcam's V4L2 memory-to-memory encoder
//! (`V4l2M2mEncoder` over the real `V4l2rDevice`) encodes the stamped test
//! pattern with vicodec's stateful encoder, and vicodec's stateful decoder
//! (driven here) decodes every picture back; each must carry the stamp it
//! was made with and the pattern's colours. vicodec's codec is FWHT, not
//! H.264, and it has a GOP control but no bitrate or force-key-frame one,
//! so this proves the buffers both ways, the formats, the controls it has,
//! reopening, and a device that goes away under an open encoder (vicodec
//! unbound from its driver: ENODEV) with OpenH264 taking the picture over.
//! The H.264 controls are unit-tested against the ioctl seam.
//!
//! Prints `v4l2m2m (vicodec): N frames round-tripped, …` and the figures;
//! exits non-zero on any failure. `m2m_roundtrip [FRAMES]` (default 60).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use roomcam::media::encoders::fallback::FallbackEncoder;
use roomcam::media::encoders::v4l2m2m::device::{map_mmap_buffers, open_node, poll_until};
use roomcam::media::encoders::v4l2m2m::{FWHT, M2mSettings, V4l2M2mEncoder, YU12, find_encoders};
use roomcam::media::fixtures::{looks_like_test_pattern, read_stamp};
use roomcam::media::{
    CameraFrame, H264Decoder, H264Encoder, H264Settings, I420Frame, TestPattern, VideoEncoder, VideoSource,
};
use v4l2r::ioctl::{self, Capability, FormatFlags, FormatIterator, PlaneMapping, QBufPlane, QBuffer, V4l2Buffer};
use v4l2r::memory::MmapHandle;
use v4l2r::{Format, PixelFormat, QueueType};

/// vicodec takes nothing smaller than 640x360.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
/// vicodec's GOP control goes up to 16 pictures.
const GOP: u32 = 10;

fn fail(what: impl std::fmt::Display) -> ! {
    println!("v4l2m2m (vicodec): FAILED: {what}");
    std::process::exit(1);
}

fn open(path: &Path) -> File {
    open_node(path).unwrap_or_else(|e| fail(e))
}

/// The stateful FWHT decoder node (OUTPUT: FWHT, CAPTURE: raw).
fn find_decoder() -> PathBuf {
    let fwht = PixelFormat::from(&FWHT);
    roomcam::media::devices::video_nodes(Path::new("/dev"))
        .into_iter()
        .map(|(path, _)| path)
        .find(|path| {
            let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(path) else { return false };
            let Ok(caps) = ioctl::querycap::<Capability>(&file) else { return false };
            caps.driver == "vicodec"
                && FormatIterator::new(&file, QueueType::VideoOutput)
                    .any(|f| f.pixelformat == fwht && f.flags.contains(FormatFlags::COMPRESSED))
        })
        .unwrap_or_else(|| fail("no vicodec stateful decoder node"))
}

/// vicodec's stateful decoder, as its interface wants it driven: the
/// coded stream starts first, the driver reads the picture size from the
/// first header, and only then is the CAPTURE side set up.
struct Decoder {
    file: File,
    output_maps: Vec<PlaneMapping>,
    capture_maps: Vec<PlaneMapping>,
    queued_outputs: usize,
    next_output: usize,
}

fn check<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| fail(format!("decoder {what}: {e}")))
}

fn map(file: &File, queue: QueueType, count: u32) -> Vec<PlaneMapping> {
    map_mmap_buffers(file, queue, count).unwrap_or_else(|(what, e)| fail(format!("decoder {what}: {e}")))
}

fn wait(file: &File, events: libc::c_short, deadline: Instant) {
    // Whatever poll says, the next DQBUF tells.
    let _ = poll_until(file, events, deadline);
}

impl Decoder {
    fn open(path: &Path) -> Decoder {
        let mut file = open(path);
        let coded =
            Format { width: WIDTH, height: HEIGHT, pixelformat: PixelFormat::from(&FWHT), plane_fmt: Vec::new() };
        let _: Format = check("S_FMT (output)", ioctl::s_fmt(&mut file, (QueueType::VideoOutput, &coded)));
        let output_maps = map(&file, QueueType::VideoOutput, 2);
        check("STREAMON (output)", ioctl::streamon(&file, QueueType::VideoOutput));
        Decoder { file, output_maps, capture_maps: Vec::new(), queued_outputs: 0, next_output: 0 }
    }

    fn decode(&mut self, coded: &[u8]) -> I420Frame {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.queued_outputs == self.output_maps.len() {
            match ioctl::dqbuf::<V4l2Buffer>(&self.file, QueueType::VideoOutput) {
                Ok(_) => self.queued_outputs -= 1,
                Err(_) if Instant::now() < deadline => wait(&self.file, libc::POLLOUT, deadline),
                Err(e) => fail(format!("decoder DQBUF (output): {e}")),
            }
        }
        let index = self.next_output;
        self.next_output = (index + 1) % self.output_maps.len();
        self.output_maps[index][..coded.len()].copy_from_slice(coded);
        let mut buffer = QBuffer::<MmapHandle>::new(QueueType::VideoOutput, index as u32);
        buffer.planes = vec![QBufPlane::new(coded.len())];
        check("QBUF (output)", ioctl::qbuf::<_, ()>(&self.file, buffer));
        self.queued_outputs += 1;
        if self.capture_maps.is_empty() {
            // The first header has been read (in QBUF): CAPTURE now.
            let mut raw: Format = check("G_FMT (capture)", ioctl::g_fmt(&self.file, QueueType::VideoCapture));
            raw.pixelformat = PixelFormat::from(&YU12);
            let raw: Format = check("S_FMT (capture)", ioctl::s_fmt(&mut self.file, (QueueType::VideoCapture, &raw)));
            if (raw.width, raw.height) != (WIDTH, HEIGHT) {
                fail(format!("decoder reads {}x{} from the stream", raw.width, raw.height));
            }
            self.capture_maps = map(&self.file, QueueType::VideoCapture, 2);
            check("STREAMON (capture)", ioctl::streamon(&self.file, QueueType::VideoCapture));
            for i in 0..self.capture_maps.len() {
                self.queue_capture(i as u32);
            }
        }
        loop {
            match ioctl::dqbuf::<V4l2Buffer>(&self.file, QueueType::VideoCapture) {
                Ok(done) => {
                    let index = done.index();
                    let used = *done.get_first_plane().bytesused as usize;
                    let len = I420Frame::expected_len(WIDTH, HEIGHT).unwrap();
                    if used < len {
                        fail(format!("decoded picture of {used} bytes, wanted {len}"));
                    }
                    let data = self.capture_maps[index as usize][..len].to_vec();
                    self.queue_capture(index);
                    return I420Frame { width: WIDTH, height: HEIGHT, data, captured_at: std::time::SystemTime::now() };
                }
                Err(_) if Instant::now() < deadline => wait(&self.file, libc::POLLIN, deadline),
                Err(e) => fail(format!("no decoded picture within 5 s: {e}")),
            }
        }
    }

    fn queue_capture(&self, index: u32) {
        let mut buffer = QBuffer::<MmapHandle>::new(QueueType::VideoCapture, index);
        buffer.planes = vec![QBufPlane::new(0)];
        check("QBUF (capture)", ioctl::qbuf::<_, ()>(&self.file, buffer));
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = ioctl::streamoff(&self.file, QueueType::VideoCapture);
        let _ = ioctl::streamoff(&self.file, QueueType::VideoOutput);
        self.capture_maps.clear();
        self.output_maps.clear();
    }
}

fn settings() -> M2mSettings {
    M2mSettings {
        codec: FWHT,
        keyframe_interval: Some(Duration::from_millis(400)),
        // TCG is slow; the product's 800 ms is for real hardware.
        deadline: Duration::from_secs(3),
        ..M2mSettings::h264(WIDTH, HEIGHT, 25, 600)
    }
}

fn picture(pattern: &mut TestPattern) -> I420Frame {
    match pattern.next_frame() {
        Ok(CameraFrame::Picture(frame)) => frame,
        other => fail(format!("test pattern: {other:?}")),
    }
}

fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

struct Round {
    frames: usize,
    keyframes: Vec<usize>,
    encode_wall: Duration,
    user: Duration,
    system: Duration,
}

/// Encodes `frames` pictures with `encoder`, decodes each with vicodec's
/// decoder, and checks each against what was encoded.
fn round_trip(encoder: &mut V4l2M2mEncoder, decoder: &mut Decoder, pattern: &mut TestPattern, frames: usize) -> Round {
    let mut round = Round {
        frames: 0,
        keyframes: Vec::new(),
        encode_wall: Duration::ZERO,
        user: Duration::ZERO,
        system: Duration::ZERO,
    };
    for i in 0..frames {
        let frame = picture(pattern);
        let stamp = read_stamp(&frame).unwrap_or_else(|| fail("the source picture has no stamp"));
        let (u0, s0) = thread_cpu();
        let t0 = Instant::now();
        let coded = encoder.encode(&frame, false).unwrap_or_else(|e| fail(format!("encode {i}: {e}")));
        round.encode_wall += t0.elapsed();
        let (u1, s1) = thread_cpu();
        round.user += u1 - u0;
        round.system += s1 - s0;
        let coded = coded.unwrap_or_else(|| fail(format!("picture {i} did not come out")));
        if coded.keyframe {
            round.keyframes.push(i);
        }
        let decoded = decoder.decode(&coded.data);
        match read_stamp(&decoded) {
            Some(s) if s == stamp => {}
            other => fail(format!("picture {i}: decoded stamp {other:?}, encoded {stamp:?}")),
        }
        if !looks_like_test_pattern(&decoded) {
            fail(format!("picture {i}: decoded picture is not the test pattern"));
        }
        round.frames += 1;
    }
    round
}

/// vicodec's platform device under its driver (to unbind and bind again).
fn vicodec_device() -> String {
    std::fs::read_dir("/sys/bus/platform/drivers/vicodec")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("vicodec"))
        .unwrap_or_else(|| fail("vicodec is not bound to its driver"))
}

fn write_sys(file: &str, value: &str) {
    std::fs::write(file, value).unwrap_or_else(|e| fail(format!("{file} <- {value}: {e}")));
}

fn main() {
    let frames: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(60);
    let t_start = Instant::now();
    let encoder_node = find_encoders(Path::new("/dev"), FWHT)
        .into_iter()
        .find(|n| n.driver == "vicodec" && n.raw_formats.contains(&YU12))
        .unwrap_or_else(|| fail("no vicodec stateful encoder node taking YU12"));
    let decoder_node = find_decoder();
    println!(
        "m2m: encoder {} ({}), decoder {}",
        encoder_node.path.display(),
        encoder_node.card,
        decoder_node.display()
    );

    // 1. A round trip.
    let mut pattern = TestPattern::new(WIDTH, HEIGHT, 25).unwrap_or_else(|e| fail(e));
    let mut encoder =
        V4l2M2mEncoder::open(&encoder_node.path, settings()).unwrap_or_else(|e| fail(format!("open the encoder: {e}")));
    let mut decoder = Decoder::open(&decoder_node);
    let round = round_trip(&mut encoder, &mut decoder, &mut pattern, frames);
    // vicodec makes an I-frame every GOP pictures (and one wherever no
    // block gained from prediction, which the moving pattern rarely allows).
    let expected_keys: Vec<usize> = (0..frames).step_by(GOP as usize).collect();
    if !expected_keys.iter().all(|k| round.keyframes.contains(k)) || round.keyframes.len() * 2 > frames {
        fail(format!("key frames at {:?}, the GOP of {GOP} wants {expected_keys:?}", round.keyframes));
    }
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / round.frames as f64;
    println!(
        "m2m: per picture, roomcam's side: encode call {:.2} ms wall, {:.3} ms user CPU, {:.3} ms system CPU (vicodec's FWHT runs in the kernel)",
        per(round.encode_wall),
        per(round.user),
        per(round.system)
    );
    drop(decoder);
    drop(encoder);

    // 2. Closed and opened again: a new session from a key frame.
    let mut encoder = V4l2M2mEncoder::open(&encoder_node.path, settings())
        .unwrap_or_else(|e| fail(format!("reopen the encoder: {e}")));
    let mut decoder = Decoder::open(&decoder_node);
    let again = round_trip(&mut encoder, &mut decoder, &mut pattern, 12);
    if again.keyframes.first() != Some(&0) {
        fail(format!("the reopened encoder starts with key frames at {:?}", again.keyframes));
    }
    drop(decoder);

    // 3. The device goes away under the open encoder: an error, promptly,
    // and OpenH264 takes the same picture over.
    let device = vicodec_device();
    write_sys("/sys/bus/platform/drivers/vicodec/unbind", &device);
    let openh264 = H264Settings { width: WIDTH, height: HEIGHT, fps: 25, bitrate_kbps: 600, ..H264Settings::default() };
    let make = Box::new(move || Ok(Box::new(H264Encoder::new(openh264.clone())?) as Box<dyn VideoEncoder>));
    let label = encoder.label().to_owned();
    let frame = picture(&mut pattern);
    let t0 = Instant::now();
    let error = match encoder.encode(&frame, false) {
        Err(e) => e,
        Ok(_) => fail("the encoder kept working with its device unbound"),
    };
    let noticed = t0.elapsed();
    let mut fallback = FallbackEncoder::new(Box::new(encoder), label, make);
    let t0 = Instant::now();
    let idr = fallback.encode(&frame, false).unwrap_or_else(|e| fail(format!("fallback: {e}")));
    let switched = noticed + t0.elapsed();
    let idr = idr.unwrap_or_else(|| fail("OpenH264 gave nothing"));
    let decoded = H264Decoder::new().and_then(|mut d| d.decode(&idr.data)).unwrap_or_else(|e| fail(e));
    match decoded {
        Some(picture) if idr.keyframe && read_stamp(&picture) == read_stamp(&frame) => {}
        _ => fail("OpenH264's first picture is not a decodable IDR of the same picture"),
    }
    println!(
        "m2m: unbound under an open encoder: error after {} ms ({error}); OpenH264's IDR of the same picture decoded, {} ms from the failure",
        noticed.as_millis(),
        switched.as_millis()
    );
    drop(fallback);

    // 4. Bound again: the nodes come back and serve.
    write_sys("/sys/bus/platform/drivers/vicodec/bind", &device);
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        if let Some(n) = find_encoders(Path::new("/dev"), FWHT).into_iter().find(|n| n.driver == "vicodec") {
            break n;
        }
        if Instant::now() > deadline {
            fail("vicodec's encoder did not come back after bind");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut encoder =
        V4l2M2mEncoder::open(&node.path, settings()).unwrap_or_else(|e| fail(format!("open after bind: {e}")));
    let mut decoder = Decoder::open(&find_decoder());
    let rebound = round_trip(&mut encoder, &mut decoder, &mut pattern, 5);

    println!(
        "v4l2m2m (vicodec): {} frames round-tripped, stamps and colours ok, key frames every {GOP}; reopened {}, after unbind/bind {}; {:.1} s",
        round.frames,
        again.frames,
        rebound.frames,
        t_start.elapsed().as_secs_f64()
    );
}
