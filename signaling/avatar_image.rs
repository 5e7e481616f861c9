//! Avatar reference images uploaded with a new session: PNG or JPEG only,
//! checked against byte and pixel limits before and after decoding, turned
//! into an `RgbFrame`.

use std::io::Cursor;

use base64::Engine;
use image::{ImageFormat, ImageReader, Limits};

use crate::media::frame::RgbFrame;

/// Why an uploaded image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is empty")]
    Empty,
    #[error("image is {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a PNG or JPEG image (unrecognized file signature)")]
    NotAnImage,
    #[error("image is {width}x{height}, the largest accepted side is {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u32 },
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("avatar is not valid base64: {0}")]
    Base64(String),
}

/// Limits applied to every uploaded image.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_bytes: usize,
    pub max_side: u32,
}

/// Sniff the format from the magic bytes (the declared type is not trusted).
fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else {
        None
    }
}

/// Decode a PNG/JPEG into RGB24 within `limits`.
pub fn decode_image(bytes: &[u8], limits: ImageLimits) -> Result<RgbFrame, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge { size: bytes.len(), limit: limits.max_bytes });
    }
    let format = sniff(bytes).ok_or(ImageError::NotAnImage)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader.into_dimensions().map_err(|e| ImageError::Decode(e.to_string()))?;
    if width == 0 || height == 0 || width > limits.max_side || height > limits.max_side {
        return Err(ImageError::TooManyPixels { width, height, limit: limits.max_side });
    }
    reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // RGBA8 of the largest allowed image plus decoder scratch.
    decoder_limits.max_alloc = Some(u64::from(limits.max_side).pow(2) * 8);
    reader.limits(decoder_limits);
    let img = reader.decode().map_err(|e| ImageError::Decode(e.to_string()))?;
    let rgb = img.into_rgb8();
    Ok(RgbFrame { width: rgb.width() as usize, height: rgb.height() as usize, data: rgb.into_raw() })
}

/// Decode the `avatar` field of a JSON session request: base64 (standard or
/// URL-safe, padding optional) or a `data:image/...;base64,` URL.
pub fn decode_base64_image(text: &str, limits: ImageLimits) -> Result<RgbFrame, ImageError> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(";base64,")
            .map(|(_, data)| data)
            .ok_or_else(|| ImageError::Base64("data URL without ';base64,'".into()))?,
        None => text,
    };
    let payload = payload.trim();
    // base64 is 4/3 of the bytes: refuse before allocating.
    if payload.len() / 4 * 3 > limits.max_bytes + 3 {
        return Err(ImageError::TooLarge { size: payload.len() / 4 * 3, limit: limits.max_bytes });
    }
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut last_err = String::new();
    for engine in engines {
        match engine.decode(payload) {
            Ok(bytes) => return decode_image(&bytes, limits),
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(ImageError::Base64(last_err))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ImageLimits = ImageLimits { max_bytes: 1 << 20, max_side: 64 };

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn png_decodes_to_rgb_frame() {
        let f = decode_image(&png(5, 3), LIMITS).unwrap();
        assert_eq!((f.width, f.height, f.data.len()), (5, 3, 45));
        // pixel (4, 2) = [4, 2, 7]
        let i = (2 * 5 + 4) * 3;
        assert_eq!(&f.data[i..i + 3], &[4, 2, 7]);
    }

    #[test]
    fn jpeg_decodes() {
        let img = image::RgbImage::from_pixel(16, 8, image::Rgb([200, 10, 10]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        let f = decode_image(out.get_ref(), LIMITS).unwrap();
        assert_eq!((f.width, f.height), (16, 8));
    }

    #[test]
    fn refuses_non_images_truncated_and_oversized() {
        assert!(matches!(decode_image(b"", LIMITS), Err(ImageError::Empty)));
        assert!(matches!(decode_image(b"GIF89a....", LIMITS), Err(ImageError::NotAnImage)));
        let p = png(8, 8);
        assert!(matches!(decode_image(&p[..p.len() / 2], LIMITS), Err(ImageError::Decode(_))));
        assert!(matches!(decode_image(&png(65, 2), LIMITS), Err(ImageError::TooManyPixels { .. })));
        let small = ImageLimits { max_bytes: 10, max_side: 64 };
        assert!(matches!(decode_image(&p, small), Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn base64_and_data_urls() {
        let p = png(4, 4);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&p);
        assert_eq!(decode_base64_image(&b64, LIMITS).unwrap().width, 4);
        let url = format!("data:image/png;base64,{b64}");
        assert_eq!(decode_base64_image(&url, LIMITS).unwrap().height, 4);
        assert!(matches!(decode_base64_image("!!!", LIMITS), Err(ImageError::Base64(_))));
    }
}
