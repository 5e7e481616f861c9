//! Trainable parameters: a `VarMap` whose variables are created on first
//! use with the same seeded initial values as
//! [`SeededInitBackend`](crate::model::weights::seeded::SeededInitBackend)
//! (Kaiming-normal weights, unit gains, zero biases), so the real model
//! constructors (`WanVae::new`, `WanDit::new`, ...) can be pointed at it.
//!
//! Modules derive some tensors from their weights at construction (e.g. the
//! VAE's per-tap conv matrices): the derived copies do not see optimizer
//! updates, so a stage rebuilds its modules from the store every step
//! (cheap next to the step itself; gradients still reach the `Var`s).

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};

use crate::model::weights::seeded::SeededInitBackend;

/// A named set of trainable variables.
#[derive(Clone)]
pub struct ParamStore {
    map: VarMap,
    init: Arc<SeededInitBackend>,
    device: Device,
}

struct StoreBackend {
    map: VarMap,
    init: Arc<SeededInitBackend>,
    /// Hand out detached copies (no gradient tracking; inference fast paths).
    detached: bool,
}

/// Optional tensors whose presence a constructor probes with
/// `contains_tensor` (the DiT's talk / listen audio attention; wav2vec2's
/// weight-normed positional conv, `weight_g` / `weight_v` as in the
/// checkpoints `train export` writes): the store answers "present" so the
/// mini model always has them.
const OPTIONAL_PRESENT: [&str; 3] =
    ["talk_audio_attn.to_q.weight", "listen_audio_attn.to_q.weight", "pos_conv_embed.conv.weight_g"];

/// Variables that start at zero in training: the output projections of the
/// talk / listen audio attention, so a new (random) audio branch adds
/// nothing at first and the DiT grows it where the audio helps. With a
/// random output projection the mini teacher learned to *suppress* its
/// audio instead: the projected audio tokens barely differed between clips
/// after training (`teacher_check`'s `talk_token_change`, session 13).
/// The latent experts' last layers start at zero too (a random read-out
/// starts far off its targets).
const ZERO_INIT: [&str; 8] = [
    "talk_audio_attn.to_out.0.weight",
    "talk_audio_attn.to_out.0.bias",
    "listen_audio_attn.to_out.0.weight",
    "listen_audio_attn.to_out.0.bias",
    "lip_expert.fc2.weight",
    "lip_expert.fc2.bias",
    "head_expert.fc2.weight",
    "head_expert.fc2.bias",
];

impl SimpleBackend for StoreBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let data = self.map.data();
        let mut vars = data.lock().map_err(|_| candle_core::Error::Msg("param store poisoned".into()))?;
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!("param `{name}`: asked with shape {s:?}, stored {:?}", v.shape());
            }
            return Ok(if self.detached { v.as_tensor().detach() } else { v.as_tensor().clone() });
        }
        let t = if ZERO_INIT.iter().any(|z| name.ends_with(z)) {
            Tensor::zeros(s, dtype, dev)?
        } else {
            self.init.get(s, name, h, dtype, dev)?
        };
        let v = Var::from_tensor(&t)?;
        let out = if self.detached { v.as_tensor().detach() } else { v.as_tensor().clone() };
        vars.insert(name.to_string(), v);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        let data = self.map.data();
        let vars = data.lock().map_err(|_| candle_core::Error::Msg("param store poisoned".into()))?;
        match vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("param `{name}` not in the store"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        OPTIONAL_PRESENT.iter().any(|s| name.ends_with(s))
            || self.map.data().lock().map(|v| v.contains_key(name)).unwrap_or(false)
    }
}

/// What [`ParamStore::load_matching`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WarmStart {
    /// Variables set from the file.
    pub loaded: usize,
    /// Variables the file has under another shape (left at their init).
    pub shape_mismatch: Vec<String>,
    /// Variables the file does not have (left at their init).
    pub missing: usize,
    /// Tensors of the file no variable takes.
    pub unused: usize,
    /// Variables left at their init because their name contains one of
    /// the skipped substrings (`--init-skip`).
    pub skipped: usize,
}

impl ParamStore {
    /// An empty store; variables appear as modules are built from it.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self { map: VarMap::new(), init: Arc::new(SeededInitBackend::new(seed)), device: device.clone() }
    }

    /// The device its variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A f32 `VarBuilder` creating / returning this store's variables.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        let backend = StoreBackend { map: self.map.clone(), init: self.init.clone(), detached: false };
        VarBuilder::from_backend(Box::new(backend), DType::F32, self.device.clone())
    }

    /// Like [`var_builder`](Self::var_builder) but the tensors are detached
    /// (frozen use, inference benchmarks): no gradients, fused kernels.
    pub fn frozen_var_builder(&self) -> VarBuilder<'static> {
        let backend = StoreBackend { map: self.map.clone(), init: self.init.clone(), detached: true };
        VarBuilder::from_backend(Box::new(backend), DType::F32, self.device.clone())
    }

    /// All variables, sorted by name (a stable order for the optimizer).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.map.data();
        let mut v: Vec<(String, Var)> = match data.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Write every variable to a safetensors file.
    pub fn save(&self, path: &std::path::Path) -> candle_core::Result<()> {
        self.map.save(path)
    }

    /// Overwrite the variables that exist in the store with the file's
    /// values, creating the missing ones. Shapes must match.
    pub fn load(&self, path: &std::path::Path) -> candle_core::Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)?;
        let data = self.map.data();
        let mut vars = data.lock().map_err(|_| candle_core::Error::Msg("param store poisoned".into()))?;
        for (name, t) in tensors {
            match vars.get(&name) {
                Some(v) => v.set(&t.to_dtype(v.dtype())?)?,
                // Training is f32: a packed (f16 / bf16) checkpoint's
                // tensors become f32 variables, not half-precision ones
                // that an f32 activation cannot be multiplied with.
                None => {
                    let t = match t.dtype() {
                        candle_core::DType::F16 | candle_core::DType::BF16 => t.to_dtype(candle_core::DType::F32)?,
                        _ => t,
                    };
                    vars.insert(name, Var::from_tensor(&t)?);
                }
            }
        }
        Ok(())
    }

    /// Warm start: set every variable whose name and shape a tensor of
    /// `path` has; variables without one keep their initial values and
    /// tensors without a variable are ignored (e.g. a VAE checkpoint with a
    /// narrower decoder: its encoder loads, the decoder starts fresh).
    /// Variables whose name contains one of `skip` keep their initial values
    /// too (a branch re-initialised on purpose).
    pub fn load_matching(&self, path: &std::path::Path, skip: &[String]) -> candle_core::Result<WarmStart> {
        let tensors = candle_core::safetensors::load(path, &self.device)?;
        let data = self.map.data();
        let vars = data.lock().map_err(|_| candle_core::Error::Msg("param store poisoned".into()))?;
        let mut report = WarmStart::default();
        for (name, var) in vars.iter() {
            if skip.iter().any(|s| name.contains(s.as_str())) {
                report.skipped += 1;
                continue;
            }
            match tensors.get(name) {
                Some(t) if t.dims() == var.dims() => {
                    var.set(&t.to_dtype(var.dtype())?)?;
                    report.loaded += 1;
                }
                Some(_) => report.shape_mismatch.push(name.clone()),
                None => report.missing += 1,
            }
        }
        report.unused = tensors.keys().filter(|k| !vars.contains_key(*k)).count();
        report.shape_mismatch.sort();
        Ok(report)
    }

    /// Add (or overwrite) variable `name` with a copy of `value`.
    pub fn insert(&self, name: &str, value: &Tensor) -> candle_core::Result<()> {
        let data = self.map.data();
        let mut vars = data.lock().map_err(|_| candle_core::Error::Msg("param store poisoned".into()))?;
        vars.insert(name.to_string(), Var::from_tensor(&value.detach().copy()?)?);
        Ok(())
    }

    /// Insert copies of every variable of `self` into `other`, each name
    /// prefixed with `prefix` (`""` keeps the names).
    pub fn copy_into(&self, other: &ParamStore, prefix: &str) -> candle_core::Result<()> {
        for (name, var) in self.named_vars() {
            other.insert(&format!("{prefix}{name}"), var.as_tensor())?;
        }
        Ok(())
    }

    /// An independent copy (new variables, same values) seeding variables
    /// created later from `seed`.
    pub fn duplicate(&self, seed: u64) -> candle_core::Result<ParamStore> {
        let copy = ParamStore::new(seed, &self.device);
        self.copy_into(&copy, "")?;
        Ok(copy)
    }

    /// Variables whose names start with `prefix` (e.g. `"decoder."`).
    pub fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, Var)> {
        self.named_vars().into_iter().filter(|(n, _)| n.starts_with(prefix)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_start_loads_what_matches_by_name_and_shape() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("from.safetensors");
        let from = ParamStore::new(1, &Device::Cpu);
        from.insert("a", &Tensor::full(2f32, (2, 3), &Device::Cpu)?)?;
        from.insert("b", &Tensor::full(3f32, 4, &Device::Cpu)?)?;
        from.insert("extra", &Tensor::zeros(1, DType::F32, &Device::Cpu)?)?;
        from.save(&file)?;
        let to = ParamStore::new(2, &Device::Cpu);
        to.insert("a", &Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?)?;
        to.insert("b", &Tensor::zeros(5, DType::F32, &Device::Cpu)?)?;
        to.insert("c", &Tensor::zeros(1, DType::F32, &Device::Cpu)?)?;
        let warm = to.load_matching(&file, &[])?;
        assert_eq!(warm, WarmStart { loaded: 1, shape_mismatch: vec!["b".into()], missing: 1, unused: 1, skipped: 0 });
        let vars: std::collections::HashMap<_, _> = to.named_vars().into_iter().collect();
        assert_eq!(vars["a"].as_tensor().sum_all()?.to_scalar::<f32>()?, 12.0);
        assert_eq!(vars["b"].as_tensor().sum_all()?.to_scalar::<f32>()?, 0.0);
        // A skipped variable keeps its init even where the file has it.
        let again = ParamStore::new(2, &Device::Cpu);
        again.insert("a", &Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?)?;
        let warm = again.load_matching(&file, &["a".to_string()])?;
        assert_eq!((warm.loaded, warm.skipped), (0, 1));
        let vars: std::collections::HashMap<_, _> = again.named_vars().into_iter().collect();
        assert_eq!(vars["a"].as_tensor().sum_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    /// The audio attention's output projections start at zero; their
    /// input projections and everything else do not.
    #[test]
    fn audio_attention_output_projections_start_at_zero() -> anyhow::Result<()> {
        let store = ParamStore::new(3, &Device::Cpu);
        let vb = store.var_builder();
        let sum = |name: &str| -> anyhow::Result<f32> { Ok(vb.get((4, 4), name)?.abs()?.sum_all()?.to_scalar()?) };
        assert_eq!(sum("blocks.0.talk_audio_attn.to_out.0.weight")?, 0.0);
        assert_eq!(sum("blocks.1.listen_audio_attn.to_out.0.weight")?, 0.0);
        assert!(sum("blocks.0.talk_audio_attn.to_v.weight")? > 0.0);
        assert!(sum("blocks.0.attn2.to_out.0.weight")? > 0.0);
        Ok(())
    }

    #[test]
    fn store_returns_same_var_and_roundtrips() -> anyhow::Result<()> {
        let store = ParamStore::new(3, &Device::Cpu);
        let vb = store.var_builder();
        let a = vb.get((4, 3), "lin.weight")?;
        let b = vb.get((4, 3), "lin.weight")?;
        assert!(a.track_op());
        assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
        assert!(a.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "weights are not zero-initialised");
        assert!(vb.get((5, 3), "lin.weight").is_err());
        assert!(!store.frozen_var_builder().get((4, 3), "lin.weight")?.track_op());
        assert!(vb.contains_tensor("blocks.0.talk_audio_attn.to_q.weight"));
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("p.safetensors");
        store.save(&p)?;
        let other = ParamStore::new(99, &Device::Cpu);
        other.load(&p)?;
        let c = other.var_builder().get((4, 3), "lin.weight")?;
        assert_eq!(a.to_vec2::<f32>()?, c.to_vec2::<f32>()?);
        Ok(())
    }

    /// A packed (f16) checkpoint loads into f32 variables, whether they
    /// exist already or are created by the load.
    #[test]
    fn a_half_precision_checkpoint_loads_as_f32() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("packed.safetensors");
        let t = Tensor::full(1.5f32, (2, 2), &Device::Cpu)?.to_dtype(DType::F16)?;
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("a".to_string(), t.clone()), ("b".to_string(), t)]),
            &file,
        )?;
        let store = ParamStore::new(0, &Device::Cpu);
        store.insert("a", &Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?)?;
        store.load(&file)?;
        for (name, var) in store.named_vars() {
            assert_eq!(var.dtype(), DType::F32, "{name}");
            assert_eq!(var.as_tensor().sum_all()?.to_scalar::<f32>()?, 6.0, "{name}");
        }
        Ok(())
    }
}
