//! Stage 4: distribution-matching distillation (DMD, Yin et al. 2024 /
//! DMD2) of the causal student with student forcing, down to the config's
//! few-step schedule (`stream.timesteps`, `shift`; 3 steps in `mini`).
//!
//! Networks:
//! * **student** (trainable) — initialised from the stage-3 (ODE init)
//!   checkpoint; generates each clip with [`student_rollout`]: reference
//!   sink, RAPR positions, KV cache written at the last denoising step,
//!   exactly the inference path (`WanDit::forward_chunk` + `KvCache`);
//! * **real score** (frozen) — the bidirectional teacher of stage 2;
//! * **fake score** (trainable critic) — a copy of the teacher trained by
//!   flow matching on the student's samples (`updates_per_step` fake-score
//!   updates before every generator step: DMD2's two-time-scale rule).
//!
//! Generator loss: the student's sample `x0` (frames 1.., per chunk the x0
//! predicted at a random exit step, Self-Forcing) is re-noised,
//! `x_t = (1 - s) x0 + s eps`, `s = shift(u)`, `u ~ U[t_min, t_max]`; both
//! scores predict `x0_real`, `x0_fake` from `x_t` (bidirectional, reference
//! clean at t = 0, the clip's talk / listen audio). The DMD gradient
//! `g = (x0_fake - x0_real) / mean|x0 - x0_real|` (proportional to
//! `s_fake - s_real` in score terms, DMD's per-sample normalisation) is
//! applied with the stop-gradient target trick
//! `L = 0.5 * mean((x0 - sg(x0 - g))^2)`, whose gradient w.r.t. `x0` is `g`.
//! The real score runs without classifier-free guidance: the teacher was
//! never trained with dropped conditions, so it has no unconditional mode.
//!
//! Fake-score loss: flow matching on detached student samples, same noise
//! levels: `|| v_fake(x_t) - (eps - x0) ||^2` on frames 1...
//!
//! **Why DMD and not SiD** (the paper uses SiD): DMD's generator gradient
//! needs the two score networks only *forward*, without gradient, and one
//! backward through the student; SiD's generator loss differentiates
//! through both score networks w.r.t. their input, which roughly triples
//! the backward cost per step. On the 2-core CPU this pipeline targets,
//! that is the difference between feasible and not. DMD with a
//! flow-matching fake score is also what Self-Forcing (the student-forcing
//! recipe StreamAvatar builds on) uses.
//!
//! Truncation: gradients flow through the exit step of each chunk only;
//! earlier denoising steps and the KV cache of earlier chunks are detached
//! (see [`super::rollout`]).

use std::path::Path;

use candle_core::{DType, Tensor};
use rand::Rng;

use crate::config::ModelConfig;
use crate::model::sampler::{predict_x0, renoise, NoiseSource};

use super::optim::AdamWConfig;
use super::params::ParamStore;
use super::rollout::{step_rng, student_rollout, uniform_sigma, ConditionedDit, ExitStep};
use super::runner::{CriticSpec, Stage, StepLoss};
use super::teacher_stage::{dit_modules, TeacherSample, TeacherStage};
use super::TrainError;

/// Settings of stage 4.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DmdOptions {
    /// Fake-score updates before each generator step.
    pub critic_updates: usize,
    /// Optimizer of the fake score.
    pub critic_optim: AdamWConfig,
    /// Range of `u` for the re-noising level `s = shift(u)`.
    pub t_min: f64,
    pub t_max: f64,
    /// Random exit step per generator step (Self-Forcing); false = always
    /// the last step.
    pub random_exit: bool,
}

impl Default for DmdOptions {
    fn default() -> Self {
        Self {
            critic_updates: 5,
            critic_optim: AdamWConfig { lr: 1e-4, ..Default::default() },
            t_min: 0.02,
            t_max: 0.98,
            random_exit: true,
        }
    }
}

/// Stage 4 state.
pub struct DmdStage {
    /// The frozen real score (and the data / frozen encoders).
    teacher: TeacherStage,
    student: ParamStore,
    fake: ParamStore,
    opts: DmdOptions,
    seed: u64,
}

/// What one DMD gradient evaluation found.
struct DmdTarget {
    target: Tensor,
    grad_mean_abs: f32,
    sigma: f64,
}

impl DmdStage {
    /// `teacher`: a teacher stage whose store holds the trained teacher;
    /// `student_init`: the ODE-init `params.safetensors` (None: the student
    /// starts as a copy of the teacher).
    pub fn new(
        teacher: TeacherStage,
        student_init: Option<&Path>,
        opts: DmdOptions,
        seed: u64,
    ) -> Result<Self, TrainError> {
        if !(0.0..=1.0).contains(&opts.t_min) || !(opts.t_min..=1.0).contains(&opts.t_max) {
            return Err(TrainError::Invalid(format!("DMD needs 0 <= t_min <= t_max <= 1, got {opts:?}")));
        }
        teacher.frozen_modules()?;
        let student = teacher.store().duplicate(seed)?;
        if let Some(p) = student_init {
            student.load(p).map_err(|e| TrainError::Checkpoint { path: p.to_path_buf(), msg: e.to_string() })?;
        }
        let fake = teacher.store().duplicate(seed ^ 0xFA4E)?;
        Ok(Self { teacher, student, fake, opts, seed })
    }

    /// The student's variables.
    pub fn student(&self) -> &ParamStore {
        &self.student
    }

    /// The fake score's variables.
    pub fn fake_score(&self) -> &ParamStore {
        &self.fake
    }

    fn exit_step(&self, rng: &mut impl Rng) -> ExitStep {
        let steps = self.teacher.config().stream.timesteps.len().max(1);
        if self.opts.random_exit {
            ExitStep::Index(rng.random_range(0..steps))
        } else {
            ExitStep::Last
        }
    }

    /// The DMD target for the detached student sample `x0`.
    fn dmd_target(
        &self,
        cfg: &ModelConfig,
        sample: &TeacherSample,
        reference: &Tensor,
        x0: &Tensor,
        sigma: f64,
        noise: &mut NoiseSource,
    ) -> Result<DmdTarget, TrainError> {
        let eps = noise.sample(x0.shape().clone(), DType::F32, x0.device())?;
        let x_t = renoise(x0, &eps, sigma)?;
        let real = ConditionedDit::new(cfg, self.teacher.store().frozen_var_builder(), sample)?;
        let fake = ConditionedDit::new(cfg, self.fake.frozen_var_builder(), sample)?;
        let x0_real = predict_x0(&x_t, &real.velocity(reference, &x_t, sigma)?, sigma)?;
        let x0_fake = predict_x0(&x_t, &fake.velocity(reference, &x_t, sigma)?, sigma)?;
        let normalizer = (x0 - &x0_real)?.abs()?.mean_all()?.to_scalar::<f32>()?.max(1e-6);
        let grad = ((x0_fake - x0_real)? / normalizer as f64)?;
        let grad_mean_abs = grad.abs()?.mean_all()?.to_scalar::<f32>()?;
        if !grad_mean_abs.is_finite() {
            return Err(TrainError::Invalid(format!("DMD gradient is not finite (normalizer {normalizer})")));
        }
        Ok(DmdTarget { target: (x0 - grad)?.detach(), grad_mean_abs, sigma })
    }
}

fn reference_and_frames(sample: &TeacherSample) -> Result<(Tensor, usize), TrainError> {
    let frames = sample.x0.dim(2)?;
    if frames < 2 {
        return Err(TrainError::Invalid("DMD clips need >= 1 latent frame after the reference".into()));
    }
    Ok((sample.x0.narrow(2, 0, 1)?, frames))
}

impl Stage for DmdStage {
    fn name(&self) -> &'static str {
        "dmd"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        let cfg = self.teacher.config();
        dit_modules(cfg, self.student.var_builder())?;
        dit_modules(cfg, self.fake.var_builder())?;
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.student
    }

    fn critic(&self) -> Option<CriticSpec> {
        Some(CriticSpec {
            params: self.fake.clone(),
            optim: self.opts.critic_optim,
            updates_per_step: self.opts.critic_updates,
        })
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let sample = self.teacher.sample(*cursor)?;
        *cursor += 1;
        let cfg = self.teacher.config().clone();
        let (reference, frames) = reference_and_frames(&sample)?;
        let mut rng = step_rng(self.seed, step * 64 + 63);
        let exit = self.exit_step(&mut rng);
        let sigma = uniform_sigma(&mut rng, self.opts.t_min, self.opts.t_max, cfg.stream.shift);
        let mut noise = NoiseSource::new(self.seed ^ (step * 64 + 63).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let frozen = ConditionedDit::new(&cfg, self.student.frozen_var_builder(), &sample)?;
        let live = ConditionedDit::new(&cfg, self.student.var_builder(), &sample)?;
        let x0 = student_rollout(&cfg, &frozen, Some(&live), &reference, frames, exit, &mut noise)?;
        let t = self.dmd_target(&cfg, &sample, &reference, &x0.detach(), sigma, &mut noise)?;
        let loss = ((&x0 - &t.target)?.sqr()?.mean_all()? * 0.5)?;
        let value = loss.to_scalar::<f32>().unwrap_or(f32::NAN);
        let exit = match exit {
            ExitStep::Index(i) => i as f32,
            ExitStep::Last => (cfg.stream.timesteps.len() - 1) as f32,
        };
        Ok((loss, vec![("dmd", value), ("grad_mean_abs", t.grad_mean_abs), ("sigma", t.sigma as f32), ("exit", exit)]))
    }

    fn critic_loss(&mut self, step: u64, update: usize, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let sample = self.teacher.sample(*cursor)?;
        *cursor += 1;
        let cfg = self.teacher.config().clone();
        let (reference, frames) = reference_and_frames(&sample)?;
        let salt = step * 64 + (update as u64 % 63);
        let mut rng = step_rng(self.seed, salt);
        let exit = self.exit_step(&mut rng);
        let sigma = uniform_sigma(&mut rng, self.opts.t_min, self.opts.t_max, cfg.stream.shift);
        let mut noise = NoiseSource::new(self.seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let student = ConditionedDit::new(&cfg, self.student.frozen_var_builder(), &sample)?;
        let x0 = student_rollout(&cfg, &student, None, &reference, frames, exit, &mut noise)?;
        let eps = noise.sample(x0.shape().clone(), DType::F32, x0.device())?;
        let x_t = renoise(&x0, &eps, sigma)?;
        let fake = ConditionedDit::new(&cfg, self.fake.var_builder(), &sample)?;
        let v = fake.velocity(&reference, &x_t, sigma)?;
        let loss = (v - (eps - x0)?)?.sqr()?.mean_all()?;
        let value = loss.to_scalar::<f32>().unwrap_or(f32::NAN);
        Ok((loss, vec![("fake_fm", value), ("sigma", sigma as f32)]))
    }
}
