//! The f32 LayerNorms of the Wan block (diffusers `FP32LayerNorm`) and the
//! per-frame adaptive modulation (`scale_shift_table + timestep_proj`),
//! all computed in f32 as diffusers does.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::cuda_kernels;
use crate::model::grad_ops;

/// `FP32LayerNorm`, with or without affine parameters; output in f32.
#[derive(Debug, Clone)]
pub(crate) struct Fp32LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    /// `[2, D]`: weight, then bias (the fused CUDA kernel's layout); built
    /// on CUDA devices only (training rebuilds modules every step).
    packed: Option<Tensor>,
}

impl Fp32LayerNorm {
    /// Without affine parameters (`elementwise_affine=False`).
    pub(crate) fn plain(dim: usize, eps: f64, device: &Device) -> Result<Self> {
        Self::from_parts(Tensor::ones(dim, DType::F32, device)?, Tensor::zeros(dim, DType::F32, device)?, eps)
    }

    /// With `weight` and `bias` loaded from `vb` (kept in f32).
    pub(crate) fn affine(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let vb = vb.to_dtype(DType::F32);
        Self::from_parts(vb.get(dim, "weight")?, vb.get(dim, "bias")?, eps)
    }

    fn from_parts(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        let packed = if weight.device().is_cuda() { Some(Tensor::stack(&[&weight, &bias], 0)?.detach()) } else { None };
        Ok(Self { weight, bias, eps: eps as f32, packed })
    }

    /// Normalise the last dim of `x` (any dtype); returns f32.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        crate::model::grad_ops::layer_norm(&x, &self.weight, &self.bias, self.eps)
    }

    /// [`Self::forward`] cast to `dtype`; on CUDA (bf16) one fused kernel
    /// (the modulation kernel with zero shift and scale).
    pub(crate) fn forward_as(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        if let Some(packed) = &self.packed {
            if dtype == DType::BF16 && cuda_kernels::applies(x, 1) && !grad_ops::tracked(&[&self.weight, &self.bias]) {
                let (b, _, d) = x.dims3()?;
                let no_shift_scale = Tensor::zeros((b, 1, 2, d), DType::F32, x.device())?;
                return cuda_kernels::modulate(x, packed, &no_shift_scale, self.eps);
            }
        }
        self.forward(x)?.to_dtype(dtype)
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
    if let Some(packed) = &norm.packed {
        if dtype == DType::BF16 && cuda_kernels::applies(x, frames) && !grad_ops::tracked(&[shift, scale, &norm.weight])
        {
            return cuda_kernels::modulate(x, packed, &Tensor::cat(&[shift, scale], 2)?, norm.eps);
        }
    }
    let y = norm.forward(x)?.reshape((b, frames, l / frames, d))?;
    y.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?.reshape((b, l, d))?.to_dtype(dtype)
}

/// `(x.float() + y.float() * gate).type_as(x)` with a per-frame gate `[B, F, 1, D]`.
pub(crate) fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let frames = gate.dim(1)?;
    if y.dtype() == DType::BF16 && cuda_kernels::applies(x, frames) && !grad_ops::tracked(&[y, gate]) {
        return cuda_kernels::gated_residual(x, y, &gate.to_dtype(DType::F32)?);
    }
    let y = y.to_dtype(DType::F32)?.reshape((b, frames, l / frames, d))?.broadcast_mul(gate)?;
    (x.to_dtype(DType::F32)? + y.reshape((b, l, d))?)?.to_dtype(x.dtype())
}
