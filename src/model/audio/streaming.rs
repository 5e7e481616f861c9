//! `StreamingAudioEncoder`: wav2vec2 features chunk by chunk while the audio
//! arrives.
//!
//! Chunk k covers audio samples `[k*S, (k+1)*S)` (S = frames_per_chunk / fps
//! seconds, 8000 samples for 12 frames at 24 fps) and video frames
//! `[k*F, (k+1)*F)`. For it the encoder re-runs wav2vec2 over the window
//! `[k*S - left_context, (k+1)*S + lookahead)` (start clamped at 0 and aligned
//! down to the 320-sample hop, so the conv frames land exactly on the
//! whole-clip conv frames), resamples the hidden states to the chunk's video
//! frames plus `proj_window` pad frames each side (the projection's context;
//! pad frames before the clip start repeat frame 0, as the whole-clip
//! projection clamps), and returns them with an energy-VAD mask of the same
//! frames.
//!
//! Why a window and not a running state: wav2vec2's transformer attends to
//! the whole input and its positional conv spans 128 frames (2.56 s), and the
//! base layout's first GroupNorm normalises each channel over the whole
//! input, so no exact incremental form exists. Re-encoding a bounded window
//! costs a constant amount per chunk; the difference to whole-clip features
//! shrinks as the window grows (measured in tests/audio_parity.rs).
//! The two whole-input normalisations (waveform zero-mean unit-variance,
//! base layout's first GroupNorm) use running statistics of the whole stream
//! by default ([`super::stream_stats`]); `with_running_stats(false)` makes
//! every window use its own statistics instead.
//!
//! Buffers are bounded: samples before the next window's start are dropped
//! after every chunk, and `push` refuses to buffer more than
//! `max_buffered_samples` (default: one window + 10 s).

use std::collections::VecDeque;

use candle_core::Tensor;

use super::frame_rate::FrameRateMap;
use super::stream_stats::StreamNormStats;
use super::vad::{voice_activity_frames, VadConfig};
use super::wav2vec2::Wav2Vec2Model;
use super::AudioError;
use crate::config::AudioConfig;

/// Extra audio, beyond one window, that `push` accepts ahead of the encoder.
const DEFAULT_SLACK_S: f64 = 10.0;

/// Sample / frame arithmetic of the streaming window (no tensors).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkGeometry {
    pub map: FrameRateMap,
    /// Video frames per chunk (F = 12).
    pub frames_per_chunk: usize,
    /// Audio samples per chunk (S = 8000).
    pub samples_per_chunk: u64,
    pub left_context_samples: u64,
    pub lookahead_samples: u64,
    /// Context frames returned on each side of a chunk (= proj_window).
    pub pad_frames: usize,
}

impl ChunkGeometry {
    pub fn new(cfg: &AudioConfig, fps: u32, frames_per_chunk: usize) -> Result<Self, AudioError> {
        let map = FrameRateMap::new(&cfg.wav2vec2, cfg.sample_rate, fps)?;
        let sr = cfg.sample_rate as u64;
        if frames_per_chunk == 0 || (frames_per_chunk as u64 * sr) % fps as u64 != 0 {
            return Err(AudioError::Config(format!(
                "{frames_per_chunk} frames at {fps} fps is not a whole number of {sr} Hz samples"
            )));
        }
        let secs = |s: f64, what: &str| -> Result<u64, AudioError> {
            if !s.is_finite() || s < 0.0 {
                return Err(AudioError::Config(format!("{what} must be >= 0 seconds, got {s}")));
            }
            Ok((s * sr as f64).round() as u64)
        };
        let g = Self {
            map,
            frames_per_chunk,
            samples_per_chunk: frames_per_chunk as u64 * sr / fps as u64,
            left_context_samples: secs(cfg.left_context_s, "left_context_s")?,
            lookahead_samples: secs(cfg.lookahead_s, "lookahead_s")?,
            pad_frames: cfg.proj_window,
        };
        let need = g.min_lookahead_samples();
        if g.lookahead_samples < need {
            return Err(AudioError::Config(format!(
                "lookahead_s = {} s is shorter than the {need} samples the last pad frame's features need",
                cfg.lookahead_s
            )));
        }
        Ok(g)
    }

    /// Global video frames whose features chunk k returns: `pad` frames
    /// before, the F chunk frames, `pad` after; negative frames clamp to 0.
    pub fn chunk_video_frames(&self, k: u64) -> Vec<u64> {
        let first = (k * self.frames_per_chunk as u64) as i64 - self.pad_frames as i64;
        let n = self.frames_per_chunk + 2 * self.pad_frames;
        (0..n as i64).map(|i| (first + i).max(0) as u64).collect()
    }

    /// Samples `[start, end)` encoded for chunk k.
    pub fn window(&self, k: u64) -> (u64, u64) {
        let hop = self.map.hop as u64;
        let chunk_start = k * self.samples_per_chunk;
        let frames = self.chunk_video_frames(k);
        // The first interpolated frame must lie inside the window.
        let first_pos = frames.iter().map(|&f| self.map.feature_position(f)).fold(f64::INFINITY, f64::min);
        let first_needed = (first_pos.max(0.0).floor() as u64) * hop;
        let start = chunk_start.saturating_sub(self.left_context_samples).min(first_needed);
        let start = start / hop * hop;
        (start, chunk_start + self.samples_per_chunk + self.lookahead_samples)
    }

    /// Samples that must have been pushed before chunk k can be encoded.
    pub fn samples_needed(&self, k: u64) -> u64 {
        self.window(k).1
    }

    /// Smallest lookahead whose window still holds both interpolation
    /// neighbours of the last pad frame (worst case over chunk phases).
    pub fn min_lookahead_samples(&self) -> u64 {
        let hop = self.map.hop as f64;
        let rf = self.map.receptive_field as f64;
        (0..64u64)
            .map(|k| {
                let last = (k + 1) * self.frames_per_chunk as u64 + self.pad_frames as u64 - 1;
                let hi = self.map.feature_position(last).max(0.0).ceil();
                let end = hi * hop + rf;
                (end - ((k + 1) * self.samples_per_chunk) as f64).max(0.0).ceil() as u64
            })
            .max()
            .unwrap_or(0)
    }
}

/// Features of one chunk.
#[derive(Debug, Clone)]
pub struct AudioChunk {
    /// Chunk index k since the last reset.
    pub index: u64,
    /// Global video frame of the chunk's first (non-pad) frame: k * F.
    pub first_video_frame: u64,
    /// Context frames on each side of the chunk frames (= proj_window).
    pub pad_frames: usize,
    /// Hidden states at video fps: [1, L+1, pad + F + pad, H].
    pub features: Tensor,
    /// Energy-VAD mask in {0, 1} for the same `pad + F + pad` frames.
    pub voice_activity: Vec<f32>,
}

impl AudioChunk {
    /// The F chunk frames without the pads: [1, L+1, F, H].
    pub fn core_features(&self) -> Result<Tensor, AudioError> {
        let n = self.features.dim(2)?.saturating_sub(2 * self.pad_frames);
        Ok(self.features.narrow(2, self.pad_frames, n)?)
    }
}

/// Streaming wav2vec2 over one audio stream (talk or listen).
pub struct StreamingAudioEncoder {
    model: Wav2Vec2Model,
    geometry: ChunkGeometry,
    vad: VadConfig,
    buffer: VecDeque<f32>,
    /// Global sample index of `buffer[0]`.
    buffer_start: u64,
    next_chunk: u64,
    max_buffered: usize,
    /// Running normalisation statistics; `None` = per-window statistics.
    stats: Option<StreamNormStats>,
}

impl StreamingAudioEncoder {
    /// `fps` and `frames_per_chunk` come from the stream config
    /// (24, chunk_frames * 4 = 12).
    pub fn new(model: Wav2Vec2Model, cfg: &AudioConfig, fps: u32, frames_per_chunk: usize) -> Result<Self, AudioError> {
        let geometry = ChunkGeometry::new(cfg, fps, frames_per_chunk)?;
        let (s, e) = geometry.window(1_000);
        let max_buffered = (e - s) as usize + (DEFAULT_SLACK_S * cfg.sample_rate as f64) as usize;
        Ok(Self {
            model,
            geometry,
            vad: VadConfig::default(),
            buffer: VecDeque::new(),
            buffer_start: 0,
            next_chunk: 0,
            max_buffered,
            stats: Some(StreamNormStats::default()),
        })
    }

    /// Running (default) or per-window normalisation statistics.
    pub fn with_running_stats(mut self, running: bool) -> Self {
        self.stats = running.then(StreamNormStats::default);
        self
    }

    pub fn with_vad(mut self, vad: VadConfig) -> Self {
        self.vad = vad;
        self
    }

    /// Bound on buffered samples (at least one window is always allowed).
    pub fn with_max_buffered_samples(mut self, max: usize) -> Self {
        let (s, e) = self.geometry.window(1_000);
        self.max_buffered = max.max((e - s) as usize);
        self
    }

    pub fn geometry(&self) -> &ChunkGeometry {
        &self.geometry
    }

    pub fn model(&self) -> &Wav2Vec2Model {
        &self.model
    }

    /// Index of the chunk `next_chunk` will return.
    pub fn next_chunk_index(&self) -> u64 {
        self.next_chunk
    }

    /// Total samples pushed since the last reset.
    pub fn pushed_samples(&self) -> u64 {
        self.buffer_start + self.buffer.len() as u64
    }

    pub fn buffered_samples(&self) -> usize {
        self.buffer.len()
    }

    /// Append 16 kHz mono PCM (any block size). Non-finite samples or a
    /// push beyond the buffer bound are refused (nothing is appended).
    pub fn push(&mut self, pcm: &[f32]) -> Result<(), AudioError> {
        if let Some(i) = pcm.iter().position(|s| !s.is_finite()) {
            return Err(AudioError::BadInput(format!("non-finite PCM sample at index {i}")));
        }
        if self.buffer.len() + pcm.len() > self.max_buffered {
            return Err(AudioError::BufferFull {
                buffered: self.buffer.len(),
                pushed: pcm.len(),
                capacity: self.max_buffered,
            });
        }
        self.buffer.extend(pcm.iter().copied());
        Ok(())
    }

    /// Samples that must be pushed before the next chunk is ready.
    pub fn samples_needed(&self) -> u64 {
        self.geometry.samples_needed(self.next_chunk)
    }

    pub fn ready(&self) -> bool {
        self.pushed_samples() >= self.samples_needed()
    }

    /// Forget all audio and start again at chunk 0.
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.buffer_start = 0;
        self.next_chunk = 0;
        if let Some(st) = &mut self.stats {
            st.reset();
        }
    }

    /// Encode the next chunk (`NotEnoughAudio` until `ready()`).
    pub fn next_chunk(&mut self) -> Result<AudioChunk, AudioError> {
        let window = self.take_window()?;
        let mut out = match &mut self.stats {
            Some(st) => {
                let mut stats = [std::mem::take(st)];
                let r = encode_windows(&self.model, &self.geometry, &[window], Some(&mut stats));
                *st = std::mem::take(&mut stats[0]);
                r?
            }
            None => encode_windows(&self.model, &self.geometry, &[window], None)?,
        };
        self.advance();
        out.pop().ok_or_else(|| AudioError::BadInput("no chunk encoded".into()))
    }

    /// Encode the next chunk of two streams (talk, listen) in one batched
    /// wav2vec2 forward. Both must be at the same chunk index with the same
    /// geometry.
    pub fn next_chunk_pair(a: &mut Self, b: &mut Self) -> Result<(AudioChunk, AudioChunk), AudioError> {
        if a.next_chunk != b.next_chunk || a.geometry != b.geometry || a.stats.is_some() != b.stats.is_some() {
            return Err(AudioError::BadInput(format!(
                "streams are at chunks {} and {} (or differ in geometry); cannot batch",
                a.next_chunk, b.next_chunk
            )));
        }
        let wa = a.take_window()?;
        let wb = b.take_window()?;
        let mut out = match (&mut a.stats, &mut b.stats) {
            (Some(sa), Some(sb)) => {
                let mut stats = [std::mem::take(sa), std::mem::take(sb)];
                let r = encode_windows(&a.model, &a.geometry, &[wa, wb], Some(&mut stats));
                let [ta, tb] = stats;
                *sa = ta;
                *sb = tb;
                r?
            }
            _ => encode_windows(&a.model, &a.geometry, &[wa, wb], None)?,
        };
        a.advance();
        b.advance();
        let cb = out.pop();
        let ca = out.pop();
        match (ca, cb) {
            (Some(ca), Some(cb)) => Ok((ca, cb)),
            _ => Err(AudioError::BadInput("batched encode returned too few chunks".into())),
        }
    }

    fn take_window(&self) -> Result<PendingWindow, AudioError> {
        let k = self.next_chunk;
        let (start, end) = self.geometry.window(k);
        if self.pushed_samples() < end {
            return Err(AudioError::NotEnoughAudio { chunk: k, needed: end, have: self.pushed_samples() });
        }
        // Invariant: everything from the window start on is still buffered.
        if start < self.buffer_start {
            return Err(AudioError::BadInput(format!(
                "internal: window of chunk {k} starts at {start}, buffer at {}",
                self.buffer_start
            )));
        }
        let from = (start - self.buffer_start) as usize;
        let to = (end - self.buffer_start) as usize;
        let samples: Vec<f32> = self.buffer.range(from..to).copied().collect();
        let frames = self.geometry.chunk_video_frames(k);
        let voice_activity = frames
            .iter()
            .map(|&f| {
                voice_activity_frames(
                    &samples,
                    start,
                    f,
                    1,
                    self.geometry.map.sample_rate,
                    self.geometry.map.fps,
                    &self.vad,
                )[0]
            })
            .collect();
        Ok(PendingWindow { chunk: k, start, samples, frames, voice_activity })
    }

    /// Move to the next chunk and drop audio the next window no longer needs.
    fn advance(&mut self) {
        self.next_chunk += 1;
        let (keep_from, _) = self.geometry.window(self.next_chunk);
        let drop = keep_from.saturating_sub(self.buffer_start).min(self.buffer.len() as u64) as usize;
        self.buffer.drain(..drop);
        self.buffer_start += drop as u64;
    }
}

struct PendingWindow {
    chunk: u64,
    start: u64,
    samples: Vec<f32>,
    frames: Vec<u64>,
    voice_activity: Vec<f32>,
}

fn encode_windows(
    model: &Wav2Vec2Model,
    geometry: &ChunkGeometry,
    windows: &[PendingWindow],
    stats: Option<&mut [StreamNormStats]>,
) -> Result<Vec<AudioChunk>, AudioError> {
    let Some(first) = windows.first() else { return Ok(Vec::new()) };
    let len = first.samples.len();
    if windows.iter().any(|w| w.samples.len() != len || w.start != first.start) {
        return Err(AudioError::BadInput("batched windows differ in extent".into()));
    }
    let device = model.device().clone();
    let flat: Vec<f32> = windows.iter().flat_map(|w| w.samples.iter().copied()).collect();
    let x = Tensor::from_vec(flat, (windows.len(), len), &device)?;
    let _span =
        tracing::debug_span!("wav2vec2_window", chunk = first.chunk, samples = len, batch = windows.len()).entered();
    let hidden = match stats {
        Some(stats) => model.forward_streaming(&x, first.start, stats)?.hidden_states,
        None => model.forward(&x)?.hidden_states,
    };
    let first_feature = first.start / geometry.map.hop as u64;
    let feats = geometry.map.resample(&hidden, first_feature, &first.frames)?;
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Ok(AudioChunk {
                index: w.chunk,
                first_video_frame: w.chunk * geometry.frames_per_chunk as u64,
                pad_frames: geometry.pad_frames,
                features: feats.narrow(0, i, 1)?,
                voice_activity: w.voice_activity.clone(),
            })
        })
        .collect()
}

/// Whole-clip features at video fps: wav2vec2 over all of `pcm` at once,
/// resampled to every whole video frame -> [1, L+1, N, H]. The offline
/// reference the streamed chunks are compared against.
pub fn whole_clip_features(model: &Wav2Vec2Model, pcm: &[f32], map: &FrameRateMap) -> Result<Tensor, AudioError> {
    let x = Tensor::from_slice(pcm, (1, pcm.len()), model.device())?;
    let hidden = model.forward(&x)?.hidden_states;
    map.resample_clip(&hidden, pcm.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::audio::InputNormalization;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn encoder(cfg: &AudioConfig) -> StreamingAudioEncoder {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Wav2Vec2Model::new(&cfg.wav2vec2, InputNormalization::None, vb).unwrap();
        StreamingAudioEncoder::new(model, cfg, 24, 12).unwrap()
    }

    #[test]
    fn window_bounds() -> anyhow::Result<()> {
        let mut cfg = ModelConfig::full().audio;
        cfg.wav2vec2 = crate::config::Wav2Vec2Config::tiny();
        let g = ChunkGeometry::new(&cfg, 24, 12)?;
        assert_eq!(g.samples_per_chunk, 8_000);
        assert_eq!(g.left_context_samples, 32_000);
        assert_eq!(g.lookahead_samples, 8_000);
        // chunk 0: clamped at the clip start, ends one lookahead after the chunk.
        assert_eq!(g.window(0), (0, 16_000));
        // chunk 10: [80000 - 32000, 88000 + 8000), hop aligned.
        assert_eq!(g.window(10), (48_000, 96_000));
        for k in 0..50 {
            let (s, e) = g.window(k);
            assert_eq!(s % 320, 0);
            assert!(e - s <= 32_000 + 8_000 + 8_000 + 320);
            assert!(e <= (k + 1) * 8_000 + 8_000, "never more than lookahead beyond the chunk");
        }
        assert_eq!(g.chunk_video_frames(0)[..3], [0, 0, 0]);
        assert_eq!(g.chunk_video_frames(1), (10..26).collect::<Vec<u64>>());
        // Lookahead below what the pad frames need is a config error.
        assert!(g.min_lookahead_samples() > 0 && g.min_lookahead_samples() < 8_000);
        cfg.lookahead_s = 0.01;
        assert!(ChunkGeometry::new(&cfg, 24, 12).is_err());
        Ok(())
    }

    #[test]
    fn buffers_stay_bounded_and_chunks_need_lookahead() -> anyhow::Result<()> {
        let cfg = ModelConfig::tiny().audio; // 1 s left context, 0.5 s lookahead
        let mut enc = encoder(&cfg);
        let block = vec![0.01f32; 1_000];
        let mut chunks = 0;
        for _ in 0..60 {
            enc.push(&block)?;
            while enc.ready() {
                let c = enc.next_chunk()?;
                assert_eq!(c.index, chunks);
                assert_eq!(c.features.dims(), &[1, 3, 12 + 2 * cfg.proj_window, 32]);
                assert_eq!(c.voice_activity.len(), 12 + 2 * cfg.proj_window);
                chunks += 1;
            }
            // never more than left context + chunk + lookahead (+ one block, + hop alignment)
            assert!(enc.buffered_samples() <= 16_000 + 8_000 + 8_000 + 1_000 + 320);
        }
        // 60000 samples: chunk k needs (k+1)*8000 + 8000 -> k <= 5.
        assert_eq!(chunks, 6);
        assert!(matches!(enc.next_chunk(), Err(AudioError::NotEnoughAudio { chunk: 6, .. })));
        assert!(enc.push(&[f32::NAN]).is_err());
        let huge = vec![0.0f32; 2_000_000];
        assert!(matches!(enc.push(&huge), Err(AudioError::BufferFull { .. })));
        enc.reset();
        assert_eq!(enc.pushed_samples(), 0);
        Ok(())
    }

    #[test]
    fn pair_encoding_matches_single() -> anyhow::Result<()> {
        let cfg = ModelConfig::tiny().audio;
        let mut a = encoder(&cfg);
        let mut b = StreamingAudioEncoder::new(a.model().clone(), &cfg, 24, 12)?;
        let mut single = StreamingAudioEncoder::new(a.model().clone(), &cfg, 24, 12)?;
        let talk: Vec<f32> = (0..24_000).map(|i| (i as f32 * 0.03).sin() * 0.2).collect();
        let listen = vec![0.0f32; 24_000];
        a.push(&talk)?;
        b.push(&listen)?;
        single.push(&talk)?;
        let (ca, cb) = StreamingAudioEncoder::next_chunk_pair(&mut a, &mut b)?;
        let cs = single.next_chunk()?;
        let d = (ca.features - &cs.features)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "batched vs single {d}");
        assert!(cs.voice_activity.iter().all(|v| *v == 1.0));
        assert!(cb.voice_activity.iter().all(|v| *v == 0.0));
        Ok(())
    }
}
