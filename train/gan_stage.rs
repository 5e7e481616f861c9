//! Stage 5: adversarial refinement of the distilled student with the
//! consistency-aware discriminator ([`super::discriminator`]).
//!
//! * **generator** (trainable) — the student, initialised from the stage-4
//!   (DMD) checkpoint; it generates each clip with the inference path
//!   ([`student_rollout`]: reference sink, RAPR, cache written at the last
//!   step) and the gradient flows through the last denoising step of each
//!   chunk (the sample inference outputs; earlier steps and the cache are
//!   detached);
//! * **discriminator** (trainable critic) — Q-Former heads on a DiT backbone
//!   initialised from the teacher; the backbone is frozen by default
//!   (`train_backbone` trains it too, as `backbone.*` in the critic store).
//!
//! Data: real = the clip's VAE latents (frozen VAE, encoded once per clip
//! without gradient), fake = the student's rollout conditioned on the same
//! clip's reference frame and talk / listen audio. Both get the same clean
//! reference frame 0 and frames 1.. noised to the same level with the same
//! noise: `x_s = (1 - s) x + s eps`, `s ~ U[d_sigma_min, d_sigma_max]`.
//!
//! Losses (relativistic pairing, R3GAN):
//! * `L_D = softplus(-(D(real) - D(fake))) + r1 * R1 + r2 * R2`, with the
//!   finite-difference penalties `R1 = ||D(real_s) - D(real_s + sr eps')||^2`
//!   and `R2` the same on fake (APT's approximated R1 / R2; no
//!   double backward needed), averaged over every local and global logit;
//! * `L_G = softplus(-(D(fake) - D(real)))` through the frozen (detached)
//!   discriminator into the student's samples.
//!
//! The four discriminator inputs of an update (real, fake and their
//! perturbed copies) run as one batch through the backbone.

use std::path::Path;

use candle_core::{DType, Tensor};
use rand::Rng;

use crate::model::sampler::{renoise, NoiseSource};

use super::discriminator::{
    logit_change, relativistic_loss, Discriminator, DiscriminatorConfig, DiscriminatorHeads, DiscriminatorLogits,
};
use super::optim::AdamWConfig;
use super::params::ParamStore;
use super::rollout::{step_rng, student_rollout, ConditionedDit, ExitStep};
use super::runner::{CriticSpec, Stage, StepLoss};
use super::teacher_stage::{dit_modules, TeacherSample, TeacherStage};
use super::TrainError;

/// Settings of stage 5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GanOptions {
    pub disc: DiscriminatorConfig,
    /// Discriminator updates before each generator step.
    pub critic_updates: usize,
    /// Optimizer of the discriminator.
    pub critic_optim: AdamWConfig,
    /// Weights of the R1 (real) and R2 (fake) penalties.
    pub r1: f64,
    pub r2: f64,
    /// Perturbation scale of the finite-difference penalties.
    pub penalty_sigma: f64,
    /// Noise level range of the discriminator's inputs.
    pub d_sigma_min: f64,
    pub d_sigma_max: f64,
}

impl Default for GanOptions {
    fn default() -> Self {
        Self {
            disc: DiscriminatorConfig::default(),
            critic_updates: 1,
            critic_optim: AdamWConfig { lr: 1e-4, beta1: 0.0, beta2: 0.99, ..Default::default() },
            r1: 100.0,
            r2: 100.0,
            penalty_sigma: 0.01,
            d_sigma_min: 0.05,
            d_sigma_max: 0.5,
        }
    }
}

/// Stage 5 state.
pub struct GanStage {
    teacher: TeacherStage,
    student: ParamStore,
    disc: ParamStore,
    opts: GanOptions,
    seed: u64,
}

impl GanStage {
    /// `teacher`: the trained teacher (backbone initialisation, data);
    /// `student_init`: the DMD `params.safetensors` (None: a copy of the
    /// teacher).
    pub fn new(
        teacher: TeacherStage,
        student_init: Option<&Path>,
        opts: GanOptions,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let range_ok = 0.0 <= opts.d_sigma_min && opts.d_sigma_min <= opts.d_sigma_max && opts.d_sigma_max <= 1.0;
        if !range_ok || opts.penalty_sigma <= 0.0 || opts.r1 < 0.0 || opts.r2 < 0.0 {
            return Err(TrainError::Invalid(format!("bad GAN options {opts:?}")));
        }
        teacher.frozen_modules()?;
        let student = teacher.store().duplicate(seed)?;
        if let Some(p) = student_init {
            student.load(p).map_err(|e| TrainError::Checkpoint { path: p.to_path_buf(), msg: e.to_string() })?;
        }
        let disc = ParamStore::new(seed ^ 0xD15C, teacher.store().device());
        if opts.disc.train_backbone {
            teacher.store().copy_into(&disc, "backbone.")?;
        }
        Ok(Self { teacher, student, disc, opts, seed })
    }

    pub fn student(&self) -> &ParamStore {
        &self.student
    }

    pub fn discriminator_store(&self) -> &ParamStore {
        &self.disc
    }

    /// The discriminator conditioned on `sample`; `trainable` builds it on
    /// tracked variables (discriminator update), else detached (generator
    /// update).
    fn discriminator(&self, sample: &TeacherSample, trainable: bool) -> Result<Discriminator, TrainError> {
        let cfg = self.teacher.config();
        let store_vb = if trainable { self.disc.var_builder() } else { self.disc.frozen_var_builder() };
        let backbone_vb = if self.opts.disc.train_backbone {
            store_vb.pp("backbone")
        } else {
            self.teacher.store().frozen_var_builder()
        };
        Discriminator::new(cfg, &self.opts.disc, backbone_vb, store_vb.pp("heads"), sample)
    }

    /// Real and fake clips (`[1, z, F, h, w]`, frame 0 = the clean
    /// reference) noised to one level with one noise draw.
    fn noised_pair(
        &self,
        sample: &TeacherSample,
        fake: &Tensor,
        rng: &mut impl Rng,
        noise: &mut NoiseSource,
    ) -> Result<(Tensor, Tensor, f64), TrainError> {
        let f = sample.x0.dim(2)?;
        let reference = sample.x0.narrow(2, 0, 1)?;
        let real = sample.x0.narrow(2, 1, f - 1)?;
        let (lo, hi) = (self.opts.d_sigma_min, self.opts.d_sigma_max);
        let sigma = if hi > lo { rng.random_range(lo..hi) } else { lo };
        let eps = noise.sample(real.shape().clone(), DType::F32, real.device())?;
        let real = Tensor::cat(&[&reference, &renoise(&real, &eps, sigma)?], 2)?;
        let fake = Tensor::cat(&[&reference, &renoise(fake, &eps, sigma)?], 2)?;
        Ok((real, fake, sigma))
    }

    /// Add `penalty_sigma * eps'` to frames 1.. of `x`.
    fn perturb(&self, x: &Tensor, noise: &mut NoiseSource) -> Result<Tensor, TrainError> {
        let f = x.dim(2)?;
        let rest = x.narrow(2, 1, f - 1)?;
        let eps = noise.sample(rest.shape().clone(), DType::F32, rest.device())?;
        Ok(Tensor::cat(&[&x.narrow(2, 0, 1)?, &(rest + (eps * self.opts.penalty_sigma)?)?], 2)?)
    }

    fn rollout(&self, sample: &TeacherSample, with_grad: bool, noise: &mut NoiseSource) -> Result<Tensor, TrainError> {
        let cfg = self.teacher.config();
        let f = sample.x0.dim(2)?;
        if f < 2 {
            return Err(TrainError::Invalid("GAN clips need >= 1 latent frame after the reference".into()));
        }
        let reference = sample.x0.narrow(2, 0, 1)?;
        let frozen = ConditionedDit::new(cfg, self.student.frozen_var_builder(), sample)?;
        let live = if with_grad { Some(ConditionedDit::new(cfg, self.student.var_builder(), sample)?) } else { None };
        student_rollout(cfg, &frozen, live.as_ref(), &reference, f, ExitStep::Last, noise)
    }
}

fn mean_gap(a: &DiscriminatorLogits, b: &DiscriminatorLogits) -> f32 {
    (&a.local - &b.local).and_then(|d| d.mean_all()).and_then(|m| m.to_scalar::<f32>()).unwrap_or(f32::NAN)
}

impl Stage for GanStage {
    fn name(&self) -> &'static str {
        "gan"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        let cfg = self.teacher.config();
        dit_modules(cfg, self.student.var_builder())?;
        DiscriminatorHeads::new(&self.opts.disc, &cfg.dit, self.disc.var_builder().pp("heads"))?;
        if self.opts.disc.train_backbone {
            dit_modules(cfg, self.disc.var_builder().pp("backbone"))?;
        }
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.student
    }

    fn critic(&self) -> Option<CriticSpec> {
        Some(CriticSpec {
            params: self.disc.clone(),
            optim: self.opts.critic_optim,
            updates_per_step: self.opts.critic_updates,
        })
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let sample = self.teacher.sample(*cursor)?;
        *cursor += 1;
        let salt = step * 64 + 63;
        let mut rng = step_rng(self.seed, salt);
        let mut noise = NoiseSource::new(self.seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let fake = self.rollout(&sample, true, &mut noise)?;
        let (real, fake, sigma) = self.noised_pair(&sample, &fake, &mut rng, &mut noise)?;
        let d = self.discriminator(&sample, false)?;
        let logits = d.forward(&Tensor::cat(&[&real, &fake], 0)?, sigma)?;
        let (d_real, d_fake) = (logits.narrow(0, 1)?, logits.narrow(1, 1)?);
        let loss = relativistic_loss(&d_fake, &d_real)?;
        let value = loss.to_scalar::<f32>().unwrap_or(f32::NAN);
        Ok((loss, vec![("g_adv", value), ("fake_minus_real", mean_gap(&d_fake, &d_real)), ("sigma", sigma as f32)]))
    }

    fn critic_loss(&mut self, step: u64, update: usize, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let sample = self.teacher.sample(*cursor)?;
        *cursor += 1;
        let salt = step * 64 + (update as u64 % 63);
        let mut rng = step_rng(self.seed, salt);
        let mut noise = NoiseSource::new(self.seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let fake = self.rollout(&sample, false, &mut noise)?;
        let (real, fake, sigma) = self.noised_pair(&sample, &fake, &mut rng, &mut noise)?;
        let real_p = self.perturb(&real, &mut noise)?;
        let fake_p = self.perturb(&fake, &mut noise)?;
        let d = self.discriminator(&sample, true)?;
        let logits = d.forward(&Tensor::cat(&[&real, &fake, &real_p, &fake_p], 0)?, sigma)?;
        let part = |i| logits.narrow(i, 1);
        let (d_real, d_fake, d_real_p, d_fake_p) = (part(0)?, part(1)?, part(2)?, part(3)?);
        let adv = relativistic_loss(&d_real, &d_fake)?;
        let r1 = logit_change(&d_real, &d_real_p)?;
        let r2 = logit_change(&d_fake, &d_fake_p)?;
        let loss = ((&adv + (&r1 * self.opts.r1)?)? + (&r2 * self.opts.r2)?)?;
        let s = |t: &Tensor| t.to_scalar::<f32>().unwrap_or(f32::NAN);
        Ok((
            loss,
            vec![
                ("d_adv", s(&adv)),
                ("r1", s(&r1)),
                ("r2", s(&r2)),
                ("real_minus_fake", mean_gap(&d_real, &d_fake)),
                ("sigma", sigma as f32),
            ],
        ))
    }
}
