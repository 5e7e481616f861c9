//! The light streaming decoder: a TAEHV-style conv2d-only decoder for the
//! same latents as the full Wan2.2 decoder (the architecture of the
//! published `taew2_2` weights, madebyollin/taehv `TAEHV.decoder`, base
//! variant), with its per-block temporal memory carried across chunks.
//!
//! Layers, in the order (and with the indices) of the reference
//! `nn.Sequential`, so published safetensors load by name
//! (`decoder.{i}.weight`, `decoder.{i}.conv.{j}.weight`):
//!
//! ```text
//!  0 clamp 3*tanh(x/3)      1 conv3x3 z->c0 (+bias)   2 relu
//!  3..5  MemBlock(c0)       6 upsample x2             7 TGrow(c0)   8 conv3x3 c0->c1
//!  9..11 MemBlock(c1)      12 upsample x2            13 TGrow(c1)  14 conv3x3 c1->c2
//! 15..17 MemBlock(c2)      18 upsample x2            19 TGrow(c2)  20 conv3x3 c2->c3
//! 21 relu                  22 conv3x3 c3->3*p*p (+bias), then pixel shuffle p
//! ```
//!
//! A MemBlock sees each frame together with the block input of the frame
//! before it (zeros at the start of a stream): `relu(conv(relu(conv(relu(
//! conv([x_t, x_{t-1}]))))) + x_t)`. A TGrow is a 1x1 conv to `stride * C`
//! channels read as `stride` consecutive frames. Because every block only
//! looks one frame back, decoding a chunk with all its frames in parallel,
//! given each MemBlock's last input of the previous chunk, equals the
//! whole-sequence decode; that is what [`LightStreamingDecoder`] does.
//!
//! Conventions differ from the full decoder in two places: the input is the
//! *normalized* latent the DiT produces (TAEHV learns the scale), and the
//! network's output lies in [0, 1] (mapped here to the [-1, 1] video the
//! rest of the code uses). The first `t_upscale - 1` frames of a stream are
//! dropped, as the reference does, so the first latent frame gives one video
//! frame, like the full decoder's causal start.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::causal_conv::conv2d_in_groups;
use super::cuda_kernels::{self, ConvGeometry};
use super::{check_latent_chunk, cpu_conv, VaeError};
use crate::config::{LightDecoderConfig, VaeConfig};

/// Bound of one conv2d's im2col buffer on devices that unfold (elements).
const MAX_IM2COL_ELEMENTS: usize = 1 << 28;

/// 3x3 (pad 1) or 1x1 convolution on `[N, C, H, W]` frames.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    pad: usize,
    /// Weight and bias for the CUDA kernel (bf16 on CUDA, `C_in % 32 == 0`).
    kernel: Option<(Tensor, Tensor)>,
}

impl Conv {
    fn new(c_in: usize, c_out: usize, k: usize, bias: bool, vb: VarBuilder) -> Result<Self, VaeError> {
        let weight = vb.get((c_out, c_in, k, k), "weight")?;
        let bias = if bias { Some(vb.get(c_out, "bias")?) } else { None };
        Self::from_parts(weight, bias)
    }

    /// From a loaded `[C_out, C_in, k, k]` weight (padding `k / 2`).
    fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Result<Self, VaeError> {
        let (c_out, c_in, k, _) = weight.dims4()?;
        let kernel = if cuda_kernels::conv_applies(&weight, c_in, 1) {
            let b = match &bias {
                Some(b) => b.clone(),
                None => Tensor::zeros(c_out, weight.dtype(), weight.device())?,
            };
            Some((cuda_kernels::conv_weight_layout(&weight.unsqueeze(2)?)?, b))
        } else {
            None
        };
        Ok(Self { weight, bias, pad: k / 2, kernel })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some((w, b)) = &self.kernel {
            let (kh, kw) = (self.weight.dim(2)?, self.weight.dim(3)?);
            let geometry = ConvGeometry { kt: 1, kh, kw, pad: self.pad, up: 1 };
            return cuda_kernels::causal_conv3d(&x.unsqueeze(0)?, w, b, geometry)?.squeeze(0);
        }
        let y = if cpu_conv::supported(x.device(), x.dtype()) {
            let w = self.weight.unsqueeze(2)?;
            cpu_conv::conv(&x.unsqueeze(0)?, &w, self.pad)?.squeeze(0)?
        } else {
            conv2d_in_groups(x, &self.weight, self.pad, MAX_IM2COL_ELEMENTS)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// `relu(conv(relu(conv(relu(conv([x, past]))))) + x)` (TAEHV `MemBlock`
/// with `n_in == n_out`, so the skip is the identity).
#[derive(Debug, Clone)]
struct MemBlock {
    convs: [Conv; 3],
}

impl MemBlock {
    fn new(c: usize, vb: VarBuilder) -> Result<Self, VaeError> {
        let vb = vb.pp("conv");
        Ok(Self {
            convs: [
                Conv::new(2 * c, c, 3, true, vb.pp("0"))?,
                Conv::new(c, c, 3, true, vb.pp("2"))?,
                Conv::new(c, c, 3, true, vb.pp("4"))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor, past: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.convs[0].forward(&Tensor::cat(&[x, past], 1)?)?.relu()?;
        let h = self.convs[1].forward(&h)?.relu()?;
        (self.convs[2].forward(&h)? + x)?.relu()
    }
}

/// 1x1 conv to `stride * C` channels, read as `stride` frames per frame.
#[derive(Debug, Clone)]
struct TGrow {
    conv: Conv,
    stride: usize,
}

impl TGrow {
    fn new(c: usize, stride: usize, vb: VarBuilder) -> Result<Self, VaeError> {
        let vb = vb.pp("conv");
        let shape = (c * stride, c, 1, 1);
        let weight = match vb.get(shape, "weight") {
            Ok(w) => w,
            // Published checkpoints may hold a stride-2 grow where this
            // config has stride 1: keep the last frame's output channels
            // (the reference's `patch_tgrow_layers`).
            Err(e) => {
                let full = vb.get_unchecked("weight").map_err(|_| e)?;
                let rows = full.dim(0)?;
                if full.dims()[1..] != [c, 1, 1] || rows < c * stride || rows % c != 0 {
                    return Err(VaeError::InvalidInput(format!(
                        "light decoder: TGrow weight {:?} does not fit {shape:?}",
                        full.dims()
                    )));
                }
                full.narrow(0, rows - c * stride, c * stride)?.contiguous()?
            }
        };
        Ok(Self { conv: Conv::from_parts(weight, None)?, stride })
    }

    /// `[B*T, C, H, W]` -> `[B*T*stride, C, H, W]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        self.conv.forward(x)?.reshape((n * self.stride, c, h, w))
    }
}

#[derive(Debug, Clone)]
enum Layer {
    Clamp,
    Relu,
    Conv(Conv),
    Mem(MemBlock),
    Upsample2x,
    Grow(TGrow),
}

/// The light decoder's weights and layer list; cheap to clone (tensors are
/// shared). One [`LightStreamingDecoder`] per stream.
#[derive(Debug, Clone)]
pub struct LightDecoder {
    layers: Vec<Layer>,
    z_dim: usize,
    patch_size: usize,
    t_upscale: usize,
    dtype: DType,
}

impl LightDecoder {
    /// Build from `decoder.*` tensors under `vb` (TAEHV names).
    pub fn new(cfg: &LightDecoderConfig, vae: &VaeConfig, vb: VarBuilder) -> Result<Self, VaeError> {
        cfg.check_against(vae).map_err(|e| VaeError::Unsupported(e.to_string()))?;
        let vb = vb.pp("decoder");
        let [c0, c1, c2, c3] = cfg.channels;
        let stride = |on: bool| if on { 2 } else { 1 };
        let mut layers = vec![Layer::Clamp, Layer::Conv(Conv::new(vae.z_dim, c0, 3, true, vb.pp("1"))?), Layer::Relu];
        let stages = [(c0, c1), (c1, c2), (c2, c3)];
        for (s, (c, next)) in stages.into_iter().enumerate() {
            let base = 3 + 6 * s;
            for m in 0..3 {
                layers.push(Layer::Mem(MemBlock::new(c, vb.pp((base + m).to_string()))?));
            }
            if cfg.space_upscale[s] {
                layers.push(Layer::Upsample2x);
            }
            layers.push(Layer::Grow(TGrow::new(c, stride(cfg.time_upscale[s]), vb.pp((base + 4).to_string()))?));
            layers.push(Layer::Conv(Conv::new(c, next, 3, false, vb.pp((base + 5).to_string()))?));
        }
        layers.push(Layer::Relu);
        let out = 3 * vae.patch_size * vae.patch_size;
        layers.push(Layer::Conv(Conv::new(c3, out, 3, true, vb.pp("22"))?));
        Ok(Self {
            layers,
            z_dim: vae.z_dim,
            patch_size: vae.patch_size,
            t_upscale: vae.scale_factor_temporal,
            dtype: vb.dtype(),
        })
    }

    pub fn streaming(&self) -> LightStreamingDecoder {
        LightStreamingDecoder {
            memory: vec![None; self.layers.len()],
            decoder: self.clone(),
            frames_out: 0,
            geometry: None,
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Decodes one stream of normalized latents chunk by chunk (see module
/// docs). Memory: one frame per MemBlock (9 frames in all).
#[derive(Debug, Clone)]
pub struct LightStreamingDecoder {
    decoder: LightDecoder,
    /// Per layer: the last input frame `[B, 1, C, H, W]` of a MemBlock.
    memory: Vec<Option<Tensor>>,
    /// Raw network output frames since the reset (trimmed ones included).
    frames_out: usize,
    geometry: Option<(usize, usize, usize)>,
}

impl LightStreamingDecoder {
    /// Forget the stream: the next chunk starts a new video.
    pub fn reset(&mut self) {
        self.memory.iter_mut().for_each(|m| *m = None);
        self.frames_out = 0;
        self.geometry = None;
    }

    /// Video frames the next chunk of `latent_frames` frames will produce:
    /// `4 n - 3` at the start of a stream, `4 n` afterwards.
    pub fn output_frames_for(&self, latent_frames: usize) -> usize {
        let raw = self.decoder.t_upscale * latent_frames;
        let trim = self.decoder.t_upscale - 1;
        raw.saturating_sub(trim.saturating_sub(self.frames_out))
    }

    /// Decode the next chunk `z` `[B, z_dim, F, h, w]` (normalized latents)
    /// into video `[B, 3, T, 16h, 16w]` in [-1, 1].
    pub fn decode_chunk(&mut self, z: &Tensor) -> Result<Tensor, VaeError> {
        Ok(self.decode_chunk_unclamped(z)?.clamp(-1f32, 1f32)?)
    }

    /// [`decode_chunk`](Self::decode_chunk) without the final clamp (the
    /// network's [0, 1] output mapped to [-1, 1] as is): training decodes
    /// through this, the clamp would pass no gradient outside the range.
    pub fn decode_chunk_unclamped(&mut self, z: &Tensor) -> Result<Tensor, VaeError> {
        let (b, f, h, w) = check_latent_chunk(z, self.decoder.z_dim, self.geometry, "light decoder")?;
        let c = self.decoder.z_dim;
        // [B, C, F, h, w] -> frames [B*F, C, h, w]
        let mut x = z.to_dtype(self.decoder.dtype)?.permute((0, 2, 1, 3, 4))?.reshape((b * f, c, h, w))?;
        let mut frames = f;
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            x = match layer {
                Layer::Clamp => ((x / 3.0)?.tanh()? * 3.0)?,
                Layer::Relu => x.relu()?,
                Layer::Conv(conv) => conv.forward(&x)?,
                Layer::Upsample2x => {
                    let (_, _, hh, ww) = x.dims4()?;
                    x.upsample_nearest2d(2 * hh, 2 * ww)?
                }
                Layer::Grow(grow) => {
                    frames *= grow.stride;
                    grow.forward(&x)?
                }
                Layer::Mem(block) => {
                    let (_, ch, hh, ww) = x.dims4()?;
                    let seq = x.reshape((b, frames, ch, hh, ww))?;
                    let last = seq.narrow(1, frames - 1, 1)?.contiguous()?;
                    let before = match &self.memory[i] {
                        Some(m) => m.clone(),
                        None => Tensor::zeros((b, 1, ch, hh, ww), x.dtype(), x.device())?,
                    };
                    let past =
                        if frames > 1 { Tensor::cat(&[&before, &seq.narrow(1, 0, frames - 1)?], 1)? } else { before };
                    let y = block.forward(&x, &past.reshape((b * frames, ch, hh, ww))?)?;
                    self.memory[i] = Some(last);
                    y
                }
            };
        }
        let video = pixel_shuffle(&x, self.decoder.patch_size)?; // [B*T, 3, H, W]
        let (_, ch, hh, ww) = video.dims4()?;
        let mut video = video.reshape((b, frames, ch, hh, ww))?;
        let trim = (self.decoder.t_upscale - 1).saturating_sub(self.frames_out).min(frames);
        self.frames_out += frames;
        self.geometry = Some((b, h, w));
        if trim > 0 {
            video = video.narrow(1, trim, frames - trim)?;
        }
        // [0, 1] -> [-1, 1], `[B, 3, T, H, W]`.
        let video = video.affine(2.0, -1.0)?;
        Ok(video.permute((0, 2, 1, 3, 4))?.contiguous()?)
    }
}

/// `torch.nn.functional.pixel_shuffle`: `[N, C*r*r, H, W]` -> `[N, C, H*r, W*r]`
/// with `out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w]`.
fn pixel_shuffle(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (n, c, h, w) = x.dims4()?;
    let c_out = c / (r * r);
    x.reshape((n, c_out, r, r, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c_out, h * r, w * r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::weights::SeededInitBackend;
    use candle_core::Device;

    fn tiny() -> LightDecoder {
        let cfg = ModelConfig::tiny();
        let vb = SeededInitBackend::var_builder(3, DType::F32, &Device::Cpu);
        LightDecoder::new(&cfg.light_decoder, &cfg.vae, vb).unwrap()
    }

    #[test]
    fn pixel_shuffle_matches_definition() {
        let x = Tensor::arange(0f32, 48.0, &Device::Cpu).unwrap().reshape((1, 8, 2, 3)).unwrap();
        let y = pixel_shuffle(&x, 2).unwrap();
        assert_eq!(y.dims(), &[1, 2, 4, 6]);
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let ys = y.to_dtype(DType::F32).unwrap().squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        for c in 0..2 {
            for h in 0..4 {
                for w in 0..6 {
                    let (i, j, hh, ww) = (h % 2, w % 2, h / 2, w / 2);
                    let src = ((c * 4 + i * 2 + j) * 2 + hh) * 3 + ww;
                    assert_eq!(ys[c][h][w], xs[src]);
                }
            }
        }
    }

    /// Reference frame, then chunks of 3, equals decoding everything at once;
    /// frame counts follow the full decoder's causal convention.
    #[test]
    fn chunked_stream_equals_one_pass() {
        let dec = tiny();
        let z = Tensor::randn(0f32, 1.0, (1, 8, 7, 2, 3), &Device::Cpu).unwrap();
        let mut whole = dec.streaming();
        assert_eq!(whole.output_frames_for(7), 25);
        let all = whole.decode_chunk(&z).unwrap();
        assert_eq!(all.dims(), &[1, 3, 25, 32, 48]);
        let mut stream = dec.streaming();
        let mut parts = Vec::new();
        for (start, len) in [(0, 1), (1, 3), (4, 3)] {
            let expect = stream.output_frames_for(len);
            let part = stream.decode_chunk(&z.narrow(2, start, len).unwrap()).unwrap();
            assert_eq!(part.dim(2).unwrap(), expect);
            parts.push(part);
        }
        assert_eq!(parts[0].dim(2).unwrap(), 1);
        let joined = Tensor::cat(&parts, 2).unwrap();
        let diff = (joined - &all).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let (lo, hi) = (all.min_all().unwrap(), all.max_all().unwrap());
        assert!(lo.to_scalar::<f32>().unwrap() >= -1.0 && hi.to_scalar::<f32>().unwrap() <= 1.0);
        // reset starts a new stream
        stream.reset();
        assert_eq!(stream.output_frames_for(1), 1);
    }

    #[test]
    fn refuses_wrong_channels_and_geometry() {
        let mut s = tiny().streaming();
        let bad = Tensor::zeros((1, 5, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.decode_chunk(&bad).unwrap_err().to_string().contains("channels"));
        s.decode_chunk(&Tensor::zeros((1, 8, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let other = Tensor::zeros((1, 8, 3, 4, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.decode_chunk(&other).unwrap_err().to_string().contains("reset"));
    }
}
