//! `AudioProjection`: wav2vec2 features at video fps -> audio tokens per
//! latent frame for the DiT's talk / listen audio attention. Our design
//! (weights in the streamavatar-audio file under `audio_proj.*`):
//!
//! 1. per latent frame, gather the features of its video frames plus
//!    `proj_window` frames of context on each side (a fixed window of
//!    `4 + 2 * proj_window` video frames, indices clamped at the edges);
//! 2. weighted sum over the L+1 hidden states with softmax-normalised learned
//!    weights `audio_proj.layer_weights` [L+1];
//! 3. flatten the window and run `fc1` -> SiLU -> `fc2` to
//!    `audio_tokens_per_frame * D` values, reshaped to tokens, then a
//!    LayerNorm `audio_proj.norm` over D.
//!
//! Output: [B, F_latent, audio_tokens_per_frame, D].
//!
//! One projection is shared by talk and listen: in StreamAvatar both come
//! from the same kind of signal (in training, the same waveform split by
//! complementary masks), and the role of each stream is carried by the two
//! separate attention modules (Talk / Listen Audio Attention) in every DiT
//! block and by the masks. Sharing halves the parameters (the `fc2` of the
//! full config alone is 1024 x 32*3072 = 100 M) and lets every talk frame
//! train the listen path's feature mapping too. A second projection can be
//! loaded with another prefix (`AudioProjection::new(.., vb.pp("other"))`).
//!
//! Latent <-> video frame mappings (Wan VAE, 4 video frames per latent):
//! * whole clip ([`clip_windows`]): latent 0 = video frame 0 (the reference),
//!   latent j >= 1 = video frames 4j-3 ..= 4j; the fixed window
//!   `4j-3-w ..= 4j+w` clamped to the clip makes latent 0 see frame 0 plus
//!   its right context;
//! * streaming chunk ([`chunk_windows`]): a chunk's features carry `w` pad
//!   frames on each side; latent c covers chunk frames 4c ..= 4c+3.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::AudioError;
use crate::config::AudioConfig;

/// Video frames per latent frame (Wan2.2 VAE temporal compression).
pub const FRAMES_PER_LATENT: usize = 4;

/// LayerNorm eps of the output norm.
const NORM_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
pub struct AudioProjection {
    layer_weights: Tensor,
    fc1: Linear,
    fc2: Linear,
    norm: LayerNorm,
    num_states: usize,
    feature_dim: usize,
    proj_window: usize,
    tokens: usize,
    dim: usize,
}

impl AudioProjection {
    /// `vb` is rooted at the projection (`vb.pp("audio_proj")`).
    /// Tensors: `layer_weights` [L+1], `fc1.{weight,bias}`
    /// [proj_hidden, (4 + 2w) * H], `fc2.{weight,bias}`
    /// [tokens * dit_dim, proj_hidden], `norm.{weight,bias}` [dit_dim].
    pub fn new(cfg: &AudioConfig, dit_dim: usize, tokens_per_frame: usize, vb: VarBuilder) -> Result<Self, AudioError> {
        if dit_dim == 0 || tokens_per_frame == 0 || cfg.proj_hidden == 0 {
            return Err(AudioError::Config(format!(
                "audio projection needs dit_dim ({dit_dim}), tokens_per_frame ({tokens_per_frame}) and proj_hidden ({}) > 0",
                cfg.proj_hidden
            )));
        }
        let num_states = cfg.wav2vec2.num_hidden_layers + 1;
        let feature_dim = cfg.wav2vec2.hidden_size;
        let window = FRAMES_PER_LATENT + 2 * cfg.proj_window;
        Ok(Self {
            layer_weights: vb.get_with_hints(num_states, "layer_weights", candle_nn::Init::Const(0.0))?,
            fc1: candle_nn::linear(window * feature_dim, cfg.proj_hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(cfg.proj_hidden, tokens_per_frame * dit_dim, vb.pp("fc2"))?,
            norm: candle_nn::layer_norm(dit_dim, NORM_EPS, vb.pp("norm"))?,
            num_states,
            feature_dim,
            proj_window: cfg.proj_window,
            tokens: tokens_per_frame,
            dim: dit_dim,
        })
    }

    /// Video frames each latent frame reads (`4 + 2 * proj_window`).
    pub fn window_len(&self) -> usize {
        FRAMES_PER_LATENT + 2 * self.proj_window
    }

    pub fn proj_window(&self) -> usize {
        self.proj_window
    }

    /// (tokens per latent frame, token width D).
    pub fn output_tokens(&self) -> (usize, usize) {
        (self.tokens, self.dim)
    }

    /// Features [B, L+1, N, H] at video fps and, per latent frame, the
    /// `window_len()` video-frame indices it reads -> [B, F, tokens, D].
    pub fn forward_windows(&self, features: &Tensor, windows: &[Vec<usize>]) -> Result<Tensor, AudioError> {
        let (b, l, n, h) = features
            .dims4()
            .map_err(|_| AudioError::BadInput(format!("features must be [B, L+1, N, H], got {:?}", features.dims())))?;
        if l != self.num_states || h != self.feature_dim {
            return Err(AudioError::BadInput(format!(
                "features have {l} states of width {h}, the projection expects {} of width {}",
                self.num_states, self.feature_dim
            )));
        }
        let win = self.window_len();
        let f = windows.len();
        if f == 0 {
            return Err(AudioError::BadInput("no latent frames requested".into()));
        }
        let mut idx = Vec::with_capacity(f * win);
        for w in windows {
            if w.len() != win || w.iter().any(|&i| i >= n) {
                return Err(AudioError::BadInput(format!(
                    "latent window {w:?} must hold {win} frame indices below {n}"
                )));
            }
            idx.extend(w.iter().map(|&i| i as u32));
        }
        let idx = Tensor::from_vec(idx, f * win, features.device())?;
        // Weighted sum over hidden states first (cheaper than after the gather).
        let weights = crate::model::grad_ops::softmax_last_dim(&self.layer_weights)?
            .to_dtype(features.dtype())?
            .reshape((1, l, 1, 1))?;
        let mixed = features.broadcast_mul(&weights)?.sum(1)?; // [B, N, H]
        let gathered = mixed.index_select(&idx, 1)?.reshape((b, f, win * h))?;
        let hidden = self.fc1.forward(&gathered)?.silu()?;
        let tokens = self.fc2.forward(&hidden)?.reshape((b, f, self.tokens, self.dim))?;
        Ok(crate::model::grad_ops::layer_norm_module(&self.norm, &tokens.contiguous()?, NORM_EPS)?)
    }

    /// Whole clip: features of N video frames (frame 0 = reference) ->
    /// [B, 1 + (N-1)/4, tokens, D] (see [`clip_windows`]).
    pub fn forward_clip(&self, features: &Tensor) -> Result<Tensor, AudioError> {
        let n = features.dim(2)?;
        self.forward_windows(features, &clip_windows(n, self.proj_window)?)
    }

    /// Streaming chunk: features of `pad + 4 * n_latent + pad` frames with
    /// `pad == proj_window` (as produced by the streaming encoder) ->
    /// [B, n_latent, tokens, D].
    pub fn forward_chunk(&self, features: &Tensor, pad: usize) -> Result<Tensor, AudioError> {
        if pad != self.proj_window {
            return Err(AudioError::BadInput(format!(
                "chunk features carry {pad} pad frames, the projection needs proj_window = {}",
                self.proj_window
            )));
        }
        let n = features.dim(2)?;
        let core = n.saturating_sub(2 * pad);
        if core == 0 || core % FRAMES_PER_LATENT != 0 {
            return Err(AudioError::BadInput(format!(
                "chunk of {n} frames with {pad} pad frames each side is not a whole number of latent frames"
            )));
        }
        self.forward_windows(features, &chunk_windows(core / FRAMES_PER_LATENT, pad))
    }
}

/// Windows of a whole clip of `n_video` frames: latent 0 = frame 0, latent
/// j >= 1 = frames 4j-3 ..= 4j, each widened by `proj_window` each side and
/// clamped to `[0, n_video)`. Requires `n_video = 1 + 4k`.
pub fn clip_windows(n_video: usize, proj_window: usize) -> Result<Vec<Vec<usize>>, AudioError> {
    if n_video == 0 || (n_video - 1) % FRAMES_PER_LATENT != 0 {
        return Err(AudioError::BadInput(format!("a clip of {n_video} video frames is not 1 + 4k frames (Wan VAE)")));
    }
    let n_latent = 1 + (n_video - 1) / FRAMES_PER_LATENT;
    let w = proj_window as i64;
    let last = n_video as i64 - 1;
    Ok((0..n_latent as i64)
        .map(|j| {
            let first = 4 * j - 3 - w;
            (first..=4 * j + w).map(|i| i.clamp(0, last) as usize).collect()
        })
        .collect())
}

/// Windows of a streaming chunk with `pad` context frames each side:
/// latent c reads chunk frames `4c ..= 4c + 3 + 2 * pad`.
pub fn chunk_windows(n_latent: usize, pad: usize) -> Vec<Vec<usize>> {
    (0..n_latent).map(|c| (FRAMES_PER_LATENT * c..FRAMES_PER_LATENT * (c + 1) + 2 * pad).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use candle_core::{DType, Device, D};

    fn projection() -> (AudioProjection, ModelConfig) {
        let cfg = ModelConfig::tiny();
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let p = AudioProjection::new(
            &cfg.audio,
            cfg.dit.hidden_size(),
            cfg.dit.audio_tokens_per_frame,
            vb.pp("audio_proj"),
        )
        .unwrap();
        (p, cfg)
    }

    #[test]
    fn clip_windows_follow_wan_latent_layout() -> anyhow::Result<()> {
        let w = clip_windows(9, 2)?;
        assert_eq!(w.len(), 3);
        // latent 0: frames -5..=2 clamped -> reference frame + right context.
        assert_eq!(w[0], vec![0, 0, 0, 0, 0, 0, 1, 2]);
        // latent 1: frames 1..=4 with 2 context each side.
        assert_eq!(w[1], vec![0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(w[2], vec![3, 4, 5, 6, 7, 8, 8, 8]);
        assert!(clip_windows(8, 2).is_err());
        assert_eq!(chunk_windows(2, 1), vec![vec![0, 1, 2, 3, 4, 5], vec![4, 5, 6, 7, 8, 9]]);
        Ok(())
    }

    #[test]
    fn output_shapes() -> anyhow::Result<()> {
        let (p, cfg) = projection();
        let l = cfg.audio.wav2vec2.num_hidden_layers + 1;
        let h = cfg.audio.wav2vec2.hidden_size;
        let feats = Tensor::randn(0f32, 1.0, (2, l, 13, h), &Device::Cpu)?;
        let out = p.forward_clip(&feats)?;
        assert_eq!(out.dims(), &[2, 4, cfg.dit.audio_tokens_per_frame, cfg.dit.hidden_size()]);
        let pad = cfg.audio.proj_window;
        let chunk = Tensor::randn(0f32, 1.0, (1, l, 12 + 2 * pad, h), &Device::Cpu)?;
        let out = p.forward_chunk(&chunk, pad)?;
        assert_eq!(out.dims(), &[1, 3, cfg.dit.audio_tokens_per_frame, cfg.dit.hidden_size()]);
        // Tokens are layer-normalised over D.
        let mean = out.mean(D::Minus1)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(mean < 1e-4);
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> anyhow::Result<()> {
        let (p, cfg) = projection();
        let l = cfg.audio.wav2vec2.num_hidden_layers + 1;
        let wrong_width = Tensor::zeros((1, l, 13, 7), DType::F32, &Device::Cpu)?;
        assert!(p.forward_clip(&wrong_width).is_err());
        let h = cfg.audio.wav2vec2.hidden_size;
        let chunk = Tensor::zeros((1, l, 11, h), DType::F32, &Device::Cpu)?;
        assert!(p.forward_chunk(&chunk, cfg.audio.proj_window).is_err());
        assert!(p.forward_chunk(&chunk, cfg.audio.proj_window + 1).is_err());
        Ok(())
    }

    /// Latent frames only see their own window: changing a video frame far
    /// outside a latent's window leaves that latent's tokens unchanged.
    #[test]
    fn latent_tokens_depend_only_on_their_window() -> anyhow::Result<()> {
        let (p, cfg) = projection();
        let l = cfg.audio.wav2vec2.num_hidden_layers + 1;
        let h = cfg.audio.wav2vec2.hidden_size;
        let feats = Tensor::randn(0f32, 1.0, (1, l, 17, h), &Device::Cpu)?;
        let a = p.forward_clip(&feats)?;
        let bumped = Tensor::cat(&[feats.narrow(2, 0, 16)?, (feats.narrow(2, 16, 1)? + 5.0)?], 2)?;
        let b = p.forward_clip(&bumped)?;
        let d0 = (a.narrow(1, 0, 4)? - b.narrow(1, 0, 4)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let d4 = (a.narrow(1, 4, 1)? - b.narrow(1, 4, 1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d0, 0.0);
        assert!(d4 > 0.0);
        Ok(())
    }
}
