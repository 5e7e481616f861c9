//! Stage-1 check: how well a VAE checkpoint reconstructs clips it was not
//! trained on (`streamavatar train recon --vae <params> --out <folder>`).
//! Each clip is encoded to its latent mean and decoded by the streaming
//! decoder used at inference; the report gives PSNR and mean absolute
//! error per clip, and a PNG per clip shows original (top row) over
//! reconstruction (bottom row) for the first, middle and last frame.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::config::ModelConfig;
use crate::model::vae::WanVae;

use super::data::ClipSource;
use super::latent_stats::STATS_FIRST_CLIP;
use super::TrainError;

/// Data index of the first reconstructed clip: past the latent-statistics
/// clips and far from any training cursor.
pub const RECON_FIRST_CLIP: u64 = STATS_FIRST_CLIP + (1 << 20);

/// Reconstruction quality of one clip (pixels in [0, 255]).
#[derive(Debug, Clone, Serialize)]
pub struct ClipRecon {
    pub index: u64,
    pub psnr_db: f64,
    pub mean_abs_error: f64,
    /// Share of raw decoder outputs outside [-1, 1] (cut off by the clamp;
    /// a large share means the decoder overshoots, e.g. bright backgrounds).
    pub clipped_share: f64,
}

/// Every clip plus the means.
#[derive(Debug, Clone, Serialize)]
pub struct ReconReport {
    pub clips: Vec<ClipRecon>,
    pub mean_psnr_db: f64,
    pub mean_abs_error: f64,
}

/// Reconstruct `clips` clips of `data`; write side-by-side PNGs into `out`
/// when given.
pub fn reconstruct(
    cfg: &ModelConfig,
    vae_file: &Path,
    data: &ClipSource,
    clips: u64,
    out: Option<&Path>,
) -> Result<ReconReport, TrainError> {
    let dev = Device::Cpu;
    let tensors = candle_core::safetensors::load(vae_file, &dev)
        .map_err(|e| TrainError::Checkpoint { path: vae_file.to_path_buf(), msg: e.to_string() })?;
    let vae = WanVae::new(&cfg.vae, candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &dev))?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .map_err(|e| TrainError::Checkpoint { path: dir.to_path_buf(), msg: e.to_string() })?;
    }
    let mut report = ReconReport { clips: Vec::new(), mean_psnr_db: 0.0, mean_abs_error: 0.0 };
    for i in 0..clips {
        let index = RECON_FIRST_CLIP + i;
        let video = data.clip(index, &dev)?.video;
        let raw = vae.decode_unclamped(&vae.encode(&video)?.mu)?;
        let clipped_share =
            raw.abs()?.gt(1f64)?.to_dtype(candle_core::DType::F32)?.mean_all()?.to_scalar::<f32>()? as f64;
        let recon = raw.clamp(-1f32, 1f32)?;
        let (orig, rec) = (to_u8(&video)?, to_u8(&recon)?);
        let (mut sq, mut abs) = (0f64, 0f64);
        for (a, b) in orig.iter().zip(&rec) {
            let d = *a as f64 - *b as f64;
            sq += d * d;
            abs += d.abs();
        }
        let n = orig.len().max(1) as f64;
        let mse = sq / n;
        let psnr_db = if mse > 0.0 { 10.0 * (255.0f64 * 255.0 / mse).log10() } else { 99.0 };
        report.clips.push(ClipRecon { index, psnr_db, mean_abs_error: abs / n, clipped_share });
        if let Some(dir) = out {
            let path = dir.join(format!("recon_{i:03}.png"));
            side_by_side(&orig, &rec, video.dims())?
                .save(&path)
                .map_err(|e| TrainError::Checkpoint { path: path.clone(), msg: e.to_string() })?;
        }
    }
    let k = report.clips.len().max(1) as f64;
    report.mean_psnr_db = report.clips.iter().map(|c| c.psnr_db).sum::<f64>() / k;
    report.mean_abs_error = report.clips.iter().map(|c| c.mean_abs_error).sum::<f64>() / k;
    Ok(report)
}

/// `[1, 3, T, H, W]` in [-1, 1] -> u8 values in the same (C, T, H, W) order.
fn to_u8(video: &Tensor) -> Result<Vec<u8>, TrainError> {
    let v: Vec<f32> = ((video.flatten_all()? + 1.0)? * 127.5)?.to_vec1()?;
    Ok(v.iter().map(|x| x.round().clamp(0.0, 255.0) as u8).collect())
}

/// Frames 0, T/2 and T-1: originals on top, reconstructions below.
fn side_by_side(orig: &[u8], rec: &[u8], dims: &[usize]) -> Result<image::RgbImage, TrainError> {
    let (t, h, w) = (dims[2], dims[3], dims[4]);
    let frames = [0, t / 2, t - 1];
    let mut img = image::RgbImage::new((w * frames.len()) as u32, (2 * h) as u32);
    for (col, &f) in frames.iter().enumerate() {
        for (row, src) in [orig, rec].iter().enumerate() {
            for y in 0..h {
                for x in 0..w {
                    let at = |c: usize| src[((c * t + f) * h + y) * w + x];
                    img.put_pixel((col * w + x) as u32, (row * h + y) as u32, image::Rgb([at(0), at(1), at(2)]));
                }
            }
        }
    }
    Ok(img)
}
