//! Checkpoints of one training stage, in `<out>/`:
//! * `params.safetensors` — every trainable variable (model names);
//! * `optim.safetensors` — AdamW moments (`m.<name>`, `v.<name>`);
//! * `state.json` — [`TrainState`]: step, optimizer config, data cursor,
//!   base seed and recent losses.
//!
//! Files are written to `*.tmp` and renamed, so an interrupted save leaves
//! the previous checkpoint intact.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::optim::{AdamW, AdamWConfig};
use super::params::ParamStore;
use super::TrainError;

/// Scalar state of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub stage: String,
    pub config: String,
    pub step: u64,
    pub seed: u64,
    /// Next clip index the data loader will draw (the data "rng" state:
    /// clips are a pure function of (seed, index)).
    pub data_cursor: u64,
    pub optim: AdamWConfig,
    /// (step, loss) of the last logged steps.
    pub losses: Vec<(u64, f32)>,
}

fn ck_err(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), msg: msg.to_string() }
}

fn tmp(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

/// Whether `dir` holds a checkpoint to resume (parameters + state; the
/// optimizer moments are optional, see [`restore`]).
pub fn exists(dir: &Path) -> bool {
    ["params.safetensors", "state.json"].iter().all(|f| dir.join(f).is_file())
}

/// Write a checkpoint of `params`, `opt` and `state` into `dir`.
pub fn save(dir: &Path, params: &ParamStore, opt: &AdamW, state: &TrainState) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| ck_err(dir, e))?;
    let p = dir.join("params.safetensors");
    params.save(&tmp(&p)).map_err(|e| ck_err(&p, e))?;
    let o = dir.join("optim.safetensors");
    candle_core::safetensors::save(&opt.state_tensors(), tmp(&o)).map_err(|e| ck_err(&o, e))?;
    let s = dir.join("state.json");
    let json = serde_json::to_string_pretty(state).map_err(|e| ck_err(&s, e))?;
    std::fs::write(tmp(&s), json).map_err(|e| ck_err(&s, e))?;
    for f in [&p, &o, &s] {
        std::fs::rename(tmp(f), f).map_err(|e| ck_err(f, e))?;
    }
    Ok(())
}

/// Read `state.json` of `dir`.
pub fn load_state(dir: &Path) -> Result<TrainState, TrainError> {
    let s = dir.join("state.json");
    let text = std::fs::read_to_string(&s).map_err(|e| ck_err(&s, e))?;
    serde_json::from_str(&text).map_err(|e| ck_err(&s, e))
}

/// Load params and optimizer moments of `dir` (the params must already
/// exist in `params`, i.e. the modules were built once).
pub fn restore(dir: &Path, params: &ParamStore, opt: &mut AdamW, state: &TrainState) -> Result<(), TrainError> {
    let p = dir.join("params.safetensors");
    params.load(&p).map_err(|e| ck_err(&p, e))?;
    let o = dir.join("optim.safetensors");
    if !o.exists() {
        // Committed checkpoints (train/checkpoints/) keep only the parameters
        // to stay small: the run continues with fresh AdamW moments.
        tracing::warn!(path = %o.display(), "no optimizer state: resuming with fresh AdamW moments");
        return Ok(());
    }
    let moments = candle_core::safetensors::load(&o, &candle_core::Device::Cpu).map_err(|e| ck_err(&o, e))?;
    opt.load_state(&moments, state.step).map_err(|e| ck_err(&o, e))?;
    Ok(())
}
