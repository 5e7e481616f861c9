//! RGB24 <-> I420 (YUV 4:2:0 planar) with BT.601 limited-range coefficients,
//! the colour space browsers assume for H.264 without VUI colour info.
//!
//! Integer fixed-point math (8-bit coefficients as in ITU-R BT.601 /
//! libyuv); chroma is computed from the average RGB of each 2x2 block.
//! Width and height must be even and non-zero. The `_into` variants reuse
//! the destination buffers, so steady-state conversion allocates nothing.

use crate::media::frame::RgbFrame;

/// Errors of colour conversion.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum YuvError {
    #[error("frame size {width}x{height} must be even and non-zero for I420")]
    BadSize { width: usize, height: usize },
    #[error("{what} has {got} bytes, expected {expected} for {width}x{height}")]
    BadLength { what: &'static str, got: usize, expected: usize, width: usize, height: usize },
}

/// One I420 picture with tightly packed planes: `y` is `width * height`,
/// `u` and `v` are `(width / 2) * (height / 2)`.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Frame({}x{})", self.width, self.height)
    }
}

fn check_size(width: usize, height: usize) -> Result<(), YuvError> {
    if width == 0 || height == 0 || width % 2 != 0 || height % 2 != 0 {
        return Err(YuvError::BadSize { width, height });
    }
    Ok(())
}

impl I420Frame {
    /// A black (Y=16, U=V=128) picture.
    pub fn black(width: usize, height: usize) -> Result<Self, YuvError> {
        check_size(width, height)?;
        let c = (width / 2) * (height / 2);
        Ok(Self { width, height, y: vec![16; width * height], u: vec![128; c], v: vec![128; c] })
    }

    /// Wrap planes, checking their sizes.
    pub fn from_planes(width: usize, height: usize, y: Vec<u8>, u: Vec<u8>, v: Vec<u8>) -> Result<Self, YuvError> {
        let f = Self { width, height, y, u, v };
        f.validate()?;
        Ok(f)
    }

    /// Copy planes with arbitrary strides (e.g. a decoder's output).
    pub fn from_strided(
        width: usize,
        height: usize,
        (y, u, v): (&[u8], &[u8], &[u8]),
        (stride_y, stride_u, stride_v): (usize, usize, usize),
    ) -> Result<Self, YuvError> {
        check_size(width, height)?;
        let (cw, ch) = (width / 2, height / 2);
        let copy = |src: &[u8], stride: usize, w: usize, h: usize, what: &'static str| -> Result<Vec<u8>, YuvError> {
            let needed = if h == 0 { 0 } else { stride * (h - 1) + w };
            if stride < w || src.len() < needed {
                return Err(YuvError::BadLength { what, got: src.len(), expected: needed, width, height });
            }
            let mut out = Vec::with_capacity(w * h);
            for row in 0..h {
                out.extend_from_slice(&src[row * stride..row * stride + w]);
            }
            Ok(out)
        };
        Ok(Self {
            width,
            height,
            y: copy(y, stride_y, width, height, "Y plane")?,
            u: copy(u, stride_u, cw, ch, "U plane")?,
            v: copy(v, stride_v, cw, ch, "V plane")?,
        })
    }

    /// Check size and plane lengths.
    pub fn validate(&self) -> Result<(), YuvError> {
        check_size(self.width, self.height)?;
        let (w, h) = (self.width, self.height);
        let c = (w / 2) * (h / 2);
        for (what, got, expected) in
            [("Y plane", self.y.len(), w * h), ("U plane", self.u.len(), c), ("V plane", self.v.len(), c)]
        {
            if got != expected {
                return Err(YuvError::BadLength { what, got, expected, width: w, height: h });
            }
        }
        Ok(())
    }
}

impl openh264::formats::YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}

#[inline]
fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

/// Convert an RGB24 frame to I420 (BT.601 limited range).
pub fn rgb_to_i420(rgb: &RgbFrame) -> Result<I420Frame, YuvError> {
    let mut out = I420Frame { width: 0, height: 0, y: Vec::new(), u: Vec::new(), v: Vec::new() };
    rgb_to_i420_into(rgb, &mut out)?;
    Ok(out)
}

/// Convert into `out`, reusing its buffers.
pub fn rgb_to_i420_into(rgb: &RgbFrame, out: &mut I420Frame) -> Result<(), YuvError> {
    let (w, h) = (rgb.width, rgb.height);
    check_size(w, h)?;
    if rgb.data.len() != w * h * 3 {
        return Err(YuvError::BadLength {
            what: "RGB data",
            got: rgb.data.len(),
            expected: w * h * 3,
            width: w,
            height: h,
        });
    }
    let (cw, ch) = (w / 2, h / 2);
    out.width = w;
    out.height = h;
    out.y.resize(w * h, 0);
    out.u.resize(cw * ch, 0);
    out.v.resize(cw * ch, 0);
    let row_bytes = w * 3;
    for cy in 0..ch {
        let top = &rgb.data[(2 * cy) * row_bytes..(2 * cy + 1) * row_bytes];
        let bottom = &rgb.data[(2 * cy + 1) * row_bytes..(2 * cy + 2) * row_bytes];
        let (y_top, y_bottom) = out.y[(2 * cy) * w..(2 * cy + 2) * w].split_at_mut(w);
        let u_row = &mut out.u[cy * cw..(cy + 1) * cw];
        let v_row = &mut out.v[cy * cw..(cy + 1) * cw];
        for cx in 0..cw {
            let mut sum = [0i32; 3];
            for (src, dst) in [(top, &mut *y_top), (bottom, &mut *y_bottom)] {
                for dx in 0..2 {
                    let x = 2 * cx + dx;
                    let p = &src[x * 3..x * 3 + 3];
                    let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
                    dst[x] = luma(r, g, b);
                    sum[0] += r;
                    sum[1] += g;
                    sum[2] += b;
                }
            }
            let (r, g, b) = ((sum[0] + 2) >> 2, (sum[1] + 2) >> 2, (sum[2] + 2) >> 2);
            u_row[cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v_row[cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
    Ok(())
}

/// Convert an I420 picture to RGB24 (BT.601 limited range).
pub fn i420_to_rgb(yuv: &I420Frame) -> Result<RgbFrame, YuvError> {
    let mut out = RgbFrame { width: 0, height: 0, data: Vec::new() };
    i420_to_rgb_into(yuv, &mut out)?;
    Ok(out)
}

/// Convert into `out`, reusing its buffer.
pub fn i420_to_rgb_into(yuv: &I420Frame, out: &mut RgbFrame) -> Result<(), YuvError> {
    yuv.validate()?;
    let (w, h) = (yuv.width, yuv.height);
    let cw = w / 2;
    out.width = w;
    out.height = h;
    out.data.resize(w * h * 3, 0);
    let clip = |v: i32| v.clamp(0, 255) as u8;
    for (row, dst_row) in out.data.chunks_exact_mut(w * 3).enumerate() {
        let y_row = &yuv.y[row * w..(row + 1) * w];
        let u_row = &yuv.u[(row / 2) * cw..(row / 2 + 1) * cw];
        let v_row = &yuv.v[(row / 2) * cw..(row / 2 + 1) * cw];
        for (x, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let c = 298 * (y_row[x] as i32 - 16);
            let d = u_row[x / 2] as i32 - 128;
            let e = v_row[x / 2] as i32 - 128;
            px[0] = clip((c + 409 * e + 128) >> 8);
            px[1] = clip((c - 100 * d - 208 * e + 128) >> 8);
            px[2] = clip((c + 516 * d + 128) >> 8);
        }
    }
    Ok(())
}

/// Peak signal-to-noise ratio of two same-size RGB frames, in dB
/// (`f64::INFINITY` when identical). Used by tests and `bench call`.
pub fn psnr_rgb(a: &RgbFrame, b: &RgbFrame) -> Result<f64, YuvError> {
    if a.width != b.width || a.height != b.height || a.data.len() != b.data.len() {
        return Err(YuvError::BadLength {
            what: "second frame",
            got: b.data.len(),
            expected: a.data.len(),
            width: a.width,
            height: a.height,
        });
    }
    let se: u64 = a.data.iter().zip(&b.data).map(|(&p, &q)| ((p as i64 - q as i64).pow(2)) as u64).sum();
    if se == 0 {
        return Ok(f64::INFINITY);
    }
    let mse = se as f64 / a.data.len() as f64;
    Ok(10.0 * (255.0f64 * 255.0 / mse).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(w: usize, h: usize) -> RgbFrame {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                // Smooth gradients (chroma subsampling is lossy on hard edges).
                data.push((x * 255 / w.max(1)) as u8);
                data.push((y * 255 / h.max(1)) as u8);
                data.push(((x + y) * 127 / (w + h)) as u8 + 64);
            }
        }
        RgbFrame { width: w, height: h, data }
    }

    #[test]
    fn round_trip_psnr_above_35_db() {
        let img = test_image(96, 64);
        let yuv = rgb_to_i420(&img).unwrap();
        let back = i420_to_rgb(&yuv).unwrap();
        let p = psnr_rgb(&img, &back).unwrap();
        assert!(p > 35.0, "PSNR {p:.1} dB");
    }

    #[test]
    fn known_colours_use_limited_range_bt601() {
        let cases =
            [([0u8, 0, 0], (16u8, 128u8, 128u8)), ([255, 255, 255], (235, 128, 128)), ([255, 0, 0], (82, 90, 240))];
        for (rgb, (y, u, v)) in cases {
            let f = rgb_to_i420(&RgbFrame::solid(4, 2, rgb)).unwrap();
            assert!(f.y.iter().all(|&p| p == y), "{rgb:?}: Y {:?}", f.y[0]);
            assert_eq!((f.u[0], f.v[0]), (u, v), "{rgb:?}");
            let back = i420_to_rgb(&f).unwrap();
            for (a, b) in back.data.iter().zip(rgb.iter().cycle()) {
                assert!((*a as i32 - *b as i32).abs() <= 3, "{rgb:?} -> {:?}", &back.data[..3]);
            }
        }
    }

    #[test]
    fn odd_or_inconsistent_sizes_are_rejected() {
        assert_eq!(rgb_to_i420(&RgbFrame::solid(3, 2, [0; 3])), Err(YuvError::BadSize { width: 3, height: 2 }));
        assert!(rgb_to_i420(&RgbFrame::solid(4, 5, [0; 3])).is_err());
        assert!(rgb_to_i420(&RgbFrame::solid(0, 0, [0; 3])).is_err());
        let short = RgbFrame { width: 4, height: 2, data: vec![0; 10] };
        assert!(matches!(rgb_to_i420(&short), Err(YuvError::BadLength { .. })));
        let bad = I420Frame { width: 4, height: 2, y: vec![0; 8], u: vec![0; 1], v: vec![0; 2] };
        assert!(i420_to_rgb(&bad).is_err());
        assert!(I420Frame::black(5, 4).is_err());
    }

    #[test]
    fn into_variants_reuse_buffers_and_strided_copy_works() {
        let img = test_image(32, 16);
        let mut yuv = I420Frame::black(2, 2).unwrap();
        rgb_to_i420_into(&img, &mut yuv).unwrap();
        assert_eq!(yuv, rgb_to_i420(&img).unwrap());
        // Same planes with padding to a stride of 40 / 24.
        let pad = |p: &[u8], w: usize, stride: usize| -> Vec<u8> {
            p.chunks(w).flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, stride - w))).collect()
        };
        let strided = I420Frame::from_strided(
            32,
            16,
            (&pad(&yuv.y, 32, 40), &pad(&yuv.u, 16, 24), &pad(&yuv.v, 16, 24)),
            (40, 24, 24),
        )
        .unwrap();
        assert_eq!(strided, yuv);
        assert!(I420Frame::from_strided(32, 16, (&yuv.y[..10], &yuv.u, &yuv.v), (32, 16, 16)).is_err());
        let mut rgb = RgbFrame::solid(2, 2, [0; 3]);
        i420_to_rgb_into(&yuv, &mut rgb).unwrap();
        assert_eq!((rgb.width, rgb.height, rgb.data.len()), (32, 16, 32 * 16 * 3));
    }
}
