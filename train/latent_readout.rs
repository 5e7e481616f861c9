//! Latent experts: small frozen read-outs of one number per latent frame
//! (mouth openness, head pitch) from VAE latents sampled bilinearly on a
//! grid of points, and the stage that fits one on the teacher's clip pool.
//!
//! An expert maps `[crop_f, crop_f - crop_ref]` (the latents of frame `f`
//! and of the reference frame at the grid points, every channel) through
//! Linear -> SiLU -> Linear to its number. The grid may follow a part of
//! the face through the clip (the lip expert follows the mouth) or stay
//! where the face is at rest (the head expert reads how the head moved
//! against it). What each expert reads, and why the DiT stages need one,
//! is in [`super::lip_expert`] and [`super::head_expert`]; the targets come
//! from the synth's truth of each clip ([`ReadoutTargets`]).
//!
//! Weights: `<name>.fc1.{weight,bias}`, `<name>.fc2.{weight,bias}` in the
//! fitting stage's `params.safetensors` (`fc2` starts at zero,
//! `params::ZERO_INIT`).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::data::ClipSource;
use super::params::ParamStore;
use super::runner::{Stage, StepLoss};
use super::teacher_stage::TeacherStage;
use super::TrainError;
use crate::model::audio::projection::FRAMES_PER_LATENT;
use crate::model::sampler::NoiseSource;

/// Hidden width of a read-out.
pub const READOUT_HIDDEN: usize = 32;

/// A fitted (or fitting) read-out (module docs).
#[derive(Debug, Clone)]
pub struct Readout {
    fc1: Linear,
    fc2: Linear,
    points: usize,
}

impl Readout {
    /// `vb` at the store root; `name` the tensors' prefix, `points` the
    /// grid's size, `z` the latent channels.
    pub fn new(name: &str, points: usize, z: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        Ok(Self {
            fc1: candle_nn::linear(2 * points * z, READOUT_HIDDEN, vb.pp("fc1"))?,
            fc2: candle_nn::linear(READOUT_HIDDEN, 1, vb.pp("fc2"))?,
            points,
        })
    }

    /// A fitted read-out from its stage's checkpoint (frozen: its tensors
    /// carry no gradient; gradients still flow to the latents).
    pub fn load(name: &str, points: usize, path: &Path, z: usize, dev: &Device) -> Result<Self, TrainError> {
        let tensors = candle_core::safetensors::load(path, dev)
            .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), msg: e.to_string() })?;
        Self::new(name, points, z, VarBuilder::from_tensors(tensors, DType::F32, dev))
            .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), msg: format!("not a {name}: {e}") })
    }

    /// One value per latent frame: `frames` `[1, z, F, h, w]` (after the
    /// reference), `reference` `[1, z, 1, h, w]`, `at` the clip's grid.
    /// Returns `[F]`.
    pub fn forward(&self, frames: &Tensor, reference: &Tensor, at: &GridSampling) -> candle_core::Result<Tensor> {
        let (_, z, f, h, w) = frames.dims5()?;
        if at.points != self.points {
            candle_core::bail!("a grid of {} points for a read-out of {}", at.points, self.points);
        }
        // [1, z, F, h, w] -> [F, h*w, z]
        let flat = frames.squeeze(0)?.permute((1, 2, 3, 0))?.reshape((f, h * w, z))?;
        let crops = at.frames.narrow(0, 0, f)?.matmul(&flat)?.reshape((f, self.points * z))?;
        let flat_ref = reference.squeeze(0)?.permute((1, 2, 3, 0))?.reshape((1, h * w, z))?;
        let crop_ref = at.reference.matmul(&flat_ref)?.reshape((1, self.points * z))?;
        let x = Tensor::cat(&[&crops, &crops.broadcast_sub(&crop_ref)?], 1)?;
        self.fc2.forward(&self.fc1.forward(&x)?.silu()?)?.squeeze(1)
    }

    /// `mean((forward - target)^2)`: the loss term a DiT stage adds.
    pub fn error(
        &self,
        frames: &Tensor,
        reference: &Tensor,
        at: &GridSampling,
        target: &Tensor,
    ) -> Result<Tensor, TrainError> {
        Ok((self.forward(frames, reference, at)? - target)?.sqr()?.mean_all()?)
    }
}

/// Bilinear sampling matrices of a clip's grid: `frames` `[F, P, h*w]`
/// (one per latent frame after the reference), `reference` `[1, P, h*w]`.
#[derive(Debug, Clone)]
pub struct GridSampling {
    frames: Tensor,
    reference: Tensor,
    points: usize,
}

impl GridSampling {
    /// From the grid points of each latent frame after the reference and of
    /// the reference, in latent pixel coordinates (pixel centres at
    /// integers) on an `h x w` latent grid; every frame has as many points
    /// as the reference.
    pub fn new(
        frames: &[Vec<(f32, f32)>],
        reference: &[(f32, f32)],
        h: usize,
        w: usize,
        dev: &Device,
    ) -> Result<Self, TrainError> {
        let points = reference.len();
        if let Some(bad) = frames.iter().find(|p| p.len() != points) {
            return Err(TrainError::Invalid(format!("a frame grid of {} points, the reference's {points}", bad.len())));
        }
        let m: Vec<f32> = frames.iter().flat_map(|p| bilinear_weights(p, h, w)).collect();
        Ok(Self {
            frames: Tensor::from_vec(m, (frames.len(), points, h * w), dev)?,
            reference: Tensor::from_vec(bilinear_weights(reference, h, w), (1, points, h * w), dev)?,
            points,
        })
    }
}

/// `[P * h * w]` bilinear weights of `points` (latent pixel coordinates,
/// pixel centres at integers), clamped to the grid's edge.
pub fn bilinear_weights(points: &[(f32, f32)], h: usize, w: usize) -> Vec<f32> {
    let mut m = vec![0f32; points.len() * h * w];
    for (p, &(x, y)) in points.iter().enumerate() {
        let (x0, y0) = (x.floor(), y.floor());
        let (ax, ay) = (x - x0, y - y0);
        for (yy, wy) in [(y0, 1.0 - ay), (y0 + 1.0, ay)] {
            for (xx, wx) in [(x0, 1.0 - ax), (x0 + 1.0, ax)] {
                let row = (yy.max(0.0) as usize).min(h - 1);
                let col = (xx.max(0.0) as usize).min(w - 1);
                m[p * h * w + row * w + col] += wy * wx;
            }
        }
    }
    m
}

/// The points `centre + (dx, dy)` for every `dy` (rows), then every `dx`.
pub fn offset_grid(centre: (f32, f32), dx: &[f32], dy: &[f32]) -> Vec<(f32, f32)> {
    dy.iter().flat_map(|&y| dx.iter().map(move |&x| (centre.0 + x, centre.1 + y))).collect()
}

/// A pixel position as latent pixel coordinates at `factor` pixels per
/// latent pixel (pixel centres at integers on both grids).
pub fn to_latent((x, y): (f32, f32), factor: usize) -> (f32, f32) {
    (x / factor as f32 - 0.5, y / factor as f32 - 0.5)
}

/// The mean of each latent frame's four video frames, for the latent
/// frames after the reference (the causal VAE's layout: latent `j >= 1`
/// holds video frames `4j-3 ..= 4j`); `values` per video frame, `1 + 4k`
/// of them. Returns `k` values.
pub fn per_latent_mean(values: &[f32]) -> Vec<f32> {
    let k = values.len().saturating_sub(1) / FRAMES_PER_LATENT;
    (0..k)
        .map(|j| {
            values[1 + FRAMES_PER_LATENT * j..1 + FRAMES_PER_LATENT * (j + 1)].iter().sum::<f32>()
                / FRAMES_PER_LATENT as f32
        })
        .collect()
}

/// Clips whose truth a [`ReadoutTargets`] cache keeps: more than a clip
/// pool usually holds; a stream of ever-new clips is forgotten in batches
/// of this many, so the cache stays bounded.
pub const TARGET_MEMORY: usize = 4096;

/// Per-clip synth truth, read once per clip (no rendering) and kept for
/// up to [`TARGET_MEMORY`] clips.
#[derive(Debug)]
pub struct TruthCache<T> {
    clips: std::collections::HashMap<u64, T>,
}

impl<T> Default for TruthCache<T> {
    fn default() -> Self {
        Self { clips: std::collections::HashMap::new() }
    }
}

impl<T> TruthCache<T> {
    /// Clip `index`'s truth, read with `read` the first time.
    pub fn get_or_read(&mut self, index: u64, read: impl FnOnce() -> Result<T, TrainError>) -> Result<&T, TrainError> {
        if !self.clips.contains_key(&index) {
            if self.clips.len() >= TARGET_MEMORY {
                self.clips.clear();
            }
            self.clips.insert(index, read()?);
        }
        Ok(&self.clips[&index])
    }

    /// Clip `index`'s truth if it was read.
    pub fn get(&self, index: u64) -> Option<&T> {
        self.clips.get(&index)
    }
}

/// What an expert reads: its name (tensor prefix, stage name), its grid
/// size, and per clip the targets and the grid (from the synth's truth,
/// cached per clip up to [`TARGET_MEMORY`] clips).
pub trait ReadoutTargets: Default {
    /// Tensor prefix and stage name.
    const NAME: &'static str;
    /// Grid points per frame.
    const POINTS: usize;

    /// Clip `index`'s targets `[F]` and grid on clip source `data`, for an
    /// `h x w` latent grid of `factor`-pixel latent pixels.
    fn of(
        &mut self,
        data: &ClipSource,
        index: u64,
        factor: usize,
        hw: (usize, usize),
        dev: &Device,
    ) -> Result<(Tensor, GridSampling), TrainError>;

    /// How much each latent frame of clip `index` counts in a DiT stage's
    /// expert term (`[F]`, after [`ReadoutTargets::of`] read the clip);
    /// `None`: all alike. The fitting stage counts every frame.
    fn frame_weights(&self, _index: u64) -> Option<Vec<f32>> {
        None
    }

    /// A new (random, last layer zero) read-out of this kind in `vb`.
    fn readout(z: usize, vb: VarBuilder) -> candle_core::Result<Readout> {
        Readout::new(Self::NAME, Self::POINTS, z, vb)
    }

    /// A fitted read-out of this kind.
    fn load(path: &Path, z: usize, dev: &Device) -> Result<Readout, TrainError> {
        Readout::load(Self::NAME, Self::POINTS, path, z, dev)
    }
}

/// A DiT stage's expert term: the frozen read-out, its targets and weight.
pub struct ExpertTerm<T: ReadoutTargets> {
    readout: Readout,
    targets: T,
    weight: f64,
}

impl<T: ReadoutTargets> ExpertTerm<T> {
    /// `weight` must be finite and >= 0 (`flag` names it in the error).
    pub fn new(readout: Readout, weight: f64, flag: &str) -> Result<Self, TrainError> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(TrainError::Invalid(format!("{flag} {weight}: must be >= 0")));
        }
        Ok(Self { readout, targets: T::default(), weight })
    }

    /// The error of clip `index`'s clean estimate `clean` (`[1, z, F, h,
    /// w]`, after the reference `reference`): the mean squared error over
    /// its latent frames, weighted by [`ReadoutTargets::frame_weights`]
    /// (0 for a clip whose frames all weigh 0), and the term's weight.
    pub fn error(
        &mut self,
        data: &ClipSource,
        index: u64,
        factor: usize,
        clean: &Tensor,
        reference: &Tensor,
    ) -> Result<(Tensor, f64), TrainError> {
        let (target, at) = self.targets.of(data, index, factor, (clean.dim(3)?, clean.dim(4)?), clean.device())?;
        let Some(weights) = self.targets.frame_weights(index) else {
            return Ok((self.readout.error(clean, reference, &at, &target)?, self.weight));
        };
        let total: f32 = weights.iter().sum();
        let w = Tensor::from_slice(&weights, weights.len(), clean.device())?;
        let sq = (self.readout.forward(clean, reference, &at)? - target)?.sqr()?;
        Ok((((sq * w)?.sum_all()? / f64::from(total.max(1e-6)))?, self.weight))
    }
}

/// Fits a read-out of kind `T` on real latents of the teacher's clip pool.
pub struct ExpertStage<T: ReadoutTargets> {
    teacher: TeacherStage,
    params: ParamStore,
    targets: T,
    batch: usize,
    /// Std of Gaussian noise added to the latents (normalised units): the
    /// expert later reads the DiT's clean estimates, which are not exactly
    /// on the data manifold.
    input_noise: f64,
    seed: u64,
}

impl<T: ReadoutTargets> ExpertStage<T> {
    /// `teacher` supplies the pool (latents) and the clip source (the
    /// truth); its DiT is not used.
    pub fn new(teacher: TeacherStage, batch: usize, input_noise: f64, seed: u64) -> Result<Self, TrainError> {
        if !(input_noise.is_finite() && input_noise >= 0.0) {
            return Err(TrainError::Invalid(format!("{} input noise {input_noise}: must be >= 0", T::NAME)));
        }
        let params = ParamStore::new(seed, teacher.store().device());
        Ok(Self { teacher, params, targets: T::default(), batch: batch.max(1), input_noise, seed })
    }

    fn readout(&self) -> candle_core::Result<Readout> {
        T::readout(self.teacher.config().vae.z_dim, self.params.var_builder())
    }
}

impl<T: ReadoutTargets> Stage for ExpertStage<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn init(&mut self) -> Result<(), TrainError> {
        self.readout().map(|_| ()).map_err(Into::into)
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let readout = self.readout()?;
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
            let out = readout.forward(&frames, &x0.narrow(2, 0, 1)?, &at)?;
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
    fn per_latent_mean_averages_each_latent_frames_video_frames() {
        let open = [9.0, 0.0, 0.0, 0.4, 0.4, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(per_latent_mean(&open), vec![0.2, 1.0]);
        assert!(per_latent_mean(&[0.5]).is_empty());
    }

    /// The weights sum to one per point and sit on the pixels around it; a
    /// read-out changes only with the latents at its grid points, and only
    /// in the frame they change in.
    #[test]
    fn readout_reads_the_latents_at_its_grid() -> anyhow::Result<()> {
        let (h, w) = (8, 8);
        let points = offset_grid((3.5, 4.0), &[-0.5, 0.5], &[0.0]);
        let m = bilinear_weights(&points, h, w);
        for p in 0..points.len() {
            let s: f32 = m[p * h * w..(p + 1) * h * w].iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "point {p}: {s}");
        }
        // Point (dx -0.5, dy 0) of (3.5, 4.0) is exactly pixel (row 4, col 3).
        assert_eq!(m[4 * w + 3], 1.0);
        assert_eq!(to_latent((36.0, 36.0), 8), (4.0, 4.0));

        let dev = Device::Cpu;
        let store = ParamStore::new(3, &dev);
        Readout::new("probe", 2, 2, store.var_builder())?;
        // The last layer starts at zero (ZERO_INIT only for the experts'
        // names, so "probe" starts random): give it known values anyway.
        store.insert("probe.fc2.weight", &Tensor::ones((1, READOUT_HIDDEN), DType::F32, &dev)?)?;
        let readout = Readout::new("probe", 2, 2, store.var_builder())?;
        let grid = offset_grid((4.0, 4.0), &[0.0, 1.0], &[0.0]);
        let at = GridSampling::new(&[grid.clone(), grid.clone()], &grid, h, w, &dev)?;
        let frames = Tensor::randn(0f32, 1.0, (1, 2, 2, h, w), &dev)?;
        let reference = Tensor::randn(0f32, 1.0, (1, 2, 1, h, w), &dev)?;
        let base = readout.forward(&frames, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(base.len(), 2);
        let bump = |f: std::ops::Range<usize>, y: usize, x: usize| -> anyhow::Result<Tensor> {
            let ones = Tensor::ones((1, 2, f.len(), 1, 1), DType::F32, &dev)?;
            Ok(Tensor::zeros((1, 2, 2, h, w), DType::F32, &dev)?
                .slice_assign(&[0..1, 0..2, f, y..y + 1, x..x + 1], &ones)?)
        };
        let far = readout.forward(&(&frames + bump(0..2, 0, 0)?)?, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(far, base);
        let near = readout.forward(&(&frames + bump(1..2, 4, 5)?)?, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(near[0], base[0]);
        assert_ne!(near[1], base[1]);
        // A grid of another size is refused.
        let three = GridSampling::new(&[vec![(0.0, 0.0); 3]], &[(0.0, 0.0); 3], h, w, &dev)?;
        assert!(readout.forward(&frames.narrow(2, 0, 1)?, &reference, &three).is_err());
        Ok(())
    }

    /// Fixed targets 0 and frame weights 0, 1 on a 1-point grid.
    #[derive(Default)]
    struct SecondFrameOnly;

    impl ReadoutTargets for SecondFrameOnly {
        const NAME: &'static str = "probe";
        const POINTS: usize = 1;

        fn of(
            &mut self,
            _: &ClipSource,
            _: u64,
            _: usize,
            (h, w): (usize, usize),
            dev: &Device,
        ) -> Result<(Tensor, GridSampling), TrainError> {
            let at = GridSampling::new(&[vec![(0.0, 0.0)], vec![(0.0, 0.0)]], &[(0.0, 0.0)], h, w, dev)?;
            Ok((Tensor::zeros(2, DType::F32, dev)?, at))
        }

        fn frame_weights(&self, _: u64) -> Option<Vec<f32>> {
            Some(vec![0.0, 1.0])
        }
    }

    /// An expert term with frame weights scores the weighted frames only.
    #[test]
    fn expert_term_weighs_its_frames() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let store = ParamStore::new(3, &dev);
        SecondFrameOnly::readout(1, store.var_builder())?;
        store.insert("probe.fc2.weight", &Tensor::ones((1, READOUT_HIDDEN), DType::F32, &dev)?)?;
        let readout = SecondFrameOnly::readout(1, store.var_builder())?;
        let reference = Tensor::zeros((1, 1, 1, 2, 2), DType::F32, &dev)?;
        let frames = Tensor::randn(0f32, 1.0, (1, 1, 2, 2, 2), &dev)?;
        let at = SecondFrameOnly.of(&test_source(), 0, 8, (2, 2), &dev)?.1;
        let out = readout.forward(&frames, &reference, &at)?.to_vec1::<f32>()?;
        let mut term = ExpertTerm::<SecondFrameOnly>::new(readout, 2.0, "--probe-weight")?;
        let (err, weight) = term.error(&test_source(), 0, 8, &frames, &reference)?;
        assert_eq!(weight, 2.0);
        assert!((err.to_scalar::<f32>()? - out[1] * out[1]).abs() < 1e-5);
        assert!(ExpertTerm::<SecondFrameOnly>::new(term.readout.clone(), -1.0, "--probe-weight").is_err());
        Ok(())
    }

    fn test_source() -> ClipSource {
        ClipSource {
            seed: 1,
            size: 16,
            latent_frames: 2,
            identities: 1,
            max_offset_s: 0.0,
            windows: crate::train::data::WindowChoice::Random,
        }
    }
}
