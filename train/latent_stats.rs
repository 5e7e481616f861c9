//! Per-channel statistics of the VAE's latent means on training data: the
//! `latents_mean` / `latents_std` that normalise latents for the DiT
//! (`LatentNorm`). Wan2.2 ships its constants in the config; our VAE is
//! trained here, so stage 1 measures them on a fixed set of clips and
//! stores them with every checkpoint (see `model::vae::LATENTS_MEAN`).
//! Without them the DiT sees latents of whatever scale the VAE drifted to
//! (the first mini VAE had std ~3), which skews the flow-matching SNR.

use candle_core::{DType, Device, Tensor};

use crate::model::vae::{WanVae, LATENTS_MEAN, LATENTS_STD};

use super::data::ClipSource;
use super::params::ParamStore;
use super::TrainError;

/// Clips measured (whole clips, every latent frame, every position).
pub const STATS_CLIPS: u64 = 16;
/// Data index of the first measured clip: far from the training cursor, the
/// same for every checkpoint, so successive measurements are comparable.
pub const STATS_FIRST_CLIP: u64 = 1 << 40;

/// Channel means and standard deviations of `mu` over `clips` clips of `data`.
pub fn measure(vae: &WanVae, data: &ClipSource, clips: u64, dev: &Device) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
    if clips == 0 {
        return Err(TrainError::Invalid("latent statistics need at least one clip".into()));
    }
    let z = vae.config().z_dim;
    let (mut sum, mut sum_sq, mut count) = (vec![0f64; z], vec![0f64; z], 0f64);
    for i in 0..clips {
        let video = data.clip(STATS_FIRST_CLIP + i, dev)?.video;
        let mu = vae.encode(&video)?.mu.detach(); // [B, z, F, h, w]
        let per_channel = mu.transpose(0, 1)?.flatten_from(1)?.to_dtype(DType::F64)?; // [z, n]
        let n = per_channel.dim(1)? as f64;
        let s: Vec<f64> = per_channel.sum(1)?.to_vec1()?;
        let s2: Vec<f64> = per_channel.sqr()?.sum(1)?.to_vec1()?;
        for c in 0..z {
            sum[c] += s[c];
            sum_sq[c] += s2[c];
        }
        count += n;
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let std: Vec<f32> =
        sum_sq.iter().zip(&mean).map(|(s2, m)| ((s2 / count - m * m).max(0.0).sqrt()).max(1e-4) as f32).collect();
    Ok((mean.iter().map(|m| *m as f32).collect(), std))
}

/// Measure and store the statistics in `params` (replacing earlier ones).
pub fn store(params: &ParamStore, vae: &WanVae, data: &ClipSource, dev: &Device) -> Result<(), TrainError> {
    let (mean, std) = measure(vae, data, STATS_CLIPS, dev)?;
    tracing::info!(?mean, ?std, "VAE latent statistics");
    let z = mean.len();
    params.insert(LATENTS_MEAN, &Tensor::from_vec(mean, z, dev)?)?;
    params.insert(LATENTS_STD, &Tensor::from_vec(std, z, dev)?)?;
    Ok(())
}
