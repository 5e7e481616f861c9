//! Build script. With the `cuda` feature it compiles the fused attention
//! kernel `src/model/flash_attention.cu` to PTX with nvcc (`$NVCC`, else
//! `nvcc` on PATH; docs/GPU.md) for `compute_$CUDA_COMPUTE_CAP` (default
//! 90); the binary embeds the PTX and the driver JIT-compiles it once.
//! Without the feature (the CPU build, CI) it does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/model/flash_attention.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("flash_attention.ptx");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", &format!("-arch=compute_{cap}"), "-O3", "-o"])
        .arg(&out)
        .arg("src/model/flash_attention.cu")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on src/model/flash_attention.cu ({s})"),
        Err(e) => panic!("cannot run {nvcc} for src/model/flash_attention.cu: {e} (set NVCC; docs/GPU.md)"),
    }
}
