//! The f32 LayerNorms of the Wan block (diffusers `FP32LayerNorm`) and the
//! per-frame adaptive modulation (`scale_shift_table + timestep_proj`),
//! all computed in f32 as diffusers does.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// `FP32LayerNorm`, with or without affine parameters; output in f32.
#[derive(Debug, Clone)]
pub(crate) struct Fp32LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Fp32LayerNorm {
    /// Without affine parameters (`elementwise_affine=False`).
    pub(crate) fn plain(dim: usize, eps: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: Tensor::ones(dim, DType::F32, device)?,
            bias: Tensor::zeros(dim, DType::F32, device)?,
            eps: eps as f32,
        })
    }

    /// With `weight` and `bias` loaded from `vb` (kept in f32).
    pub(crate) fn affine(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let vb = vb.to_dtype(DType::F32);
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps: eps as f32 })
    }

    /// Normalise the last dim of `x` (any dtype); returns f32.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        crate::model::grad_ops::layer_norm(&x, &self.weight, &self.bias, self.eps)
    }
}

/// `norm(x) * (1 + scale) + shift` with per-frame `shift`/`scale`
/// (`[B, F, 1, D]` f32) broadcast over the frame's tokens; `x` is
/// `[B, F * tokens_per_frame, D]`. Returns `dtype`.
pub(crate) fn modulate(
    norm: &Fp32LayerNorm,
    x: &Tensor,
    shift: &Tensor,
    scale: &Tensor,
    dtype: DType,
) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let frames = shift.dim(1)?;
    let y = norm.forward(x)?.reshape((b, frames, l / frames, d))?;
    y.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?.reshape((b, l, d))?.to_dtype(dtype)
}

/// `(x.float() + y.float() * gate).type_as(x)` with a per-frame gate `[B, F, 1, D]`.
pub(crate) fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let frames = gate.dim(1)?;
    let y = y.to_dtype(DType::F32)?.reshape((b, frames, l / frames, d))?.broadcast_mul(gate)?;
    (x.to_dtype(DType::F32)? + y.reshape((b, l, d))?)?.to_dtype(x.dtype())
}
