//! Where pictures and sound come from: V4L2 cameras ([`v4l2`]), ALSA
//! microphones ([`alsa_microphone`]), the synthetic sources the CLI offers
//! ([`synthetic`]: `--camera test`, `test-busy`, `test-h264`,
//! `--microphone test`), and the "camera unavailable" picture the capture
//! thread puts in the camera's place while it is away ([`placeholder`]).
//! Which camera the config means: [`discovery`] (`auto`, codec and Bayer
//! nodes told apart) and [`libcamera`] (CSI camera modules, through
//! libcamera's V4L2 layer under the V4L2 path).

pub mod alsa_microphone;
pub mod discovery;
pub mod libcamera;
pub mod placeholder;
pub mod synthetic;
pub mod v4l2;

pub use alsa_microphone::AlsaMicrophone;
pub use discovery::{AutoCamera, CameraSpec};
pub use synthetic::{H264TestCamera, Stamp, TestPattern, ToneSource, WavSource};
pub use v4l2::V4l2Camera;
