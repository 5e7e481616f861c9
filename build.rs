//! Build script. With the `cuda` feature it compiles our CUDA kernels
//! (`KERNELS`: the fused attention, the attention glue, the VAE's convolution and norm, the DiT's
//! modulation and gated residual) to PTX with nvcc (`$NVCC`, else
//! `nvcc` on PATH; docs/GPU.md) for `compute_$CUDA_COMPUTE_CAP` (default
//! 90); the binary embeds the PTX and the driver JIT-compiles it once.
//! Without the feature (the CPU build, CI) it does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    for kernel in KERNELS {
        println!("cargo:rerun-if-changed={}", kernel.0);
    }
    println!("cargo:rerun-if-changed=src/model/cuda_block_reduce.cuh");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    for (source, ptx) in KERNELS {
        let status = Command::new(&nvcc)
            .args(["--ptx", &format!("-arch=compute_{cap}"), "-O3", "-o"])
            .arg(out_dir.join(ptx))
            .arg(source)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{nvcc} failed on {source} ({s})"),
            Err(e) => panic!("cannot run {nvcc} for {source}: {e} (set NVCC; docs/GPU.md)"),
        }
    }
}

/// Our CUDA sources and the PTX file (in `OUT_DIR`) each one becomes.
const KERNELS: [(&str, &str); 4] = [
    ("src/model/flash_attention.cu", "flash_attention.ptx"),
    ("src/model/attention_kernels.cu", "attention_kernels.ptx"),
    ("src/model/vae/cuda_kernels.cu", "vae_cuda_kernels.ptx"),
    ("src/model/dit/cuda_kernels.cu", "dit_cuda_kernels.ptx"),
];
