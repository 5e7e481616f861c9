//! Stage 3: ODE initialisation of the causal student (StreamAvatar /
//! CausVid / Self-Forcing). The frozen bidirectional teacher integrates the
//! flow ODE from noise with `substeps` Euler steps per student interval and
//! the states at the student's sigmas `{x_t^n}` are recorded together with
//! the teacher's end point `x^0`; the student — same DiT, initialised from
//! the teacher, with block-causal attention (reference frame, then chunks of
//! `chunk_frames`) — regresses `x^0` from each `x_t^n`:
//! `loss = || (x_t^n - s_n v_student(x_t^n, s_n)) - x^0 ||^2` on frames 1...

use candle_core::{DType, Tensor};

use crate::model::dit::{AttentionMask, AudioTokens};
use crate::model::sampler::{FlowMatchSchedule, NoiseSource};

use super::params::ParamStore;
use super::runner::{Stage, StepLoss};
use super::teacher_stage::{reference_clean_timesteps, TeacherStage};
use super::TrainError;

/// Stage 3 state: the frozen teacher (with its data preparation) and the
/// student's variables.
pub struct OdeInitStage {
    teacher: TeacherStage,
    student: ParamStore,
    substeps: usize,
    seed: u64,
}

impl OdeInitStage {
    /// `teacher`: a teacher stage whose store holds the trained teacher
    /// (e.g. loaded with `store().load(..)`); the student starts as a copy.
    pub fn new(teacher: TeacherStage, substeps: usize, seed: u64) -> Result<Self, TrainError> {
        teacher.frozen_modules()?;
        let student = ParamStore::new(seed, teacher.store().device());
        for (name, var) in teacher.store().named_vars() {
            student.insert(&name, var.as_tensor())?;
        }
        Ok(Self { teacher, student, substeps: substeps.max(1), seed })
    }
}

impl Stage for OdeInitStage {
    fn name(&self) -> &'static str {
        "ode_init"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        let vb = self.student.var_builder();
        let cfg = self.teacher.config();
        crate::model::dit::WanDit::new(&cfg.dit, vb.clone())?;
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.student
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let dev = self.student.device().clone();
        let sample = self.teacher.sample(*cursor)?;
        *cursor += 1;
        let cfg = self.teacher.config().clone();
        let sched = FlowMatchSchedule::from_config(&cfg.stream).map_err(|e| TrainError::Invalid(e.to_string()))?;
        let sigmas: Vec<f64> = sched.steps().iter().map(|s| s.sigma).collect();
        let x0 = &sample.x0;
        let f = x0.dim(2)?;
        let reference = x0.narrow(2, 0, 1)?;
        let mut noise = NoiseSource::new(self.seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let shape = reference.shape().dims().to_vec();
        let eps = noise.sample((shape[0], shape[1], f - 1, shape[3], shape[4]), DType::F32, &dev)?;

        // Teacher trajectory (no gradients); sigma_0 = 1 after the shift
        // warp: pure noise.
        let mut grid = sigmas.clone();
        grid.push(0.0);
        let mut recorded = Vec::with_capacity(sigmas.len());
        let target =
            self.teacher.integrate_flow(&sample, &eps, &grid, self.substeps, |_, x| recorded.push(x.clone()))?;

        // Student regression from one recorded state.
        let n = (step as usize) % sigmas.len();
        let sigma = sigmas[n];
        let xt_n = &recorded[n];
        let vb = self.student.var_builder();
        let dit = crate::model::dit::WanDit::new(&cfg.dit, vb.clone())?;
        let proj = crate::model::audio::AudioProjection::new(
            &cfg.audio,
            cfg.dit.hidden_size(),
            cfg.dit.audio_tokens_per_frame,
            vb.pp("audio_proj"),
        )?;
        let prompt = vb.get((1, cfg.dit.text_len, cfg.dit.text_dim), "prompt_embeds")?;
        let audio = AudioTokens {
            talk: proj.forward_clip(&sample.talk_features)?,
            listen: proj.forward_clip(&sample.listen_features)?,
        };
        let text = dit.text_context(&prompt)?;
        let xt = Tensor::cat(&[&reference, xt_n], 2)?;
        let ts = reference_clean_timesteps(f, (sigma * 1000.0) as f32, &dev)?;
        let mask = AttentionMask::BlockCausal { chunk_frames: cfg.stream.chunk_frames };
        let v = dit.forward(&xt, &ts, &text, Some(&audio), mask)?.narrow(2, 1, f - 1)?;
        let x0_pred = (xt_n - (v * sigma)?)?;
        let loss = (x0_pred - target)?.sqr()?.mean_all()?;
        let value = loss.to_scalar::<f32>().unwrap_or(f32::NAN);
        Ok((loss, vec![("x0_mse", value), ("sigma", sigma as f32)]))
    }
}
