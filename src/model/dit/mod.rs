//! The Wan2.2 DiT (diffusers `WanTransformer3DModel`, TI2V-5B flavour: no
//! image branch, per-token timesteps) with StreamAvatar's talk/listen audio
//! attention ([`audio`]), run either over a whole clip ([`WanDit::forward`],
//! bidirectional = diffusers, or block-causal) or chunk by chunk against a
//! rolling KV cache with reference sink and RAPR positions
//! ([`WanDit::prime_reference`], [`WanDit::forward_chunk`]).
//!
//! Weights use the diffusers names (`patch_embedding`, `condition_embedder.*`,
//! `blocks.N.{attn1,attn2,norm2,ffn,scale_shift_table}`, `proj_out`,
//! `scale_shift_table`) plus, optionally, `blocks.N.{norm_talk,
//! talk_audio_attn, norm_listen, listen_audio_attn}`. Without the audio
//! weights the model is exactly diffusers' `WanTransformer3DModel`.
//!
//! Streaming usage (one session):
//! ```text
//! let text = dit.text_context(&prompt_embeds)?;             // once
//! let mut cache = KvCache::from_stream(dit.num_layers(), &stream_cfg);
//! dit.prime_reference(&ref_latent, &text, ref_audio, &mut cache)?;   // frame 0, t = 0
//! for each chunk k (s = 1 + k*C):
//!     for each denoising step i:
//!         v = dit.forward_chunk(&x_t, &t_i, &text, Some(&audio_k), &mut cache, s, commit = last step)?;
//! ```
//! The returned tensor is the flow-matching velocity exactly as diffusers
//! returns it (`[B, out_channels, F, H, W]`); the sampler steps with it.

mod audio;
mod block;
pub mod cuda_kernels;
mod embed;
mod norm;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use crate::config::{DitConfig, DitPrediction, SAMPLE_PREDICTION_MIN_SIGMA};
use crate::model::kv_cache::{KvCache, KvCacheError, LayerKv, PreparedPast};
use crate::model::rope::WanRope;
use block::{DitBlock, PastKv, SelfAttnInput};
use embed::{unpatchify, ConditionEmbedder, PatchEmbedding};
use norm::{modulate, Fp32LayerNorm};

/// Errors of the DiT.
#[derive(Debug, thiserror::Error)]
pub enum DitError {
    #[error("bad input `{name}`: {msg}")]
    BadInput { name: &'static str, msg: String },
    #[error("bad DiT weights or config: {0}")]
    Weights(String),
    #[error("audio tokens were given but the checkpoint has no talk/listen audio attention weights")]
    AudioNotSupported,
    #[error(transparent)]
    Cache(#[from] KvCacheError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn bad(name: &'static str, msg: impl Into<String>) -> DitError {
    DitError::BadInput { name, msg: msg.into() }
}

/// Audio tokens already projected to the DiT width, one group per latent
/// frame: `talk` is `[B, F, audio_tokens_per_frame, D]`; `listen` is the
/// same, optionally preceded by up to `DitConfig::listen_lookback_frames`
/// earlier frames (a stream's history; when fewer are given, the first
/// frame stands in for the missing ones).
#[derive(Debug, Clone)]
pub struct AudioTokens {
    pub talk: Tensor,
    pub listen: Tensor,
}

/// Self-attention pattern of [`WanDit::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMask {
    /// Every token sees every token (diffusers).
    Bidirectional,
    /// Frame 0 (reference) is its own block, then blocks of `chunk_frames`
    /// frames; bidirectional inside a block, causal across blocks. Equals
    /// streaming with [`WanDit::forward_chunk`] (no eviction, `s <= D`).
    BlockCausal { chunk_frames: usize },
}

/// The fixed prompt, embedded once: per-block text cross-attention K / V
/// (`[B, heads, text_len, head_dim]`).
#[derive(Debug, Clone)]
pub struct TextContext {
    per_block: Vec<(Tensor, Tensor)>,
}

impl TextContext {
    pub fn batch(&self) -> usize {
        self.per_block.first().and_then(|(k, _)| k.dim(0).ok()).unwrap_or(0)
    }
}

/// The Wan2.2 DiT with StreamAvatar audio attention.
#[derive(Debug, Clone)]
pub struct WanDit {
    cfg: DitConfig,
    patch_embedding: PatchEmbedding,
    condition_embedder: ConditionEmbedder,
    blocks: Vec<DitBlock>,
    norm_out: Fp32LayerNorm,
    proj_out: Linear,
    /// `[1, 1, 2, D]` f32.
    scale_shift_table: Tensor,
    rope: WanRope,
    dtype: DType,
    device: Device,
}

impl WanDit {
    /// Load from a VarBuilder with diffusers names; its dtype (f32 / bf16 /
    /// f16) is the compute dtype (norms, modulation and the time embedder
    /// stay f32). Audio attention is loaded when `blocks.0.talk_audio_attn`
    /// is present (then it must be present in every block).
    pub fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self, DitError> {
        let dim = cfg.hidden_size();
        if cfg.num_layers == 0 || cfg.patch_size.contains(&0) {
            return Err(DitError::Weights("num_layers and patch_size must be >= 1".into()));
        }
        let rope = WanRope::new(cfg.attention_head_dim).map_err(|e| DitError::Weights(e.to_string()))?;
        let dtype = vb.dtype();
        let device = vb.device().clone();

        let blocks_vb = vb.pp("blocks");
        let (talk0, listen0) = audio::BlockAudioAttention::present(&blocks_vb.pp("0"));
        let with_audio = talk0 && listen0;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let bvb = blocks_vb.pp(i.to_string());
            let (talk, listen) = audio::BlockAudioAttention::present(&bvb);
            if talk != with_audio || listen != with_audio {
                return Err(DitError::Weights(format!(
                    "block {i}: talk/listen audio attention present = ({talk}, {listen}); \
                     need both in every block or none"
                )));
            }
            blocks.push(DitBlock::new(cfg, with_audio, bvb)?);
        }
        let out_dim = cfg.out_channels * cfg.patch_size.iter().product::<usize>();
        Ok(Self {
            patch_embedding: PatchEmbedding::new(cfg.in_channels, dim, cfg.patch_size, vb.pp("patch_embedding"))?,
            condition_embedder: ConditionEmbedder::new(cfg.freq_dim, dim, cfg.text_dim, vb.pp("condition_embedder"))?,
            blocks,
            norm_out: Fp32LayerNorm::plain(dim, cfg.eps, &device)?,
            proj_out: candle_nn::linear(dim, out_dim, vb.pp("proj_out"))?,
            scale_shift_table: vb.to_dtype(DType::F32).get((1, 2, dim), "scale_shift_table")?.unsqueeze(0)?,
            rope,
            dtype,
            device,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// True when the checkpoint has talk/listen audio attention.
    pub fn has_audio_attention(&self) -> bool {
        self.blocks.first().is_some_and(|b| b.has_audio())
    }

    /// Embed the prompt (`[B, Lt, text_dim]`, the text encoder output;
    /// zero-padded here to `text_len` when shorter, as Wan does) and
    /// precompute every block's text K / V.
    pub fn text_context(&self, prompt_embeds: &Tensor) -> Result<TextContext, DitError> {
        let (b, lt, d) = prompt_embeds
            .dims3()
            .map_err(|_| bad("prompt_embeds", format!("expected [B, Lt, text_dim], got {:?}", prompt_embeds.dims())))?;
        if d != self.cfg.text_dim || lt == 0 || lt > self.cfg.text_len || b == 0 {
            return Err(bad(
                "prompt_embeds",
                format!("got {:?}, need [B, 1..={}, {}]", prompt_embeds.dims(), self.cfg.text_len, self.cfg.text_dim),
            ));
        }
        let text = prompt_embeds.to_device(&self.device)?.to_dtype(self.dtype)?;
        let text = if lt < self.cfg.text_len {
            let pad = Tensor::zeros((b, self.cfg.text_len - lt, d), self.dtype, &self.device)?;
            Tensor::cat(&[&text, &pad], 1)?
        } else {
            text
        };
        let emb = self.condition_embedder.text(&text)?;
        let per_block = self.blocks.iter().map(|blk| blk.text_kv(&emb)).collect::<Result<_, _>>()?;
        Ok(TextContext { per_block })
    }

    /// Whole-clip forward. `latents`: `[B, in_channels, F, H, W]`;
    /// `timesteps`: `[B, F]` (one per latent frame, expanded to its tokens —
    /// diffusers' per-token `timestep` of Wan2.2 TI2V) or `[B]`; `audio`:
    /// optional talk/listen tokens for the F frames. Returns the velocity
    /// `[B, out_channels, F, H, W]`.
    pub fn forward(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        text: &TextContext,
        audio: Option<&AudioTokens>,
        mask: AttentionMask,
    ) -> Result<Tensor, DitError> {
        let grid = self.grid(latents)?;
        let (cos, sin, mask) = self.clip_rope_and_mask(grid, mask)?;
        let (out, _) = self.run(latents, timesteps, text, audio, grid, (&cos, &sin), mask.as_ref(), None, false)?;
        Ok(out)
    }

    /// Whole-clip forward (inputs as [`forward`](Self::forward)) that stops
    /// after the deepest block in `taps` and returns the hidden states
    /// `[B, F * tokens_per_frame, D]` after each tapped block (0-based), in
    /// the order of `taps`: the DiT as a feature backbone (the GAN stage's
    /// discriminator, train/discriminator.rs).
    pub fn block_features(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        text: &TextContext,
        audio: Option<&AudioTokens>,
        mask: AttentionMask,
        taps: &[usize],
    ) -> Result<Vec<Tensor>, DitError> {
        let deepest = match taps.iter().max() {
            Some(&d) if d < self.blocks.len() => d,
            _ => return Err(bad("taps", format!("{taps:?}: need 1+ block indices below {}", self.blocks.len()))),
        };
        let grid = self.grid(latents)?;
        let (cos, sin, mask) = self.clip_rope_and_mask(grid, mask)?;
        let Embedded { mut x, timestep_proj, text_kv, audio, .. } =
            self.embed(latents, timesteps, text, audio, grid.0)?;
        let mut out = vec![None; taps.len()];
        for (i, block) in self.blocks.iter().enumerate().take(deepest + 1) {
            let sa = SelfAttnInput { cos: &cos, sin: &sin, mask: mask.as_ref(), past: None, collect_kv: false };
            x = block.forward(&x, &timestep_proj, &sa, &text_kv[i], audio.as_ref().map(|(t, l)| (t, l)))?.0;
            for (slot, _) in out.iter_mut().zip(taps).filter(|(_, &tap)| tap == i) {
                *slot = Some(x.clone());
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// RoPE tables (positions 0..F) and the optional block-causal mask of a
    /// whole-clip forward.
    fn clip_rope_and_mask(
        &self,
        grid: (usize, usize, usize),
        mask: AttentionMask,
    ) -> Result<(Tensor, Tensor, Option<Tensor>), DitError> {
        let positions: Vec<usize> = (0..grid.0).collect();
        let (cos, sin) = self.rope.cos_sin(&positions, grid.1, grid.2, &self.device)?;
        let mask = match mask {
            AttentionMask::Bidirectional => None,
            AttentionMask::BlockCausal { chunk_frames } => {
                Some(block_causal_mask(grid.0, grid.1 * grid.2, chunk_frames, &self.device)?)
            }
        };
        Ok((cos, sin, mask))
    }

    /// Streaming forward of one chunk of `Fc` latent frames starting at
    /// absolute latent frame `chunk_start` (reference = 0, chunks at
    /// 1, 1 + C, ...). Self-attention covers the cached frames (keys
    /// re-rotated with the cache policy's RAPR / absolute positions) plus
    /// the chunk itself (bidirectional). `chunk`: `[B, in_channels, Fc, H, W]`;
    /// `timesteps`: `[B, Fc]` or `[B]`; `audio`: the chunk's `Fc` frames.
    /// With `commit` the chunk's un-roped K / V are appended to `cache`
    /// (evicting the oldest window chunk when full). Returns the velocity.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_chunk(
        &self,
        chunk: &Tensor,
        timesteps: &Tensor,
        text: &TextContext,
        audio: Option<&AudioTokens>,
        cache: &mut KvCache,
        chunk_start: usize,
        commit: bool,
    ) -> Result<Tensor, DitError> {
        let grid = self.grid(chunk)?;
        let (nf, nh, nw) = grid;
        if cache.num_layers() != self.blocks.len() {
            return Err(bad("cache", format!("{} layers, the model has {}", cache.num_layers(), self.blocks.len())));
        }
        if !cache.is_empty() && chunk_start < cache.next_frame() {
            return Err(bad(
                "chunk_start",
                format!("{chunk_start} overlaps the cache (next free frame {})", cache.next_frame()),
            ));
        }
        let batch = chunk.dim(0)?;
        if cache.batch().is_some_and(|cb| cb != batch) {
            return Err(bad("chunk", format!("batch {batch}, the cache holds batch {:?}", cache.batch())));
        }
        if let Some(tpf) = cache.tokens_per_frame() {
            if tpf != nh * nw {
                return Err(bad("chunk", format!("{} tokens per frame, cache holds {tpf}", nh * nw)));
            }
        }
        if chunk_start == 0 && nf != 1 {
            return Err(bad("chunk", "the reference chunk (frame 0) must be exactly 1 latent frame"));
        }
        let positions = cache.policy().positions;
        let current: Vec<usize> = (0..nf).map(|j| positions.position(chunk_start + j, chunk_start)).collect();
        let (cos, sin) = self.rope.cos_sin(&current, nh, nw, &self.device)?;
        if !cache.is_empty() && cache.prepared(chunk_start).is_none() {
            // Rotate the cache for this chunk once; its other denoising steps reuse it.
            let (past_cos, past_sin) =
                self.rope.cos_sin(&cache.temporal_positions(chunk_start), nh, nw, &self.device)?;
            let mut layers = Vec::with_capacity(self.blocks.len());
            for (i, block) in self.blocks.iter().enumerate() {
                let kv = cache.layer(i)?.ok_or_else(|| bad("cache", "a non-empty cache without layer K/V"))?;
                layers.push(block.prepare_past(&kv, &past_cos, &past_sin)?);
            }
            cache.set_prepared(PreparedPast { chunk_start, layers })?;
        }
        let past = cache.prepared(chunk_start);
        let (out, kvs) = self.run(chunk, timesteps, text, audio, grid, (&cos, &sin), None, past, commit)?;
        if commit {
            cache.append(chunk_start, nf, kvs)?;
        }
        Ok(out)
    }

    /// Start a stream: clear `cache`, run the clean reference latent
    /// (`[B, in_channels, 1, H, W]`) at t = 0 as frame 0 and commit its K / V
    /// (the reference sink). Returns its velocity (rarely needed).
    pub fn prime_reference(
        &self,
        reference: &Tensor,
        text: &TextContext,
        audio: Option<&AudioTokens>,
        cache: &mut KvCache,
    ) -> Result<Tensor, DitError> {
        cache.clear();
        let b = reference.dim(0).map_err(|_| bad("reference", "expected [B, C, 1, H, W]"))?;
        let t = Tensor::zeros((b, 1), DType::F32, &self.device)?;
        self.forward_chunk(reference, &t, text, audio, cache, 0, true)
    }

    /// (frames, rows, columns) of the token grid of `latents`, validated.
    fn grid(&self, latents: &Tensor) -> Result<(usize, usize, usize), DitError> {
        let (_, c, f, h, w) = latents
            .dims5()
            .map_err(|_| bad("latents", format!("expected [B, C, F, H, W], got {:?}", latents.dims())))?;
        let [pt, ph, pw] = self.cfg.patch_size;
        if c != self.cfg.in_channels || f == 0 || h == 0 || w == 0 || f % pt != 0 || h % ph != 0 || w % pw != 0 {
            return Err(bad(
                "latents",
                format!(
                    "got {:?}: need {} channels and F/H/W non-zero multiples of the patch {:?}",
                    latents.dims(),
                    self.cfg.in_channels,
                    self.cfg.patch_size
                ),
            ));
        }
        Ok((f / pt, h / ph, w / pw))
    }

    /// Timesteps `[B, F]` or `[B]` -> f32 `[B, F]`.
    fn frame_timesteps(&self, timesteps: &Tensor, b: usize, frames: usize) -> Result<Tensor, DitError> {
        let t = timesteps.to_device(&self.device)?.to_dtype(DType::F32)?;
        match *t.dims() {
            [tb, tf] if tb == b && tf == frames => Ok(t),
            [tb] if tb == b => Ok(t.unsqueeze(1)?.repeat((1, frames))?),
            _ => Err(bad("timesteps", format!("got {:?}, need [{b}, {frames}] or [{b}]", timesteps.dims()))),
        }
    }

    /// Validate audio tokens for `frames` latent frames; None when absent.
    /// The inputs every forward starts from: patch-embedded latents, the
    /// time embedding and its projection, per-block text K / V for the
    /// batch, and the checked audio tokens.
    fn embed(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        text: &TextContext,
        audio: Option<&AudioTokens>,
        frames: usize,
    ) -> Result<Embedded, DitError> {
        let b = latents.dim(0)?;
        let t = self.frame_timesteps(timesteps, b, frames)?;
        let audio = self.audio_inputs(audio, b, frames)?;
        let text_kv = self.text_for_batch(text, b)?;
        let x = latents.to_device(&self.device)?.to_dtype(self.dtype)?;
        let x = self.patch_embedding.forward(&x)?;
        let (temb, timestep_proj) = self.condition_embedder.time(&t)?;
        Ok(Embedded { x, temb, timestep_proj, text_kv, audio })
    }

    fn audio_inputs(
        &self,
        audio: Option<&AudioTokens>,
        b: usize,
        frames: usize,
    ) -> Result<Option<(Tensor, Tensor)>, DitError> {
        let Some(a) = audio else { return Ok(None) };
        if !self.has_audio_attention() {
            return Err(DitError::AudioNotSupported);
        }
        let (n, d, lookback) =
            (self.cfg.audio_tokens_per_frame, self.cfg.hidden_size(), self.cfg.listen_lookback_frames);
        let want = [b, frames, n, d];
        if a.talk.dims() != want {
            return Err(bad("audio.talk", format!("got {:?}, need {want:?}", a.talk.dims())));
        }
        // Listen: the frames' own tokens, optionally after up to `lookback`
        // earlier frames' (a stream's history); missing history repeats the
        // first frame given.
        let history = match *a.listen.dims() {
            [lb, lf, ln, ld] if lb == b && ln == n && ld == d && lf >= frames && lf - frames <= lookback => lf - frames,
            _ => {
                return Err(bad(
                    "audio.listen",
                    format!(
                        "got {:?}, need [{b}, {frames} + h, {n}, {d}] with 0 <= h <= {lookback} history frames",
                        a.listen.dims()
                    ),
                ))
            }
        };
        let listen = match lookback - history {
            0 => a.listen.clone(),
            missing => {
                let first = a.listen.narrow(1, 0, 1)?;
                Tensor::cat(&[&first.repeat((1, missing, 1, 1))?, &a.listen], 1)?
            }
        };
        Ok(Some((a.talk.clone(), listen)))
    }

    /// Text K / V of every block, repeated to batch `b` when given for batch 1.
    fn text_for_batch(&self, text: &TextContext, b: usize) -> Result<Vec<(Tensor, Tensor)>, DitError> {
        if text.per_block.len() != self.blocks.len() {
            return Err(bad("text", "TextContext was built by a different model"));
        }
        match text.batch() {
            tb if tb == b => Ok(text.per_block.clone()),
            1 => text.per_block.iter().map(|(k, v)| Ok((k.repeat((b, 1, 1, 1))?, v.repeat((b, 1, 1, 1))?))).collect(),
            tb => Err(bad("text", format!("batch {tb} does not match latents batch {b}"))),
        }
    }

    /// Embed, run all blocks, apply the output head. `past`: the cache and
    /// the RoPE tables of its frames. Returns the velocity and, when
    /// `collect_kv`, every layer's un-roped K / V of the input tokens.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        text: &TextContext,
        audio: Option<&AudioTokens>,
        grid: (usize, usize, usize),
        rope: (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        past: Option<&PreparedPast>,
        collect_kv: bool,
    ) -> Result<(Tensor, Vec<LayerKv>), DitError> {
        let Embedded { mut x, temb, timestep_proj, text_kv, audio } =
            self.embed(latents, timesteps, text, audio, grid.0)?;

        let mut kvs = Vec::with_capacity(if collect_kv { self.blocks.len() } else { 0 });
        for (i, block) in self.blocks.iter().enumerate() {
            let sa = SelfAttnInput {
                cos: rope.0,
                sin: rope.1,
                mask,
                past: past.map(|p| PastKv { k: &p.layers[i].0, v: &p.layers[i].1 }),
                collect_kv,
            };
            let (y, kv) = block.forward(&x, &timestep_proj, &sa, &text_kv[i], audio.as_ref().map(|(t, l)| (t, l)))?;
            x = y;
            kvs.extend(kv);
        }

        // Output head: norm_out * (1 + scale) + shift, per frame, in f32.
        let m = self.scale_shift_table.broadcast_add(&temb.to_dtype(DType::F32)?.unsqueeze(2)?)?; // [B, F, 2, D]
        let x = modulate(&self.norm_out, &x, &m.narrow(2, 0, 1)?, &m.narrow(2, 1, 1)?, self.dtype)?;
        let x = self.proj_out.forward(&x)?;
        let head = unpatchify(&x, grid, self.cfg.patch_size, self.cfg.out_channels)?;
        Ok((self.velocity_from_head(latents, timesteps, head)?, kvs))
    }

    /// The flow velocity from the output head's values `head`
    /// (`[B, C, F, H, W]`): the head itself for [`DitPrediction::Velocity`];
    /// `(x_t - head) / max(sigma, SAMPLE_PREDICTION_MIN_SIGMA)` per frame for
    /// [`DitPrediction::Sample`] (see its docs), in f32, returned in the
    /// head's dtype.
    fn velocity_from_head(&self, latents: &Tensor, timesteps: &Tensor, head: Tensor) -> Result<Tensor, DitError> {
        if self.cfg.prediction == DitPrediction::Velocity {
            return Ok(head);
        }
        let (b, _, frames, _, _) = head.dims5()?;
        let sigma = self.frame_timesteps(timesteps, b, frames)?.affine(1e-3, 0.0)?;
        let sigma = sigma.maximum(SAMPLE_PREDICTION_MIN_SIGMA)?.reshape((b, 1, frames, 1, 1))?;
        let xt = latents.to_device(head.device())?.to_dtype(DType::F32)?;
        let v = (xt - head.to_dtype(DType::F32)?)?.broadcast_div(&sigma)?;
        Ok(v.to_dtype(head.dtype())?)
    }
}

/// Additive f32 mask `[L, L]` for `frames` frames of `tokens_per_frame`
/// tokens: frame 0 is block 0, then blocks of `chunk_frames` frames; a
/// token sees the tokens of its own and earlier blocks.
pub fn block_causal_mask(
    frames: usize,
    tokens_per_frame: usize,
    chunk_frames: usize,
    device: &Device,
) -> Result<Tensor, DitError> {
    if chunk_frames == 0 {
        return Err(bad("mask", "chunk_frames must be >= 1"));
    }
    let block = |f: usize| {
        if f == 0 {
            0
        } else {
            1 + (f - 1) / chunk_frames
        }
    };
    let l = frames * tokens_per_frame;
    let mut m = Vec::with_capacity(l * l);
    for q in 0..l {
        let bq = block(q / tokens_per_frame);
        m.extend((0..l).map(|k| if block(k / tokens_per_frame) <= bq { 0f32 } else { f32::NEG_INFINITY }));
    }
    Ok(Tensor::from_vec(m, (l, l), device)?)
}

/// See [`WanDit::embed`].
struct Embedded {
    x: Tensor,
    temb: Tensor,
    timestep_proj: Tensor,
    text_kv: Vec<(Tensor, Tensor)>,
    /// (talk `[B, F, n, D]`, listen `[B, lookback + F, n, D]`).
    audio: Option<(Tensor, Tensor)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_features_tap_the_blocks_of_forward() -> anyhow::Result<()> {
        let cfg = crate::config::ModelConfig::tiny().dit;
        let vb = crate::model::weights::SeededInitBackend::var_builder(3, DType::F32, &Device::Cpu);
        let dit = WanDit::new(&cfg, vb)?;
        let text = dit.text_context(&Tensor::randn(0f32, 1.0, (1, 4, cfg.text_dim), &Device::Cpu)?)?;
        let x = Tensor::randn(0f32, 1.0, (2, cfg.in_channels, 3, 4, 4), &Device::Cpu)?;
        let t = Tensor::new(&[[0f32, 500., 500.], [0., 200., 200.]], &Device::Cpu)?;
        let mask = AttentionMask::Bidirectional;
        let both = dit.block_features(&x, &t, &text, None, mask, &[1, 0])?;
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].dims(), &[2, 3 * 4, cfg.hidden_size()]);
        let last = dit.block_features(&x, &t, &text, None, mask, &[1])?;
        let d = (&both[0] - &last[0])?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        assert!((&both[0] - &both[1])?.abs()?.mean_all()?.to_scalar::<f32>()? > 0.0);
        assert!(dit.block_features(&x, &t, &text, None, mask, &[cfg.num_layers]).is_err());
        assert!(dit.block_features(&x, &t, &text, None, mask, &[]).is_err());
        Ok(())
    }

    /// With `prediction: sample` the head's output is the clean latent: the
    /// same weights give `head = x_t - sigma * v_velocity_model`, i.e. the
    /// velocity of a sample-predicting DiT is `(x_t - head) / sigma` per
    /// frame, with sigma floored at SAMPLE_PREDICTION_MIN_SIGMA (t = 0).
    #[test]
    fn sample_prediction_turns_the_head_into_a_velocity() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let velocity_cfg = crate::config::ModelConfig::tiny().dit;
        let sample_cfg = DitConfig { prediction: DitPrediction::Sample, ..velocity_cfg.clone() };
        let build = |cfg: &DitConfig| {
            WanDit::new(cfg, crate::model::weights::SeededInitBackend::var_builder(7, DType::F32, &dev))
        };
        let (head_model, sample_model) = (build(&velocity_cfg)?, build(&sample_cfg)?);
        let text = head_model.text_context(&Tensor::randn(0f32, 1.0, (1, 4, velocity_cfg.text_dim), &dev)?)?;
        let x = Tensor::randn(0f32, 1.0, (1, velocity_cfg.in_channels, 3, 4, 4), &dev)?;
        let t = Tensor::new(&[[0f32, 500., 900.]], &dev)?;
        let mask = AttentionMask::Bidirectional;
        let head = head_model.forward(&x, &t, &text, None, mask)?;
        let v = sample_model.forward(&x, &t, &text, None, mask)?;
        for (f, sigma) in [(0, SAMPLE_PREDICTION_MIN_SIGMA), (1, 0.5), (2, 0.9)] {
            let want = ((x.narrow(2, f, 1)? - head.narrow(2, f, 1)?)? / sigma)?;
            let d = (v.narrow(2, f, 1)? - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-3, "frame {f}: {d}");
        }
        // The clean latent comes back from one Euler step to sigma = 0.
        let x0_hat = (x.narrow(2, 2, 1)? - (v.narrow(2, 2, 1)? * 0.9)?)?;
        let d = (x0_hat - head.narrow(2, 2, 1)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(d < 1e-4, "{d}");
        Ok(())
    }

    /// The denoising steps of a chunk share one rotation of the cache
    /// ([`PreparedPast`]): a step that reuses it gives exactly what a step
    /// preparing it afresh gives, and committing a chunk drops it.
    #[test]
    fn chunk_steps_reuse_the_prepared_cache() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let mcfg = crate::config::ModelConfig::tiny();
        let cfg = mcfg.dit.clone();
        let vb = crate::model::weights::SeededInitBackend::var_builder(5, DType::F32, &dev);
        let dit = WanDit::new(&cfg, vb)?;
        let text = dit.text_context(&Tensor::randn(0f32, 1.0, (1, 4, cfg.text_dim), &dev)?)?;
        let latent = |f: usize| Tensor::randn(0f32, 1.0, (1, cfg.in_channels, f, 4, 4), &dev);
        let c = mcfg.stream.chunk_frames;
        let mut cache = KvCache::from_stream(dit.num_layers(), &mcfg.stream);
        dit.prime_reference(&latent(1)?, &text, None, &mut cache)?;
        let t = Tensor::new(&[500f32], &dev)?;
        dit.forward_chunk(&latent(c)?, &t, &text, None, &mut cache, 1, true)?;
        assert!(cache.prepared(1).is_none(), "committing a chunk drops the prepared past");

        let x = latent(c)?;
        let mut fresh = cache.clone();
        let first = dit.forward_chunk(&x, &t, &text, None, &mut cache, 1 + c, false)?;
        assert!(cache.prepared(1 + c).is_some());
        let reused = dit.forward_chunk(&x, &t, &text, None, &mut cache, 1 + c, false)?;
        let again = dit.forward_chunk(&x, &t, &text, None, &mut fresh, 1 + c, false)?;
        let diff = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
            Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
        };
        assert_eq!(diff(&first, &reused)?, 0.0);
        assert_eq!(diff(&first, &again)?, 0.0);
        // Another chunk position rotates the cache differently (RAPR).
        let elsewhere = dit.forward_chunk(&x, &t, &text, None, &mut cache, 1 + 3 * c, false)?;
        assert!(diff(&first, &elsewhere)? > 0.0);
        assert!(cache.prepared(1 + c).is_none() && cache.prepared(1 + 3 * c).is_some());
        Ok(())
    }

    /// Training differentiates the DiT (teacher, ODE init, DMD, GAN): one
    /// entry of every parameter's gradient must match central finite
    /// differences, with talk / listen audio and the block-causal mask on.
    /// In f32 with a loose tolerance (3%), which still catches an op
    /// without a backward (a zero or missing gradient) or a wrong one.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let cfg = crate::config::ModelConfig::tiny().dit;
        let store = crate::train::params::ParamStore::new(11, &dev);
        WanDit::new(&cfg, store.var_builder()).unwrap();
        let vars = store.named_vars();
        for (_, var) in &vars {
            // Small random biases / shifts instead of the zeros of the init,
            // so every parameter moves the output.
            let t = var.as_tensor();
            var.set(&(t + Tensor::randn(0f32, 0.05, t.shape(), &dev).unwrap()).unwrap()).unwrap();
        }
        let d = cfg.hidden_size();
        let x = Tensor::randn(0f32, 1.0, (1, cfg.in_channels, 3, 4, 4), &dev).unwrap();
        let t = Tensor::new(&[[0f32, 500., 500.]], &dev).unwrap();
        let prompt = Tensor::randn(0f32, 1.0, (1, 4, cfg.text_dim), &dev).unwrap();
        let talk = Tensor::randn(0f32, 1.0, (1, 3, cfg.audio_tokens_per_frame, d), &dev).unwrap();
        let listen = Tensor::randn(0f32, 1.0, (1, 3, cfg.audio_tokens_per_frame, d), &dev).unwrap();
        let target = Tensor::randn(0f32, 1.0, (1, cfg.out_channels, 3, 4, 4), &dev).unwrap();
        // Rebuilt per evaluation: layers may keep tensors derived from the
        // variables at construction.
        let loss = || {
            let dit = WanDit::new(&cfg, store.var_builder()).unwrap();
            let text = dit.text_context(&prompt).unwrap();
            let audio = AudioTokens { talk: talk.clone(), listen: listen.clone() };
            let mask = AttentionMask::BlockCausal { chunk_frames: 2 };
            let v = dit.forward(&x, &t, &text, Some(&audio), mask).unwrap();
            (v * &target).unwrap().sum_all().unwrap()
        };
        let grads = loss().backward().unwrap();
        assert!(vars.iter().any(|(n, _)| n.contains("talk_audio_attn")), "the audio attention is built");
        let eps = 1e-2;
        let mut bad = Vec::new();
        for (name, var) in &vars {
            let shape = var.shape().clone();
            let mut values: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let at = values.len() / 2;
            let orig = values[at];
            let Some(g) = grads.get(var) else {
                bad.push(format!("{name}: no gradient"));
                continue;
            };
            let analytic = g.flatten_all().unwrap().to_vec1::<f32>().unwrap()[at] as f64;
            let mut eval_at = |v: f32| {
                values[at] = v;
                var.set(&Tensor::from_vec(values.clone(), shape.clone(), &dev).unwrap()).unwrap();
                loss().to_scalar::<f32>().unwrap() as f64
            };
            let numeric = (eval_at(orig + eps) - eval_at(orig - eps)) / (2.0 * eps as f64);
            eval_at(orig);
            if !((analytic - numeric).abs() <= 3e-2 * numeric.abs().max(0.5)) {
                bad.push(format!("{name}[{at}]: backward gives {analytic}, finite differences {numeric}"));
            }
        }
        assert!(bad.is_empty(), "{} of {} gradients wrong:\n{}", bad.len(), vars.len(), bad.join("\n"));
    }

    #[test]
    fn block_causal_mask_blocks() {
        // ref + 2 chunks of 2 frames, 1 token per frame.
        let m = block_causal_mask(5, 1, 2, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let seen: Vec<Vec<usize>> =
            m.iter().map(|row| row.iter().enumerate().filter(|(_, v)| **v == 0.0).map(|(k, _)| k).collect()).collect();
        assert_eq!(seen, vec![vec![0], vec![0, 1, 2], vec![0, 1, 2], vec![0, 1, 2, 3, 4], vec![0, 1, 2, 3, 4]]);
        assert!(m[0][1].is_infinite() && m[0][1] < 0.0);
        assert!(block_causal_mask(2, 1, 0, &Device::Cpu).is_err());
    }
}
