//! What turns pictures and sound into what viewers receive: H.264 with
//! OpenH264 ([`h264`]: also its decoder and the SPS/PPS repair for cameras
//! that encode for themselves) and Opus ([`opus`]: also the decoder the
//! talk-back path uses).

pub mod h264;
pub mod opus;

pub use h264::{H264Decoder, H264Encoder, H264Settings, ParameterSets};
pub use opus::{OpusApplication, OpusDecoder, OpusEncoder, OpusSettings};
