//! The DiT block's element-wise glue fused into CUDA kernels
//! (`cuda_kernels.cu`, compiled to PTX by `build.rs` in `--features cuda`
//! builds), for bf16 hidden states on a CUDA device:
//! - [`modulate`]: f32 LayerNorm over D, `* (1 + scale) + shift` per latent
//!   frame, cast to bf16 (diffusers' `norm1/norm3` + modulation);
//! - [`gated_residual`]: `bf16(f32(x) + f32(y) * gate)` per latent frame.
//!
//! Each replaces ~6-10 candle ops over `[B, L, D]` tensors (about 200 ms of
//! a full-size chunk on an H100, docs/BENCHMARKS.md). `norm.rs` uses them
//! when [`applies`] says so and keeps the candle ops otherwise (CPU, f32,
//! f16, training). Parity with those ops: `tests/dit_parity.rs`
//! (`fused_dit_glue_matches_candle_ops`, run on a GPU).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Result, Tensor};

/// Largest hidden width the modulation kernel holds in registers
/// (`THREADS * MAX_PER_THREAD` in the `.cu`).
pub const MAX_DIM: usize = 4096;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Use the kernels where they apply (default: on); off = candle's ops
/// (`bench generator --no-dit-kernels`, A/B runs).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the kernels handle hidden states `x` (`[B, L, D]`) split into
/// `frames` latent frames.
pub fn applies(x: &Tensor, frames: usize) -> bool {
    cfg!(feature = "cuda")
        && enabled()
        && x.device().is_cuda()
        && x.dtype() == DType::BF16
        && x.rank() == 3
        && x.dim(2).is_ok_and(|d| d > 0 && d <= MAX_DIM)
        && frames > 0
        && x.dim(1).is_ok_and(|l| l % frames == 0)
        && !crate::model::grad_ops::tracked(&[x])
}

/// `LayerNorm(x) * (1 + scale) + shift` in f32, as bf16. `x` `[B, L, D]`
/// bf16; `norm` `[2, D]` f32 (LayerNorm weight, then bias); `shift_scale`
/// `[B, F, 2, D]` f32 (shift, then scale, per latent frame).
pub fn modulate(x: &Tensor, norm: &Tensor, shift_scale: &Tensor, eps: f32) -> Result<Tensor> {
    let c = |t: &Tensor| if t.is_contiguous() { Ok(t.clone()) } else { t.force_contiguous() };
    c(x)?.apply_op3_no_bwd(&c(norm)?, &c(shift_scale)?, &Modulate { eps })
}

/// `bf16(f32(x) + f32(y) * gate)`; `x`, `y` `[B, L, D]` bf16, `gate`
/// `[B, F, 1, D]` (or `[B, F, D]`) f32.
pub fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let c = |t: &Tensor| if t.is_contiguous() { Ok(t.clone()) } else { t.force_contiguous() };
    c(x)?.apply_op3_no_bwd(&c(y)?, &c(gate)?, &GatedResidual)
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Modulate {
    eps: f32,
}

struct GatedResidual;

#[cfg(feature = "cuda")]
mod cuda {
    pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/dit_cuda_kernels.ptx"));
    pub const MODULE: &str = "streamavatar_dit_kernels";
    pub const MODULATE: &str = "modulate_bf16";
    pub const GATED: &str = "gated_residual_bf16";
    pub const THREADS: u32 = 256;

    /// `[B, L, D]` and the per-frame tensor's frame count, checked.
    pub fn geometry(
        x: &candle_core::Layout,
        per_frame: &candle_core::Layout,
        per_frame_rows: usize,
    ) -> candle_core::Result<(usize, usize, usize, usize)> {
        let (b, l, d) = x.shape().dims3()?;
        let dims = per_frame.shape().dims();
        let frames = if dims.first() == Some(&b) && dims.last() == Some(&d) && dims.len() >= 3 { dims[1] } else { 0 };
        let expected = b * frames * per_frame_rows * d;
        if frames == 0 || l % frames != 0 || per_frame.shape().elem_count() != expected {
            candle_core::bail!("DiT kernel: per-frame tensor {dims:?} does not fit hidden states [{b}, {l}, {d}]");
        }
        if d == 0 || d > super::MAX_DIM || !x.is_contiguous() || !per_frame.is_contiguous() {
            candle_core::bail!("DiT kernel: needs contiguous inputs and 0 < D <= {}", super::MAX_DIM);
        }
        Ok((b, l, d, frames))
    }
}

impl candle_core::CustomOp3 for Modulate {
    fn name(&self) -> &'static str {
        "streamavatar-dit-modulate"
    }

    crate::model::cuda_only_cpu_fwd!(op3, "the fused DiT kernels run on CUDA only");

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &candle_core::Layout,
        norm: &candle_core::CudaStorage,
        nl: &candle_core::Layout,
        ss: &candle_core::CudaStorage,
        sl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let (b, l, d, frames) = cuda::geometry(xl, sl, 2)?;
        if nl.shape().dims() != [2, d] || !nl.is_contiguous() {
            candle_core::bail!("DiT modulate: LayerNorm parameters {:?}, expected [2, {d}]", nl.shape());
        }
        let dev = x.device.clone();
        let xs = x.as_cuda_slice::<bf16>()?.slice(xl.start_offset()..);
        let ns = norm.as_cuda_slice::<f32>()?.slice(nl.start_offset()..);
        let weight = ns.slice(..d);
        let bias = ns.slice(d..);
        let sss = ss.as_cuda_slice::<f32>()?.slice(sl.start_offset()..);
        // SAFETY: the kernel writes every element (one block per row, all D).
        let out = unsafe { dev.alloc::<bf16>(b * l * d) }?;
        let func = dev.get_or_load_custom_func(cuda::MODULATE, cuda::MODULE, cuda::PTX)?;
        let cfg =
            LaunchConfig { grid_dim: ((b * l) as u32, 1, 1), block_dim: (cuda::THREADS, 1, 1), shared_mem_bytes: 0 };
        let (d_i, l_i, f_i) = (d as i32, l as i32, frames as i32);
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&weight);
        builder.arg(&bias);
        builder.arg(&sss);
        builder.arg(&out);
        builder.arg(&d_i);
        builder.arg(&l_i);
        builder.arg(&f_i);
        builder.arg(&self.eps);
        // SAFETY: argument list and launch geometry match the kernel.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
    }
}

impl candle_core::CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "streamavatar-dit-gated-residual"
    }

    crate::model::cuda_only_cpu_fwd!(op3, "the fused DiT kernels run on CUDA only");

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &candle_core::Layout,
        y: &candle_core::CudaStorage,
        yl: &candle_core::Layout,
        gate: &candle_core::CudaStorage,
        gl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let (b, l, d, frames) = cuda::geometry(xl, gl, 1)?;
        if yl.shape() != xl.shape() || !yl.is_contiguous() {
            candle_core::bail!(
                "DiT gated residual: branch {:?} differs from hidden states {:?}",
                yl.shape(),
                xl.shape()
            );
        }
        let dev = x.device.clone();
        let xs = x.as_cuda_slice::<bf16>()?.slice(xl.start_offset()..);
        let ys = y.as_cuda_slice::<bf16>()?.slice(yl.start_offset()..);
        let gs = gate.as_cuda_slice::<f32>()?.slice(gl.start_offset()..);
        let n = b * l * d;
        // SAFETY: one thread per element, all written.
        let out = unsafe { dev.alloc::<bf16>(n) }?;
        let func = dev.get_or_load_custom_func(cuda::GATED, cuda::MODULE, cuda::PTX)?;
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(cuda::THREADS as usize) as u32, 1, 1),
            block_dim: (cuda::THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (d_i, l_i, f_i) = (d as i32, l as i32, frames as i32);
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&ys);
        builder.arg(&gs);
        builder.arg(&out);
        builder.arg(&d_i);
        builder.arg(&l_i);
        builder.arg(&f_i);
        builder.arg(&n);
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
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 6, 8), DType::BF16, &dev).unwrap();
        assert!(!applies(&x, 3));
        let norm = Tensor::zeros((2, 8), DType::F32, &dev).unwrap();
        let ss = Tensor::zeros((1, 3, 2, 8), DType::F32, &dev).unwrap();
        let err = modulate(&x, &norm, &ss, 1e-6).unwrap_err().to_string();
        assert!(err.contains("CUDA only"), "{err}");
        let gate = Tensor::zeros((1, 3, 1, 8), DType::F32, &dev).unwrap();
        let err = gated_residual(&x, &x, &gate).unwrap_err().to_string();
        assert!(err.contains("CUDA only"), "{err}");
    }
}
