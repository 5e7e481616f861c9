//! Shared by the parity tests: the device they run on.
//!
//! `STREAMAVATAR_TEST_DEVICE=cuda:0` runs the parity tests on a GPU (a
//! `--features cuda` build; docs/GPU.md) against the same CPU-made fixtures;
//! unset or `cpu`, they run on the CPU as in CI.

#![allow(dead_code)]

use candle_core::Device;
use streamavatar::generator::DevicePlan;

fn device_spec() -> Option<String> {
    std::env::var("STREAMAVATAR_TEST_DEVICE").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The device named by `STREAMAVATAR_TEST_DEVICE` (default `cpu`), parsed
/// like `--device` (the DiT device of the plan).
pub fn test_device() -> Device {
    match device_spec() {
        None => Device::Cpu,
        Some(spec) => DevicePlan::parse(&spec).unwrap_or_else(|e| panic!("STREAMAVATAR_TEST_DEVICE={spec}: {e}")).dit,
    }
}

/// An f32 tolerance set for the CPU, widened 10x (to at least 1e-4) on a
/// GPU, where cuBLAS and the CUDA kernels sum in other orders.
pub fn f32_tol(cpu: f32) -> f32 {
    match device_spec().as_deref() {
        None | Some("cpu") => cpu,
        Some(_) => (cpu * 10.0).max(1e-4),
    }
}
