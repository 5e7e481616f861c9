//! Wan's attention module (diffusers `WanAttention` without the I2V image
//! branch): `to_q`, `to_k`, `to_v`, `to_out.0` linears and RMSNorm of q and k
//! across all heads (`norm_q`, `norm_k`), plus a scaled-dot-product
//! attention helper. Used for the DiT self-attention, the text
//! cross-attention and StreamAvatar's talk/listen audio attention.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

/// One Wan attention module (`WanAttention`, `qk_norm = rms_norm_across_heads`).
#[derive(Debug, Clone)]
pub struct WanAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    /// RMSNorm gains, kept in f32.
    norm_q: Tensor,
    norm_k: Tensor,
    heads: usize,
    head_dim: usize,
    eps: f32,
}

impl WanAttention {
    /// `dim`: model width (= heads * head_dim); `kv_dim`: width of the
    /// key/value source (equal to `dim` in Wan and for the audio tokens).
    pub fn new(dim: usize, kv_dim: usize, heads: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if heads == 0 || dim % heads != 0 {
            candle_core::bail!("attention width {dim} does not divide into {heads} heads");
        }
        let f32_vb = vb.to_dtype(DType::F32);
        Ok(Self {
            to_q: candle_nn::linear(dim, dim, vb.pp("to_q"))?,
            to_k: candle_nn::linear(kv_dim, dim, vb.pp("to_k"))?,
            to_v: candle_nn::linear(kv_dim, dim, vb.pp("to_v"))?,
            to_out: candle_nn::linear(dim, dim, vb.pp("to_out").pp("0"))?,
            norm_q: f32_vb.get(dim, "norm_q.weight")?,
            norm_k: f32_vb.get(dim, "norm_k.weight")?,
            heads,
            head_dim: dim / heads,
            eps: eps as f32,
        })
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Normalised queries `[B, L, inner]`.
    pub fn query(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm_f32(&self.to_q.forward(x)?, &self.norm_q, self.eps)
    }

    /// Normalised keys and values `[B, L, inner]` (keys not yet roped).
    pub fn key_value(&self, ctx: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = rms_norm_f32(&self.to_k.forward(ctx)?, &self.norm_k, self.eps)?;
        let v = self.to_v.forward(ctx)?;
        Ok((k, v))
    }

    /// `[B, L, heads * head_dim]` -> `[B, heads, L, head_dim]` (contiguous).
    pub fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        x.reshape((b, l, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    /// `[B, heads, L, head_dim]` -> output projection `[B, L, dim]`.
    pub fn project_out(&self, o: &Tensor) -> Result<Tensor> {
        let (b, h, l, d) = o.dims4()?;
        let o = o.transpose(1, 2)?.reshape((b, l, h * d))?;
        self.to_out.forward(&o)
    }

    /// Normalised queries split into heads, `[B, heads, L, head_dim]`,
    /// rotated with `rope` (`cos`, `sin` `[L, head_dim / 2]`) when given. On
    /// CUDA (bf16) the norm, RoPE and head split are one fused kernel
    /// ([`crate::model::attention_kernels`]).
    pub fn query_heads(&self, x: &Tensor, rope: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        self.normed_heads(&self.to_q.forward(x)?, &self.norm_q, rope)
    }

    /// Normalised keys split into heads (see [`Self::query_heads`]) and the
    /// values split into heads.
    pub fn key_value_heads(&self, ctx: &Tensor, rope: Option<(&Tensor, &Tensor)>) -> Result<(Tensor, Tensor)> {
        let k = self.normed_heads(&self.to_k.forward(ctx)?, &self.norm_k, rope)?;
        Ok((k, self.split_heads(&self.to_v.forward(ctx)?)?))
    }

    /// Already normalised keys `[B, L, inner]` (the KV cache keeps them
    /// un-roped) split into heads and rotated with `cos` / `sin`.
    pub fn rotated_heads(&self, k: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if cos.rank() == 2 && sin.rank() == 2 && crate::model::attention_kernels::applies(k, self.heads) {
            return crate::model::attention_kernels::norm_rope_heads(k, None, Some((cos, sin)), self.heads, self.eps);
        }
        crate::model::rope::apply_rope(&self.split_heads(k)?, cos, sin)
    }

    fn normed_heads(&self, projected: &Tensor, norm: &Tensor, rope: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        let table_fits = rope.is_none_or(|(c, s)| c.rank() == 2 && s.rank() == 2);
        if table_fits && crate::model::attention_kernels::applies(projected, self.heads) {
            return crate::model::attention_kernels::norm_rope_heads(projected, Some(norm), rope, self.heads, self.eps);
        }
        let heads = self.split_heads(&rms_norm_f32(projected, norm, self.eps)?)?;
        match rope {
            Some((cos, sin)) => crate::model::rope::apply_rope(&heads, cos, sin),
            None => Ok(heads),
        }
    }

    /// Plain cross-attention of `x` over `ctx` (no RoPE, no mask).
    pub fn cross_attend(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (k, v) = self.key_value(ctx)?;
        self.attend(x, &k, &v)
    }

    /// Cross-attention of `x` `[B, L, dim]` over keys and values already
    /// made by [`Self::key_value`] (`[B, Lk, inner]`), output-projected.
    /// With at most [`attention_kernels::MAX_KEYS`](crate::model::attention_kernels::MAX_KEYS)
    /// keys on CUDA (bf16; the audio attention's few audio tokens per frame)
    /// the query norm and the attention are one fused kernel.
    pub fn attend(&self, x: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        use crate::model::attention_kernels as kernels;
        if k.dim(1)? <= kernels::MAX_KEYS && kernels::applies(x, self.heads) && kernels::applies(k, self.heads) {
            let o = kernels::few_key_attention(&self.to_q.forward(x)?, &self.norm_q, k, v, self.heads, self.eps)?;
            return self.to_out.forward(&o);
        }
        let q = self.split_heads(&self.query(x)?)?;
        let o = scaled_dot_product_attention(&q, &self.split_heads(k)?, &self.split_heads(v)?, None)?;
        self.project_out(&o)
    }
}

/// torch `RMSNorm` over the last dim, computed in f32, returned in `x`'s dtype.
pub fn rms_norm_f32(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let dtype = x.dtype();
    crate::model::grad_ops::rms_norm(&x.to_dtype(DType::F32)?.contiguous()?, weight, eps)?.to_dtype(dtype)
}

/// Upper bound on attention-score elements materialised at once on the CPU;
/// larger problems are split over heads (keeps the full model's chunk
/// attention, 2,640 queries x ~17k keys x 24 heads, within a few hundred MB).
const MAX_SCORE_ELEMENTS: usize = 1 << 27;
/// The same on a GPU (4 GiB of f32 scores), where fewer, larger launches pay.
const MAX_SCORE_ELEMENTS_GPU: usize = 1 << 30;

static HALF_SCORES: AtomicBool = AtomicBool::new(false);

/// Keep the attention scores in the inputs' dtype (bf16/f16) instead of f32:
/// the scale is folded into `q`, and the softmax kernel still accumulates in
/// f32. It cuts the memory traffic of the materialised score matrix (the
/// full model's largest cost on a GPU without a fused attention kernel) by
/// about half, at a precision cost that `bench generator --half-scores`
/// and the bf16 parity test measure. Off by default; f32 inputs are
/// unaffected.
pub fn set_half_precision_scores(on: bool) {
    HALF_SCORES.store(on, Ordering::Relaxed);
}

/// `softmax(q k^T / sqrt(d) + mask) v` for `[B, H, L, d]` inputs. Scores and
/// softmax are computed in f32 (or in the inputs' half dtype, see
/// [`set_half_precision_scores`]); `mask` is an additive f32 mask broadcastable
/// to `[B, H, Lq, Lk]` (0 = attend, -inf = blocked; every query must see at
/// least one key). Large problems are processed a few heads at a time.
/// Unmasked bf16 attention with head dim 128 on CUDA goes to the fused
/// kernel instead ([`crate::model::flash_attention`]).
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    if crate::model::flash_attention::applies(q, k, v, mask.is_some()) {
        let scale = 1.0 / (q.dim(D::Minus1)? as f32).sqrt();
        return crate::model::flash_attention::attention(q, k, v, scale);
    }
    scaled_dot_product_attention_materialised(q, k, v, mask)
}

/// [`scaled_dot_product_attention`] with the score matrix materialised,
/// never the fused kernel (the reference the kernel is tested against).
pub fn scaled_dot_product_attention_materialised(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let limit = if q.device().is_cpu() { MAX_SCORE_ELEMENTS } else { MAX_SCORE_ELEMENTS_GPU };
    sdpa_split_heads(q, k, v, mask, limit)
}

fn sdpa_split_heads(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, max_elements: usize) -> Result<Tensor> {
    let (b, h, lq, _) = q.dims4()?;
    let lk = k.dim(2)?;
    let per_head = b * lq * lk;
    let heads_at_once = (max_elements / per_head.max(1)).clamp(1, h.max(1));
    if heads_at_once >= h {
        return sdpa_once(q, k, v, mask);
    }
    let mut outs = Vec::with_capacity(h.div_ceil(heads_at_once));
    let mut h0 = 0;
    while h0 < h {
        let n = heads_at_once.min(h - h0);
        outs.push(sdpa_once(&q.narrow(1, h0, n)?, &k.narrow(1, h0, n)?, &v.narrow(1, h0, n)?, mask)?);
        h0 += n;
    }
    Tensor::cat(&outs, 1)
}

fn sdpa_once(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    sdpa_scores_in(q, k, v, mask, HALF_SCORES.load(Ordering::Relaxed))
}

fn sdpa_scores_in(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, half_scores: bool) -> Result<Tensor> {
    let dtype = q.dtype();
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let scores = if half_scores && !matches!(dtype, DType::F32 | DType::F64) {
        // Scale first so the half-precision scores stay in range.
        (q * scale)?.contiguous()?.matmul(&k.t()?.contiguous()?)?
    } else {
        (q.contiguous()?.matmul(&k.t()?.contiguous()?)?.to_dtype(DType::F32)? * scale)?
    };
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m.to_dtype(scores.dtype())?)?,
        None => scores,
    };
    let probs = crate::model::grad_ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    probs.matmul(&v.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sdpa_matches_manual_softmax_and_mask() {
        let dev = Device::Cpu;
        let q = Tensor::new(&[[[[1f32, 0.], [0., 1.]]]], &dev).unwrap();
        let k = Tensor::new(&[[[[1f32, 0.], [0., 2.]]]], &dev).unwrap();
        let v = Tensor::new(&[[[[10f32, 0.], [0., 10.]]]], &dev).unwrap();
        let o = scaled_dot_product_attention(&q, &k, &v, None).unwrap();
        let o = o.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = 1.0 / 2f32.sqrt();
        let w0 = 1.0 / (1.0 + (-s).exp()); // query 0: scores (s, 0)
        assert!((o[0] - 10.0 * w0).abs() < 1e-5);
        let mask = Tensor::new(&[[0f32, f32::NEG_INFINITY], [0., 0.]], &dev).unwrap();
        let o = scaled_dot_product_attention(&q, &k, &v, Some(&mask)).unwrap();
        let o = o.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&o[..2], &[10.0, 0.0]);
    }

    /// bf16 scores (scale folded into q, f32 softmax accumulation) stay
    /// close to f32 scores for bf16 inputs, mask included.
    #[test]
    fn half_precision_scores_stay_close() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1., (1, 2, 16, 32), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let k = Tensor::randn(0f32, 1., (1, 2, 24, 32), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let v = Tensor::randn(0f32, 1., (1, 2, 24, 32), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let blocked: Vec<f32> = (0..16 * 24).map(|i| if i % 24 >= 20 { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_vec(blocked, (16, 24), &dev).unwrap();
        let a = sdpa_scores_in(&q, &k, &v, Some(&mask), false).unwrap();
        let b = sdpa_scores_in(&q, &k, &v, Some(&mask), true).unwrap();
        let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
        let d = d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 0.05, "bf16 scores differ by {d}");
        assert!(d > 0.0, "the half-precision path was not taken");
    }

    #[test]
    fn head_split_matches_single_pass() {
        let dev = Device::Cpu;
        // 5 heads, a limit that fits 2 heads at once -> groups 2 + 2 + 1.
        let lk = 10;
        let q = Tensor::randn(0f32, 1., (1, 5, 8, 4), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (1, 5, lk, 4), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (1, 5, lk, 4), &dev).unwrap();
        let split = sdpa_split_heads(&q, &k, &v, None, 2 * 8 * lk + 1).unwrap();
        let whole = sdpa_once(&q, &k, &v, None).unwrap();
        let d = (split - whole).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
