//! The resumable step loop shared by every stage: build the stage's
//! modules (which creates its variables), make AdamW over them, restore
//! `<out>/` when resuming, then `loss -> backward -> step`, checkpointing
//! every `save_every` steps and at the end.
//!
//! Two-network stages (DMD's fake score, the GAN's discriminator) declare a
//! [`CriticSpec`]: the runner keeps a second AdamW for it and, before every
//! generator step, runs `updates_per_step` critic updates
//! (`critic_loss -> backward -> critic step`). Both networks and both
//! optimizers are checkpointed together and resume together.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;

use super::checkpoint::{self, TrainState};
use super::optim::{AdamW, AdamWConfig};
use super::params::{ParamStore, WarmStart};
use super::TrainError;

/// A step's loss and its named parts (for logging).
pub type StepLoss = (Tensor, Vec<(&'static str, f32)>);

/// The second network of a two-network stage.
#[derive(Clone)]
pub struct CriticSpec {
    /// Its trainable variables (a handle sharing the stage's store).
    pub params: ParamStore,
    pub optim: AdamWConfig,
    /// Critic updates before each generator step (0 = frozen critic).
    pub updates_per_step: usize,
}

/// One stage of the pipeline.
pub trait Stage {
    /// Stage name (`vae`, `teacher`, ...), recorded in the checkpoint.
    fn name(&self) -> &'static str;
    /// Build the modules once so every trainable variable exists.
    fn init(&mut self) -> Result<(), TrainError>;
    /// The trainable variables.
    fn params(&self) -> &ParamStore;
    /// Loss of one step on data drawn from `*cursor` (advanced as used),
    /// plus named parts for logging.
    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError>;
    /// Warm start from a trained weight file (`--init-from`): the tensors
    /// that match by name and shape ([`ParamStore::load_matching`]), except
    /// the variables named by `skip`.
    fn warm_start(&mut self, file: &std::path::Path, skip: &[String]) -> candle_core::Result<WarmStart> {
        self.params().load_matching(file, skip)
    }
    /// Called before every checkpoint is written: derived tensors that must
    /// travel with the parameters (the VAE's latent statistics).
    fn before_save(&mut self) -> Result<(), TrainError> {
        Ok(())
    }
    /// The critic of a two-network stage (None: single network).
    fn critic(&self) -> Option<CriticSpec> {
        None
    }
    /// Loss of critic update `update` (0-based) before generator step
    /// `step`; only called when [`critic`](Self::critic) is Some.
    fn critic_loss(&mut self, _step: u64, _update: usize, _cursor: &mut u64) -> Result<StepLoss, TrainError> {
        Err(TrainError::Invalid(format!("stage `{}` has no critic", self.name())))
    }
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Total steps to reach (a resumed run continues up to this count).
    pub steps: u64,
    pub resume: bool,
    pub save_every: u64,
    pub seed: u64,
    pub config_name: String,
    pub optim: AdamWConfig,
    /// Draw every step from the same data (smoke tests, overfitting checks).
    pub fixed_data: bool,
    /// Stop (and checkpoint) after the first step that ends past this many
    /// seconds of the run, even before `steps`: time-boxed runs (a lent GPU,
    /// a session's end) that the next run resumes.
    pub max_seconds: Option<f64>,
    /// A fresh run (nothing to resume) starts from the tensors of this
    /// file whose names and shapes match ([`ParamStore::load_matching`]).
    pub init_from: Option<PathBuf>,
    /// Variables whose name contains one of these substrings keep their
    /// initial values in that warm start (`--init-skip`).
    pub init_skip: Vec<String>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub first_step: u64,
    pub last_step: u64,
    pub losses: Vec<(u64, f32)>,
    /// (generator step, critic loss) of every critic update of this run.
    pub critic_losses: Vec<(u64, f32)>,
    pub seconds_per_step: f64,
}

/// Train `stage` per `opts`.
pub fn run(stage: &mut dyn Stage, opts: &RunOptions) -> Result<RunReport, TrainError> {
    stage.init()?;
    let mut opt = AdamW::new(stage.params().named_vars(), opts.optim)?;
    let critic = stage.critic();
    let mut critic_opt = match &critic {
        Some(c) => Some(AdamW::new(c.params.named_vars(), c.optim)?),
        None => None,
    };
    let mut state = TrainState {
        stage: stage.name().to_string(),
        config: opts.config_name.clone(),
        step: 0,
        seed: opts.seed,
        data_cursor: 0,
        optim: opts.optim,
        losses: Vec::new(),
        critic_updates: 0,
    };
    if opts.resume && checkpoint::exists(&opts.out) {
        let saved = checkpoint::load_state(&opts.out)?;
        if saved.stage != state.stage {
            return Err(TrainError::Invalid(format!(
                "{} holds a `{}` checkpoint, not `{}`",
                opts.out.display(),
                saved.stage,
                state.stage
            )));
        }
        checkpoint::restore(&opts.out, stage.params(), &mut opt, &saved)?;
        if let (Some(c), Some(copt)) = (&critic, critic_opt.as_mut()) {
            checkpoint::restore_critic(&opts.out, &c.params, copt, &saved)?;
        }
        state = TrainState { optim: opts.optim, ..saved };
        tracing::info!(step = state.step, out = %opts.out.display(), "resumed");
    } else if let Some(file) = &opts.init_from {
        let warm = stage
            .warm_start(file, &opts.init_skip)
            .map_err(|e| TrainError::Checkpoint { path: file.clone(), msg: e.to_string() })?;
        if warm.loaded == 0 {
            return Err(TrainError::Invalid(format!(
                "--init-from {}: no tensor matches a variable of the `{}` stage by name and shape",
                file.display(),
                stage.name()
            )));
        }
        tracing::info!(
            from = %file.display(),
            loaded = warm.loaded,
            shape_mismatch = warm.shape_mismatch.len(),
            missing = warm.missing,
            unused = warm.unused,
            skipped = warm.skipped,
            "warm start"
        );
    }
    let first_step = state.step;
    let t0 = Instant::now();
    let mut critic_losses = Vec::new();
    while state.step < opts.steps {
        let mut cursor = state.data_cursor;
        if let (Some(c), Some(copt)) = (&critic, critic_opt.as_mut()) {
            for update in 0..c.updates_per_step {
                let (loss, parts) = stage.critic_loss(state.step, update, &mut cursor)?;
                let value = loss.to_scalar::<f32>()?;
                if !value.is_finite() {
                    return Err(TrainError::NonFinite { step: state.step, value });
                }
                let grad_norm = copt.step(&loss.backward()?)?;
                state.critic_updates = copt.steps();
                critic_losses.push((state.step + 1, value));
                tracing::info!(
                    stage = stage.name(),
                    step = state.step + 1,
                    update,
                    critic_loss = value,
                    grad_norm,
                    ?parts,
                    "critic"
                );
            }
        }
        let t_step = Instant::now();
        let (loss, parts) = stage.loss(state.step, &mut cursor)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(TrainError::NonFinite { step: state.step, value });
        }
        let forward_ms = t_step.elapsed().as_millis() as u64;
        let grads = loss.backward()?;
        let backward_ms = t_step.elapsed().as_millis() as u64 - forward_ms;
        let grad_norm = opt.step(&grads)?;
        if !opts.fixed_data {
            state.data_cursor = cursor;
        }
        state.step += 1;
        state.losses.push((state.step, value));
        let keep = state.losses.len().saturating_sub(1000);
        state.losses.drain(..keep);
        tracing::info!(
            stage = stage.name(),
            step = state.step,
            loss = value,
            grad_norm,
            ?parts,
            forward_ms,
            backward_ms,
            "step"
        );
        if opts.save_every > 0 && state.step % opts.save_every == 0 {
            stage.before_save()?;
            save(&opts.out, stage.params(), &opt, critic.as_ref().zip(critic_opt.as_ref()), &state)?;
        }
        if opts.max_seconds.is_some_and(|limit| t0.elapsed().as_secs_f64() >= limit) {
            tracing::info!(step = state.step, target = opts.steps, "time budget spent: stopping early");
            break;
        }
    }
    // A resumed stage that had already reached its steps leaves its
    // checkpoint as it was (rewriting it would recompute what `before_save`
    // measures, e.g. a VAE's latent statistics, and change the file that
    // later stages' caches are keyed to).
    let done = state.step - first_step;
    if done > 0 || !opts.out.join("state.json").exists() {
        stage.before_save()?;
        save(&opts.out, stage.params(), &opt, critic.as_ref().zip(critic_opt.as_ref()), &state)?;
    }
    Ok(RunReport {
        first_step,
        last_step: state.step,
        losses: state.losses.iter().copied().filter(|(s, _)| *s > first_step).collect(),
        critic_losses,
        seconds_per_step: if done > 0 { t0.elapsed().as_secs_f64() / done as f64 } else { 0.0 },
    })
}

fn save(
    dir: &std::path::Path,
    params: &ParamStore,
    opt: &AdamW,
    critic: Option<(&CriticSpec, &AdamW)>,
    state: &TrainState,
) -> Result<(), TrainError> {
    checkpoint::save(dir, params, opt, critic.map(|(c, o)| (&c.params, o)), state)
}
