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
    /// Share of the between-clip variance of the mean chroma (R - G, B - G)
    /// that the reconstructions reproduce: 1 = every clip's colour right,
    /// ~0 = one hue for all clips (the "sepia" failure of the session-3 VAE).
    pub chroma_r2_recon: f64,
    /// The same share predicted linearly from the clip's mean latent (mu)
    /// by a ridge fit on the even clips, scored on the odd ones: whether the
    /// encoder transmits colour at all, whatever the decoder does with it.
    /// `None` with fewer than 2 * (z_dim + 1) clips (use ~10x that).
    pub chroma_r2_latent: Option<f64>,
    /// [`chroma_r2_recon`](Self::chroma_r2_recon) for the mean luminance
    /// ((R + G + B) / 3), the control: what the probe finds where the VAE
    /// does transmit.
    pub luma_r2_recon: f64,
    /// [`chroma_r2_latent`](Self::chroma_r2_latent) for the mean luminance.
    pub luma_r2_latent: Option<f64>,
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
    let mut report = ReconReport {
        clips: Vec::new(),
        mean_psnr_db: 0.0,
        mean_abs_error: 0.0,
        chroma_r2_recon: 0.0,
        chroma_r2_latent: None,
        luma_r2_recon: 0.0,
        luma_r2_latent: None,
    };
    let (mut colour_orig, mut colour_rec, mut latent_means) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..clips {
        let index = RECON_FIRST_CLIP + i;
        let video = data.clip(index, &dev)?.video;
        let mu = vae.encode(&video)?.mu;
        latent_means.push(channel_means(&mu)?);
        let raw = vae.decode_unclamped(&mu)?;
        let clipped_share =
            raw.abs()?.gt(1f64)?.to_dtype(candle_core::DType::F32)?.mean_all()?.to_scalar::<f32>()? as f64;
        let recon = raw.clamp(-1f32, 1f32)?;
        colour_orig.push(chroma_and_luma(&video)?);
        colour_rec.push(chroma_and_luma(&recon)?);
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
    let part = |v: &[[f64; 3]], r: std::ops::Range<usize>| -> Vec<Vec<f64>> {
        v.iter().map(|c| c[r.clone()].to_vec()).collect()
    };
    report.chroma_r2_recon = explained(&part(&colour_orig, 0..2), &part(&colour_rec, 0..2));
    report.chroma_r2_latent = latent_colour_probe(&latent_means, &part(&colour_orig, 0..2));
    report.luma_r2_recon = explained(&part(&colour_orig, 2..3), &part(&colour_rec, 2..3));
    report.luma_r2_latent = latent_colour_probe(&latent_means, &part(&colour_orig, 2..3));
    Ok(report)
}

/// Mean over (T, H, W) of each channel of `[1, C, T, H, W]`.
fn channel_means(x: &Tensor) -> Result<Vec<f64>, TrainError> {
    Ok(x.mean_keepdim(4)?
        .mean_keepdim(3)?
        .mean_keepdim(2)?
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1()?)
}

/// Mean chroma and luminance `[R - G, B - G, (R + G + B) / 3]` of
/// `[1, 3, T, H, W]`.
fn chroma_and_luma(video: &Tensor) -> Result<[f64; 3], TrainError> {
    let m = channel_means(video)?;
    Ok([m[0] - m[1], m[2] - m[1], (m[0] + m[1] + m[2]) / 3.0])
}

/// `1 - SSE(pred) / SSE(mean of truth)` over all clips and channels.
fn explained(truth: &[Vec<f64>], pred: &[Vec<f64>]) -> f64 {
    let n = truth.len().max(1) as f64;
    let k = truth.first().map_or(0, |t| t.len());
    let mean: Vec<f64> = (0..k).map(|c| truth.iter().map(|t| t[c]).sum::<f64>() / n).collect();
    let (mut sse, mut sst) = (0.0, 0.0);
    for (t, p) in truth.iter().zip(pred) {
        for c in 0..k {
            sse += (t[c] - p[c]).powi(2);
            sst += (t[c] - mean[c]).powi(2);
        }
    }
    if sst > 0.0 {
        1.0 - sse / sst
    } else {
        0.0
    }
}

/// Ridge regression of the clip colour on `[latent mean, 1]`, fitted on the
/// even clips and scored ([`explained`]) on the odd ones.
fn latent_colour_probe(latents: &[Vec<f64>], colours: &[Vec<f64>]) -> Option<f64> {
    let dim = latents.first()?.len() + 1;
    if latents.len() < 2 * dim {
        return None;
    }
    let row = |l: &Vec<f64>| l.iter().copied().chain(std::iter::once(1.0)).collect::<Vec<f64>>();
    let train: Vec<usize> = (0..latents.len()).step_by(2).collect();
    let test: Vec<usize> = (1..latents.len()).step_by(2).collect();
    let outputs = colours.first()?.len();
    let mut weights = Vec::with_capacity(outputs);
    for c in 0..outputs {
        // (X^T X + lambda I) w = X^T y
        let mut a = vec![vec![0.0; dim]; dim];
        let mut b = vec![0.0; dim];
        for &i in &train {
            let x = row(&latents[i]);
            for r in 0..dim {
                b[r] += x[r] * colours[i][c];
                for k in 0..dim {
                    a[r][k] += x[r] * x[k];
                }
            }
        }
        for (r, a_r) in a.iter_mut().enumerate() {
            a_r[r] += 1e-3;
        }
        weights.push(solve(a, b)?);
    }
    let pred: Vec<Vec<f64>> = test
        .iter()
        .map(|&i| {
            let x = row(&latents[i]);
            let dot = |w: &Vec<f64>| w.iter().zip(&x).map(|(w, x)| w * x).sum::<f64>();
            weights.iter().map(dot).collect()
        })
        .collect();
    let truth: Vec<Vec<f64>> = test.iter().map(|&i| colours[i].clone()).collect();
    Some(explained(&truth, &pred))
}

/// Gaussian elimination with partial pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..n {
            let f = a[r][col] / a[col][col];
            for k in col..n {
                a[r][k] -= f * a[col][k];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_probe_finds_a_linear_code_and_not_noise() {
        // Colour = a linear function of a 4-d "latent": the probe explains it.
        let latents: Vec<Vec<f64>> = (0..20)
            .map(|i| (0..4).map(|k| ((i * 7 + k * 3) % 11) as f64 / 11.0 + (i * k) as f64 * 0.01).collect())
            .collect();
        let colours: Vec<Vec<f64>> = latents.iter().map(|l| vec![l[0] - l[1], 0.5 * l[2] + l[3]]).collect();
        assert!(latent_colour_probe(&latents, &colours).unwrap() > 0.99);
        // One colour for every clip explains nothing of the truth's spread.
        let grey = vec![vec![0.1, 0.1]; colours.len()];
        assert!(explained(&colours, &grey) < 0.0);
        assert!((explained(&colours, &colours) - 1.0).abs() < 1e-12);
        // Too few clips for the fit.
        assert!(latent_colour_probe(&latents[..9], &colours[..9]).is_none());
    }
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
