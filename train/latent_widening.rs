//! Warm start of a VAE with a wider latent (`z_dim`) from a trained one,
//! keeping what it computes.
//!
//! Four tensors carry the latent width: the encoder's `conv_out` (`2 z`
//! outputs: mean features, then log-variance features), the posterior
//! `quant_conv` (`2 z -> 2 z`, 1x1x1), `post_quant_conv` (`z -> z`) and the
//! decoder's `conv_in` (`z` inputs). [`widen_latent`] places the trained
//! `z_old` channels first in each half and sets the blocks that connect
//! new channels to old ones to zero, so the widened VAE reconstructs
//! exactly as the trained one did; the new channels start from their fresh
//! initialisation (random encoder rows, so the decoder's zero columns for
//! them get a gradient at the first step). New log-variance rows start
//! with a zero kernel and the bias of the old ones' mean (a posterior as
//! narrow as the trained one).

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use super::params::WarmStart;

/// The tensors whose shape follows `z_dim`.
pub const LATENT_TENSORS: [&str; 8] = [
    "encoder.conv_out.weight",
    "encoder.conv_out.bias",
    "quant_conv.weight",
    "quant_conv.bias",
    "post_quant_conv.weight",
    "post_quant_conv.bias",
    "decoder.conv_in.weight",
    "decoder.conv_in.bias",
];

/// Where the rows of a `[mean; logvar]` stack of width `2 z_old` go in one
/// of width `2 z_new`.
fn posterior_rows(z_old: usize, z_new: usize) -> Vec<usize> {
    (0..z_old).chain(z_new..z_new + z_old).collect()
}

/// `fresh` with `old`'s row `i` written at row `rows[i]` (dim 0) and, with
/// `cols`, its column `j` at column `cols[j]` (dim 1). The rows listed in
/// `zero_rows` are zeroed first; with `zero_other_cols`, so are the
/// columns of a written row that get no old value.
fn embed(
    fresh: &Tensor,
    old: &Tensor,
    rows: &[usize],
    cols: Option<&[usize]>,
    zero_rows: &[usize],
    zero_other_cols: bool,
) -> candle_core::Result<Tensor> {
    let dims = fresh.dims().to_vec();
    let src_dims = old.dims();
    let trailing = |d: &[usize]| d.get(2..).map(|t| t.to_vec()).unwrap_or_default();
    let fits = src_dims.len() == dims.len()
        && src_dims[0] == rows.len()
        && rows.iter().all(|&r| r < dims[0])
        && match cols {
            None => src_dims[1..] == dims[1..],
            Some(cols) => {
                dims.len() >= 2
                    && src_dims[1] == cols.len()
                    && cols.iter().all(|&c| c < dims[1])
                    && trailing(src_dims) == trailing(&dims)
            }
        };
    if !fits {
        candle_core::bail!("cannot widen a {src_dims:?} tensor into {dims:?}");
    }
    let inner: usize = dims[1..].iter().product();
    let per_col: usize = dims.get(2..).map(|t| t.iter().product()).unwrap_or(1);
    let mut out = fresh.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let src = old.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let old_inner: usize = old.dims()[1..].iter().product();
    for &r in zero_rows {
        out[r * inner..(r + 1) * inner].fill(0.0);
    }
    for (i, &r) in rows.iter().enumerate() {
        match cols {
            None => out[r * inner..(r + 1) * inner].copy_from_slice(&src[i * old_inner..(i + 1) * old_inner]),
            Some(cols) => {
                if zero_other_cols {
                    out[r * inner..(r + 1) * inner].fill(0.0);
                }
                for (j, &c) in cols.iter().enumerate() {
                    let (o, s) = (r * inner + c * per_col, i * old_inner + j * per_col);
                    out[o..o + per_col].copy_from_slice(&src[s..s + per_col]);
                }
            }
        }
    }
    Tensor::from_vec(out, dims, fresh.device())?.to_dtype(fresh.dtype())
}

/// Set the latent-width tensors of `vars` (a VAE of latent width
/// `z_new`) from `file`'s trained VAE of width `z_old < z_new` (see the
/// module docs). Returns how many variables were set; `report`'s
/// shape-mismatch list loses them.
pub fn widen_latent(
    vars: &HashMap<String, Var>,
    file: &HashMap<String, Tensor>,
    z_new: usize,
    report: &mut WarmStart,
) -> candle_core::Result<usize> {
    let z_old = match file.get("post_quant_conv.bias") {
        Some(t) => t.dim(0)?,
        None => return Ok(0),
    };
    if z_old >= z_new {
        return Ok(0);
    }
    let var = |n: &str| vars.get(n).ok_or_else(|| candle_core::Error::Msg(format!("the VAE has no `{n}`")));
    let old = |n: &str| file.get(n).ok_or_else(|| candle_core::Error::Msg(format!("the file has no `{n}`")));
    let post_rows = posterior_rows(z_old, z_new);
    let mean_rows: Vec<usize> = (0..z_old).collect();
    let new_logvar: Vec<usize> = (z_new + z_old..2 * z_new).collect();
    let logvar_bias = old("quant_conv.bias")?.narrow(0, z_old, z_old)?.to_dtype(candle_core::DType::F32)?;
    let logvar_bias = logvar_bias.mean_all()?.to_scalar::<f32>()?;

    // Encoder: trained rows in place; new mean rows keep their random init.
    for n in ["encoder.conv_out.weight", "encoder.conv_out.bias"] {
        let v = var(n)?;
        v.set(&embed(v.as_tensor(), old(n)?, &post_rows, None, &[], false)?)?;
    }
    // Posterior: old block in place, new inputs cut off from old outputs;
    // new log-variance rows: zero kernel, the old rows' mean bias.
    let v = var("quant_conv.weight")?;
    v.set(&embed(v.as_tensor(), old("quant_conv.weight")?, &post_rows, Some(&post_rows), &new_logvar, true)?)?;
    let v = var("quant_conv.bias")?;
    let bias = embed(v.as_tensor(), old("quant_conv.bias")?, &post_rows, None, &[], false)?;
    let mut b = bias.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    for &r in &new_logvar {
        b[r] = logvar_bias;
    }
    v.set(&Tensor::from_vec(b, 2 * z_new, bias.device())?.to_dtype(bias.dtype())?)?;
    // After the posterior: old block in place, new inputs cut off.
    let v = var("post_quant_conv.weight")?;
    v.set(&embed(v.as_tensor(), old("post_quant_conv.weight")?, &mean_rows, Some(&mean_rows), &[], true)?)?;
    let v = var("post_quant_conv.bias")?;
    v.set(&embed(v.as_tensor(), old("post_quant_conv.bias")?, &mean_rows, None, &[], false)?)?;
    // Decoder input: trained columns in place, the new latent channels'
    // columns zero (transpose view: rows = output features, all kept).
    let v = var("decoder.conv_in.weight")?;
    let w = v.as_tensor();
    let out_features: Vec<usize> = (0..w.dim(0)?).collect();
    v.set(&embed(w, old("decoder.conv_in.weight")?, &out_features, Some(&mean_rows), &[], true)?)?;

    let before = report.shape_mismatch.len();
    report.shape_mismatch.retain(|n| !LATENT_TENSORS.contains(&n.as_str()));
    let set = before - report.shape_mismatch.len();
    report.loaded += set;
    Ok(set)
}
