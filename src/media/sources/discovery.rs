//! What `[camera] device` names, and which node `"auto"` means: the first
//! V4L2 node that can deliver pictures roomcam reads, never a codec, a
//! metadata node, or a camera module's receiver that gives raw Bayer (that
//! one is reached through libcamera, see [`super::libcamera`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l::Device;
use v4l::capability::Flags;
use v4l::video::Capture;

use super::V4l2Camera;
use crate::media::convert::PixelFormat;
use crate::media::devices::video_nodes;
use crate::media::{CameraFrame, KeyframeRequest, MediaError, VideoSource};

/// `[camera] device`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CameraSpec {
    Test,
    TestBusy,
    TestH264,
    /// The first camera that can deliver pictures: V4L2, then libcamera.
    Auto,
    /// A libcamera camera: the first, or the one with this id (as
    /// `roomcam devices` prints it).
    Libcamera(Option<String>),
    V4l2(PathBuf),
}

impl CameraSpec {
    pub fn parse(device: &str) -> Result<Self, String> {
        Ok(match device {
            "test" => Self::Test,
            "test-busy" => Self::TestBusy,
            "test-h264" => Self::TestH264,
            "auto" => Self::Auto,
            "libcamera" => Self::Libcamera(None),
            other => match other.strip_prefix("libcamera:") {
                Some("") => {
                    return Err("\"libcamera:\" needs a camera id after the colon (`roomcam devices` lists them), \
                                or use \"libcamera\" for the first camera"
                        .into());
                }
                Some(id) => Self::Libcamera(Some(id.to_owned())),
                None if other.is_empty() => {
                    return Err(
                        "is empty: use \"auto\", a V4L2 path such as /dev/video0, \"libcamera\" or \"test\"".into()
                    );
                }
                None => Self::V4l2(PathBuf::from(other)),
            },
        })
    }
}

/// One /dev/video* node, as VIDIOC_QUERYCAP and VIDIOC_ENUM_FMT describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSummary {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    /// Single-planar video capture with streaming I/O: what roomcam reads.
    pub capture: bool,
    /// A memory-to-memory device (an encoder, decoder or scaler).
    pub mem2mem: bool,
    pub formats: Vec<[u8; 4]>,
}

/// Why a node is or is not a camera `auto` may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Camera,
    /// bcm2835-codec, vicodec, …: frames in and out, no camera.
    Codec,
    /// Metadata, output or multi-planar-only nodes.
    NotCapture,
    /// Only raw Bayer: the sensor receiver of a camera module (unicam,
    /// rp1-cfe), whose pictures need an ISP; libcamera drives it.
    RawBayer,
    /// Capture, but none of the formats is one roomcam reads.
    NoReadableFormat,
}

impl NodeKind {
    /// What `roomcam devices` says next to a node `auto` would skip.
    pub fn explain(&self) -> Option<&'static str> {
        match self {
            NodeKind::Camera => None,
            NodeKind::Codec => Some("a codec (memory-to-memory) node, not a camera"),
            NodeKind::NotCapture => Some("not a video capture node (metadata or output); not usable as --camera"),
            NodeKind::RawBayer => Some(
                "gives raw Bayer only: the receiver of a camera module, whose pictures need the ISP; \
                 use device = \"libcamera\" for this camera",
            ),
            NodeKind::NoReadableFormat => Some("none of its formats is one roomcam reads"),
        }
    }
}

/// Bayer fourccs (8/10/12/14/16-bit, packed or not) as V4L2 and the Pi's
/// receivers name them.
pub fn is_bayer(fourcc: &[u8; 4]) -> bool {
    // 8-bit: the four orders by name; deeper: order + bit depth (BG10,
    // GB12, RG16, …); packed: p + order + depth letters (pBAA, pgAA, pRCC).
    let eight_bit = [b"BA81", b"GBRG", b"GRBG", b"RGGB"].contains(&fourcc);
    let deep = [b"BG", b"GB", b"BA", b"RG", b"GR"].iter().any(|p| fourcc.starts_with(*p))
        && [b"10", b"12", b"14", b"16"].contains(&&[fourcc[2], fourcc[3]]);
    let packed = fourcc[0] == b'p' && matches!(fourcc[1], b'B' | b'G' | b'g' | b'R') && fourcc[2] == fourcc[3];
    eight_bit || deep || packed
}

pub fn classify(node: &NodeSummary) -> NodeKind {
    if node.mem2mem {
        return NodeKind::Codec;
    }
    if !node.capture {
        return NodeKind::NotCapture;
    }
    if node.formats.iter().any(|f| PixelFormat::from_fourcc(f).is_some()) {
        return NodeKind::Camera;
    }
    if !node.formats.is_empty() && node.formats.iter().all(is_bayer) {
        return NodeKind::RawBayer;
    }
    NodeKind::NoReadableFormat
}

/// The node `device = "auto"` uses: the first (by number) that is a camera.
pub fn first_camera(nodes: &[NodeSummary]) -> Option<&NodeSummary> {
    nodes.iter().find(|n| classify(n) == NodeKind::Camera)
}

/// A QUERYCAP string up to its first NUL: some drivers (vimc's bus_info)
/// leave bytes after the terminator that the `v4l` crate keeps.
pub fn until_nul(field: &str) -> &str {
    field.split('\0').next().unwrap_or_default()
}

/// Opens one node and describes it; `None` when it cannot be opened (gone,
/// busy, no permission: `roomcam devices` says which).
pub fn summarize(path: &Path) -> Option<NodeSummary> {
    let dev = Device::with_path(path).ok()?;
    let caps = dev.query_caps().ok()?;
    let c = caps.capabilities;
    let formats = if c.contains(Flags::VIDEO_CAPTURE) {
        dev.enum_formats().unwrap_or_default().into_iter().map(|f| f.fourcc.repr).collect()
    } else {
        Vec::new()
    };
    Some(NodeSummary {
        path: path.to_owned(),
        driver: until_nul(&caps.driver).to_owned(),
        card: until_nul(&caps.card).to_owned(),
        capture: c.contains(Flags::VIDEO_CAPTURE) && c.contains(Flags::STREAMING),
        mem2mem: c.intersects(Flags::VIDEO_M2M | Flags::VIDEO_M2M_MPLANE),
        formats,
    })
}

/// Every /dev/video* node that opens, by number.
pub fn scan(dev_dir: &Path) -> Vec<NodeSummary> {
    video_nodes(dev_dir).into_iter().filter_map(|(path, _)| summarize(&path)).collect()
}

/// How often `auto` looks again for a camera while it has none.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// `device = "auto"` when no camera was there at start: looks for one
/// every [`RESCAN_EVERY`] (the capture thread shows "camera unavailable"
/// meanwhile) and, once one appears, is that camera.
pub struct AutoCamera {
    dev_dir: PathBuf,
    open: Box<dyn Fn(&Path) -> V4l2Camera + Send>,
    camera: Option<V4l2Camera>,
    last_scan: Option<Instant>,
}

impl AutoCamera {
    pub fn new(dev_dir: impl Into<PathBuf>, open: impl Fn(&Path) -> V4l2Camera + Send + 'static) -> Self {
        Self { dev_dir: dev_dir.into(), open: Box::new(open), camera: None, last_scan: None }
    }
}

impl VideoSource for AutoCamera {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        if self.camera.is_none() && self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            self.last_scan = Some(Instant::now());
            if let Some(node) = first_camera(&scan(&self.dev_dir)) {
                log::info!("camera: found {} ({}, {})", node.path.display(), node.driver, node.card);
                self.camera = Some((self.open)(&node.path));
            }
        }
        match &mut self.camera {
            Some(camera) => camera.next_frame(),
            None => Err(MediaError::Device {
                device: "auto".into(),
                reason: format!("no camera in {} yet (`roomcam devices` lists what is there)", self.dev_dir.display()),
            }),
        }
    }

    fn request_keyframe(&mut self) -> KeyframeRequest {
        self.camera.as_mut().map_or(KeyframeRequest::Unsupported, VideoSource::request_keyframe)
    }

    fn set_h264_bitrate(&mut self, bitrate_bps: u64) {
        if let Some(camera) = &mut self.camera {
            camera.set_h264_bitrate(bitrate_bps);
        }
    }

    fn delivers_h264(&self) -> bool {
        self.camera.as_ref().is_some_and(VideoSource::delivers_h264)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u32, driver: &str, capture: bool, mem2mem: bool, formats: &[&[u8; 4]]) -> NodeSummary {
        NodeSummary {
            path: PathBuf::from(format!("/dev/video{n}")),
            driver: driver.into(),
            card: driver.into(),
            capture,
            mem2mem,
            formats: formats.iter().map(|f| **f).collect(),
        }
    }

    #[test]
    fn querycap_fields_end_at_their_first_nul() {
        assert_eq!(until_nul("platform:vimc\0\0x\0"), "platform:vimc");
        assert_eq!(until_nul("uvcvideo"), "uvcvideo");
    }

    #[test]
    fn device_names_parse_and_an_empty_libcamera_id_is_an_error() {
        assert_eq!(CameraSpec::parse("auto"), Ok(CameraSpec::Auto));
        assert_eq!(CameraSpec::parse("test-busy"), Ok(CameraSpec::TestBusy));
        assert_eq!(CameraSpec::parse("libcamera"), Ok(CameraSpec::Libcamera(None)));
        assert_eq!(
            CameraSpec::parse("libcamera:/base/soc/i2c0mux/i2c@1/imx708@1a"),
            Ok(CameraSpec::Libcamera(Some("/base/soc/i2c0mux/i2c@1/imx708@1a".into())))
        );
        assert_eq!(CameraSpec::parse("/dev/video2"), Ok(CameraSpec::V4l2("/dev/video2".into())));
        assert!(CameraSpec::parse("libcamera:").unwrap_err().contains("camera id"));
        assert!(CameraSpec::parse("").is_err());
    }

    #[test]
    fn auto_skips_codecs_metadata_and_bayer_receivers_of_a_pi() {
        // A Pi 4 with a camera module and no USB camera: the unicam
        // receiver (Bayer only), its metadata node, the codec block.
        let pi = [
            node(0, "unicam", true, false, &[b"pRAA", b"RG10", b"RGGB"]),
            node(1, "unicam", false, false, &[]),
            node(10, "bcm2835-codec", false, true, &[]),
            node(11, "bcm2835-codec", false, true, &[]),
            node(12, "bcm2835-codec", false, true, &[]),
            node(18, "bcm2835-codec", false, true, &[]),
        ];
        assert_eq!(first_camera(&pi), None, "nothing there is a V4L2 camera: libcamera's turn");
        assert_eq!(classify(&pi[0]), NodeKind::RawBayer);
        assert!(NodeKind::RawBayer.explain().unwrap().contains("libcamera"));
        assert_eq!(classify(&pi[2]), NodeKind::Codec);
        assert_eq!(classify(&pi[1]), NodeKind::NotCapture);
        // The same Pi with a USB webcam plugged in later (higher number).
        let mut with_usb = pi.to_vec();
        with_usb.push(node(19, "uvcvideo", true, false, &[b"MJPG", b"YUYV"]));
        with_usb.push(node(20, "uvcvideo", false, false, &[]));
        assert_eq!(first_camera(&with_usb).map(|n| n.path.clone()), Some("/dev/video19".into()));
    }

    #[test]
    fn bayer_names_are_told_from_readable_and_grey_formats() {
        for f in [b"BA81", b"GRBG", b"RGGB", b"BG10", b"GB12", b"pBAA", b"pgAA", b"pRAA", b"RG16"] {
            assert!(is_bayer(f), "{}", String::from_utf8_lossy(f));
        }
        for f in [b"YUYV", b"RGB3", b"BGR3", b"GREY", b"MJPG", b"NV12", b"H264", b"BA24", b"RGBP"] {
            assert!(!is_bayer(f), "{}", String::from_utf8_lossy(f));
        }
        // A capture node with GREY only is neither a camera nor a receiver.
        assert_eq!(classify(&node(3, "ir", true, false, &[b"GREY"])), NodeKind::NoReadableFormat);
    }

    #[test]
    fn auto_with_no_camera_says_so_and_does_not_rescan_at_every_call() {
        let dir = std::env::temp_dir().join(format!("roomcam-auto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut auto = AutoCamera::new(&dir, |p| V4l2Camera::new(p, 640, 480, 25));
        let e = auto.next_frame().unwrap_err().to_string();
        assert!(e.contains("no camera") && e.contains("roomcam devices"), "{e}");
        let first_scan = auto.last_scan;
        assert!(auto.next_frame().is_err());
        assert_eq!(auto.last_scan, first_scan, "looked again within {RESCAN_EVERY:?}");
        assert!(!auto.delivers_h264());
        assert_eq!(auto.request_keyframe(), KeyframeRequest::Unsupported);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
