//! The training pipeline for the `mini` model (issue 5): StreamAvatar's
//! recipe at small scale, stage by stage, every stage resumable.
//!
//! * [`params`] — trainable parameters: a `VarMap` filled with seeded
//!   PyTorch-like initial values, built into the real model modules through
//!   a `VarBuilder` (same names as inference checkpoints).
//! * [`optim`] — AdamW whose moments can be saved and restored.
//! * [`checkpoint`] — `params.safetensors` + `optim.safetensors` +
//!   `state.json` (step, data cursor, rng seed, losses) per stage folder.
//! * [`data`] — clips rendered in-process by `crate::synth` into tensors
//!   (video in [-1, 1], talk / listen 16 kHz audio, per-frame masks).
//! * [`audio_encoder_stage`] — stage 0: the wav2vec2 pretrained as a phone
//!   recogniser on the synth talk tracks (espeak timing), then frozen.
//! * [`audio_probe`] — does the frozen audio encoder carry the mouth? A
//!   ridge read-out of mouth openness from its features on held-out clips.
//! * [`bench`] — per-chunk inference cost of a config on this CPU (the
//!   measurement behind the `mini` preset).
//! * [`vae_stage`] — stage 1: the causal VAE (L1 + L2 + KL + edge loss).
//! * [`sample_store`] — prepared DiT samples (latents + audio features) of
//!   a finite clip pool, in memory and in a keyed cache folder.
//! * [`latent_readout`] — latent experts: small frozen read-outs of one
//!   number per latent frame from latents on a grid, and their fitting stage.
//! * [`lip_expert`] — the read-out of mouth openness, fit on the pool; its
//!   error is the teacher's lip-sync loss.
//! * [`head_expert`] — the read-out of head pitch (nods); its error is the
//!   teacher's head-motion (listening) loss.
//! * [`teacher_stage`] — stage 2: the bidirectional flow-matching teacher
//!   with talk / listen audio attention.
//! * [`teacher_check`] — what a teacher checkpoint generates on unseen
//!   clips, scored against the real clip, a still reference and the VAE.
//! * [`ode_init_stage`] — stage 3: ODE initialisation of the causal student
//!   from teacher trajectories.
//! * [`rollout`] — student forcing: the causal student generates clips
//!   chunk by chunk through the inference path (KV cache, reference sink,
//!   RAPR, cache written at the last step).
//! * [`dmd_stage`] — stage 4: DMD distillation of the student (frozen
//!   teacher = real score, trained fake score).
//! * [`discriminator`] — the consistency-aware discriminator (teacher
//!   backbone, Q-Former heads, local and global branches).
//! * [`gan_stage`] — stage 5: adversarial refinement (relativistic loss,
//!   approximate R1 / R2).
//! * [`runner`] — the resumable step loop shared by every stage (with a
//!   second network and optimizer for two-network stages).
//! * [`export`] — trained checkpoints -> the inference weight files
//!   (`weights/mini/`).

pub mod audio_encoder_stage;
pub mod audio_probe;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod discriminator;
pub mod dmd_stage;
pub mod export;
pub mod frame_quality;
pub mod gan_stage;
pub mod head_expert;
pub mod latent_readout;
pub mod latent_stats;
pub mod latent_widening;
pub mod light_decoder_stage;
pub mod lip_expert;
pub mod listen_contrast;
pub mod ode_init_stage;
pub mod optim;
pub mod params;
pub mod recon;
pub mod rollout;
pub mod runner;
pub mod sample_store;
pub mod teacher_check;
pub mod teacher_stage;
pub mod vae_stage;

/// Errors of the training pipeline.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Vae(#[from] crate::model::vae::VaeError),
    #[error(transparent)]
    Dit(#[from] crate::model::dit::DitError),
    #[error(transparent)]
    Audio(#[from] crate::model::audio::AudioError),
    #[error(transparent)]
    Synth(#[from] crate::synth::SynthError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: std::path::PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error("loss became non-finite ({value}) at step {step}")]
    NonFinite { step: u64, value: f32 },
}
