//! `StreamingGenerator`: StreamAvatar's streaming inference behind
//! [`AvatarSource`].
//!
//! Start / reset: the reference image is fitted to the video size, VAE
//! encoded and normalised; the DiT caches its K/V as frame 0 at t = 0 (the
//! reference sink) and the streaming VAE decoder is primed with the reference
//! latent (its one output frame is discarded), so chunk 0 continues a video
//! that starts at the reference.
//!
//! Chunk k (latent frames `1 + k*C ..`, video frames `[12k, 12k + 12)`):
//! 1. audio: talk and listen windows go through wav2vec2 in one batch,
//!    each branch's features are multiplied by its voice-activity mask (after
//!    the encoder), and the shared projection turns them into
//!    `[1, C, tokens, D]` audio tokens;
//! 2. DiT: the few-step flow-matching schedule from seeded noise; every step
//!    reads the KV cache; only the last step commits the K/V of its input
//!    x_t (StreamAvatar) or, with `CacheUpdate::CleanRerun`, one extra pass
//!    on the clean x0 at t = 0 commits (Self-Forcing);
//! 3. VAE: the chunk's x0 is decoded by the session's streaming decoder
//!    (`DecoderKind`: the full Wan2.2 decoder, de-normalised first, or the
//!    light one) on the VAE device into 12 RGB frames. On a GPU pair the VAE
//!    stage runs on its own thread (`vae_stage`): `begin_chunk` returns once
//!    the DiT is done and the VAE of chunk k overlaps the DiT of chunk k+1;
//!    `finish_chunk` hands the frames over in order.
//!
//! Memory is bounded: the KV cache holds at most reference + sink chunk +
//! window (policy), the VAE cache two frames per causal conv, the audio
//! encoders one window plus a bounded slack (pushes beyond it are dropped
//! with a warning and counted).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::audio_branch::AudioBranch;
use super::devices::DevicePlan;
use super::frame_decoder::{DecoderKind, FrameDecoder};
use super::reference::{fit_reference, frame_to_tensor};
use super::vae_stage::VaeStage;
use super::{AvatarSource, ChunkTimings, GeneratorError, VideoChunk};
use crate::config::{CacheUpdate, ModelConfig};
use crate::media::frame::RgbFrame;
use crate::model::dit::{AudioTokens, TextContext, WanDit};
use crate::model::kv_cache::KvCache;
use crate::model::sampler::{predict_x0, renoise, FlowMatchSchedule, NoiseSource};
use crate::model::vae::{LightDecoder, WanVae};
use crate::model::weights::{load_prompt_embeds, Component, ModelWeights, SeededInitBackend};

/// Seed of the random weights used when a `tiny` model has no files.
pub const RANDOM_WEIGHTS_SEED: u64 = 0x5eed_a7a7;

/// Where the weights come from.
pub enum GeneratorWeights {
    /// safetensors files in any order (DiT, VAE, wav2vec2, our audio file;
    /// Wan or diffusers names).
    Files(Vec<PathBuf>),
    /// Files opened already.
    Opened(ModelWeights),
    /// Deterministic random weights (only sensible for `tiny`): the output is
    /// noise until trained weights exist.
    Random { seed: u64 },
    /// In-memory builders per component (tests, training hand-off).
    VarBuilders { dit: VarBuilder<'static>, vae: VarBuilder<'static>, wav2vec2: VarBuilder<'static> },
}

impl GeneratorWeights {
    /// Files when given; random weights for `tiny` otherwise (with a
    /// warning); an error for other presets.
    pub fn from_cli(config: &ModelConfig, files: &[String]) -> Result<Self, GeneratorError> {
        if !files.is_empty() {
            return Ok(Self::Files(files.iter().map(PathBuf::from).collect()));
        }
        if config.name == "tiny" {
            return Ok(Self::Random { seed: RANDOM_WEIGHTS_SEED });
        }
        if let Some(files) = bundled_weight_files(&config.name) {
            return Ok(Self::Files(files));
        }
        Err(GeneratorError::Model(format!(
            "config `{}` needs weight files (--weights ...; see weights/README.md){}",
            config.name,
            if config.name == "mini" { "; the bundled ones belong in weights/mini/ (docs/TRAINING.md)" } else { "" }
        )))
    }
}

/// The `*.safetensors` files of a config's bundled weights folder
/// `weights/<name>/`, looked up under `$STREAMAVATAR_WEIGHTS_DIR`, the
/// working directory, then the source checkout this binary was built from.
/// `None` when no such folder holds safetensors files.
pub fn bundled_weight_files(name: &str) -> Option<Vec<PathBuf>> {
    let mut roots = Vec::new();
    if let Some(dir) = std::env::var_os("STREAMAVATAR_WEIGHTS_DIR") {
        roots.push(PathBuf::from(dir));
    }
    roots.push(PathBuf::from("weights"));
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights"));
    roots.into_iter().find_map(|root| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(name))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        (!files.is_empty()).then_some(files)
    })
}

/// Run options.
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    /// `cpu` | `cuda:N` | `cuda:A,cuda:B` (DiT, VAE).
    pub device: String,
    /// Seed of the sampling noise; a stream is reproducible for a seed.
    pub seed: u64,
    /// Compute dtype instead of the device's default (f32 on CPU, bf16 on
    /// CUDA); f16 on CPU runs the half-precision code paths of the GPU.
    pub dtype: Option<DType>,
    /// Full Wan2.2 decoder or the light one (its weights: a TAEHV file among
    /// the weight files; seeded random ones with random model weights).
    pub decoder: DecoderKind,
    /// Run the VAE on its own thread, overlapping the next chunk's DiT.
    /// Default (None): on when the VAE has its own GPU (`cuda:A,cuda:B`,
    /// also `cuda:0,cuda:0`: two streams on one card).
    pub pipeline: Option<bool>,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self { device: "cpu".into(), seed: 0, dtype: None, decoder: DecoderKind::Full, pipeline: None }
    }
}

/// StreamAvatar streaming generator (see module docs).
pub struct StreamingGenerator {
    cfg: ModelConfig,
    plan: DevicePlan,
    seed: u64,
    dit: WanDit,
    text: TextContext,
    cache: KvCache,
    vae: WanVae,
    vae_stage: VaeStage,
    /// Audio and DiT timings of the chunks the VAE stage holds, oldest first.
    pending: std::collections::VecDeque<(u64, ChunkTimings)>,
    audio: AudioBranch,
    schedule: FlowMatchSchedule,
    noise: NoiseSource,
    /// Normalised reference latent `[1, z, 1, h, w]` on the DiT device.
    reference_latent: Tensor,
    /// Latent shape of one chunk `[1, z, C, h, w]`.
    chunk_shape: (usize, usize, usize, usize, usize),
    chunk_index: u64,
    dropped_samples: u64,
}

impl StreamingGenerator {
    /// Build the model, encode `reference` and prime the caches.
    pub fn new(
        config: ModelConfig,
        weights: GeneratorWeights,
        reference: &RgbFrame,
        options: &GeneratorOptions,
    ) -> Result<Self, GeneratorError> {
        config.validate().map_err(|e| GeneratorError::Model(e.to_string()))?;
        let mut plan = DevicePlan::parse(&options.device)?;
        if let Some(dtype) = options.dtype {
            plan.dtype = dtype;
        }
        let dtype = plan.dtype;
        let from_files = |w: &ModelWeights| {
            let light =
                w.has(Component::LightDecoder).then(|| w.var_builder(Component::LightDecoder, dtype, &plan.vae));
            (w.dit_vb(dtype, &plan.dit), w.vae_vb(dtype, &plan.vae), w.wav2vec2_vb(dtype, &plan.dit), light)
        };
        let (dit_vb, vae_vb, w2v_vb, light_vb) = match weights {
            GeneratorWeights::Files(paths) => {
                from_files(&ModelWeights::open(&paths).map_err(|e| GeneratorError::Model(e.to_string()))?)
            }
            GeneratorWeights::Opened(w) => from_files(&w),
            GeneratorWeights::Random { seed } => {
                tracing::warn!(
                    config = %config.name,
                    "no weight files: using deterministic random weights; the video is noise until trained weights exist"
                );
                (
                    SeededInitBackend::var_builder(seed, dtype, &plan.dit),
                    SeededInitBackend::var_builder(seed.wrapping_add(1), dtype, &plan.vae),
                    SeededInitBackend::var_builder(seed.wrapping_add(2), dtype, &plan.dit),
                    Some(SeededInitBackend::var_builder(seed.wrapping_add(3), dtype, &plan.vae)),
                )
            }
            GeneratorWeights::VarBuilders { dit, vae, wav2vec2 } => (dit, vae, wav2vec2, None),
        };

        let dit = WanDit::new(&config.dit, dit_vb.clone()).map_err(|e| GeneratorError::Model(format!("DiT: {e}")))?;
        if !dit.has_audio_attention() {
            return Err(GeneratorError::Model(
                "the DiT weights have no talk/listen audio attention (blocks.N.talk_audio_attn.*): \
                 add streamavatar_audio.safetensors (weights/README.md)"
                    .into(),
            ));
        }
        let prompt = load_prompt_embeds(&dit_vb, config.dit.text_len, config.dit.text_dim)
            .map_err(|e| GeneratorError::Model(e.to_string()))?;
        let text = dit.text_context(&prompt).map_err(|e| GeneratorError::Model(format!("prompt: {e}")))?;
        let cache = KvCache::from_stream(dit.num_layers(), &config.stream);

        let vae = WanVae::new(&config.vae, vae_vb).map_err(|e| GeneratorError::Model(format!("VAE: {e}")))?;
        let frame_decoder = match options.decoder {
            DecoderKind::Full => {
                let mut decoder = vae.streaming_decoder();
                if !plan.vae.is_cpu() {
                    // Frame by frame on a GPU: the full decoder's activations for a
                    // whole chunk at 1280x704 overflow an 80 GB card (measured).
                    decoder.set_max_step_frames(1);
                }
                FrameDecoder::Full { decoder, norm: vae.latent_norm().clone() }
            }
            DecoderKind::Light => {
                let vb = light_vb.ok_or_else(|| {
                    GeneratorError::Model(
                        "--decoder light needs the light decoder's weights: add a TAEHV file \
                         (taew2_2.safetensors, madebyollin/taehv) to the weight files (docs/GPU.md)"
                            .into(),
                    )
                })?;
                let light = LightDecoder::new(&config.light_decoder, &config.vae, vb)
                    .map_err(|e| GeneratorError::Model(format!("light decoder: {e}")))?;
                FrameDecoder::Light(light.streaming())
            }
        };
        let pipelined = options.pipeline.unwrap_or(!plan.vae.is_cpu() && !plan.vae.same_device(&plan.dit));
        let vae_stage = if pipelined {
            VaeStage::worker(frame_decoder, plan.vae.clone())?
        } else {
            VaeStage::inline(frame_decoder, plan.vae.clone())
        };

        let audio = AudioBranch::new(&config, w2v_vb, dit_vb.pp("audio_proj"))?;
        let schedule =
            FlowMatchSchedule::from_config(&config.stream).map_err(|e| GeneratorError::Model(e.to_string()))?;

        let s = config.vae.scale_factor_spatial;
        let chunk_shape =
            (1, config.vae.z_dim, config.stream.chunk_frames, config.stream.height / s, config.stream.width / s);
        // Overwritten by `start` below, which encodes the reference image.
        let reference_latent = Tensor::zeros((1, config.vae.z_dim, 1, chunk_shape.3, chunk_shape.4), dtype, &plan.dit)
            .map_err(|e| GeneratorError::Model(e.to_string()))?;
        let mut gen = Self {
            cfg: config,
            plan,
            seed: options.seed,
            dit,
            text,
            cache,
            vae,
            vae_stage,
            pending: std::collections::VecDeque::new(),
            audio,
            schedule,
            noise: NoiseSource::new(options.seed),
            reference_latent,
            chunk_shape,
            chunk_index: 0,
            dropped_samples: 0,
        };
        gen.start(Some(reference))?;
        Ok(gen)
    }

    /// (Re)start the stream at chunk 0; a new reference is encoded first.
    fn start(&mut self, reference: Option<&RgbFrame>) -> Result<(), GeneratorError> {
        if let Some(frame) = reference {
            let fitted = fit_reference(frame, self.cfg.stream.width, self.cfg.stream.height)?;
            let image = frame_to_tensor(&fitted, self.plan.dtype, &self.plan.vae)?;
            let mu = self.vae.encode_image(&image).map_err(|e| GeneratorError::Model(format!("VAE encode: {e}")))?;
            let z = self.vae.latent_norm().normalize(&mu).map_err(|e| GeneratorError::Model(e.to_string()))?;
            self.reference_latent = z.to_device(&self.plan.dit).map_err(|e| GeneratorError::Model(e.to_string()))?;
        }
        self.dit
            .prime_reference(&self.reference_latent, &self.text, None, &mut self.cache)
            .map_err(|e| GeneratorError::Model(format!("DiT reference: {e}")))?;
        // The reference decodes to one frame; it only primes the decoder's
        // caches. Chunks still in the VAE stage are dropped.
        self.pending.clear();
        self.vae_stage.prime(&self.reference_latent).map_err(|e| match e {
            GeneratorError::Model(m) => GeneratorError::Model(format!("{m} (reference frame)")),
            other => other,
        })?;
        self.audio.reset();
        self.noise = NoiseSource::new(self.seed);
        self.chunk_index = 0;
        Ok(())
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn devices(&self) -> &DevicePlan {
        &self.plan
    }

    pub fn schedule(&self) -> &FlowMatchSchedule {
        &self.schedule
    }

    /// Latent frames in the DiT KV cache (reference included).
    pub fn cache_frames(&self) -> usize {
        self.cache.num_frames()
    }

    /// Upper bound of [`cache_frames`](Self::cache_frames).
    pub fn cache_max_frames(&self) -> usize {
        self.cache.policy().max_frames()
    }

    /// Samples buffered by the (talk, listen) audio encoders.
    pub fn audio_buffered_samples(&self) -> (usize, usize) {
        (self.audio.talk.buffered_samples(), self.audio.listen.buffered_samples())
    }

    /// Samples refused since start because a branch's buffer was full or
    /// held non-finite values.
    pub fn dropped_audio_samples(&self) -> u64 {
        self.dropped_samples
    }

    fn push(&mut self, talk: bool, pcm: &[f32]) {
        let enc = if talk { &mut self.audio.talk } else { &mut self.audio.listen };
        if let Err(e) = enc.push(pcm) {
            self.dropped_samples += pcm.len() as u64;
            tracing::warn!(branch = if talk { "talk" } else { "listen" }, error = %e, "audio dropped");
        }
    }

    /// Denoise one chunk; returns the clean normalised latent and the
    /// duration of every DiT forward.
    fn denoise(&mut self, audio: &AudioTokens, chunk_start: usize) -> Result<(Tensor, Vec<f64>), GeneratorError> {
        let e = |err: String| GeneratorError::Model(format!("sampler: {err}"));
        let dev = self.plan.dit.clone();
        let dt = self.dit.dtype();
        let shape = self.chunk_shape;
        let shape = [shape.0, shape.1, shape.2, shape.3, shape.4];
        let mut x = self.noise.sample(shape.as_slice(), DType::F32, &dev).map_err(|er| e(er.to_string()))?;
        let steps = self.schedule.steps().to_vec();
        let last = steps.len() - 1;
        let commit_last = self.cfg.stream.cache_update == CacheUpdate::LastStep;
        let mut times = Vec::with_capacity(steps.len() + 1);
        let mut x0 = x.clone();
        for (i, step) in steps.iter().enumerate() {
            let t0 = Instant::now();
            let t = Tensor::new(&[step.timestep as f32], &dev).map_err(|er| e(er.to_string()))?;
            let input = x.to_dtype(dt).map_err(|er| e(er.to_string()))?;
            let v = self
                .dit
                .forward_chunk(
                    &input,
                    &t,
                    &self.text,
                    Some(audio),
                    &mut self.cache,
                    chunk_start,
                    commit_last && i == last,
                )
                .map_err(|er| GeneratorError::Model(format!("DiT step {i}: {er}")))?;
            let v = v.to_dtype(DType::F32).map_err(|er| e(er.to_string()))?;
            x0 = predict_x0(&x, &v, step.sigma).map_err(|er| e(er.to_string()))?;
            if i < last {
                let fresh = self.noise.sample(shape.as_slice(), DType::F32, &dev).map_err(|er| e(er.to_string()))?;
                x = renoise(&x0, &fresh, self.schedule.next_sigma(i)).map_err(|er| e(er.to_string()))?;
            }
            self.plan.synchronize();
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        if !commit_last {
            let t0 = Instant::now();
            let t = Tensor::new(&[0f32], &dev).map_err(|er| e(er.to_string()))?;
            let input = x0.to_dtype(dt).map_err(|er| e(er.to_string()))?;
            self.dit
                .forward_chunk(&input, &t, &self.text, Some(audio), &mut self.cache, chunk_start, true)
                .map_err(|er| GeneratorError::Model(format!("DiT clean re-run: {er}")))?;
            self.plan.synchronize();
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok((x0, times))
    }

    /// A decoded chunk with its audio/DiT timings, checked.
    fn chunk_done(&mut self, decoded: super::vae_stage::Decoded) -> Result<VideoChunk, GeneratorError> {
        let (index, mut timings) = self.pending.pop_front().ok_or_else(|| {
            GeneratorError::Model(format!("VAE stage returned chunk {} that was not submitted", decoded.index))
        })?;
        if index != decoded.index {
            return Err(GeneratorError::Model(format!(
                "VAE stage returned chunk {} while chunk {index} was expected",
                decoded.index
            )));
        }
        let frames = decoded.frames?;
        timings.vae_ms = decoded.vae_ms;
        if frames.len() != self.frames_per_chunk() {
            return Err(GeneratorError::Model(format!(
                "VAE produced {} frames, expected {}",
                frames.len(),
                self.frames_per_chunk()
            )));
        }
        tracing::debug!(
            index,
            audio_ms = timings.audio_ms,
            dit_ms = timings.dit_ms(),
            vae_ms = timings.vae_ms,
            "chunk done"
        );
        Ok(VideoChunk { index, audio_sample_start: index * self.samples_per_chunk() as u64, frames, timings })
    }

    fn needed_and_have(&self) -> (usize, usize) {
        let needed = self.audio.talk.samples_needed().max(self.audio.listen.samples_needed());
        let have = self.audio.talk.pushed_samples().min(self.audio.listen.pushed_samples());
        (needed as usize, have as usize)
    }
}

impl AvatarSource for StreamingGenerator {
    fn fps(&self) -> u32 {
        self.cfg.stream.fps
    }

    fn frame_size(&self) -> (usize, usize) {
        (self.cfg.stream.width, self.cfg.stream.height)
    }

    fn frames_per_chunk(&self) -> usize {
        self.cfg.stream.frames_per_chunk(&self.cfg.vae)
    }

    fn samples_per_chunk(&self) -> usize {
        self.audio.talk.geometry().samples_per_chunk as usize
    }

    fn lookahead_samples(&self) -> usize {
        self.audio.talk.geometry().lookahead_samples as usize
    }

    fn push_talk(&mut self, pcm_16k: &[f32]) {
        self.push(true, pcm_16k);
    }

    fn push_listen(&mut self, pcm_16k: &[f32]) {
        self.push(false, pcm_16k);
    }

    fn ready(&self) -> bool {
        self.audio.talk.ready() && self.audio.listen.ready()
    }

    fn next_chunk(&mut self) -> Result<VideoChunk, GeneratorError> {
        if self.vae_stage.in_flight() > 0 {
            return Err(GeneratorError::Model("chunks are in flight: finish_chunk them first".into()));
        }
        self.begin_chunk()?;
        self.finish_chunk()
    }

    fn pipeline_depth(&self) -> usize {
        if self.vae_stage.is_pipelined() {
            2
        } else {
            1
        }
    }

    fn begin_chunk(&mut self) -> Result<(), GeneratorError> {
        if !self.ready() {
            let (needed, have) = self.needed_and_have();
            return Err(GeneratorError::NotEnoughAudio { needed, have });
        }
        let index = self.chunk_index;
        let _span = tracing::info_span!("chunk", index).entered();
        let mut timings = ChunkTimings::default();

        let t0 = Instant::now();
        let audio = self.audio.next_tokens(self.dit.dtype())?;
        self.plan.synchronize();
        timings.audio_ms = t0.elapsed().as_secs_f64() * 1e3;

        let chunk_start = 1 + index as usize * self.cfg.stream.chunk_frames;
        let (x0, steps) = self.denoise(&audio, chunk_start)?;
        timings.dit_step_ms = steps;
        let z = x0.to_dtype(self.plan.dtype).map_err(|e| GeneratorError::Model(e.to_string()))?;
        self.plan.synchronize();
        self.vae_stage.submit(index, z)?;
        self.pending.push_back((index, timings));
        self.chunk_index += 1;
        Ok(())
    }

    fn finish_chunk(&mut self) -> Result<VideoChunk, GeneratorError> {
        let decoded = self.vae_stage.collect()?;
        self.chunk_done(decoded)
    }

    fn try_finish_chunk(&mut self) -> Option<Result<VideoChunk, GeneratorError>> {
        let decoded = self.vae_stage.try_collect()?;
        Some(decoded.and_then(|d| self.chunk_done(d)))
    }

    fn chunks_in_flight(&self) -> usize {
        self.vae_stage.in_flight()
    }

    fn reset(&mut self, reference: Option<&RgbFrame>) -> Result<(), GeneratorError> {
        self.start(reference)
    }
}
