//! Device placement of the generator: `cpu`, `cuda:N` (everything on one
//! GPU) or `cuda:A,cuda:B` (DiT + audio on A, VAE on B: the GPU pair).

use candle_core::{DType, Device};

use super::GeneratorError;

/// Where each stage runs and in which dtype.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    /// DiT, audio encoder and projection.
    pub dit: Device,
    /// VAE (reference encode and streaming decode).
    pub vae: Device,
    /// Compute dtype: f32 on CPU, bf16 on CUDA.
    pub dtype: DType,
}

fn parse_one(spec: &str) -> Result<Device, GeneratorError> {
    let spec = spec.trim();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(idx) = spec.strip_prefix("cuda:").or(if spec == "cuda" { Some("0") } else { None }) else {
        return Err(GeneratorError::Model(format!("unknown device `{spec}` (expected cpu, cuda:N or cuda:A,cuda:B)")));
    };
    let ordinal: usize =
        idx.parse().map_err(|_| GeneratorError::Model(format!("bad CUDA ordinal in device `{spec}`")))?;
    if !cfg!(feature = "cuda") {
        return Err(GeneratorError::Model(format!(
            "device `{spec}` needs a CUDA build: rebuild with `--features cuda` (see docs/GPU.md)"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| GeneratorError::Model(format!("cannot open {spec}: {e}")))
}

impl DevicePlan {
    /// Parse `cpu` | `cuda:N` | `cuda:A,cuda:B`.
    pub fn parse(spec: &str) -> Result<Self, GeneratorError> {
        let parts: Vec<&str> = spec.split(',').collect();
        let (dit, vae) = match parts.as_slice() {
            [one] => {
                let d = parse_one(one)?;
                (d.clone(), d)
            }
            [a, b] => (parse_one(a)?, parse_one(b)?),
            _ => return Err(GeneratorError::Model(format!("device `{spec}`: give one device or a DiT,VAE pair"))),
        };
        if dit.is_cpu() != vae.is_cpu() {
            return Err(GeneratorError::Model(format!("device `{spec}`: do not mix cpu and cuda")));
        }
        let dtype = if dit.is_cpu() { DType::F32 } else { DType::BF16 };
        Ok(Self { dit, vae, dtype })
    }

    pub fn cpu() -> Self {
        Self { dit: Device::Cpu, vae: Device::Cpu, dtype: DType::F32 }
    }

    /// Wait for queued GPU work (for honest stage timings); no-op on CPU.
    pub fn synchronize(&self) {
        let _ = self.dit.synchronize();
        if !self.vae.same_device(&self.dit) {
            let _ = self.vae.synchronize();
        }
    }

    /// (ordinal, used MiB, total MiB) of each distinct GPU of the plan, as
    /// the driver reports them now (all processes' allocations included);
    /// empty on CPU or when the driver cannot say.
    pub fn gpu_memory_mib(&self) -> Vec<(usize, f64, f64)> {
        let mut out: Vec<(usize, f64, f64)> = Vec::new();
        for dev in [&self.dit, &self.vae] {
            if let Some(entry) = gpu_memory_of(dev) {
                if !out.iter().any(|e| e.0 == entry.0) {
                    out.push(entry);
                }
            }
        }
        out
    }
}

#[cfg(feature = "cuda")]
fn gpu_memory_of(dev: &Device) -> Option<(usize, f64, f64)> {
    let Device::Cuda(cuda) = dev else { return None };
    let context = cuda.cuda_stream().context().clone();
    let (free, total) = context.mem_get_info().ok()?;
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    Some((context.ordinal(), mib(total - free), mib(total)))
}

#[cfg(not(feature = "cuda"))]
fn gpu_memory_of(_dev: &Device) -> Option<(usize, f64, f64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        let p = DevicePlan::parse("cpu").unwrap();
        assert!(p.dit.is_cpu() && p.vae.is_cpu());
        assert_eq!(p.dtype, DType::F32);
        assert!(DevicePlan::parse("tpu:0").unwrap_err().to_string().contains("tpu:0"));
        assert!(DevicePlan::parse("cpu,cpu,cpu").is_err());
        assert!(DevicePlan::parse("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(DevicePlan::parse("cuda:0,cuda:1").unwrap_err().to_string().contains("--features cuda"));
    }
}
