//! Raw camera pixel formats (YUYV, NV12, YU12, RGB3/BGR3) → I420.
//!
//! YUYV goes through yuvutils-rs (SIMD), with the tail of each line redone
//! in scalar code (yuvutils-rs 0.8.3 gets the last 16 pixels of a line
//! wrong); NV12 and YU12 are plane copies with stride handling, which the
//! compiler vectorises. benches/convert.rs has the figures. Every function checks sizes first: buffers come from drivers
//! and a driver can lie (short or zero-length buffers, odd sizes).

use std::time::SystemTime;

use yuvutils_rs::{BufferStoreMut, YuvPackedImage, YuvPlanarImageMut};

use super::PixelFormat;
use crate::media::{I420Frame, MediaError};

fn bad(what: String) -> MediaError {
    MediaError::Decoder(what)
}

/// A tightly packed I420 buffer (`check_size` long) as yuvutils-rs' planes.
fn i420_planes(out: &mut [u8], width: u32, height: u32) -> YuvPlanarImageMut<'_, u8> {
    let luma = width as usize * height as usize;
    let (y, uv) = out.split_at_mut(luma);
    let (u, v) = uv.split_at_mut(luma / 4);
    YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: width,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: width / 2,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: width / 2,
        width,
        height,
    }
}

fn check_size(width: u32, height: u32) -> Result<usize, MediaError> {
    I420Frame::expected_len(width, height).ok_or_else(|| bad(format!("unusable picture size {width}x{height}")))
}

/// YUYV (stride in bytes per line, ≥ 2 × width) → I420 with yuvutils-rs
/// (SSE/AVX/NEON), falling back to [`yuyv_to_i420_scalar`] for padded lines
/// and small widths. yuvutils-rs 0.8.3 converts the last 16 pixels of each
/// line wrongly, so those are redone in scalar code afterwards.
pub fn yuyv_to_i420(src: &[u8], stride: usize, width: u32, height: u32, out: &mut Vec<u8>) -> Result<(), MediaError> {
    let len = check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let row = w * 2;
    if stride.max(row) != row || w < 64 || src.len() < row * h {
        return yuyv_to_i420_scalar(src, stride, width, height, out);
    }
    out.resize(len, 0);
    {
        let mut planar = i420_planes(out, width, height);
        let packed = YuvPackedImage { yuy: &src[..row * h], yuy_stride: row as u32, width, height };
        if yuvutils_rs::yuyv422_to_yuv420(&mut planar, &packed).is_err() {
            return yuyv_to_i420_scalar(src, stride, width, height, out);
        }
    }
    // Redo the last 32 pixels of each line pair (covers the crate's bad 16).
    let x0 = w - 32;
    let (y, uv) = out.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut(w * h / 4);
    let cw = w / 2;
    for pair in 0..h / 2 {
        let l0 = &src[2 * pair * row..(2 * pair + 1) * row];
        let l1 = &src[(2 * pair + 1) * row..(2 * pair + 2) * row];
        for x in (x0..w).step_by(2) {
            let (a, b) = (&l0[2 * x..2 * x + 4], &l1[2 * x..2 * x + 4]);
            y[2 * pair * w + x] = a[0];
            y[2 * pair * w + x + 1] = a[2];
            y[(2 * pair + 1) * w + x] = b[0];
            y[(2 * pair + 1) * w + x + 1] = b[2];
            u[pair * cw + x / 2] = ((u16::from(a[1]) + u16::from(b[1]) + 1) >> 1) as u8;
            v[pair * cw + x / 2] = ((u16::from(a[3]) + u16::from(b[3]) + 1) >> 1) as u8;
        }
    }
    Ok(())
}

/// YUYV → I420 in plain Rust (chroma of each line pair averaged); handles
/// any stride. The reference for the tests and the benchmark.
pub fn yuyv_to_i420_scalar(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let len = check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let stride = stride.max(w * 2);
    let need = stride * (h - 1) + w * 2;
    if src.len() < need {
        return Err(bad(format!("YUYV {width}x{height}: buffer has {} bytes, needs {need}", src.len())));
    }
    out.resize(len, 0);
    let (y, uv) = out.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut(w * h / 4);
    let cw = w / 2;
    for pair in 0..h / 2 {
        let l0 = &src[2 * pair * stride..2 * pair * stride + w * 2];
        let l1 = &src[(2 * pair + 1) * stride..(2 * pair + 1) * stride + w * 2];
        let (y0, y1) = y[2 * pair * w..(2 * pair + 2) * w].split_at_mut(w);
        let (du, dv) = (&mut u[pair * cw..(pair + 1) * cw], &mut v[pair * cw..(pair + 1) * cw]);
        for ((((a, b), ya), yb), (cu, cv)) in l0
            .chunks_exact(4)
            .zip(l1.chunks_exact(4))
            .zip(y0.chunks_exact_mut(2))
            .zip(y1.chunks_exact_mut(2))
            .zip(du.iter_mut().zip(dv.iter_mut()))
        {
            ya[0] = a[0];
            ya[1] = a[2];
            yb[0] = b[0];
            yb[1] = b[2];
            *cu = ((u16::from(a[1]) + u16::from(b[1]) + 1) >> 1) as u8;
            *cv = ((u16::from(a[3]) + u16::from(b[3]) + 1) >> 1) as u8;
        }
    }
    Ok(())
}

/// NV12 (Y plane, then interleaved UV; both with `stride` bytes per line,
/// UV plane starting at `stride × height`) → I420.
pub fn nv12_to_i420(src: &[u8], stride: usize, width: u32, height: u32, out: &mut Vec<u8>) -> Result<(), MediaError> {
    let len = check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let stride = stride.max(w);
    let need = stride * h + stride * (h / 2 - 1) + w;
    if src.len() < need {
        return Err(bad(format!("NV12 {width}x{height}: buffer has {} bytes, needs {need}", src.len())));
    }
    out.resize(len, 0);
    let (y, uv_out) = out.split_at_mut(w * h);
    for (row, dst) in y.chunks_exact_mut(w).enumerate() {
        dst.copy_from_slice(&src[row * stride..row * stride + w]);
    }
    let (u, v) = uv_out.split_at_mut(w * h / 4);
    let uv = &src[stride * h..];
    for row in 0..h / 2 {
        let line = &uv[row * stride..row * stride + w];
        let (du, dv) = (&mut u[row * w / 2..(row + 1) * w / 2], &mut v[row * w / 2..(row + 1) * w / 2]);
        for ((pair, cu), cv) in line.chunks_exact(2).zip(du.iter_mut()).zip(dv.iter_mut()) {
            *cu = pair[0];
            *cv = pair[1];
        }
    }
    Ok(())
}

/// YU12/I420 with a luma stride (chroma stride = stride / 2, as V4L2
/// defines for this single-planar format) → tightly packed I420.
pub fn yu12_to_i420(src: &[u8], stride: usize, width: u32, height: u32, out: &mut Vec<u8>) -> Result<(), MediaError> {
    let len = check_size(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let stride = stride.max(w);
    let cstride = stride / 2;
    let need = stride * h + 2 * cstride * (h / 2);
    if src.len() < need {
        return Err(bad(format!("YU12 {width}x{height}: buffer has {} bytes, needs {need}", src.len())));
    }
    if stride == w {
        out.clear();
        out.extend_from_slice(&src[..len]);
        return Ok(());
    }
    out.resize(len, 0);
    let (y, uv) = out.split_at_mut(w * h);
    for (row, dst) in y.chunks_exact_mut(w).enumerate() {
        dst.copy_from_slice(&src[row * stride..row * stride + w]);
    }
    let planes = [&src[stride * h..stride * h + cstride * (h / 2)], &src[stride * h + cstride * (h / 2)..need]];
    for (plane, dst) in planes.iter().zip(uv.chunks_exact_mut(w * h / 4)) {
        for (row, d) in dst.chunks_exact_mut(w / 2).enumerate() {
            d.copy_from_slice(&plane[row * cstride..row * cstride + w / 2]);
        }
    }
    Ok(())
}

/// An RGB3/BGR3 buffer's sizes: (I420 length, stride, bytes read), or why
/// the buffer is too short for the picture.
fn check_rgb24(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    blue_first: bool,
) -> Result<(usize, usize, usize), MediaError> {
    let len = check_size(width, height)?;
    let row = width as usize * 3;
    let stride = stride.max(row);
    let need = stride * (height as usize - 1) + row;
    if src.len() < need {
        let name = if blue_first { "BGR3" } else { "RGB3" };
        return Err(bad(format!("{name} {width}x{height}: buffer has {} bytes, needs {need}", src.len())));
    }
    Ok((len, stride, need))
}

/// Packed 24-bit RGB (`RGB3`: R,G,B in memory; `BGR3`: B,G,R, which is
/// what libcamera's vimc and many ISPs call RGB888) → I420, BT.601 limited
/// range (what the encoder and the browsers assume). yuvutils-rs (SIMD)
/// where the lines are unpadded and wide enough, [`rgb24_to_i420_scalar`]
/// otherwise.
pub fn rgb24_to_i420(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    blue_first: bool,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let (len, stride, need) = check_rgb24(src, stride, width, height, blue_first)?;
    if width < 64 {
        return rgb24_to_i420_scalar(src, stride, width, height, blue_first, out);
    }
    out.resize(len, 0);
    let mut planar = i420_planes(out, width, height);
    let convert = if blue_first { yuvutils_rs::bgr_to_yuv420 } else { yuvutils_rs::rgb_to_yuv420 };
    let converted = convert(
        &mut planar,
        &src[..need],
        stride as u32,
        yuvutils_rs::YuvRange::Limited,
        yuvutils_rs::YuvStandardMatrix::Bt601,
        yuvutils_rs::YuvConversionMode::Balanced,
    );
    if converted.is_err() {
        return rgb24_to_i420_scalar(src, stride, width, height, blue_first, out);
    }
    Ok(())
}

/// [`rgb24_to_i420`] in plain Rust (BT.601 limited range, chroma of each
/// 2x2 block averaged): the reference for the tests.
pub fn rgb24_to_i420_scalar(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    blue_first: bool,
    out: &mut Vec<u8>,
) -> Result<(), MediaError> {
    let (len, stride, _) = check_rgb24(src, stride, width, height, blue_first)?;
    let (w, h) = (width as usize, height as usize);
    out.resize(len, 0);
    let (y, uv) = out.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut(w * h / 4);
    let rgb = |x: usize, row: usize| {
        let p = &src[row * stride + 3 * x..row * stride + 3 * x + 3];
        let (r, g, b) = if blue_first { (p[2], p[1], p[0]) } else { (p[0], p[1], p[2]) };
        (i32::from(r), i32::from(g), i32::from(b))
    };
    for row in 0..h {
        for x in 0..w {
            let (r, g, b) = rgb(x, row);
            y[row * w + x] = (16 + ((66 * r + 129 * g + 25 * b + 128) >> 8)).clamp(0, 255) as u8;
        }
    }
    for row in 0..h / 2 {
        for x in 0..w / 2 {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = rgb(2 * x + dx, 2 * row + dy);
                (r, g, b) = (r + p.0, g + p.1, b + p.2);
            }
            let (r, g, b) = ((r + 2) / 4, (g + 2) / 4, (b + 2) / 4);
            u[row * (w / 2) + x] = (128 + ((-38 * r - 74 * g + 112 * b + 128) >> 8)).clamp(0, 255) as u8;
            v[row * (w / 2) + x] = (128 + ((112 * r - 94 * g - 18 * b + 128) >> 8)).clamp(0, 255) as u8;
        }
    }
    Ok(())
}

/// Converts one raw buffer to an I420 frame (MJPEG goes through
/// [`super::MjpegDecoder`], not here).
pub fn raw_to_i420(
    format: PixelFormat,
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    captured_at: SystemTime,
) -> Result<I420Frame, MediaError> {
    let mut data = Vec::new();
    match format {
        PixelFormat::Yuyv => yuyv_to_i420(src, stride, width, height, &mut data)?,
        PixelFormat::Nv12 => nv12_to_i420(src, stride, width, height, &mut data)?,
        PixelFormat::Yu12 => yu12_to_i420(src, stride, width, height, &mut data)?,
        PixelFormat::Rgb24 => rgb24_to_i420(src, stride, width, height, false, &mut data)?,
        PixelFormat::Bgr24 => rgb24_to_i420(src, stride, width, height, true, &mut data)?,
        PixelFormat::Mjpeg | PixelFormat::H264 => {
            return Err(MediaError::Unsupported(format!("{format:?} through raw_to_i420")));
        }
    }
    Ok(I420Frame { width, height, data, captured_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A YUYV picture whose every pixel encodes its position.
    fn yuyv(w: usize, h: usize, stride: usize) -> Vec<u8> {
        let mut buf = vec![0xEEu8; stride * h];
        for y in 0..h {
            for x in (0..w).step_by(2) {
                let p = y * stride + x * 2;
                buf[p] = (x + y) as u8;
                buf[p + 1] = ((x / 2 * 3) % 100 + y % 100) as u8; // U
                buf[p + 2] = (x + 1 + y) as u8;
                buf[p + 3] = ((x / 2 * 5) % 100 + y % 100) as u8; // V
            }
        }
        buf
    }

    #[test]
    fn yuyv_to_i420_known_pixels_with_padding() {
        for (w, h, stride) in [(16usize, 8usize, 32usize), (64, 6, 128), (64, 6, 160), (640, 480, 1280)] {
            let src = yuyv(w, h, stride);
            let mut out = Vec::new();
            yuyv_to_i420(&src, stride, w as u32, h as u32, &mut out).unwrap();
            assert_eq!(out.len(), w * h * 3 / 2);
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(out[y * w + x], (x + y) as u8, "Y at {x},{y}");
                }
            }
            let (u, v) = out[w * h..].split_at(w * h / 4);
            for cy in 0..h / 2 {
                for cx in 0..w / 2 {
                    // Chroma of the two source lines; the crate may take the
                    // first line or average both: accept either.
                    let (u0, u1) =
                        (((cx * 3) % 100 + (2 * cy) % 100) as u8, ((cx * 3) % 100 + (2 * cy) % 100 + 1) as u8);
                    let (v0, v1) =
                        (((cx * 5) % 100 + (2 * cy) % 100) as u8, ((cx * 5) % 100 + (2 * cy) % 100 + 1) as u8);
                    let gu = u[cy * w / 2 + cx];
                    let gv = v[cy * w / 2 + cx];
                    assert!(gu == u0 || gu == u1, "U at {cx},{cy}: {gu} not {u0}/{u1}");
                    assert!(gv == v0 || gv == v1, "V at {cx},{cy}: {gv} not {v0}/{v1}");
                }
            }
        }
    }

    #[test]
    fn simd_yuyv_matches_the_scalar_reference() {
        for (w, h) in [(64usize, 2usize), (96, 4), (640, 480), (1280, 720), (328, 6)] {
            let src: Vec<u8> = (0..w * h * 2).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            yuyv_to_i420(&src, w * 2, w as u32, h as u32, &mut fast).unwrap();
            yuyv_to_i420_scalar(&src, w * 2, w as u32, h as u32, &mut slow).unwrap();
            let y_len = w * h;
            assert_eq!(fast[..y_len], slow[..y_len], "Y {w}x{h}");
            // Chroma: the crate decimates 4:2:2 → 4:2:0 by taking one line
            // of each pair where the scalar code averages both; either is fine.
            let cw = w / 2;
            for (i, (a, b)) in fast[y_len..].iter().zip(&slow[y_len..]).enumerate() {
                let (plane, k) = (i / (cw * h / 2), i % (cw * h / 2));
                let (pair, cx) = (k / cw, k % cw);
                let off = 4 * cx + if plane == 0 { 1 } else { 3 };
                let (top, bottom) = (src[2 * pair * w * 2 + off], src[(2 * pair + 1) * w * 2 + off]);
                assert!(
                    *a == top || *a == bottom || a.abs_diff(*b) <= 1,
                    "chroma {i} of {w}x{h}: {a} vs {top}/{bottom}"
                );
            }
        }
    }

    #[test]
    fn nv12_and_yu12_known_pixels_with_padding() {
        let (w, h, stride) = (8usize, 4usize, 12usize);
        let mut nv12 = vec![0u8; stride * h * 3 / 2];
        for y in 0..h {
            for x in 0..w {
                nv12[y * stride + x] = (10 * y + x) as u8;
            }
        }
        for y in 0..h / 2 {
            for x in 0..w / 2 {
                nv12[stride * h + y * stride + 2 * x] = (100 + 10 * y + x) as u8;
                nv12[stride * h + y * stride + 2 * x + 1] = (200 + 10 * y + x) as u8;
            }
        }
        let mut out = Vec::new();
        nv12_to_i420(&nv12, stride, w as u32, h as u32, &mut out).unwrap();
        assert_eq!(&out[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&out[8..16], &[10, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(&out[32..40], &[100, 101, 102, 103, 110, 111, 112, 113]);
        assert_eq!(&out[40..48], &[200, 201, 202, 203, 210, 211, 212, 213]);

        // YU12 with stride 12 (chroma stride 6).
        let mut yu12 = vec![0u8; 12 * 4 + 6 * 2 * 2];
        for y in 0..4 {
            for x in 0..8 {
                yu12[y * 12 + x] = (10 * y + x) as u8;
            }
        }
        for y in 0..2 {
            for x in 0..4 {
                yu12[48 + y * 6 + x] = (100 + 10 * y + x) as u8;
                yu12[48 + 12 + y * 6 + x] = (200 + 10 * y + x) as u8;
            }
        }
        let mut out2 = Vec::new();
        yu12_to_i420(&yu12, 12, 8, 4, &mut out2).unwrap();
        assert_eq!(out, out2);
    }

    /// Colour bars in RGB (the vimc sensor's pattern), `blue_first` as BGR3.
    fn rgb_bars(w: usize, h: usize, stride: usize, blue_first: bool) -> Vec<u8> {
        const BARS: [(u8, u8, u8); 8] = [
            (255, 255, 255),
            (255, 255, 0),
            (0, 255, 255),
            (0, 255, 0),
            (255, 0, 255),
            (255, 0, 0),
            (0, 0, 255),
            (0, 0, 0),
        ];
        let mut buf = vec![0u8; stride * h];
        for row in 0..h {
            for x in 0..w {
                let (r, g, b) = BARS[x * 8 / w];
                let p = &mut buf[row * stride + 3 * x..row * stride + 3 * x + 3];
                p.copy_from_slice(&if blue_first { [b, g, r] } else { [r, g, b] });
            }
        }
        buf
    }

    #[test]
    fn rgb_and_bgr_become_the_bt601_colours_simd_and_scalar_alike() {
        // 128 wide: yuvutils-rs; 16 wide with a padded stride: the scalar path.
        for (w, h, stride) in [(128usize, 4usize, 128 * 3), (16, 4, 16 * 3 + 8), (640, 6, 640 * 3)] {
            for blue_first in [false, true] {
                let src = rgb_bars(w, h, stride, blue_first);
                let mut fast = Vec::new();
                rgb24_to_i420(&src, stride, w as u32, h as u32, blue_first, &mut fast).unwrap();
                let mut reference = Vec::new();
                rgb24_to_i420_scalar(&src, stride, w as u32, h as u32, blue_first, &mut reference).unwrap();
                let worst = fast.iter().zip(&reference).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
                assert!(worst <= 2, "{w}x{h} blue_first={blue_first}: differs from the reference by {worst}");
                // Known BT.601 limited-range values, mid-bar: white, red, blue.
                let (y, u, v) = (&fast[..w * h], &fast[w * h..w * h * 5 / 4], &fast[w * h * 5 / 4..]);
                let at = |bar: usize| {
                    let x = bar * w / 8 + w / 16;
                    (y[x], u[x / 2], v[x / 2])
                };
                let near = |got: (u8, u8, u8), want: (u8, u8, u8)| {
                    got.0.abs_diff(want.0) <= 2 && got.1.abs_diff(want.1) <= 2 && got.2.abs_diff(want.2) <= 2
                };
                assert!(near(at(0), (235, 128, 128)), "white {:?}", at(0));
                assert!(near(at(5), (81, 90, 240)), "red {:?} (blue_first={blue_first})", at(5));
                assert!(near(at(6), (41, 240, 110)), "blue {:?} (blue_first={blue_first})", at(6));
            }
        }
    }

    #[test]
    fn lying_buffers_are_errors_not_panics() {
        assert!(rgb24_to_i420(&[0; 100], 640 * 3, 640, 480, true, &mut Vec::new()).is_err());
        assert!(rgb24_to_i420_scalar(&[0; 100], 48, 16, 16, false, &mut Vec::new()).is_err());
        let mut out = Vec::new();
        assert!(yuyv_to_i420(&[], 1280, 640, 480, &mut out).is_err());
        assert!(yuyv_to_i420(&[0; 1280 * 479 + 1000], 1280, 640, 480, &mut out).is_err());
        assert!(nv12_to_i420(&[0; 100], 640, 640, 480, &mut out).is_err());
        assert!(yu12_to_i420(&[0; 100], 640, 640, 480, &mut out).is_err());
        assert!(yuyv_to_i420(&[0; 100], 6, 3, 3, &mut out).is_err(), "odd size");
        assert!(yuyv_to_i420(&[], 0, 0, 0, &mut out).is_err());
    }
}
