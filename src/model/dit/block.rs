//! One Wan transformer block (diffusers `WanTransformerBlock`) with
//! StreamAvatar's talk/listen audio attention between the text
//! cross-attention and the FFN:
//!
//! ```text
//! x += gate_msa   * attn1(norm1(x) * (1 + scale_msa) + shift_msa)   (RoPE, mask / KV cache)
//! x += attn2(norm2(x), text)
//! x += talk_audio_attn(norm_talk(x), talk);  x += listen_audio_attn(norm_listen(x), listen)
//! x += c_gate_msa * ffn(norm3(x) * (1 + c_scale_msa) + c_shift_msa)
//! ```
//! Modulation (`scale_shift_table + timestep_proj`, per latent frame) and
//! the norms run in f32, as in diffusers.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::audio::BlockAudioAttention;
use super::norm::{gated_residual, modulate, Fp32LayerNorm};
use crate::config::DitConfig;
use crate::model::attention::{scaled_dot_product_attention, WanAttention};
use crate::model::kv_cache::LayerKv;
use crate::model::profile;

/// Cached keys / values of earlier frames for one layer, ready for the
/// attention ([`DitBlock::prepare_past`]): keys rotated at the chunk's RAPR
/// positions, both split into heads, `[B, heads, tokens, head_dim]`.
pub(crate) struct PastKv<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
}

/// Everything the self-attention of one block needs besides `x`.
pub(crate) struct SelfAttnInput<'a> {
    /// RoPE tables of the current tokens, `[L, head_dim / 2]`.
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// Additive f32 mask `[L, L_keys]` (block-causal), or None.
    pub mask: Option<&'a Tensor>,
    /// Cached frames attended before the current tokens.
    pub past: Option<PastKv<'a>>,
    /// Return the current tokens' un-roped K / V (for the cache).
    pub collect_kv: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct DitBlock {
    norm1: Fp32LayerNorm,
    attn1: WanAttention,
    norm2: Option<Fp32LayerNorm>,
    attn2: WanAttention,
    audio: Option<BlockAudioAttention>,
    norm3: Fp32LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    /// `[1, 1, 6, D]` f32.
    scale_shift_table: Tensor,
    dtype: DType,
}

impl DitBlock {
    pub(crate) fn new(cfg: &DitConfig, with_audio: bool, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.hidden_size();
        let heads = cfg.num_attention_heads;
        let dev = vb.device().clone();
        let norm2 = if cfg.cross_attn_norm { Some(Fp32LayerNorm::affine(dim, cfg.eps, vb.pp("norm2"))?) } else { None };
        let audio = if with_audio { Some(BlockAudioAttention::new(dim, heads, cfg.eps, &vb)?) } else { None };
        let sst = vb.to_dtype(DType::F32).get((1, 6, dim), "scale_shift_table")?;
        Ok(Self {
            norm1: Fp32LayerNorm::plain(dim, cfg.eps, &dev)?,
            attn1: WanAttention::new(dim, dim, heads, cfg.eps, vb.pp("attn1"))?,
            norm2,
            attn2: WanAttention::new(dim, dim, heads, cfg.eps, vb.pp("attn2"))?,
            audio,
            norm3: Fp32LayerNorm::plain(dim, cfg.eps, &dev)?,
            ffn_in: candle_nn::linear(dim, cfg.ffn_dim, vb.pp("ffn").pp("net").pp("0").pp("proj"))?,
            ffn_out: candle_nn::linear(cfg.ffn_dim, dim, vb.pp("ffn").pp("net").pp("2"))?,
            scale_shift_table: sst.unsqueeze(0)?,
            dtype: vb.dtype(),
        })
    }

    pub(crate) fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Text cross-attention keys / values `[B, heads, Lt, head_dim]` for the
    /// embedded prompt `[B, Lt, D]` (computed once per prompt).
    pub(crate) fn text_kv(&self, text: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = self.attn2.key_value(text)?;
        Ok((self.attn2.split_heads(&k)?, self.attn2.split_heads(&v)?))
    }

    /// `x`: `[B, F * HW, D]`; `timestep_proj`: `[B, F, 6, D]` f32;
    /// `text_kv` from [`Self::text_kv`]; `audio`: (talk, listen), each
    /// `[B, F, n_tok, D]`. Returns the new `x` and, when
    /// `sa.collect_kv`, the un-roped K / V of `x`'s tokens.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        timestep_proj: &Tensor,
        sa: &SelfAttnInput<'_>,
        text_kv: &(Tensor, Tensor),
        audio: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, Option<LayerKv>)> {
        let m = self.scale_shift_table.broadcast_add(timestep_proj)?; // [B, F, 6, D]
        let part = |i: usize| m.narrow(2, i, 1);
        let (shift_msa, scale_msa, gate_msa) = (part(0)?, part(1)?, part(2)?);
        let (c_shift, c_scale, c_gate) = (part(3)?, part(4)?, part(5)?);

        // 1. self-attention
        let dev = x.device();
        let (x, kv) = profile::section("dit.self_attn", dev, || {
            let h = profile::section("dit.self_attn.modulate", dev, || {
                modulate(&self.norm1, x, &shift_msa, &scale_msa, self.dtype)
            })?;
            let (attn, kv) = self.self_attention(&h, sa)?;
            profile::section("dit.self_attn.residual", dev, || Ok((gated_residual(x, &attn, &gate_msa)?, kv)))
        })?;

        // 2. text cross-attention
        let x = profile::section("dit.cross_attn", dev, || {
            let h = match &self.norm2 {
                Some(n) => n.forward_as(&x, self.dtype)?,
                None => x.clone(),
            };
            let q = self.attn2.query_heads(&h, None)?;
            let o = scaled_dot_product_attention(&q, &text_kv.0, &text_kv.1, None)?;
            &x + self.attn2.project_out(&o)?
        })?;

        // 3. talk / listen audio attention
        let x = match (&self.audio, audio) {
            (Some(a), Some((talk, listen))) => profile::section("dit.audio_attn", dev, || a.forward(&x, talk, listen))?,
            _ => x,
        };

        // 4. feed-forward
        let x = profile::section("dit.ffn", dev, || {
            let h = profile::section("dit.ffn.modulate", dev, || {
                modulate(&self.norm3, &x, &c_shift, &c_scale, self.dtype)
            })?;
            let ff = profile::section("dit.ffn.mlp", dev, || self.ffn_out.forward(&self.ffn_in.forward(&h)?.gelu()?))?;
            profile::section("dit.ffn.residual", dev, || gated_residual(&x, &ff, &c_gate))
        })?;
        Ok((x, kv))
    }

    /// The cached un-roped K / V of this layer made ready for attention:
    /// keys rotated with the RoPE tables `cos` / `sin` of their (RAPR)
    /// positions, keys and values split into heads.
    pub(crate) fn prepare_past(&self, kv: &LayerKv, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = &self.attn1;
        Ok((a.rotated_heads(&kv.k, cos, sin)?, a.split_heads(&kv.v)?))
    }

    fn self_attention(&self, h: &Tensor, sa: &SelfAttnInput<'_>) -> Result<(Tensor, Option<LayerKv>)> {
        let a = &self.attn1;
        let dev = h.device();
        // Projections, then norm + RoPE + head split (one kernel each on
        // CUDA). The cache keeps the normalised keys before RoPE, [B, L, D].
        let (q, k_cur, v_cur, kv) = profile::section("dit.self_attn.qkv_norm_rope_heads", dev, || {
            let rope = Some((sa.cos, sa.sin));
            let q = a.query_heads(h, rope)?;
            if sa.collect_kv {
                let (k, v) = a.key_value(h)?;
                let k_cur = a.rotated_heads(&k, sa.cos, sa.sin)?;
                Ok((q, k_cur, a.split_heads(&v)?, Some(LayerKv { k, v })))
            } else {
                let (k, v) = a.key_value_heads(h, rope)?;
                Ok((q, k, v, None))
            }
        })?;
        let (k_all, v_all) = profile::section("dit.self_attn.kv_cat", dev, || {
            Ok(match &sa.past {
                Some(p) => (Tensor::cat(&[p.k, &k_cur], 2)?, Tensor::cat(&[p.v, &v_cur], 2)?),
                None => (k_cur, v_cur),
            })
        })?;
        let o =
            profile::section("dit.self_attn.sdpa", dev, || scaled_dot_product_attention(&q, &k_all, &v_all, sa.mask))?;
        Ok((profile::section("dit.self_attn.out_proj", dev, || a.project_out(&o))?, kv))
    }
}
