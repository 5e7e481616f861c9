//! Weight loading: memory-mapped safetensors files, automatic detection of
//! what each file holds and how it names tensors (diffusers or original Wan
//! names for the DiT and VAE, transformers names with or without the
//! `wav2vec2.` prefix, our `streamavatar_audio.safetensors`), dtype cast and
//! device placement on load, deterministic random weights for an untrained
//! model, and the expected-tensor check behind `streamavatar weights check`.
//!
//! Each model component gets its own `VarBuilder` namespace because the
//! checkpoints overlap (`encoder.*` is both the VAE encoder and wav2vec2's
//! transformer):
//! * [`ModelWeights::dit_vb`]: the transformer file(s) plus our audio file
//!   (`audio_proj.*`, the per-block talk/listen modules, `prompt_embeds`);
//! * [`ModelWeights::vae_vb`]; * [`ModelWeights::wav2vec2_vb`].

pub mod backend;
pub mod check;
pub mod expected;
pub mod names;
pub mod recording;
pub mod safetensors_file;
pub mod seeded;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use backend::{CheckpointBackend, CheckpointFile};
pub use check::{check_files, CheckReport, ExpectedTensors};
pub use expected::expected_tensors;
pub use names::{FileKind, NameScheme};
pub use recording::{RecordedTensors, RecordingBackend};
pub use seeded::SeededInitBackend;

/// Errors of weight loading; every variant names the file and/or tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("weights file {path}: cannot open: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("weights file {path}: not a valid safetensors file: {reason}")]
    BadHeader { path: String, reason: String },
    #[error("weights file {path}: tensor `{name}` has unsupported dtype {dtype} (supported: F32, F16, BF16, F64)")]
    UnsupportedDtype { path: String, name: String, dtype: String },
    #[error("missing tensor `{name}` (looked in: {looked_in})")]
    MissingTensor { name: String, looked_in: String },
    #[error(
        "weights file {path}: tensor `{name}` (stored as `{stored}`) has shape {got:?}, the model expects {expected:?}"
    )]
    ShapeMismatch { path: String, name: String, stored: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("weights file {path}: cannot tell what model it holds (first tensors: {sample})")]
    UnknownFile { path: String, sample: String },
    #[error("{context}: {source}")]
    Candle { context: String, source: candle_core::Error },
}

/// Tensors stored without a fixed shape (`prompt_embeds` is `[L, text_dim]`
/// with any L <= text_len). Backends without stored data report them absent
/// so loaders request them with an explicit shape.
pub fn is_unshaped(name: &str) -> bool {
    name == "prompt_embeds" || name.ends_with(".prompt_embeds")
}

/// Optional tensors that only trained files carry: the VAE's measured latent
/// statistics ([`crate::model::vae::LATENTS_MEAN`] / `LATENTS_STD`).
/// Backends without stored data report them absent, so the config's values
/// apply to random and recorded models.
pub fn is_measured_stat(name: &str) -> bool {
    use crate::model::vae::{LATENTS_MEAN, LATENTS_STD};
    let leaf = name.rsplit('.').next().unwrap_or(name);
    leaf == LATENTS_MEAN || leaf == LATENTS_STD
}

/// A model component with its own tensor namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Wan DiT + StreamAvatar audio modules + prompt embedding.
    Dit,
    Vae,
    Wav2Vec2,
    /// The light decoder (`--decoder light`).
    LightDecoder,
}

impl Component {
    fn kinds(self) -> &'static [FileKind] {
        match self {
            Component::Dit => &[FileKind::Transformer, FileKind::StreamAvatarAudio],
            Component::Vae => &[FileKind::Vae],
            Component::LightDecoder => &[FileKind::LightDecoder],
            Component::Wav2Vec2 => &[FileKind::Wav2Vec2],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Component::Dit => "DiT / StreamAvatar audio",
            Component::Vae => "VAE",
            Component::Wav2Vec2 => "wav2vec2",
            Component::LightDecoder => "light decoder",
        }
    }
}

/// A set of opened (memory-mapped) checkpoint files.
#[derive(Debug, Clone, Default)]
pub struct ModelWeights {
    files: Vec<Arc<CheckpointFile>>,
}

impl ModelWeights {
    /// Map every file and detect its kind and naming scheme.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self, WeightsError> {
        let files = paths.iter().map(|p| CheckpointFile::open(p).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { files })
    }

    pub fn files(&self) -> &[Arc<CheckpointFile>] {
        &self.files
    }

    /// True when at least one file of `component` was given.
    pub fn has(&self, component: Component) -> bool {
        self.files.iter().any(|f| component.kinds().contains(&f.kind))
    }

    /// A `VarBuilder` serving `component`'s canonical names, loading with
    /// `dtype` onto `device`.
    pub fn var_builder(&self, component: Component, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let files: Vec<_> = self.files.iter().filter(|f| component.kinds().contains(&f.kind)).cloned().collect();
        let backend = CheckpointBackend::new(files, component.describe());
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    pub fn dit_vb(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        self.var_builder(Component::Dit, dtype, device)
    }

    pub fn vae_vb(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        self.var_builder(Component::Vae, dtype, device)
    }

    pub fn wav2vec2_vb(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        self.var_builder(Component::Wav2Vec2, dtype, device)
    }

    /// Compare the files against the tensors a model expects.
    pub fn check(&self, expected: &ExpectedTensors) -> CheckReport {
        check_files(&self.files, expected)
    }
}

/// The fixed prompt's text-encoder output, `[1, text_len, text_dim]`.
///
/// Files store `prompt_embeds` as `[L, text_dim]` (L <= text_len, the umT5
/// output for "a person is speaking and listening."); it is zero-padded to
/// `text_len` as Wan does. A backend without the tensor stored (random
/// weights) is asked for the full `[text_len, text_dim]` shape.
pub fn load_prompt_embeds(vb: &VarBuilder, text_len: usize, text_dim: usize) -> Result<Tensor, WeightsError> {
    let candle = |source| WeightsError::Candle { context: "prompt_embeds".into(), source };
    let t = if vb.contains_tensor("prompt_embeds") {
        let t = vb.get_unchecked_dtype("prompt_embeds", vb.dtype()).map_err(candle)?;
        let dims = t.dims().to_vec();
        if dims.len() != 2 || dims[1] != text_dim || dims[0] == 0 || dims[0] > text_len {
            return Err(WeightsError::ShapeMismatch {
                path: "(DiT/audio weights)".into(),
                name: "prompt_embeds".into(),
                stored: "prompt_embeds".into(),
                got: dims,
                expected: vec![text_len, text_dim],
            });
        }
        if dims[0] < text_len {
            let pad = Tensor::zeros((text_len - dims[0], text_dim), t.dtype(), t.device()).map_err(candle)?;
            Tensor::cat(&[&t, &pad], 0).map_err(candle)?
        } else {
            t
        }
    } else {
        vb.get((text_len, text_dim), "prompt_embeds").map_err(candle)?
    };
    t.unsqueeze(0).map_err(candle)
}
