//! Prepared DiT training samples (VAE latents + masked wav2vec2 features of
//! a clip) for the stages that train a DiT: teacher, ODE init, DMD, GAN.
//!
//! Preparing a clip runs the frozen VAE encoder and wav2vec2: on the 2-core
//! box that is ~70 % of a mini teacher step (0.6 s of ~0.9 s, 2026-11-26),
//! while the DiT forward + backward is ~0.3 s. A stage therefore trains on a
//! finite **clip pool** (`--clip-pool K`: data cursor `i` uses clip `i mod K`)
//! whose prepared samples are kept in memory and, with `--sample-cache DIR`,
//! on disk (one safetensors file per clip), so every clip is encoded once
//! per pool, not once per step, and a resumed run does not encode again.
//!
//! A cache folder is bound to what made it: `key.json` records the config,
//! a fingerprint of the frozen VAE and wav2vec2 files (or their seeds) and
//! the clip source. Opening it with anything else is an error, never a
//! silent mix of latents from two VAEs.
//!
//! Without a pool (the default) the cursor indexes an endless clip stream
//! and only the last few dozen samples are kept.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::{ClipSource, WindowChoice};
use super::teacher_stage::TeacherSample;
use super::TrainError;

/// Samples kept in memory when there is no pool (an endless stream).
const STREAM_MEMORY: usize = 64;

/// Bump when the file layout or the meaning of a sample changes.
const FORMAT: u32 = 1;

/// Where a frozen module's weights came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrozenSource {
    /// A weight file: its size and FNV-1a 64 hash of its bytes.
    File { bytes: u64, fnv1a64: String },
    /// Some tensors of a weight file: FNV-1a 64 over their names, shapes
    /// and values (as f32), in name order.
    Tensors { count: usize, fnv1a64: String },
    /// Seeded random weights.
    Seeded { seed: u64 },
}

/// The tensors of a VAE file that make its latents: the encoder,
/// `quant_conv` and the latent statistics (not the decoder).
pub fn is_vae_encoding_tensor(name: &str) -> bool {
    name.starts_with("encoder.") || name.starts_with("quant_conv.") || name == "latents_mean" || name == "latents_std"
}

fn fnv1a64(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl FrozenSource {
    /// Fingerprint `file`, or the seed when there is no file.
    pub fn of(file: Option<&Path>, seed: u64) -> Result<Self, TrainError> {
        let Some(path) = file else { return Ok(Self::Seeded { seed }) };
        let io = |e: std::io::Error| TrainError::Checkpoint { path: path.to_path_buf(), msg: e.to_string() };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            hash = fnv1a64(hash, &buf[..n]);
        }
        Ok(Self::File { bytes, fnv1a64: format!("{hash:016x}") })
    }

    /// Fingerprint the tensors of `file` that `keep` names (e.g.
    /// [`is_vae_encoding_tensor`]: a VAE whose decoder alone was trained on
    /// keeps its fingerprint), or the seed when there is no file. The
    /// values are hashed as f32, so an f16 copy of f32 weights that holds
    /// the same values (a packed checkpoint, resumed) keeps it too.
    pub fn of_tensors(file: Option<&Path>, seed: u64, keep: impl Fn(&str) -> bool) -> Result<Self, TrainError> {
        let Some(path) = file else { return Ok(Self::Seeded { seed }) };
        let err = |msg: String| TrainError::Checkpoint { path: path.to_path_buf(), msg };
        let tensors =
            candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| err(e.to_string()))?;
        let mut names: Vec<&String> = tensors.keys().filter(|n| keep(n)).collect();
        names.sort();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for name in &names {
            let t = &tensors[*name];
            let values: Vec<f32> = t
                .to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(|e| err(format!("`{name}`: {e}")))?;
            hash = fnv1a64(hash, name.as_bytes());
            hash = fnv1a64(hash, format!("{:?}", t.dims()).as_bytes());
            for v in values {
                hash = fnv1a64(hash, &v.to_le_bytes());
            }
        }
        Ok(Self::Tensors { count: names.len(), fnv1a64: format!("{hash:016x}") })
    }
}

/// What a cache folder's samples were made from (`key.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleKey {
    pub format: u32,
    pub config: String,
    pub vae: FrozenSource,
    pub wav2vec2: FrozenSource,
    pub clip_seed: u64,
    pub size: usize,
    pub latent_frames: usize,
    pub identities: u64,
    /// [`ClipSource::max_offset_s`] in milliseconds (absent in the keys of
    /// stores made before clip windows: they started every clip at 0).
    #[serde(default)]
    pub max_offset_ms: u64,
    /// [`ClipSource::windows`] is [`WindowChoice::Motion`].
    #[serde(default)]
    pub motion_windows: bool,
    /// [`ClipSource::windows`] is [`WindowChoice::Listening`] (absent in
    /// the keys of stores made before listening windows).
    #[serde(default)]
    pub listening_windows: bool,
    pub pool: u64,
}

impl SampleKey {
    pub fn new(config: &str, vae: FrozenSource, wav2vec2: FrozenSource, data: &ClipSource, pool: u64) -> Self {
        Self {
            format: FORMAT,
            config: config.to_string(),
            vae,
            wav2vec2,
            clip_seed: data.seed,
            size: data.size,
            latent_frames: data.latent_frames,
            identities: data.identities,
            max_offset_ms: (data.max_offset_s.max(0.0) * 1000.0).round() as u64,
            motion_windows: data.windows == WindowChoice::Motion,
            listening_windows: data.windows == WindowChoice::Listening,
            pool,
        }
    }
}

/// The prepared samples of a stage's clips.
pub struct SampleStore {
    pool: Option<u64>,
    dir: Option<PathBuf>,
    memory: HashMap<u64, Rc<TeacherSample>>,
}

impl SampleStore {
    /// An endless clip stream: slot = cursor, a small memory, no disk.
    pub fn stream() -> Self {
        Self { pool: None, dir: None, memory: HashMap::new() }
    }

    /// A pool of `key.pool` clips kept in memory, and in `dir` when given
    /// (created with `key.json`, or checked against it).
    pub fn pooled(key: SampleKey, dir: Option<PathBuf>) -> Result<Self, TrainError> {
        if key.pool == 0 {
            return Err(TrainError::Invalid("--clip-pool must be at least 1".into()));
        }
        if let Some(dir) = &dir {
            open_cache_dir(dir, &key)?;
        }
        Ok(Self { pool: Some(key.pool), dir, memory: HashMap::new() })
    }

    /// The clip index data cursor `cursor` trains on.
    pub fn slot(&self, cursor: u64) -> u64 {
        self.pool.map_or(cursor, |k| cursor % k)
    }

    /// Prepared samples in memory (the pool fills up to its size).
    pub fn in_memory(&self) -> usize {
        self.memory.len()
    }

    /// The prepared sample of clip `slot`, from memory or the cache folder.
    pub fn get(&mut self, slot: u64, dev: &Device) -> Result<Option<Rc<TeacherSample>>, TrainError> {
        if let Some(s) = self.memory.get(&slot) {
            return Ok(Some(s.clone()));
        }
        let Some(path) = self.dir.as_ref().map(|d| sample_path(d, slot)) else { return Ok(None) };
        if !path.exists() {
            return Ok(None);
        }
        let bad = |msg: String| TrainError::Checkpoint { path: path.clone(), msg };
        let mut t = candle_core::safetensors::load(&path, dev).map_err(|e| bad(e.to_string()))?;
        let mut take = |name: &str| t.remove(name).ok_or_else(|| bad(format!("no tensor `{name}`")));
        let sample = Rc::new(TeacherSample {
            x0: take("x0")?,
            talk_features: take("talk_features")?,
            listen_features: take("listen_features")?,
        });
        self.remember(slot, sample.clone());
        Ok(Some(sample))
    }

    /// Keep a freshly prepared sample (and write it to the cache folder).
    pub fn put(&mut self, slot: u64, sample: Rc<TeacherSample>) -> Result<(), TrainError> {
        if let Some(dir) = &self.dir {
            let path = sample_path(dir, slot);
            let tmp = path.with_extension("tmp");
            let tensors: HashMap<String, Tensor> = [
                ("x0".to_string(), sample.x0.clone()),
                ("talk_features".to_string(), sample.talk_features.clone()),
                ("listen_features".to_string(), sample.listen_features.clone()),
            ]
            .into();
            candle_core::safetensors::save(&tensors, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &path).map_err(candle_core::Error::wrap))
                .map_err(|e| TrainError::Checkpoint { path: path.clone(), msg: e.to_string() })?;
        }
        self.remember(slot, sample);
        Ok(())
    }

    fn remember(&mut self, slot: u64, sample: Rc<TeacherSample>) {
        if self.pool.is_none() && self.memory.len() >= STREAM_MEMORY {
            self.memory.clear();
        }
        self.memory.insert(slot, sample);
    }
}

fn sample_path(dir: &Path, slot: u64) -> PathBuf {
    dir.join(format!("clip_{slot:07}.safetensors"))
}

/// Create `dir` with `key.json`, or check that its `key.json` is `key`.
fn open_cache_dir(dir: &Path, key: &SampleKey) -> Result<(), TrainError> {
    let io = |e: std::io::Error| TrainError::Checkpoint { path: dir.to_path_buf(), msg: e.to_string() };
    let key_path = dir.join("key.json");
    if key_path.exists() {
        let text = std::fs::read_to_string(&key_path).map_err(io)?;
        let found: SampleKey = serde_json::from_str(&text)
            .map_err(|e| TrainError::Checkpoint { path: key_path.clone(), msg: e.to_string() })?;
        if &found != key {
            return Err(TrainError::Invalid(format!(
                "sample cache {} was made from other inputs (its key.json: {}; this run: {}): \
                 delete the folder or pass another --sample-cache",
                dir.display(),
                serde_json::to_string(&found).unwrap_or_default(),
                serde_json::to_string(key).unwrap_or_default(),
            )));
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let json = serde_json::to_string_pretty(key).map_err(|e| TrainError::Invalid(e.to_string()))?;
    std::fs::write(&key_path, json).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn sample(v: f32) -> Rc<TeacherSample> {
        let t = |shape: &[usize]| Tensor::full(v, shape, &Device::Cpu).unwrap();
        Rc::new(TeacherSample {
            x0: t(&[1, 2, 2, 2, 2]),
            talk_features: t(&[1, 5, 3, 4]),
            listen_features: t(&[1, 5, 3, 4]),
        })
    }

    fn key(pool: u64, vae_seed: u64) -> SampleKey {
        let data = ClipSource {
            seed: 1,
            size: 32,
            latent_frames: 1,
            identities: 4,
            max_offset_s: 2.0,
            windows: WindowChoice::Random,
        };
        SampleKey::new("tiny", FrozenSource::Seeded { seed: vae_seed }, FrozenSource::Seeded { seed: 9 }, &data, pool)
    }

    #[test]
    fn pool_wraps_the_cursor_and_a_stream_does_not() -> anyhow::Result<()> {
        let pooled = SampleStore::pooled(key(3, 0), None)?;
        assert_eq!((0..7).map(|c| pooled.slot(c)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(SampleStore::stream().slot(7), 7);
        assert!(SampleStore::pooled(key(0, 0), None).is_err());
        Ok(())
    }

    #[test]
    fn samples_come_back_from_disk_and_a_foreign_cache_is_refused() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("sa-sample-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = SampleStore::pooled(key(4, 0), Some(dir.clone()))?;
        assert!(store.get(2, &Device::Cpu)?.is_none());
        store.put(2, sample(0.5))?;

        // A new process (fresh memory) reads it back from the folder.
        let mut reopened = SampleStore::pooled(key(4, 0), Some(dir.clone()))?;
        assert_eq!(reopened.in_memory(), 0);
        let back = reopened.get(2, &Device::Cpu)?.expect("cached on disk");
        assert_eq!(back.x0.dims(), &[1, 2, 2, 2, 2]);
        assert_eq!(back.listen_features.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?, 0.5);
        assert!(reopened.get(3, &Device::Cpu)?.is_none());

        // Another VAE or another pool size: a clear error, not mixed latents.
        let err = SampleStore::pooled(key(4, 1), Some(dir.clone())).err().expect("other VAE refused");
        assert!(err.to_string().contains("other inputs"), "{err}");
        assert!(SampleStore::pooled(key(5, 0), Some(dir.clone())).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn file_fingerprint_follows_the_bytes() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("sa-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"weights one")?;
        std::fs::write(&b, b"weights two")?;
        let fa = FrozenSource::of(Some(&a), 0)?;
        assert_eq!(fa, FrozenSource::of(Some(&a), 7)?);
        assert_ne!(fa, FrozenSource::of(Some(&b), 0)?);
        assert_eq!(FrozenSource::of(None, 7)?, FrozenSource::Seeded { seed: 7 });
        // FNV-1a 64 of the empty input is the offset basis.
        std::fs::write(&a, b"")?;
        assert_eq!(FrozenSource::of(Some(&a), 0)?, FrozenSource::File { bytes: 0, fnv1a64: "cbf29ce484222325".into() });
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn encoding_fingerprint_ignores_the_decoder_and_the_storage_dtype() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("sa-tensor-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let dev = Device::Cpu;
        let vae = |encoder: f32, decoder: f32, dtype: DType| -> anyhow::Result<HashMap<String, Tensor>> {
            let t = |v: f32| Tensor::new(&[v, 0.5, -1.25], &dev).and_then(|t| t.to_dtype(dtype));
            Ok(HashMap::from([
                ("encoder.conv1.weight".to_string(), t(encoder)?),
                ("quant_conv.bias".to_string(), t(0.25)?),
                ("latents_mean".to_string(), Tensor::new(&[0.1f32, 0.2, 0.3], &dev)?),
                ("decoder.conv1.weight".to_string(), t(decoder)?),
            ]))
        };
        let fingerprint = |name: &str, tensors: HashMap<String, Tensor>| -> anyhow::Result<FrozenSource> {
            let path = dir.join(name);
            candle_core::safetensors::save(&tensors, &path)?;
            Ok(FrozenSource::of_tensors(Some(&path), 0, is_vae_encoding_tensor)?)
        };
        let base = fingerprint("base", vae(1.0, 2.0, DType::F32)?)?;
        assert!(matches!(base, FrozenSource::Tensors { count: 3, .. }), "{base:?}");
        assert_eq!(base, fingerprint("decoder", vae(1.0, 3.0, DType::F32)?)?, "a decoder change moved it");
        assert_eq!(base, fingerprint("f16", vae(1.0, 2.0, DType::F16)?)?, "an f16 copy of the same values moved it");
        assert_ne!(base, fingerprint("encoder", vae(1.5, 2.0, DType::F32)?)?, "an encoder change did not move it");
        assert_eq!(FrozenSource::of_tensors(None, 3, is_vae_encoding_tensor)?, FrozenSource::Seeded { seed: 3 });
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
