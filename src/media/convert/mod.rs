//! What a camera's buffers become, by format: raw pictures are converted
//! to I420 ([`raw`]), MJPEG is decoded ([`mjpeg`]), and a camera's own
//! H.264 is checked and passed through ([`passthrough`]).

pub mod mjpeg;
pub mod passthrough;
pub mod raw;

pub use mjpeg::MjpegDecoder;
pub use passthrough::camera_access_unit;
pub use raw::{nv12_to_i420, raw_to_i420, rgb24_to_i420, yu12_to_i420, yuyv_to_i420, yuyv_to_i420_scalar};

/// The camera formats roomcam reads, by V4L2 fourcc: raw ones it converts,
/// MJPEG it decodes, H.264 it passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Y plane then interleaved UV at half resolution.
    Nv12,
    /// Planar I420 (fourcc YU12).
    Yu12,
    /// Packed R,G,B bytes (`RGB3`).
    Rgb24,
    /// Packed B,G,R bytes (`BGR3`; libcamera's RGB888, vimc's output).
    Bgr24,
    /// Motion JPEG: one JFIF picture per buffer.
    Mjpeg,
    /// The camera's own H.264, one Annex-B access unit per buffer.
    H264,
}

impl PixelFormat {
    pub fn from_fourcc(fourcc: &[u8; 4]) -> Option<Self> {
        match fourcc {
            b"YUYV" => Some(Self::Yuyv),
            b"NV12" => Some(Self::Nv12),
            b"YU12" => Some(Self::Yu12),
            b"RGB3" => Some(Self::Rgb24),
            b"BGR3" => Some(Self::Bgr24),
            b"MJPG" | b"JPEG" => Some(Self::Mjpeg),
            b"H264" => Some(Self::H264),
            _ => None,
        }
    }

    pub fn fourcc(self) -> &'static [u8; 4] {
        match self {
            Self::Yuyv => b"YUYV",
            Self::Nv12 => b"NV12",
            Self::Yu12 => b"YU12",
            Self::Rgb24 => b"RGB3",
            Self::Bgr24 => b"BGR3",
            Self::Mjpeg => b"MJPG",
            Self::H264 => b"H264",
        }
    }

    /// Preference when several formats can deliver the wanted size and
    /// rate, by what the board pays: H.264 from the camera costs neither a
    /// conversion nor an encode, raw YUV formats cost a copy and an encode,
    /// RGB a colour conversion, MJPEG a decode on top.
    pub fn cost_rank(self) -> u8 {
        match self {
            Self::H264 => 0,
            Self::Yu12 => 1,
            Self::Nv12 => 2,
            Self::Yuyv => 3,
            Self::Rgb24 | Self::Bgr24 => 4,
            Self::Mjpeg => 5,
        }
    }

    /// Bytes per line a tightly packed buffer of this width has.
    pub fn min_stride(self, width: u32) -> usize {
        match self {
            Self::Yuyv => width as usize * 2,
            Self::Rgb24 | Self::Bgr24 => width as usize * 3,
            Self::Nv12 | Self::Yu12 | Self::Mjpeg | Self::H264 => width as usize,
        }
    }
}
