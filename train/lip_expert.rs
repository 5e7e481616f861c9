//! The latent lip-sync expert: a small frozen read-out of mouth openness
//! from VAE latents, and the stage that fits it (`streamavatar train
//! lip_expert`).
//!
//! Why: the flow-matching MSE cannot teach the DiT lip sync at mini scale
//! (sessions 13-15, docs/TRAINING.md). An opening of 0.3 moves ~8-72 of a
//! latent frame's squared error, while the mouth box's error is ~500 per
//! frame, almost all of it where the head is: what the audio explains is a
//! few percent of even a mouth-only loss. Talking-head models meet the same
//! problem with a lip-sync expert (Wav2Lip's and LatentSync's SyncNet loss,
//! MuseTalk's sync loss): a frozen network that reads the mouth, whose
//! error is added to the generator's loss. Ours reads the synth's ground
//! truth instead of judging audio-video sync, which the synth makes exact:
//! `expert(latents) ~ mouth openness`, fit on real latents of the training
//! pool; the DiT stages then add `weight * (expert(x0_hat) - openness)^2`
//! (`--lip-expert`, `--lip-sync-weight`), a signal about the mouth alone
//! that head-position error does not drown.
//!
//! The read-out follows the head: the synth knows where the mouth is in
//! every frame ([`crate::synth::avatar::mouth_centre`]), so the expert
//! samples the latents (bilinearly, differentiably) on a small grid of
//! [`GRID_DX`] x [`GRID_DY`] latent pixels around the mouth of each latent
//! frame (the mean position over its four video frames) and of the
//! reference frame, and maps `[crop_f, crop_f - crop_ref]` through
//! Linear -> SiLU -> Linear to the openness. A read-out over a fixed box
//! sees mostly where the head is (a per-pixel MLP summed over the mouth box
//! grown by the head's motion reached a batch r of ~0.2 in 800 steps); the
//! head-following one reads the mouth (a ridge read-out of the same grid:
//! within-clip r 0.77 on held-out pool clips; this expert 0.92 on
//! `teacher_check`'s unseen clips, session 16). Target: the mean true openness of the
//! latent frame's four video frames (the causal VAE's layout: latent
//! `j >= 1` holds video frames `4j-3 ..= 4j`).
//!
//! The positions are the real clip's, so the expert fits a DiT output that
//! keeps the clip's head motion: the teacher's clean estimates (at high
//! noise their head is the posterior mean's, near the truth). A student's
//! free rollout moves the head its own way, so the students learn lip sync
//! from the teacher (DMD), not from the expert.
//!
//! Weights: `lip_expert.fc1.{weight,bias}`, `lip_expert.fc2.{weight,bias}`
//! in the stage's `params.safetensors`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::data::{ClipSource, MouthTruth};
use super::params::ParamStore;
use super::runner::{Stage, StepLoss};
use super::teacher_stage::TeacherStage;
use super::TrainError;
use crate::model::audio::projection::FRAMES_PER_LATENT;
use crate::model::sampler::NoiseSource;

/// Hidden width of the read-out.
pub const LIP_EXPERT_HIDDEN: usize = 32;
/// Horizontal offsets (latent pixels) of the sampling grid from the mouth.
pub const GRID_DX: [f32; 4] = [-1.5, -0.5, 0.5, 1.5];
/// Vertical offsets (the mouth opens downwards from its anchor).
pub const GRID_DY: [f32; 3] = [-1.0, 0.0, 1.0];
/// Sampling points per frame.
pub const GRID_POINTS: usize = GRID_DX.len() * GRID_DY.len();

/// The expert's read-out (module docs).
#[derive(Debug, Clone)]
pub struct LipExpert {
    fc1: Linear,
    fc2: Linear,
}

impl LipExpert {
    /// `vb` at the store root; `z`: latent channels.
    pub fn new(z: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let vb = vb.pp("lip_expert");
        Ok(Self {
            fc1: candle_nn::linear(2 * GRID_POINTS * z, LIP_EXPERT_HIDDEN, vb.pp("fc1"))?,
            fc2: candle_nn::linear(LIP_EXPERT_HIDDEN, 1, vb.pp("fc2"))?,
        })
    }

    /// A fitted expert from a `train lip_expert` checkpoint (frozen: its
    /// tensors carry no gradient; gradients still flow to the latents).
    pub fn load(path: &Path, z: usize, dev: &Device) -> Result<Self, TrainError> {
        let tensors = candle_core::safetensors::load(path, dev)
            .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), msg: e.to_string() })?;
        Self::new(z, VarBuilder::from_tensors(tensors, DType::F32, dev))
            .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), msg: format!("not a lip expert: {e}") })
    }

    /// Openness per latent frame: `frames` `[1, z, F, h, w]` (after the
    /// reference), `reference` `[1, z, 1, h, w]`, `at` the mouth positions
    /// of the clip. Returns `[F]`.
    pub fn forward(&self, frames: &Tensor, reference: &Tensor, at: &MouthSampling) -> candle_core::Result<Tensor> {
        let (_, z, f, h, w) = frames.dims5()?;
        // [1, z, F, h, w] -> [F, h*w, z]
        let flat = frames.squeeze(0)?.permute((1, 2, 3, 0))?.reshape((f, h * w, z))?;
        let crops = at.frames.narrow(0, 0, f)?.matmul(&flat)?.reshape((f, GRID_POINTS * z))?;
        let flat_ref = reference.squeeze(0)?.permute((1, 2, 3, 0))?.reshape((1, h * w, z))?;
        let crop_ref = at.reference.matmul(&flat_ref)?.reshape((1, GRID_POINTS * z))?;
        let x = Tensor::cat(&[&crops, &crops.broadcast_sub(&crop_ref)?], 1)?;
        self.fc2.forward(&self.fc1.forward(&x)?.silu()?)?.squeeze(1)
    }
}

/// Bilinear sampling matrices of a clip's mouth grid: `frames` `[F, P,
/// h*w]` (one per latent frame after the reference), `reference` `[1, P,
/// h*w]`.
#[derive(Debug, Clone)]
pub struct MouthSampling {
    frames: Tensor,
    reference: Tensor,
}

impl MouthSampling {
    /// From the mouth centres per video frame (pixels, `1 + 4k` frames) on
    /// an `h x w` latent grid of `factor`-pixel latent pixels.
    pub fn new(centres: &[(f32, f32)], factor: usize, h: usize, w: usize, dev: &Device) -> Result<Self, TrainError> {
        let per_latent = latent_centres(centres);
        let to_latent = |(x, y): (f32, f32)| (x / factor as f32 - 0.5, y / factor as f32 - 0.5);
        let matrix = |c: (f32, f32)| grid_weights(to_latent(c), h, w);
        let frames: Vec<f32> = per_latent.iter().flat_map(|&c| matrix(c)).collect();
        let first = centres.first().copied().ok_or_else(|| TrainError::Invalid("a clip without frames".into()))?;
        Ok(Self {
            frames: Tensor::from_vec(frames, (per_latent.len(), GRID_POINTS, h * w), dev)?,
            reference: Tensor::from_vec(matrix(first), (1, GRID_POINTS, h * w), dev)?,
        })
    }
}

/// `[P * h * w]` bilinear weights of the grid points around `(u, v)`
/// (latent pixel coordinates, pixel centres at integers), clamped to the
/// grid's edge.
fn grid_weights((u, v): (f32, f32), h: usize, w: usize) -> Vec<f32> {
    let mut m = vec![0f32; GRID_POINTS * h * w];
    let mut p = 0;
    for dy in GRID_DY {
        for dx in GRID_DX {
            let (x, y) = (u + dx, v + dy);
            let (x0, y0) = (x.floor(), y.floor());
            let (ax, ay) = (x - x0, y - y0);
            for (yy, wy) in [(y0, 1.0 - ay), (y0 + 1.0, ay)] {
                for (xx, wx) in [(x0, 1.0 - ax), (x0 + 1.0, ax)] {
                    let row = (yy.max(0.0) as usize).min(h - 1);
                    let col = (xx.max(0.0) as usize).min(w - 1);
                    m[p * h * w + row * w + col] += wy * wx;
                }
            }
            p += 1;
        }
    }
    m
}

/// Mean mouth position of each latent frame after the reference (its four
/// video frames).
fn latent_centres(centres: &[(f32, f32)]) -> Vec<(f32, f32)> {
    let k = centres.len().saturating_sub(1) / FRAMES_PER_LATENT;
    (0..k)
        .map(|j| {
            let s = &centres[1 + FRAMES_PER_LATENT * j..1 + FRAMES_PER_LATENT * (j + 1)];
            let n = FRAMES_PER_LATENT as f32;
            (s.iter().map(|c| c.0).sum::<f32>() / n, s.iter().map(|c| c.1).sum::<f32>() / n)
        })
        .collect()
}

/// The target of latent frame `j >= 1`: mean openness of its four video
/// frames (`mouth_open` per video frame, `1 + 4k` of them). Returns `k`
/// values (the latent frames after the reference).
pub fn latent_openness(mouth_open: &[f32]) -> Vec<f32> {
    let k = mouth_open.len().saturating_sub(1) / FRAMES_PER_LATENT;
    (0..k)
        .map(|j| {
            let frames = &mouth_open[1 + FRAMES_PER_LATENT * j..1 + FRAMES_PER_LATENT * (j + 1)];
            frames.iter().sum::<f32>() / FRAMES_PER_LATENT as f32
        })
        .collect()
}

/// Clips whose truth [`OpennessTargets`] keeps: more than a clip pool
/// usually holds; a stream of ever-new clips is forgotten in batches of
/// this many, so the cache stays bounded.
pub const TARGET_MEMORY: usize = 4096;

/// Per-clip targets and mouth positions, read once per clip from the synth
/// script (no rendering; the script costs ~0.1 s, its result a few hundred
/// bytes).
#[derive(Debug, Default)]
pub struct OpennessTargets {
    cache: HashMap<u64, MouthTruth>,
}

impl OpennessTargets {
    /// Clip `index`'s targets `[F]` and mouth sampling on clip source
    /// `data`, for an `h x w` latent grid of `factor`-pixel latent pixels.
    pub fn of(
        &mut self,
        data: &ClipSource,
        index: u64,
        factor: usize,
        (h, w): (usize, usize),
        dev: &Device,
    ) -> Result<(Tensor, MouthSampling), TrainError> {
        if !self.cache.contains_key(&index) {
            if self.cache.len() >= TARGET_MEMORY {
                self.cache.clear();
            }
            self.cache.insert(index, data.mouth_truth(index)?);
        }
        let truth = &self.cache[&index];
        let targets = latent_openness(&truth.open);
        Ok((Tensor::from_slice(&targets, targets.len(), dev)?, MouthSampling::new(&truth.centres, factor, h, w, dev)?))
    }
}

/// The expert's loss term for one clip: `mean((expert(clean) - target)^2)`
/// with `clean` `[1, z, F, h, w]` the frames after the reference.
pub fn lip_sync_error(
    expert: &LipExpert,
    clean: &Tensor,
    reference: &Tensor,
    at: &MouthSampling,
    target: &Tensor,
) -> Result<Tensor, TrainError> {
    Ok((expert.forward(clean, reference, at)? - target)?.sqr()?.mean_all()?)
}

/// Fits the expert on real latents of the teacher's clip pool.
pub struct LipExpertStage {
    teacher: TeacherStage,
    params: ParamStore,
    targets: OpennessTargets,
    batch: usize,
    /// Std of Gaussian noise added to the latents (normalised units): the
    /// expert later reads the DiT's clean estimates, which are not exactly
    /// on the data manifold.
    input_noise: f64,
    seed: u64,
}

impl LipExpertStage {
    /// `teacher` supplies the pool (latents) and the clip source (the
    /// truth and the mouth positions); its DiT is not used.
    pub fn new(teacher: TeacherStage, batch: usize, input_noise: f64, seed: u64) -> Result<Self, TrainError> {
        if !(input_noise.is_finite() && input_noise >= 0.0) {
            return Err(TrainError::Invalid(format!("lip expert input noise {input_noise}: must be >= 0")));
        }
        let params = ParamStore::new(seed, teacher.store().device());
        Ok(Self { teacher, params, targets: OpennessTargets::default(), batch: batch.max(1), input_noise, seed })
    }

    fn expert(&self) -> candle_core::Result<LipExpert> {
        LipExpert::new(self.teacher.config().vae.z_dim, self.params.var_builder())
    }
}

impl Stage for LipExpertStage {
    fn name(&self) -> &'static str {
        "lip_expert"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        self.expert().map(|_| ()).map_err(Into::into)
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let expert = self.expert()?;
        let dev = self.params.device().clone();
        let mut noise = NoiseSource::new(self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (mut predicted, mut truth, mut losses) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.batch {
            let index = self.teacher.samples_slot(*cursor);
            let sample = self.teacher.sample(*cursor)?;
            *cursor += 1;
            let x0 = &sample.x0;
            let f = x0.dim(2)?;
            let mut frames = x0.narrow(2, 1, f - 1)?;
            if self.input_noise > 0.0 {
                let jitter = (noise.sample(frames.shape().clone(), DType::F32, &dev)? * self.input_noise)?;
                frames = (frames + jitter)?;
            }
            let factor = self.teacher.config().vae.scale_factor_spatial;
            let (target, at) = self.targets.of(self.teacher.data(), index, factor, (x0.dim(3)?, x0.dim(4)?), &dev)?;
            let out = expert.forward(&frames, &x0.narrow(2, 0, 1)?, &at)?;
            predicted.extend(out.to_vec1::<f32>()?);
            truth.extend(target.to_vec1::<f32>()?);
            losses.push((out - target)?.sqr()?.mean_all()?);
        }
        let loss = (Tensor::stack(&losses, 0)?.mean_all())?;
        let value = loss.to_scalar::<f32>().unwrap_or(f32::NAN);
        let as_f64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let r = crate::eval::lip_sync::pearson(&as_f64(&truth), &as_f64(&predicted)).unwrap_or(0.0) as f32;
        Ok((loss, vec![("mse", value), ("batch_r", r)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_targets_average_each_latent_frames_video_frames() {
        let open = [9.0, 0.0, 0.0, 0.4, 0.4, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(latent_openness(&open), vec![0.2, 1.0]);
        assert!(latent_openness(&[0.5]).is_empty());
        let centres: Vec<(f32, f32)> = (0..9).map(|i| (i as f32, 0.0)).collect();
        assert_eq!(latent_centres(&centres), vec![(2.5, 0.0), (6.5, 0.0)]);
    }

    /// The grid's weights sum to one per point and sit on the pixels
    /// around the mouth; the read-out changes only with the latents there.
    #[test]
    fn expert_reads_the_latents_around_the_mouth() -> anyhow::Result<()> {
        let (h, w) = (8, 8);
        let m = grid_weights((3.5, 4.0), h, w);
        for p in 0..GRID_POINTS {
            let s: f32 = m[p * h * w..(p + 1) * h * w].iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "point {p}: {s}");
        }
        // Point (dy 0, dx -0.5) of (3.5, 4.0) is exactly pixel (row 4, col 3).
        let p = GRID_DX.len() + 1;
        assert_eq!(m[p * h * w + 4 * w + 3], 1.0);

        let dev = Device::Cpu;
        let store = ParamStore::new(3, &dev);
        LipExpert::new(2, store.var_builder())?;
        // The last layer starts at zero (ZERO_INIT): give it values.
        store.insert("lip_expert.fc2.weight", &Tensor::ones((1, LIP_EXPERT_HIDDEN), DType::F32, &dev)?)?;
        let expert = LipExpert::new(2, store.var_builder())?;
        // A mouth at pixel (36, 36) of a 64-pixel frame: latent (4, 4) at factor 8.
        let centres = vec![(36.0f32, 36.0f32); 9];
        let at = MouthSampling::new(&centres, 8, h, w, &dev)?;
        let frames = Tensor::randn(0f32, 1.0, (1, 2, 2, h, w), &dev)?;
        let reference = Tensor::randn(0f32, 1.0, (1, 2, 1, h, w), &dev)?;
        let base = expert.forward(&frames, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(base.len(), 2);
        let bump = |f: std::ops::Range<usize>, y: usize, x: usize| -> anyhow::Result<Tensor> {
            let ones = Tensor::ones((1, 2, f.len(), 1, 1), DType::F32, &dev)?;
            Ok(Tensor::zeros((1, 2, 2, h, w), DType::F32, &dev)?
                .slice_assign(&[0..1, 0..2, f, y..y + 1, x..x + 1], &ones)?)
        };
        // A far corner is not read.
        let far = expert.forward(&(&frames + bump(0..2, 0, 0)?)?, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(far, base);
        // The mouth pixel of frame 1 changes frame 1 only.
        let near = expert.forward(&(&frames + bump(1..2, 4, 4)?)?, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(near[0], base[0]);
        assert_ne!(near[1], base[1]);
        Ok(())
    }
}
