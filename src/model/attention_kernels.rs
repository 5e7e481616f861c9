//! [`WanAttention`](super::attention::WanAttention)'s glue fused into CUDA
//! kernels (`attention_kernels.cu`, compiled to PTX by `build.rs` in
//! `--features cuda` builds), for bf16 activations on a CUDA device:
//! - [`norm_rope_heads`]: q / k projection `[B, L, D]` -> RMSNorm across
//!   heads (optional) -> interleaved RoPE (optional) -> `[B, H, L, hd]`, in
//!   one pass instead of the f32 casts, norm, head-split copy and RoPE chain;
//! - [`few_key_attention`]: the query's RMSNorm and the whole attention over
//!   a handful of keys per group (StreamAvatar's audio attention: a latent
//!   frame's tokens over its ~4 audio tokens), output with heads merged.
//!
//! On the full model these chains cost ~250 ms of a one-GPU chunk on an H100
//! (the q/k norms, RoPE + head split, the launch-bound audio attention;
//! docs/BENCHMARKS.md). `attention.rs` calls them when [`applies`] says so
//! and keeps candle's ops otherwise (CPU, f32, f16, training). Parity with
//! those ops: `tests/dit_parity.rs` (`fused_attention_glue_matches_candle_ops`,
//! run on a GPU).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Result, Tensor};

/// Widest row the kernels hold in registers (`2 * THREADS * MAX_PAIRS`).
pub const MAX_DIM: usize = 4096;
/// Most keys per group [`few_key_attention`] takes (`MAX_KEYS`).
pub const MAX_KEYS: usize = 16;
/// Widest head (`32 lanes * 2 * MAX_LANE_PAIRS`).
pub const MAX_HEAD_DIM: usize = 256;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Use the kernels where they apply (default: on); off = candle's ops
/// (`bench generator --no-attn-kernels`, A/B runs).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the kernels handle the `[B, L, D]` activations `x` split into
/// `heads` heads (bf16 on CUDA, even head size, D within the limits, no
/// gradient tracking).
pub fn applies(x: &Tensor, heads: usize) -> bool {
    cfg!(feature = "cuda")
        && enabled()
        && x.device().is_cuda()
        && x.dtype() == DType::BF16
        && x.rank() == 3
        && heads > 0
        && x.dim(2)
            .is_ok_and(|d| d > 0 && d <= MAX_DIM && d % heads == 0 && (d / heads) % 2 == 0 && d / heads <= MAX_HEAD_DIM)
        && !crate::model::grad_ops::tracked(&[x])
}

/// `x` `[B, L, D]` bf16 -> `[B, heads, L, D / heads]` bf16, RMSNorm'd with
/// `norm` (`[D]` f32) and rotated with `rope` (`cos`, `sin`: `[L, hd / 2]`
/// f32, interleaved pairs) when given.
pub fn norm_rope_heads(
    x: &Tensor,
    norm: Option<&Tensor>,
    rope: Option<(&Tensor, &Tensor)>,
    heads: usize,
    eps: f32,
) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let hd = d / heads;
    let op = NormRopeHeads {
        norm: norm.map(|n| n.to_dtype(DType::F32).and_then(|n| contiguous(&n))).transpose()?,
        rope: rope
            .map(|(c, s)| -> Result<_> {
                for t in [c, s] {
                    if t.dims() != [l, hd / 2] {
                        candle_core::bail!("fused RoPE: table {:?}, expected [{l}, {}]", t.dims(), hd / 2);
                    }
                }
                Ok((contiguous(&c.to_dtype(DType::F32)?)?, contiguous(&s.to_dtype(DType::F32)?)?))
            })
            .transpose()?,
        heads,
        eps,
    };
    if let Some(n) = &op.norm {
        if n.dims() != [d] {
            candle_core::bail!("fused RMSNorm: weight {:?}, expected [{d}]", n.dims());
        }
    }
    let out = contiguous(x)?.apply_op1_no_bwd(&op)?;
    debug_assert_eq!(out.dims(), [b, heads, l, hd]);
    Ok(out)
}

/// Attention of every query token over its group's few keys: `q` `[G, Lq,
/// D]` bf16 (the raw projection; RMSNorm'd here with `norm_q` `[D]` f32),
/// `k` (normed) and `v` `[G, n, D]` bf16, `n <= MAX_KEYS`; returns `[G, Lq,
/// D]` bf16 with the heads merged. Scores and softmax in f32, scale
/// `1 / sqrt(hd)`.
pub fn few_key_attention(
    q: &Tensor,
    norm_q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    eps: f32,
) -> Result<Tensor> {
    let (g, _, d) = q.dims3()?;
    let (gk, n, dk) = k.dims3()?;
    if gk != g || dk != d || v.dims() != k.dims() || n == 0 || n > MAX_KEYS || norm_q.dims() != [d] {
        candle_core::bail!(
            "few-key attention: q {:?}, k {:?}, v {:?}, norm {:?} (need [G, Lq, D], [G, n <= {MAX_KEYS}, D] twice, [D])",
            q.dims(),
            k.dims(),
            v.dims(),
            norm_q.dims()
        );
    }
    let op = FewKeyAttention { norm_q: contiguous(&norm_q.to_dtype(DType::F32)?)?, heads, eps };
    contiguous(q)?.apply_op3_no_bwd(&contiguous(k)?, &contiguous(v)?, &op)
}

/// `t` contiguous from an even element offset (the kernels load bf16 pairs
/// and f32 values from its start), copied only when it is not.
fn contiguous(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().start_offset() % 2 == 0 {
        Ok(t.clone())
    } else {
        t.force_contiguous()
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct NormRopeHeads {
    norm: Option<Tensor>,
    rope: Option<(Tensor, Tensor)>,
    heads: usize,
    eps: f32,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct FewKeyAttention {
    norm_q: Tensor,
    heads: usize,
    eps: f32,
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::CudaView;
    use candle_core::{Layout, Result, Storage, StorageRef};

    pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/attention_kernels.ptx"));
    pub const MODULE: &str = "streamavatar_attention_kernels";
    pub const NORM_ROPE_HEADS: &str = "norm_rope_heads_bf16";
    pub const FEW_KEY: &str = "few_key_attention_bf16";
    pub const THREADS: u32 = 256;

    /// A view of a side input's f32 CUDA memory (the ops hold their small
    /// f32 inputs as tensors, not as op arguments); `guard` is the tensor's
    /// storage read lock, kept alive by the caller.
    pub fn f32_view<'a>(guard: &'a (StorageRef<'a>, &'a Layout)) -> Result<CudaView<'a, f32>> {
        let (storage, layout) = guard;
        let Storage::Cuda(s) = &**storage else {
            candle_core::bail!("fused attention kernels: side input not on the CUDA device");
        };
        if !layout.is_contiguous() {
            candle_core::bail!("fused attention kernels: side input not contiguous");
        }
        Ok(s.as_cuda_slice::<f32>()?.slice(layout.start_offset()..))
    }
}

impl candle_core::CustomOp1 for NormRopeHeads {
    fn name(&self) -> &'static str {
        "streamavatar-norm-rope-heads"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("the fused attention kernels run on CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let (b, l, d) = xl.shape().dims3()?;
        let hd = d / self.heads;
        if !xl.is_contiguous() || d > MAX_DIM || d % self.heads != 0 || hd % 2 != 0 {
            candle_core::bail!("fused q/k heads: needs contiguous [B, L, D <= {}], D / heads even", MAX_DIM);
        }
        let dev = x.device.clone();
        let xs = x.as_cuda_slice::<bf16>()?.slice(xl.start_offset()..);
        // SAFETY: one block per row writes all of the row's D outputs.
        let out = unsafe { dev.alloc::<bf16>(b * l * d) }?;
        let func = dev.get_or_load_custom_func(cuda::NORM_ROPE_HEADS, cuda::MODULE, cuda::PTX)?;
        let cfg =
            LaunchConfig { grid_dim: ((b * l) as u32, 1, 1), block_dim: (cuda::THREADS, 1, 1), shared_mem_bytes: 0 };
        let (d_i, h_i, l_i) = (d as i32, self.heads as i32, l as i32);
        let null: u64 = 0;
        let norm_guard = self.norm.as_ref().map(|n| n.storage_and_layout());
        let norm = norm_guard.as_ref().map(cuda::f32_view).transpose()?;
        let cos_guard = self.rope.as_ref().map(|(c, _)| c.storage_and_layout());
        let sin_guard = self.rope.as_ref().map(|(_, s)| s.storage_and_layout());
        let cos = cos_guard.as_ref().map(cuda::f32_view).transpose()?;
        let sin = sin_guard.as_ref().map(cuda::f32_view).transpose()?;
        let mut builder = func.builder();
        builder.arg(&xs);
        match &norm {
            Some(n) => builder.arg(n),
            None => builder.arg(&null),
        };
        match (&cos, &sin) {
            (Some(c), Some(s)) => builder.arg(c).arg(s),
            _ => builder.arg(&null).arg(&null),
        };
        builder.arg(&out);
        builder.arg(&d_i);
        builder.arg(&h_i);
        builder.arg(&l_i);
        builder.arg(&self.eps);
        // SAFETY: argument list and launch geometry match the kernel; null
        // pointers are the kernel's "absent" inputs.
        unsafe { builder.launch(cfg) }.w()?;
        let shape = candle_core::Shape::from_dims(&[b, self.heads, l, hd]);
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}

impl candle_core::CustomOp3 for FewKeyAttention {
    fn name(&self) -> &'static str {
        "streamavatar-few-key-attention"
    }

    crate::model::cuda_only_cpu_fwd!(op3, "the fused attention kernels run on CUDA only");

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
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use half::bf16;

        let (g, lq, d) = ql.shape().dims3()?;
        let (_, n, _) = kl.shape().dims3()?;
        let hd = d / self.heads;
        if !ql.is_contiguous() || !kl.is_contiguous() || !vl.is_contiguous() || hd % 2 != 0 || hd > MAX_HEAD_DIM {
            candle_core::bail!("few-key attention: needs contiguous inputs, an even head size <= {}", MAX_HEAD_DIM);
        }
        let dev = q.device.clone();
        let qs = q.as_cuda_slice::<bf16>()?.slice(ql.start_offset()..);
        let ks = k.as_cuda_slice::<bf16>()?.slice(kl.start_offset()..);
        let vs = v.as_cuda_slice::<bf16>()?.slice(vl.start_offset()..);
        // SAFETY: one block per query row writes all of the row's D outputs.
        let out = unsafe { dev.alloc::<bf16>(g * lq * d) }?;
        let func = dev.get_or_load_custom_func(cuda::FEW_KEY, cuda::MODULE, cuda::PTX)?;
        let cfg = LaunchConfig {
            grid_dim: ((g * lq) as u32, 1, 1),
            block_dim: (cuda::THREADS, 1, 1),
            shared_mem_bytes: (d * std::mem::size_of::<f32>()) as u32,
        };
        let (d_i, h_i, lq_i, n_i) = (d as i32, self.heads as i32, lq as i32, n as i32);
        let scale = 1.0 / (hd as f32).sqrt();
        let norm_guard = self.norm_q.storage_and_layout();
        let norm = cuda::f32_view(&norm_guard)?;
        let mut builder = func.builder();
        builder.arg(&qs);
        builder.arg(&norm);
        builder.arg(&ks);
        builder.arg(&vs);
        builder.arg(&out);
        builder.arg(&d_i);
        builder.arg(&h_i);
        builder.arg(&lq_i);
        builder.arg(&n_i);
        builder.arg(&self.eps);
        builder.arg(&scale);
        // SAFETY: argument list, launch geometry and the dynamic shared memory
        // (the normed query row, D f32) match the kernel.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(out, dev), ql.shape().clone()))
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
        assert!(!applies(&x, 2));
        let w = Tensor::ones(8, DType::F32, &dev).unwrap();
        let err = norm_rope_heads(&x, Some(&w), None, 2, 1e-6).unwrap_err().to_string();
        assert!(err.contains("CUDA only"), "{err}");
        let kv = Tensor::zeros((1, 4, 8), DType::BF16, &dev).unwrap();
        let err = few_key_attention(&x, &w, &kv, &kv, 2, 1e-6).unwrap_err().to_string();
        assert!(err.contains("CUDA only"), "{err}");
    }

    #[test]
    fn wrong_shapes_are_refused_before_any_kernel() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 6, 8), DType::BF16, &dev).unwrap();
        let w = Tensor::ones(8, DType::F32, &dev).unwrap();
        let too_many = Tensor::zeros((1, MAX_KEYS + 1, 8), DType::BF16, &dev).unwrap();
        let err = few_key_attention(&x, &w, &too_many, &too_many, 2, 1e-6).unwrap_err().to_string();
        assert!(err.contains("few-key attention"), "{err}");
        let table = Tensor::zeros((5, 2), DType::F32, &dev).unwrap();
        let err = norm_rope_heads(&x, Some(&w), Some((&table, &table)), 2, 1e-6).unwrap_err().to_string();
        assert!(err.contains("table"), "{err}");
    }
}
