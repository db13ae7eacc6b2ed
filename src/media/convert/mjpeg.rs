//! MJPEG (one JFIF picture per camera buffer) → I420, with `zune-jpeg`.
//!
//! The picture is decoded straight to YCbCr (no RGB round trip), then
//! chroma is averaged 2×2 and the JPEG full range (0–255) is mapped to the
//! video range (Y 16–235, C 16–240) the H.264 encoder expects. Webcam
//! MJPEG often leaves out the Huffman tables; zune-jpeg fills in the
//! standard ones. Odd widths or heights lose their last column/row.
//!
//! Input comes from a device and may be anything (truncated, garbage,
//! absurd sizes): every failure is a `MediaError::Decoder`, never a panic.

use std::time::SystemTime;

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::media::{I420Frame, MediaError};

/// Largest picture accepted (4K UHD); anything bigger is refused before
/// any allocation.
pub const MAX_WIDTH: usize = 3840;
pub const MAX_HEIGHT: usize = 2160;

pub struct MjpegDecoder {
    ycbcr: Vec<u8>,
    luma_lut: [u8; 256],
    chroma_lut: [u8; 256],
}

impl Default for MjpegDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MjpegDecoder {
    pub fn new() -> Self {
        let mut luma_lut = [0u8; 256];
        let mut chroma_lut = [0u8; 256];
        for i in 0..256 {
            luma_lut[i] = (16.0 + i as f32 * 219.0 / 255.0).round() as u8;
            chroma_lut[i] = (128.0 + (i as f32 - 128.0) * 224.0 / 255.0).round().clamp(16.0, 240.0) as u8;
        }
        Self { ycbcr: Vec::new(), luma_lut, chroma_lut }
    }

    /// Picture size from the JPEG headers (cheap; used to check a camera
    /// delivers what it announced).
    pub fn dimensions(jpeg: &[u8]) -> Result<(u32, u32), MediaError> {
        let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), Self::options());
        dec.decode_headers().map_err(|e| MediaError::Decoder(format!("MJPEG headers: {e:?}")))?;
        let info = dec.info().ok_or_else(|| MediaError::Decoder("MJPEG: no headers".into()))?;
        Ok((u32::from(info.width), u32::from(info.height)))
    }

    fn options() -> DecoderOptions {
        DecoderOptions::default()
            .set_max_width(MAX_WIDTH)
            .set_max_height(MAX_HEIGHT)
            .jpeg_set_out_colorspace(ColorSpace::YCbCr)
    }

    pub fn decode(&mut self, jpeg: &[u8], captured_at: SystemTime) -> Result<I420Frame, MediaError> {
        let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), Self::options());
        dec.decode_headers().map_err(|e| MediaError::Decoder(format!("MJPEG headers: {e:?}")))?;
        let info = dec.info().ok_or_else(|| MediaError::Decoder("MJPEG: no headers".into()))?;
        let (sw, sh) = (usize::from(info.width), usize::from(info.height));
        let size = dec.output_buffer_size().ok_or_else(|| MediaError::Decoder("MJPEG: size overflows".into()))?;
        let comps = dec.output_colorspace().map(|c| c.num_components()).unwrap_or(3);
        if sw < 2 || sh < 2 || size != sw * sh * comps {
            return Err(MediaError::Decoder(format!("MJPEG: unusable picture {sw}x{sh} ({comps} components)")));
        }
        self.ycbcr.resize(size, 0);
        dec.decode_into(&mut self.ycbcr).map_err(|e| MediaError::Decoder(format!("MJPEG: {e:?}")))?;
        let (w, h) = (sw & !1, sh & !1);
        let mut data = vec![0u8; w * h * 3 / 2];
        let (y_out, uv) = data.split_at_mut(w * h);
        let (u_out, v_out) = uv.split_at_mut(w * h / 4);
        let src = &self.ycbcr;
        if comps == 1 {
            // Greyscale JPEG: no chroma.
            for row in 0..h {
                for (d, s) in y_out[row * w..(row + 1) * w].iter_mut().zip(&src[row * sw..row * sw + w]) {
                    *d = self.luma_lut[*s as usize];
                }
            }
            u_out.fill(128);
            v_out.fill(128);
        } else {
            for row in 0..h {
                let line = &src[row * sw * comps..(row * sw + w) * comps];
                for (d, px) in y_out[row * w..(row + 1) * w].iter_mut().zip(line.chunks_exact(comps)) {
                    *d = self.luma_lut[px[0] as usize];
                }
            }
            let cw = w / 2;
            for crow in 0..h / 2 {
                let l0 = &src[2 * crow * sw * comps..(2 * crow * sw + w) * comps];
                let l1 = &src[(2 * crow + 1) * sw * comps..((2 * crow + 1) * sw + w) * comps];
                for cx in 0..cw {
                    let (a, b) = (&l0[2 * cx * comps..], &l1[2 * cx * comps..]);
                    let cb =
                        (u16::from(a[1]) + u16::from(a[1 + comps]) + u16::from(b[1]) + u16::from(b[1 + comps]) + 2) / 4;
                    let cr =
                        (u16::from(a[2]) + u16::from(a[2 + comps]) + u16::from(b[2]) + u16::from(b[2 + comps]) + 2) / 4;
                    u_out[crow * cw + cx] = self.chroma_lut[cb as usize];
                    v_out[crow * cw + cx] = self.chroma_lut[cr as usize];
                }
            }
        }
        Ok(I420Frame { width: w as u32, height: h as u32, data, captured_at })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A baseline 4:2:0 JPEG, `w`x`h`, left half pure red, right half pure blue.
    pub(crate) fn red_blue_jpeg(w: u16, h: u16) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        for _ in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(if x < w / 2 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 95);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
        enc.encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    }

    fn sample_jpeg() -> &'static [u8] {
        static JPEG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        JPEG.get_or_init(|| red_blue_jpeg(16, 16))
    }

    #[test]
    fn decodes_known_pixels_to_video_range() {
        let mut dec = MjpegDecoder::new();
        let frame = dec.decode(sample_jpeg(), SystemTime::now()).unwrap();
        assert_eq!((frame.width, frame.height), (16, 16));
        let (y, u, v) = frame.planes().unwrap();
        // BT.601 video range: red ≈ (81, 90, 240), blue ≈ (41, 240, 110).
        let near =
            |got: u8, want: i32, what: &str| assert!((i32::from(got) - want).abs() <= 6, "{what}: {got} vs {want}");
        near(y[8 * 16 + 2], 81, "red Y");
        near(u[4 * 8 + 1], 90, "red U");
        near(v[4 * 8 + 1], 240, "red V");
        near(y[8 * 16 + 13], 41, "blue Y");
        near(u[4 * 8 + 6], 240, "blue U");
        near(v[4 * 8 + 6], 110, "blue V");
        assert_eq!(MjpegDecoder::dimensions(sample_jpeg()).unwrap(), (16, 16));
    }

    #[test]
    fn truncated_and_garbage_input_are_errors() {
        let mut dec = MjpegDecoder::new();
        let jpeg = sample_jpeg();
        for cut in [0, 2, 20, 100, jpeg.len() / 2] {
            // A truncated picture may decode partially (zune pads) or fail;
            // either way no panic, and a success has the announced size.
            if let Ok(f) = dec.decode(&jpeg[..cut], SystemTime::now()) {
                assert_eq!((f.width, f.height), (16, 16));
            }
        }
        assert!(dec.decode(&[0xFF, 0xD8, 0xFF, 0xFF, 0, 0, 1, 2, 3], SystemTime::now()).is_err());
        assert!(dec.decode(b"not a jpeg at all", SystemTime::now()).is_err());
        // Still works after errors.
        assert!(dec.decode(jpeg, SystemTime::now()).is_ok());
    }
}
