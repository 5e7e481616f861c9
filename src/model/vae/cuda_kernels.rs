//! The VAE's own CUDA kernels (`cuda_kernels.cu`, compiled to PTX by
//! `build.rs` in `--features cuda` builds), for bf16 on a CUDA device:
//! - [`causal_conv3d`]: the causal 3-D convolution as an implicit GEMM on the
//!   tensor cores (no im2col buffer, no stacked time taps, bias fused), in
//!   two kernels ([`ConvKernel`]): one gathers straight from the
//!   frames-major `[B, T, C, H, W]` layout, the other reads a channels-last
//!   copy with asynchronous 16-byte copies;
//! - [`rms_norm_silu`]: diffusers' channel RMS norm and the SiLU after it in
//!   one pass (f32 arithmetic, one rounding).
//!
//! [`CausalConv3d`](super::CausalConv3d) and the residual blocks use them
//! when [`conv_applies`] / [`norm_applies`] say so and fall back to candle
//! ops otherwise (CPU, f32/f16, channel counts the kernel does not tile).
//! Parity with the fallbacks: `tests/vae_parity.rs`
//! (`cuda_kernels_match_candle_ops`, run on a GPU).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Result, Tensor};

/// Input channels per K block of the convolution kernel (`TILE_K`).
pub const CONV_CHANNEL_MULTIPLE: usize = 32;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Use the kernels where they apply (default: on); off = always candle's
/// ops (`bench generator --no-vae-kernels`, A/B runs). Convolutions pick
/// their implementation when the model is built, so set this before.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn cuda_bf16(t: &Tensor) -> bool {
    cfg!(feature = "cuda") && enabled() && t.device().is_cuda() && t.dtype() == DType::BF16
}

/// Whether [`causal_conv3d`] handles a convolution with `c_in` input
/// channels and time stride `stride_t` on `weight`'s device and dtype.
pub fn conv_applies(weight: &Tensor, c_in: usize, stride_t: usize) -> bool {
    cuda_bf16(weight) && stride_t == 1 && c_in % CONV_CHANNEL_MULTIPLE == 0
}

/// Whether [`rms_norm_silu`] handles `x` (`[..., C, H, W]`).
pub fn norm_applies(x: &Tensor) -> bool {
    cuda_bf16(x) && x.rank() >= 3
}

/// The weight layout the kernel reads: `[C_out, kt, kh, kw, C_in]`, flattened
/// to `[C_out, kt * kh * kw * C_in]`, from diffusers' `[C_out, C_in, kt, kh, kw]`.
pub fn conv_weight_layout(weight: &Tensor) -> Result<Tensor> {
    let (c_out, c_in, kt, kh, kw) = weight.dims5()?;
    weight.permute((0, 2, 3, 4, 1))?.contiguous()?.reshape((c_out, kt * kh * kw * c_in))?.force_contiguous()
}

/// Geometry of one causal convolution call.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    pub kt: usize,
    pub kh: usize,
    pub kw: usize,
    /// Spatial zero padding on each side.
    pub pad: usize,
    /// Nearest-neighbour spatial upsampling applied to the input first
    /// (1 = none, 2 = the resample blocks' 2x), fused into the loads.
    pub up: usize,
}

/// `x` `[B, T_in, C_in, H, W]` (causal front frames already in place),
/// `weight` from [`conv_weight_layout`], `bias` `[C_out]`; returns
/// `[B, T_in - kt + 1, C_out, up H + 2 pad - kh + 1, up W + 2 pad - kw + 1]`.
pub fn causal_conv3d(x: &Tensor, weight: &Tensor, bias: &Tensor, geometry: ConvGeometry) -> Result<Tensor> {
    causal_conv3d_with(x, weight, bias, geometry, conv_kernel())
}

/// The two convolution kernels of `cuda_kernels.cu` (same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// `causal_conv3d_bf16`: gathers the input tile from the frames-major
    /// layout with 2-byte loads staged in registers, one shared stage.
    Gather,
    /// `causal_conv3d_nhwc_bf16`: the input copied channels-last first
    /// (candle's strided copy), then both tiles by 16-byte `cp.async` into a
    /// 3-stage ring. Same numbers, but 1.1-1.3x slower than `Gather` with
    /// the copy included (H100, 2026-11-27, docs/BENCHMARKS.md); kept as the
    /// base for an input that is produced channels-last (e.g. by the norm
    /// kernel), which would drop the copy.
    ChannelsLast,
}

static CHANNELS_LAST: AtomicBool = AtomicBool::new(false);

/// The kernel [`causal_conv3d`] uses (default [`ConvKernel::Gather`]).
pub fn set_conv_kernel(kernel: ConvKernel) {
    CHANNELS_LAST.store(kernel == ConvKernel::ChannelsLast, Ordering::Relaxed);
}

pub fn conv_kernel() -> ConvKernel {
    if CHANNELS_LAST.load(Ordering::Relaxed) {
        ConvKernel::ChannelsLast
    } else {
        ConvKernel::Gather
    }
}

/// [`causal_conv3d`] with an explicit kernel (A/B timing in the tests).
pub fn causal_conv3d_with(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    geometry: ConvGeometry,
    kernel: ConvKernel,
) -> Result<Tensor> {
    let contiguous = |t: &Tensor| if t.is_contiguous() { Ok(t.clone()) } else { t.force_contiguous() };
    let channels_last = kernel == ConvKernel::ChannelsLast;
    let x = if channels_last { x.permute((0, 1, 3, 4, 2))?.force_contiguous()? } else { contiguous(x)? };
    x.apply_op3_no_bwd(&contiguous(weight)?, &contiguous(bias)?, &CausalConv { geometry, channels_last })
}

/// `silu(x / max(||x||_C, 1e-12) * scale)` over the channel axis (third
/// from the end) of a bf16 CUDA tensor; `scale` is `[C]` f32.
pub fn rms_norm_silu(x: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let x = if x.is_contiguous() { x.clone() } else { x.force_contiguous()? };
    let scale = if scale.dtype() == DType::F32 && scale.is_contiguous() {
        scale.clone()
    } else {
        scale.to_dtype(DType::F32)?.force_contiguous()?
    };
    x.apply_op2_no_bwd(&scale.flatten_all()?, &RmsNormSilu)
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct CausalConv {
    geometry: ConvGeometry,
    /// The input is `[B, T, H, W, C]` (the `ChannelsLast` kernel).
    channels_last: bool,
}

struct RmsNormSilu;

#[cfg(feature = "cuda")]
mod cuda {
    pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/vae_cuda_kernels.ptx"));
    pub const MODULE: &str = "streamavatar_vae_kernels";
    pub const CONV: &str = "causal_conv3d_bf16";
    pub const CONV_NHWC: &str = "causal_conv3d_nhwc_bf16";
    /// Dynamic shared memory of the channels-last kernel: `STAGES` (3) x
    /// (`TILE_M` + `TILE_N`) rows of `LDS` (40) bf16.
    pub const CONV_NHWC_SHARED_BYTES: usize = 3 * (128 + 128) * 40 * 2;
    pub const NORM: &str = "rms_norm_silu_bf16";
    /// Output tile of one conv block (channels x pixels) and its threads:
    /// must match `TILE_M`, `TILE_N`, `THREADS` in the `.cu`.
    pub const TILE_M: usize = 128;
    pub const TILE_N: usize = 128;
    pub const CONV_THREADS: u32 = 256;
    pub const NORM_THREADS: u32 = 256;
}

impl candle_core::CustomOp3 for CausalConv {
    fn name(&self) -> &'static str {
        "streamavatar-vae-causal-conv3d"
    }

    crate::model::cuda_only_cpu_fwd!(op3, "the VAE convolution kernel runs on CUDA only");

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &candle_core::Layout,
        w: &candle_core::CudaStorage,
        wl: &candle_core::Layout,
        bias: &candle_core::CudaStorage,
        bl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let ConvGeometry { kt, kh, kw, pad, up } = self.geometry;
        let (b, t_in, c_in, h, wd) = if self.channels_last {
            let (b, t, h, w, c) = xl.shape().dims5()?;
            (b, t, c, h, w)
        } else {
            xl.shape().dims5()?
        };
        let (c_out, k) = wl.shape().dims2()?;
        if !xl.is_contiguous() || !wl.is_contiguous() || !bl.is_contiguous() {
            candle_core::bail!("the VAE convolution kernel needs contiguous inputs");
        }
        if c_in % CONV_CHANNEL_MULTIPLE != 0 || k != kt * kh * kw * c_in || bl.shape().elem_count() != c_out {
            candle_core::bail!(
                "VAE convolution kernel: weight [{c_out}, {k}] / bias {:?} do not fit input channels {c_in} and kernel {kt}x{kh}x{kw}",
                bl.shape()
            );
        }
        if wl.start_offset() % 8 != 0 || (self.channels_last && xl.start_offset() % 8 != 0) {
            candle_core::bail!("VAE convolution kernel: weight must start 16-byte aligned");
        }
        if up == 0 || t_in < kt || up * h + 2 * pad < kh || up * wd + 2 * pad < kw {
            candle_core::bail!(
                "VAE convolution kernel: input [{t_in}, {h}, {wd}] (upsampled {up}x) smaller than kernel {kt}x{kh}x{kw}"
            );
        }
        let (t_out, ho, wo) = (t_in - kt + 1, up * h + 2 * pad - kh + 1, up * wd + 2 * pad - kw + 1);
        if b * t_out > 65_535 || ho * wo > i32::MAX as usize {
            candle_core::bail!("VAE convolution kernel: {b}x{t_out} frames of {ho}x{wo} exceed its launch grid");
        }
        let dev = x.device.clone();
        let xs = x.as_cuda_slice::<bf16>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<bf16>()?.slice(wl.start_offset()..);
        let bs = bias.as_cuda_slice::<bf16>()?.slice(bl.start_offset()..);
        let n_out = b * t_out * c_out * ho * wo;
        // SAFETY: every output element lies in exactly one block's tile and is written.
        let out = unsafe { dev.alloc::<bf16>(n_out) }?;
        let (name, shared) =
            if self.channels_last { (cuda::CONV_NHWC, cuda::CONV_NHWC_SHARED_BYTES) } else { (cuda::CONV, 0) };
        let func = dev.get_or_load_custom_func(name, cuda::MODULE, cuda::PTX)?;
        if shared > 0 {
            use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
            func.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)
                .w()?;
        }
        let cfg = LaunchConfig {
            grid_dim: (
                (ho * wo).div_ceil(cuda::TILE_N) as u32,
                c_out.div_ceil(cuda::TILE_M) as u32,
                (b * t_out) as u32,
            ),
            block_dim: (cuda::CONV_THREADS, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let ints = [t_in, t_out, c_in, c_out, h, wd, ho, wo, kt, kh, kw, pad, up].map(|v| v as i32);
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&ws);
        builder.arg(&bs);
        builder.arg(&out);
        for v in &ints {
            builder.arg(v);
        }
        // SAFETY: argument list and launch geometry match the kernel.
        unsafe { builder.launch(cfg) }.w()?;
        let shape = candle_core::Shape::from_dims(&[b, t_out, c_out, ho, wo]);
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}

impl candle_core::CustomOp2 for RmsNormSilu {
    fn name(&self) -> &'static str {
        "streamavatar-vae-rms-norm-silu"
    }

    crate::model::cuda_only_cpu_fwd!(op2, "the fused VAE norm + SiLU kernel runs on CUDA only");

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &candle_core::Layout,
        scale: &candle_core::CudaStorage,
        sl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let dims = xl.shape().dims();
        let rank = dims.len();
        if rank < 3 || !xl.is_contiguous() || !sl.is_contiguous() {
            candle_core::bail!("fused VAE norm: needs a contiguous [..., C, H, W] input");
        }
        let (c, hw) = (dims[rank - 3], dims[rank - 2] * dims[rank - 1]);
        let frames: usize = dims[..rank - 3].iter().product();
        if sl.shape().elem_count() != c {
            candle_core::bail!("fused VAE norm: {} scales for {c} channels", sl.shape().elem_count());
        }
        if frames > 65_535 || hw > i32::MAX as usize {
            candle_core::bail!("fused VAE norm: {frames} frames of {hw} pixels exceed its launch grid");
        }
        let dev = x.device.clone();
        let xs = x.as_cuda_slice::<bf16>()?.slice(xl.start_offset()..);
        let ss = scale.as_cuda_slice::<f32>()?.slice(sl.start_offset()..);
        // SAFETY: the kernel writes every element (one thread per pixel, all channels).
        let out = unsafe { dev.alloc::<bf16>(frames * c * hw) }?;
        let func = dev.get_or_load_custom_func(cuda::NORM, cuda::MODULE, cuda::PTX)?;
        let cfg = LaunchConfig {
            grid_dim: (hw.div_ceil(cuda::NORM_THREADS as usize) as u32, frames.max(1) as u32, 1),
            block_dim: (cuda::NORM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (c_i, hw_i) = (c as i32, hw as i32);
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&ss);
        builder.arg(&out);
        builder.arg(&c_i);
        builder.arg(&hw_i);
        // SAFETY: argument list and launch geometry match the kernel.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn never_apply_on_cpu_and_the_cpu_ops_refuse() {
        let x = Tensor::zeros((1, 3, 32, 4, 4), DType::BF16, &Device::Cpu).unwrap();
        let w = Tensor::zeros((8, 32, 3, 3, 3), DType::BF16, &Device::Cpu).unwrap();
        assert!(!conv_applies(&w, 32, 1));
        assert!(!norm_applies(&x));
        let wk = conv_weight_layout(&w).unwrap();
        assert_eq!(wk.dims(), &[8, 27 * 32]);
        let bias = Tensor::zeros(8, DType::BF16, &Device::Cpu).unwrap();
        let geometry = ConvGeometry { kt: 3, kh: 3, kw: 3, pad: 1, up: 1 };
        let err = causal_conv3d(&x, &wk, &bias, geometry).unwrap_err().to_string();
        assert!(err.contains("CUDA only"), "{err}");
        let scale = Tensor::ones(32, DType::F32, &Device::Cpu).unwrap();
        let err = rms_norm_silu(&x, &scale).unwrap_err().to_string();
        assert!(err.contains("CUDA only"), "{err}");
    }

    /// The kernel's weight layout: element (co, dt, dy, dx, ci) of the
    /// flattened weight is diffusers' weight[co, ci, dt, dy, dx].
    #[test]
    fn weight_layout_puts_input_channels_fastest() {
        let dev = Device::Cpu;
        let (co, ci, kt, kh, kw) = (2, 3, 3, 1, 2);
        let w =
            Tensor::arange(0f32, (co * ci * kt * kh * kw) as f32, &dev).unwrap().reshape((co, ci, kt, kh, kw)).unwrap();
        let flat: Vec<Vec<f32>> = conv_weight_layout(&w).unwrap().to_vec2().unwrap();
        let orig: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        for o in 0..co {
            for t in 0..kt {
                for y in 0..kh {
                    for x in 0..kw {
                        for c in 0..ci {
                            let k = ((t * kh + y) * kw + x) * ci + c;
                            let src = (((o * ci + c) * kt + t) * kh + y) * kw + x;
                            assert_eq!(flat[o][k], orig[src]);
                        }
                    }
                }
            }
        }
    }
}
