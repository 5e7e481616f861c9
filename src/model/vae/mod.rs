//! The Wan2.2 video VAE (diffusers `AutoencoderKLWan` with `is_residual`,
//! `patch_size = 2`): encoder for the reference image / short clips, decoder
//! for whole sequences, and [`StreamingDecoder`] that decodes a latent
//! stream chunk by chunk with a bounded causal feature cache.
//!
//! Tensor names are diffusers' (`encoder.down_blocks.0.resnets.0.conv1.weight`,
//! `decoder.up_blocks.1.upsampler.time_conv.bias`, `quant_conv.weight`, ...).
//!
//! Public tensors use diffusers' layout `[B, C, T, H, W]`. Internally all
//! activations are frames-major `[B, T, C, H, W]`: every per-frame operation
//! (norms, 2-D resampling, attention, the stacked-taps causal conv) is then a
//! reshape, not a permute-copy.
//!
//! Video: 3 channels in [-1, 1]; 4x temporal, 16x spatial compression
//! (`1 + 4k` frames -> `1 + k` latent frames); latents have `z_dim` channels.
//! The DiT works on normalized latents: see [`LatentNorm`].

mod blocks;
mod causal_conv;
mod cpu_conv;
pub mod cuda_kernels;
mod decoder;
mod encoder;
mod light_decoder;
mod streaming;

pub use blocks::ResampleMode;
pub use causal_conv::{CacheSlot, CausalConv3d, CACHE_T};
pub use decoder::{Decoder3d, VaeDecoder};
pub use encoder::{Encoder3d, VaeEncoder};
pub use light_decoder::{LightDecoder, LightStreamingDecoder};
pub use streaming::StreamingDecoder;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::VaeConfig;

/// Errors of the VAE: bad input shapes, unsupported configs, candle errors
/// (including missing / mis-shaped weights).
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error("invalid VAE input: {0}")]
    InvalidInput(String),
    #[error("unsupported VAE config: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Check a streamed latent chunk `[B, z_dim, F, h, w]` against the decoder's
/// channels and the stream's geometry (fixed by its first chunk);
/// `(b, f, h, w)` on success. `who` names the decoder in the messages.
pub(crate) fn check_latent_chunk(
    z: &Tensor,
    z_dim: usize,
    geometry: Option<(usize, usize, usize)>,
    who: &str,
) -> Result<(usize, usize, usize, usize), VaeError> {
    let dims = z.dims();
    if dims.len() != 5 {
        return Err(VaeError::InvalidInput(format!("latent chunk must be [B, z, F, h, w], got {dims:?}")));
    }
    let (b, c, f, h, w) = (dims[0], dims[1], dims[2], dims[3], dims[4]);
    if c != z_dim {
        return Err(VaeError::InvalidInput(format!("latent chunk has {c} channels, the {who} expects {z_dim}")));
    }
    if f == 0 || h == 0 || w == 0 || b == 0 {
        return Err(VaeError::InvalidInput(format!("empty latent chunk {dims:?}")));
    }
    match geometry {
        Some(g) if g != (b, h, w) => Err(VaeError::InvalidInput(format!(
            "latent chunk batch/size {:?} differs from the stream's {g:?}; reset() first",
            (b, h, w)
        ))),
        _ => Ok((b, f, h, w)),
    }
}

/// Check that a config describes a Wan2.2-style VAE this module implements.
pub fn validate_config(cfg: &VaeConfig) -> Result<(), VaeError> {
    let bad = |m: String| Err(VaeError::Unsupported(m));
    if !cfg.is_residual {
        return bad("only the Wan2.2 residual VAE (is_residual = true) is implemented".into());
    }
    let n = cfg.dim_mult.len();
    if n < 2 || cfg.temperal_downsample.len() + 1 < n {
        return bad(format!(
            "dim_mult {:?} / temperal_downsample {:?} do not match",
            cfg.dim_mult, cfg.temperal_downsample
        ));
    }
    if cfg.num_res_blocks == 0 {
        // The encoder changes width inside its residual blocks.
        return bad("num_res_blocks must be at least 1".into());
    }
    if cfg.patch_size == 0
        || cfg.in_channels != 3 * cfg.patch_size * cfg.patch_size
        || cfg.out_channels != cfg.in_channels
    {
        return bad(format!(
            "in/out channels {}/{} must be 3 * patch_size^2 (patch_size {})",
            cfg.in_channels, cfg.out_channels, cfg.patch_size
        ));
    }
    let spatial = cfg.patch_size << (n - 1);
    if spatial != cfg.scale_factor_spatial {
        return bad(format!(
            "scale_factor_spatial {} != patch_size * 2^{} = {spatial}",
            cfg.scale_factor_spatial,
            n - 1
        ));
    }
    let temporal = 1usize << cfg.temperal_downsample[..n - 1].iter().filter(|t| **t).count();
    if temporal != cfg.scale_factor_temporal {
        return bad(format!(
            "scale_factor_temporal {} != 2^(temporal downsamples) = {temporal}",
            cfg.scale_factor_temporal
        ));
    }
    if cfg.latents_mean.len() != cfg.z_dim || cfg.latents_std.len() != cfg.z_dim {
        return bad("latents_mean / latents_std must have z_dim entries".into());
    }
    if cfg.latents_std.iter().any(|s| *s == 0.0) {
        return bad("latents_std must be non-zero".into());
    }
    Ok(())
}

/// candle 0.11's CPU backend has no bf16 matmul (every conv uses one):
/// refuse that combination up front instead of failing mid-decode.
fn check_dtype(device: &Device, dtype: DType) -> Result<(), VaeError> {
    if device.is_cpu() && dtype == DType::BF16 {
        return Err(VaeError::Unsupported(
            "bf16 on CPU (candle has no CPU bf16 matmul); use f32 or f16 on CPU, bf16 on CUDA".into(),
        ));
    }
    if !dtype.is_float() {
        return Err(VaeError::Unsupported(format!("VAE compute dtype must be a float type, got {dtype:?}")));
    }
    Ok(())
}

/// `[B, C, T, H, W]` -> frames-major `[B, T, C, H, W]` (contiguous).
pub(crate) fn to_frames(x: &Tensor) -> candle_core::Result<Tensor> {
    x.permute((0, 2, 1, 3, 4))?.contiguous()
}

/// Video `[B, C, T, H, W]` -> patchified frames `[B, T, C*p*p, H/p, W/p]`,
/// channel order `(c, r, q)` with `q` the row and `r` the column offset
/// (Wan's `b c f (h q) (w r) -> b (c r q) f h w`).
pub(crate) fn patchify_to_frames(x: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    let (b, c, t, h, w) = x.dims5()?;
    if p == 1 {
        return to_frames(x);
    }
    x.reshape(vec![b, c, t, h / p, p, w / p, p])?.permute(vec![0, 2, 1, 6, 4, 3, 5])?.contiguous()?.reshape((
        b,
        t,
        c * p * p,
        h / p,
        w / p,
    ))
}

/// Patchified frames `[B, T, C*p*p, h, w]` -> video `[B, C, T, h*p, w*p]`.
pub(crate) fn from_frames_unpatchify(x: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    let (b, t, cpp, h, w) = x.dims5()?;
    let c = cpp / (p * p);
    x.reshape(vec![b, t, c, p, p, h, w])?.permute(vec![0, 2, 1, 5, 4, 6, 3])?.contiguous()?.reshape((
        b,
        c,
        t,
        h * p,
        w * p,
    ))
}

/// diffusers `patchify`: `[B, C, F, H, W]` -> `[B, C*p*p, F, H/p, W/p]`.
pub fn patchify(x: &Tensor, patch_size: usize) -> Result<Tensor, VaeError> {
    let (_, _, _, h, w) = x.dims5()?;
    if patch_size == 0 || h % patch_size != 0 || w % patch_size != 0 {
        return Err(VaeError::InvalidInput(format!("{h}x{w} is not divisible by patch size {patch_size}")));
    }
    Ok(patchify_to_frames(x, patch_size)?.permute((0, 2, 1, 3, 4))?.contiguous()?)
}

/// diffusers `unpatchify`: `[B, C*p*p, F, h, w]` -> `[B, C, F, h*p, w*p]`.
pub fn unpatchify(x: &Tensor, patch_size: usize) -> Result<Tensor, VaeError> {
    let (_, cpp, _, _, _) = x.dims5()?;
    if patch_size == 0 || cpp % (patch_size * patch_size) != 0 {
        return Err(VaeError::InvalidInput(format!(
            "{cpp} channels do not divide into {patch_size}x{patch_size} patches"
        )));
    }
    Ok(from_frames_unpatchify(&to_frames(x)?, patch_size)?)
}

/// Latent normalisation used by the DiT: `(mu - mean) / std` and back
/// (Wan2.2's `scale = [mean, 1 / std]`).
#[derive(Debug, Clone)]
pub struct LatentNorm {
    /// `[1, z, 1, 1, 1]`.
    mean: Tensor,
    inv_std: Tensor,
}

/// Optional tensors of a VAE weight file (`[z_dim]` each): per-channel
/// statistics of the encoder's `mu`, measured on the training data after
/// the VAE was trained (`train vae` writes them with every checkpoint). When
/// present they replace the config's `latents_mean` / `latents_std`, so a
/// retrained VAE carries its own normalisation (Wan2.2 ships its constants
/// in the config instead).
pub const LATENTS_MEAN: &str = "latents_mean";
pub const LATENTS_STD: &str = "latents_std";

impl LatentNorm {
    /// The weight file's statistics when `vb` holds both (see
    /// [`LATENTS_MEAN`]), else the config's.
    pub fn from_weights_or_config(cfg: &VaeConfig, vb: &VarBuilder) -> Result<Self, VaeError> {
        if !(vb.contains_tensor(LATENTS_MEAN) && vb.contains_tensor(LATENTS_STD)) {
            return Self::new(cfg, vb.device(), vb.dtype());
        }
        let read = |name: &str| -> Result<Vec<f32>, VaeError> {
            let t = vb.get(cfg.z_dim, name)?;
            Ok(t.to_dtype(DType::F32)?.to_vec1::<f32>()?)
        };
        let (mean, std) = (read(LATENTS_MEAN)?, read(LATENTS_STD)?);
        if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(VaeError::InvalidInput(format!(
                "{LATENTS_MEAN} must be finite and {LATENTS_STD} finite and positive, got {mean:?} / {std:?}"
            )));
        }
        let mut cfg = cfg.clone();
        cfg.latents_mean = mean.iter().map(|m| *m as f64).collect();
        cfg.latents_std = std.iter().map(|s| *s as f64).collect();
        Self::new(&cfg, vb.device(), vb.dtype())
    }

    pub fn new(cfg: &VaeConfig, device: &Device, dtype: DType) -> Result<Self, VaeError> {
        if cfg.latents_mean.len() != cfg.z_dim || cfg.latents_std.len() != cfg.z_dim {
            return Err(VaeError::Unsupported("latents_mean / latents_std must have z_dim entries".into()));
        }
        let z = cfg.z_dim;
        let mean: Vec<f32> = cfg.latents_mean.iter().map(|m| *m as f32).collect();
        let inv: Vec<f32> = cfg.latents_std.iter().map(|s| (1.0 / *s) as f32).collect();
        Ok(Self {
            mean: Tensor::from_vec(mean, (1, z, 1, 1, 1), device)?.to_dtype(dtype)?,
            inv_std: Tensor::from_vec(inv, (1, z, 1, 1, 1), device)?.to_dtype(dtype)?,
        })
    }

    /// VAE latents `[B, z, F, h, w]` -> normalized DiT latents.
    pub fn normalize(&self, mu: &Tensor) -> Result<Tensor, VaeError> {
        let mean = self.mean.to_dtype(mu.dtype())?;
        let inv = self.inv_std.to_dtype(mu.dtype())?;
        Ok(mu.broadcast_sub(&mean)?.broadcast_mul(&inv)?)
    }

    /// Normalized DiT latents -> VAE latents (input of the decoder).
    pub fn denormalize(&self, z: &Tensor) -> Result<Tensor, VaeError> {
        let mean = self.mean.to_dtype(z.dtype())?;
        let inv = self.inv_std.to_dtype(z.dtype())?;
        Ok(z.broadcast_div(&inv)?.broadcast_add(&mean)?)
    }
}

/// Posterior of the encoder: diagonal Gaussian, `[B, z, 1 + k, h, w]` each.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    pub mu: Tensor,
    pub logvar: Tensor,
}

/// The whole VAE (diffusers `AutoencoderKLWan`, Wan2.2 variant).
#[derive(Debug, Clone)]
pub struct WanVae {
    cfg: VaeConfig,
    encoder: VaeEncoder,
    decoder: VaeDecoder,
    norm: LatentNorm,
    dtype: DType,
    device: candle_core::Device,
}

impl WanVae {
    /// `vb` at the VAE root with diffusers names; its dtype is the compute dtype.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self, VaeError> {
        validate_config(cfg)?;
        check_dtype(vb.device(), vb.dtype())?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder: VaeEncoder::new(cfg, vb.clone())?,
            decoder: VaeDecoder::new(cfg, vb.clone())?,
            norm: LatentNorm::from_weights_or_config(cfg, &vb)?,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device its weights live on.
    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    pub fn latent_norm(&self) -> &LatentNorm {
        &self.norm
    }

    pub fn decoder(&self) -> &VaeDecoder {
        &self.decoder
    }

    pub fn encoder(&self) -> &VaeEncoder {
        &self.encoder
    }

    /// Encode video `[B, 3, 1 + 4k, H, W]` in [-1, 1] (H, W multiples of 16).
    /// Returns mu and logvar `[B, z, 1 + k, H/16, W/16]`.
    pub fn encode(&self, video: &Tensor) -> Result<EncoderOutput, VaeError> {
        let dims = video.dims();
        let s = self.cfg.scale_factor_spatial;
        let t = self.cfg.scale_factor_temporal;
        if dims.len() != 5 || dims[1] != 3 || dims[0] == 0 {
            return Err(VaeError::InvalidInput(format!("video must be [B, 3, T, H, W], got {dims:?}")));
        }
        let (f, h, w) = (dims[2], dims[3], dims[4]);
        if f == 0 || (f - 1) % t != 0 {
            return Err(VaeError::InvalidInput(format!("video must have 1 + {t}k frames, got {f}")));
        }
        if h == 0 || w == 0 || h % s != 0 || w % s != 0 {
            return Err(VaeError::InvalidInput(format!("video size {w}x{h} must be a positive multiple of {s}")));
        }
        let x = patchify_to_frames(&video.to_dtype(self.dtype)?, self.cfg.patch_size)?;
        let moments = self.encoder.forward_frames(&x)?; // [B, F', 2z, h, w]
        let z = self.cfg.z_dim;
        let mu = moments.narrow(2, 0, z)?.permute((0, 2, 1, 3, 4))?.contiguous()?;
        let logvar = moments.narrow(2, z, z)?.permute((0, 2, 1, 3, 4))?.contiguous()?;
        Ok(EncoderOutput { mu, logvar })
    }

    /// Encode one image `[B, 3, H, W]` or `[B, 3, 1, H, W]` in [-1, 1] to its
    /// latent mean `[B, z, 1, H/16, W/16]` (un-normalized).
    pub fn encode_image(&self, image: &Tensor) -> Result<Tensor, VaeError> {
        let video = match image.rank() {
            4 => image.unsqueeze(2)?,
            5 => image.clone(),
            _ => return Err(VaeError::InvalidInput(format!("image must be [B, 3, H, W], got {:?}", image.dims()))),
        };
        if video.dim(2)? != 1 {
            return Err(VaeError::InvalidInput(format!("encode_image takes one frame, got {:?}", image.dims())));
        }
        Ok(self.encode(&video)?.mu)
    }

    /// A fresh streaming decoder sharing this VAE's weights.
    pub fn streaming_decoder(&self) -> StreamingDecoder {
        StreamingDecoder::new(
            self.decoder.clone(),
            self.cfg.z_dim,
            self.cfg.patch_size,
            self.cfg.scale_factor_temporal,
            self.dtype,
        )
    }

    /// Decode a whole latent sequence `[B, z, F, h, w]` (un-normalized) to
    /// video `[B, 3, 1 + 4(F-1), 16h, 16w]` in [-1, 1], as diffusers `decode`.
    /// Runs the streaming decoder over chunks of at most 3 latent frames.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor, VaeError> {
        Ok(self.decode_unclamped(z)?.clamp(-1f32, 1f32)?)
    }

    /// [`decode`](Self::decode) without the final clamp to [-1, 1] (what
    /// training differentiates through; see
    /// [`StreamingDecoder::decode_chunk_unclamped`]).
    pub fn decode_unclamped(&self, z: &Tensor) -> Result<Tensor, VaeError> {
        let mut stream = self.streaming_decoder();
        let f = if z.rank() == 5 { z.dim(2)? } else { 0 };
        if f == 0 {
            return Err(VaeError::InvalidInput(format!(
                "latents must be [B, z, F, h, w] with F >= 1, got {:?}",
                z.dims()
            )));
        }
        let mut outs = vec![stream.decode_chunk_unclamped(&z.narrow(2, 0, 1)?)?];
        let mut start = 1;
        while start < f {
            let n = (f - start).min(3);
            outs.push(stream.decode_chunk_unclamped(&z.narrow(2, start, n)?)?);
            start += n;
        }
        Ok(Tensor::cat(&outs, 2)?)
    }
}

/// Build only the streaming decoder (e.g. on the decoder GPU) from a root
/// `vb` holding `post_quant_conv.*` and `decoder.*`.
pub fn load_streaming_decoder(cfg: &VaeConfig, vb: VarBuilder) -> Result<StreamingDecoder, VaeError> {
    validate_config(cfg)?;
    check_dtype(vb.device(), vb.dtype())?;
    let dtype = vb.dtype();
    let decoder = VaeDecoder::new(cfg, vb)?;
    Ok(StreamingDecoder::new(decoder, cfg.z_dim, cfg.patch_size, cfg.scale_factor_temporal, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// Training differentiates encode -> decode end to end: every parameter's
    /// gradient (one entry of each, in f64) must match central finite
    /// differences. Guards the hand-written backward of the conv kernel and
    /// the strided / reshaping ops of the down- and up-sampling blocks.
    #[test]
    fn encode_decode_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let cfg = ModelConfig::tiny().vae;
        // The training initialisation (norm gains 1, Kaiming convs), in f64.
        let seeded = crate::train::params::ParamStore::new(7, &dev);
        WanVae::new(&cfg, seeded.var_builder()).unwrap();
        let map = candle_nn::VarMap::new();
        for (name, var) in seeded.named_vars() {
            let v = candle_core::Var::from_tensor(&var.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
            map.data().lock().unwrap().insert(name, v);
        }
        let x = Tensor::randn(0f64, 0.5, (1, 3, 5, 32, 32), &dev).unwrap().clamp(-1f64, 1f64).unwrap();
        let target = Tensor::randn(0f64, 1.0, (1, 3, 5, 32, 32), &dev).unwrap();
        // Rebuilt per evaluation: some layers keep tensors derived from the
        // variables at construction.
        let loss = || {
            let vae = WanVae::new(&cfg, VarBuilder::from_varmap(&map, DType::F64, &dev)).unwrap();
            (vae.decode_unclamped(&vae.encode(&x).unwrap().mu).unwrap() * &target).unwrap().sum_all().unwrap()
        };
        let grads = loss().backward().unwrap();
        let mut vars: Vec<(String, candle_core::Var)> =
            map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(vars.len() > 20, "only {} variables", vars.len());
        let eps = 1e-5;
        let mut bad = Vec::new();
        for (name, var) in &vars {
            let shape = var.shape().clone();
            let mut values: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let at = values.len() / 2;
            let analytic: Vec<f64> = grads.get(var).expect(name).flatten_all().unwrap().to_vec1().unwrap();
            let mut eval_at = |v: f64| {
                values[at] = v;
                var.set(&Tensor::from_vec(values.clone(), shape.clone(), &dev).unwrap()).unwrap();
                loss().to_scalar::<f64>().unwrap()
            };
            let orig = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap()[at];
            let numeric = (eval_at(orig + eps) - eval_at(orig - eps)) / (2.0 * eps);
            eval_at(orig);
            let a = analytic[at];
            if !((a - numeric).abs() <= 1e-4 * numeric.abs().max(1.0)) {
                bad.push(format!("{name}[{at}]: backward gives {a}, finite differences {numeric}"));
            }
        }
        assert!(bad.is_empty(), "{} of {} gradients wrong:\n{}", bad.len(), vars.len(), bad.join("\n"));
    }

    #[test]
    fn latent_statistics_in_the_weights_replace_the_config() {
        let cfg = ModelConfig::tiny().vae;
        let z = cfg.z_dim;
        let dev = Device::Cpu;
        let stats = |std: f32| {
            let mut t = std::collections::HashMap::new();
            t.insert(LATENTS_MEAN.to_string(), Tensor::full(2f32, z, &dev).unwrap());
            t.insert(LATENTS_STD.to_string(), Tensor::full(std, z, &dev).unwrap());
            VarBuilder::from_tensors(t, DType::F32, &dev)
        };
        let norm = LatentNorm::from_weights_or_config(&cfg, &stats(4.0)).unwrap();
        let x = Tensor::full(10f32, (1, z, 1, 1, 1), &dev).unwrap();
        let v: Vec<f32> = norm.normalize(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|v| (v - 2.0).abs() < 1e-6), "{v:?}");
        // Without them: the config's (0 / 1 for tiny).
        let none = VarBuilder::from_tensors(Default::default(), DType::F32, &dev);
        let norm = LatentNorm::from_weights_or_config(&cfg, &none).unwrap();
        let v: Vec<f32> = norm.normalize(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|v| (v - 10.0).abs() < 1e-6), "{v:?}");
        // A zero std is a clear error, not a division by zero.
        let e = LatentNorm::from_weights_or_config(&cfg, &stats(0.0)).unwrap_err().to_string();
        assert!(e.contains(LATENTS_STD), "{e}");
    }

    #[test]
    fn patchify_round_trip_and_channel_order() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, (2 * 3 * 2 * 4 * 6) as f32, &dev).unwrap().reshape((2, 3, 2, 4, 6)).unwrap();
        let p = patchify(&x, 2).unwrap();
        assert_eq!(p.dims(), &[2, 12, 2, 2, 3]);
        // Channel (c, r, q): c = 1, r (column offset) = 1, q (row offset) = 0.
        let ch = 4 + 2;
        let got: f32 =
            p.get(1).unwrap().get(ch).unwrap().get(1).unwrap().get(1).unwrap().get(2).unwrap().to_scalar().unwrap();
        let want: f32 = x
            .get(1)
            .unwrap()
            .get(1)
            .unwrap()
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .get(2 * 2 + 1)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(got, want);
        let back = unpatchify(&p, 2).unwrap();
        let diff: f32 = (back - &x).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert_eq!(diff, 0.0);
        let frames = patchify_to_frames(&x, 2).unwrap();
        let back = from_frames_unpatchify(&frames, 2).unwrap();
        let diff: f32 = (back - &x).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert_eq!(diff, 0.0);
        assert!(patchify(&x.narrow(4, 0, 5).unwrap(), 2).is_err());
    }

    #[test]
    fn latent_norm_round_trip() {
        let cfg = ModelConfig::full().vae;
        let n = LatentNorm::new(&cfg, &Device::Cpu, DType::F32).unwrap();
        let mu = Tensor::randn(0f32, 1.0, (1, 48, 2, 3, 4), &Device::Cpu).unwrap();
        let z = n.normalize(&mu).unwrap();
        let c7: f32 =
            z.get(0).unwrap().get(7).unwrap().get(1).unwrap().get(2).unwrap().get(3).unwrap().to_scalar().unwrap();
        let m7: f32 =
            mu.get(0).unwrap().get(7).unwrap().get(1).unwrap().get(2).unwrap().get(3).unwrap().to_scalar().unwrap();
        assert!((c7 - (m7 - 0.1557) / 0.5013).abs() < 1e-5);
        let back = n.denormalize(&z).unwrap();
        let diff: f32 =
            (back - &mu).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(diff < 1e-5);
    }

    #[test]
    fn presets_are_supported() {
        validate_config(&ModelConfig::full().vae).unwrap();
        validate_config(&ModelConfig::tiny().vae).unwrap();
        let mut v = ModelConfig::tiny().vae;
        v.is_residual = false;
        assert!(matches!(validate_config(&v), Err(VaeError::Unsupported(_))));
    }
}
