//! The causal 3-D convolution of the Wan VAE (diffusers `WanCausalConv3d`)
//! and its per-site temporal feature cache.
//!
//! Activations inside the VAE use the frames-major layout `[B, T, C, H, W]`
//! (see `mod.rs`), so every per-frame operation is a plain 4-D op on
//! `[B*T, C, H, W]`. A `kt x kh x kw` causal convolution has two
//! implementations (same numbers, tested against each other):
//! - CPU, f32, >= 32 channels, stride 1 in time: `kt * kh * kw` GEMMs over
//!   zero-copy shifted views of the padded input (see
//!   [`conv2d_shifted_gemm`]); measured 1.5-3x faster than candle 0.11's CPU
//!   `conv2d` for the VAE's shapes.
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

/// Stride-1 convolution over frames as shifted GEMMs ("implicit GEMM").
///
/// `x` `[N_in, C, H, W]` (frames), `taps`: `kt * kh * kw` matrices
/// `[C_out, C]` ordered (kt, dy, dx); output frame `n` uses input frames
/// `n .. n + kt`. The input is copied once into channel-major padded form
/// `[C, N_in * Hp * Wp]`; output position `o` of the flattened
/// `[N_out, Hp, Wp]` grid then gets `taps[kt, dy, dx] @ input[:, o + kt*Hp*Wp
/// + dy*Wp + dx]`, so every tap is ONE rank-2 GEMM over a zero-copy view
/// spanning all frames. Junk positions (padding columns / rows) are cropped
/// at the end. Returns `[N_out, C_out, Ho, Wo]` (a view; no bias).
pub fn shifted_gemm_frames(x: &Tensor, taps: &[Tensor], kt: usize, kh: usize, kw: usize, pad: usize) -> Result<Tensor> {
    let (n_in, c, h, w) = x.dims4()?;
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    if n_in < kt || hp < kh || wp < kw || taps.len() != kt * kh * kw {
        candle_core::bail!("shifted GEMM conv: input [{n_in}, {c}, {h}, {w}] (pad {pad}) too small for a {kt}x{kh}x{kw} kernel, or {} taps", taps.len());
    }
    let (n_out, ho, wo) = (n_in - kt + 1, hp - kh + 1, wp - kw + 1);
    let xc = x.permute((1, 0, 2, 3))?;
    let xp = if pad > 0 { xc.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)? } else { xc.contiguous()? };
    let plane = hp * wp;
    let xf = xp.reshape((c, n_in * plane))?;
    let len = (n_out - 1) * plane + (ho - 1) * wp + wo;
    let mut acc: Option<Tensor> = None;
    for t in 0..kt {
        for dy in 0..kh {
            for dx in 0..kw {
                let view = xf.narrow(1, t * plane + dy * wp + dx, len)?;
                let z = taps[(t * kh + dy) * kw + dx].matmul(&view)?;
                acc = Some(match acc {
                    None => z,
                    Some(a) => (a + z)?,
                });
            }
        }
    }
    let acc = match acc {
        Some(a) => a,
        None => candle_core::bail!("shifted GEMM conv: empty kernel"),
    };
    let c_out = acc.dim(0)?;
    acc.pad_with_zeros(1, 0, n_out * plane - len)?
        .reshape((c_out, n_out, hp, wp))?
        .narrow(2, 0, ho)?
        .narrow(3, 0, wo)?
        .permute((1, 0, 2, 3))
}

/// Stride-1 2-D convolution of `x` `[N, K, H, W]` with `taps` (`kh * kw`
/// matrices `[C_out, K]`, row-major over (dy, dx)) and zero padding `pad`,
/// via [`shifted_gemm_frames`]. Returns a contiguous `[N, C_out, Ho, Wo]`.
pub fn conv2d_shifted_gemm(x: &Tensor, taps: &[Tensor], kh: usize, kw: usize, pad: usize) -> Result<Tensor> {
    shifted_gemm_frames(x, taps, 1, kh, kw, pad)?.contiguous()
}

/// Whether the CPU shifted-GEMM path pays off: measured faster than candle's
/// `conv2d` for f32 with >= 32 input channels; below that (the tiny test
/// model) and for f16 the per-GEMM overhead of 27 small products loses.
pub fn use_shifted_gemm(device: &candle_core::Device, dtype: candle_core::DType, in_channels: usize) -> bool {
    device.is_cpu() && dtype == candle_core::DType::F32 && in_channels >= 32
}

/// The per-(dy, dx) weight matrices `[C_out, C_in]` of a `[C_out, C_in, kh, kw]` kernel.
pub fn kernel_taps(weight: &Tensor) -> Result<Vec<Tensor>> {
    let (_, _, kh, kw) = weight.dims4()?;
    let mut taps = Vec::with_capacity(kh * kw);
    for dy in 0..kh {
        for dx in 0..kw {
            taps.push(weight.narrow(2, dy, 1)?.narrow(3, dx, 1)?.squeeze(3)?.squeeze(2)?.contiguous()?);
        }
    }
    Ok(taps)
}

/// How a [`CausalConv3d`] computes its 3-D convolution.
#[derive(Debug, Clone)]
enum ConvImpl {
    /// Time taps stacked into channels, one `conv2d` with weight
    /// `[C_out, kt * C_in, kh, kw]`.
    Stacked { weight: Tensor },
    /// One `[C_out, C_in]` matrix per (kt, dy, dx) tap, applied to shifted
    /// views (CPU, time stride 1).
    ShiftedGemm { taps: Vec<Tensor> },
}

/// diffusers `WanCausalConv3d` (an `nn.Conv3d` with causal time padding).
/// Spatial stride is always 1 in the Wan VAE; time stride may be 2.
#[derive(Debug, Clone)]
pub struct CausalConv3d {
    imp: ConvImpl,
    /// `[1, C_out, 1, 1]`.
    bias: Tensor,
    kt: usize,
    kh: usize,
    kw: usize,
    stride_t: usize,
    pad_s: usize,
    /// Frames of causal front padding (`2 * padding_t`).
    time_pad: usize,
    out_channels: usize,
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
        let shifted = use_shifted_gemm(vb.device(), vb.dtype(), in_channels) && stride_t == 1;
        Self::build(in_channels, out_channels, kernel, stride_t, padding, shifted, vb)
    }

    fn build(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize, usize),
        stride_t: usize,
        padding: (usize, usize),
        shifted_gemm: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (kt, kh, kw) = kernel;
        let w = vb.get((out_channels, in_channels, kt, kh, kw), "weight")?;
        let bias = vb.get(out_channels, "bias")?.reshape((1, out_channels, 1, 1))?;
        let imp = if shifted_gemm && stride_t == 1 {
            let mut taps = Vec::with_capacity(kt * kh * kw);
            for t in 0..kt {
                taps.extend(kernel_taps(&w.narrow(2, t, 1)?.squeeze(2)?)?);
            }
            ConvImpl::ShiftedGemm { taps }
        } else {
            let weight = w.permute((0, 2, 1, 3, 4))?.contiguous()?.reshape((out_channels, kt * in_channels, kh, kw))?;
            ConvImpl::Stacked { weight }
        };
        Ok(Self { imp, bias, kt, kh, kw, stride_t, pad_s: padding.1, time_pad: 2 * padding.0, out_channels })
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
        match &self.imp {
            ConvImpl::ShiftedGemm { taps } => {
                let mut outs = Vec::with_capacity(b);
                for bi in 0..b {
                    outs.push(self.shifted_frames(&x.get(bi)?, taps, t_out)?);
                }
                let y = if b == 1 { outs.remove(0).unsqueeze(0)? } else { Tensor::stack(&outs, 0)? };
                Ok(y)
            }
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
                let y = frames.conv2d(weight, self.pad_s, 1, 1, 1)?.broadcast_add(&self.bias)?;
                let (_, _, ho, wo) = y.dims4()?;
                y.reshape((b, t_out, self.out_channels, ho, wo))
            }
        }
    }

    /// ShiftedGemm path for one batch element: `x` `[T_in, C, H, W]` (time
    /// padding already applied) -> `[T_out, C_out, H', W']`.
    fn shifted_frames(&self, x: &Tensor, taps: &[Tensor], t_out: usize) -> Result<Tensor> {
        let y = shifted_gemm_frames(x, taps, self.kt, self.kh, self.kw, self.pad_s)?;
        debug_assert_eq!(y.dim(0)?, t_out);
        y.broadcast_add(&self.bias)
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
        shifted: bool,
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
        (CausalConv3d::build(cin, cout, kernel, 1, pad, shifted, vb).unwrap(), w, bias)
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

    /// The CPU shifted-GEMM path and the stacked conv2d path agree, for the
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
            assert!(matches!(a.imp, ConvImpl::ShiftedGemm { .. }) && matches!(b.imp, ConvImpl::Stacked { .. }));
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

    /// The 2-D shifted-GEMM convolution equals candle's conv2d (3x3 pad 1,
    /// 3x3 pad 0 and 1x1), on non-square input.
    #[test]
    fn shifted_gemm_conv2d_matches_conv2d() {
        let dev = Device::Cpu;
        for (k, pad) in [(3usize, 1usize), (3, 0), (1, 0)] {
            let w = Tensor::randn(0f32, 1.0, (4, 3, k, k), &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev).unwrap();
            let want = x.conv2d(&w, pad, 1, 1, 1).unwrap();
            let got = conv2d_shifted_gemm(&x, &kernel_taps(&w).unwrap(), k, k, pad).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(max_diff(&got, &want) < 1e-4, "k{k} pad{pad}");
        }
    }

    /// Stacked conv2d vs. shifted GEMMs on VAE-like shapes (not an assertion;
    /// `cargo test --lib causal_conv -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn stacked_taps_timing() {
        let dev = Device::Cpu;
        for (c, hw, t) in [(8usize, 32usize, 12usize), (16, 64, 12), (32, 64, 12), (64, 64, 12), (128, 32, 12)] {
            let (a, w, bias) = random_conv_impl(c, c, (3, 3, 3), true);
            let mut ts = std::collections::HashMap::new();
            ts.insert("weight".to_string(), w);
            ts.insert("bias".to_string(), bias);
            let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
            let b = CausalConv3d::build(c, c, (3, 3, 3), 1, (1, 1), false, vb).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, t, c, hw, hw), &dev).unwrap();
            let mut best = [f64::MAX; 2];
            for _ in 0..3 {
                for (i, conv) in [&b, &a].iter().enumerate() {
                    let t0 = std::time::Instant::now();
                    conv.forward(&x, None).unwrap();
                    best[i] = best[i].min(t0.elapsed().as_secs_f64());
                }
            }
            let gflop = 2.0 * (c * c * 27 * hw * hw * t) as f64 / 1e9;
            eprintln!(
                "C={c} {hw}x{hw} T={t} ({gflop:.1} GFLOP): stacked conv2d {:.0} ms ({:.1} GFLOP/s), shifted GEMMs {:.0} ms ({:.1} GFLOP/s)",
                best[0] * 1e3, gflop / best[0], best[1] * 1e3, gflop / best[1]
            );
        }
    }
}
