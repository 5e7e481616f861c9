//! Pure candle model code (no I/O, no async): the Wan2.2 DiT with
//! StreamAvatar's talk/listen audio attention, 3-D RoPE and RAPR, the rolling
//! KV cache with reference sink, the Wan2.2 VAE, wav2vec2, the few-step
//! flow-matching sampler, and weight loading.

pub mod attention;
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
