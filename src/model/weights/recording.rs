//! `RecordingBackend`: a candle `SimpleBackend` that records every tensor a
//! model constructor asks for (name, shape) and hands back a zero-strided
//! broadcast of one scalar, so even the 5B-parameter `full` model can be
//! "constructed" in a few kilobytes to learn its expected tensor list.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// What the model asked for.
#[derive(Debug, Clone, Default)]
pub struct RecordedTensors {
    /// Tensors requested with a shape (`vb.get`), canonical name -> shape.
    pub required: BTreeMap<String, Vec<usize>>,
    /// Names probed with `contains_tensor` (optional tensors; answered "present"
    /// so the full model is recorded).
    pub probed: Vec<String>,
}

/// See module docs. Clone the handle from [`RecordingBackend::log`] before
/// boxing the backend into a `VarBuilder`.
#[derive(Clone, Default)]
pub struct RecordingBackend {
    log: Arc<Mutex<RecordedTensors>>,
}

impl RecordingBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A `VarBuilder` over a new recorder plus the handle to read it back.
    pub fn var_builder(dtype: DType, device: &Device) -> (VarBuilder<'static>, Self) {
        let rec = Self::new();
        let vb = VarBuilder::from_backend(Box::new(rec.clone()), dtype, device.clone());
        (vb, rec)
    }

    /// Everything recorded so far.
    pub fn recorded(&self) -> RecordedTensors {
        match self.log.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl SimpleBackend for RecordingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut log) = self.log.lock() {
            log.required.insert(name.to_string(), s.dims().to_vec());
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("recording backend: `{name}` was requested without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        if let Ok(mut log) = self.log.lock() {
            log.probed.push(name.to_string());
        }
        // Record the full model: optional modules are expected to be there.
        !super::is_unshaped(name) && !super::is_measured_stat(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_names_and_shapes_without_allocating() {
        let (vb, rec) = RecordingBackend::var_builder(DType::F32, &Device::Cpu);
        let lin = candle_nn::linear(3072, 14336, vb.pp("blocks.0.ffn.net.0.proj")).unwrap();
        let _ = lin;
        assert!(vb.contains_tensor("maybe"));
        assert!(!vb.contains_tensor("prompt_embeds"));
        let r = rec.recorded();
        assert_eq!(r.required["blocks.0.ffn.net.0.proj.weight"], vec![14336, 3072]);
        assert_eq!(r.required["blocks.0.ffn.net.0.proj.bias"], vec![14336]);
        assert_eq!(r.probed, vec!["maybe".to_string(), "prompt_embeds".to_string()]);
    }
}
