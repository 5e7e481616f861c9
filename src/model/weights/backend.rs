//! `CheckpointBackend`: a candle `SimpleBackend` over one or more mapped
//! safetensors files that answers the canonical (model-side) names whatever
//! scheme each file uses, checks shapes and casts dtypes on load.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::names::{self, FileKind, NameScheme};
use super::safetensors_file::MappedSafetensors;
use super::WeightsError;

/// One opened weights file with its detected kind and naming scheme.
#[derive(Debug)]
pub struct CheckpointFile {
    pub file: MappedSafetensors,
    pub kind: FileKind,
    pub scheme: NameScheme,
    /// canonical name -> stored name.
    pub canonical: HashMap<String, String>,
}

impl CheckpointFile {
    /// Open `path`, detect what it holds and how it names tensors.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, WeightsError> {
        let file = MappedSafetensors::open(path)?;
        let (kind, scheme) = names::classify(file.tensors().keys().map(|s| s.as_str())).ok_or_else(|| {
            let mut sample: Vec<&str> = file.tensors().keys().map(|s| s.as_str()).collect();
            sample.sort_unstable();
            sample.truncate(5);
            WeightsError::UnknownFile { path: file.display_path(), sample: sample.join(", ") }
        })?;
        let mut canonical = HashMap::with_capacity(file.tensors().len());
        for stored in file.tensors().keys() {
            let name = names::to_canonical(kind, scheme, stored);
            for alias in names::aliases(&name) {
                canonical.entry(alias).or_insert_with(|| stored.clone());
            }
            canonical.insert(name, stored.clone());
        }
        Ok(Self { file, kind, scheme, canonical })
    }

    pub fn display_path(&self) -> String {
        self.file.display_path()
    }
}

/// Serves canonical names from a set of files (one model component).
pub struct CheckpointBackend {
    files: Vec<Arc<CheckpointFile>>,
    /// What the component is, for "missing" messages.
    component: String,
}

impl CheckpointBackend {
    pub fn new(files: Vec<Arc<CheckpointFile>>, component: impl Into<String>) -> Self {
        Self { files, component: component.into() }
    }

    fn find(&self, name: &str) -> Option<(&CheckpointFile, &str)> {
        self.files.iter().find_map(|f| f.canonical.get(name).map(|stored| (f.as_ref(), stored.as_str())))
    }

    fn missing(&self, name: &str) -> WeightsError {
        let looked_in = if self.files.is_empty() {
            format!("no {} weights file was given", self.component)
        } else {
            self.files.iter().map(|f| f.display_path()).collect::<Vec<_>>().join(", ")
        };
        WeightsError::MissingTensor { name: name.to_string(), looked_in }
    }

    /// Load `name` with its stored shape (no shape check).
    pub fn load_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor, WeightsError> {
        let (file, stored) = self.find(name).ok_or_else(|| self.missing(name))?;
        file.file.load(stored, dtype, dev)
    }

    /// Load `name`, failing with a clear error when the shape differs.
    pub fn load(&self, name: &str, shape: &Shape, dtype: DType, dev: &Device) -> Result<Tensor, WeightsError> {
        let (file, stored) = self.find(name).ok_or_else(|| self.missing(name))?;
        if let Some(info) = file.file.info(stored) {
            if info.shape.as_slice() != shape.dims() {
                return Err(WeightsError::ShapeMismatch {
                    path: file.display_path(),
                    name: name.to_string(),
                    stored: stored.to_string(),
                    got: info.shape.clone(),
                    expected: shape.dims().to_vec(),
                });
            }
        }
        file.file.load(stored, dtype, dev)
    }
}

impl SimpleBackend for CheckpointBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.load(name, &s, dtype, dev).map_err(candle_core::Error::wrap)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load_unchecked(name, dtype, dev).map_err(candle_core::Error::wrap)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}
