//! Fused attention on CUDA: `softmax(q k^T / sqrt(d)) v` without the score
//! matrix in memory (FlashAttention-2's online softmax over key tiles, with
//! scores and accumulators in registers, on the tensor cores through
//! `mma.sync`). The kernel is `flash_attention.cu`, compiled
//! to PTX by `build.rs` in `--features cuda` builds.
//!
//! Scope: bf16 inputs `[B, H, L, 128]` on a CUDA device, no mask (the
//! streaming DiT's self-attention over its KV cache and the full model's
//! cross-attentions). [`scaled_dot_product_attention`](super::attention::scaled_dot_product_attention)
//! uses it when [`applies`] says so and falls back to the materialised
//! path otherwise. Parity with that path: `tests/dit_parity.rs`
//! (`flash_attention_matches_materialised`, run on a GPU).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Result, Tensor};

/// Head dimension the kernel is built for (Wan2.2-TI2V-5B: 3072 / 24).
pub const HEAD_DIM: usize = 128;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Use the fused kernel where it applies (default: on); off = always the
/// materialised path (`bench generator --no-flash`, A/B runs).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the fused kernel handles these inputs (see module docs).
pub fn applies(q: &Tensor, k: &Tensor, v: &Tensor, has_mask: bool) -> bool {
    cfg!(feature = "cuda")
        && enabled()
        && !has_mask
        && q.device().is_cuda()
        && q.dtype() == DType::BF16
        && k.dtype() == DType::BF16
        && v.dtype() == DType::BF16
        && q.rank() == 4
        && q.dim(3).ok() == Some(HEAD_DIM)
        && k.dims().get(3) == Some(&HEAD_DIM)
        && v.dims() == k.dims()
        && q.dims()[..2] == k.dims()[..2]
}

/// `softmax(q k^T * scale) v` for `[B, H, Lq, 128]` / `[B, H, Lk, 128]` bf16
/// CUDA tensors.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    let op = FlashAttention { scale_log2: scale * std::f32::consts::LOG2_E };
    // The kernel reads 16-byte vectors: contiguous, 16-byte aligned starts.
    let aligned = |t: &Tensor| -> Result<Tensor> {
        if t.is_contiguous() && t.layout().start_offset() % 8 == 0 {
            Ok(t.clone())
        } else {
            t.force_contiguous()
        }
    };
    aligned(q)?.apply_op3_no_bwd(&aligned(k)?, &aligned(v)?, &op)
}

struct FlashAttention {
    /// `scale * log2(e)`: the kernel's softmax works in base 2.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    scale_log2: f32,
}

#[cfg(feature = "cuda")]
mod cuda {
    pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attention.ptx"));
    pub const KERNEL: &str = "flash_attention_fwd_bf16_d128";
    pub const MODULE: &str = "streamavatar_flash_attention";
    /// Query rows per block (4 warps x 16) and threads per block.
    pub const BLOCK_M: usize = 64;
    pub const THREADS: u32 = 128;
    /// The K tile (64 rows of 128 + 8 bf16) and the transposed V tile (128
    /// rows of 64 + 8 bf16): must match `LD_K` / `LD_VT` in the `.cu`.
    pub const SHARED_BYTES: usize = 64 * (128 + 8) * 2 + 128 * (64 + 8) * 2;
}

impl candle_core::CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "streamavatar-flash-attention"
    }

    crate::model::cuda_only_cpu_fwd!(op3, "the fused attention kernel runs on CUDA only");

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        ql: &candle_core::Layout,
        k: &candle_core::CudaStorage,
        kl: &candle_core::Layout,
        v: &candle_core::CudaStorage,
        vl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let (b, h, lq, d) = ql.shape().dims4()?;
        let (_, _, lk, _) = kl.shape().dims4()?;
        if d != HEAD_DIM || !ql.is_contiguous() || !kl.is_contiguous() || !vl.is_contiguous() {
            candle_core::bail!("flash attention needs contiguous [B, H, L, {HEAD_DIM}] inputs");
        }
        if lk == 0 || lq == 0 {
            candle_core::bail!("flash attention needs at least one query and one key");
        }
        let dev = q.device.clone();
        let qs = q.as_cuda_slice::<bf16>()?.slice(ql.start_offset()..);
        let ks = k.as_cuda_slice::<bf16>()?.slice(kl.start_offset()..);
        let vs = v.as_cuda_slice::<bf16>()?.slice(vl.start_offset()..);
        // SAFETY: every element is written by the kernel (rows < lq).
        let out = unsafe { dev.alloc::<bf16>(b * h * lq * d) }?;
        let func = dev.get_or_load_custom_func(cuda::KERNEL, cuda::MODULE, cuda::PTX)?;
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            cuda::SHARED_BYTES as i32,
        )
        .w()?;
        let cfg = LaunchConfig {
            grid_dim: (lq.div_ceil(cuda::BLOCK_M) as u32, (b * h) as u32, 1),
            block_dim: (cuda::THREADS, 1, 1),
            shared_mem_bytes: cuda::SHARED_BYTES as u32,
        };
        let (lq_i, lk_i) = (lq as i32, lk as i32);
        let mut builder = func.builder();
        builder.arg(&qs);
        builder.arg(&ks);
        builder.arg(&vs);
        builder.arg(&out);
        builder.arg(&lq_i);
        builder.arg(&lk_i);
        builder.arg(&self.scale_log2);
        // SAFETY: argument list and launch geometry match the kernel.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), ql.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn never_applies_on_cpu_and_the_cpu_op_refuses() {
        let q = Tensor::zeros((1, 2, 4, HEAD_DIM), DType::F32, &Device::Cpu).unwrap();
        assert!(!applies(&q, &q, &q, false));
        let err = attention(&q, &q, &q, 1.0).unwrap_err().to_string();
        assert!(err.contains("CUDA only"), "{err}");
    }
}
