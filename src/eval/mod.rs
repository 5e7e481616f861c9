//! `streamavatar eval`: evaluation of a generator (config + weights) on
//! held-out synth identities and sentences (issue 5, item 5).
//!
//! Every metric is measured from pixels of the generated frames, using only
//! what the evaluation knows about the *reference* identity (the synth's
//! face layout at rest) and the driving audio's ground truth:
//!
//! * [`face_layout`] — mouth / face / head regions of a held-out identity at
//!   rest, in pixels; [`face_tracker`] — the translation of the face in a
//!   frame relative to the reference (coarse-to-fine block matching), so the
//!   regions follow the head;
//! * [`lip_sync`] — mouth openness measured on frames (colour change of the
//!   tracked mouth box against the closed mouth of the reference) and its
//!   correlation with the synth's ground-truth openness;
//! * [`listening`] — head-region motion energy while the partner talks,
//!   against the same model with the listen audio replaced by silence;
//! * [`identity_drift`] — PSNR of the tracked face (mouth excluded,
//!   block-averaged) against the reference, per window of the stream, and
//!   its drift (first window minus last);
//! * [`probe`] — the per-frame measurements of one stream, in one pass;
//! * [`ground_truth`] — the synth renderer as a perfect model (validates the
//!   metrics); [`vae_roundtrip`] — the ground truth encoded and decoded by a
//!   VAE (the ceiling of a VAE); [`generator_model`] — a
//!   [`crate::generator::StreamingGenerator`];
//! * [`protocol`] — the evaluation run (identities, streams, aggregation);
//! * [`ablation`] — the paper's ablation rows; [`thresholds`] — pass/fail;
//!   [`report`] — the JSON report and the markdown tables; [`command`] —
//!   the whole `streamavatar eval` run.

pub mod ablation;
pub mod command;
pub mod face_layout;
pub mod face_tracker;
pub mod generator_model;
pub mod ground_truth;
pub mod identity_drift;
pub mod lip_sync;
pub mod listening;
pub mod probe;
pub mod protocol;
pub mod report;
pub mod thresholds;
pub mod vae_roundtrip;

pub use ablation::{AblationRow, AblationWeights};
pub use command::{run_eval, EvalRequest, EvalTarget};
pub use generator_model::{EvalWeights, GeneratorModel};
pub use ground_truth::GroundTruthModel;
pub use protocol::{evaluate, prepare_scripts, EvalModel, EvalSpec, ListenAudio, ModelMetrics};
pub use report::{EvalReport, RowReport};
pub use thresholds::{Thresholds, Verdict};

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Synth(#[from] crate::synth::SynthError),
    #[error(transparent)]
    Generator(#[from] crate::generator::GeneratorError),
    #[error("invalid evaluation request: {0}")]
    Invalid(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}
