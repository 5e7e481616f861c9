//! StreamAvatar's Talk Audio Attention and Listen Audio Attention.
//!
//! The paper describes two separate audio cross-attention modules (one
//! driven by the avatar's own speech, one by the remote speaker) but its
//! code is not public; this is our design:
//!
//! - in every block, after the text cross-attention and before the FFN,
//!   `x = x + talk_audio_attn(norm_talk(x), talk)` then
//!   `x = x + listen_audio_attn(norm_listen(x), listen)`;
//! - `norm_*` is an affine f32 LayerNorm (like the text `norm2`),
//!   `*_audio_attn` a [`WanAttention`] (`to_q/to_k/to_v/to_out.0`,
//!   `norm_q/norm_k` RMSNorm across heads), no RoPE, no gate;
//! - locality: the tokens of latent frame `f` attend only to the talk audio
//!   tokens of frame `f` (tokens reshaped to `[B*F, HW, D]`, audio to
//!   `[B*F, n_tok, D]`), so a frame's talk audio never leaks into other
//!   frames within a block; the listen branch also reads the
//!   `DitConfig::listen_lookback_frames` frames before `f` (a nod follows
//!   the partner's phrase end by more than one frame's audio window), so a
//!   frame's listen audio reaches that many later frames and no earlier one;
//! - audio tokens arrive already projected to the DiT width (see
//!   `model::audio`), `[B, F, audio_tokens_per_frame, D]` per branch.
//!
//! Checkpoint names: `blocks.N.norm_talk.{weight,bias}`,
//! `blocks.N.talk_audio_attn.*`, `blocks.N.norm_listen.*`,
//! `blocks.N.listen_audio_attn.*`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::norm::Fp32LayerNorm;
use crate::model::attention::WanAttention;

/// One per-frame audio cross-attention (talk or listen) with its pre-norm.
#[derive(Debug, Clone)]
pub(crate) struct FrameAudioAttention {
    norm: Fp32LayerNorm,
    attn: WanAttention,
}

impl FrameAudioAttention {
    /// `norm_name`: `norm_talk` / `norm_listen`; `attn_name`:
    /// `talk_audio_attn` / `listen_audio_attn` (under the block's `vb`).
    pub(crate) fn new(
        dim: usize,
        heads: usize,
        eps: f64,
        vb: &VarBuilder,
        norm_name: &str,
        attn_name: &str,
    ) -> Result<Self> {
        Ok(Self {
            norm: Fp32LayerNorm::affine(dim, eps, vb.pp(norm_name))?,
            attn: WanAttention::new(dim, dim, heads, eps, vb.pp(attn_name))?,
        })
    }

    /// `x`: `[B, F * HW, D]`; `audio`: `[B, h + F, n, D]`, the last `F`
    /// frames being `x`'s. Frame `f` attends to the tokens of audio frames
    /// `f ..= f + h` (its own and the `h` before it). Returns `x + attn`.
    pub(crate) fn forward(&self, x: &Tensor, audio: &Tensor, frames: usize) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let (ab, audio_frames, n, ad) = audio.dims4()?;
        if ab != b || ad != d || frames == 0 || audio_frames < frames || l % frames != 0 {
            candle_core::bail!(
                "audio tokens {:?} do not fit hidden states {:?} of {frames} frames (need [B, h + F, n, D] with F dividing the tokens)",
                audio.dims(),
                x.dims()
            );
        }
        let dev = x.device();
        let normed = crate::model::profile::section("dit.audio_attn.norm", dev, || self.norm.forward_as(x, x.dtype()))?;
        let q_in = normed.reshape((b * frames, l / frames, d))?;
        let out = crate::model::profile::section("dit.audio_attn.attend", dev, || {
            // Keys / values once per audio frame, then each frame's window of
            // its own and the earlier frames' (a frame's tokens are projected
            // once, however many windows hold them).
            let flat = audio.to_dtype(x.dtype())?.reshape((b, audio_frames * n, d))?;
            let (k, v) = self.attn.key_value(&flat)?;
            let windowed = |t: &Tensor| -> Result<Tensor> {
                let t = t.reshape((b, audio_frames, n, t.dim(2)?))?;
                let window = audio_frames - frames + 1;
                let t = match window {
                    1 => t,
                    _ => Tensor::cat(&(0..window).map(|j| t.narrow(1, j, frames)).collect::<Result<Vec<_>>>()?, 2)?,
                };
                t.reshape((b * frames, window * n, t.dim(3)?))
            };
            self.attn.attend(&q_in, &windowed(&k)?, &windowed(&v)?)?.reshape((b, l, d))
        })?;
        x + out
    }
}

/// Talk + listen audio attention of one block.
#[derive(Debug, Clone)]
pub(crate) struct BlockAudioAttention {
    talk: FrameAudioAttention,
    listen: FrameAudioAttention,
}

impl BlockAudioAttention {
    /// Whether the block under `vb` has audio weights (checked on `to_q`).
    pub(crate) fn present(vb: &VarBuilder) -> (bool, bool) {
        (vb.contains_tensor("talk_audio_attn.to_q.weight"), vb.contains_tensor("listen_audio_attn.to_q.weight"))
    }

    pub(crate) fn new(dim: usize, heads: usize, eps: f64, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            talk: FrameAudioAttention::new(dim, heads, eps, vb, "norm_talk", "talk_audio_attn")?,
            listen: FrameAudioAttention::new(dim, heads, eps, vb, "norm_listen", "listen_audio_attn")?,
        })
    }

    /// `talk`: `[B, F, n, D]`; `listen`: `[B, h + F, n, D]` (`h` earlier
    /// frames first, see `DitConfig::listen_lookback_frames`).
    pub(crate) fn forward(&self, x: &Tensor, talk: &Tensor, listen: &Tensor) -> Result<Tensor> {
        let frames = talk.dim(1)?;
        let x = self.talk.forward(x, talk, frames)?;
        self.listen.forward(&x, listen, frames)
    }
}
