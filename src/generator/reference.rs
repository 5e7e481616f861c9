//! Reference image preparation: any-size RGB frame -> the stream's video
//! size (scale to cover, centre crop, as Wan's image preprocessing) ->
//! `[1, 3, H, W]` f32 in [-1, 1]; and the way back from decoded video to
//! RGB frames.

use candle_core::{DType, Device, Tensor};
use image::{imageops, RgbImage};

use super::GeneratorError;
use crate::media::frame::RgbFrame;

/// Resize `frame` to cover `width x height` and crop the centre.
pub fn fit_reference(frame: &RgbFrame, width: usize, height: usize) -> Result<RgbFrame, GeneratorError> {
    if frame.width == 0 || frame.height == 0 {
        return Err(GeneratorError::BadReference(format!("empty image {}x{}", frame.width, frame.height)));
    }
    if frame.data.len() != frame.width * frame.height * 3 {
        return Err(GeneratorError::BadReference(format!(
            "{}x{} RGB needs {} bytes, got {}",
            frame.width,
            frame.height,
            frame.width * frame.height * 3,
            frame.data.len()
        )));
    }
    if frame.width == width && frame.height == height {
        return Ok(frame.clone());
    }
    let too_big =
        |v: usize| u32::try_from(v).map_err(|_| GeneratorError::BadReference(format!("dimension {v} too large")));
    let img = RgbImage::from_raw(too_big(frame.width)?, too_big(frame.height)?, frame.data.clone())
        .ok_or_else(|| GeneratorError::BadReference("pixel buffer does not match the size".into()))?;
    let scale = (width as f64 / frame.width as f64).max(height as f64 / frame.height as f64);
    let rw = ((frame.width as f64 * scale).ceil() as usize).max(width);
    let rh = ((frame.height as f64 * scale).ceil() as usize).max(height);
    let resized = imageops::resize(&img, too_big(rw)?, too_big(rh)?, imageops::FilterType::CatmullRom);
    let (x0, y0) = ((rw - width) / 2, (rh - height) / 2);
    let cropped = imageops::crop_imm(&resized, x0 as u32, y0 as u32, width as u32, height as u32).to_image();
    Ok(RgbFrame { width, height, data: cropped.into_raw() })
}

/// RGB frame -> `[1, 3, H, W]` in [-1, 1].
pub fn frame_to_tensor(frame: &RgbFrame, dtype: DType, device: &Device) -> Result<Tensor, GeneratorError> {
    let (w, h) = (frame.width, frame.height);
    let t = Tensor::from_slice(&frame.data, (h, w, 3), &Device::Cpu)
        .and_then(|t| t.permute((2, 0, 1)))
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.affine(1.0 / 127.5, -1.0))
        .and_then(|t| t.unsqueeze(0))
        .and_then(|t| t.to_dtype(dtype))
        .and_then(|t| t.to_device(device))
        .map_err(|e| GeneratorError::Model(format!("reference to tensor: {e}")))?;
    Ok(t)
}

/// Decoded video `[1, 3, T, H, W]` in [-1, 1] -> T RGB frames.
pub fn video_to_frames(video: &Tensor) -> Result<Vec<RgbFrame>, GeneratorError> {
    let err = |e: candle_core::Error| GeneratorError::Model(format!("video to frames: {e}"));
    let (_, c, t, h, w) = video.dims5().map_err(err)?;
    if c != 3 {
        return Err(GeneratorError::Model(format!("decoded video has {c} channels, expected 3")));
    }
    let bytes = video
        .get(0)
        .and_then(|v| v.permute((1, 2, 3, 0))) // [T, H, W, 3]
        .and_then(|v| v.to_dtype(DType::F32))
        .and_then(|v| v.affine(127.5, 127.5))
        .and_then(|v| v.clamp(0f32, 255f32))
        .and_then(|v| v.round())
        .and_then(|v| v.to_dtype(DType::U8))
        .and_then(|v| v.flatten_all())
        .and_then(|v| v.to_device(&Device::Cpu))
        .and_then(|v| v.to_vec1::<u8>())
        .map_err(err)?;
    let per = h * w * 3;
    Ok(bytes.chunks_exact(per).take(t).map(|d| RgbFrame { width: w, height: h, data: d.to_vec() }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_covers_and_crops() {
        let mut f = RgbFrame::solid(200, 100, [10, 20, 30]);
        // Mark the centre column red.
        for y in 0..100 {
            let i = (y * 200 + 100) * 3;
            f.data[i..i + 3].copy_from_slice(&[255, 0, 0]);
        }
        let out = fit_reference(&f, 64, 64).unwrap();
        assert_eq!((out.width, out.height, out.data.len()), (64, 64, 64 * 64 * 3));
        // Corners keep the background colour (cropped, not letterboxed).
        assert_eq!(&out.data[0..3], &[10, 20, 30]);
        let bad = RgbFrame { width: 4, height: 4, data: vec![0; 5] };
        assert!(matches!(fit_reference(&bad, 64, 64), Err(GeneratorError::BadReference(_))));
    }

    #[test]
    fn tensor_round_trip() {
        let f = RgbFrame::solid(4, 2, [0, 128, 255]);
        let t = frame_to_tensor(&f, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 2, 4]);
        let video = t.unsqueeze(2).unwrap();
        let back = video_to_frames(&video).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0], f);
    }
}
