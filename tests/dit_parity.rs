//! DiT parity and streaming tests on the `tiny` config (CPU, seconds).
//!
//! - parity with diffusers `WanTransformer3DModel` (fixture written by
//!   `tests/parity/make_dit_fixtures.py`) in f32, bf16 and f16;
//! - streaming (`prime_reference` + `forward_chunk`) == one block-causal
//!   forward, with audio attention;
//! - RAPR + eviction over many chunks keeps the cache bounded and outputs finite;
//! - audio attention locality and "zero out-projection == no audio".
//!
//! Run: `cargo test --test dit_parity`

mod common;
use common::{f32_tol, test_device};

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{DType, IndexOp, Tensor};
use candle_nn::VarBuilder;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use streamavatar::config::{DitConfig, ModelConfig};
use streamavatar::model::dit::{AttentionMask, AudioTokens, DitError, WanDit};
use streamavatar::model::kv_cache::{CachePolicy, KvCache};
use streamavatar::model::rope::TemporalPositions;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dit_tiny.safetensors");
const WAN_NAMES_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dit_tiny_wan_names.safetensors");

fn cfg() -> DitConfig {
    ModelConfig::tiny().dit
}

fn fixture() -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(FIXTURE, &test_device()).context("load dit fixture")
}

fn model(weights: &HashMap<String, Tensor>, cfg: &DitConfig, dtype: DType) -> Result<WanDit> {
    let vb = VarBuilder::from_tensors(weights.clone(), dtype, &test_device());
    Ok(WanDit::new(cfg, vb)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?;
    Ok(d.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn randn(rng: &mut StdRng, shape: &[usize], scale: f32, offset: f32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| offset + scale * rng.sample::<f32, _>(StandardNormal)).collect();
    Ok(Tensor::from_vec(v, shape, &test_device())?)
}

/// The fixture weights plus random talk/listen audio attention weights.
fn weights_with_audio(seed: u64) -> Result<HashMap<String, Tensor>> {
    let cfg = cfg();
    let d = cfg.hidden_size();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = fixture()?;
    for i in 0..cfg.num_layers {
        for kind in ["talk", "listen"] {
            let norm = format!("blocks.{i}.norm_{kind}");
            w.insert(format!("{norm}.weight"), randn(&mut rng, &[d], 0.2, 1.0)?);
            w.insert(format!("{norm}.bias"), randn(&mut rng, &[d], 0.1, 0.0)?);
            let attn = format!("blocks.{i}.{kind}_audio_attn");
            for lin in ["to_q", "to_k", "to_v", "to_out.0"] {
                w.insert(format!("{attn}.{lin}.weight"), randn(&mut rng, &[d, d], 1.0 / (d as f32).sqrt(), 0.0)?);
                w.insert(format!("{attn}.{lin}.bias"), randn(&mut rng, &[d], 0.1, 0.0)?);
            }
            for n in ["norm_q", "norm_k"] {
                w.insert(format!("{attn}.{n}.weight"), randn(&mut rng, &[d], 0.2, 1.0)?);
            }
        }
    }
    Ok(w)
}

fn random_audio(rng: &mut StdRng, frames: usize) -> Result<AudioTokens> {
    let c = cfg();
    let shape = [1, frames, c.audio_tokens_per_frame, c.hidden_size()];
    Ok(AudioTokens { talk: randn(rng, &shape, 1.0, 0.0)?, listen: randn(rng, &shape, 1.0, 0.0)? })
}

fn audio_frames(a: &AudioTokens, start: usize, len: usize) -> Result<AudioTokens> {
    Ok(AudioTokens { talk: a.talk.narrow(1, start, len)?, listen: a.listen.narrow(1, start, len)? })
}

fn diffusers_run(dtype: DType) -> Result<(Tensor, Tensor)> {
    let w = fixture()?;
    let dit = model(&w, &cfg(), dtype)?;
    assert!(!dit.has_audio_attention());
    let text = dit.text_context(&w["fixture.text"])?;
    let out = dit.forward(&w["fixture.latents"], &w["fixture.timesteps"], &text, None, AttentionMask::Bidirectional)?;
    Ok((out, w["fixture.output"].clone()))
}

#[test]
fn matches_diffusers_f32() -> Result<()> {
    let (out, want) = diffusers_run(DType::F32)?;
    assert_eq!(out.dims(), want.dims());
    let err = max_abs_diff(&out, &want)?;
    println!("f32 max abs err vs diffusers: {err:e}");
    assert!(err < f32_tol(1e-5), "f32 max abs err {err}");
    Ok(())
}

#[test]
fn matches_diffusers_bf16_and_f16() -> Result<()> {
    // Reference is diffusers in f32; outputs have max |v| ~ 3.
    for (dtype, tol) in [(DType::BF16, 0.06f32), (DType::F16, 0.01)] {
        let (out, want) = diffusers_run(dtype)?;
        assert_eq!(out.dtype(), dtype);
        let err = max_abs_diff(&out, &want)?;
        println!("{dtype:?} max abs err vs diffusers f32: {err:e}");
        assert!(err < tol, "{dtype:?} max abs err {err} >= {tol}");
    }
    // `--half-scores`: attention scores kept in bf16 (the GPU speed-up).
    // Only this test runs half precision in this binary, so flipping the
    // process-wide switch here affects no other test.
    streamavatar::model::attention::set_half_precision_scores(true);
    let run = diffusers_run(DType::BF16);
    streamavatar::model::attention::set_half_precision_scores(false);
    let (out, want) = run?;
    let err = max_abs_diff(&out, &want)?;
    println!("BF16 with bf16 attention scores: max abs err vs diffusers f32: {err:e}");
    assert!(err < 0.06, "bf16 scores: max abs err {err} >= 0.06");
    Ok(())
}

#[test]
fn text_is_zero_padded_to_text_len() -> Result<()> {
    // The fixture prompt is 10 real tokens + 6 zero rows; giving only the 10
    // real tokens must give the same result.
    let w = fixture()?;
    let dit = model(&w, &cfg(), DType::F32)?;
    let short = dit.text_context(&w["fixture.text"].narrow(1, 0, 10)?)?;
    let out =
        dit.forward(&w["fixture.latents"], &w["fixture.timesteps"], &short, None, AttentionMask::Bidirectional)?;
    assert!(max_abs_diff(&out, &w["fixture.output"])? < f32_tol(1e-4));
    Ok(())
}

#[test]
fn wan_names_fixture_holds_the_same_weights() -> Result<()> {
    let diffusers = fixture()?;
    let wan = candle_core::safetensors::load(WAN_NAMES_FIXTURE, &test_device())?;
    let pairs = [
        ("condition_embedder.time_embedder.linear_1.weight", "time_embedding.0.weight"),
        ("condition_embedder.text_embedder.linear_2.bias", "text_embedding.2.bias"),
        ("condition_embedder.time_proj.weight", "time_projection.1.weight"),
        ("blocks.1.attn1.to_out.0.weight", "blocks.1.self_attn.o.weight"),
        ("blocks.0.attn2.norm_k.weight", "blocks.0.cross_attn.norm_k.weight"),
        ("blocks.0.norm2.weight", "blocks.0.norm3.weight"),
        ("blocks.1.ffn.net.0.proj.bias", "blocks.1.ffn.0.bias"),
        ("blocks.0.scale_shift_table", "blocks.0.modulation"),
        ("proj_out.weight", "head.head.weight"),
        ("scale_shift_table", "head.modulation"),
        ("patch_embedding.weight", "patch_embedding.weight"),
    ];
    for (d, o) in pairs {
        assert_eq!(max_abs_diff(&diffusers[d], &wan[o])?, 0.0, "{d} vs {o}");
    }
    let n_weights = diffusers.keys().filter(|k| !k.starts_with("fixture.")).count();
    assert_eq!(wan.len(), n_weights);
    Ok(())
}

#[test]
fn streaming_equals_block_causal_forward() -> Result<()> {
    let c = cfg();
    let w = weights_with_audio(1)?;
    let dit = model(&w, &c, DType::F32)?;
    assert!(dit.has_audio_attention());
    let text = dit.text_context(&w["fixture.text"])?;
    let mut rng = StdRng::seed_from_u64(7);
    let (chunk, frames) = (3usize, 10usize); // reference + 3 chunks of 3
    let latents = randn(&mut rng, &[1, c.in_channels, frames, 8, 8], 1.0, 0.0)?;
    let mut t: Vec<f32> = (0..frames).map(|_| rng.random_range(1.0..999.0)).collect();
    t[0] = 0.0;
    let t = Tensor::from_vec(t, (1, frames), &test_device())?;
    let audio = random_audio(&mut rng, frames)?;

    let full = dit.forward(&latents, &t, &text, Some(&audio), AttentionMask::BlockCausal { chunk_frames: chunk })?;

    let policy = CachePolicy {
        chunk_frames: chunk,
        window_chunks: 2,
        reference_sink: true,
        positions: TemporalPositions { chunk_frames: chunk, rapr_max_distance: Some(10) },
    };
    let mut cache = KvCache::new(dit.num_layers(), policy);
    let ref_out =
        dit.prime_reference(&latents.narrow(2, 0, 1)?, &text, Some(&audio_frames(&audio, 0, 1)?), &mut cache)?;
    let mut worst = max_abs_diff(&ref_out, &full.narrow(2, 0, 1)?)?;
    for s in [1usize, 4, 7] {
        let x = latents.narrow(2, s, chunk)?;
        let ts = t.narrow(1, s, chunk)?;
        let a = audio_frames(&audio, s, chunk)?;
        // A non-committing step (denoising step 1..n-1) leaves the cache alone.
        let before = cache.frame_ids();
        let trial = dit.forward_chunk(&x, &ts, &text, Some(&a), &mut cache, s, false)?;
        assert_eq!(cache.frame_ids(), before);
        let out = dit.forward_chunk(&x, &ts, &text, Some(&a), &mut cache, s, true)?;
        assert_eq!(max_abs_diff(&trial, &out)?, 0.0);
        worst = worst.max(max_abs_diff(&out, &full.narrow(2, s, chunk)?)?);
    }
    println!("streaming vs block-causal max abs err: {worst:e}");
    assert!(worst < f32_tol(1e-5), "streaming differs from block-causal by {worst}");
    assert_eq!(cache.frame_ids(), (0..10).collect::<Vec<_>>());
    // Block-causal differs from bidirectional (the mask matters).
    let bidi = dit.forward(&latents, &t, &text, Some(&audio), AttentionMask::Bidirectional)?;
    assert!(max_abs_diff(&bidi.narrow(2, 0, 4)?, &full.narrow(2, 0, 4)?)? > 1e-3);
    Ok(())
}

#[test]
fn long_stream_with_rapr_and_eviction_stays_bounded() -> Result<()> {
    let c = cfg();
    let w = weights_with_audio(2)?;
    let dit = model(&w, &c, DType::F32)?;
    let text = dit.text_context(&w["fixture.text"])?;
    let mut rng = StdRng::seed_from_u64(3);
    let (h, wd) = (4usize, 4usize);
    let tokens_per_frame = (h / 2) * (wd / 2);
    for (rapr, sink) in [(true, true), (false, false)] {
        let mut stream = ModelConfig::tiny().stream;
        stream.rapr = rapr;
        stream.reference_sink = sink;
        let chunk = stream.chunk_frames;
        let mut cache = KvCache::from_stream(dit.num_layers(), &stream);
        let bound = (1 + chunk + stream.window_chunks * chunk) * tokens_per_frame;
        let reference = randn(&mut rng, &[1, c.in_channels, 1, h, wd], 1.0, 0.0)?;
        dit.prime_reference(&reference, &text, Some(&random_audio(&mut rng, 1)?), &mut cache)?;
        for k in 0..20 {
            let s = 1 + k * chunk;
            let x = randn(&mut rng, &[1, c.in_channels, chunk, h, wd], 1.0, 0.0)?;
            let t = Tensor::new(&[500f32], &test_device())?;
            let out = dit.forward_chunk(&x, &t, &text, Some(&random_audio(&mut rng, chunk)?), &mut cache, s, true)?;
            let v: Vec<f32> = out.flatten_all()?.to_vec1()?;
            assert!(v.iter().all(|x| x.is_finite()), "chunk {k}: non-finite output");
            assert!(cache.num_tokens() <= bound, "chunk {k}: {} tokens > {bound}", cache.num_tokens());
            if sink {
                assert_eq!(&cache.frame_ids()[..4], &[0, 1, 2, 3]);
                let pos = cache.temporal_positions(s + chunk);
                assert!(pos.iter().all(|&p| p < stream.rapr_max_distance + chunk));
            }
        }
        assert_eq!(cache.num_tokens(), if sink { bound } else { stream.window_chunks * chunk * tokens_per_frame });
    }
    Ok(())
}

/// With one block, self-attention runs before the audio attention and the
/// FFN / head are per token, so frame f's talk audio can only change frame f.
#[test]
fn talk_audio_of_a_frame_changes_only_that_frame() -> Result<()> {
    let mut c = cfg();
    c.num_layers = 1;
    let w = weights_with_audio(4)?;
    let dit = model(&w, &c, DType::F32)?;
    let text = dit.text_context(&w["fixture.text"])?;
    let mut rng = StdRng::seed_from_u64(5);
    let latents = w["fixture.latents"].clone();
    let audio = random_audio(&mut rng, 4)?;
    let base = dit.forward(&latents, &w["fixture.timesteps"], &text, Some(&audio), AttentionMask::Bidirectional)?;
    let f = 2;
    let mut talk = audio.talk.clone();
    let new_frame = randn(&mut rng, &[1, 1, c.audio_tokens_per_frame, c.hidden_size()], 1.0, 0.0)?;
    talk = talk.slice_assign(&[0..1, f..f + 1, 0..c.audio_tokens_per_frame, 0..c.hidden_size()], &new_frame)?;
    let changed = AudioTokens { talk, listen: audio.listen.clone() };
    let out = dit.forward(&latents, &w["fixture.timesteps"], &text, Some(&changed), AttentionMask::Bidirectional)?;
    for frame in 0..4 {
        let d = max_abs_diff(&out.i((.., .., frame..frame + 1))?, &base.i((.., .., frame..frame + 1))?)?;
        if frame == f {
            assert!(d > 1e-3, "frame {f} did not react to its audio ({d})");
        } else {
            assert_eq!(d, 0.0, "frame {frame} changed by {d} when only frame {f}'s audio changed");
        }
    }
    Ok(())
}

/// With `listen_lookback_frames = 2` (one block, as above) frame f's listen
/// audio reaches frames f, f + 1, f + 2 and no earlier frame; talk audio
/// stays frame-local.
#[test]
fn listen_audio_reaches_the_lookback_frames_after_it() -> Result<()> {
    let mut c = cfg();
    c.num_layers = 1;
    c.listen_lookback_frames = 2;
    let w = weights_with_audio(4)?;
    let dit = model(&w, &c, DType::F32)?;
    let text = dit.text_context(&w["fixture.text"])?;
    let mut rng = StdRng::seed_from_u64(15);
    let latents = w["fixture.latents"].clone();
    let frames = latents.dim(2)?;
    assert!(frames >= 4, "fixture has {frames} latent frames");
    let audio = random_audio(&mut rng, frames)?;
    let ts = &w["fixture.timesteps"];
    let base = dit.forward(&latents, ts, &text, Some(&audio), AttentionMask::Bidirectional)?;
    let new_frame = randn(&mut rng, &[1, 1, c.audio_tokens_per_frame, c.hidden_size()], 1.0, 0.0)?;
    let set = |t: &Tensor, f: usize| {
        t.slice_assign(&[0..1, f..f + 1, 0..c.audio_tokens_per_frame, 0..c.hidden_size()], &new_frame)
    };
    for (branch, reach) in [("listen", 2usize), ("talk", 0usize)] {
        let f = 1;
        let changed = match branch {
            "listen" => AudioTokens { talk: audio.talk.clone(), listen: set(&audio.listen, f)? },
            _ => AudioTokens { talk: set(&audio.talk, f)?, listen: audio.listen.clone() },
        };
        let out = dit.forward(&latents, ts, &text, Some(&changed), AttentionMask::Bidirectional)?;
        for frame in 0..frames {
            let d = max_abs_diff(&out.i((.., .., frame..frame + 1))?, &base.i((.., .., frame..frame + 1))?)?;
            if (f..=f + reach).contains(&frame) {
                assert!(d > 1e-4, "{branch}: frame {frame} did not react to frame {f}'s audio ({d})");
            } else {
                assert_eq!(d, 0.0, "{branch}: frame {frame} changed by {d} when frame {f}'s audio changed");
            }
        }
    }
    Ok(())
}

/// Streaming with the listen history a stream carries (up to
/// `listen_lookback_frames` earlier frames before each chunk's own) equals
/// the whole-clip block-causal forward, whose first frames repeat frame 0
/// where no earlier frame exists; too much history is refused.
#[test]
fn streaming_with_listen_history_equals_block_causal_forward() -> Result<()> {
    let mut c = cfg();
    c.listen_lookback_frames = 2;
    let w = weights_with_audio(1)?;
    let dit = model(&w, &c, DType::F32)?;
    let text = dit.text_context(&w["fixture.text"])?;
    let mut rng = StdRng::seed_from_u64(17);
    let (chunk, frames) = (3usize, 7usize);
    let latents = randn(&mut rng, &[1, c.in_channels, frames, 8, 8], 1.0, 0.0)?;
    let mut t: Vec<f32> = (0..frames).map(|_| rng.random_range(1.0..999.0)).collect();
    t[0] = 0.0;
    let t = Tensor::from_vec(t, (1, frames), &test_device())?;
    let audio = random_audio(&mut rng, frames)?;
    let full = dit.forward(&latents, &t, &text, Some(&audio), AttentionMask::BlockCausal { chunk_frames: chunk })?;
    let with_history = |s: usize, n: usize| -> Result<AudioTokens> {
        let first = s.saturating_sub(2);
        Ok(AudioTokens { talk: audio.talk.narrow(1, s, n)?, listen: audio.listen.narrow(1, first, s + n - first)? })
    };
    let mut cache = KvCache::from_stream(dit.num_layers(), &ModelConfig::tiny().stream);
    let ref_out = dit.prime_reference(&latents.narrow(2, 0, 1)?, &text, Some(&with_history(0, 1)?), &mut cache)?;
    let mut worst = max_abs_diff(&ref_out, &full.narrow(2, 0, 1)?)?;
    for s in [1usize, 4] {
        let a = with_history(s, chunk)?;
        let out = dit.forward_chunk(
            &latents.narrow(2, s, chunk)?,
            &t.narrow(1, s, chunk)?,
            &text,
            Some(&a),
            &mut cache,
            s,
            true,
        )?;
        worst = worst.max(max_abs_diff(&out, &full.narrow(2, s, chunk)?)?);
    }
    println!("streaming with listen history vs block-causal max abs err: {worst:e}");
    assert!(worst < f32_tol(1e-5), "streaming differs from block-causal by {worst}");
    let too_much = AudioTokens { talk: audio.talk.narrow(1, 4, 3)?, listen: audio.listen.narrow(1, 0, 7)? };
    let err = dit.forward(
        &latents.narrow(2, 4, 3)?,
        &t.narrow(1, 4, 3)?,
        &text,
        Some(&too_much),
        AttentionMask::Bidirectional,
    );
    assert!(
        err.is_err_and(|e| e.to_string().contains("history")),
        "4 history frames with a lookback of 2 must be refused"
    );
    Ok(())
}

#[test]
fn zero_out_projection_equals_no_audio() -> Result<()> {
    let c = cfg();
    let mut w = weights_with_audio(6)?;
    for i in 0..c.num_layers {
        for kind in ["talk", "listen"] {
            for p in ["weight", "bias"] {
                let name = format!("blocks.{i}.{kind}_audio_attn.to_out.0.{p}");
                let z = w[&name].zeros_like()?;
                w.insert(name, z);
            }
        }
    }
    let dit = model(&w, &c, DType::F32)?;
    let text = dit.text_context(&w["fixture.text"])?;
    let mut rng = StdRng::seed_from_u64(8);
    let audio = random_audio(&mut rng, 4)?;
    let with =
        dit.forward(&w["fixture.latents"], &w["fixture.timesteps"], &text, Some(&audio), AttentionMask::Bidirectional)?;
    let without =
        dit.forward(&w["fixture.latents"], &w["fixture.timesteps"], &text, None, AttentionMask::Bidirectional)?;
    assert_eq!(max_abs_diff(&with, &without)?, 0.0);
    // ... and equals diffusers (no audio weights at all).
    assert!(max_abs_diff(&with, &w["fixture.output"])? < f32_tol(1e-4));
    Ok(())
}

#[test]
fn bad_inputs_are_clear_errors() -> Result<()> {
    let w = fixture()?;
    let dit = model(&w, &cfg(), DType::F32)?;
    let text = dit.text_context(&w["fixture.text"])?;
    let lat = &w["fixture.latents"];
    let t = &w["fixture.timesteps"];
    // audio for a checkpoint without audio weights
    let mut rng = StdRng::seed_from_u64(9);
    let audio = random_audio(&mut rng, 4)?;
    let e = dit.forward(lat, t, &text, Some(&audio), AttentionMask::Bidirectional).unwrap_err();
    assert!(matches!(e, DitError::AudioNotSupported));
    // wrong channel count / odd spatial size / wrong timesteps
    let bad_lat = Tensor::zeros((1, 3, 4, 8, 8), DType::F32, &test_device())?;
    assert!(matches!(
        dit.forward(&bad_lat, t, &text, None, AttentionMask::Bidirectional),
        Err(DitError::BadInput { .. })
    ));
    let odd = Tensor::zeros((1, 8, 4, 7, 8), DType::F32, &test_device())?;
    assert!(dit.forward(&odd, t, &text, None, AttentionMask::Bidirectional).is_err());
    let bad_t = Tensor::zeros((1, 3), DType::F32, &test_device())?;
    assert!(matches!(
        dit.forward(lat, &bad_t, &text, None, AttentionMask::Bidirectional),
        Err(DitError::BadInput { .. })
    ));
    let long_text = Tensor::zeros((1, 17, 24), DType::F32, &test_device())?;
    assert!(dit.text_context(&long_text).is_err());
    // chunk overlapping the cache
    let mut cache = KvCache::from_stream(dit.num_layers(), &ModelConfig::tiny().stream);
    dit.prime_reference(&lat.narrow(2, 0, 1)?, &text, None, &mut cache)?;
    let x = lat.narrow(2, 1, 3)?;
    let ts = t.narrow(1, 1, 3)?;
    dit.forward_chunk(&x, &ts, &text, None, &mut cache, 1, true)?;
    assert!(dit.forward_chunk(&x, &ts, &text, None, &mut cache, 1, true).is_err());
    let x2 = Tensor::cat(&[&x, &x], 0)?;
    let e = dit.forward_chunk(&x2, &ts.repeat((2, 1))?, &text, None, &mut cache, 4, false);
    assert!(matches!(e, Err(DitError::BadInput { name: "chunk", .. })));
    // partial audio weights are rejected at load time
    let mut partial = weights_with_audio(1)?;
    partial.retain(|k, _| !k.starts_with("blocks.1.listen"));
    assert!(matches!(model(&partial, &cfg(), DType::F32), Err(e) if e.to_string().contains("block 1")));
    Ok(())
}

/// The fused attention kernel (CUDA, bf16, head dim 128) against the
/// materialised path with f32 scores, on shapes that leave partial query
/// and key tiles, and at the full model's chunk size (2,640 queries over a
/// 16,720-key cache, 24 heads), where both are also timed. On the CPU the
/// kernel does not exist: the test checks that it is not dispatched.
#[test]
fn flash_attention_matches_materialised() -> Result<()> {
    use streamavatar::model::attention::{scaled_dot_product_attention, scaled_dot_product_attention_materialised};
    use streamavatar::model::flash_attention;
    let dev = test_device();
    let shapes: [(usize, usize, usize); 3] = [(1, 70, 130), (2, 200, 333), (24, 2640, 16720)];
    for (i, &(h, lq, lk)) in shapes.iter().enumerate() {
        if dev.is_cpu() && i > 0 {
            break;
        }
        let dtype = if dev.is_cpu() { DType::F32 } else { DType::BF16 };
        let q = Tensor::randn(0f32, 1.0, (1, h, lq, 128), &dev)?.to_dtype(dtype)?;
        let k = Tensor::randn(0f32, 1.0, (1, h, lk, 128), &dev)?.to_dtype(dtype)?;
        let v = Tensor::randn(0f32, 1.0, (1, h, lk, 128), &dev)?.to_dtype(dtype)?;
        if dev.is_cpu() {
            assert!(!flash_attention::applies(&q, &k, &v, false), "no fused kernel on the CPU");
            return Ok(());
        }
        assert!(flash_attention::applies(&q, &k, &v, false));
        assert!(!flash_attention::applies(&q, &k, &v, true), "masks go the materialised way");
        let fused = scaled_dot_product_attention(&q, &k, &v, None)?;
        let reference = scaled_dot_product_attention_materialised(&q, &k, &v, None)?;
        let d = max_abs_diff(&fused, &reference)?;
        let scale = reference.to_dtype(DType::F32)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        eprintln!("flash attention h {h} lq {lq} lk {lk}: max abs diff {d:.3e} (outputs up to {scale:.3})");
        assert!(d < 2e-2, "fused attention differs by {d}");
        let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> Result<f64> {
            f()?;
            dev.synchronize()?;
            let t0 = std::time::Instant::now();
            for _ in 0..5 {
                f()?;
            }
            dev.synchronize()?;
            Ok(t0.elapsed().as_secs_f64() * 1e3 / 5.0)
        };
        let t_fused = time(&|| scaled_dot_product_attention(&q, &k, &v, None))?;
        let t_ref = time(&|| scaled_dot_product_attention_materialised(&q, &k, &v, None))?;
        let flop = 4.0 * (h * lq * lk * 128) as f64;
        eprintln!(
            "  fused {t_fused:.2} ms ({:.0} TFLOP/s), materialised f32 scores {t_ref:.2} ms: {:.1}x",
            flop / t_fused / 1e9,
            t_ref / t_fused
        );
    }
    Ok(())
}

/// The DiT's fused element-wise kernels (modulation, gated residual)
/// against the same formulas in candle ops (f32 arithmetic) at the full
/// model's chunk size. On the CPU they never apply (checked).
/// Tolerance: 1 % of the largest output (the outputs are rounded to bf16,
/// 0.4 % relative; modulated values reach ~20-30 here, so an absolute bound
/// does not fit: the first H100 run, 2026-11-27, measured 3.1e-2 against an
/// absolute 2e-2).
#[test]
fn fused_dit_glue_matches_candle_ops() -> Result<()> {
    use streamavatar::model::dit::cuda_kernels;
    let dev = test_device();
    let (b, frames, per_frame, d) = (1usize, 3usize, 880usize, 3072usize);
    let l = frames * per_frame;
    let x = Tensor::randn(0f32, 1.0, (b, l, d), &dev)?.to_dtype(DType::BF16)?;
    if dev.is_cpu() {
        assert!(!cuda_kernels::applies(&x, frames), "no fused DiT kernels on the CPU");
        return Ok(());
    }
    assert!(cuda_kernels::applies(&x, frames));
    let weight = Tensor::rand(0.5f32, 1.5, d, &dev)?;
    let bias = Tensor::randn(0f32, 0.1, d, &dev)?;
    let shift = Tensor::randn(0f32, 0.5, (b, frames, 1, d), &dev)?;
    let scale = Tensor::randn(0f32, 0.5, (b, frames, 1, d), &dev)?;
    let fused =
        cuda_kernels::modulate(&x, &Tensor::stack(&[&weight, &bias], 0)?, &Tensor::cat(&[&shift, &scale], 2)?, 1e-6)?;
    let xf = x.to_dtype(DType::F32)?;
    let normed = candle_nn::ops::layer_norm(&xf, &weight, &bias, 1e-6)?.reshape((b, frames, per_frame, d))?;
    let reference = normed.broadcast_mul(&(&scale + 1.0)?)?.broadcast_add(&shift)?.reshape((b, l, d))?;
    let max_diff = |a: &Tensor, r: &Tensor| -> Result<(f32, f32)> {
        let d = (a.to_dtype(DType::F32)? - r)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        Ok((d, r.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?))
    };
    let (diff, top) = max_diff(&fused, &reference)?;
    eprintln!("fused modulate: max abs diff {diff:.3e} (outputs up to {top:.2})");
    assert!(diff <= 1e-2 * top, "fused modulate differs by {diff}");

    let y = Tensor::randn(0f32, 1.0, (b, l, d), &dev)?.to_dtype(DType::BF16)?;
    let gate = Tensor::randn(0f32, 0.5, (b, frames, 1, d), &dev)?;
    let fused = cuda_kernels::gated_residual(&x, &y, &gate)?;
    let yf = y.to_dtype(DType::F32)?.reshape((b, frames, per_frame, d))?.broadcast_mul(&gate)?.reshape((b, l, d))?;
    let reference = (&xf + yf)?;
    let (diff, top) = max_diff(&fused, &reference)?;
    eprintln!("fused gated residual: max abs diff {diff:.3e} (outputs up to {top:.2})");
    assert!(diff <= 1e-2 * top, "fused gated residual differs by {diff}");

    // Timing against the candle chain (mean of 10 after a warm-up).
    let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> Result<f64> {
        f()?;
        dev.synchronize()?;
        let t0 = std::time::Instant::now();
        for _ in 0..10 {
            f()?;
        }
        dev.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3 / 10.0)
    };
    let packed = Tensor::stack(&[&weight, &bias], 0)?;
    let ss = Tensor::cat(&[&shift, &scale], 2)?;
    let t_fused = time(&|| cuda_kernels::modulate(&x, &packed, &ss, 1e-6))?;
    let t_ops = time(&|| {
        let n = candle_nn::ops::layer_norm(&x.to_dtype(DType::F32)?, &weight, &bias, 1e-6)?
            .reshape((b, frames, per_frame, d))?;
        n.broadcast_mul(&(&scale + 1.0)?)?.broadcast_add(&shift)?.reshape((b, l, d))?.to_dtype(DType::BF16)
    })?;
    eprintln!("  modulate: fused {t_fused:.3} ms, candle ops {t_ops:.3} ms");
    Ok(())
}

/// The fused attention glue (`model::attention_kernels`: q/k RMSNorm + RoPE +
/// head split, and the few-key audio attention with the query norm fused)
/// against candle's ops at the full model's size, on a GPU (on the CPU: the
/// kernels never apply). Tolerance: 1 % of the largest output (bf16 outputs;
/// the fused norm + RoPE skips one intermediate bf16 rounding).
#[test]
fn fused_attention_glue_matches_candle_ops() -> Result<()> {
    use streamavatar::model::attention::{rms_norm_f32, scaled_dot_product_attention_materialised};
    use streamavatar::model::attention_kernels as kernels;
    use streamavatar::model::rope::apply_rope;
    let dev = test_device();
    let (b, l, d, heads) = (1usize, 2640usize, 3072usize, 24usize);
    let hd = d / heads;
    let x = (Tensor::randn(0f32, 1.0, (b, l, d), &dev)? * 3.0)?.to_dtype(DType::BF16)?;
    if dev.is_cpu() {
        assert!(!kernels::applies(&x, heads), "no fused attention kernels on the CPU");
        return Ok(());
    }
    assert!(kernels::applies(&x, heads));
    let norm = Tensor::rand(0.5f32, 1.5, d, &dev)?;
    let angles = Tensor::rand(0f32, 6.28, (l, hd / 2), &dev)?;
    let (cos, sin) = (angles.cos()?, angles.sin()?);
    let split = |t: &Tensor| -> Result<Tensor> {
        let (b, l, _) = t.dims3()?;
        Ok(t.reshape((b, l, heads, t.dim(2)? / heads))?.transpose(1, 2)?.contiguous()?)
    };
    let within = |name: &str, fused: &Tensor, reference: &Tensor| -> Result<()> {
        assert_eq!(fused.dims(), reference.dims(), "{name}: shape");
        let diff = max_abs_diff(fused, reference)?;
        let top = reference.to_dtype(DType::F32)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        eprintln!("{name}: max abs diff {diff:.3e} (outputs up to {top:.2})");
        assert!(diff.is_finite() && diff <= 1e-2 * top, "{name} differs by {diff} (outputs up to {top})");
        Ok(())
    };

    let fused = kernels::norm_rope_heads(&x, Some(&norm), Some((&cos, &sin)), heads, 1e-6)?;
    let reference = apply_rope(&split(&rms_norm_f32(&x, &norm, 1e-6)?)?, &cos, &sin)?;
    within("norm + RoPE + heads", &fused, &reference)?;
    let fused = kernels::norm_rope_heads(&x, Some(&norm), None, heads, 1e-6)?;
    within("norm + heads", &fused, &split(&rms_norm_f32(&x, &norm, 1e-6)?)?)?;
    let fused = kernels::norm_rope_heads(&x, None, Some((&cos, &sin)), heads, 1e-6)?;
    within("RoPE + heads", &fused, &apply_rope(&split(&x)?, &cos, &sin)?)?;

    // Audio attention: 3 latent frames of 880 tokens, 4 audio tokens each.
    let (groups, keys) = (3usize, 4usize);
    let q = x.reshape((groups, l / groups, d))?;
    let k = rms_norm_f32(&Tensor::randn(0f32, 1.0, (groups, keys, d), &dev)?.to_dtype(DType::BF16)?, &norm, 1e-6)?;
    let v = Tensor::randn(0f32, 1.0, (groups, keys, d), &dev)?.to_dtype(DType::BF16)?;
    let fused = kernels::few_key_attention(&q, &norm, &k, &v, heads, 1e-6)?;
    let o = scaled_dot_product_attention_materialised(
        &split(&rms_norm_f32(&q, &norm, 1e-6)?)?,
        &split(&k)?,
        &split(&v)?,
        None,
    )?;
    let reference = o.transpose(1, 2)?.reshape((groups, l / groups, d))?;
    within("few-key attention", &fused, &reference)?;

    // Timing against the candle chains (mean of 10 after a warm-up).
    let time = |f: &dyn Fn() -> Result<Tensor>| -> Result<f64> {
        f()?;
        dev.synchronize()?;
        let t0 = std::time::Instant::now();
        for _ in 0..10 {
            f()?;
        }
        dev.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3 / 10.0)
    };
    let t_fused = time(&|| Ok(kernels::norm_rope_heads(&x, Some(&norm), Some((&cos, &sin)), heads, 1e-6)?))?;
    let t_ops = time(&|| Ok(apply_rope(&split(&rms_norm_f32(&x, &norm, 1e-6)?)?, &cos, &sin)?))?;
    eprintln!("  norm + RoPE + heads: fused {t_fused:.3} ms, candle ops {t_ops:.3} ms");
    let t_fused = time(&|| Ok(kernels::few_key_attention(&q, &norm, &k, &v, heads, 1e-6)?))?;
    let t_ops = time(&|| {
        let o = scaled_dot_product_attention_materialised(
            &split(&rms_norm_f32(&q, &norm, 1e-6)?)?,
            &split(&k)?,
            &split(&v)?,
            None,
        )?;
        Ok(o.transpose(1, 2)?.reshape((groups, l / groups, d))?)
    })?;
    eprintln!("  few-key attention: fused {t_fused:.3} ms, candle ops {t_ops:.3} ms");
    Ok(())
}
