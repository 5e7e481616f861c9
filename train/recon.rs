//! Stage-1 check: how well a VAE checkpoint reconstructs clips it was not
//! trained on (`streamavatar train recon --vae <params> --out <folder>`).
//! Each clip is encoded to its latent mean and decoded by the streaming
//! decoder used at inference; the report gives PSNR and mean absolute
//! error per clip, and a PNG per clip shows original (top row) over
//! reconstruction (bottom row) for the first, middle and last frame.
//!
//! With a light decoder (`--light-decoder <params>`), the same latents are
//! also decoded by it (normalized, streamed from the clip's start as at
//! inference): its PSNR / SSIM against the originals and its PSNR against
//! the full decoder's frames measure its quality cost (issue 6), and
//! `light_NNN.png` shows original over light reconstruction.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::config::ModelConfig;
use crate::model::vae::{LightDecoder, WanVae};

use super::data::ClipSource;
use super::frame_quality::{psnr_db, psnr_from_mse, region_psnr_db, ssim};
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
    pub ssim: f64,
    pub mean_abs_error: f64,
    /// Share of raw decoder outputs outside [-1, 1] (cut off by the clamp;
    /// a large share means the decoder overshoots, e.g. bright backgrounds).
    pub clipped_share: f64,
    /// PSNR inside the face (hairline to chin) and inside the mouth box,
    /// both grown by the largest head motion (`eval::face_layout`): the
    /// small regions the lip-sync and identity metrics read.
    pub face_psnr_db: f64,
    pub mouth_psnr_db: f64,
    /// The light decoder's PSNR / SSIM against the original and its PSNR
    /// against the full decoder's frames (with `--light-decoder`).
    pub light: Option<LightRecon>,
}

/// Quality of the light decoder on one clip, or the means over clips.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LightRecon {
    pub psnr_db: f64,
    pub ssim: f64,
    pub psnr_vs_full_db: f64,
}

/// Every clip plus the means.
#[derive(Debug, Clone, Serialize)]
pub struct ReconReport {
    pub clips: Vec<ClipRecon>,
    pub mean_psnr_db: f64,
    pub mean_ssim: f64,
    /// Means of the clips' face / mouth PSNR.
    pub mean_face_psnr_db: f64,
    pub mean_mouth_psnr_db: f64,
    /// PSNR per frame index (the mean squared error of frame `t` over all
    /// clips): a temporal position the VAE never learned (e.g. the second
    /// 4-frame group after training on one) stands out here.
    pub psnr_by_frame: Vec<f64>,
    pub mean_abs_error: f64,
    /// Mean absolute frame-to-frame change of the reconstructions over that
    /// of the originals (all clips, frames 1..T): ~1 when the VAE keeps the
    /// motion; well above 1 is flicker the originals do not have, which
    /// drowns head motion (the listening metric reads frame differences).
    pub frame_change_ratio: f64,
    /// The same per frame index `t` (change from `t - 1`; entry 0 is 0): a
    /// flicker at the 4-frame group or chunk boundaries stands out here.
    pub frame_change_ratio_by_frame: Vec<f64>,
    /// Means of the clips' [`LightRecon`] (with `--light-decoder`).
    pub light: Option<LightRecon>,
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
    /// Participation ratio `(sum l)^2 / sum l^2` of the eigenvalues `l` of
    /// the covariance of `mu`'s channel vectors over every latent position
    /// of every clip: how many latent channels carry variance (z_dim at
    /// most; ~1-2 means the latent collapsed onto a line or a plane).
    pub latent_effective_rank: f64,
    /// Those eigenvalues, largest first, as shares of their sum.
    pub latent_spectrum: Vec<f64>,
}

/// Reconstruct `clips` clips of `data` (and decode them with the light
/// decoder of `light_file` too, when given); write side-by-side PNGs into
/// `out` when given.
pub fn reconstruct(
    cfg: &ModelConfig,
    vae_file: &Path,
    light_file: Option<&Path>,
    data: &ClipSource,
    clips: u64,
    out: Option<&Path>,
) -> Result<ReconReport, TrainError> {
    let dev = Device::Cpu;
    let load = |file: &Path| {
        candle_core::safetensors::load(file, &dev)
            .map(|t| candle_nn::VarBuilder::from_tensors(t, candle_core::DType::F32, &dev))
            .map_err(|e| TrainError::Checkpoint { path: file.to_path_buf(), msg: e.to_string() })
    };
    let vae = WanVae::new(&cfg.vae, load(vae_file)?)?;
    let light = match light_file {
        Some(f) => Some(LightDecoder::new(&cfg.light_decoder, &cfg.vae, load(f)?)?),
        None => None,
    };
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .map_err(|e| TrainError::Checkpoint { path: dir.to_path_buf(), msg: e.to_string() })?;
    }
    let mut report = ReconReport {
        clips: Vec::new(),
        mean_psnr_db: 0.0,
        mean_ssim: 0.0,
        mean_face_psnr_db: 0.0,
        mean_mouth_psnr_db: 0.0,
        psnr_by_frame: Vec::new(),
        mean_abs_error: 0.0,
        frame_change_ratio: 0.0,
        frame_change_ratio_by_frame: Vec::new(),
        light: None,
        chroma_r2_recon: 0.0,
        chroma_r2_latent: None,
        luma_r2_recon: 0.0,
        luma_r2_latent: None,
        latent_effective_rank: 0.0,
        latent_spectrum: Vec::new(),
    };
    let mut moments = PositionMoments::new(cfg.vae.z_dim);
    let (mut colour_orig, mut colour_rec, mut latent_means) = (Vec::new(), Vec::new(), Vec::new());
    let mut frame_sq: Vec<(f64, usize)> = Vec::new();
    // Per frame index: summed |change| of the reconstruction, of the original.
    let mut frame_change: Vec<(f64, f64)> = Vec::new();
    for i in 0..clips {
        let index = RECON_FIRST_CLIP + i;
        let video = data.clip(index, &dev)?.video;
        let mu = vae.encode(&video)?.mu;
        latent_means.push(channel_means(&mu)?);
        moments.add(&mu)?;
        let raw = vae.decode_unclamped(&mu)?;
        let clipped_share =
            raw.abs()?.gt(1f64)?.to_dtype(candle_core::DType::F32)?.mean_all()?.to_scalar::<f32>()? as f64;
        let recon = raw.clamp(-1f32, 1f32)?;
        colour_orig.push(chroma_and_luma(&video)?);
        colour_rec.push(chroma_and_luma(&recon)?);
        let (orig, rec) = (to_u8(&video)?, to_u8(&recon)?);
        let (_, c, t, h, w) = video.dims5()?;
        let abs: f64 = orig.iter().zip(&rec).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum();
        frame_sq.resize(frame_sq.len().max(t), (0.0, 0));
        for (i, (a, b)) in orig.iter().zip(&rec).enumerate() {
            let slot = &mut frame_sq[(i / (h * w)) % t];
            slot.0 += (*a as f64 - *b as f64).powi(2);
            slot.1 += 1;
        }
        frame_change.resize(frame_change.len().max(t), (0.0, 0.0));
        for (tf, slot) in frame_change.iter_mut().enumerate().take(t).skip(1) {
            let (r, o) = (frame_abs_change(&rec, c, t, h * w, tf), frame_abs_change(&orig, c, t, h * w, tf));
            slot.0 += r;
            slot.1 += o;
        }
        let light_recon = match &light {
            Some(decoder) => {
                let z = vae.latent_norm().normalize(&mu)?;
                let frames = decoder.streaming().decode_chunk_unclamped(&z)?.clamp(-1f32, 1f32)?;
                if frames.dims() != video.dims() {
                    return Err(TrainError::Invalid(format!(
                        "the light decoder gave {:?} for a clip of {:?}",
                        frames.dims(),
                        video.dims()
                    )));
                }
                let lit = to_u8(&frames)?;
                save_png(out, &format!("light_{i:03}.png"), &orig, &lit, video.dims())?;
                Some(LightRecon {
                    psnr_db: psnr_db(&orig, &lit),
                    ssim: ssim(&orig, &lit, c, t, h, w)?,
                    psnr_vs_full_db: psnr_db(&rec, &lit),
                })
            }
            None => None,
        };
        let layout = data.face_layout(index)?;
        let region = |b| region_psnr_db(&orig, &rec, h, w, layout.with_motion(b));
        report.clips.push(ClipRecon {
            index,
            psnr_db: psnr_db(&orig, &rec),
            ssim: ssim(&orig, &rec, c, t, h, w)?,
            mean_abs_error: abs / orig.len().max(1) as f64,
            clipped_share,
            face_psnr_db: region(layout.face),
            mouth_psnr_db: region(layout.mouth),
            light: light_recon,
        });
        save_png(out, &format!("recon_{i:03}.png"), &orig, &rec, video.dims())?;
    }
    let k = report.clips.len().max(1) as f64;
    let mean = |f: &dyn Fn(&ClipRecon) -> f64| report.clips.iter().map(f).sum::<f64>() / k;
    report.mean_psnr_db = mean(&|c| c.psnr_db);
    report.mean_ssim = mean(&|c| c.ssim);
    report.mean_face_psnr_db = mean(&|c| c.face_psnr_db);
    report.mean_mouth_psnr_db = mean(&|c| c.mouth_psnr_db);
    report.psnr_by_frame = frame_sq.iter().map(|&(sq, n)| psnr_from_mse(sq / n.max(1) as f64)).collect();
    report.mean_abs_error = mean(&|c| c.mean_abs_error);
    let ratio = |r: f64, o: f64| if o > 0.0 { r / o } else { 0.0 };
    let (all_r, all_o) = frame_change.iter().fold((0.0, 0.0), |(a, b), (r, o)| (a + r, b + o));
    report.frame_change_ratio = ratio(all_r, all_o);
    report.frame_change_ratio_by_frame = frame_change.iter().map(|&(r, o)| ratio(r, o)).collect();
    let lit: Vec<LightRecon> = report.clips.iter().filter_map(|c| c.light).collect();
    if !lit.is_empty() {
        let mean_of = |f: fn(&LightRecon) -> f64| lit.iter().map(f).sum::<f64>() / lit.len() as f64;
        report.light = Some(LightRecon {
            psnr_db: mean_of(|l| l.psnr_db),
            ssim: mean_of(|l| l.ssim),
            psnr_vs_full_db: mean_of(|l| l.psnr_vs_full_db),
        });
    }
    let part = |v: &[[f64; 3]], r: std::ops::Range<usize>| -> Vec<Vec<f64>> {
        v.iter().map(|c| c[r.clone()].to_vec()).collect()
    };
    report.chroma_r2_recon = explained(&part(&colour_orig, 0..2), &part(&colour_rec, 0..2));
    report.chroma_r2_latent = latent_colour_probe(&latent_means, &part(&colour_orig, 0..2));
    report.luma_r2_recon = explained(&part(&colour_orig, 2..3), &part(&colour_rec, 2..3));
    report.luma_r2_latent = latent_colour_probe(&latent_means, &part(&colour_orig, 2..3));
    let mut eig = symmetric_eigenvalues(moments.covariance());
    eig.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = eig.iter().map(|l| l.max(0.0)).sum();
    let squares: f64 = eig.iter().map(|l| l.max(0.0).powi(2)).sum();
    report.latent_effective_rank = if squares > 0.0 { total * total / squares } else { 0.0 };
    report.latent_spectrum = eig.iter().map(|l| if total > 0.0 { l.max(0.0) / total } else { 0.0 }).collect();
    Ok(report)
}

/// Running first and second moments of the channel vectors of latents
/// `[1, C, T, h, w]` over all their positions.
struct PositionMoments {
    n: f64,
    sum: Vec<f64>,
    /// Row-major `C x C` sum of outer products.
    outer: Vec<f64>,
}

impl PositionMoments {
    fn new(channels: usize) -> Self {
        Self { n: 0.0, sum: vec![0.0; channels], outer: vec![0.0; channels * channels] }
    }

    fn add(&mut self, mu: &Tensor) -> Result<(), TrainError> {
        let c = self.sum.len();
        let x = mu.to_dtype(candle_core::DType::F64)?.reshape((c, ()))?; // [C, N]
        let n = x.dim(1)?;
        let outer = x.matmul(&x.t()?)?.flatten_all()?.to_vec1::<f64>()?;
        let sum = x.sum(1)?.to_vec1::<f64>()?;
        self.n += n as f64;
        self.sum.iter_mut().zip(sum).for_each(|(a, b)| *a += b);
        self.outer.iter_mut().zip(outer).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn covariance(&self) -> Vec<Vec<f64>> {
        let c = self.sum.len();
        let n = self.n.max(1.0);
        (0..c)
            .map(|i| (0..c).map(|j| self.outer[i * c + j] / n - self.sum[i] * self.sum[j] / (n * n)).collect())
            .collect()
    }
}

/// Eigenvalues of a small symmetric matrix (cyclic Jacobi rotations).
fn symmetric_eigenvalues(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let n = a.len();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j].powi(2))
            .sum();
        let scale: f64 = (0..n).map(|i| a[i][i].powi(2)).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (cs, sn) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = cs * akp - sn * akq;
                    a[k][q] = sn * akp + cs * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = cs * apk - sn * aqk;
                    a[q][k] = sn * apk + cs * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).collect()
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

    #[test]
    fn jacobi_eigenvalues_of_known_matrices() {
        let mut e = symmetric_eigenvalues(vec![vec![2.0, 1.0], vec![1.0, 2.0]]);
        e.sort_by(|a, b| a.total_cmp(b));
        assert!((e[0] - 1.0).abs() < 1e-10 && (e[1] - 3.0).abs() < 1e-10, "{e:?}");
        // A rank-1 covariance of 3 channels: one eigenvalue, trace 14.
        let v = [1.0, 2.0, 3.0];
        let m: Vec<Vec<f64>> = v.iter().map(|a| v.iter().map(|b| a * b).collect()).collect();
        let mut e = symmetric_eigenvalues(m);
        e.sort_by(|a, b| b.total_cmp(a));
        assert!((e[0] - 14.0).abs() < 1e-9 && e[1].abs() < 1e-9 && e[2].abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn position_moments_give_the_covariance() -> candle_core::Result<()> {
        // Channel 1 = 2 x channel 0, channel 2 constant: covariance rank 1.
        let c0: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let data: Vec<f32> =
            c0.iter().copied().chain(c0.iter().map(|v| 2.0 * v)).chain(std::iter::repeat(5.0).take(8)).collect();
        let mu = Tensor::from_vec(data, (1, 3, 2, 2, 2), &Device::Cpu)?;
        let mut m = PositionMoments::new(3);
        m.add(&mu).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let cov = m.covariance();
        let var0 = 5.25; // variance of 0..8
        assert!((cov[0][0] - var0).abs() < 1e-9 && (cov[1][1] - 4.0 * var0).abs() < 1e-9);
        assert!((cov[0][1] - 2.0 * var0).abs() < 1e-9 && cov[2][2].abs() < 1e-9);
        Ok(())
    }
}

/// `[1, 3, T, H, W]` in [-1, 1] -> u8 values in the same (C, T, H, W) order.
fn to_u8(video: &Tensor) -> Result<Vec<u8>, TrainError> {
    let v: Vec<f32> = ((video.flatten_all()? + 1.0)? * 127.5)?.to_vec1()?;
    Ok(v.iter().map(|x| x.round().clamp(0.0, 255.0) as u8).collect())
}

/// Summed absolute change of frame `t` from frame `t - 1` of a u8 video
/// `C x T x (pixels)`.
fn frame_abs_change(video: &[u8], c: usize, t: usize, pixels: usize, tf: usize) -> f64 {
    (0..c)
        .map(|ch| {
            let at = |f: usize| &video[(ch * t + f) * pixels..(ch * t + f + 1) * pixels];
            at(tf).iter().zip(at(tf - 1)).map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs() as f64).sum::<f64>()
        })
        .sum()
}

/// Write [`side_by_side`] of `orig` / `rec` as `out/name` (no-op without `out`).
fn save_png(out: Option<&Path>, name: &str, orig: &[u8], rec: &[u8], dims: &[usize]) -> Result<(), TrainError> {
    let Some(dir) = out else { return Ok(()) };
    let path = dir.join(name);
    side_by_side(orig, rec, dims)?
        .save(&path)
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), msg: e.to_string() })
}

/// Frames 0, T/2 and T-1: originals on top, reconstructions below.
fn side_by_side(orig: &[u8], rec: &[u8], dims: &[usize]) -> Result<image::RgbImage, TrainError> {
    Ok(frame_rows(&[orig, rec], dims[2], dims[3], dims[4]))
}

/// One row per video (u8, C x T x H x W each) at frames 0, T/2 and T-1.
pub fn frame_rows(videos: &[&[u8]], t: usize, h: usize, w: usize) -> image::RgbImage {
    let frames = [0, t / 2, t.saturating_sub(1)];
    let mut img = image::RgbImage::new((w * frames.len()) as u32, (h * videos.len()) as u32);
    for (col, &f) in frames.iter().enumerate() {
        for (row, src) in videos.iter().enumerate() {
            for y in 0..h {
                for x in 0..w {
                    let at = |c: usize| src[((c * t + f) * h + y) * w + x];
                    img.put_pixel((col * w + x) as u32, (row * h + y) as u32, image::Rgb([at(0), at(1), at(2)]));
                }
            }
        }
    }
    img
}
