//! Export of trained stage checkpoints as the inference weight files of a
//! config (`streamavatar train export`): the bundled `weights/mini/`.
//!
//! The tensor list comes from [`expected_tensors`] (the inference
//! constructors on a recording backend), so an export holds exactly what
//! `streamavatar serve` asks for, split by file kind as `ModelWeights`
//! classifies them:
//! * `dit.safetensors` — the Wan DiT (student) tensors;
//! * `streamavatar_audio.safetensors` — talk / listen audio attention,
//!   `audio_proj.*`, `prompt_embeds`;
//! * `vae.safetensors` — the stage-1 VAE (encoder for the reference image,
//!   decoder for the stream);
//! * `wav2vec2.safetensors` — the frozen audio encoder the DiT was trained
//!   with: the given file, or the seeded random one of training (same seed).
//!
//! Tensors are stored in f16 (half the size; inference casts to its dtype
//! on load). A missing or mis-shaped tensor is an error naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use crate::config::ModelConfig;
use crate::model::audio::{InputNormalization, Wav2Vec2Model};
use crate::model::weights::{expected_tensors, FileKind, SeededInitBackend};

use super::TrainError;

/// Where each part of the model comes from.
#[derive(Debug, Clone)]
pub struct ExportSources {
    /// Stage-1 `params.safetensors`.
    pub vae: PathBuf,
    /// The final student's `params.safetensors` (DiT + `audio_proj` + `prompt_embeds`).
    pub dit: PathBuf,
    /// A wav2vec2 file, or `None` for the seeded random encoder of training.
    pub wav2vec2: Option<PathBuf>,
    /// Seed of the seeded random wav2vec2 (see [`frozen_wav2vec2_seed`]).
    pub wav2vec2_seed: u64,
}

/// The seed the frozen random wav2vec2 of stages 2+ is drawn with, for a
/// stage seed (shared by training and export so they agree).
pub fn frozen_wav2vec2_seed(stage_seed: u64) -> u64 {
    stage_seed ^ 2
}

/// What one export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub files: Vec<(PathBuf, usize)>,
    pub tensors: usize,
    pub bytes: u64,
}

/// Wraps a backend and keeps every tensor it hands out, by name: builds the
/// seeded random wav2vec2 exactly as training did (same constructor, same
/// init hints) and captures its values.
struct CapturingBackend {
    inner: SeededInitBackend,
    seen: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl SimpleBackend for CapturingBackend {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.inner.get(s, name, h, dtype, dev)?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(name.to_string(), t.clone());
        }
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// The seeded random wav2vec2 of training (`FrozenModules::load` without a file).
fn seeded_wav2vec2(cfg: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>, TrainError> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let backend = CapturingBackend { inner: SeededInitBackend::new(seed), seen: seen.clone() };
    let vb = candle_nn::VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    Wav2Vec2Model::new(&cfg.audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, vb)?;
    let captured = match seen.lock() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    Ok(captured)
}

fn load_all(path: &Path) -> Result<HashMap<String, Tensor>, TrainError> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), msg: e.to_string() })
}

fn take(
    source: &HashMap<String, Tensor>,
    from: &Path,
    name: &str,
    shape: &[usize],
    dtype: DType,
) -> Result<Tensor, TrainError> {
    let t = source.get(name).ok_or_else(|| TrainError::Checkpoint {
        path: from.to_path_buf(),
        msg: format!("tensor `{name}` is missing"),
    })?;
    // Training keeps `prompt_embeds` as `[1, L, D]`; the file holds `[L, D]`.
    let t = if t.dims() != shape && t.elem_count() == shape.iter().product::<usize>() {
        t.reshape(shape)?
    } else {
        t.clone()
    };
    if t.dims() != shape {
        return Err(TrainError::Checkpoint {
            path: from.to_path_buf(),
            msg: format!("tensor `{name}` has shape {:?}, the config expects {shape:?}", t.dims()),
        });
    }
    Ok(t.to_dtype(dtype)?)
}

/// Write the inference files of `cfg` into `out` from `src`.
pub fn export(cfg: &ModelConfig, src: &ExportSources, out: &Path) -> Result<ExportReport, TrainError> {
    let expected = expected_tensors(cfg).map_err(TrainError::Invalid)?;
    let vae = load_all(&src.vae)?;
    let dit = load_all(&src.dit)?;
    let (w2v, w2v_from) = match &src.wav2vec2 {
        Some(p) => (load_all(p)?, p.clone()),
        None => (
            seeded_wav2vec2(cfg, src.wav2vec2_seed)?,
            PathBuf::from(format!("<seeded wav2vec2 {}>", src.wav2vec2_seed)),
        ),
    };
    std::fs::create_dir_all(out).map_err(|e| TrainError::Checkpoint { path: out.to_path_buf(), msg: e.to_string() })?;

    let mut report = ExportReport { files: Vec::new(), tensors: 0, bytes: 0 };
    for (kind, tensors) in &expected.by_kind {
        let (file_name, source, from) = match kind {
            FileKind::Transformer => ("dit.safetensors", &dit, &src.dit),
            FileKind::StreamAvatarAudio => ("streamavatar_audio.safetensors", &dit, &src.dit),
            FileKind::Vae => ("vae.safetensors", &vae, &src.vae),
            FileKind::Wav2Vec2 => ("wav2vec2.safetensors", &w2v, &w2v_from),
            // The light decoder is its own stage's checkpoint
            // (`train light_decoder`), already a weights file: not exported here.
            FileKind::LightDecoder => continue,
        };
        let mut written = HashMap::with_capacity(tensors.len());
        for (name, shape) in tensors {
            written.insert(name.clone(), take(source, from, name, shape, DType::F16)?);
        }
        // Optional tensors travel when the source has them, in f32 (the VAE's
        // latent statistics: the normalisation the later stages trained with).
        for (name, shape) in expected.optional.get(kind).into_iter().flatten() {
            if source.contains_key(name) {
                let t = take(source, from, name, shape, DType::F32)?;
                written.insert(name.clone(), t);
            }
        }
        let path = out.join(file_name);
        candle_core::safetensors::save(&written, &path)
            .map_err(|e| TrainError::Checkpoint { path: path.clone(), msg: e.to_string() })?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        report.tensors += written.len();
        report.bytes += bytes;
        report.files.push((path, written.len()));
    }
    Ok(report)
}
