//! Model and runtime configuration (serde), with the presets `full`
//! (the published Wan2.2-TI2V-5B numbers plus StreamAvatar's streaming
//! settings) and `tiny` (a few-hundred-kilobyte model used by the parity
//! fixtures, the tests and the CPU default until the mini model ships).
//!
//! Field names follow the reference implementations (diffusers
//! `WanTransformer3DModel` / `AutoencoderKLWan`, transformers
//! `Wav2Vec2Config`) so a config can be checked against their JSON.

use serde::{Deserialize, Serialize};

/// Error for an unknown preset or an inconsistent configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown model preset `{0}` (known: full, mini, tiny)")]
    UnknownPreset(String),
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("cannot read config file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot parse config file {path}: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// The Wan2.2 DiT with StreamAvatar's talk/listen audio cross-attention.
/// Names as in diffusers `WanTransformer3DModel.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DitConfig {
    /// (t, h, w) patch size; Wan2.2-TI2V-5B: (1, 2, 2).
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the text encoder output (umT5-XXL: 4096).
    pub text_dim: usize,
    /// Sinusoidal timestep embedding width.
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    /// LayerNorm (affine) before the text cross-attention.
    pub cross_attn_norm: bool,
    pub eps: f64,
    /// RoPE table length per axis.
    pub rope_max_seq_len: usize,
    /// Length the fixed prompt embedding is zero-padded to (Wan: 512).
    pub text_len: usize,
    /// Audio tokens per latent frame fed to the talk/listen attention.
    pub audio_tokens_per_frame: usize,
    /// What the output head predicts (`velocity` when absent: Wan2.2).
    #[serde(default)]
    pub prediction: DitPrediction,
    /// Earlier latent frames whose listen audio tokens a frame's Listen
    /// Audio Attention reads besides its own (0: its own frame only). A
    /// listener's nod follows the partner's phrase end by ~0.4-0.8 s, further
    /// back than one latent frame's audio window reaches (docs/TRAINING.md,
    /// session 18); the talk branch stays frame-local (lip sync).
    #[serde(default)]
    pub listen_lookback_frames: usize,
}

/// Upper bound of [`DitConfig::listen_lookback_frames`] (~2.7 s at 24 fps).
pub const MAX_LISTEN_LOOKBACK_FRAMES: usize = 16;

/// What the DiT's output head predicts. Every caller receives the flow
/// velocity `eps - x0` either way (`model::dit` converts).
///
/// Wan2.2 predicts the velocity directly; that needs the network to carry
/// the input noise through to its output. When a patch holds more values
/// than the hidden width (the `mini` DiT: 1x4x4 patches of 48 channels =
/// 768 values per token against a width of 192), it cannot: at least
/// 1 - 192/768 of the noise is lost at every step and stays in the
/// sampled latents. Predicting the clean latent instead (`sample`, the
/// "x-prediction" of Li & He, *Back to Basics: Let Denoising Generative
/// Models Denoise*, 2025) asks only for the low-dimensional image and adds
/// the noise back outside the network: `v = (x_t - x0_hat) / sigma`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DitPrediction {
    /// The head outputs `eps - x0` (Wan2.2, diffusers).
    #[default]
    Velocity,
    /// The head outputs `x0`; the velocity is `(x_t - x0) / max(sigma,
    /// SAMPLE_PREDICTION_MIN_SIGMA)` with `sigma = timestep / 1000`.
    Sample,
}

/// Floor of `sigma` in the sample-to-velocity conversion (JiT clips its
/// `1 - t` at 0.05 the same way): at `timestep = 0` (the clean reference
/// frame) the velocity is unused but must stay finite.
pub const SAMPLE_PREDICTION_MIN_SIGMA: f64 = 0.05;

impl DitConfig {
    pub fn hidden_size(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
}

/// transformers `Wav2Vec2Config` (the fields the encoder needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wav2Vec2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub conv_dim: Vec<usize>,
    pub conv_stride: Vec<usize>,
    pub conv_kernel: Vec<usize>,
    pub conv_bias: bool,
    pub num_conv_pos_embeddings: usize,
    pub num_conv_pos_embedding_groups: usize,
    /// "group" (base) or "layer" (large-lv60).
    pub feat_extract_norm: String,
    /// Pre-LN transformer (large-lv60) instead of post-LN (base).
    pub do_stable_layer_norm: bool,
    pub layer_norm_eps: f64,
}

/// Audio branch: wav2vec2 + projection into DiT audio tokens + streaming window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioConfig {
    pub wav2vec2: Wav2Vec2Config,
    /// Sample rate of the waveform fed to wav2vec2.
    pub sample_rate: usize,
    /// Video frames of context on each side that the projection sees per frame.
    pub proj_window: usize,
    /// Hidden width of the audio projection MLP.
    pub proj_hidden: usize,
    /// Seconds of past audio re-encoded with every chunk (streaming window).
    pub left_context_s: f64,
    /// Seconds of future audio the generator waits for beyond a chunk.
    pub lookahead_s: f64,
}

/// Wan2.2 VAE, names as in diffusers `AutoencoderKLWan.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub base_dim: usize,
    pub decoder_base_dim: usize,
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_scales: Vec<f64>,
    pub temperal_downsample: Vec<bool>,
    pub is_residual: bool,
    pub in_channels: usize,
    pub out_channels: usize,
    pub patch_size: usize,
    pub scale_factor_temporal: usize,
    pub scale_factor_spatial: usize,
    pub latents_mean: Vec<f64>,
    pub latents_std: Vec<f64>,
}

/// How the KV cache for the next chunk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheUpdate {
    /// StreamAvatar: keep the K/V computed during the last denoising step
    /// (input x_t^1), no extra forward.
    LastStep,
    /// Self-Forcing: one more forward with the clean x_0 at t = 0.
    CleanRerun,
}

/// Streaming generation: chunking, cache, RAPR, sampler, output video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Latent frames per generated chunk (C).
    pub chunk_frames: usize,
    /// Generated chunks kept in the rolling window besides the sink chunk.
    pub window_chunks: usize,
    /// RAPR cap D on the temporal RoPE distance to the reference frame.
    pub rapr_max_distance: usize,
    /// Disable RAPR (plain growing positions) for ablations.
    pub rapr: bool,
    /// Keep the reference frame and first chunk forever (reference sink).
    pub reference_sink: bool,
    /// Denoising timesteps before the shift warp, in [0, 1000], descending.
    pub timesteps: Vec<f64>,
    /// Flow-matching shift applied to the timesteps.
    pub shift: f64,
    pub cache_update: CacheUpdate,
    /// Output video.
    pub fps: u32,
    pub height: usize,
    pub width: usize,
}

impl StreamConfig {
    /// Video frames produced per chunk (Wan VAE: 4 per latent frame).
    pub fn frames_per_chunk(&self, vae: &VaeConfig) -> usize {
        self.chunk_frames * vae.scale_factor_temporal
    }
}

/// A complete model: DiT + audio + VAE + streaming settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub dit: DitConfig,
    pub audio: AudioConfig,
    pub vae: VaeConfig,
    pub stream: StreamConfig,
    /// The light streaming decoder (`--decoder light`); absent in a JSON
    /// config = the published taew2_2 widths.
    #[serde(default)]
    pub light_decoder: LightDecoderConfig,
}

/// A TAEHV-style light decoder (madebyollin/taehv `TAEHV.decoder`, base
/// variant): conv2d-only, three stages of three memory blocks, each stage
/// followed by a 2x nearest upsample and a temporal grow. Latent channels and
/// the output pixel-shuffle come from the VAE config (`z_dim`, `patch_size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LightDecoderConfig {
    /// Widths of the three stages and of the output head
    /// (taew2_2: `[256, 128, 64, 64]`).
    pub channels: [usize; 4],
    /// Per stage: the temporal grow doubles the frames (taew2_2: no, yes, yes).
    pub time_upscale: [bool; 3],
    /// Per stage: the 2x nearest upsample is on (taew2_2: all).
    pub space_upscale: [bool; 3],
}

impl Default for LightDecoderConfig {
    fn default() -> Self {
        Self { channels: [256, 128, 64, 64], time_upscale: [false, true, true], space_upscale: [true, true, true] }
    }
}

impl LightDecoderConfig {
    /// Narrow widths for the `tiny` test model.
    pub fn tiny() -> Self {
        Self { channels: [16, 12, 8, 8], ..Self::default() }
    }

    /// Check it decodes latents of `vae` to the same video geometry as the
    /// full decoder: `patch_size * 2^(space ups) == scale_factor_spatial`,
    /// `2^(time ups) == scale_factor_temporal`.
    pub fn check_against(&self, vae: &VaeConfig) -> Result<(), ConfigError> {
        let ups = self.space_upscale.iter().filter(|u| **u).count();
        let spatial = vae.patch_size << ups;
        if spatial != vae.scale_factor_spatial {
            return Err(ConfigError::Invalid(format!(
                "light_decoder upsamples {spatial}x (patch {} x 2^{ups}), the VAE {}x",
                vae.patch_size, vae.scale_factor_spatial
            )));
        }
        let temporal = 1usize << self.time_upscale.iter().filter(|u| **u).count();
        if temporal != vae.scale_factor_temporal {
            return Err(ConfigError::Invalid(format!(
                "light_decoder grows time {temporal}x, the VAE {}x",
                vae.scale_factor_temporal
            )));
        }
        if self.channels.contains(&0) {
            return Err(ConfigError::Invalid("light_decoder channels must be >= 1".into()));
        }
        Ok(())
    }
}

/// Wan2.2 VAE latent statistics (diffusers `AutoencoderKLWan` for
/// Wan2.2-TI2V-5B, `latents_mean` / `latents_std`).
pub const WAN22_LATENTS_MEAN: [f64; 48] = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891, 0.1570,
    -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502, -0.2055, -0.0322,
    0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520,
    0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
];
pub const WAN22_LATENTS_STD: [f64; 48] = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165,
    0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659, 0.7069, 0.5338, 0.4889, 0.4917,
    0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600,
    0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
];

impl ModelConfig {
    /// Look up a preset by name.
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        match name {
            "full" => Ok(Self::full()),
            "tiny" => Ok(Self::tiny()),
            "mini" => Ok(Self::mini()),
            other => Err(ConfigError::UnknownPreset(other.to_string())),
        }
    }

    /// Load a config from a JSON file, or a preset when `name_or_path` is one.
    pub fn load(name_or_path: &str) -> Result<Self, ConfigError> {
        if let Ok(cfg) = Self::preset(name_or_path) {
            return Ok(cfg);
        }
        if !std::path::Path::new(name_or_path).exists() {
            return Err(ConfigError::UnknownPreset(name_or_path.to_string()));
        }
        let text = std::fs::read_to_string(name_or_path)
            .map_err(|source| ConfigError::Io { path: name_or_path.to_string(), source })?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: name_or_path.to_string(), source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Wan2.2-TI2V-5B with StreamAvatar streaming at 1280x704, 24 fps.
    pub fn full() -> Self {
        Self {
            name: "full".into(),
            dit: DitConfig {
                patch_size: [1, 2, 2],
                num_attention_heads: 24,
                attention_head_dim: 128,
                in_channels: 48,
                out_channels: 48,
                text_dim: 4096,
                freq_dim: 256,
                ffn_dim: 14336,
                num_layers: 30,
                cross_attn_norm: true,
                eps: 1e-6,
                rope_max_seq_len: 1024,
                text_len: 512,
                audio_tokens_per_frame: 32,
                prediction: DitPrediction::Velocity,
                listen_lookback_frames: 0,
            },
            audio: AudioConfig {
                wav2vec2: Wav2Vec2Config::base(),
                sample_rate: 16_000,
                proj_window: 2,
                proj_hidden: 1024,
                left_context_s: 2.0,
                lookahead_s: 0.5,
            },
            vae: VaeConfig {
                base_dim: 160,
                decoder_base_dim: 256,
                z_dim: 48,
                dim_mult: vec![1, 2, 4, 4],
                num_res_blocks: 2,
                attn_scales: vec![],
                temperal_downsample: vec![false, true, true],
                is_residual: true,
                in_channels: 12,
                out_channels: 12,
                patch_size: 2,
                scale_factor_temporal: 4,
                scale_factor_spatial: 16,
                latents_mean: WAN22_LATENTS_MEAN.to_vec(),
                latents_std: WAN22_LATENTS_STD.to_vec(),
            },
            stream: StreamConfig {
                chunk_frames: 3,
                window_chunks: 4,
                rapr_max_distance: 16,
                rapr: true,
                reference_sink: true,
                timesteps: vec![1000.0, 666.0, 333.0],
                shift: 5.0,
                cache_update: CacheUpdate::LastStep,
                fps: 24,
                height: 704,
                width: 1280,
            },
            light_decoder: LightDecoderConfig::default(),
        }
    }

    /// The bundled CPU model (issue 5): the architecture of `full`, sized
    /// for 2 CPU cores at 128x128, 24 fps. The VAE compresses 8x in space
    /// (no patchify, as Wan2.1's VAE) with Wan2.2's 48 latent channels: at
    /// 16x a face spanned ~3 latent cells and never got eyes or a mouth
    /// back (docs/TRAINING.md, session 9); the DiT's 1x4x4 patches keep its
    /// 16 tokens per latent frame. Release build on the 2-core box: 29-31 fps
    /// (`train bench`, docs/TRAINING.md).
    pub fn mini() -> Self {
        Self {
            name: "mini".into(),
            dit: DitConfig {
                patch_size: [1, 4, 4],
                num_attention_heads: 4,
                attention_head_dim: 48,
                in_channels: 48,
                out_channels: 48,
                text_dim: 64,
                freq_dim: 64,
                ffn_dim: 576,
                num_layers: 6,
                cross_attn_norm: true,
                eps: 1e-6,
                rope_max_seq_len: 1024,
                text_len: 8,
                audio_tokens_per_frame: 4,
                prediction: DitPrediction::Sample,
                listen_lookback_frames: 3,
            },
            audio: AudioConfig {
                wav2vec2: Wav2Vec2Config::mini(),
                sample_rate: 16_000,
                proj_window: 2,
                proj_hidden: 128,
                left_context_s: 1.0,
                lookahead_s: 0.5,
            },
            vae: VaeConfig {
                base_dim: 16,
                decoder_base_dim: 6,
                z_dim: 48,
                dim_mult: vec![1, 2, 4, 4],
                num_res_blocks: 1,
                attn_scales: vec![],
                temperal_downsample: vec![false, true, true],
                is_residual: true,
                in_channels: 3,
                out_channels: 3,
                patch_size: 1,
                scale_factor_temporal: 4,
                scale_factor_spatial: 8,
                latents_mean: vec![0.0; 48],
                latents_std: vec![1.0; 48],
            },
            stream: StreamConfig {
                chunk_frames: 3,
                window_chunks: 2,
                rapr_max_distance: 10,
                rapr: true,
                reference_sink: true,
                timesteps: vec![1000.0, 666.0, 333.0],
                shift: 5.0,
                cache_update: CacheUpdate::LastStep,
                fps: 24,
                height: 128,
                width: 128,
            },
            light_decoder: LightDecoderConfig { channels: [32, 24, 16, 16], ..LightDecoderConfig::default() },
        }
    }

    /// A tiny model of the same architecture for tests and parity fixtures.
    /// 64x64 video, 2 DiT blocks of width 32, a 2-layer wav2vec2 of width 32.
    pub fn tiny() -> Self {
        Self {
            name: "tiny".into(),
            dit: DitConfig {
                patch_size: [1, 2, 2],
                num_attention_heads: 2,
                attention_head_dim: 16,
                in_channels: 8,
                out_channels: 8,
                text_dim: 24,
                freq_dim: 32,
                ffn_dim: 64,
                num_layers: 2,
                cross_attn_norm: true,
                eps: 1e-6,
                rope_max_seq_len: 1024,
                text_len: 16,
                audio_tokens_per_frame: 4,
                prediction: DitPrediction::Velocity,
                listen_lookback_frames: 0,
            },
            audio: AudioConfig {
                wav2vec2: Wav2Vec2Config::tiny(),
                sample_rate: 16_000,
                proj_window: 2,
                proj_hidden: 32,
                left_context_s: 1.0,
                lookahead_s: 0.5,
            },
            vae: VaeConfig {
                base_dim: 8,
                decoder_base_dim: 6,
                z_dim: 8,
                dim_mult: vec![1, 2, 2, 2],
                num_res_blocks: 1,
                attn_scales: vec![],
                temperal_downsample: vec![false, true, true],
                is_residual: true,
                in_channels: 12,
                out_channels: 12,
                patch_size: 2,
                scale_factor_temporal: 4,
                scale_factor_spatial: 16,
                latents_mean: vec![0.0; 8],
                latents_std: vec![1.0; 8],
            },
            stream: StreamConfig {
                chunk_frames: 3,
                window_chunks: 2,
                rapr_max_distance: 10,
                rapr: true,
                reference_sink: true,
                timesteps: vec![1000.0, 666.0, 333.0],
                shift: 5.0,
                cache_update: CacheUpdate::LastStep,
                fps: 24,
                height: 64,
                width: 64,
            },
            light_decoder: LightDecoderConfig::tiny(),
        }
    }

    /// Check the invariants the streaming code relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.stream;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if s.chunk_frames == 0 {
            return bad("stream.chunk_frames must be >= 1".into());
        }
        if s.timesteps.is_empty() {
            return bad("stream.timesteps must not be empty".into());
        }
        let spatial = self.vae.scale_factor_spatial * self.dit.patch_size[1];
        if s.height % spatial != 0 || s.width % spatial != 0 {
            return bad(format!("video size {}x{} must be a multiple of {spatial} (VAE x patch)", s.width, s.height));
        }
        // RAPR ordering: ref(0) < sink(1..=C) < window < current <= D + C - 1.
        // With D == C * (1 + W) the oldest window frame would tie with the
        // last sink frame (both at position C), hence the strict bound.
        let needed = s.chunk_frames * (1 + s.window_chunks) + 1;
        if s.rapr && s.rapr_max_distance < needed {
            return bad(format!(
                "stream.rapr_max_distance ({}) must be > chunk_frames * (1 + window_chunks), i.e. >= {needed}",
                s.rapr_max_distance
            ));
        }
        if self.dit.hidden_size() % self.dit.num_attention_heads != 0 {
            return bad("dit hidden size must divide by heads".into());
        }
        if self.vae.latents_mean.len() != self.vae.z_dim || self.vae.latents_std.len() != self.vae.z_dim {
            return bad("vae latents_mean/std must have z_dim entries".into());
        }
        if self.dit.in_channels != self.vae.z_dim {
            return bad("dit.in_channels must equal vae.z_dim".into());
        }
        if self.dit.listen_lookback_frames > MAX_LISTEN_LOOKBACK_FRAMES {
            return bad(format!(
                "dit.listen_lookback_frames ({}) must be <= {MAX_LISTEN_LOOKBACK_FRAMES}",
                self.dit.listen_lookback_frames
            ));
        }
        self.light_decoder.check_against(&self.vae)?;
        Ok(())
    }
}

impl Wav2Vec2Config {
    /// facebook/wav2vec2-base-960h.
    pub fn base() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            conv_dim: vec![512; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: false,
            num_conv_pos_embeddings: 128,
            num_conv_pos_embedding_groups: 16,
            feat_extract_norm: "group".into(),
            do_stable_layer_norm: false,
            layer_norm_eps: 1e-5,
        }
    }

    /// facebook/wav2vec2-large-960h-lv60-self.
    pub fn large() -> Self {
        Self {
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            intermediate_size: 4096,
            conv_dim: vec![512; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: true,
            num_conv_pos_embeddings: 128,
            num_conv_pos_embedding_groups: 16,
            feat_extract_norm: "layer".into(),
            do_stable_layer_norm: true,
            layer_norm_eps: 1e-5,
        }
    }

    /// The mini model's audio encoder: a 2-layer wav2vec2 of width 96 with
    /// the standard 7-conv feature extractor (320-sample hop) at 64 channels.
    pub fn mini() -> Self {
        Self {
            hidden_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 256,
            conv_dim: vec![64; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: false,
            num_conv_pos_embeddings: 32,
            num_conv_pos_embedding_groups: 4,
            feat_extract_norm: "group".into(),
            do_stable_layer_norm: false,
            layer_norm_eps: 1e-5,
        }
    }

    /// Tiny test config (same 320-sample hop as the real ones).
    pub fn tiny() -> Self {
        Self {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 64,
            conv_dim: vec![16; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: false,
            num_conv_pos_embeddings: 16,
            num_conv_pos_embedding_groups: 2,
            feat_extract_norm: "group".into(),
            do_stable_layer_norm: false,
            layer_norm_eps: 1e-5,
        }
    }

    /// Samples per feature frame (product of conv strides; 320 = 20 ms at 16 kHz).
    pub fn hop(&self) -> usize {
        self.conv_stride.iter().product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        ModelConfig::full().validate().unwrap();
        ModelConfig::tiny().validate().unwrap();
        ModelConfig::mini().validate().unwrap();
        assert_eq!(ModelConfig::preset("mini").unwrap().name, "mini");
    }

    #[test]
    fn full_matches_published_wan22_ti2v_5b() {
        let c = ModelConfig::full();
        assert_eq!(c.dit.hidden_size(), 3072);
        assert_eq!(c.dit.num_layers, 30);
        assert_eq!(c.dit.ffn_dim, 14336);
        // 1280x704 -> 40x22 = 880 tokens per latent frame.
        let p = c.vae.scale_factor_spatial * c.dit.patch_size[1];
        assert_eq!((c.stream.width / p) * (c.stream.height / p), 880);
        assert_eq!(c.stream.frames_per_chunk(&c.vae), 12);
    }

    #[test]
    fn unknown_preset_is_clear_error() {
        let e = ModelConfig::preset("huge").unwrap_err();
        assert!(e.to_string().contains("huge"));
    }
}
