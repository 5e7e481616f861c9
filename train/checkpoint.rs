//! Checkpoints of one training stage, in `<out>/`:
//! * `params.safetensors` — every trainable variable (model names);
//! * `optim.safetensors` — AdamW moments (`m.<name>`, `v.<name>`);
//! * `state.json` — [`TrainState`]: step, optimizer config, data cursor,
//!   base seed and recent losses;
//! * two-network stages (DMD, GAN) add `critic.safetensors` (the fake score
//!   / discriminator) and `critic_optim.safetensors` (its AdamW moments; its
//!   update count is `critic_updates` in `state.json`).
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
    /// Optimizer steps of the critic (two-network stages; 0 otherwise).
    #[serde(default)]
    pub critic_updates: u64,
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

/// Write a checkpoint of `params`, `opt`, the optional critic (its
/// variables and optimizer) and `state` into `dir`. Every file is written
/// to `*.tmp` first; `state.json` is renamed last.
pub fn save(
    dir: &Path,
    params: &ParamStore,
    opt: &AdamW,
    critic: Option<(&ParamStore, &AdamW)>,
    state: &TrainState,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| ck_err(dir, e))?;
    let mut written = Vec::new();
    let mut nets = vec![(params, opt, "params.safetensors", "optim.safetensors")];
    if let Some((cp, co)) = critic {
        nets.push((cp, co, "critic.safetensors", "critic_optim.safetensors"));
    }
    for (store, optim, pname, oname) in nets {
        let p = dir.join(pname);
        store.save(&tmp(&p)).map_err(|e| ck_err(&p, e))?;
        let o = dir.join(oname);
        candle_core::safetensors::save(&optim.state_tensors(), tmp(&o)).map_err(|e| ck_err(&o, e))?;
        written.extend([p, o]);
    }
    let s = dir.join("state.json");
    let json = serde_json::to_string_pretty(state).map_err(|e| ck_err(&s, e))?;
    std::fs::write(tmp(&s), json).map_err(|e| ck_err(&s, e))?;
    written.push(s);
    for f in &written {
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

/// Load the critic's variables and optimizer moments of `dir` (written by
/// a two-network stage); missing files are an error.
pub fn restore_critic(dir: &Path, params: &ParamStore, opt: &mut AdamW, state: &TrainState) -> Result<(), TrainError> {
    let p = dir.join("critic.safetensors");
    if !p.is_file() {
        return Err(ck_err(&p, "missing: the checkpoint has no critic (fake score / discriminator)"));
    }
    // The critic's shape comes from options (discriminator heads, global
    // branch, trained backbone): resuming with other options is an error,
    // not a silent mix of two networks.
    let saved = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).map_err(|e| ck_err(&p, e))?;
    let mut saved_names: Vec<&String> = saved.keys().collect();
    saved_names.sort();
    let names: Vec<String> = params.named_vars().into_iter().map(|(n, _)| n).collect();
    if saved_names.len() != names.len() || saved_names.iter().zip(&names).any(|(a, b)| *a != b) {
        let only_saved = saved_names.iter().filter(|n| !names.contains(**n)).count();
        let only_now = names.iter().filter(|n| !saved.contains_key(*n)).count();
        return Err(ck_err(
            &p,
            format!(
                "the saved critic does not match this run's options ({only_saved} tensors only in the file, \
                 {only_now} only in this run; e.g. --no-consistency or --disc-heads changed)"
            ),
        ));
    }
    params.load(&p).map_err(|e| ck_err(&p, e))?;
    let o = dir.join("critic_optim.safetensors");
    if !o.exists() {
        // Packed checkpoints (train/checkpoints/pack.py) keep the critic's
        // parameters only, like the student's.
        tracing::warn!(path = %o.display(), "no critic optimizer state: resuming with fresh AdamW moments");
        return Ok(());
    }
    let moments = candle_core::safetensors::load(&o, &candle_core::Device::Cpu).map_err(|e| ck_err(&o, e))?;
    opt.load_state(&moments, state.critic_updates).map_err(|e| ck_err(&o, e))?;
    Ok(())
}
