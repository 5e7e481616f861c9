//! Conversations: alternating talk (the avatar speaks) and listen (the
//! partner speaks) turns built from a bank of sentences, synthesised with
//! espeak-ng into two 16 kHz mono tracks of the clip's length.
//!
//! **Sentence split:** the bank is `sentences.txt` (one sentence per line).
//! Sentences whose 0-based line index `i` has `i % 5 == 4` are held out
//! (12 of 60) and only used by held-out clips; training clips use the other
//! 48. The avatar's voice comes from its identity; the partner speaks with
//! a different espeak-ng voice variant.

use serde::Serialize;

use super::espeak::{self, Speech};
use super::identity::{random_voice, VoiceSpec};
use super::phonemes::{timed_phonemes, TimedPhoneme};
use super::rng::SynthRng;
use super::SynthError;
use crate::media::resample::StreamResampler;

/// Sample rate of the talk and listen tracks.
pub const AUDIO_RATE: u32 = 16_000;

const SENTENCES: &str = include_str!("sentences.txt");
/// Every `HELDOUT_SENTENCE_PERIOD`-th sentence (index % period == period - 1)
/// is held out.
pub const HELDOUT_SENTENCE_PERIOD: usize = 5;

/// Which sentences a conversation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SentenceSplit {
    Train,
    Heldout,
}

/// The built-in sentence bank.
pub fn sentences() -> Vec<&'static str> {
    SENTENCES.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// Indices into [`sentences`] of one split.
pub fn sentence_ids(split: SentenceSplit) -> Vec<usize> {
    let heldout = |i: usize| i % HELDOUT_SENTENCE_PERIOD == HELDOUT_SENTENCE_PERIOD - 1;
    (0..sentences().len())
        .filter(|&i| match split {
            SentenceSplit::Train => !heldout(i),
            SentenceSplit::Heldout => heldout(i),
        })
        .collect()
}

/// Who speaks in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The avatar talks (talk track).
    Avatar,
    /// The partner talks, the avatar listens (listen track).
    Partner,
}

/// One turn of speech, clipped to the conversation length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    pub speaker: Speaker,
    pub start_s: f64,
    pub end_s: f64,
    pub sentence_ids: Vec<usize>,
    pub text: String,
}

/// A synthesised conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub seconds: f64,
    /// The avatar's speech (silence elsewhere), [`AUDIO_RATE`] mono.
    pub talk: Vec<f32>,
    /// The partner's speech (silence elsewhere), [`AUDIO_RATE`] mono.
    pub listen: Vec<f32>,
    pub turns: Vec<Turn>,
    /// The avatar's phonemes, absolute times.
    pub talk_phonemes: Vec<TimedPhoneme>,
    pub avatar_voice: VoiceSpec,
    pub partner_voice: VoiceSpec,
}

fn to_16k(speech: &Speech) -> Result<Vec<f32>, SynthError> {
    if speech.sample_rate == AUDIO_RATE {
        return Ok(speech.samples.clone());
    }
    let mut rs = StreamResampler::new(speech.sample_rate, AUDIO_RATE)?;
    let mut out = rs.process(&speech.samples)?;
    out.extend(rs.flush()?);
    Ok(out)
}

/// Build a conversation of `seconds` seconds from `seed`: turns alternate
/// between avatar and partner (first speaker random), each 1-2 sentences,
/// separated by gaps of 0.25-0.9 s or, sometimes, 1.5-3 s of idle silence.
pub fn build_conversation(
    seed: u64,
    seconds: f64,
    avatar_voice: &VoiceSpec,
    split: SentenceSplit,
) -> Result<Conversation, SynthError> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(SynthError::InvalidSpec(format!("conversation length {seconds} s must be in (0, 3600]")));
    }
    let mut rng = SynthRng::derive(seed, 0xC0);
    let mut partner_voice = avatar_voice.clone();
    while partner_voice.name == avatar_voice.name {
        let feminine = rng.chance(0.5);
        partner_voice = random_voice(&mut rng, feminine);
    }
    let bank = sentences();
    let ids = sentence_ids(split);
    let n = (seconds * AUDIO_RATE as f64).round() as usize;
    let mut talk = vec![0.0f32; n];
    let mut listen = vec![0.0f32; n];
    let mut turns = Vec::new();
    let mut talk_phonemes = Vec::new();
    let mut speaker = if rng.chance(0.5) { Speaker::Avatar } else { Speaker::Partner };
    let mut t = rng.range(0.2, 1.0);
    while t < seconds - 0.3 {
        let count = if rng.chance(0.3) { 2 } else { 1 };
        let chosen: Vec<usize> = (0..count).map(|_| *rng.pick(&ids)).collect();
        let text = chosen.iter().map(|&i| bank[i]).collect::<Vec<_>>().join(" ");
        let voice = if speaker == Speaker::Avatar { avatar_voice } else { &partner_voice };
        let speech = espeak::synthesize(&text, voice)?;
        let audio = to_16k(&speech)?;
        let start = (t * AUDIO_RATE as f64).round() as usize;
        let track = if speaker == Speaker::Avatar { &mut talk } else { &mut listen };
        for (dst, src) in track.iter_mut().skip(start).zip(&audio) {
            *dst = *src;
        }
        let dur = audio.len() as f64 / AUDIO_RATE as f64;
        let end = (t + dur).min(seconds);
        if speaker == Speaker::Avatar {
            talk_phonemes.extend(
                timed_phonemes(&speech.phonemes, speech.sample_rate, speech.samples.len(), t)
                    .into_iter()
                    .filter(|p| p.start_s < seconds),
            );
        }
        turns.push(Turn { speaker, start_s: t, end_s: end, sentence_ids: chosen, text });
        let gap = if rng.chance(0.2) { rng.range(1.5, 3.0) } else { rng.range(0.25, 0.9) };
        t = t + dur + gap;
        speaker = match speaker {
            Speaker::Avatar => Speaker::Partner,
            Speaker::Partner => Speaker::Avatar,
        };
    }
    Ok(Conversation { seconds, talk, listen, turns, talk_phonemes, avatar_voice: avatar_voice.clone(), partner_voice })
}

/// RMS of `samples` over each of `n_frames` video frames at `fps`.
pub fn frame_rms(samples: &[f32], sample_rate: u32, fps: f64, n_frames: usize) -> Vec<f32> {
    (0..n_frames)
        .map(|f| {
            let a = ((f as f64 / fps) * sample_rate as f64) as usize;
            let b = ((((f + 1) as f64) / fps) * sample_rate as f64) as usize;
            let (a, b) = (a.min(samples.len()), b.min(samples.len()));
            if b <= a {
                return 0.0;
            }
            (samples[a..b].iter().map(|s| s * s).sum::<f32>() / (b - a) as f32).sqrt()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_splits_are_disjoint_and_cover_the_bank() {
        let all = sentences();
        assert!(all.len() >= 60, "{}", all.len());
        let tr = sentence_ids(SentenceSplit::Train);
        let ho = sentence_ids(SentenceSplit::Heldout);
        assert!(tr.iter().all(|i| !ho.contains(i)));
        assert_eq!(tr.len() + ho.len(), all.len());
        assert_eq!(ho.len(), all.len() / 5);
    }

    #[test]
    fn conversation_alternates_and_is_deterministic() {
        let voice = VoiceSpec { name: "en-us+m3".into(), rate: 180, pitch: 45, range: 60 };
        let c = build_conversation(3, 8.0, &voice, SentenceSplit::Heldout).unwrap();
        assert_eq!(c.talk.len(), 8 * AUDIO_RATE as usize);
        assert_eq!(c.listen.len(), c.talk.len());
        assert!(c.turns.len() >= 2, "{:?}", c.turns);
        assert!(c.turns.windows(2).all(|w| w[0].speaker != w[1].speaker && w[0].end_s <= w[1].start_s));
        let ho = sentence_ids(SentenceSplit::Heldout);
        assert!(c.turns.iter().flat_map(|t| &t.sentence_ids).all(|i| ho.contains(i)));
        assert_ne!(c.partner_voice.name, voice.name);
        // Speech lands only on the speaker's track.
        let rms = |x: &[f32]| (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt();
        for turn in &c.turns {
            let (a, b) = ((turn.start_s * 16000.0) as usize, (turn.end_s * 16000.0) as usize);
            let (own, other) = match turn.speaker {
                Speaker::Avatar => (&c.talk, &c.listen),
                Speaker::Partner => (&c.listen, &c.talk),
            };
            assert!(rms(&own[a..b]) > 0.02);
            assert_eq!(rms(&other[a..b]), 0.0);
        }
        assert!(c == build_conversation(3, 8.0, &voice, SentenceSplit::Heldout).unwrap(), "not deterministic");
        assert!(build_conversation(3, -1.0, &voice, SentenceSplit::Train).is_err());
    }
}
