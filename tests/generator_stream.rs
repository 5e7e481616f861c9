//! The streaming generator on the `tiny` preset with deterministic random
//! weights: reproducible for a seed, bounded memory over a 60-second stream,
//! `NotEnoughAudio` without audio, and reset.

use streamavatar::config::ModelConfig;
use streamavatar::generator::{AvatarSource, GeneratorError, GeneratorOptions, GeneratorWeights, StreamingGenerator};
use streamavatar::media::frame::RgbFrame;

fn reference() -> RgbFrame {
    // A gradient so the VAE sees structure (and a non-square source size).
    let (w, h) = (96, 80);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    RgbFrame { width: w, height: h, data }
}

fn generator(seed: u64) -> StreamingGenerator {
    generator_with(ModelConfig::tiny(), seed)
}

fn generator_with(cfg: ModelConfig, seed: u64) -> StreamingGenerator {
    let weights = GeneratorWeights::from_cli(&cfg, &[]).unwrap();
    StreamingGenerator::new(
        cfg,
        weights,
        &reference(),
        &GeneratorOptions { device: "cpu".into(), seed, ..Default::default() },
    )
    .unwrap()
}

/// Speech-like talk audio (a chirp with an envelope), sample `i` of the stream.
fn talk_sample(i: usize) -> f32 {
    let t = i as f32 / 16_000.0;
    let env = 0.5 + 0.5 * (t * 3.0).sin();
    0.3 * env * (2.0 * std::f32::consts::PI * (180.0 + 40.0 * (t * 1.7).sin()) * t).sin()
}

fn push_audio(g: &mut StreamingGenerator, from: usize, n: usize) {
    let talk: Vec<f32> = (from..from + n).map(talk_sample).collect();
    g.push_talk(&talk);
    g.push_listen(&vec![0.0; n]);
}

fn frames_of(c: &streamavatar::generator::VideoChunk) -> Vec<u8> {
    c.frames.iter().flat_map(|f| f.data.iter().copied()).collect()
}

#[test]
fn deterministic_for_a_seed() {
    let mut a = generator(11);
    let mut b = generator(11);
    let mut c = generator(12);
    let s = a.samples_per_chunk();
    let need = 2 * s + a.lookahead_samples();
    for g in [&mut a, &mut b, &mut c] {
        push_audio(g, 0, need);
    }
    for k in 0..2 {
        let (ca, cb, cc) = (a.next_chunk().unwrap(), b.next_chunk().unwrap(), c.next_chunk().unwrap());
        assert_eq!(ca.index, k);
        assert_eq!(ca.audio_sample_start, k * s as u64);
        assert_eq!(ca.frames.len(), 12);
        assert_eq!((ca.frames[0].width, ca.frames[0].height), (64, 64));
        assert_eq!(ca.timings.dit_step_ms.len(), 3);
        assert!(frames_of(&ca) == frames_of(&cb), "chunk {k} differs for the same seed");
        assert!(frames_of(&ca) != frames_of(&cc), "chunk {k} equal for different seeds");
        // Random weights give noise, but not a constant image.
        let px = frames_of(&ca);
        assert!(px.iter().any(|v| *v != px[0]), "chunk {k} is one flat colour");
    }
}

#[test]
fn not_enough_audio() {
    let mut g = generator(0);
    assert!(!g.ready());
    match g.next_chunk() {
        Err(GeneratorError::NotEnoughAudio { needed, have }) => {
            assert_eq!(needed, g.samples_per_chunk() + g.lookahead_samples());
            assert_eq!(have, 0);
        }
        other => panic!("expected NotEnoughAudio, got {other:?}"),
    }
    // Talk alone is not enough: listen must be pushed too (silence is fine).
    let n = g.samples_per_chunk() + g.lookahead_samples();
    g.push_talk(&vec![0.1; n]);
    assert!(matches!(g.next_chunk(), Err(GeneratorError::NotEnoughAudio { have: 0, .. })));
    g.push_listen(&vec![0.0; n - 1]);
    assert!(matches!(g.next_chunk(), Err(GeneratorError::NotEnoughAudio { .. })));
    g.push_listen(&[0.0]);
    assert!(g.ready());
    assert_eq!(g.next_chunk().unwrap().index, 0);
}

#[test]
fn reset_restarts_the_stream() {
    let mut g = generator(5);
    let s = g.samples_per_chunk();
    let la = g.lookahead_samples();
    push_audio(&mut g, 0, s + la);
    let first = frames_of(&g.next_chunk().unwrap());
    push_audio(&mut g, s + la, s);
    let second = g.next_chunk().unwrap();
    assert_eq!(second.index, 1);
    assert!(frames_of(&second) != first);

    // Same reference: the stream starts over identically.
    g.reset(None).unwrap();
    assert!(!g.ready(), "reset must drop buffered audio");
    push_audio(&mut g, 0, s + la);
    let again = g.next_chunk().unwrap();
    assert_eq!(again.index, 0);
    assert!(frames_of(&again) == first, "restarted stream differs");

    // A new reference changes the video.
    g.reset(Some(&RgbFrame::solid(64, 64, [200, 30, 30]))).unwrap();
    push_audio(&mut g, 0, s + la);
    assert!(frames_of(&g.next_chunk().unwrap()) != first, "new reference had no effect");

    // A broken reference is a clear error, not a panic.
    let bad = RgbFrame { width: 10, height: 10, data: vec![0; 7] };
    assert!(matches!(g.reset(Some(&bad)), Err(GeneratorError::BadReference(_))));
}

#[test]
fn sixty_second_stream_has_bounded_memory() {
    // tiny at 32x32 (the smallest size the VAE x patch grid allows) keeps
    // 120 chunks fast; the cache / buffer logic does not depend on the size.
    let mut cfg = ModelConfig::tiny();
    cfg.stream.width = 32;
    cfg.stream.height = 32;
    let mut g = generator_with(cfg, 3);
    let s = g.samples_per_chunk();
    let la = g.lookahead_samples();
    let chunks = 120; // 60 s at 0.5 s per chunk
    push_audio(&mut g, 0, la);
    let mut pushed = la;
    let max_frames = g.cache_max_frames();
    let mut max_seen_cache = 0;
    let mut max_seen_audio = 0;
    for k in 0..chunks {
        // Push in 20 ms blocks as the call agent does.
        for _ in 0..s / 320 {
            push_audio(&mut g, pushed, 320);
            pushed += 320;
        }
        let c = g.next_chunk().unwrap();
        assert_eq!(c.index, k as u64);
        assert_eq!(c.frames.len(), 12);
        max_seen_cache = max_seen_cache.max(g.cache_frames());
        let (t, l) = g.audio_buffered_samples();
        max_seen_audio = max_seen_audio.max(t.max(l));
        assert!(g.cache_frames() <= max_frames, "cache grew to {} frames at chunk {k}", g.cache_frames());
    }
    // The window fills up and then stays: reference + sink chunk + window.
    assert_eq!(max_seen_cache, max_frames);
    // Audio: left context + one chunk + lookahead (+ one hop of alignment).
    let cfg = g.config();
    let bound = ((cfg.audio.left_context_s + cfg.audio.lookahead_s) * 16_000.0) as usize + s + 320;
    assert!(max_seen_audio <= bound, "audio buffer reached {max_seen_audio} samples (bound {bound})");
    assert_eq!(g.dropped_audio_samples(), 0);
}

/// The half-precision path a GPU runs (bf16 there), here in f16 on the CPU:
/// f32 PCM and f32 sampler state meet half-precision weights in the audio
/// encoder, the projection, the DiT and the VAE. Chunks come out, full size
/// and not one flat colour.
#[test]
fn half_precision_stream_runs() {
    let cfg = ModelConfig::tiny();
    let weights = GeneratorWeights::from_cli(&cfg, &[]).unwrap();
    let options = GeneratorOptions { seed: 3, dtype: Some(candle_core::DType::F16), ..Default::default() };
    let mut g = StreamingGenerator::new(cfg, weights, &reference(), &options).unwrap();
    let (s, lookahead) = (g.samples_per_chunk(), g.lookahead_samples());
    push_audio(&mut g, 0, s + lookahead);
    let first = g.next_chunk().unwrap();
    push_audio(&mut g, s + lookahead, s);
    let second = g.next_chunk().unwrap();
    let (w, h) = g.frame_size();
    for c in [&first, &second] {
        assert_eq!(c.frames.len(), g.frames_per_chunk());
        let px = frames_of(c);
        assert_eq!(px.len(), c.frames.len() * w * h * 3);
        let (lo, hi) = (px.iter().min().unwrap(), px.iter().max().unwrap());
        assert!(hi > lo, "flat frames");
    }
}

fn generator_opts(seed: u64, options: GeneratorOptions) -> StreamingGenerator {
    let cfg = ModelConfig::tiny();
    let weights = GeneratorWeights::from_cli(&cfg, &[]).unwrap();
    StreamingGenerator::new(cfg, weights, &reference(), &GeneratorOptions { seed, ..options }).unwrap()
}

/// The VAE on its own thread (`begin_chunk` twice, then `finish_chunk`
/// twice: chunk 1's DiT runs while chunk 0 decodes) gives the same frames as
/// the inline stream, in order; a reset with chunks in flight drops them and
/// restarts at chunk 0.
#[test]
fn pipelined_vae_stage_matches_inline() {
    let mut inline = generator_opts(5, GeneratorOptions { pipeline: Some(false), ..Default::default() });
    let mut piped = generator_opts(5, GeneratorOptions { pipeline: Some(true), ..Default::default() });
    assert_eq!((inline.pipeline_depth(), piped.pipeline_depth()), (1, 2));
    let s = inline.samples_per_chunk();
    let need = 4 * s + inline.lookahead_samples();
    push_audio(&mut inline, 0, need);
    push_audio(&mut piped, 0, need);
    let expected: Vec<_> = (0..4).map(|_| inline.next_chunk().unwrap()).collect();

    piped.begin_chunk().unwrap();
    piped.begin_chunk().unwrap();
    assert_eq!(piped.chunks_in_flight(), 2);
    let err = piped.next_chunk().unwrap_err().to_string();
    assert!(err.contains("in flight"), "{err}");
    let mut got = vec![piped.finish_chunk().unwrap()];
    piped.begin_chunk().unwrap();
    got.push(piped.finish_chunk().unwrap());
    got.push(piped.finish_chunk().unwrap());
    piped.begin_chunk().unwrap();
    // try_finish_chunk hands the chunk over once decoded (poll until then).
    let last = loop {
        if let Some(c) = piped.try_finish_chunk() {
            break c.unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    got.push(last);
    assert!(piped.try_finish_chunk().is_none());
    assert!(piped.finish_chunk().is_err(), "nothing in flight");
    for (k, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(b.index, k as u64);
        assert!(frames_of(a) == frames_of(b), "pipelined chunk {k} differs from inline");
        assert!(b.timings.vae_ms > 0.0 && b.timings.dit_step_ms.len() == 3);
    }

    // Reset with a chunk in flight: dropped; the stream starts over.
    push_audio(&mut piped, need, 2 * s);
    piped.begin_chunk().unwrap();
    piped.reset(None).unwrap();
    assert_eq!(piped.chunks_in_flight(), 0);
    push_audio(&mut piped, 0, need);
    let mut fresh = generator_opts(5, GeneratorOptions { pipeline: Some(false), ..Default::default() });
    push_audio(&mut fresh, 0, need);
    piped.begin_chunk().unwrap();
    let again = piped.finish_chunk().unwrap();
    assert_eq!(again.index, 0);
    assert!(frames_of(&again) == frames_of(&fresh.next_chunk().unwrap()));
}

/// `--decoder light` on the tiny model (seeded random light decoder): the
/// same frame geometry and chunking as the full decoder, different pixels.
#[test]
fn light_decoder_stream_runs() {
    use streamavatar::generator::DecoderKind;
    let mut full = generator_opts(3, GeneratorOptions::default());
    let mut light = generator_opts(3, GeneratorOptions { decoder: DecoderKind::Light, ..Default::default() });
    let s = full.samples_per_chunk();
    let need = 2 * s + full.lookahead_samples();
    push_audio(&mut full, 0, need);
    push_audio(&mut light, 0, need);
    for k in 0..2 {
        let (a, b) = (full.next_chunk().unwrap(), light.next_chunk().unwrap());
        assert_eq!(b.index, k);
        assert_eq!(b.frames.len(), 12);
        assert_eq!((b.frames[0].width, b.frames[0].height), (64, 64));
        assert!(frames_of(&a) != frames_of(&b));
        let px = frames_of(&b);
        assert!(px.iter().any(|v| *v != px[0]), "light chunk {k} is one flat colour");
    }
}

/// Weights without a light decoder: a clear error, not random pixels.
#[test]
fn light_decoder_without_weights_is_a_clear_error() {
    use candle_core::{DType, Device};
    use streamavatar::generator::DecoderKind;
    use streamavatar::model::weights::SeededInitBackend;
    let vb = |seed| SeededInitBackend::var_builder(seed, DType::F32, &Device::Cpu);
    let weights = GeneratorWeights::VarBuilders { dit: vb(1), vae: vb(2), wav2vec2: vb(3) };
    let err = StreamingGenerator::new(
        ModelConfig::tiny(),
        weights,
        &reference(),
        &GeneratorOptions { decoder: DecoderKind::Light, ..Default::default() },
    )
    .err()
    .expect("light decoder without weights must fail")
    .to_string();
    assert!(err.contains("--decoder light needs the light decoder's weights"), "{err}");
}
