//! WAV bodies of `POST /say` and espeak-ng output as mono PCM16 at the
//! file's own rate: `media::wav` parses (formats, limits, espeak's streamed
//! placeholder sizes); this adapter converts to the session's PCM16. The
//! session resamples.

pub use crate::media::resample::{MAX_RATE, MIN_RATE};
pub use crate::media::wav::WavError;

/// Largest WAV body parsed here; the HTTP layer's body limit is lower.
const MAX_WAV_BYTES: usize = 256 << 20;

/// Mono PCM16 audio.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoPcm {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
}

impl MonoPcm {
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(self.sample_rate.max(1))
    }
}

/// Parse a RIFF/WAVE file (PCM 8/16/24/32-bit int or 32-bit float).
pub fn parse_wav(bytes: &[u8]) -> Result<MonoPcm, WavError> {
    let audio = crate::media::wav::parse_wav(bytes, MAX_WAV_BYTES)?;
    let samples = audio.samples.iter().map(|&v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect();
    Ok(MonoPcm { sample_rate: audio.sample_rate, samples })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn wav<S: hound::Sample + Copy>(spec: hound::WavSpec, samples: &[S]) -> Vec<u8> {
        let mut cur = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    fn spec(channels: u16, rate: u32, bits: u16, fmt: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: bits, sample_format: fmt }
    }

    #[test]
    fn mono_16bit_round_trips() {
        let b = wav(spec(1, 22050, 16, hound::SampleFormat::Int), &[0i16, 1000, -32768, 32767]);
        let p = parse_wav(&b).unwrap();
        assert_eq!(p.sample_rate, 22050);
        assert_eq!(p.samples, vec![0, 1000, -32768, 32767]);
    }

    #[test]
    fn stereo_is_downmixed_and_float_scaled() {
        let b = wav(spec(2, 48000, 32, hound::SampleFormat::Float), &[0.5f32, -0.5, 1.0, 1.0]);
        let p = parse_wav(&b).unwrap();
        assert_eq!(p.samples, vec![0, 32767]);
        assert_eq!(p.duration_ms(), 0);
    }

    #[test]
    fn refuses_garbage_rates_and_empty() {
        assert!(matches!(parse_wav(b"RIFF....garbage"), Err(WavError::Malformed(_))));
        let b = wav(spec(1, 96000, 16, hound::SampleFormat::Int), &[0i16; 4]);
        assert!(matches!(parse_wav(&b), Err(WavError::UnsupportedRate(96000))));
        let b = wav::<i16>(spec(1, 16000, 16, hound::SampleFormat::Int), &[]);
        assert!(matches!(parse_wav(&b), Err(WavError::Empty)));
    }
}
