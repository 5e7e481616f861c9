//! Does the frozen audio encoder hear the mouth? A linear read-out (ridge
//! regression) from the wav2vec2 features of the talk track to the synth's
//! ground-truth mouth openness, fit on training identities and sentences
//! and scored on held-out ones, beside the same read-out from the track's
//! per-frame RMS alone.
//!
//! The DiT can only make lips follow what its audio tokens carry: the
//! trainable `audio_proj` is (per frame, over a window) a learned map of
//! these features, so a linear read-out over the same window is a fair
//! lower bound of what the teacher can use. A read-out far below the RMS
//! baseline says the encoder loses the signal; one near it says the teacher
//! learns lip motion from loudness alone; one above it says the features
//! carry more (phoneme identity: closed lips on loud /m/, /b/).
//!
//! Only talk frames are scored (while listening the avatar's mouth does not
//! follow the talk track). Features are standardised on the fit set; the
//! ridge strength is picked on the last quarter of the fit clips, then the
//! read-out is refit on all of them.

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::config::ModelConfig;
use crate::model::audio::wav2vec2::Wav2Vec2Model;
use crate::model::audio::FrameRateMap;
use crate::synth::motion::BehaviourState;
use crate::synth::{script_clip, ClipScript, ClipSpec, HELDOUT_IDENTITY_START};

use super::TrainError;

/// Clip length of the probe (seconds): several talk turns per clip.
pub const PROBE_CLIP_SECONDS: f64 = 10.0;
/// Fit clips per evaluation clip.
pub const FIT_CLIPS_PER_EVAL_CLIP: u64 = 4;
/// Ridge strengths tried, relative to the mean diagonal of `XᵀX`.
const RIDGE_GRID: [f64; 6] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// What to probe.
#[derive(Debug, Clone, Copy)]
pub struct AudioProbeSpec {
    /// Held-out clips scored; fit clips are `FIT_CLIPS_PER_EVAL_CLIP` times as many.
    pub eval_clips: u64,
    /// Frames each side of frame `t` in the read-out window.
    pub context: usize,
    pub seed: u64,
}

/// One read-out's held-out score.
#[derive(Debug, Clone, Serialize)]
pub struct ReadoutScore {
    /// Pearson correlation of prediction and true openness, held-out talk frames.
    pub corr: f64,
    /// Chosen ridge strength (relative).
    pub ridge: f64,
    /// Input width (features x window).
    pub inputs: usize,
}

/// The probe's result.
#[derive(Debug, Clone, Serialize)]
pub struct AudioProbeReport {
    pub fit_talk_frames: usize,
    pub eval_talk_frames: usize,
    /// Correlation of the raw per-frame RMS with openness (no fit).
    pub rms_raw_corr: f64,
    /// Ridge read-out from the RMS window.
    pub rms: ReadoutScore,
    /// Ridge read-out from each hidden state (0 = feature projection) alone.
    pub per_layer: Vec<ReadoutScore>,
    /// Ridge read-out from all hidden states together.
    pub all_layers: ReadoutScore,
}

/// Talk frames of one clip: per frame, per hidden state, the feature row,
/// plus RMS and true openness.
struct ClipRows {
    /// `[layer][frame][h]`
    features: Vec<Vec<Vec<f32>>>,
    rms: Vec<f32>,
    openness: Vec<f32>,
    talking: Vec<bool>,
}

fn clip_rows(
    script: &ClipScript,
    wav2vec2: &Wav2Vec2Model,
    map: &FrameRateMap,
    dev: &Device,
) -> Result<ClipRows, TrainError> {
    let talk = &script.conversation.talk;
    let wave = Tensor::from_slice(talk, (1, talk.len()), dev)?;
    let hs = wav2vec2.forward(&wave)?.hidden_states;
    // [1, L+1, N, H] at video frames
    let feats = map.resample_clip(&hs, talk.len() as u64)?.squeeze(0)?;
    let n = feats.dim(1)?.min(script.truth.len());
    let features: Vec<Vec<Vec<f32>>> = feats.narrow(1, 0, n)?.to_vec3()?;
    let truth = &script.truth[..n];
    Ok(ClipRows {
        features,
        rms: truth.iter().map(|t| t.talk_rms).collect(),
        openness: truth.iter().map(|t| t.mouth_open).collect(),
        talking: truth.iter().map(|t| t.state == BehaviourState::Talk).collect(),
    })
}

/// A design matrix of talk frames: each row the window `t-c..=t+c` of a
/// per-frame vector (clamped at the clip ends).
struct Design {
    rows: Vec<Vec<f64>>,
    target: Vec<f64>,
    /// Which clip each row came from (for the validation split).
    clip: Vec<usize>,
}

fn design(clips: &[ClipRows], per_frame: impl Fn(&ClipRows, usize) -> Vec<f32>, context: usize) -> Design {
    let mut d = Design { rows: Vec::new(), target: Vec::new(), clip: Vec::new() };
    for (ci, c) in clips.iter().enumerate() {
        let n = c.openness.len();
        for t in (0..n).filter(|&t| c.talking[t]) {
            let mut row = Vec::new();
            for k in 0..=2 * context {
                let f = (t + k).saturating_sub(context).min(n - 1);
                row.extend(per_frame(c, f).iter().map(|&v| v as f64));
            }
            d.rows.push(row);
            d.target.push(c.openness[t] as f64);
            d.clip.push(ci);
        }
    }
    d
}

/// Column means and standard deviations (1 for constant columns).
fn standardizer(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let d = rows.first().map_or(0, Vec::len);
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    let mut std = vec![0.0; d];
    for r in rows {
        for ((s, v), m) in std.iter_mut().zip(r).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    (mean, std.into_iter().map(|s| if s > 1e-12 { s.sqrt() } else { 1.0 }).collect())
}

/// Solve `(XᵀX + λ·mean(diag)·I) w = Xᵀ(y - ȳ)` on standardised columns;
/// returns `(w, ȳ)`. Cholesky in f64 (the systems are a few thousand wide).
pub fn ridge_fit(rows: &[Vec<f64>], y: &[f64], lambda: f64) -> Result<(Vec<f64>, f64), TrainError> {
    let d = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || d == 0 || rows.len() != y.len() {
        return Err(TrainError::Invalid(format!("ridge: {} rows of width {d} for {} targets", rows.len(), y.len())));
    }
    let y_mean = y.iter().sum::<f64>() / y.len() as f64;
    let mut a = vec![0.0; d * d];
    let mut b = vec![0.0; d];
    for (r, &t) in rows.iter().zip(y) {
        for i in 0..d {
            let ri = r[i];
            b[i] += ri * (t - y_mean);
            let row = &mut a[i * d..i * d + i + 1];
            for (aij, rj) in row.iter_mut().zip(&r[..=i]) {
                *aij += ri * rj;
            }
        }
    }
    let diag = (0..d).map(|i| a[i * d + i]).sum::<f64>() / d as f64;
    let reg = lambda * diag.max(1e-12);
    for i in 0..d {
        a[i * d + i] += reg;
    }
    // Cholesky: lower triangle of `a` becomes L with L Lᵀ = A.
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s <= 0.0 {
            return Err(TrainError::Invalid("ridge: the system is not positive definite".into()));
        }
        let l = s.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / l;
        }
    }
    // L z = b, then Lᵀ w = z.
    for i in 0..d {
        let s = b[i] - (0..i).map(|k| a[i * d + k] * b[k]).sum::<f64>();
        b[i] = s / a[i * d + i];
    }
    for i in (0..d).rev() {
        let s = b[i] - (i + 1..d).map(|k| a[k * d + i] * b[k]).sum::<f64>();
        b[i] = s / a[i * d + i];
    }
    Ok((b, y_mean))
}

fn predict(rows: &[Vec<f64>], w: &[f64], bias: f64) -> Vec<f64> {
    rows.iter().map(|r| bias + r.iter().zip(w).map(|(a, b)| a * b).sum::<f64>()).collect()
}

/// Pearson correlation ([`crate::eval::lip_sync::pearson`]); 0 when it is
/// undefined (a constant side, fewer than 3 pairs).
fn pearson(a: &[f64], b: &[f64]) -> f64 {
    crate::eval::lip_sync::pearson(a, b).unwrap_or(0.0)
}

fn standardize(rows: &mut [Vec<f64>], mean: &[f64], std: &[f64]) {
    for r in rows {
        for ((v, m), s) in r.iter_mut().zip(mean).zip(std) {
            *v = (*v - m) / s;
        }
    }
}

/// Fit on `fit` (strength picked on its last quarter of clips), score on `eval`.
fn readout(mut fit: Design, mut eval: Design, fit_clips: usize) -> Result<ReadoutScore, TrainError> {
    let (mean, std) = standardizer(&fit.rows);
    standardize(&mut fit.rows, &mean, &std);
    standardize(&mut eval.rows, &mean, &std);
    let split = fit_clips - (fit_clips / 4).max(1);
    let (mut tr_x, mut tr_y, mut va_x, mut va_y) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((r, &t), &c) in fit.rows.iter().zip(&fit.target).zip(&fit.clip) {
        if c < split {
            tr_x.push(r.clone());
            tr_y.push(t);
        } else {
            va_x.push(r.clone());
            va_y.push(t);
        }
    }
    let mut best = (f64::NEG_INFINITY, RIDGE_GRID[0]);
    if !tr_x.is_empty() && !va_x.is_empty() {
        for &lambda in &RIDGE_GRID {
            let (w, b) = ridge_fit(&tr_x, &tr_y, lambda)?;
            let c = pearson(&predict(&va_x, &w, b), &va_y);
            if c > best.0 {
                best = (c, lambda);
            }
        }
    }
    let (w, b) = ridge_fit(&fit.rows, &fit.target, best.1)?;
    let corr = pearson(&predict(&eval.rows, &w, b), &eval.target);
    Ok(ReadoutScore { corr, ridge: best.1, inputs: w.len() })
}

/// Run the probe with `wav2vec2` (the frozen encoder the DiT stages use).
pub fn probe_audio_encoder(
    cfg: &ModelConfig,
    wav2vec2: &Wav2Vec2Model,
    spec: &AudioProbeSpec,
    dev: &Device,
) -> Result<AudioProbeReport, TrainError> {
    if spec.eval_clips == 0 {
        return Err(TrainError::Invalid("audio probe: needs at least one evaluation clip".into()));
    }
    let map = FrameRateMap::new(&cfg.audio.wav2vec2, cfg.audio.sample_rate, cfg.stream.fps)?;
    let fit_n = spec.eval_clips * FIT_CLIPS_PER_EVAL_CLIP;
    let size = cfg.stream.width;
    let clip_seed = |i: u64| spec.seed.wrapping_mul(0x9E37_79B9).wrapping_add(i);
    let mut fit = Vec::new();
    for i in 0..fit_n {
        let s = script_clip(&ClipSpec::new(i, clip_seed(i), PROBE_CLIP_SECONDS, size))?;
        fit.push(clip_rows(&s, wav2vec2, &map, dev)?);
    }
    let mut eval = Vec::new();
    for i in 0..spec.eval_clips {
        let s =
            script_clip(&ClipSpec::new(HELDOUT_IDENTITY_START + i, clip_seed(fit_n + i), PROBE_CLIP_SECONDS, size))?;
        eval.push(clip_rows(&s, wav2vec2, &map, dev)?);
    }
    let c = spec.context;
    let rms_of = |r: &ClipRows, f: usize| vec![r.rms[f]];
    let rms_fit = design(&fit, rms_of, c);
    let rms_eval = design(&eval, rms_of, c);
    if rms_fit.rows.is_empty() || rms_eval.rows.is_empty() {
        return Err(TrainError::Invalid("audio probe: the clips have no talk frames".into()));
    }
    let rms_raw_corr =
        pearson(&design(&eval, rms_of, 0).rows.iter().map(|r| r[0]).collect::<Vec<_>>(), &rms_eval.target);
    let (fit_talk_frames, eval_talk_frames) = (rms_fit.rows.len(), rms_eval.rows.len());
    let rms = readout(rms_fit, rms_eval, fit.len())?;
    let layers = fit[0].features.len();
    let mut per_layer = Vec::with_capacity(layers);
    for l in 0..layers {
        let of = move |r: &ClipRows, f: usize| r.features[l][f].clone();
        per_layer.push(readout(design(&fit, of, c), design(&eval, of, c), fit.len())?);
    }
    let all = |r: &ClipRows, f: usize| r.features.iter().flat_map(|layer| layer[f].iter().copied()).collect();
    let all_layers = readout(design(&fit, all, c), design(&eval, all, c), fit.len())?;
    Ok(AudioProbeReport { fit_talk_frames, eval_talk_frames, rms_raw_corr, rms, per_layer, all_layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_a_linear_map_and_pearson_sees_it() -> anyhow::Result<()> {
        // y = 2 x0 - x1 + 0.5 x2 + 3, x from a fixed pseudo-random sequence.
        let mut s = 1u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let rows: Vec<Vec<f64>> = (0..200).map(|_| vec![next(), next(), next()]).collect();
        let y: Vec<f64> = rows.iter().map(|r| 2.0 * r[0] - r[1] + 0.5 * r[2] + 3.0).collect();
        let (w, _) = ridge_fit(&rows, &y, 1e-9)?;
        // The fit centres y only (not x): the columns here have mean ~0.
        for (got, want) in w.iter().zip([2.0, -1.0, 0.5]) {
            assert!((got - want).abs() < 0.05, "{w:?}");
        }
        let (w, b) = ridge_fit(&rows, &y, 1e-9)?;
        assert!(pearson(&predict(&rows, &w, b), &y) > 0.999);
        // A strong ridge shrinks the weights toward 0.
        let (w_strong, _) = ridge_fit(&rows, &y, 100.0)?;
        assert!(w_strong[0].abs() < 0.1 * w[0].abs(), "{w_strong:?}");
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
        assert!((pearson(&[1.0, 2.0, 3.0], &[-2.0, -4.0, -6.0]) + 1.0).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn ridge_refuses_mismatched_input() {
        assert!(ridge_fit(&[vec![1.0]], &[1.0, 2.0], 0.1).is_err());
        assert!(ridge_fit(&[], &[], 0.1).is_err());
    }
}
