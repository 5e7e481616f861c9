//! The building blocks of the Wan2.2 VAE, one type per diffusers module:
//! `WanRMS_norm`, `WanResidualBlock`, `WanAttentionBlock`, `WanResample`,
//! `AvgDown3D`, `DupUp3D`, `WanMidBlock`, `WanResidualDownBlock`,
//! `WanResidualUpBlock`. All take and return the frames-major layout
//! `[B, T, C, H, W]`; cached convolutions read and write their own slot of
//! the caller's cache vector.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::causal_conv::{next_cache, CacheSlot, CausalConv3d, SlotAllocator};
use super::cpu_conv;
use super::cuda_kernels::{self, ConvGeometry};

/// diffusers `WanRMS_norm`: `F.normalize(x, dim=channel) * sqrt(C) * gamma`
/// (no bias in the Wan VAE). Normalisation runs in f32 for half types.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// `gamma * sqrt(C)`, shaped `[C, 1, 1]` to broadcast over `[.., C, H, W]`.
    scale: Tensor,
    /// The same scale as `[C]` f32 for the fused CUDA kernel (bf16 on CUDA only).
    scale_f32: Option<Tensor>,
}

impl RmsNorm {
    /// `images = false`: gamma `[C, 1, 1, 1]` (3-D use); `true`: `[C, 1, 1]`.
    pub fn new(dim: usize, images: bool, vb: VarBuilder) -> Result<Self> {
        let gamma = if images { vb.get((dim, 1, 1), "gamma")? } else { vb.get((dim, 1, 1, 1), "gamma")? };
        let scale = (gamma.reshape((dim, 1, 1))? * (dim as f64).sqrt())?;
        let scale_f32 =
            if cuda_kernels::norm_applies(&scale) { Some(scale.to_dtype(DType::F32)?.flatten_all()?) } else { None };
        Ok(Self { scale, scale_f32 })
    }

    /// `silu(norm(x))`, fused into one CUDA kernel where it applies.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        match &self.scale_f32 {
            Some(scale) if cuda_kernels::norm_applies(x) => cuda_kernels::rms_norm_silu(x, scale),
            _ => self.forward(x)?.silu(),
        }
    }

    /// `x`: `[..., C, H, W]` (channel is the third axis from the end).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let cdim = x.rank() - 3;
        let xf = if matches!(dtype, DType::F16 | DType::BF16) { x.to_dtype(DType::F32)? } else { x.clone() };
        let norm = xf.sqr()?.sum_keepdim(cdim)?.sqrt()?.maximum(1e-12)?;
        let y = xf.broadcast_div(&norm)?.to_dtype(dtype)?;
        y.broadcast_mul(&self.scale)
    }
}

/// diffusers `WanResidualBlock`: norm-SiLU-conv, norm-SiLU-conv, plus a
/// 1x1x1 shortcut when the width changes. Two cached convolutions.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
    slot1: usize,
    slot2: usize,
}

impl ResidualBlock {
    pub fn new(in_dim: usize, out_dim: usize, slots: &mut SlotAllocator, vb: VarBuilder) -> Result<Self> {
        let shortcut =
            if in_dim != out_dim { Some(CausalConv3d::k1(in_dim, out_dim, vb.pp("conv_shortcut"))?) } else { None };
        Ok(Self {
            norm1: RmsNorm::new(in_dim, false, vb.pp("norm1"))?,
            conv1: CausalConv3d::k3(in_dim, out_dim, vb.pp("conv1"))?,
            norm2: RmsNorm::new(out_dim, false, vb.pp("norm2"))?,
            conv2: CausalConv3d::k3(out_dim, out_dim, vb.pp("conv2"))?,
            shortcut,
            slot1: slots.next(),
            slot2: slots.next(),
        })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut [CacheSlot]) -> Result<Tensor> {
        let h = match &self.shortcut {
            Some(c) => c.forward(x, None)?,
            None => x.clone(),
        };
        let norm_silu =
            |n: &RmsNorm, t: &Tensor| crate::model::profile::section("vae.norm_silu", t.device(), || n.forward_silu(t));
        let y = norm_silu(&self.norm1, x)?;
        let y = self.conv1.forward_cached(&y, &mut cache[self.slot1])?;
        let y = norm_silu(&self.norm2, &y)?;
        let y = self.conv2.forward_cached(&y, &mut cache[self.slot2])?;
        y + h
    }
}

/// diffusers `WanAttentionBlock`: single-head self-attention over the
/// pixels of each frame separately (1x1 conv projections as matmuls).
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: RmsNorm,
    /// `[3C, C]`, `[3C, 1]`.
    qkv_w: Tensor,
    qkv_b: Tensor,
    /// `[C, C]`, `[C, 1]`.
    proj_w: Tensor,
    proj_b: Tensor,
    dim: usize,
}

impl AttentionBlock {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let qkv_w = vb.get((3 * dim, dim, 1, 1), "to_qkv.weight")?.reshape((3 * dim, dim))?;
        let qkv_b = vb.get(3 * dim, "to_qkv.bias")?.reshape((3 * dim, 1))?;
        let proj_w = vb.get((dim, dim, 1, 1), "proj.weight")?.reshape((dim, dim))?;
        let proj_b = vb.get(dim, "proj.bias")?.reshape((dim, 1))?;
        Ok(Self { norm: RmsNorm::new(dim, true, vb.pp("norm"))?, qkv_w, qkv_b, proj_w, proj_b, dim })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let n = h * w;
        let frames = x.reshape((b * t, c, h, w))?;
        let normed = self.norm.forward(&frames)?.reshape((b * t, c, n))?;
        let qkv = self.qkv_w.broadcast_matmul(&normed)?.broadcast_add(&self.qkv_b)?; // [bt, 3c, n]
        let q = qkv.narrow(1, 0, c)?.transpose(1, 2)?.contiguous()?; // [bt, n, c]
        let k = qkv.narrow(1, c, c)?.contiguous()?; // [bt, c, n]
        let v = qkv.narrow(1, 2 * c, c)?.contiguous()?; // [bt, c, n]
        let scores = (q.matmul(&k)? * (1.0 / (self.dim as f64).sqrt()))?; // [bt, n, n]
                                                                          // Through grad_ops: candle-nn's fused softmax has no backward and
                                                                          // silently leaves q and k without gradient when training.
        let attn = crate::model::grad_ops::softmax_last_dim(&scores)?;
        let out = v.matmul(&attn.t()?)?; // [bt, c, n]
        let out = self.proj_w.broadcast_matmul(&out)?.broadcast_add(&self.proj_b)?;
        out.reshape((b, t, c, h, w))? + x
    }
}

/// Which `WanResample` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleMode {
    Upsample2d,
    /// 2x in space plus 2x in time through a causal (3,1,1) `time_conv`.
    Upsample3d,
    Downsample2d,
    /// 2x in space plus 2x in time through a strided (3,1,1) `time_conv`.
    Downsample3d,
}

/// diffusers `WanResample` (`resample.1` is the 2-D conv, `time_conv` the
/// temporal one).
#[derive(Debug, Clone)]
pub struct Resample {
    mode: ResampleMode,
    /// `[C_out, C_in, 3, 3]`, bias `[1, C_out, 1, 1]`.
    conv_w: Tensor,
    conv_b: Tensor,
    /// `conv_w` as `[C_out, C_in, 1, 3, 3]` for the CPU kernel of the
    /// stride-1 (upsampling) convolution (CPU f32 only).
    cpu_kernel_w: Option<Tensor>,
    /// Weight and bias of the upsampling convolution for the CUDA kernel,
    /// which also does the 2x upsampling (bf16 on CUDA, `C_in % 32 == 0`).
    cuda_kernel: Option<(Tensor, Tensor)>,
    time_conv: Option<(CausalConv3d, usize)>,
}

impl Resample {
    pub fn new(
        dim: usize,
        out_dim: usize,
        mode: ResampleMode,
        slots: &mut SlotAllocator,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv_out = match mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => out_dim,
            _ => dim,
        };
        let conv_w = vb.get((conv_out, dim, 3, 3), "resample.1.weight")?;
        let conv_b = vb.get(conv_out, "resample.1.bias")?.reshape((1, conv_out, 1, 1))?;
        let time_conv = match mode {
            ResampleMode::Upsample3d => {
                Some((CausalConv3d::new(dim, dim * 2, (3, 1, 1), 1, (1, 0), vb.pp("time_conv"))?, slots.next()))
            }
            ResampleMode::Downsample3d => {
                Some((CausalConv3d::new(dim, dim, (3, 1, 1), 2, (0, 0), vb.pp("time_conv"))?, slots.next()))
            }
            _ => None,
        };
        let upsampling = matches!(mode, ResampleMode::Upsample2d | ResampleMode::Upsample3d);
        // The 3x3 conv after upsampling through the CPU kernel: frames as a
        // time axis and a 1x3x3 kernel.
        let cpu_kernel_w =
            if upsampling && cpu_conv::supported(vb.device(), vb.dtype()) { Some(conv_w.unsqueeze(2)?) } else { None };
        let cuda_kernel = if upsampling && cuda_kernels::conv_applies(&conv_w, dim, 1) {
            Some((cuda_kernels::conv_weight_layout(&conv_w.unsqueeze(2)?)?, conv_b.flatten_all()?))
        } else {
            None
        };
        Ok(Self { mode, conv_w, conv_b, cpu_kernel_w, cuda_kernel, time_conv })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut [CacheSlot]) -> Result<Tensor> {
        let mut x = x.clone();
        if let (ResampleMode::Upsample3d, Some((tc, slot))) = (self.mode, &self.time_conv) {
            x = match std::mem::take(&mut cache[*slot]) {
                CacheSlot::Empty => {
                    // First frame of a stream: no temporal doubling.
                    cache[*slot] = CacheSlot::Rep;
                    x
                }
                CacheSlot::Rep => {
                    let zero = x.narrow(1, 0, 1)?.zeros_like()?;
                    cache[*slot] = CacheSlot::Frames(next_cache(&x, Some(&zero))?);
                    double_time(&tc.forward(&x, None)?)?
                }
                CacheSlot::Frames(prev) => {
                    cache[*slot] = CacheSlot::Frames(next_cache(&x, Some(&prev))?);
                    double_time(&tc.forward(&x, Some(&prev))?)?
                }
            };
        }
        if let Some((w, bias)) = &self.cuda_kernel {
            let geometry = ConvGeometry { kt: 1, kh: 3, kw: 3, pad: 1, up: 2 };
            return crate::model::profile::section("vae.resample_conv", x.device(), || {
                cuda_kernels::causal_conv3d(&x, w, bias, geometry)
            });
        }
        let (b, t, c, h, w) = x.dims5()?;
        let frames = x.reshape((b * t, c, h, w))?;
        let y = match self.mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
                let up = frames.upsample_nearest2d(2 * h, 2 * w)?;
                match &self.cpu_kernel_w {
                    Some(w) => cpu_conv::conv(&up.unsqueeze(0)?, w, 1)?.squeeze(0)?,
                    None => up.conv2d(&self.conv_w, 1, 1, 1, 1)?,
                }
            }
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => {
                frames.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?.conv2d(&self.conv_w, 0, 2, 1, 1)?
            }
        };
        let y = y.broadcast_add(&self.conv_b)?;
        let (_, co, ho, wo) = y.dims4()?;
        let mut y = y.reshape((b, t, co, ho, wo))?;
        if let (ResampleMode::Downsample3d, Some((tc, slot))) = (self.mode, &self.time_conv) {
            let t = y.dim(1)?;
            let last = y.narrow(1, t - 1, 1)?.copy()?;
            y = match std::mem::take(&mut cache[*slot]) {
                // First chunk: keep it whole, remember its last frame.
                CacheSlot::Empty | CacheSlot::Rep => y,
                CacheSlot::Frames(prev) => tc.forward(&Tensor::cat(&[&prev, &y], 1)?, None)?,
            };
            cache[*slot] = CacheSlot::Frames(last);
        }
        Ok(y)
    }
}

/// `[B, T, 2C, H, W]` (two channel groups per frame) -> `[B, 2T, C, H, W]`
/// with the groups interleaved in time (diffusers' stack on dim 3).
fn double_time(x: &Tensor) -> Result<Tensor> {
    let (b, t, c2, h, w) = x.dims5()?;
    x.reshape((b, t * 2, c2 / 2, h, w))
}

/// diffusers `AvgDown3D`: space-/time-to-channel then mean over channel
/// groups (the parameter-free shortcut of the encoder's down blocks).
#[derive(Debug, Clone)]
pub struct AvgDown3D {
    out_channels: usize,
    factor_t: usize,
    factor_s: usize,
    group_size: usize,
}

impl AvgDown3D {
    pub fn new(in_channels: usize, out_channels: usize, factor_t: usize, factor_s: usize) -> Result<Self> {
        let factor = factor_t * factor_s * factor_s;
        if (in_channels * factor) % out_channels != 0 {
            candle_core::bail!("AvgDown3D: {in_channels} * {factor} not divisible by {out_channels}");
        }
        Ok(Self { out_channels, factor_t, factor_s, group_size: in_channels * factor / out_channels })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let t = x.dim(1)?;
        let pad_t = (ft - t % ft) % ft;
        let x = if pad_t > 0 { x.pad_with_zeros(1, pad_t, 0)? } else { x.clone() };
        let (b, t, c, h, w) = x.dims5()?;
        let (t2, h2, w2) = (t / ft, h / fs, w / fs);
        let y = x
            .reshape(vec![b, t2, ft, c, h2, fs, w2, fs])?
            .permute(vec![0, 1, 3, 2, 5, 7, 4, 6])?
            .contiguous()?
            .reshape(vec![b, t2, self.out_channels, self.group_size, h2, w2])?;
        y.mean(3)
    }
}

/// diffusers `DupUp3D`: channel-to-space/time duplication (the shortcut of
/// the decoder's up blocks). `first_chunk` drops the leading `factor_t - 1`
/// frames, matching the time conv that skips the first frame.
#[derive(Debug, Clone)]
pub struct DupUp3D {
    out_channels: usize,
    factor_t: usize,
    factor_s: usize,
    /// Source channel of each of the `out_channels * factor` expanded channels.
    index: Tensor,
}

impl DupUp3D {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        factor_t: usize,
        factor_s: usize,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let factor = factor_t * factor_s * factor_s;
        if (out_channels * factor) % in_channels != 0 {
            candle_core::bail!("DupUp3D: {out_channels} * {factor} not divisible by {in_channels}");
        }
        let repeats = out_channels * factor / in_channels;
        let idx: Vec<u32> = (0..out_channels * factor).map(|j| (j / repeats) as u32).collect();
        Ok(Self { out_channels, factor_t, factor_s, index: Tensor::new(idx.as_slice(), device)? })
    }

    pub fn forward(&self, x: &Tensor, first_chunk: bool) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let (b, t, _c, h, w) = x.dims5()?;
        let y = x
            .index_select(&self.index, 2)?
            .reshape(vec![b, t, self.out_channels, ft, fs, fs, h, w])?
            .permute(vec![0, 1, 3, 2, 6, 4, 7, 5])?
            .contiguous()?
            .reshape((b, t * ft, self.out_channels, h * fs, w * fs))?;
        if first_chunk && ft > 1 {
            y.narrow(1, ft - 1, t * ft - (ft - 1))
        } else {
            Ok(y)
        }
    }
}

/// diffusers `WanMidBlock` (num_layers = 1): resnet, attention, resnet.
#[derive(Debug, Clone)]
pub struct MidBlock {
    resnet0: ResidualBlock,
    attention: AttentionBlock,
    resnet1: ResidualBlock,
}

impl MidBlock {
    pub fn new(dim: usize, slots: &mut SlotAllocator, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            resnet0: ResidualBlock::new(dim, dim, slots, vb.pp("resnets.0"))?,
            attention: AttentionBlock::new(dim, vb.pp("attentions.0"))?,
            resnet1: ResidualBlock::new(dim, dim, slots, vb.pp("resnets.1"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut [CacheSlot]) -> Result<Tensor> {
        let x = self.resnet0.forward(x, cache)?;
        let x = self.attention.forward(&x)?;
        self.resnet1.forward(&x, cache)
    }
}

/// diffusers `WanResidualDownBlock` (Wan2.2 encoder stage).
#[derive(Debug, Clone)]
pub struct ResidualDownBlock {
    resnets: Vec<ResidualBlock>,
    downsampler: Option<Resample>,
    avg_shortcut: AvgDown3D,
}

impl ResidualDownBlock {
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        num_res_blocks: usize,
        temporal_downsample: bool,
        down_flag: bool,
        slots: &mut SlotAllocator,
        vb: VarBuilder,
    ) -> Result<Self> {
        let avg_shortcut =
            AvgDown3D::new(in_dim, out_dim, if temporal_downsample { 2 } else { 1 }, if down_flag { 2 } else { 1 })?;
        let mut resnets = Vec::with_capacity(num_res_blocks);
        let mut d = in_dim;
        for j in 0..num_res_blocks {
            resnets.push(ResidualBlock::new(d, out_dim, slots, vb.pp(format!("resnets.{j}")))?);
            d = out_dim;
        }
        let downsampler = if down_flag {
            let mode = if temporal_downsample { ResampleMode::Downsample3d } else { ResampleMode::Downsample2d };
            Some(Resample::new(out_dim, out_dim, mode, slots, vb.pp("downsampler"))?)
        } else {
            None
        };
        Ok(Self { resnets, downsampler, avg_shortcut })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut [CacheSlot]) -> Result<Tensor> {
        let mut y = x.clone();
        for r in &self.resnets {
            y = r.forward(&y, cache)?;
        }
        if let Some(d) = &self.downsampler {
            y = d.forward(&y, cache)?;
        }
        y + self.avg_shortcut.forward(x)?
    }
}

/// diffusers `WanResidualUpBlock` (Wan2.2 decoder stage).
#[derive(Debug, Clone)]
pub struct ResidualUpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
    avg_shortcut: Option<DupUp3D>,
}

impl ResidualUpBlock {
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        num_res_blocks: usize,
        temporal_upsample: bool,
        up_flag: bool,
        slots: &mut SlotAllocator,
        vb: VarBuilder,
    ) -> Result<Self> {
        let avg_shortcut = if up_flag {
            Some(DupUp3D::new(in_dim, out_dim, if temporal_upsample { 2 } else { 1 }, 2, vb.device())?)
        } else {
            None
        };
        let mut resnets = Vec::with_capacity(num_res_blocks + 1);
        let mut d = in_dim;
        for j in 0..num_res_blocks + 1 {
            resnets.push(ResidualBlock::new(d, out_dim, slots, vb.pp(format!("resnets.{j}")))?);
            d = out_dim;
        }
        let upsampler = if up_flag {
            let mode = if temporal_upsample { ResampleMode::Upsample3d } else { ResampleMode::Upsample2d };
            Some(Resample::new(out_dim, out_dim, mode, slots, vb.pp("upsampler"))?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler, avg_shortcut })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut [CacheSlot], first_chunk: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for r in &self.resnets {
            y = r.forward(&y, cache)?;
        }
        if let Some(u) = &self.upsampler {
            y = u.forward(&y, cache)?;
        }
        match &self.avg_shortcut {
            Some(s) => y + s.forward(x, first_chunk)?,
            None => Ok(y),
        }
    }
}
