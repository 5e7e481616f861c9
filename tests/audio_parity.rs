//! Parity of the candle wav2vec2 with transformers `Wav2Vec2Model` (fixtures
//! from tests/parity/make_wav2vec2_fixtures.py), and the streamed-vs-whole
//! clip difference of `StreamingAudioEncoder`.
//!
//! Run: `cargo test --test audio_parity -- --nocapture` (the measurement
//! tables print with --nocapture; the base-config measurement is #[ignore]d
//! because a random 95 M-parameter model takes ~1 min on 2 CPU cores:
//! `cargo test --release --test audio_parity -- --ignored --nocapture`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use streamavatar::config::{AudioConfig, ModelConfig, Wav2Vec2Config};
use streamavatar::model::audio::streaming::whole_clip_features;
use streamavatar::model::audio::wav2vec2::zero_mean_unit_var_norm;
use streamavatar::model::audio::{FrameRateMap, InputNormalization, StreamingAudioEncoder, Wav2Vec2Model};

/// Max abs difference allowed against transformers (f32, CPU).
const PARITY_TOL: f32 = 1e-4;

struct Fixture {
    cfg: Wav2Vec2Config,
    tensors: HashMap<String, Tensor>,
}

fn fixture(variant: &str) -> Result<Fixture> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/wav2vec2_tiny_{variant}.safetensors"));
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config"))
        .ok_or_else(|| anyhow!("fixture has no config metadata"))?;
    // transformers field names deserialize straight into our config.
    let cfg: Wav2Vec2Config = serde_json::from_str(json)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    Ok(Fixture { cfg, tensors })
}

fn model(fx: &Fixture, norm: InputNormalization) -> Result<Wav2Vec2Model> {
    let vb = VarBuilder::from_tensors(fx.tensors.clone(), DType::F32, &Device::Cpu);
    Ok(Wav2Vec2Model::new(&fx.cfg, norm, vb)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn check_parity(variant: &str) -> Result<()> {
    let fx = fixture(variant)?;
    let m = model(&fx, InputNormalization::None)?;
    let out = m.forward(&fx.tensors["input_values"])?;
    let want = &fx.tensors["hidden_states"];
    assert_eq!(out.hidden_states.dims(), want.dims(), "{variant}: [B, L+1, T, H]");
    let d = max_abs_diff(&out.hidden_states, want)?;
    let d_last = max_abs_diff(&out.last_hidden_state, &fx.tensors["last_hidden_state"])?;
    let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("{variant}: hidden_states max|diff| = {d:.2e} (max|value| {scale:.2}), last_hidden_state {d_last:.2e}");
    assert!(d < PARITY_TOL, "{variant}: hidden states differ by {d}");
    assert!(d_last < PARITY_TOL, "{variant}: last hidden state differs by {d_last}");
    // Feature-extractor normalisation.
    let n = zero_mean_unit_var_norm(&fx.tensors["input_values"])?;
    let dn = max_abs_diff(&n, &fx.tensors["normalized_input"])?;
    assert!(dn < 1e-4, "{variant}: normalisation differs by {dn}");
    Ok(())
}

#[test]
fn wav2vec2_base_layout_matches_transformers() -> Result<()> {
    check_parity("base")
}

#[test]
fn wav2vec2_large_layout_matches_transformers() -> Result<()> {
    check_parity("large")
}

/// Deterministic speech-like test signal: syllable-rate modulated chirps with
/// pauses, plus a little noise.
fn speech_like(samples: usize) -> Vec<f32> {
    let mut state: u32 = 1;
    (0..samples)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let syllable = (2.0 * std::f32::consts::PI * 4.0 * t).sin().max(0.0);
            let phrase = if (t % 2.3) < 1.7 { 1.0 } else { 0.0 };
            let f0 = 140.0 + 40.0 * (2.0 * std::f32::consts::PI * 0.7 * t).sin();
            let voice =
                (2.0 * std::f32::consts::PI * f0 * t).sin() + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * f0 * t).sin();
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            0.3 * syllable * phrase * voice + 0.01 * noise
        })
        .collect()
}

/// Streamed-vs-whole-clip relative errors `||streamed - whole|| / ||whole||`
/// (all hidden states together), one per chunk produced while streaming
/// `pcm` in 1000-sample blocks (every chunk is interior to the clip).
fn per_chunk_errors(model: &Wav2Vec2Model, audio: &AudioConfig, pcm: &[f32], running: bool) -> Result<Vec<f32>> {
    let map = FrameRateMap::new(&audio.wav2vec2, audio.sample_rate, 24)?;
    let whole = whole_clip_features(model, pcm, &map)?;
    let mut enc = StreamingAudioEncoder::new(model.clone(), audio, 24, 12)?.with_running_stats(running);
    let mut errors = Vec::new();
    for block in pcm.chunks(1_000) {
        enc.push(block)?;
        while enc.ready() {
            let chunk = enc.next_chunk()?;
            let a = chunk.core_features()?;
            let b = whole.narrow(2, chunk.first_video_frame as usize, a.dim(2)?)?;
            let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            let den = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            errors.push(num / den.max(1e-12));
        }
    }
    Ok(errors)
}

/// (mean over all chunks, mean over chunks starting at or after `settle_s`, max over those).
fn summarize(errors: &[f32], settle_s: f64) -> (f32, f32, f32) {
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let first = (settle_s * 2.0) as usize; // 2 chunks per second
    let late = &errors[first.min(errors.len())..];
    (mean(errors), mean(late), late.iter().cloned().fold(0.0, f32::max))
}

/// How much whole-clip features themselves depend on the clip length:
/// relative difference, over the first `common_s` seconds, between the
/// features of a `common_s` clip and of the full `pcm` clip. Streaming
/// cannot be closer to "the" whole-clip features than this.
fn clip_length_sensitivity(model: &Wav2Vec2Model, audio: &AudioConfig, pcm: &[f32], common_s: f64) -> Result<f32> {
    let map = FrameRateMap::new(&audio.wav2vec2, audio.sample_rate, 24)?;
    let n_short = (common_s * audio.sample_rate as f64) as usize;
    let long = whole_clip_features(model, pcm, &map)?;
    let short = whole_clip_features(model, &pcm[..n_short], &map)?;
    // Compare away from the short clip's right edge (last second excluded).
    let frames = short.dim(2)? - 24;
    let (a, b) = (short.narrow(2, 0, frames)?, long.narrow(2, 0, frames)?);
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    let den = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    Ok(num / den)
}

/// Seconds after which a stream's running statistics are considered settled.
const SETTLE_S: f64 = 5.0;
/// Bound for the architecture-only streaming error (no whole-input
/// statistics involved: layer layout, no input normalisation) at the tiny
/// defaults (left context 1 s, lookahead 0.5 s), every chunk.
const STREAM_TOL_ARCH: f32 = 0.01;
/// Bound for the default pipeline (input normalisation, running statistics)
/// on chunks after SETTLE_S, stable-layer-norm layout.
const STREAM_TOL_SETTLED_LARGE: f32 = 0.03;
/// Same for the base (GroupNorm) layout, whose first-conv statistics are the
/// slowest to settle on the tiny random model.
const STREAM_TOL_SETTLED_BASE: f32 = 0.25;

#[test]
fn streaming_matches_whole_clip_within_bound() -> Result<()> {
    let pcm = speech_like(16_000 * 12);
    let defaults = ModelConfig::tiny().audio;
    let mut failures = Vec::new();
    for variant in ["base", "large"] {
        let fx = fixture(variant)?;
        let mut audio = defaults.clone();
        audio.wav2vec2 = fx.cfg.clone();
        println!(
            "tiny {variant} layout, 12 s clip: rel. error (mean all chunks / mean after {SETTLE_S} s / max after)"
        );
        for norm in [InputNormalization::None, InputNormalization::ZeroMeanUnitVariance] {
            let m = model(&fx, norm)?;
            let sens = clip_length_sensitivity(&m, &audio, &pcm, 8.0)?;
            println!("  {norm:?}: whole 8 s clip vs whole 12 s clip (first 7 s): {sens:.4}");
            for running in [true, false] {
                let sweep: &[(f64, f64)] = if running && norm == InputNormalization::ZeroMeanUnitVariance {
                    &[(0.25, 0.25), (0.5, 0.25), (1.0, 0.5), (2.0, 0.5)]
                } else {
                    &[(1.0, 0.5)]
                };
                for &(left, look) in sweep {
                    audio.left_context_s = left;
                    audio.lookahead_s = look;
                    let errors = per_chunk_errors(&m, &audio, &pcm, running)?;
                    let (all, late, late_max) = summarize(&errors, SETTLE_S);
                    let stats = if running { "running" } else { "window " };
                    println!(
                        "  {norm:?} {stats} stats, left {left} s, lookahead {look} s: {all:.4} / {late:.4} / {late_max:.4}"
                    );
                    let is_default = left == defaults.left_context_s && look == defaults.lookahead_s;
                    if !is_default {
                        continue;
                    }
                    if variant == "large" && norm == InputNormalization::None {
                        let worst = errors.iter().cloned().fold(0.0, f32::max);
                        if worst >= STREAM_TOL_ARCH {
                            failures.push(format!("architecture-only error {worst} >= {STREAM_TOL_ARCH}"));
                        }
                    }
                    if running && norm == InputNormalization::ZeroMeanUnitVariance {
                        let tol = if variant == "large" { STREAM_TOL_SETTLED_LARGE } else { STREAM_TOL_SETTLED_BASE };
                        if late_max >= tol {
                            failures.push(format!("{variant}: settled error {late_max} >= {tol}"));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    Ok(())
}

/// Running statistics converge to the whole-clip statistics; per-window
/// statistics do not (they keep the window's own statistics forever).
#[test]
fn running_statistics_beat_window_statistics_once_settled() -> Result<()> {
    let pcm = speech_like(16_000 * 12);
    for variant in ["base", "large"] {
        let fx = fixture(variant)?;
        let mut audio = ModelConfig::tiny().audio;
        audio.wav2vec2 = fx.cfg.clone();
        let m = model(&fx, InputNormalization::ZeroMeanUnitVariance)?;
        let (_, running, _) = summarize(&per_chunk_errors(&m, &audio, &pcm, true)?, SETTLE_S);
        let (_, window, _) = summarize(&per_chunk_errors(&m, &audio, &pcm, false)?, SETTLE_S);
        assert!(running < window, "{variant}: running {running} vs window {window}");
    }
    Ok(())
}

/// The same measurement on the published base config with random weights
/// (no pretrained weights exist on this machine), per hidden state, plus a
/// lookahead of 1.5 s (beyond the positional conv's 1.28 s reach) to show
/// where the error comes from.
#[test]
#[ignore = "95 M-parameter random model: ~3 min on 2 cores; run with --ignored --nocapture"]
fn streaming_error_base_config_random_weights() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let mut audio = ModelConfig::full().audio;
    let m = Wav2Vec2Model::new(&audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, vb)?;
    let pcm = speech_like(16_000 * 8);
    let map = FrameRateMap::new(&audio.wav2vec2, audio.sample_rate, 24)?;
    let whole = whole_clip_features(&m, &pcm, &map)?;
    let sens = clip_length_sensitivity(&m, &audio, &pcm, 6.0)?;
    println!("base config (random init): whole 6 s clip vs whole 8 s clip (first 5 s): {sens:.4}");
    println!("base config (random init), 8 s clip, running stats: rel. error per hidden state, chunks after 5 s");
    for (left, look) in [(2.0, 0.5), (2.0, 1.5)] {
        audio.left_context_s = left;
        audio.lookahead_s = look;
        let mut enc = StreamingAudioEncoder::new(m.clone(), &audio, 24, 12)?;
        enc.push(&pcm)?;
        let mut parts = Vec::new();
        let mut first = None;
        while enc.ready() {
            let c = enc.next_chunk()?;
            if c.index >= (SETTLE_S * 2.0) as u64 {
                first.get_or_insert(c.first_video_frame as usize);
                parts.push(c.core_features()?);
            }
        }
        let Some(first) = first else { continue };
        let a = Tensor::cat(&parts, 2)?;
        let b = whole.narrow(2, first, a.dim(2)?)?;
        let rel: Vec<String> = (0..a.dim(1)?)
            .map(|l| -> Result<String> {
                let (x, y) = (a.narrow(1, l, 1)?, b.narrow(1, l, 1)?);
                let num = (&x - &y)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
                let den = y.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
                Ok(format!("{:.3}", num / den))
            })
            .collect::<Result<_>>()?;
        println!("  left {left} s, lookahead {look} s: {}", rel.join(" "));
    }
    Ok(())
}

/// When one window covers the whole clip, streamed chunk 0 equals the
/// whole-clip features exactly (same samples, same statistics): the window
/// geometry, the conv-frame alignment and the fps resampling agree.
#[test]
fn single_window_stream_equals_whole_clip() -> Result<()> {
    let pcm = speech_like(16_000); // tiny defaults: chunk 0 window = [0, 16000)
    for variant in ["base", "large"] {
        let fx = fixture(variant)?;
        let mut audio = ModelConfig::tiny().audio;
        audio.wav2vec2 = fx.cfg.clone();
        for running in [true, false] {
            let m = model(&fx, InputNormalization::ZeroMeanUnitVariance)?;
            let map = FrameRateMap::new(&audio.wav2vec2, 16_000, 24)?;
            let whole = whole_clip_features(&m, &pcm, &map)?;
            let mut enc = StreamingAudioEncoder::new(m, &audio, 24, 12)?.with_running_stats(running);
            enc.push(&pcm)?;
            let c = enc.next_chunk()?;
            let d = max_abs_diff(&c.core_features()?, &whole.narrow(2, 0, 12)?)?;
            println!("{variant} running={running}: chunk 0 vs whole max|diff| {d:.2e}");
            assert!(d < 1e-4, "{variant} running={running}: {d}");
        }
    }
    Ok(())
}
