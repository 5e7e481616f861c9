//! The causal 3-D convolution of the Wan VAE (diffusers `WanCausalConv3d`)
//! and its per-site temporal feature cache.
//!
//! Activations inside the VAE use the frames-major layout `[B, T, C, H, W]`
//! (see `mod.rs`), so every per-frame operation is a plain 4-D op on
//! `[B*T, C, H, W]`. A `kt x kh x kw` causal convolution has two
//! implementations (same numbers, tested against each other):
//! - CPU, f32, stride 1 in time: the accumulating shifted-GEMM kernel of
//!   `cpu_conv.rs` (forward and backward; 1.3-3x faster than candle 0.11's
//!   CPU `conv2d`, most on few channels).
//! - CUDA, bf16, time stride 1, `C_in % 32 == 0`: the implicit-GEMM
//!   tensor-core kernel of `cuda_kernels.rs` (reads the padded frame
//!   sequence directly, bias fused).
//! - otherwise: ONE 2-D convolution (cuDNN / candle kernels): the `kt`
//!   time-shifted frame sequences are stacked along the channel axis
//!   (`[B, T, kt*C, H, W]`) and convolved with the weight permuted to
//!   `[C_out, kt*C_in, kh, kw]`.
//!
//! Causality: the time axis is padded with `2 * padding_t` frames on the
//! front only. In streaming use, the front padding is replaced by the last
//! `CACHE_T = 2` input frames of the previous call (the cache), exactly as
//! diffusers' `feat_cache` does; zero padding covers what the cache lacks.

use candle_core::{Result, Tensor};

use super::cpu_conv;
use super::cuda_kernels::{self, ConvGeometry};
use candle_nn::VarBuilder;

/// Frames of history kept per cached convolution (diffusers `CACHE_T`).
pub const CACHE_T: usize = 2;

/// What one cached convolution site remembers between calls.
#[derive(Debug, Clone, Default)]
pub enum CacheSlot {
    /// Nothing seen yet (diffusers `None`).
    #[default]
    Empty,
    /// An `upsample3d` time conv that has seen its first frame only and
    /// skipped the time conv for it (diffusers `"Rep"`).
    Rep,
    /// The last (at most `CACHE_T`) input frames, `[B, t, C, H, W]`, owned copy.
    Frames(Tensor),
}

/// Hands out cache slot indices while a model is being built, so each
/// cached convolution owns a fixed slot for the model's lifetime.
#[derive(Debug, Default)]
pub struct SlotAllocator(usize);

impl SlotAllocator {
    pub fn next(&mut self) -> usize {
        self.0 += 1;
        self.0 - 1
    }
    pub fn count(&self) -> usize {
        self.0
    }
}

/// The new cache for a site after it consumed `x` (`[B, T, C, H, W]`): the
/// last two frames of `x`, or the previous cache's last frame followed by
/// `x` when `x` holds a single frame. Always a fresh copy, so the cache never
/// pins the (much larger) activation it came from.
pub fn next_cache(x: &Tensor, previous: Option<&Tensor>) -> Result<Tensor> {
    let t = x.dim(1)?;
    let keep = t.min(CACHE_T);
    let tail = x.narrow(1, t - keep, keep)?;
    if keep < CACHE_T {
        if let Some(prev) = previous {
            let pt = prev.dim(1)?;
            let last = prev.narrow(1, pt - 1, 1)?;
            return Tensor::cat(&[&last, &tail], 1);
        }
    }
    tail.copy()
}

/// How a [`CausalConv3d`] computes its 3-D convolution.
#[derive(Debug, Clone)]
enum ConvImpl {
    /// Time taps stacked into channels, one `conv2d` with weight
    /// `[C_out, kt * C_in, kh, kw]`.
    Stacked { weight: Tensor },
    /// The CPU kernel of `cpu_conv.rs` (f32, time stride 1) with the
    /// weight as loaded, `[C_out, C_in, kt, kh, kw]`.
    CpuKernel { weight: Tensor },
    /// The CUDA kernel of `cuda_kernels.rs` (bf16, time stride 1) with the
    /// weight as `[C_out, kt * kh * kw * C_in]` and the bias as `[C_out]`.
    CudaKernel { weight: Tensor, bias: Tensor, geometry: ConvGeometry },
}

/// diffusers `WanCausalConv3d` (an `nn.Conv3d` with causal time padding).
/// Spatial stride is always 1 in the Wan VAE; time stride may be 2.
#[derive(Debug, Clone)]
pub struct CausalConv3d {
    imp: ConvImpl,
    /// `[1, C_out, 1, 1]`.
    bias: Tensor,
    kt: usize,
    stride_t: usize,
    pad_s: usize,
    /// Frames of causal front padding (`2 * padding_t`).
    time_pad: usize,
    out_channels: usize,
}

/// Most im2col elements one `conv2d` call may materialise: candle's CUDA
/// conv2d (without cuDNN) unfolds `[frames * H * W, C_in * 9]` before its
/// matmul, 37 GB in bf16 for the full decoder's last stage at 1280x704 if
/// done for all 12 frames at once. 2^29 elements = 1 GiB in bf16.
const MAX_IM2COL_ELEMENTS: usize = 1 << 29;

/// `conv2d` (stride 1) over `[N, C, H, W]`, run a few images at a time when
/// the unfolded input would exceed `max_elements` ([`MAX_IM2COL_ELEMENTS`]).
pub(super) fn conv2d_in_groups(frames: &Tensor, weight: &Tensor, pad: usize, max_elements: usize) -> Result<Tensor> {
    let (n, c, h, w) = frames.dims4()?;
    let (_, _, kh, kw) = weight.dims4()?;
    let per_image = (c * kh * kw * h * w).max(1);
    let group = (max_elements / per_image).clamp(1, n.max(1));
    if group >= n {
        return frames.conv2d(weight, pad, 1, 1, 1);
    }
    let mut outs = Vec::with_capacity(n.div_ceil(group));
    let mut i = 0;
    while i < n {
        let m = group.min(n - i);
        outs.push(frames.narrow(0, i, m)?.conv2d(weight, pad, 1, 1, 1)?);
        i += m;
    }
    Tensor::cat(&outs, 0)
}

impl CausalConv3d {
    /// `kernel` = (kt, kh, kw); `padding` = (pt, ps) applied as `2 * pt`
    /// front frames and `ps` on each spatial side. Weights
    /// `[C_out, C_in, kt, kh, kw]` and `bias` `[C_out]` under `vb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize, usize),
        stride_t: usize,
        padding: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let cpu_kernel = cpu_conv::supported(vb.device(), vb.dtype()) && stride_t == 1;
        Self::build(in_channels, out_channels, kernel, stride_t, padding, cpu_kernel, vb)
    }

    fn build(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize, usize),
        stride_t: usize,
        padding: (usize, usize),
        cpu_kernel: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (kt, kh, kw) = kernel;
        let w = vb.get((out_channels, in_channels, kt, kh, kw), "weight")?;
        let bias = vb.get(out_channels, "bias")?.reshape((1, out_channels, 1, 1))?;
        let imp = if cpu_kernel && stride_t == 1 {
            ConvImpl::CpuKernel { weight: w }
        } else if cuda_kernels::conv_applies(&w, in_channels, stride_t) {
            let geometry = ConvGeometry { kt, kh, kw, pad: padding.1, up: 1 };
            let flat_bias = bias.flatten_all()?;
            ConvImpl::CudaKernel { weight: cuda_kernels::conv_weight_layout(&w)?, bias: flat_bias, geometry }
        } else {
            let weight = w.permute((0, 2, 1, 3, 4))?.contiguous()?.reshape((out_channels, kt * in_channels, kh, kw))?;
            ConvImpl::Stacked { weight }
        };
        Ok(Self { imp, bias, kt, stride_t, pad_s: padding.1, time_pad: 2 * padding.0, out_channels })
    }

    /// 3x3x3, padding 1 (the common resnet / in / out convolution).
    pub fn k3(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_channels, out_channels, (3, 3, 3), 1, (1, 1), vb)
    }

    /// 1x1x1 (shortcuts and the quant convolutions).
    pub fn k1(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_channels, out_channels, (1, 1, 1), 1, (0, 0), vb)
    }

    /// Does this convolution look at past frames (and so need a cache)?
    pub fn is_temporal(&self) -> bool {
        self.time_pad > 0
    }

    /// `x`: `[B, T, C_in, H, W]`; `cache`: earlier frames to put in front
    /// instead of zero padding. Returns `[B, T_out, C_out, H', W']`.
    pub fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        if self.time_pad > 0 {
            let mut pad = self.time_pad;
            if let Some(c) = cache {
                pad = pad.saturating_sub(c.dim(1)?);
                x = Tensor::cat(&[c, &x], 1)?;
            }
            if pad > 0 {
                x = x.pad_with_zeros(1, pad, 0)?;
            }
        }
        let (b, t_in, c, h, w) = x.dims5()?;
        if t_in < self.kt {
            candle_core::bail!("causal conv needs at least {} frames after padding, got {t_in}", self.kt);
        }
        let t_out = (t_in - self.kt) / self.stride_t + 1;
        let device = x.device().clone();
        crate::model::profile::section("vae.conv", &device, || match &self.imp {
            ConvImpl::CpuKernel { weight } => {
                let y = cpu_conv::conv(&x, weight, self.pad_s)?;
                debug_assert_eq!(y.dim(1)?, t_out);
                y.broadcast_add(&self.bias.unsqueeze(0)?)
            }
            ConvImpl::CudaKernel { weight, bias, geometry } => cuda_kernels::causal_conv3d(&x, weight, bias, *geometry),
            ConvImpl::Stacked { weight } => {
                let stacked = if self.kt == 1 && self.stride_t == 1 {
                    x
                } else {
                    let mut taps = Vec::with_capacity(self.kt);
                    for k in 0..self.kt {
                        let tap = if self.stride_t == 1 {
                            x.narrow(1, k, t_out)?
                        } else {
                            let idx: Vec<u32> = (0..t_out).map(|j| (k + j * self.stride_t) as u32).collect();
                            let idx = Tensor::new(idx.as_slice(), x.device())?;
                            x.index_select(&idx, 1)?
                        };
                        taps.push(tap);
                    }
                    if taps.len() == 1 {
                        taps.pop().unwrap_or(x)
                    } else {
                        Tensor::cat(&taps, 2)?
                    }
                };
                let frames = stacked.reshape((b * t_out, self.kt * c, h, w))?;
                let y =
                    conv2d_in_groups(&frames, weight, self.pad_s, MAX_IM2COL_ELEMENTS)?.broadcast_add(&self.bias)?;
                let (_, _, ho, wo) = y.dims4()?;
                y.reshape((b, t_out, self.out_channels, ho, wo))
            }
        })
    }

    /// Streaming forward through one cache slot (diffusers' feat_cache
    /// protocol): uses the slot's frames as history, then stores the new tail.
    pub fn forward_cached(&self, x: &Tensor, slot: &mut CacheSlot) -> Result<Tensor> {
        let previous = match slot {
            CacheSlot::Frames(t) => Some(t.clone()),
            _ => None,
        };
        let new_cache = next_cache(x, previous.as_ref())?;
        let y = self.forward(x, previous.as_ref())?;
        *slot = CacheSlot::Frames(new_cache);
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn random_conv_impl(
        cin: usize,
        cout: usize,
        kernel: (usize, usize, usize),
        cpu_kernel: bool,
    ) -> (CausalConv3d, Tensor, Tensor) {
        let dev = Device::Cpu;
        let (kt, kh, kw) = kernel;
        let w = Tensor::randn(0f32, 0.5, (cout, cin, kt, kh, kw), &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.5, cout, &dev).unwrap();
        let mut ts = std::collections::HashMap::new();
        ts.insert("weight".to_string(), w.clone());
        ts.insert("bias".to_string(), bias.clone());
        let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
        let pad = (kt / 2, kh / 2);
        (CausalConv3d::build(cin, cout, kernel, 1, pad, cpu_kernel, vb).unwrap(), w, bias)
    }

    fn random_conv(cin: usize, cout: usize) -> (CausalConv3d, Tensor, Tensor) {
        random_conv_impl(cin, cout, (3, 3, 3), true)
    }

    fn conv(cin: usize, cout: usize) -> CausalConv3d {
        random_conv(cin, cout).0
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Feeding frames one at a time (or in uneven chunks) through the cache
    /// gives exactly the output of one pass over the whole sequence.
    #[test]
    fn cached_chunks_equal_whole_sequence() {
        let c = conv(3, 4);
        let x = Tensor::randn(0f32, 1.0, (1, 7, 3, 5, 6), &Device::Cpu).unwrap();
        let whole = c.forward(&x, None).unwrap();
        assert_eq!(whole.dims(), &[1, 7, 4, 5, 6]);
        for chunks in [vec![1, 1, 1, 1, 1, 1, 1], vec![1, 3, 3], vec![2, 5], vec![7]] {
            let mut slot = CacheSlot::Empty;
            let mut outs = Vec::new();
            let mut start = 0;
            for n in chunks {
                outs.push(c.forward_cached(&x.narrow(1, start, n).unwrap(), &mut slot).unwrap());
                start += n;
            }
            let streamed = Tensor::cat(&outs, 1).unwrap();
            assert!(max_diff(&whole, &streamed) < 1e-5);
        }
    }

    /// The first output frame only sees the first input frame (causality),
    /// and the cache never holds more than CACHE_T frames.
    #[test]
    fn causal_and_bounded() {
        let c = conv(2, 2);
        let x = Tensor::randn(0f32, 1.0, (1, 4, 2, 3, 3), &Device::Cpu).unwrap();
        let y = c.forward(&x, None).unwrap();
        let x2 = Tensor::cat(&[&x.narrow(1, 0, 1).unwrap(), &(x.narrow(1, 1, 3).unwrap() * 5.0).unwrap()], 1).unwrap();
        let y2 = c.forward(&x2, None).unwrap();
        assert!(max_diff(&y.narrow(1, 0, 1).unwrap(), &y2.narrow(1, 0, 1).unwrap()) < 1e-6);
        assert!(max_diff(&y.narrow(1, 1, 1).unwrap(), &y2.narrow(1, 1, 1).unwrap()) > 1e-3);
        let mut slot = CacheSlot::Empty;
        c.forward_cached(&x, &mut slot).unwrap();
        match slot {
            CacheSlot::Frames(t) => {
                assert_eq!(t.dim(1).unwrap(), CACHE_T);
                assert!(max_diff(&t, &x.narrow(1, 2, 2).unwrap()) == 0.0);
            }
            other => panic!("unexpected slot {other:?}"),
        }
    }

    /// Stacked-taps conv2d equals the direct definition of a 3-D convolution.
    #[test]
    fn matches_direct_conv3d_definition() {
        let dev = Device::Cpu;
        let (cin, cout) = (2, 3);
        let (c, w, bias) = random_conv(cin, cout);
        let x = Tensor::randn(0f32, 1.0, (1, 3, cin, 4, 4), &dev).unwrap();
        let y = c.forward(&x, None).unwrap();
        // Direct: zero-pad 2 frames in front, 1 pixel around, sum over taps.
        let xp = x.pad_with_zeros(1, 2, 0).unwrap().pad_with_zeros(3, 1, 1).unwrap().pad_with_zeros(4, 1, 1).unwrap();
        let xp: Vec<f32> = xp.flatten_all().unwrap().to_vec1().unwrap();
        let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let bv: Vec<f32> = bias.to_vec1().unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let (hp, wp) = (6, 6);
        for t in 0..3 {
            for o in 0..cout {
                for i in 0..4 {
                    for j in 0..4 {
                        let mut s = bv[o];
                        for ci in 0..cin {
                            for a in 0..3 {
                                for p in 0..3 {
                                    for q in 0..3 {
                                        let xi = (((t + a) * cin + ci) * hp + i + p) * wp + j + q;
                                        let wi = (((o * cin + ci) * 3 + a) * 3 + p) * 3 + q;
                                        s += xp[xi] * wv[wi];
                                    }
                                }
                            }
                        }
                        let yi = ((t * cout + o) * 4 + i) * 4 + j;
                        assert!((yv[yi] - s).abs() < 1e-4, "t{t} o{o} i{i} j{j}: {} vs {s}", yv[yi]);
                    }
                }
            }
        }
    }

    /// A conv2d split over images (memory bound) equals one call.
    #[test]
    fn grouped_conv2d_equals_one_call() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (7, 3, 5, 6), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap();
        let whole = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        // 3*9*30 = 810 elements per image: groups of 2, 2, 2, 1.
        let split = conv2d_in_groups(&x, &w, 1, 2 * 810 + 5).unwrap();
        assert_eq!(max_diff(&whole, &split), 0.0);
    }

    /// The CPU kernel path and the stacked conv2d path agree, for the
    /// 3x3x3, (3,1,1) and 1x1x1 shapes, with and without a cache.
    #[test]
    fn implementations_agree() {
        let dev = Device::Cpu;
        for kernel in [(3, 3, 3), (3, 1, 1), (1, 1, 1)] {
            let (a, w, bias) = random_conv_impl(3, 5, kernel, true);
            let mut ts = std::collections::HashMap::new();
            ts.insert("weight".to_string(), w);
            ts.insert("bias".to_string(), bias);
            let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
            let b = CausalConv3d::build(3, 5, kernel, 1, (kernel.0 / 2, kernel.1 / 2), false, vb).unwrap();
            assert!(matches!(a.imp, ConvImpl::CpuKernel { .. }) && matches!(b.imp, ConvImpl::Stacked { .. }));
            let x = Tensor::randn(0f32, 1.0, (2, 4, 3, 5, 7), &dev).unwrap();
            let cache = Tensor::randn(0f32, 1.0, (2, 2, 3, 5, 7), &dev).unwrap();
            for c in [None, Some(&cache)] {
                let ya = a.forward(&x, c).unwrap();
                let yb = b.forward(&x, c).unwrap();
                assert_eq!(ya.dims(), &[2, 4, 5, 5, 7]);
                assert!(max_diff(&ya, &yb) < 1e-4, "{kernel:?}");
            }
        }
    }
}
