//! `streamavatar bench generator`: per-chunk wall time of every generator
//! stage (audio encoder, each DiT step, VAE), fps, peak memory (RSS and,
//! on a GPU, device memory), setup and first-chunk time, the pipelined-pair
//! estimate (1 / slowest stage) and, with `--profile`, the time of the
//! model's sections ([`crate::model::profile`]). A config without weight
//! files runs on seeded random weights (drawn on the device on a GPU).
//!
//! Two modes:
//! * streaming: the real [`StreamingGenerator`] over synthetic talk audio
//!   (a modulated tone) and silent listen audio, one warm-up chunk, then N
//!   timed chunks;
//! * extrapolated (`full` on CPU, where one chunk would take many minutes):
//!   the real audio branch is timed as is; the DiT is timed as ONE block of
//!   the full config at full resolution (reference frame cached) and
//!   multiplied by the block count; the VAE decoder of the full config is
//!   timed on one chunk at a quarter of the width and height and multiplied
//!   by the pixel ratio. The report says so.

use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::config::ModelConfig;
use crate::generator::{
    AudioBranch, AvatarSource, ChunkTimings, DecoderKind, DevicePlan, GeneratorError, GeneratorOptions,
    GeneratorWeights, StreamingGenerator,
};
use crate::model::dit::{AudioTokens, WanDit};
use crate::model::kv_cache::KvCache;
use crate::model::sampler::NoiseSource;
use crate::model::vae::load_streaming_decoder;
use crate::model::weights::{load_prompt_embeds, SeededInitBackend};

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct GeneratorBenchSpec {
    pub config: String,
    pub device: String,
    pub weights: Vec<String>,
    /// Timed chunks after one warm-up chunk (streaming mode).
    pub chunks: usize,
    /// Time the sections of the model too ([`crate::model::profile`]);
    /// synchronises around each, so the chunk times grow.
    pub profile: bool,
    /// Attention scores in bf16/f16 instead of f32
    /// ([`crate::model::attention::set_half_precision_scores`]).
    pub half_scores: bool,
    /// Full or light decoder.
    pub decoder: DecoderKind,
    /// Force the VAE stage on / off its own thread (default: on for a GPU
    /// pair, see `GeneratorOptions::pipeline`).
    pub pipeline: Option<bool>,
    /// Use the fused attention kernel where it applies (CUDA, bf16).
    pub flash: bool,
    /// Use the VAE's CUDA kernels (convolution, norm + SiLU) where they
    /// apply (bf16); off = candle's ops, for A/B runs.
    pub vae_kernels: bool,
    /// Use the DiT's fused element-wise CUDA kernels (modulation, gated
    /// residual) where they apply (bf16); off = candle's ops, for A/B runs.
    pub dit_kernels: bool,
    /// Use the attention glue kernels (q/k norm + RoPE + head split, the
    /// few-key audio attention) where they apply (bf16); off = candle's ops.
    pub attn_kernels: bool,
}

/// Measured numbers.
#[derive(Debug, Clone)]
pub struct GeneratorBenchReport {
    pub config: String,
    pub device: String,
    /// How the numbers were obtained (streaming / extrapolated, with details).
    pub method: String,
    /// Per timed chunk (streaming mode) or the one estimated chunk.
    pub chunks: Vec<ChunkTimings>,
    pub frames_per_chunk: usize,
    /// Video frames per second of generation (frames / generation time).
    pub fps: f64,
    /// Video fps the stream needs to keep up (config fps).
    pub target_fps: u32,
    /// Peak resident memory (VmHWM) in MiB, when readable.
    pub peak_rss_mib: Option<f64>,
    /// Building the model (weights on the device) and priming the caches
    /// with the reference image, in ms (streaming mode).
    pub setup_ms: Option<f64>,
    /// The first chunk (kernel loading and library start-up included): the
    /// first-frame latency once the audio for chunk 0 is there (streaming
    /// mode).
    pub first_chunk_ms: Option<f64>,
    /// Per GPU (ordinal, used MiB, total MiB), read from the driver after the
    /// timed chunks; None on CPU.
    pub gpu_memory: Vec<(usize, f64, f64)>,
    /// With `--profile`: (section, ms per timed chunk, calls per chunk).
    pub profile: Vec<(&'static str, f64, f64)>,
}

/// Peak resident set size of this process (Linux `VmHWM`) in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Speech-like test signal: a tone with a syllable-rate envelope.
pub fn synthetic_talk(start: usize, n: usize) -> Vec<f32> {
    (start..start + n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            0.3 * env * (2.0 * std::f32::consts::PI * (150.0 + 30.0 * (t * 1.3).sin()) * t).sin()
        })
        .collect()
}

/// Run the benchmark.
pub fn bench_generator(spec: &GeneratorBenchSpec) -> Result<GeneratorBenchReport, GeneratorError> {
    let cfg = ModelConfig::load(&spec.config).map_err(|e| GeneratorError::Model(e.to_string()))?;
    let plan = DevicePlan::parse(&spec.device)?;
    crate::model::attention::set_half_precision_scores(spec.half_scores);
    crate::model::flash_attention::set_enabled(spec.flash);
    crate::model::vae::cuda_kernels::set_enabled(spec.vae_kernels);
    crate::model::dit::cuda_kernels::set_enabled(spec.dit_kernels);
    crate::model::attention_kernels::set_enabled(spec.attn_kernels);
    if cfg.name == "full" && plan.dit.is_cpu() {
        if spec.decoder != DecoderKind::Full || spec.pipeline == Some(true) {
            return Err(GeneratorError::Model(
                "`full` on the CPU is extrapolated from single stages; --decoder light and --pipeline need a GPU"
                    .into(),
            ));
        }
        return bench_full_cpu_extrapolated(&cfg, spec);
    }
    bench_streaming(cfg, spec)
}

fn bench_streaming(cfg: ModelConfig, spec: &GeneratorBenchSpec) -> Result<GeneratorBenchReport, GeneratorError> {
    // Timing does not depend on the values: with no files and no bundled
    // weights, every config runs on seeded random weights (the report says so).
    let weights = match GeneratorWeights::from_cli(&cfg, &spec.weights) {
        Err(_) if spec.weights.is_empty() => {
            GeneratorWeights::Random { seed: crate::generator::streaming::RANDOM_WEIGHTS_SEED }
        }
        other => other?,
    };
    let weights_kind = match weights {
        GeneratorWeights::Random { .. } => WeightsKind::Random,
        _ => WeightsKind::Files,
    };
    // The avatar `serve` shows by default (a synth identity).
    let reference = crate::generator::factory::default_reference(cfg.stream.width, cfg.stream.height);
    let name = cfg.name.clone();
    let t_setup = Instant::now();
    let mut g = StreamingGenerator::new(
        cfg,
        weights,
        &reference,
        &GeneratorOptions {
            device: spec.device.clone(),
            seed: 0,
            decoder: spec.decoder,
            pipeline: spec.pipeline,
            ..Default::default()
        },
    )?;
    g.devices().synchronize();
    let setup_ms = ms_since(t_setup);
    tracing::info!(setup_ms, "generator built and primed");
    let s = g.samples_per_chunk();
    let mut pushed = 0;
    let mut feed = |g: &mut StreamingGenerator, n: usize| {
        g.push_talk(&synthetic_talk(pushed, n));
        g.push_listen(&vec![0.0; n]);
        pushed += n;
    };
    let first = s + g.lookahead_samples();
    feed(&mut g, first);
    let t_first = Instant::now();
    g.next_chunk()?; // warm-up
    let first_chunk_ms = ms_since(t_first);
    tracing::info!(first_chunk_ms, "first chunk");
    let mut chunks = Vec::with_capacity(spec.chunks);
    crate::model::profile::take();
    crate::model::profile::set_enabled(spec.profile);
    let pipelined = g.pipeline_depth() > 1;
    let t0 = Instant::now();
    for _ in 0..spec.chunks.max(1) {
        feed(&mut g, s);
        if pipelined {
            // Audio for every chunk is there: the DiT of chunk k+1 runs while
            // the VAE stage decodes chunk k.
            g.begin_chunk()?;
            if g.chunks_in_flight() == g.pipeline_depth() {
                chunks.push(g.finish_chunk()?.timings);
            }
        } else {
            chunks.push(g.next_chunk()?.timings);
        }
    }
    while g.chunks_in_flight() > 0 {
        chunks.push(g.finish_chunk()?.timings);
    }
    let wall = t0.elapsed().as_secs_f64();
    crate::model::profile::set_enabled(false);
    let n = chunks.len() as f64;
    let profile =
        crate::model::profile::take().into_iter().map(|(name, ms, calls)| (name, ms / n, calls as f64 / n)).collect();
    let fpc = g.frames_per_chunk();
    Ok(GeneratorBenchReport {
        config: name,
        device: spec.device.clone(),
        method: format!(
            "streaming: real StreamingGenerator, {} weights, {} decoder, {}, 1 warm-up + {} timed chunks, attention {}, VAE {}, DiT glue {}, attention glue {}",
            match (&weights_kind, g.devices().dit.is_cpu()) {
                (WeightsKind::Random, true) => "random (seeded)",
                (WeightsKind::Random, false) => "random (seeded, drawn on the device)",
                (WeightsKind::Files, _) => "file",
            },
            spec.decoder.as_str(),
            if pipelined {
                "VAE stage on its own thread (pipelined; fps is measured wall-clock throughput)"
            } else {
                "stages in sequence"
            },
            chunks.len(),
            if spec.flash && g.devices().dtype == DType::BF16 && !g.devices().dit.is_cpu() {
                "fused (flash kernel) where it applies, else scores in the compute dtype or f32"
            } else if spec.half_scores && g.devices().dtype != DType::F32 {
                "scores in the compute dtype"
            } else {
                "scores in f32"
            },
            if spec.vae_kernels && g.devices().dtype == DType::BF16 && !g.devices().vae.is_cpu() {
                "CUDA kernels (implicit-GEMM conv, fused norm + SiLU) where they apply"
            } else {
                "candle ops"
            },
            if spec.dit_kernels && g.devices().dtype == DType::BF16 && !g.devices().dit.is_cpu() {
                "fused CUDA kernels (modulation, gated residual, LayerNorm)"
            } else {
                "candle ops"
            },
            if spec.attn_kernels && g.devices().dtype == DType::BF16 && !g.devices().dit.is_cpu() {
                "fused CUDA kernels (q/k norm + RoPE + heads, few-key audio attention)"
            } else {
                "candle ops"
            }
        ),
        fps: (chunks.len() * fpc) as f64 / wall,
        frames_per_chunk: fpc,
        target_fps: g.fps(),
        chunks,
        peak_rss_mib: peak_rss_kib().map(|k| k as f64 / 1024.0),
        setup_ms: Some(setup_ms),
        first_chunk_ms: Some(first_chunk_ms),
        gpu_memory: g.devices().gpu_memory_mib(),
        profile,
    })
}

enum WeightsKind {
    Random,
    Files,
}

fn candle(e: impl std::fmt::Display) -> GeneratorError {
    GeneratorError::Model(e.to_string())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `full` on CPU: measure the parts, extrapolate one chunk (module docs).
fn bench_full_cpu_extrapolated(
    cfg: &ModelConfig,
    spec: &GeneratorBenchSpec,
) -> Result<GeneratorBenchReport, GeneratorError> {
    let plan = DevicePlan::cpu();
    let dev = &plan.dit;
    let dtype = DType::F32;
    let seed = crate::generator::streaming::RANDOM_WEIGHTS_SEED;
    tracing::info!("full on CPU: timing audio branch, one DiT block and a reduced-size VAE decode (random weights)");

    // Audio branch: the real thing.
    let vb = SeededInitBackend::var_builder(seed, dtype, dev);
    let mut audio = AudioBranch::new(cfg, SeededInitBackend::var_builder(seed + 2, dtype, dev), vb.pp("audio_proj"))?;
    let need = audio.talk.samples_needed() as usize;
    audio.talk.push(&synthetic_talk(0, need)).map_err(candle)?;
    audio.listen.push(&vec![0.0; need]).map_err(candle)?;
    let t = Instant::now();
    let tokens = audio.next_tokens(dtype)?;
    let audio_ms = ms_since(t);
    tracing::info!(audio_ms, "audio branch timed; building one full DiT block");

    // DiT: one block at full resolution.
    let mut one = cfg.dit.clone();
    one.num_layers = 1;
    let dit = WanDit::new(&one, vb.clone()).map_err(candle)?;
    let prompt = load_prompt_embeds(&vb, one.text_len, one.text_dim).map_err(candle)?;
    let text = dit.text_context(&prompt).map_err(candle)?;
    let s = cfg.vae.scale_factor_spatial;
    let (h, w) = (cfg.stream.height / s, cfg.stream.width / s);
    let mut noise = NoiseSource::new(0);
    let reference = noise.sample((1, cfg.vae.z_dim, 1, h, w), dtype, dev).map_err(candle)?;
    let mut cache = KvCache::from_stream(1, &cfg.stream);
    dit.prime_reference(&reference, &text, None, &mut cache).map_err(candle)?;
    let x = noise.sample((1, cfg.vae.z_dim, cfg.stream.chunk_frames, h, w), dtype, dev).map_err(candle)?;
    let tt = Tensor::new(&[1000f32], dev).map_err(candle)?;
    let t = Instant::now();
    dit.forward_chunk(
        &x,
        &tt,
        &text,
        Some(&AudioTokens { talk: tokens.talk, listen: tokens.listen }),
        &mut cache,
        1,
        false,
    )
    .map_err(candle)?;
    let block_ms = ms_since(t);
    tracing::info!(block_ms, "one DiT block timed; building the full VAE decoder");
    drop(dit);
    let step_ms = block_ms * cfg.dit.num_layers as f64;
    let steps = cfg.stream.timesteps.len();

    // VAE: the full decoder on one chunk at 1/8 of the width and height
    // (its convolutions cost linear in pixels; at full size one CPU decode
    // takes tens of minutes).
    let decoder_vb = SeededInitBackend::var_builder(seed + 1, dtype, dev);
    let mut decoder = load_streaming_decoder(&cfg.vae, decoder_vb).map_err(candle)?;
    let (hs, ws) = (h.div_ceil(8).max(1), w.div_ceil(8).max(1));
    let zr = noise.sample((1, cfg.vae.z_dim, 1, hs, ws), dtype, dev).map_err(candle)?;
    decoder.decode_chunk(&zr).map_err(candle)?;
    let zc = noise.sample((1, cfg.vae.z_dim, cfg.stream.chunk_frames, hs, ws), dtype, dev).map_err(candle)?;
    let t = Instant::now();
    decoder.decode_chunk(&zc).map_err(candle)?;
    let vae_small_ms = ms_since(t);
    tracing::info!(vae_small_ms, "reduced-size VAE decode timed");
    let ratio = (h * w) as f64 / (hs * ws) as f64;
    let vae_ms = vae_small_ms * ratio;

    let timings = ChunkTimings { audio_ms, dit_step_ms: vec![step_ms; steps], vae_ms };
    let fpc = cfg.stream.frames_per_chunk(&cfg.vae);
    Ok(GeneratorBenchReport {
        config: cfg.name.clone(),
        device: spec.device.clone(),
        method: format!(
            "EXTRAPOLATED (full on CPU): audio branch measured as is ({audio_ms:.0} ms); DiT: one block at \
             {}x{} with only the reference frame cached took {block_ms:.0} ms, x {} blocks = {step_ms:.0} ms per step \
             (attention to a full window of cached frames is not included); VAE: full decoder on one chunk at {}x{} \
             took {vae_small_ms:.0} ms, x {ratio:.0} (pixel ratio) = {vae_ms:.0} ms; random weights",
            cfg.stream.width,
            cfg.stream.height,
            cfg.dit.num_layers,
            ws * s,
            hs * s
        ),
        fps: fpc as f64 / (timings.total_ms() / 1e3),
        frames_per_chunk: fpc,
        target_fps: cfg.stream.fps,
        chunks: vec![timings],
        peak_rss_mib: peak_rss_kib().map(|k| k as f64 / 1024.0),
        setup_ms: None,
        first_chunk_ms: None,
        gpu_memory: Vec::new(),
        profile: Vec::new(),
    })
}

/// Two decimals, or scientific notation for tiny values.
fn fmt_small(v: f64) -> String {
    if v == 0.0 || v.abs() >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.2e}")
    }
}

impl std::fmt::Display for GeneratorBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "bench generator: config {} on {}", self.config, self.device)?;
        writeln!(f, "method: {}", self.method)?;
        writeln!(f, "{:>5} {:>10} {:>28} {:>10} {:>10}", "chunk", "audio ms", "DiT steps ms", "VAE ms", "total ms")?;
        for (i, c) in self.chunks.iter().enumerate() {
            let steps: Vec<String> = c.dit_step_ms.iter().map(|s| format!("{s:.1}")).collect();
            writeln!(
                f,
                "{i:>5} {:>10.1} {:>28} {:>10.1} {:>10.1}",
                c.audio_ms,
                steps.join(" / "),
                c.vae_ms,
                c.total_ms()
            )?;
        }
        let n = self.chunks.len().max(1) as f64;
        let mean = |g: &dyn Fn(&ChunkTimings) -> f64| self.chunks.iter().map(g).sum::<f64>() / n;
        writeln!(
            f,
            "mean per chunk: audio {:.1} ms, DiT {:.1} ms ({} steps), VAE {:.1} ms, total {:.1} ms",
            mean(&|c| c.audio_ms),
            mean(&|c| c.dit_ms()),
            self.chunks.first().map_or(0, |c| c.dit_step_ms.len()),
            mean(&|c| c.vae_ms),
            mean(&|c| c.total_ms())
        )?;
        writeln!(
            f,
            "throughput: {} fps ({} frames per chunk; real time needs {} fps, {}x)",
            fmt_small(self.fps),
            self.frames_per_chunk,
            self.target_fps,
            fmt_small(self.fps / self.target_fps as f64)
        )?;
        let front = mean(&|c| c.audio_ms + c.dit_ms());
        let back = mean(&|c| c.vae_ms);
        let slowest = front.max(back);
        if slowest > 0.0 {
            writeln!(
                f,
                "pipelined pair estimate (1 / slowest stage; audio+DiT {front:.1} ms, VAE {back:.1} ms): {} fps \
                 [computed from stage times, not measured]",
                fmt_small(self.frames_per_chunk as f64 / (slowest / 1e3))
            )?;
        }
        if let Some(ms) = self.setup_ms {
            writeln!(f, "setup (weights on device, reference primed): {ms:.0} ms")?;
        }
        if let Some(ms) = self.first_chunk_ms {
            writeln!(f, "first chunk (first-frame latency once audio is there, warm-up included): {ms:.0} ms")?;
        }
        if !self.profile.is_empty() {
            writeln!(
                f,
                "profile (--profile: synchronised sections, ms per chunk; nested ones count in their parent too):"
            )?;
            for (name, ms, calls) in &self.profile {
                writeln!(f, "  {name:<22} {ms:>10.1} ms  ({calls:.0} calls)")?;
            }
        }
        for (ordinal, used, total) in &self.gpu_memory {
            writeln!(f, "GPU {ordinal}: {used:.0} MiB used of {total:.0} MiB (after the timed chunks)")?;
        }
        match self.peak_rss_mib {
            Some(m) => write!(f, "peak RSS (VmHWM): {m:.0} MiB"),
            None => write!(f, "peak RSS: unavailable"),
        }
    }
}
