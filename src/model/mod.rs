//! Pure candle model code (no I/O, no async): the Wan2.2 DiT with
//! StreamAvatar's talk/listen audio attention, 3-D RoPE and RAPR, the rolling
//! KV cache with reference sink, the Wan2.2 VAE, wav2vec2, the few-step
//! flow-matching sampler, and weight loading.

pub mod attention;
pub mod attention_kernels;
pub mod audio;
pub mod dit;
pub mod flash_attention;
pub mod grad_ops;
pub mod kv_cache;
pub mod profile;
pub mod rope;
pub mod sampler;
pub mod vae;
pub mod weights;

/// The `cpu_fwd` of a CUDA-only candle custom op (`op2` / `op3`): a clear
/// error naming the kernel instead of a computation.
macro_rules! cuda_only_cpu_fwd {
    (op2, $msg:expr) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            candle_core::bail!($msg)
        }
    };
    (op3, $msg:expr) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            candle_core::bail!($msg)
        }
    };
}
pub(crate) use cuda_only_cpu_fwd;
