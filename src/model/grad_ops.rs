//! Normalisation and softmax ops that keep candle's fast fused CPU/GPU
//! kernels for inference and switch to compositions of differentiable ops
//! when a gradient is being tracked (training, see `train/`).
//!
//! candle-nn 0.11's `ops::softmax_last_dim`, `ops::rms_norm`,
//! `ops::layer_norm` and `rotary_emb::rope_i` are custom ops without a
//! backward pass. Worse than an error: `Tensor::backward` silently treats
//! them as constants, so everything before them gets no gradient (the VAE's
//! attention q / k and the DiT's self-attention q / k trained nothing until
//! session 4). The fallbacks (`ops::softmax`, `ops::rms_norm_slow`,
//! `ops::layer_norm_slow`, the rotation written out below) compute the same
//! values from elementwise ops and reductions, all of which have a backward.
//! Use these wrappers, never the fused ops directly, in anything trained. The choice is made per call from `Tensor::track_op`, so
//! a model built from a checkpoint (no `Var`s) never takes the slow path.

use candle_core::{Result, Tensor, D};

pub(crate) fn tracked(ts: &[&Tensor]) -> bool {
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

/// Interleaved rotary embedding (`candle_nn::rotary_emb::rope_i`): `x`
/// `[B, H, L, D]`, `cos` / `sin` `[L, D/2]` or `[B, L, D/2]`; pairs
/// `(x[2i], x[2i+1])` are rotated by the angle of column `i`.
pub fn rope_i(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !tracked(&[x, cos, sin]) {
        return candle_nn::rotary_emb::rope_i(x, cos, sin);
    }
    let (b, h, l, d) = x.dims4()?;
    let table = |t: &Tensor| -> Result<Tensor> {
        match t.rank() {
            2 => t.reshape((1, 1, l, d / 2, 1)),
            _ => t.reshape((b, 1, l, d / 2, 1)),
        }
    };
    let (cos, sin) = (table(cos)?, table(sin)?);
    let x = x.reshape((b, h, l, d / 2, 2))?;
    let (x0, x1) = (x.narrow(D::Minus1, 0, 1)?, x.narrow(D::Minus1, 1, 1)?);
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y0, y1], D::Minus1)?.reshape((b, h, l, d))
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
        // Each op on its own must pass a gradient back (a fused op without
        // a backward would leave none).
        let ops: [(&str, &dyn Fn(&Tensor) -> Result<Tensor>); 3] = [
            ("softmax", &|x| softmax_last_dim(x)),
            ("rms_norm", &|x| rms_norm(x, &w, 1e-6)),
            ("layer_norm", &|x| layer_norm(x, &w, &b, 1e-6)),
        ];
        for (name, op) in ops {
            let grads = (op(xv.as_tensor())? * &x)?.sum_all()?.backward()?;
            let g = grads.get(xv.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient for x"));
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "{name}: zero gradient");
        }
        Ok(())
    }

    #[test]
    fn rope_i_matches_the_fused_op_and_has_a_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev)?;
        let angles = Tensor::randn(0f32, 1., (5, 4), &dev)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let xv = Var::from_tensor(&x)?;
        let fused = candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?;
        let ours = rope_i(xv.as_tensor(), &cos, &sin)?;
        assert!((&fused - &ours)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        // Per-batch tables too.
        let (cb, sb) = (cos.unsqueeze(0)?.repeat((2, 1, 1))?, sin.unsqueeze(0)?.repeat((2, 1, 1))?);
        let fused_b = candle_nn::rotary_emb::rope_i(&x, &cb, &sb)?;
        assert!((&fused_b - &rope_i(xv.as_tensor(), &cb, &sb)?)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        // A rotation: d(sum(rope(x) * rope(x)))/dx = 2x.
        let grads = ours.sqr()?.sum_all()?.backward()?;
        let g = grads.get(xv.as_tensor()).expect("gradient for x");
        assert!((g - (&x * 2.0)?)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        Ok(())
    }
}
