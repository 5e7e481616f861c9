//! Student forcing: the causal student generates a clip chunk by chunk from
//! its own KV cache, exactly as inference does
//! ([`StreamingGenerator`](crate::generator::StreamingGenerator)'s
//! `denoise`): the reference latent is primed as frame 0 at t = 0 without
//! audio (the reference sink), each chunk of `chunk_frames` latent frames
//! starts from seeded noise and runs the config's few-step schedule
//! (`stream.timesteps`, `shift`) through [`WanDit::forward_chunk`] against
//! the rolling cache with the config's RAPR positions; the chunk's K/V are
//! committed at the last denoising step (its noisy input x_t, StreamAvatar)
//! or, with `CacheUpdate::CleanRerun`, by an extra pass on the clean x0.
//!
//! Gradients: every forward runs on detached weights except the one at the
//! *exit step* of each chunk, which uses the tracked weights; the chunk's
//! sample is the x0 predicted at that step (Self-Forcing's random exit:
//! every step of the schedule gets trained). Denoising continues (without
//! gradient) to the last step so the cache holds what inference would
//! write. The cache is detached after every commit, so gradients do not
//! flow from a chunk into the earlier chunks it attends to (truncated
//! backpropagation through the rollout).

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{CacheUpdate, ModelConfig};
use crate::model::dit::{AttentionMask, AudioTokens, TextContext, WanDit};
use crate::model::kv_cache::KvCache;
use crate::model::sampler::{predict_x0, renoise, FlowMatchSchedule, NoiseSource};

use super::teacher_stage::{dit_modules, reference_clean_timesteps, TeacherSample};
use super::TrainError;

/// A DiT with its text context and the audio tokens of one clip.
pub struct ConditionedDit {
    pub dit: WanDit,
    pub text: TextContext,
    /// `[1, F, tokens, D]` talk / listen tokens of the clip's latent frames.
    pub audio: AudioTokens,
}

impl ConditionedDit {
    /// Build the modules of `vb` (DiT namespace: `audio_proj.*`,
    /// `prompt_embeds`) and condition them on `sample`'s audio.
    pub fn new(
        cfg: &ModelConfig,
        vb: candle_nn::VarBuilder<'static>,
        sample: &TeacherSample,
    ) -> Result<Self, TrainError> {
        let (dit, proj, prompt) = dit_modules(cfg, vb)?;
        let audio = AudioTokens {
            talk: proj.forward_clip(&sample.talk_features)?,
            listen: proj.forward_clip(&sample.listen_features)?,
        };
        let text = dit.text_context(&prompt)?;
        Ok(Self { dit, text, audio })
    }

    /// Audio tokens of latent frames `start .. start + n` for a streaming
    /// chunk; listen with the history a stream has there (up to
    /// `listen_lookback_frames` earlier frames, none before frame 1: the
    /// reference is primed without audio), as the generator's audio branch
    /// hands it out.
    pub fn audio_frames(&self, start: usize, n: usize) -> Result<AudioTokens, TrainError> {
        let first = start.saturating_sub(self.dit.config().listen_lookback_frames).max(1).min(start);
        Ok(AudioTokens {
            talk: self.audio.talk.narrow(1, start, n)?,
            listen: self.audio.listen.narrow(1, first, start + n - first)?,
        })
    }

    /// Bidirectional velocity of frames 1.. of `[reference, x_t]` (reference
    /// clean at t = 0, the rest at noise level `sigma`): the teacher's view.
    pub fn velocity(&self, reference: &Tensor, x_t: &Tensor, sigma: f64) -> Result<Tensor, TrainError> {
        let full = Tensor::cat(&[reference, x_t], 2)?;
        let f = full.dim(2)?;
        let ts = reference_clean_timesteps(f, (sigma * 1000.0) as f32, full.device())?;
        let v = self.dit.forward(&full, &ts, &self.text, Some(&self.audio), AttentionMask::Bidirectional)?;
        Ok(v.narrow(2, 1, f - 1)?)
    }
}

/// Which denoising step of every chunk carries the gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStep {
    /// The last step (the sample inference outputs).
    Last,
    /// Step `i` (clamped to the schedule).
    Index(usize),
}

/// Generate latent frames `1 .. frames` after `reference` (`[1, z, 1, h, w]`)
/// with the student. `frozen`: the student on detached weights (runs every
/// step that carries no gradient); `live`: the student on tracked weights
/// for the exit step (None: no gradient at all). Returns the samples
/// `[1, z, frames - 1, h, w]`: per chunk the x0 predicted at the exit step.
pub fn student_rollout(
    cfg: &ModelConfig,
    frozen: &ConditionedDit,
    live: Option<&ConditionedDit>,
    reference: &Tensor,
    frames: usize,
    exit: ExitStep,
    noise: &mut NoiseSource,
) -> Result<Tensor, TrainError> {
    let sched = FlowMatchSchedule::from_config(&cfg.stream).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let steps = sched.steps().to_vec();
    let last = steps.len() - 1;
    let exit = match exit {
        ExitStep::Last => last,
        ExitStep::Index(i) => i.min(last),
    };
    let c = cfg.stream.chunk_frames;
    if frames < 2 || c == 0 {
        return Err(TrainError::Invalid(format!(
            "a rollout needs >= 1 frame after the reference, got {frames} frames"
        )));
    }
    let (b, z, _, h, w) = reference.dims5()?;
    let dev = reference.device().clone();
    let commit_last = cfg.stream.cache_update == CacheUpdate::LastStep;
    let mut cache = KvCache::from_stream(frozen.dit.num_layers(), &cfg.stream);
    frozen.dit.prime_reference(reference, &frozen.text, None, &mut cache)?;
    let mut samples = Vec::new();
    let mut start = 1;
    while start < frames {
        let n = c.min(frames - start);
        let audio_frozen = frozen.audio_frames(start, n)?;
        let audio_live = live.map(|l| l.audio_frames(start, n)).transpose()?;
        let mut x = noise.sample((b, z, n, h, w), DType::F32, &dev)?;
        let mut sample = None;
        let mut x0 = x.clone();
        for (i, step) in steps.iter().enumerate() {
            let t = timestep(step.timestep, b, &dev)?;
            let commit = commit_last && i == last;
            let predicted = match (live, &audio_live) {
                (Some(l), Some(audio)) if i == exit => {
                    let v = l.dit.forward_chunk(&x, &t, &l.text, Some(audio), &mut cache, start, commit)?;
                    predict_x0(&x, &v, step.sigma)?
                }
                _ => {
                    let v = frozen.dit.forward_chunk(
                        &x,
                        &t,
                        &frozen.text,
                        Some(&audio_frozen),
                        &mut cache,
                        start,
                        commit,
                    )?;
                    predict_x0(&x, &v, step.sigma)?
                }
            };
            if commit {
                cache.detach();
            }
            if i == exit {
                sample = Some(predicted.clone());
            }
            x0 = predicted.detach();
            if i < last {
                let fresh = noise.sample((b, z, n, h, w), DType::F32, &dev)?;
                x = renoise(&x0, &fresh, sched.next_sigma(i))?;
            }
        }
        if !commit_last {
            let t = timestep(0.0, b, &dev)?;
            frozen.dit.forward_chunk(&x0, &t, &frozen.text, Some(&audio_frozen), &mut cache, start, true)?;
        }
        samples.push(sample.unwrap_or(x0));
        start += n;
    }
    Ok(Tensor::cat(&samples, 2)?)
}

fn timestep(t: f64, batch: usize, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::full(t as f32, batch, dev)
}

/// `sigma = shift(u)` with `u` uniform in `[lo, hi]`.
pub fn uniform_sigma(rng: &mut StdRng, lo: f64, hi: f64, shift: f64) -> f64 {
    let u = if hi > lo { rng.random_range(lo..hi) } else { lo };
    crate::model::sampler::warp_sigma(u, shift)
}

/// The scalar RNG of one update (sigma, exit step), seeded by `(seed, salt)`.
pub fn step_rng(seed: u64, salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
