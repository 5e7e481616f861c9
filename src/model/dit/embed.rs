//! Input and output embeddings of the Wan DiT: the 1x2x2 patch embedding
//! (diffusers `patch_embedding`, a Conv3d with stride = kernel, applied here
//! as a linear over flattened patches), the inverse un-patchify, and the
//! condition embedder (`condition_embedder.{time_embedder, time_proj,
//! text_embedder}`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// `patch_embedding`: Conv3d(in, dim, kernel = stride = patch) as a linear.
#[derive(Debug, Clone)]
pub(crate) struct PatchEmbedding {
    /// `[dim, in * pt * ph * pw]`
    weight: Tensor,
    bias: Tensor,
    patch: [usize; 3],
}

impl PatchEmbedding {
    pub(crate) fn new(in_channels: usize, dim: usize, patch: [usize; 3], vb: VarBuilder) -> Result<Self> {
        let [pt, ph, pw] = patch;
        let weight = vb.get((dim, in_channels, pt, ph, pw), "weight")?;
        let weight = weight.reshape((dim, in_channels * pt * ph * pw))?;
        let bias = vb.get(dim, "bias")?;
        Ok(Self { weight, bias, patch })
    }

    /// `[B, C, F, H, W]` -> `[B, F/pt * H/ph * W/pw, dim]` (token order
    /// frame-major, then rows, then columns, as diffusers' flatten(2)).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = x.dims5()?;
        let [pt, ph, pw] = self.patch;
        let (nf, nh, nw) = (f / pt, h / ph, w / pw);
        let x = x
            .reshape(vec![b, c, nf, pt, nh, ph, nw, pw])?
            .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?
            .contiguous()?
            .reshape((b, nf * nh * nw, c * pt * ph * pw))?;
        x.broadcast_matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// `[B, L, C * pt * ph * pw]` -> `[B, C, nf * pt, nh * ph, nw * pw]`
/// (diffusers' reshape + permute(0, 7, 1, 4, 2, 5, 3, 6)).
pub(crate) fn unpatchify(
    x: &Tensor,
    grid: (usize, usize, usize),
    patch: [usize; 3],
    out_channels: usize,
) -> Result<Tensor> {
    let b = x.dim(0)?;
    let (nf, nh, nw) = grid;
    let [pt, ph, pw] = patch;
    x.reshape(vec![b, nf, nh, nw, pt, ph, pw, out_channels])?
        .permute(vec![0, 7, 1, 4, 2, 5, 3, 6])?
        .contiguous()?
        .reshape((b, out_channels, nf * pt, nh * ph, nw * pw))
}

/// `condition_embedder`: timestep and text embeddings.
#[derive(Debug, Clone)]
pub(crate) struct ConditionEmbedder {
    freq_dim: usize,
    /// `time_embedder.linear_1/2` (kept in f32 like diffusers).
    time_linear_1: Linear,
    time_linear_2: Linear,
    time_proj: Linear,
    text_linear_1: Linear,
    text_linear_2: Linear,
    dtype: DType,
}

impl ConditionEmbedder {
    pub(crate) fn new(freq_dim: usize, dim: usize, text_dim: usize, vb: VarBuilder) -> Result<Self> {
        let dtype = vb.dtype();
        let time_vb = vb.pp("time_embedder").to_dtype(DType::F32);
        Ok(Self {
            freq_dim,
            time_linear_1: candle_nn::linear(freq_dim, dim, time_vb.pp("linear_1"))?,
            time_linear_2: candle_nn::linear(dim, dim, time_vb.pp("linear_2"))?,
            time_proj: candle_nn::linear(dim, 6 * dim, vb.pp("time_proj"))?,
            text_linear_1: candle_nn::linear(text_dim, dim, vb.pp("text_embedder").pp("linear_1"))?,
            text_linear_2: candle_nn::linear(dim, dim, vb.pp("text_embedder").pp("linear_2"))?,
            dtype,
        })
    }

    /// Timesteps `[B, F]` (one per latent frame) -> (`temb` `[B, F, dim]` in
    /// the model dtype, `timestep_proj` `[B, F, 6, dim]` in f32).
    pub(crate) fn time(&self, timesteps: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, f) = timesteps.dims2()?;
        let t: Vec<f32> = timesteps.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let sinus = timestep_sinusoids(&t, self.freq_dim, timesteps.device())?;
        let temb = self.time_linear_2.forward(&self.time_linear_1.forward(&sinus)?.silu()?)?.to_dtype(self.dtype)?;
        let proj = self.time_proj.forward(&temb.silu()?)?.to_dtype(DType::F32)?;
        let dim = temb.dim(1)?;
        Ok((temb.reshape((b, f, dim))?, proj.reshape((b, f, 6, dim))?))
    }

    /// `text_embedder`: `[B, Lt, text_dim]` -> `[B, Lt, dim]` (gelu-tanh MLP).
    pub(crate) fn text(&self, text: &Tensor) -> Result<Tensor> {
        let text = text.to_dtype(self.dtype)?;
        self.text_linear_2.forward(&self.text_linear_1.forward(&text)?.gelu()?)
    }
}

/// diffusers `Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)`:
/// `[cos(t * f_i), sin(t * f_i)]` with `f_i = exp(-ln(10000) * i / half)`,
/// computed in f32 in the same order of operations as torch. Returns `[N, freq_dim]` f32.
pub(crate) fn timestep_sinusoids(timesteps: &[f32], freq_dim: usize, device: &Device) -> Result<Tensor> {
    let half = freq_dim / 2;
    let neg_log = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((neg_log * i as f32) / half as f32).exp()).collect();
    let mut out = Vec::with_capacity(timesteps.len() * freq_dim);
    for &t in timesteps {
        out.extend(freqs.iter().map(|&f| (t * f).cos()));
        out.extend(freqs.iter().map(|&f| (t * f).sin()));
        if freq_dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (timesteps.len(), freq_dim), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoids_are_cos_then_sin() {
        let e = timestep_sinusoids(&[0.0, 2.0], 4, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e[0], vec![1.0, 1.0, 0.0, 0.0]);
        // freqs: 1, 0.01
        assert!((e[1][0] - 2f32.cos()).abs() < 1e-6);
        assert!((e[1][1] - 0.02f32.cos()).abs() < 1e-6);
        assert!((e[1][2] - 2f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn patchify_roundtrip() {
        // A permutation patch embedding: unpatchify(patchify(x)) == x.
        let dev = Device::Cpu;
        let (c, patch) = (3usize, [1usize, 2, 2]);
        let n = c * 4;
        // Input patch vectors are ordered (c, py, px); outputs (py, px, c).
        let mut w = vec![0f32; n * n];
        for ci in 0..c {
            for p in 0..4 {
                w[(p * c + ci) * n + ci * 4 + p] = 1.0;
            }
        }
        let eye = Tensor::from_vec(w, (n, c, 1, 2, 2), &dev).unwrap();
        let mut map = std::collections::HashMap::new();
        map.insert("weight".to_string(), eye);
        map.insert("bias".to_string(), Tensor::zeros(n, DType::F32, &dev).unwrap());
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let pe = PatchEmbedding::new(c, n, patch, vb).unwrap();
        let x = Tensor::randn(0f32, 1., (2, c, 3, 4, 6), &dev).unwrap();
        let tokens = pe.forward(&x).unwrap();
        assert_eq!(tokens.dims(), &[2, 3 * 2 * 3, n]);
        let back = unpatchify(&tokens, (3, 2, 3), patch, c).unwrap();
        let diff = (back - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
    }
}
