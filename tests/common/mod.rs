//! Shared by the parity tests: the device they run on.
//!
//! `STREAMAVATAR_TEST_DEVICE=cuda:0` runs the parity tests on a GPU (a
//! `--features cuda` build; docs/GPU.md) against the same CPU-made fixtures;
//! unset or `cpu`, they run on the CPU as in CI.

#![allow(dead_code)]

use candle_core::Device;

/// The device named by `STREAMAVATAR_TEST_DEVICE` (default `cpu`).
pub fn test_device() -> Device {
    match std::env::var("STREAMAVATAR_TEST_DEVICE").ok().as_deref().map(str::trim) {
        None | Some("") | Some("cpu") => Device::Cpu,
        Some(spec) => {
            let ordinal = spec
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("STREAMAVATAR_TEST_DEVICE={spec}: expected cpu or cuda:N"));
            Device::new_cuda(ordinal).unwrap_or_else(|e| panic!("STREAMAVATAR_TEST_DEVICE={spec}: {e}"))
        }
    }
}

/// An f32 tolerance set for the CPU, widened 10x (to at least 1e-4) on a
/// GPU, where cuBLAS and the CUDA kernels sum in other orders.
pub fn f32_tol(cpu: f32) -> f32 {
    if test_device().is_cpu() {
        cpu
    } else {
        (cpu * 10.0).max(1e-4)
    }
}
