//! WAV bodies of `POST /say` and espeak-ng output: parsed with `hound`,
//! down-mixed to mono PCM16 at the file's own rate (8..=48 kHz). The session
//! resamples; this module only validates and converts sample formats.

use std::io::Cursor;

/// Lowest and highest talk sample rates the agent accepts.
pub const MIN_RATE: u32 = 8_000;
pub const MAX_RATE: u32 = 48_000;

/// Why a WAV body was refused.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("not a WAV file: {0}")]
    Parse(String),
    #[error("unsupported WAV sample rate {0} Hz (accepted: 8000..=48000)")]
    Rate(u32),
    #[error("unsupported WAV sample format: {0}")]
    Format(String),
    #[error("WAV file has no samples")]
    Empty,
}

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
    let fixed = fix_streamed_sizes(bytes);
    let bytes: &[u8] = fixed.as_deref().unwrap_or(bytes);
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| WavError::Parse(e.to_string()))?;
    let spec = reader.spec();
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(WavError::Rate(spec.sample_rate));
    }
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => collect(reader.into_samples::<f32>())?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            collect(reader.into_samples::<i32>())?.into_iter().map(|s| s * scale).collect()
        }
        (format, bits) => return Err(WavError::Format(format!("{format:?} {bits}-bit"))),
    };
    if interleaved.len() < channels {
        return Err(WavError::Empty);
    }
    let samples = interleaved
        .chunks_exact(channels)
        .map(|frame| {
            let mean = frame.iter().sum::<f32>() / channels as f32;
            (mean * 32768.0).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    Ok(MonoPcm { sample_rate: spec.sample_rate, samples })
}

/// Writers that stream to a pipe (espeak-ng --stdout, sox -) cannot seek
/// back to fill in sizes and leave placeholders (0x7fffffff...). When the
/// `data` chunk claims more bytes than the file has, return a copy whose
/// RIFF and data sizes match the bytes actually present.
fn fix_streamed_sizes(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]) as usize;
        let body = pos + 8;
        if id == b"data" {
            let available = bytes.len() - body;
            if size <= available {
                return None;
            }
            let actual = (available & !1) as u32;
            let mut out = bytes[..body + actual as usize].to_vec();
            out[pos + 4..pos + 8].copy_from_slice(&actual.to_le_bytes());
            let riff = (out.len() - 8) as u32;
            out[4..8].copy_from_slice(&riff.to_le_bytes());
            return Some(out);
        }
        // chunks are padded to even sizes
        pos = body.checked_add(size)?.checked_add(size & 1)?;
    }
    None
}

fn collect<S, R>(samples: hound::WavIntoSamples<R, S>) -> Result<Vec<f32>, WavError>
where
    S: hound::Sample + ToF32,
    R: std::io::Read,
{
    samples.map(|s| s.map(ToF32::to_f32).map_err(|e| WavError::Parse(e.to_string()))).collect()
}

/// Sample types hound yields, widened to f32 without scaling.
trait ToF32 {
    fn to_f32(self) -> f32;
}
impl ToF32 for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}
impl ToF32 for i32 {
    fn to_f32(self) -> f32 {
        self as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn streamed_placeholder_sizes_are_fixed() {
        let mut b = wav(spec(1, 22050, 16, hound::SampleFormat::Int), &[5i16, -5, 7]);
        // what espeak-ng --stdout writes: sizes unknown
        b[4..8].copy_from_slice(&0x7fff_f024u32.to_le_bytes());
        let data = b.windows(4).position(|w| w == b"data").unwrap();
        b[data + 4..data + 8].copy_from_slice(&0x7fff_f000u32.to_le_bytes());
        assert_eq!(parse_wav(&b).unwrap().samples, vec![5, -5, 7]);
    }

    #[test]
    fn refuses_garbage_rates_and_empty() {
        assert!(matches!(parse_wav(b"RIFF....garbage"), Err(WavError::Parse(_))));
        let b = wav(spec(1, 96000, 16, hound::SampleFormat::Int), &[0i16; 4]);
        assert!(matches!(parse_wav(&b), Err(WavError::Rate(96000))));
        let b = wav::<i16>(spec(1, 16000, 16, hound::SampleFormat::Int), &[]);
        assert!(matches!(parse_wav(&b), Err(WavError::Empty)));
    }
}
