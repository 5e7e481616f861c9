//! Per-chunk inference cost of a model config with random weights on this
//! machine: the measurement behind the `mini` preset (docs/TRAINING.md).
//!
//! One streaming chunk = audio encoder (wav2vec2 over the chunk's window,
//! talk and listen batched, + projection) + `timesteps.len()` DiT
//! `forward_chunk` calls against a full KV cache (reference sink + window)
//! + one VAE streaming decode of `chunk_frames` latent frames. The session
//! start adds a VAE encode of the reference and the DiT reference priming.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::model::audio::wav2vec2::{InputNormalization, Wav2Vec2Model};
use crate::model::audio::AudioProjection;
use crate::model::dit::{AudioTokens, WanDit};
use crate::model::kv_cache::KvCache;
use crate::model::vae::WanVae;
use crate::model::weights::SeededInitBackend;

use super::TrainError;

/// Median milliseconds per stage over the measured chunks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChunkTimings {
    pub config: String,
    pub width: usize,
    pub height: usize,
    pub video_frames_per_chunk: usize,
    pub audio_ms: f64,
    pub dit_step_ms: f64,
    pub dit_chunk_ms: f64,
    pub vae_decode_ms: f64,
    pub chunk_ms: f64,
    /// Video frames per second this rate of chunks sustains.
    pub fps: f64,
    /// Reference VAE encode + DiT reference priming + first chunk.
    pub first_chunk_ms: f64,
    pub params_dit: usize,
    pub params_vae: usize,
    pub params_wav2vec2: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Parameter count of a component built from a seeded backend.
fn count<F>(build: F) -> Result<usize, TrainError>
where
    F: FnOnce(candle_nn::VarBuilder<'static>) -> Result<(), TrainError>,
{
    let store = super::params::ParamStore::new(0, &Device::Cpu);
    build(store.var_builder())?;
    Ok(store.num_params())
}

/// Measure `chunks` steady-state chunks (after `warmup`) of `cfg`.
pub fn measure_chunk(cfg: &ModelConfig, warmup: usize, chunks: usize) -> Result<ChunkTimings, TrainError> {
    cfg.validate()?;
    let dev = Device::Cpu;
    let vb = |seed| SeededInitBackend::var_builder(seed, DType::F32, &dev);
    let dit_store = super::params::ParamStore::new(1, &dev);
    let dit = WanDit::new(&cfg.dit, dit_store.frozen_var_builder())?;
    let vae = WanVae::new(&cfg.vae, vb(2))?;
    let w2v = Wav2Vec2Model::new(&cfg.audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, vb(3))?;
    let proj = AudioProjection::new(
        &cfg.audio,
        cfg.dit.hidden_size(),
        cfg.dit.audio_tokens_per_frame,
        dit_store.frozen_var_builder().pp("audio_proj"),
    )?;
    if !dit.has_audio_attention() {
        return Err(TrainError::Invalid("benchmark DiT was built without audio attention".into()));
    }
    let s = &cfg.stream;
    let p = cfg.vae.scale_factor_spatial * cfg.dit.patch_size[1];
    let (lh, lw) = (s.height / cfg.vae.scale_factor_spatial, s.width / cfg.vae.scale_factor_spatial);
    let _ = p;
    let c = s.chunk_frames;
    let fpc = s.frames_per_chunk(&cfg.vae);
    let d = cfg.dit.hidden_size();
    let prompt = Tensor::randn(0f32, 1., (1, cfg.dit.text_len, cfg.dit.text_dim), &dev)?;
    let text = dit.text_context(&prompt)?;
    let mut cache = KvCache::from_stream(dit.num_layers(), s);
    let mut decoder = vae.streaming_decoder();
    // Audio window per chunk: left context + chunk + lookahead, talk + listen.
    let win_s = cfg.audio.left_context_s + fpc as f64 / s.fps as f64 + cfg.audio.lookahead_s;
    let samples = (win_s * cfg.audio.sample_rate as f64) as usize;
    let wave = Tensor::randn(0f32, 0.1, (2, samples), &dev)?;
    let feat_frames = 2 * cfg.audio.proj_window + fpc;

    let t0 = Instant::now();
    let image = Tensor::randn(0f32, 0.5, (1, 3, s.height, s.width), &dev)?;
    let reference = vae.encode_image(&image)?;
    let reference = vae.latent_norm().normalize(&reference)?;
    let zero_audio = AudioTokens {
        talk: Tensor::zeros((1, 1, cfg.dit.audio_tokens_per_frame, d), DType::F32, &dev)?,
        listen: Tensor::zeros((1, 1, cfg.dit.audio_tokens_per_frame, d), DType::F32, &dev)?,
    };
    dit.prime_reference(&reference, &text, Some(&zero_audio), &mut cache)?;
    let prime_ms = ms(t0);

    let (mut a_ms, mut s_ms, mut d_ms, mut v_ms, mut tot) = (vec![], vec![], vec![], vec![], vec![]);
    let mut first_chunk_ms = f64::NAN;
    for k in 0..warmup + chunks {
        let t_chunk = Instant::now();
        let t = Instant::now();
        let out = w2v.forward(&wave)?;
        let hs = out.hidden_states;
        let n_feat = hs.dim(2)?;
        // Stand-in for the 50 Hz -> 24 fps resampling: take the last frames.
        let feats = hs.narrow(2, n_feat.saturating_sub(feat_frames), feat_frames.min(n_feat))?;
        let tokens = proj.forward_chunk(&feats, cfg.audio.proj_window)?;
        let audio = AudioTokens { talk: tokens.narrow(0, 0, 1)?, listen: tokens.narrow(0, 1, 1)? };
        let audio_ms = ms(t);
        let t = Instant::now();
        let mut x = Tensor::randn(0f32, 1., (1, cfg.dit.in_channels, c, lh, lw), &dev)?;
        let start = 1 + k * c;
        let mut step_times = vec![];
        for (i, &ts) in s.timesteps.iter().enumerate() {
            let ti = Instant::now();
            let tt = Tensor::full(ts as f32, (1, c), &dev)?;
            let last = i + 1 == s.timesteps.len();
            let v = dit.forward_chunk(&x, &tt, &text, Some(&audio), &mut cache, start, last)?;
            x = (x - (v * 0.3)?)?;
            step_times.push(ms(ti));
        }
        let dit_ms = ms(t);
        let t = Instant::now();
        let z = vae.latent_norm().denormalize(&x)?;
        let video = decoder.decode_chunk(&z)?;
        let _ = video.dims();
        let vae_ms = ms(t);
        let chunk_ms = ms(t_chunk);
        if k == 0 {
            first_chunk_ms = prime_ms + chunk_ms;
        }
        if k >= warmup {
            a_ms.push(audio_ms);
            s_ms.push(median(step_times));
            d_ms.push(dit_ms);
            v_ms.push(vae_ms);
            tot.push(chunk_ms);
        }
    }
    let chunk_ms = median(tot);
    let params_dit = count(|vb| {
        WanDit::new(&cfg.dit, vb.clone())?;
        AudioProjection::new(&cfg.audio, d, cfg.dit.audio_tokens_per_frame, vb.pp("audio_proj"))?;
        Ok(())
    })?;
    let params_vae = count(|vb| WanVae::new(&cfg.vae, vb).map(|_| ()).map_err(Into::into))?;
    let params_wav2vec2 = count(|vb| {
        Wav2Vec2Model::new(&cfg.audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, vb)
            .map(|_| ())
            .map_err(Into::into)
    })?;
    Ok(ChunkTimings {
        config: cfg.name.clone(),
        width: s.width,
        height: s.height,
        video_frames_per_chunk: fpc,
        audio_ms: median(a_ms),
        dit_step_ms: median(s_ms),
        dit_chunk_ms: median(d_ms),
        vae_decode_ms: median(v_ms),
        chunk_ms,
        fps: fpc as f64 * 1e3 / chunk_ms,
        first_chunk_ms,
        params_dit,
        params_vae,
        params_wav2vec2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_chunk_measures() -> anyhow::Result<()> {
        let t = measure_chunk(&ModelConfig::tiny(), 0, 2)?;
        assert_eq!(t.video_frames_per_chunk, 12);
        assert!(t.chunk_ms > 0.0 && t.fps > 0.0 && t.params_dit > 0 && t.params_vae > 0);
        Ok(())
    }
}
