//! Where pictures and sound come from: V4L2 cameras ([`v4l2`]), ALSA
//! microphones ([`alsa_microphone`]), the synthetic sources the CLI offers
//! ([`synthetic`]: `--camera test`, `test-busy`, `test-h264`,
//! `--microphone test`), and the "camera unavailable" picture the capture
//! thread puts in the camera's place while it is away ([`placeholder`]).

pub mod alsa_microphone;
pub mod placeholder;
pub mod synthetic;
pub mod v4l2;

pub use alsa_microphone::AlsaMicrophone;
pub use synthetic::{H264TestCamera, Stamp, TestPattern, ToneSource, WavSource};
pub use v4l2::V4l2Camera;
