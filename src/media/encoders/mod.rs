//! What turns pictures and sound into what viewers receive: H.264 with
//! OpenH264 ([`h264`]: also its decoder and the SPS/PPS repair for cameras
//! that encode for themselves) and Opus ([`opus`]: also the decoder the
//! talk-back path uses), a board's own H.264 encoder ([`v4l2m2m`]: V4L2
//! memory-to-memory) and the switch to OpenH264 when that one fails
//! ([`fallback`]).

pub mod fallback;
pub mod h264;
pub mod opus;
pub mod v4l2m2m;

pub use h264::{H264Decoder, H264Encoder, H264Settings, ParameterSets};
pub use opus::{OpusApplication, OpusDecoder, OpusEncoder, OpusSettings};
