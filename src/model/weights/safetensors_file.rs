//! One memory-mapped safetensors file: header parsed once, tensors read
//! straight out of the mapping (no copy of the file in RAM) and cast to the
//! requested dtype on the requested device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use super::WeightsError;

/// Shape, dtype and byte range of one stored tensor.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    /// Byte range inside the data section (after the header).
    data_offsets: (usize, usize),
}

/// A safetensors file mapped read-only into memory.
pub struct MappedSafetensors {
    path: PathBuf,
    mmap: memmap2::Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    tensors: HashMap<String, StoredTensor>,
}

impl std::fmt::Debug for MappedSafetensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedSafetensors({}, {} tensors)", self.path.display(), self.tensors.len())
    }
}

/// Map a safetensors dtype to the candle dtype used to read it, if any.
pub fn candle_dtype(dtype: StDtype) -> Option<DType> {
    match dtype {
        StDtype::F32 => Some(DType::F32),
        StDtype::F16 => Some(DType::F16),
        StDtype::BF16 => Some(DType::BF16),
        StDtype::F64 => Some(DType::F64),
        _ => None,
    }
}

impl MappedSafetensors {
    /// Map `path` and parse (and validate) its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let file = std::fs::File::open(&path).map_err(|source| WeightsError::Open { path: shown.clone(), source })?;
        // SAFETY: the mapping is read-only; the usual mmap caveat applies (the
        // file must not be truncated by another process while we run).
        let mmap = unsafe { memmap2::MmapOptions::new().map(&file) }
            .map_err(|source| WeightsError::Open { path: shown.clone(), source })?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| WeightsError::BadHeader { path: shown.clone(), reason: describe_header_error(&e) })?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                (name, StoredTensor { dtype: info.dtype, shape: info.shape.clone(), data_offsets: info.data_offsets })
            })
            .collect();
        Ok(Self { path, mmap, data_start: 8 + header_len, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn display_path(&self) -> String {
        self.path.display().to_string()
    }

    /// Stored tensor names and their shape/dtype.
    pub fn tensors(&self) -> &HashMap<String, StoredTensor> {
        &self.tensors
    }

    pub fn info(&self, stored_name: &str) -> Option<&StoredTensor> {
        self.tensors.get(stored_name)
    }

    /// Read `stored_name` onto `device`, cast to `dtype`.
    pub fn load(&self, stored_name: &str, dtype: DType, device: &Device) -> Result<Tensor, WeightsError> {
        let info = self.tensors.get(stored_name).ok_or_else(|| WeightsError::MissingTensor {
            name: stored_name.to_string(),
            looked_in: self.display_path(),
        })?;
        let src_dtype = candle_dtype(info.dtype).ok_or_else(|| WeightsError::UnsupportedDtype {
            path: self.display_path(),
            name: stored_name.to_string(),
            dtype: format!("{:?}", info.dtype),
        })?;
        let (start, end) = info.data_offsets;
        // Offsets were validated against the file length by read_metadata.
        let bytes =
            self.mmap.get(self.data_start + start..self.data_start + end).ok_or_else(|| WeightsError::BadHeader {
                path: self.display_path(),
                reason: format!("tensor `{stored_name}` points outside the file"),
            })?;
        let candle = |source: candle_core::Error| WeightsError::Candle {
            context: format!("{}: tensor `{stored_name}`", self.display_path()),
            source,
        };
        let t = Tensor::from_raw_buffer(bytes, src_dtype, &info.shape, &Device::Cpu).map_err(candle)?;
        let t = if src_dtype == dtype { t } else { t.to_dtype(dtype).map_err(candle)? };
        t.to_device(device).map_err(candle)
    }
}

fn describe_header_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "file is shorter than the 8-byte header length".into(),
        E::HeaderTooLarge => "header length field is absurdly large (corrupt or not safetensors)".into(),
        E::InvalidHeaderLength => "header length field points past the end of the file (truncated or corrupt)".into(),
        E::InvalidHeader(_) => "header is not UTF-8".into(),
        E::InvalidHeaderStart => "header does not start with `{`".into(),
        E::InvalidHeaderDeserialization(err) => format!("header is not valid JSON: {err}"),
        E::MetadataIncompleteBuffer => "tensor data does not match the file length (truncated download?)".into(),
        E::InvalidOffset(name) => format!("tensor `{name}` has invalid data offsets"),
        E::TensorInvalidInfo => "a tensor's shape/dtype does not match its byte range".into(),
        E::ValidationOverflow => "a tensor shape overflows".into(),
        other => format!("{other:?}"),
    }
}
