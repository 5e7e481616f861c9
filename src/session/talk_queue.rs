//! Bounded queue of talk audio (the avatar's own speech from the dialog
//! backend), held at 48 kHz mono and drained in 20 ms ticks by the pacer.
//!
//! Incoming PCM16 at any rate in 8..=48 kHz is resampled twice, to 48 kHz
//! (the Opus track) and to 16 kHz (the generator). Both resamplers trim
//! their group delay, so sample `n` of either stream is input time
//! `n / rate`: a tick takes 960 + 320 samples of the same 20 ms, with no
//! extra latency on either path. Utterance boundaries travel with the audio
//! as markers: `Start` on the first sample of an utterance, `End` after its
//! last sample (set by `TalkCommand::End`, which also flushes the
//! resampler tail). `clear` drops everything queued at once.

use std::collections::VecDeque;

use crate::media::resample::StreamResampler;

/// 48 kHz samples per 20 ms tick.
pub const TICK_48K: usize = 960;
/// 16 kHz samples per 20 ms tick.
pub const TICK_16K: usize = 320;

/// Why talk audio was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TalkQueueError {
    #[error("sample rate {0} Hz outside 8000..=48000")]
    BadRate(u32),
    #[error("talk queue full: {queued_ms} ms queued, {incoming_ms} ms more would pass the {cap_ms} ms cap")]
    Full { queued_ms: u64, incoming_ms: u64, cap_ms: u64 },
    #[error("resampling failed: {0}")]
    Resample(String),
}

/// Utterance boundary carried with the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The tick holds the first sample of utterance `id`.
    Start(u64),
    /// Utterance `id` ends within (or right before) this tick.
    End(u64),
}

/// One 20 ms tick of talk audio leaving the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct TalkTick {
    /// Always `TICK_48K` samples (silence-padded).
    pub pcm48: Vec<f32>,
    /// The same 20 ms at 16 kHz: always `TICK_16K` samples.
    pub pcm16: Vec<f32>,
    /// How many of them are real talk audio.
    pub talk_samples: usize,
    pub markers: Vec<Marker>,
}

impl TalkTick {
    pub fn silence() -> Self {
        Self { pcm48: vec![0.0; TICK_48K], pcm16: vec![0.0; TICK_16K], talk_samples: 0, markers: Vec::new() }
    }
}

/// The talk queue (sans-IO; the session guards it with a mutex).
pub struct TalkQueue {
    cap_samples: usize,
    audio: VecDeque<f32>,
    audio16: VecDeque<f32>,
    /// (absolute 48 kHz position, marker)
    markers: VecDeque<(u64, Marker)>,
    /// (to 48 kHz, to 16 kHz) for the current input rate.
    resampler: Option<(StreamResampler, StreamResampler)>,
    pushed: u64,
    popped: u64,
    next_id: u64,
    /// Utterance currently being pushed (no `End` yet).
    open: Option<u64>,
}

impl TalkQueue {
    pub fn new(cap_ms: u64) -> Self {
        Self {
            cap_samples: (cap_ms * 48) as usize,
            audio: VecDeque::new(),
            audio16: VecDeque::new(),
            markers: VecDeque::new(),
            resampler: None,
            pushed: 0,
            popped: 0,
            next_id: 0,
            open: None,
        }
    }

    /// Queued talk audio not yet drained, in ms.
    pub fn queued_ms(&self) -> u64 {
        self.audio.len() as u64 / 48
    }

    /// Append mono PCM16 at `sample_rate`; opens an utterance if none is open.
    pub fn push_pcm(&mut self, sample_rate: u32, samples: &[i16]) -> Result<(), TalkQueueError> {
        if !(8000..=48000).contains(&sample_rate) {
            return Err(TalkQueueError::BadRate(sample_rate));
        }
        if samples.is_empty() {
            return Ok(());
        }
        let incoming = (samples.len() as u64 * 48_000).div_ceil(sample_rate as u64) as usize;
        if self.audio.len() + incoming > self.cap_samples {
            return Err(TalkQueueError::Full {
                queued_ms: self.queued_ms(),
                incoming_ms: incoming as u64 / 48,
                cap_ms: self.cap_samples as u64 / 48,
            });
        }
        let rate_changed = self.resampler.as_ref().is_some_and(|(r, _)| r.input_rate() != sample_rate);
        if rate_changed {
            self.flush_resampler()?;
        }
        if self.resampler.is_none() {
            let err = |e: &dyn std::fmt::Display| TalkQueueError::Resample(e.to_string());
            let r48 = StreamResampler::new(sample_rate, 48_000).map_err(|e| err(&e))?;
            let r16 = StreamResampler::new(sample_rate, 16_000).map_err(|e| err(&e))?;
            self.resampler = Some((r48, r16));
        }
        if self.open.is_none() {
            let id = self.next_id;
            self.next_id += 1;
            self.open = Some(id);
            self.markers.push_back((self.pushed, Marker::Start(id)));
        }
        let pcm: Vec<f32> = samples.iter().map(|&s| s as f32 / 32768.0).collect();
        if let Some((r48, r16)) = self.resampler.as_mut() {
            let out48 = r48.process(&pcm).map_err(|e| TalkQueueError::Resample(e.to_string()))?;
            let out16 = r16.process(&pcm).map_err(|e| TalkQueueError::Resample(e.to_string()))?;
            self.append(&out48, &out16);
        }
        Ok(())
    }

    /// Close the open utterance: flush the resampler tail, mark its end.
    /// With no open utterance this is a no-op returning `None`.
    pub fn end(&mut self) -> Result<Option<u64>, TalkQueueError> {
        let Some(id) = self.open.take() else { return Ok(None) };
        self.flush_resampler()?;
        self.markers.push_back((self.pushed, Marker::End(id)));
        Ok(Some(id))
    }

    /// Drop all queued audio and markers now. Returns the id of the
    /// utterance that was open or queued, if any.
    pub fn clear(&mut self) -> Option<u64> {
        let queued = self.markers.front().map(|(_, m)| match m {
            Marker::Start(id) | Marker::End(id) => *id,
        });
        let cut = self.open.take().or(queued);
        self.popped += self.audio.len() as u64;
        self.audio.clear();
        self.audio16.clear();
        self.markers.clear();
        self.resampler = None;
        cut
    }

    /// Take the next 20 ms. A partial tick is only taken once its
    /// utterance has ended (otherwise the tick is silence and the audio
    /// waits for more, so a slow producer never causes mid-tick gaps).
    pub fn pop_tick(&mut self) -> TalkTick {
        let tick_end = self.popped + TICK_48K as u64;
        let ended_within = self.markers.iter().any(|(pos, m)| matches!(m, Marker::End(_)) && *pos <= tick_end);
        let (take, take16) = if self.audio.len() >= TICK_48K && self.audio16.len() >= TICK_16K {
            (TICK_48K, TICK_16K)
        } else if ended_within {
            (self.audio.len().min(TICK_48K), self.audio16.len().min(TICK_16K))
        } else {
            (0, 0)
        };
        let mut pcm48: Vec<f32> = self.audio.drain(..take).collect();
        pcm48.resize(TICK_48K, 0.0);
        let mut pcm16: Vec<f32> = self.audio16.drain(..take16).collect();
        pcm16.resize(TICK_16K, 0.0);
        let taken_end = self.popped + take as u64;
        let mut markers = Vec::new();
        while let Some(&(pos, m)) = self.markers.front() {
            let due = match m {
                Marker::Start(_) => take > 0 && pos < taken_end,
                Marker::End(_) => pos <= taken_end,
            };
            if !due {
                break;
            }
            markers.push(m);
            self.markers.pop_front();
        }
        self.popped = taken_end;
        if self.audio.is_empty() && !self.audio16.is_empty() && self.open.is_none() && self.markers.is_empty() {
            // Rounding left a sample or two at 16 kHz after the end: drop it.
            self.audio16.clear();
        }
        TalkTick { pcm48, pcm16, talk_samples: take, markers }
    }

    fn flush_resampler(&mut self) -> Result<(), TalkQueueError> {
        if let Some((mut r48, mut r16)) = self.resampler.take() {
            let tail48 = r48.flush().map_err(|e| TalkQueueError::Resample(e.to_string()))?;
            let tail16 = r16.flush().map_err(|e| TalkQueueError::Resample(e.to_string()))?;
            self.append(&tail48, &tail16);
        }
        Ok(())
    }

    fn append(&mut self, pcm48: &[f32], pcm16: &[f32]) {
        self.audio.extend(pcm48.iter().map(|s| s.clamp(-1.0, 1.0)));
        self.audio16.extend(pcm16.iter().map(|s| s.clamp(-1.0, 1.0)));
        self.pushed += pcm48.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utterance_at_48k_drains_in_ticks_with_markers() {
        let mut q = TalkQueue::new(60_000);
        // 2.5 ticks; the 16 kHz path holds back at most one resampler block.
        q.push_pcm(48_000, &vec![1000i16; 2400]).unwrap();
        assert_eq!(q.queued_ms(), 50);
        let t = q.pop_tick();
        assert_eq!(t.markers, vec![Marker::Start(0)]);
        assert_eq!(t.talk_samples, 960);
        // 480 samples left, utterance not ended: waits (silence tick).
        let t = q.pop_tick();
        assert_eq!(t.talk_samples, 960);
        let t = q.pop_tick();
        assert_eq!(t.talk_samples, 0);
        assert_eq!(q.end().unwrap(), Some(0));
        let t = q.pop_tick();
        assert_eq!(t.talk_samples, 480);
        assert_eq!(t.markers, vec![Marker::End(0)]);
        assert!(t.pcm48[480..].iter().all(|&s| s == 0.0));
        assert!(t.pcm16[..150].iter().all(|&s| s > 0.02));
        assert!(t.pcm16[165..].iter().all(|&s| s.abs() < 1e-3));
        assert_eq!(q.pop_tick(), TalkTick::silence());
    }

    #[test]
    fn resamples_16k_to_48k_with_exact_length() {
        let mut q = TalkQueue::new(60_000);
        for _ in 0..10 {
            q.push_pcm(16_000, &vec![500i16; 160]).unwrap();
        }
        q.end().unwrap();
        let mut total = 0;
        let mut pcm16 = Vec::new();
        for _ in 0..10 {
            let t = q.pop_tick();
            total += t.talk_samples;
            pcm16.extend(t.pcm16);
        }
        assert_eq!(total, 4800);
        // The 16 kHz copy is the same audio, not delayed.
        assert!(pcm16[..1590].iter().skip(20).all(|&s| (s - 500.0 / 32768.0).abs() < 2e-3));
        assert!(pcm16[1605..].iter().all(|&s| s.abs() < 1e-3));
    }

    #[test]
    fn cap_rejects_and_clear_drops_everything() {
        let mut q = TalkQueue::new(1000);
        q.push_pcm(48_000, &vec![1i16; 40_000]).unwrap();
        let e = q.push_pcm(48_000, &vec![1i16; 10_000]).unwrap_err();
        assert!(matches!(e, TalkQueueError::Full { .. }));
        assert_eq!(q.push_pcm(4_000, &[1]), Err(TalkQueueError::BadRate(4000)));
        assert_eq!(q.clear(), Some(0));
        assert_eq!(q.queued_ms(), 0);
        assert_eq!(q.pop_tick(), TalkTick::silence());
        // A new push opens a new utterance.
        q.push_pcm(48_000, &vec![1i16; 1920]).unwrap();
        assert_eq!(q.pop_tick().markers, vec![Marker::Start(1)]);
    }

    #[test]
    fn end_without_audio_is_noop_and_end_after_drain_attaches_to_next_tick() {
        let mut q = TalkQueue::new(1000);
        assert_eq!(q.end().unwrap(), None);
        q.push_pcm(48_000, &vec![1i16; 1920]).unwrap();
        assert_eq!(q.pop_tick().markers, vec![Marker::Start(0)]);
        assert_eq!(q.pop_tick().talk_samples, 0); // 960 left, waits for more or End
        q.end().unwrap();
        let t = q.pop_tick();
        assert_eq!((t.talk_samples, t.markers), (960, vec![Marker::End(0)]));
        let t = q.pop_tick();
        assert_eq!(t, TalkTick::silence());
    }
}
