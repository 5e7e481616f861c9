//! The evaluation protocol: which held-out clips, which streams are
//! generated, and how per-frame measurements become the model's metrics.
//!
//! Per held-out identity `k` (ids from [`HELDOUT_IDENTITY_START`]), one
//! conversation of `seconds` seconds with held-out sentences
//! (`synth::script_clip`, seed `seed + k`) drives two streams from the
//! identity's neutral reference image:
//!
//! 1. the evaluated stream: the avatar's talk track and the partner's
//!    listen track, all `seconds` (5 minutes by default);
//! 2. the silent-listen baseline: the same talk track, silence on the
//!    listen branch, the first `baseline_seconds`.
//!
//! Lip sync is scored on stream 1 against the ground-truth openness;
//! listening motion compares streams 1 and 2 on the listening frames of the
//! first `baseline_seconds`; identity drift uses stream 1 in windows of
//! `window_s`. Results pool over identities (mean correlation, pooled
//! motion energy, per-window PSNR averaged across identities).

use std::time::Instant;

use serde::Serialize;

use super::face_layout::FaceLayout;
use super::identity_drift::{drift, DriftResult};
use super::lip_sync::{lip_sync, LipSyncResult};
use super::listening::{listening_frames, ListeningResult, ListeningSums};
use super::probe::StreamProbe;
use super::EvalError;
use crate::media::frame::RgbFrame;
use crate::synth::motion::{BehaviourState, FPS};
use crate::synth::{script_clip, ClipScript, ClipSpec, HELDOUT_IDENTITY_END, HELDOUT_IDENTITY_START};

/// What the listen branch hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAudio {
    /// The partner's speech of the conversation.
    Partner,
    /// Silence (the silent-listen baseline).
    Silence,
}

/// A model under evaluation: turns a scripted conversation into frames.
pub trait EvalModel {
    /// One line saying what this is (config, weights, toggles).
    fn describe(&self) -> String;
    /// Generate the first `n_frames` frames (24 fps) of `script`'s
    /// conversation, starting from `script.reference_frame()`, driven by its
    /// talk track and `listen`, and hand each frame to `sink` in order.
    fn generate(
        &mut self,
        script: &ClipScript,
        listen: ListenAudio,
        n_frames: usize,
        sink: &mut dyn FnMut(&RgbFrame) -> Result<(), EvalError>,
    ) -> Result<(), EvalError>;
}

/// What to evaluate on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSpec {
    /// Frame side (square frames; the model's video size).
    pub size: usize,
    /// Number of held-out identities.
    pub identities: usize,
    /// Offset of the first identity after [`HELDOUT_IDENTITY_START`].
    pub first_identity: u64,
    /// Length of each evaluated stream.
    pub seconds: f64,
    /// Length of the silent-listen baseline stream (<= `seconds`).
    pub baseline_seconds: f64,
    /// Identity-drift window.
    pub window_s: f64,
    /// Conversation seed of identity k is `seed + k`; also the generator's noise seed.
    pub seed: u64,
    /// Lip-sync lag search, frames each way.
    pub max_lag_frames: usize,
    /// Listening frames extend this far past the partner's turn.
    pub listen_tail_s: f64,
}

impl Default for EvalSpec {
    /// The full evaluation: 2 identities, 5-minute streams, 60 s baseline, 60 s windows.
    fn default() -> Self {
        Self {
            size: 128,
            identities: 2,
            first_identity: 0,
            seconds: 300.0,
            baseline_seconds: 60.0,
            window_s: 60.0,
            seed: 0,
            max_lag_frames: 2,
            listen_tail_s: 1.0,
        }
    }
}

impl EvalSpec {
    pub fn validate(&self) -> Result<(), EvalError> {
        let bad = |m: String| Err(EvalError::Invalid(m));
        if self.identities == 0 {
            return bad("at least one identity is needed".into());
        }
        if HELDOUT_IDENTITY_START + self.first_identity + self.identities as u64 > HELDOUT_IDENTITY_END {
            return bad("identities run past the held-out range".into());
        }
        if !(self.seconds.is_finite() && self.seconds >= 2.0 && self.seconds <= crate::synth::clip::MAX_SECONDS) {
            return bad(format!(
                "stream length {} s must be in [2, {}]",
                self.seconds,
                crate::synth::clip::MAX_SECONDS
            ));
        }
        if !(self.baseline_seconds.is_finite() && self.baseline_seconds >= 1.0 && self.baseline_seconds <= self.seconds)
        {
            return bad(format!("baseline length {} s must be in [1, {}]", self.baseline_seconds, self.seconds));
        }
        if !(self.window_s.is_finite() && self.window_s >= 1.0 / FPS) {
            return bad(format!("drift window {} s must be at least one frame", self.window_s));
        }
        if !(self.listen_tail_s.is_finite() && self.listen_tail_s >= 0.0) {
            return bad(format!("listening tail {} s must be >= 0", self.listen_tail_s));
        }
        Ok(())
    }

    /// Ids of the evaluated identities.
    pub fn identity_ids(&self) -> Vec<u64> {
        (0..self.identities as u64).map(|k| HELDOUT_IDENTITY_START + self.first_identity + k).collect()
    }

    pub fn stream_frames(&self) -> usize {
        (self.seconds * FPS).floor() as usize
    }

    pub fn baseline_frames(&self) -> usize {
        (self.baseline_seconds * FPS).floor() as usize
    }
}

/// Script the conversations of `spec` (speech synthesis, motion, ground
/// truth; no pixels). Reused by every model of one evaluation.
pub fn prepare_scripts(spec: &EvalSpec) -> Result<Vec<ClipScript>, EvalError> {
    spec.validate()?;
    spec.identity_ids()
        .into_iter()
        .enumerate()
        .map(|(k, id)| Ok(script_clip(&ClipSpec::new(id, spec.seed + k as u64, spec.seconds, spec.size))?))
        .collect()
}

/// The metrics of one identity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityMetrics {
    pub identity: u64,
    pub lip_sync: LipSyncResult,
    pub listening: Option<ListeningResult>,
    /// Identity PSNR per window of this stream.
    pub identity_psnr: DriftResult,
}

/// The metrics of one model over all identities.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMetrics {
    /// Mean over identities of the best-lag correlation.
    pub lip_sync_corr: f64,
    /// Mean over identities of the lag-0 correlation.
    pub lip_sync_corr_lag0: f64,
    /// Pooled over identities; `None` when no partner spoke in the baseline window.
    pub listening: Option<ListeningResult>,
    /// Per-window PSNR averaged across identities.
    pub identity: DriftResult,
    pub per_identity: Vec<IdentityMetrics>,
    /// Frames generated (both streams, all identities).
    pub frames_generated: usize,
    pub wall_s: f64,
}

fn probe_stream(
    model: &mut dyn EvalModel,
    script: &ClipScript,
    layout: &FaceLayout,
    listen: ListenAudio,
    n_frames: usize,
) -> Result<StreamProbe, EvalError> {
    let mut probe = StreamProbe::new(layout.clone(), script.reference_frame())?;
    let mut sink = |frame: &RgbFrame| probe.push(frame);
    model.generate(script, listen, n_frames, &mut sink)?;
    if probe.measures().len() != n_frames {
        return Err(EvalError::Invalid(format!(
            "model produced {} frames, {n_frames} were asked for",
            probe.measures().len()
        )));
    }
    Ok(probe)
}

/// Evaluate `model` on `scripts` (from [`prepare_scripts`] with the same `spec`).
pub fn evaluate(model: &mut dyn EvalModel, spec: &EvalSpec, scripts: &[ClipScript]) -> Result<ModelMetrics, EvalError> {
    spec.validate()?;
    if scripts.len() != spec.identities {
        return Err(EvalError::Invalid(format!("{} scripts for {} identities", scripts.len(), spec.identities)));
    }
    let t0 = Instant::now();
    let (n, nb) = (spec.stream_frames(), spec.baseline_frames());
    let mut per_identity = Vec::new();
    let mut pooled = ListeningSums::default();
    let mut psnr_streams = Vec::new();
    for script in scripts {
        if script.spec.size != spec.size || script.truth.len() < n {
            return Err(EvalError::Invalid("script does not match the evaluation spec".into()));
        }
        let layout = FaceLayout::of_identity(&script.identity, spec.size)?;
        tracing::info!(identity = script.identity.id, model = %model.describe(), frames = n, "eval: evaluated stream");
        let main = probe_stream(model, script, &layout, ListenAudio::Partner, n)?;
        tracing::info!(identity = script.identity.id, frames = nb, "eval: silent-listen baseline stream");
        let silent = probe_stream(model, script, &layout, ListenAudio::Silence, nb)?;

        let truth: Vec<f32> = script.truth[..n].iter().map(|t| t.mouth_open).collect();
        let talking: Vec<bool> = script.truth[..n].iter().map(|t| t.state == BehaviourState::Talk).collect();
        let lip = lip_sync(&truth, &main.openness(), &talking, spec.max_lag_frames)?;

        let states: Vec<BehaviourState> = script.truth[..nb].iter().map(|t| t.state).collect();
        let mask = listening_frames(&script.conversation.turns, &states, FPS, spec.listen_tail_s);
        let sums = ListeningSums::measure(&main.motion(), &silent.motion(), &mask)?;
        pooled.merge(&sums);

        let psnr = main.identity_psnr();
        let identity_psnr = drift(std::slice::from_ref(&psnr), FPS, spec.window_s)?;
        psnr_streams.push(psnr);
        per_identity.push(IdentityMetrics {
            identity: script.identity.id,
            lip_sync: lip,
            listening: sums.result(),
            identity_psnr,
        });
    }
    let k = per_identity.len() as f64;
    Ok(ModelMetrics {
        lip_sync_corr: per_identity.iter().map(|m| m.lip_sync.corr).sum::<f64>() / k,
        lip_sync_corr_lag0: per_identity.iter().map(|m| m.lip_sync.corr_lag0).sum::<f64>() / k,
        listening: pooled.result(),
        identity: drift(&psnr_streams, FPS, spec.window_s)?,
        per_identity,
        frames_generated: scripts.len() * (n + nb),
        wall_s: t0.elapsed().as_secs_f64(),
    })
}
