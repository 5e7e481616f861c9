//! Stage 2: the bidirectional teacher — rectified-flow matching on VAE
//! latents of synth clips, as Wan2.2 / StreamAvatar's teacher:
//! * latents `x0 = normalize(VAE.encode(video).mu)` (frozen VAE, stage 1);
//! * frame 0 is the reference: kept clean with timestep 0 (Wan2.2 TI2V
//!   image conditioning), excluded from the loss;
//! * frames 1.. get `x_t = (1 - s) x0 + s eps` with one `s` per clip drawn
//!   as `shift(u)`, `u = sigmoid(n)`, `n ~ N(0, 1)` (logit-normal, then the
//!   sampler's shift warp; `--unshifted-sigma-share` draws a share of the
//!   steps without the warp, so low noise levels are learned too), timestep
//!   `1000 s`; target velocity `eps - x0`, loss = MSE on frames 1..;
//! * talk / listen audio: the frozen wav2vec2 encodes each track, features
//!   are resampled to video frames, multiplied by the ground-truth talk /
//!   listen masks (after the encoder, as the paper), and projected by the
//!   trainable `audio_proj`; they drive the Talk / Listen Audio Attention;
//! * the fixed prompt is a trainable `prompt_embeds` tensor (our mini model
//!   has no text encoder: the prompt never changes).
//!
//! Trainable: the DiT, `audio_proj.*`, `prompt_embeds` (one store, the DiT
//! checkpoint namespace). Frozen: VAE and wav2vec2 (loaded from files when
//! given, else seeded random).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::model::audio::wav2vec2::{InputNormalization, Wav2Vec2Model};
use crate::model::audio::{apply_frame_mask, AudioProjection, FrameRateMap};
use crate::model::dit::{AttentionMask, AudioTokens, TextContext, WanDit};
use crate::model::sampler::{warp_sigma, NoiseSource};
use crate::model::vae::WanVae;
use crate::model::weights::SeededInitBackend;

use super::data::{ClipSource, ClipTensors};
use super::head_expert::PitchTargets;
use super::latent_readout::{ExpertTerm, Readout};
use super::lip_expert::{LipExpert, OpennessTargets};
use super::listen_contrast::ListenContrast;
use super::params::ParamStore;
use super::runner::{Stage, StepLoss};
use super::sample_store::SampleStore;
use super::TrainError;

/// Frozen modules of stage 2.
pub struct FrozenModules {
    pub vae: WanVae,
    pub wav2vec2: Wav2Vec2Model,
}

fn frozen_vb(file: Option<&PathBuf>, seed: u64, dev: &Device) -> Result<candle_nn::VarBuilder<'static>, TrainError> {
    Ok(match file {
        Some(p) => {
            let tensors = candle_core::safetensors::load(p, dev)
                .map_err(|e| TrainError::Checkpoint { path: p.clone(), msg: e.to_string() })?;
            candle_nn::VarBuilder::from_tensors(tensors, DType::F32, dev)
        }
        None => SeededInitBackend::var_builder(seed, DType::F32, dev),
    })
}

/// Seed of the seeded random frozen VAE of a stage seeded `stage_seed`.
pub fn frozen_vae_seed(stage_seed: u64) -> u64 {
    stage_seed ^ 1
}

impl FrozenModules {
    /// `vae`: a stage-1 `params.safetensors`; `wav2vec2`: a wav2vec2 file
    /// with `Wav2Vec2Model` names; `None` = seeded random weights.
    pub fn load(
        cfg: &ModelConfig,
        vae: Option<&PathBuf>,
        wav2vec2: Option<&PathBuf>,
        seed: u64,
    ) -> Result<Self, TrainError> {
        Self::load_on(cfg, vae, wav2vec2, seed, &Device::Cpu)
    }

    /// [`load`](Self::load) onto `dev`.
    pub fn load_on(
        cfg: &ModelConfig,
        vae: Option<&PathBuf>,
        wav2vec2: Option<&PathBuf>,
        seed: u64,
        dev: &Device,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            vae: WanVae::new(&cfg.vae, frozen_vb(vae, frozen_vae_seed(seed), dev)?)?,
            wav2vec2: load_frozen_wav2vec2(cfg, wav2vec2, seed, dev)?,
        })
    }
}

/// The frozen wav2vec2 of the DiT stages: from `file`, else seeded random
/// weights of a stage seeded `seed` (the weights `train export` writes).
pub fn load_frozen_wav2vec2(
    cfg: &ModelConfig,
    file: Option<&PathBuf>,
    seed: u64,
    dev: &Device,
) -> Result<Wav2Vec2Model, TrainError> {
    Ok(Wav2Vec2Model::new(
        &cfg.audio.wav2vec2,
        InputNormalization::ZeroMeanUnitVariance,
        frozen_vb(file, super::export::frozen_wav2vec2_seed(seed), dev)?,
    )?)
}

/// A clip prepared for the teacher (frozen parts computed once).
pub struct TeacherSample {
    /// `[1, z, F, h, w]` normalized latents.
    pub x0: Tensor,
    /// `[1, L+1, N, H]` wav2vec2 features at video fps, masked.
    pub talk_features: Tensor,
    pub listen_features: Tensor,
}

/// Stage 2 state.
pub struct TeacherStage {
    cfg: ModelConfig,
    params: ParamStore,
    frozen: FrozenModules,
    data: ClipSource,
    seed: u64,
    device: Device,
    /// Prepared samples (frozen encoders run once per clip of the pool).
    samples: SampleStore,
    /// Share of steps whose noise level is drawn without the shift warp
    /// (see [`TeacherStage::with_unshifted_sigma_share`]).
    unshifted_sigma_share: f64,
    /// Loss weight of the latent pixels over the mouth (see
    /// [`TeacherStage::with_mouth_loss_weight`]); 1 = plain MSE.
    mouth_loss_weight: f64,
    /// Score the error of the clean-latent estimate instead of the
    /// velocity's (see [`TeacherStage::with_sample_space_loss`]).
    sample_space_loss: bool,
    /// The frozen lip-sync expert's term (see
    /// [`TeacherStage::with_lip_sync`]).
    lip_sync: Option<ExpertTerm<OpennessTargets>>,
    /// The frozen head expert's term (see
    /// [`TeacherStage::with_head_motion`]).
    head_motion: Option<ExpertTerm<PitchTargets>>,
    /// The listen-contrast term (see [`TeacherStage::with_listen_contrast`]).
    listen_contrast: Option<ListenContrast>,
}

impl TeacherStage {
    /// Trains on the device the frozen modules were loaded on.
    pub fn new(cfg: ModelConfig, frozen: FrozenModules, data: ClipSource, seed: u64) -> Self {
        let device = frozen.vae.device().clone();
        Self {
            params: ParamStore::new(seed, &device),
            cfg,
            frozen,
            data,
            seed,
            device,
            samples: SampleStore::stream(),
            unshifted_sigma_share: 0.0,
            mouth_loss_weight: 1.0,
            sample_space_loss: false,
            lip_sync: None,
            head_motion: None,
            listen_contrast: None,
        }
    }

    /// Add `weight * mean((expert(x0_hat) - openness)^2)` to the loss, with
    /// `x0_hat = x_t - sigma v` the clean estimate of the frames after the
    /// reference and `openness` the synth's truth per latent frame: a
    /// lip-sync expert's loss ([`super::lip_expert`], whose module docs say
    /// why the MSE alone leaves the teacher deaf).
    pub fn with_lip_sync(mut self, expert: LipExpert, weight: f64) -> Result<Self, TrainError> {
        self.lip_sync = Some(ExpertTerm::new(expert, weight, "--lip-sync-weight")?);
        Ok(self)
    }

    /// Add `weight * mean((expert(x0_hat) - pitch)^2)` to the loss: the
    /// head expert's term ([`super::head_expert`], whose module docs say
    /// why the MSE alone leaves the listen branch idle), `pitch` the synth's
    /// head pitch per latent frame against the reference frame's, each
    /// latent frame counted by its share of listening video frames.
    pub fn with_head_motion(mut self, expert: Readout, weight: f64) -> Result<Self, TrainError> {
        self.head_motion = Some(ExpertTerm::new(expert, weight, "--head-motion-expert-weight")?);
        Ok(self)
    }

    /// Add `weight * mean((expert(x0_hat) - expert(x0_hat_silent) -
    /// reaction)^2)` on clips where the avatar listens: the head expert's
    /// read-out of what the partner's audio changes against the synth's
    /// listening reactions ([`super::listen_contrast`], whose module docs
    /// say why the plain head term did not make the listen branch react).
    /// Costs one more DiT forward and backward on those clips.
    pub fn with_listen_contrast(mut self, expert: Readout, weight: f64) -> Result<Self, TrainError> {
        self.listen_contrast = Some(ListenContrast::new(expert, weight)?);
        Ok(self)
    }

    /// The pool slot (clip index) data cursor `cursor` draws.
    pub fn samples_slot(&self, cursor: u64) -> u64 {
        self.samples.slot(cursor)
    }

    /// Weigh each step's error by `sigma^2`: the velocity error
    /// `v - (eps - x0)` of a model is `(x0 - x0_hat) / sigma`, so this
    /// scores the clean-latent estimate `x0_hat` itself, equally at every
    /// noise level. The plain velocity loss weighs low-noise steps by
    /// `1 / sigma^2` (400x at sigma 0.05), where `x_t` already shows the
    /// mouth and the audio is no help; with Adam their large gradients
    /// also shrink every other step's update. The audio decides the mouth
    /// only at high noise, which this weighting stops drowning out.
    pub fn with_sample_space_loss(mut self, on: bool) -> Self {
        self.sample_space_loss = on;
        self
    }

    /// Draw the noise level of a `share` of the steps (chosen by the step
    /// number) as plain logit-normal `sigma = u` instead of `shift(u)`.
    /// With the sampler's shift 5 alone, `P(sigma < 0.3)` is under 1 %, so
    /// the last, low-noise part of the flow (which ODE init's trajectories
    /// run through) is barely trained. Tried against the mini teacher's
    /// noisy samples in session 12 without a measurable gain
    /// (docs/TRAINING.md); off by default.
    pub fn with_unshifted_sigma_share(mut self, share: f64) -> Result<Self, TrainError> {
        if !(0.0..=1.0).contains(&share) {
            return Err(TrainError::Invalid(format!("--unshifted-sigma-share {share}: must be in [0, 1]")));
        }
        self.unshifted_sigma_share = share;
        Ok(self)
    }

    /// Weigh the flow-matching error on the latent pixels that cover the
    /// clip identity's mouth (its mouth box grown by the head's largest
    /// motion, [`FaceLayout`](crate::eval::face_layout::FaceLayout)) by
    /// `weight` against 1 elsewhere; the loss is normalised by the mean
    /// weight, so its scale stays that of the plain MSE. Why: at 128x128
    /// the mouth lies in ~20 of a frame's 256 latent pixels, and what the
    /// audio explains there is far below the rest of the error, so a plain
    /// MSE teacher learns to ignore its audio (`teacher_check`'s
    /// `swapped_audio`, session 13).
    pub fn with_mouth_loss_weight(mut self, weight: f64) -> Result<Self, TrainError> {
        if !(weight.is_finite() && weight >= 1.0) {
            return Err(TrainError::Invalid(format!("--mouth-loss-weight {weight}: must be >= 1")));
        }
        self.mouth_loss_weight = weight;
        Ok(self)
    }

    /// `[1, 1, 1, h, w]` loss weights of clip `index`'s latent pixels:
    /// `mouth_loss_weight` over the mouth region, 1 elsewhere.
    fn latent_weights(&self, index: u64, h: usize, w: usize) -> Result<Tensor, TrainError> {
        let mask = self.mouth_latent_mask(index, h, w)?;
        Ok(((mask * (self.mouth_loss_weight - 1.0))? + 1.0)?)
    }

    /// `[1, 1, 1, h, w]`: 1 on the latent pixels (of an `h x w` latent
    /// grid) that clip `index`'s mouth box, grown by the head's largest
    /// motion, touches; 0 elsewhere.
    pub fn mouth_latent_mask(&self, index: u64, h: usize, w: usize) -> Result<Tensor, TrainError> {
        let layout = self.data.face_layout(index)?;
        let mouth = layout.with_motion(layout.mouth);
        let factor = self.cfg.vae.scale_factor_spatial;
        let mut map = vec![0f32; h * w];
        for y in mouth.y0 / factor..mouth.y1.div_ceil(factor).min(h) {
            for x in mouth.x0 / factor..mouth.x1.div_ceil(factor).min(w) {
                map[y * w + x] = 1.0;
            }
        }
        Ok(Tensor::from_vec(map, (1, 1, 1, h, w), &self.device)?)
    }

    /// The shift of step `step`'s noise level (see
    /// [`with_unshifted_sigma_share`](Self::with_unshifted_sigma_share)).
    fn sigma_shift(&self, step: u64) -> f64 {
        if self.unshifted_sigma_share <= 0.0 {
            return self.cfg.stream.shift;
        }
        // A draw of its own per step, independent of the noise source.
        let draw = crate::synth::rng::SynthRng::derive(self.seed ^ step, 0x5161_4A5E).unit();
        if draw < self.unshifted_sigma_share {
            1.0
        } else {
            self.cfg.stream.shift
        }
    }

    /// Train on a finite clip pool whose prepared samples are kept (see
    /// [`super::sample_store`]); replaces the default endless stream.
    pub fn with_samples(mut self, samples: SampleStore) -> Self {
        self.samples = samples;
        self
    }

    /// The frozen VAE (latents of the clips).
    pub fn vae(&self) -> &WanVae {
        &self.frozen.vae
    }

    /// The clips this stage draws from.
    pub fn data(&self) -> &ClipSource {
        &self.data
    }

    /// The DiT, audio projection and prompt embedding from the variables.
    pub fn modules(&self) -> Result<(WanDit, AudioProjection, Tensor), TrainError> {
        self.modules_from(self.params.var_builder())
    }

    /// The same modules with detached weights (a frozen teacher).
    pub fn frozen_modules(&self) -> Result<(WanDit, AudioProjection, Tensor), TrainError> {
        self.modules_from(self.params.frozen_var_builder())
    }

    /// The trainable store (DiT checkpoint namespace).
    pub fn store(&self) -> &ParamStore {
        &self.params
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn modules_from(
        &self,
        vb: candle_nn::VarBuilder<'static>,
    ) -> Result<(WanDit, AudioProjection, Tensor), TrainError> {
        dit_modules(&self.cfg, vb)
    }

    /// Latents and masked audio features of one clip (no gradients).
    pub fn prepare(&self, clip: &ClipTensors) -> Result<TeacherSample, TrainError> {
        let vae = &self.frozen.vae;
        let x0 = vae.latent_norm().normalize(&vae.encode(&clip.video)?.mu)?.detach();
        let n = clip.talk_mask.len();
        let map = FrameRateMap::new(&self.cfg.audio.wav2vec2, self.cfg.audio.sample_rate, self.cfg.stream.fps)?;
        let wave =
            Tensor::from_vec([clip.talk.clone(), clip.listen.clone()].concat(), (2, clip.talk.len()), &self.device)?;
        let hs = self.frozen.wav2vec2.forward(&wave)?.hidden_states;
        let feats = map.resample_clip(&hs, clip.talk.len() as u64)?;
        let have = feats.dim(2)?;
        if have < n {
            return Err(TrainError::Invalid(format!("audio covers {have} video frames, the clip has {n}")));
        }
        let feats = feats.narrow(2, 0, n)?;
        let talk = apply_frame_mask(&feats.narrow(0, 0, 1)?, &clip.talk_mask)?.detach();
        let listen = apply_frame_mask(&feats.narrow(0, 1, 1)?, &clip.listen_mask)?.detach();
        Ok(TeacherSample { x0, talk_features: talk, listen_features: listen })
    }

    /// The prepared sample for data cursor `cursor` (its clip of the pool,
    /// prepared once).
    pub fn sample(&mut self, cursor: u64) -> Result<std::rc::Rc<TeacherSample>, TrainError> {
        let slot = self.samples.slot(cursor);
        if let Some(s) = self.samples.get(slot, &self.device)? {
            return Ok(s);
        }
        let t0 = std::time::Instant::now();
        let clip = self.data.clip(slot, &self.device)?;
        let render_ms = t0.elapsed().as_millis() as u64;
        let s = std::rc::Rc::new(self.prepare(&clip)?);
        let encode_ms = t0.elapsed().as_millis() as u64 - render_ms;
        tracing::debug!(slot, render_ms, encode_ms, "prepared clip");
        self.samples.put(slot, s.clone())?;
        Ok(s)
    }

    /// The frozen teacher with `sample`'s projected talk / listen tokens and
    /// the prompt's text context: what every frozen forward conditions on.
    fn frozen_conditioned(&self, sample: &TeacherSample) -> Result<(WanDit, AudioTokens, TextContext), TrainError> {
        let (dit, proj, prompt) = self.frozen_modules()?;
        let audio = AudioTokens {
            talk: proj.forward_clip(&sample.talk_features)?,
            listen: proj.forward_clip(&sample.listen_features)?,
        };
        let text = dit.text_context(&prompt)?;
        Ok((dit, audio, text))
    }

    /// The frozen teacher's one-step estimate of the clean frames after the
    /// reference of `sample` at noise level `sigma`, from `noise` (`[1, z,
    /// F-1, h, w]`): `x_t - sigma v(x_t)` with `x_t = (1 - sigma) x0 +
    /// sigma noise`, as in training.
    pub fn predict_clean(&self, sample: &TeacherSample, noise: &Tensor, sigma: f64) -> Result<Tensor, TrainError> {
        let (dit, audio, text) = self.frozen_conditioned(sample)?;
        let f = sample.x0.dim(2)?;
        let reference = sample.x0.narrow(2, 0, 1)?;
        let noisy = ((sample.x0.narrow(2, 1, f - 1)? * (1.0 - sigma))? + (noise * sigma)?)?;
        let xt = Tensor::cat(&[&reference, &noisy], 2)?;
        let ts = reference_clean_timesteps(f, (sigma * 1000.0) as f32, &self.device)?;
        let v = dit.forward(&xt, &ts, &text, Some(&audio), AttentionMask::Bidirectional)?;
        Ok((noisy - (v.narrow(2, 1, f - 1)? * sigma)?)?)
    }

    /// Integrate the frozen teacher's flow ODE with Euler steps for the
    /// frames after the reference of `sample`, from `noise` (`[1, z, F-1,
    /// h, w]`, scaled by `grid[0]`) down the sigma grid `grid` (descending,
    /// usually ending at 0), `substeps` equal steps per grid interval.
    /// `at_node(n, x)` sees the state at each grid node `n` before its
    /// interval is integrated (ODE init records them). Returns the end state.
    pub fn integrate_flow(
        &self,
        sample: &TeacherSample,
        noise: &Tensor,
        grid: &[f64],
        substeps: usize,
        mut at_node: impl FnMut(usize, &Tensor),
    ) -> Result<Tensor, TrainError> {
        let (dit, audio, text) = self.frozen_conditioned(sample)?;
        let reference = sample.x0.narrow(2, 0, 1)?;
        let f = sample.x0.dim(2)?;
        let substeps = substeps.max(1);
        let mut x = (noise * grid.first().copied().unwrap_or(1.0))?;
        for (n, w) in grid.windows(2).enumerate() {
            at_node(n, &x);
            let (hi, lo) = (w[0], w[1]);
            for k in 0..substeps {
                let a = hi + (lo - hi) * k as f64 / substeps as f64;
                let b = hi + (lo - hi) * (k + 1) as f64 / substeps as f64;
                let xt = Tensor::cat(&[&reference, &x], 2)?;
                let ts = reference_clean_timesteps(f, (a * 1000.0) as f32, &self.device)?;
                let v = dit.forward(&xt, &ts, &text, Some(&audio), AttentionMask::Bidirectional)?;
                x = (x + (v.narrow(2, 1, f - 1)? * (b - a))?)?.detach();
            }
        }
        Ok(x)
    }
}

/// The DiT, its audio projection (`audio_proj.*`) and the fixed prompt
/// embedding (`prompt_embeds`) from one store (the DiT checkpoint
/// namespace): the teacher, the student, DMD's fake score.
pub fn dit_modules(
    cfg: &ModelConfig,
    vb: candle_nn::VarBuilder<'static>,
) -> Result<(WanDit, AudioProjection, Tensor), TrainError> {
    let dit = WanDit::new(&cfg.dit, vb.clone())?;
    let proj =
        AudioProjection::new(&cfg.audio, cfg.dit.hidden_size(), cfg.dit.audio_tokens_per_frame, vb.pp("audio_proj"))?;
    let prompt = vb.get_with_hints(
        (1, cfg.dit.text_len, cfg.dit.text_dim),
        "prompt_embeds",
        candle_nn::Init::Randn { mean: 0.0, stdev: 0.1 },
    )?;
    Ok((dit, proj, prompt))
}

/// Per-frame timesteps `[1, F]`: 0 for the reference frame, `t` elsewhere.
pub fn reference_clean_timesteps(frames: usize, t: f32, dev: &Device) -> candle_core::Result<Tensor> {
    let mut v = vec![t; frames];
    if let Some(first) = v.first_mut() {
        *first = 0.0;
    }
    Tensor::from_vec(v, (1, frames), dev)
}

impl Stage for TeacherStage {
    fn name(&self) -> &'static str {
        "teacher"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        self.modules().map(|_| ())
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let index = self.samples.slot(*cursor);
        let sample = self.sample(*cursor)?;
        *cursor += 1;
        let (dit, proj, prompt) = self.modules()?;
        let x0 = &sample.x0;
        let f = x0.dim(2)?;
        if f < 2 {
            return Err(TrainError::Invalid("teacher clips need >= 1 latent frame after the reference".into()));
        }
        let mut noise = NoiseSource::new(self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let u = noise.sample(1, DType::F32, &self.device)?.to_vec1::<f32>()?[0];
        // Logit-normal noise level (SD3): u = sigmoid(n), n ~ N(0, 1).
        let u = 1.0 / (1.0 + (-u as f64).exp());
        let sigma = warp_sigma(u, self.sigma_shift(step));
        let eps = noise.sample(x0.shape().clone(), DType::F32, &self.device)?;
        let reference = x0.narrow(2, 0, 1)?;
        let rest = x0.narrow(2, 1, f - 1)?;
        let noisy = ((&rest * (1.0 - sigma))? + (eps.narrow(2, 1, f - 1)? * sigma)?)?;
        let xt = Tensor::cat(&[&reference, &noisy], 2)?;
        let target = (eps.narrow(2, 1, f - 1)? - &rest)?;
        let timesteps = reference_clean_timesteps(f, (sigma * 1000.0) as f32, &self.device)?;
        let talk = proj.forward_clip(&sample.talk_features)?;
        let listen = proj.forward_clip(&sample.listen_features)?;
        let audio = AudioTokens { talk, listen };
        let text = dit.text_context(&prompt)?;
        let v = dit.forward(&xt, &timesteps, &text, Some(&audio), AttentionMask::Bidirectional)?;
        let v = v.narrow(2, 1, f - 1)?;
        let clean = (&noisy - (&v * sigma)?)?;
        let factor = self.cfg.vae.scale_factor_spatial;
        let mut expert_terms = Vec::new();
        let mut extra_parts = Vec::new();
        if let Some(term) = self.listen_contrast.as_mut() {
            let hw = (clean.dim(3)?, clean.dim(4)?);
            if let Some((target, at)) = term.targets(&self.data, index, factor, hw, &self.device)? {
                let silent = AudioTokens {
                    talk: audio.talk.clone(),
                    listen: proj.forward_clip(&sample.listen_features.zeros_like()?)?,
                };
                let v_silent = dit.forward(&xt, &timesteps, &text, Some(&silent), AttentionMask::Bidirectional)?;
                let clean_silent = (&noisy - (v_silent.narrow(2, 1, f - 1)? * sigma)?)?;
                let err = term.error(&clean, &clean_silent, &reference, &at, &target)?;
                // What a model that ignores the partner would score: the
                // term's progress is err against this.
                let ignored = target.sqr()?.mean_all()?.to_scalar::<f32>()?;
                expert_terms.push(("listen_contrast", (err, term.weight())));
                extra_parts.push(("listen_contrast_if_deaf", ignored));
            }
        }
        if let Some(term) = self.lip_sync.as_mut() {
            expert_terms.push(("lip_sync", term.error(&self.data, index, factor, &clean, &reference)?));
        }
        if let Some(term) = self.head_motion.as_mut() {
            expert_terms.push(("head_motion", term.error(&self.data, index, factor, &clean, &reference)?));
        }
        let err = (v - target)?.sqr()?;
        let err = if self.sample_space_loss { (err * (sigma * sigma))? } else { err };
        let plain = err.mean_all()?;
        let mut parts = vec![("fm_mse", plain.to_scalar::<f32>().unwrap_or(f32::NAN))];
        let mut loss = if self.mouth_loss_weight == 1.0 {
            plain
        } else {
            let (h, w) = (x0.dim(3)?, x0.dim(4)?);
            let weights = self.latent_weights(index, h, w)?;
            let mean_weight = weights.mean_all()?.to_scalar::<f32>()? as f64;
            let weighted = (err.broadcast_mul(&weights)?.mean_all()? / mean_weight)?;
            parts.push(("fm_weighted", weighted.to_scalar::<f32>().unwrap_or(f32::NAN)));
            weighted
        };
        for (name, (err, weight)) in expert_terms {
            parts.push((name, err.to_scalar::<f32>().unwrap_or(f32::NAN)));
            loss = (loss + (err * weight)?)?;
        }
        parts.extend(extra_parts);
        parts.push(("sigma", sigma as f32));
        Ok((loss, parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(share: f64) -> anyhow::Result<TeacherStage> {
        let cfg = ModelConfig::tiny();
        let frozen = FrozenModules::load(&cfg, None, None, 7)?;
        let data = ClipSource {
            seed: 1,
            size: 64,
            latent_frames: 2,
            identities: 4,
            max_offset_s: 0.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        Ok(TeacherStage::new(cfg, frozen, data, 7).with_unshifted_sigma_share(share)?)
    }

    /// The share of unwarped steps is what was asked for, and without it
    /// every step keeps the sampler's shift (the committed recipe's draws).
    #[test]
    fn unshifted_sigma_share_picks_that_share_of_the_steps() -> anyhow::Result<()> {
        let shift = ModelConfig::tiny().stream.shift;
        assert_ne!(shift, 1.0);
        let count = |st: &TeacherStage| (0..2000u64).filter(|&s| st.sigma_shift(s) == 1.0).count();
        assert_eq!(count(&stage(0.0)?), 0);
        assert_eq!(count(&stage(1.0)?), 2000);
        let half = count(&stage(0.5)?);
        assert!((900..=1100).contains(&half), "{half} of 2000 steps unwarped");
        assert!(stage(1.5).is_err() && stage(-0.1).is_err());
        Ok(())
    }

    /// The mouth weights cover the latent pixels under the clip identity's
    /// mouth (and only a small part of the frame); other pixels weigh 1.
    #[test]
    fn mouth_weights_cover_the_mouth_of_the_clip_identity() -> anyhow::Result<()> {
        let st = stage(0.0)?.with_mouth_loss_weight(10.0)?;
        let factor = st.cfg.vae.scale_factor_spatial;
        let (h, w) = (64 / factor, 64 / factor);
        for index in [0u64, 1, 3] {
            let map: Vec<f32> = st.latent_weights(index, h, w)?.flatten_all()?.to_vec1()?;
            let heavy = map.iter().filter(|&&v| v == 10.0).count();
            assert_eq!(heavy + map.iter().filter(|&&v| v == 1.0).count(), h * w);
            assert!(heavy >= 1 && heavy <= h * w / 3, "{heavy} of {} pixels weighted", h * w);
            let mouth = st.data.face_layout(index)?.mouth;
            let (cy, cx) = ((mouth.y0 + mouth.y1) / 2 / factor, (mouth.x0 + mouth.x1) / 2 / factor);
            assert_eq!(map[cy * w + cx], 10.0, "clip {index}: mouth centre not weighted");
        }
        assert!(stage(0.0)?.with_mouth_loss_weight(0.5).is_err());
        assert!(stage(0.0)?.with_mouth_loss_weight(f64::NAN).is_err());
        Ok(())
    }

    /// The sample-space loss is the velocity loss of the same step (same
    /// noise level, noise and clip) times sigma^2.
    #[test]
    fn sample_space_loss_is_the_velocity_loss_times_sigma_squared() -> anyhow::Result<()> {
        let value = |st: &mut TeacherStage| -> anyhow::Result<(f32, f32)> {
            st.init()?;
            let (loss, parts) = st.loss(5, &mut 0)?;
            let sigma = parts.iter().find(|(n, _)| *n == "sigma").map(|p| p.1).unwrap_or(f32::NAN);
            Ok((loss.to_scalar::<f32>()?, sigma))
        };
        let (velocity, sigma) = value(&mut stage(0.0)?)?;
        let (sample, sigma_again) = value(&mut stage(0.0)?.with_sample_space_loss(true))?;
        assert_eq!(sigma, sigma_again);
        assert!(sigma > 0.05 && velocity > 0.0, "sigma {sigma}, loss {velocity}");
        let expected = velocity * sigma * sigma;
        assert!((sample - expected).abs() <= 1e-4 * expected, "{sample} vs {expected}");
        Ok(())
    }
}
