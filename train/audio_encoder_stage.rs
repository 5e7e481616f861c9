//! Stage 0: the audio encoder, pretrained as a frame-level phone recogniser
//! on the synth's talk tracks, then frozen for every DiT stage.
//!
//! Why: StreamAvatar drives the DiT with wav2vec2 features, a model
//! pretrained on speech and fine-tuned for recognition, so its features say
//! *which* sound is spoken (a loud /m/ has closed lips, a quiet /a/ open
//! ones). The `mini` wav2vec2 has no public weights; left at its seeded
//! random init it passes on little more than loudness: a ridge read-out of
//! mouth openness on held-out clips reaches r 0.59 from its features
//! against 0.52 from the RMS alone (`train audio_probe`, docs/TRAINING.md
//! session 10). Training it to recognise phones should restore the
//! missing part; so far it does not (1,500 steps: read-out r 0.553, below
//! the random encoder), so `reproduce.sh` runs this stage only with
//! `AUDIO_ENCODER=1` (docs/TRAINING.md, stage 0 status).
//!
//! Labels: the espeak-ng phoneme timing of each talk track, grouped into
//! [`PhoneClass`] labels (place of articulation / vowel quality; silence
//! between phonemes), taken at each feature frame's centre. This is text-
//! side supervision (what was said, when), the same kind wav2vec2-960h's
//! CTC fine-tuning used; the mouth ground truth is never seen.
//!
//! Data: a pool of 10 s conversations of training identities and sentences
//! (scripted once, no pixels), random windows of [`WINDOW_SECONDS`] aligned
//! to the feature hop (the window with the most speech of a few draws).
//! Loss: cross-entropy of a linear head on the last hidden state.
//! Trainable: the whole wav2vec2 and the head (`phone_head.*`, dropped by
//! `train export`). Input normalisation as in the DiT stages (zero mean,
//! unit variance per window).

use candle_core::{DType, Device, Module, Tensor, D};
use rand::{Rng, SeedableRng};

use crate::config::ModelConfig;
use crate::model::audio::wav2vec2::{receptive_field, InputNormalization, Wav2Vec2Model};
use crate::synth::phonemes::{phone_label_at, PhoneClass};
use crate::synth::{script_clip, ClipSpec};

use super::params::ParamStore;
use super::runner::{Stage, StepLoss};
use super::TrainError;

/// Seconds of audio per training window.
pub const WINDOW_SECONDS: f64 = 4.0;
/// Seconds of each pooled conversation.
pub const POOL_CLIP_SECONDS: f64 = 10.0;
/// Pool size when none is given.
pub const DEFAULT_POOL: u64 = 512;
/// Window draws per item; the one with the most speech frames is kept.
const WINDOW_DRAWS: usize = 4;

/// One pooled talk track with its label per hop position.
struct PooledTrack {
    talk: Vec<f32>,
    /// Label of the feature frame starting at sample `k * hop`.
    labels: Vec<u32>,
}

/// See module docs.
pub struct AudioEncoderStage {
    cfg: ModelConfig,
    params: ParamStore,
    pool: Vec<Option<PooledTrack>>,
    identities: u64,
    batch: usize,
    seed: u64,
    device: Device,
}

impl AudioEncoderStage {
    /// `pool`: conversations cycled through; `identities`: training
    /// identities they are drawn from.
    pub fn new(cfg: ModelConfig, pool: u64, identities: u64, batch: usize, seed: u64, device: &Device) -> Self {
        Self {
            params: ParamStore::new(seed, device),
            cfg,
            pool: (0..pool.max(1)).map(|_| None).collect(),
            identities: identities.max(1),
            batch: batch.max(1),
            seed,
            device: device.clone(),
        }
    }

    /// The encoder and the recognition head from the variables.
    pub fn modules(&self) -> Result<(Wav2Vec2Model, candle_nn::Linear), TrainError> {
        let vb = self.params.var_builder();
        let w2v = Wav2Vec2Model::new(&self.cfg.audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, vb.clone())?;
        let head = candle_nn::linear(self.cfg.audio.wav2vec2.hidden_size, PhoneClass::LABELS, vb.pp("phone_head"))?;
        Ok((w2v, head))
    }

    fn hop(&self) -> usize {
        self.cfg.audio.wav2vec2.hop()
    }

    /// Samples per window: a whole number of hops plus the receptive field.
    fn window_samples(&self) -> usize {
        let hop = self.hop();
        let frames = (WINDOW_SECONDS * self.cfg.audio.sample_rate as f64 / hop as f64) as usize;
        (frames - 1) * hop + receptive_field(&self.cfg.audio.wav2vec2)
    }

    fn track(&mut self, slot: usize) -> Result<&PooledTrack, TrainError> {
        if self.pool[slot].is_none() {
            let i = slot as u64;
            let spec = ClipSpec::new(
                i % self.identities,
                self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(i),
                POOL_CLIP_SECONDS,
                self.cfg.stream.width,
            );
            let script = script_clip(&spec)?;
            let (hop, rf, rate) =
                (self.hop(), receptive_field(&self.cfg.audio.wav2vec2), self.cfg.audio.sample_rate as f64);
            let talk = script.conversation.talk;
            let positions = talk.len().saturating_sub(rf) / hop + 1;
            let labels = (0..positions)
                .map(|k| {
                    phone_label_at(&script.conversation.talk_phonemes, (k * hop) as f64 / rate + rf as f64 / 2.0 / rate)
                        as u32
                })
                .collect();
            self.pool[slot] = Some(PooledTrack { talk, labels });
        }
        Ok(self.pool[slot].as_ref().expect("filled above"))
    }
}

impl Stage for AudioEncoderStage {
    fn name(&self) -> &'static str {
        "audio_encoder"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        self.modules()?;
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn loss(&mut self, _step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let (w2v, head) = self.modules()?;
        let (hop, samples) = (self.hop(), self.window_samples());
        let frames = (samples - receptive_field(&self.cfg.audio.wav2vec2)) / hop + 1;
        let (mut waves, mut labels) = (Vec::with_capacity(self.batch * samples), Vec::new());
        for _ in 0..self.batch {
            let slot = (*cursor % self.pool.len() as u64) as usize;
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ cursor.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            *cursor += 1;
            let track = self.track(slot)?;
            let positions = track.labels.len();
            if positions < frames {
                return Err(TrainError::Invalid(format!(
                    "audio encoder: a {POOL_CLIP_SECONDS} s conversation is shorter than a {WINDOW_SECONDS} s window"
                )));
            }
            let speech = |k: usize| track.labels[k..k + frames].iter().filter(|&&l| l != 0).count();
            let start = (0..WINDOW_DRAWS)
                .map(|_| rng.random_range(0..=positions - frames))
                .max_by_key(|&k| speech(k))
                .unwrap_or(0);
            waves.extend_from_slice(&track.talk[start * hop..start * hop + samples]);
            labels.extend_from_slice(&track.labels[start..start + frames]);
        }
        let wave = Tensor::from_vec(waves, (self.batch, samples), &self.device)?;
        let out = w2v.forward(&wave)?;
        let last = out.last_hidden_state;
        let got = last.dim(1)?;
        if got != frames {
            return Err(TrainError::Invalid(format!("audio encoder: {got} feature frames, expected {frames}")));
        }
        let logits = head.forward(&last.reshape((self.batch * frames, ()))?)?;
        let target = Tensor::from_vec(labels.clone(), self.batch * frames, &self.device)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
        let predicted: Vec<u32> = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
        let (mut hit, mut speech_hit, mut speech) = (0usize, 0usize, 0usize);
        for (p, l) in predicted.iter().zip(&labels) {
            hit += usize::from(p == l);
            if *l != 0 {
                speech += 1;
                speech_hit += usize::from(p == l);
            }
        }
        let accuracy = hit as f32 / labels.len() as f32;
        let speech_accuracy = if speech > 0 { speech_hit as f32 / speech as f32 } else { f32::NAN };
        let ce = loss.to_scalar::<f32>()?;
        Ok((loss, vec![("ce", ce), ("acc", accuracy), ("speech_acc", speech_accuracy)]))
    }
}
