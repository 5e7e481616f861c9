//! Normalisation and softmax ops that keep candle's fast fused CPU/GPU
//! kernels for inference and switch to compositions of differentiable ops
//! when a gradient is being tracked (training, see `train/`).
//!
//! candle-nn 0.11's `ops::softmax_last_dim`, `ops::rms_norm` and
//! `ops::layer_norm` are custom ops without a backward pass: calling
//! `Tensor::backward` through them fails with `BackwardNotSupported`. The
//! fallbacks (`ops::softmax`, `ops::rms_norm_slow`, `ops::layer_norm_slow`)
//! compute the same values from elementwise ops and reductions, all of which
//! have a backward. The choice is made per call from `Tensor::track_op`, so
//! a model built from a checkpoint (no `Var`s) never takes the slow path.

use candle_core::{Result, Tensor, D};

fn tracked(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// Softmax over the last axis.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if tracked(&[x]) {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// RMS norm over the last axis with gain `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    if tracked(&[x, w]) {
        candle_nn::ops::rms_norm_slow(x, w, eps)
    } else {
        candle_nn::ops::rms_norm(x, w, eps)
    }
}

/// LayerNorm over the last axis with gain `w` and bias `b`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    if tracked(&[x, w, b]) {
        candle_nn::ops::layer_norm_slow(x, w, b, eps)
    } else {
        candle_nn::ops::layer_norm(x, w, b, eps)
    }
}

/// `candle_nn::LayerNorm::forward` with the differentiable path when tracked.
pub fn layer_norm_module(norm: &candle_nn::LayerNorm, x: &Tensor, eps: f64) -> Result<Tensor> {
    use candle_core::Module;
    match norm.bias() {
        Some(b) if tracked(&[x, norm.weight(), b]) => {
            candle_nn::ops::layer_norm_slow(&x.contiguous()?, norm.weight(), b, eps as f32)
        }
        _ => norm.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn tracked_paths_match_fast_paths_and_have_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 8), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 8, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 8, &dev)?;
        let xv = Var::from_tensor(&x)?;
        let diff = |a: &Tensor, c: &Tensor| -> Result<f32> { (a - c)?.abs()?.max_all()?.to_scalar::<f32>() };
        assert!(diff(&softmax_last_dim(&x)?, &softmax_last_dim(xv.as_tensor())?)? < 1e-5);
        assert!(diff(&rms_norm(&x, &w, 1e-6)?, &rms_norm(xv.as_tensor(), &w, 1e-6)?)? < 1e-5);
        assert!(diff(&layer_norm(&x, &w, &b, 1e-6)?, &layer_norm(xv.as_tensor(), &w, &b, 1e-6)?)? < 1e-5);
        let loss = (softmax_last_dim(xv.as_tensor())? * 3.0)?
            .add(&rms_norm(xv.as_tensor(), &w, 1e-6)?)?
            .add(&layer_norm(xv.as_tensor(), &w, &b, 1e-6)?)?
            .sqr()?
            .sum_all()?;
        let grads = loss.backward()?;
        let g = grads.get(xv.as_tensor()).expect("gradient for x");
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }
}
