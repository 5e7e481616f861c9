//! WAV bodies (e.g. an uploaded `/say` clip or a test fixture) to mono f32.
//!
//! Accepts the common formats hound reads: integer PCM of 8/16/24/32 bits
//! and 32-bit float, any channel count up to [`MAX_CHANNELS`] (averaged to
//! mono), sample rates 8000..=48000 Hz. Garbage, truncated or oversized
//! input is a [`WavError`], never a panic. Files written to a pipe
//! (espeak-ng `--stdout`, `sox -`) carry placeholder sizes; they are read
//! up to the bytes actually present.

use std::io::Cursor;

use crate::media::resample::{MAX_RATE, MIN_RATE};

/// Most channels accepted in a WAV body.
pub const MAX_CHANNELS: u16 = 8;

/// Errors of WAV parsing.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("WAV body is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not a readable WAV file: {0}")]
    Malformed(String),
    #[error("unsupported WAV sample rate {0} Hz (supported: {MIN_RATE}..={MAX_RATE})")]
    UnsupportedRate(u32),
    #[error("unsupported WAV channel count {0} (supported: 1..={MAX_CHANNELS})")]
    UnsupportedChannels(u16),
    #[error("unsupported WAV sample format: {0}")]
    UnsupportedFormat(String),
    #[error("WAV body contains no samples")]
    Empty,
}

/// Decoded WAV audio: mono samples in [-1, 1] at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoAudio {
    pub sample_rate: u32,
    pub samples: Vec<f32>,
}

impl MonoAudio {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Parse a WAV body of at most `max_bytes` bytes into mono f32.
pub fn parse_wav(body: &[u8], max_bytes: usize) -> Result<MonoAudio, WavError> {
    if body.len() > max_bytes {
        return Err(WavError::TooLarge { size: body.len(), limit: max_bytes });
    }
    let fixed = fix_streamed_sizes(body);
    let body: &[u8] = fixed.as_deref().unwrap_or(body);
    let mut reader = hound::WavReader::new(Cursor::new(body)).map_err(|e| WavError::Malformed(e.to_string()))?;
    let spec = reader.spec();
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(WavError::UnsupportedRate(spec.sample_rate));
    }
    if spec.channels == 0 || spec.channels > MAX_CHANNELS {
        return Err(WavError::UnsupportedChannels(spec.channels));
    }
    let channels = spec.channels as usize;
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .map(|s| s.map(|v| if v.is_finite() { v } else { 0.0 }))
            .collect::<Result<_, _>>()
            .map_err(|e| WavError::Malformed(e.to_string()))?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(|e| WavError::Malformed(e.to_string()))?
        }
        (fmt, bits) => return Err(WavError::UnsupportedFormat(format!("{fmt:?} with {bits} bits per sample"))),
    };
    if interleaved.is_empty() {
        return Err(WavError::Empty);
    }
    // A truncated last frame is dropped rather than mixed with missing channels.
    let whole = interleaved.len() - interleaved.len() % channels;
    let samples = crate::media::pcm::mixdown_interleaved(&interleaved[..whole], channels)
        .map_err(|e| WavError::Malformed(e.to_string()))?;
    if samples.is_empty() {
        return Err(WavError::Empty);
    }
    Ok(MonoAudio { sample_rate: spec.sample_rate, samples })
}

/// Smallest `data` size treated as a streaming writer's "size unknown".
const STREAMED_SIZE_PLACEHOLDER: usize = 0x7fff_0000;

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
            // Only the placeholders of streaming writers (0x7fffffff-ish or
            // 0xffffffff) are repaired; a genuinely truncated file stays an error.
            if size <= available || size < STREAMED_SIZE_PLACEHOLDER {
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

/// Write mono f32 samples as a PCM16 WAV body (fixtures, `render`, tests).
pub fn write_wav_pcm16(samples: &[f32], sample_rate: u32) -> Result<Vec<u8>, WavError> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec).map_err(|e| WavError::Malformed(e.to_string()))?;
        for &s in samples {
            w.write_sample(crate::media::pcm::sample_f32_to_i16(s)).map_err(|e| WavError::Malformed(e.to_string()))?;
        }
        w.finalize().map_err(|e| WavError::Malformed(e.to_string()))?;
    }
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 10 << 20;

    fn write(spec: hound::WavSpec, frames: usize, sample: impl Fn(usize, usize) -> f64) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
            for i in 0..frames {
                for c in 0..spec.channels as usize {
                    let v = sample(i, c);
                    match (spec.sample_format, spec.bits_per_sample) {
                        (hound::SampleFormat::Float, _) => w.write_sample(v as f32).unwrap(),
                        (_, 8) => w.write_sample((v * 127.0).round() as i8).unwrap(),
                        (_, 16) => w.write_sample((v * 32767.0).round() as i16).unwrap(),
                        (_, bits) => w.write_sample((v * ((1i64 << (bits - 1)) - 1) as f64).round() as i32).unwrap(),
                    }
                }
            }
            w.finalize().unwrap();
        }
        cursor.into_inner()
    }

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
        }
    }

    #[test]
    fn parses_every_common_format_to_mono() {
        for (channels, rate, bits, float) in [
            (1, 16_000, 16, false),
            (2, 48_000, 16, false),
            (1, 44_100, 24, false),
            (2, 8_000, 32, false),
            (1, 22_050, 8, false),
            (2, 32_000, 32, true),
        ] {
            // Left channel 0.5, right channel -0.25 (stereo mixes to 0.125).
            let body = write(spec(channels, rate, bits, float), 100, |_, c| if c == 0 { 0.5 } else { -0.25 });
            let audio = parse_wav(&body, LIMIT).unwrap();
            assert_eq!(audio.sample_rate, rate);
            assert_eq!(audio.samples.len(), 100);
            let want = if channels == 1 { 0.5 } else { 0.125 };
            let tol = if bits == 8 { 0.01 } else { 1e-3 };
            for s in &audio.samples {
                assert!((s - want).abs() < tol, "{channels}ch {bits}b float={float}: {s}");
            }
        }
    }

    #[test]
    fn round_trips_through_the_writer() {
        let x: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.01).sin() * 0.8).collect();
        let body = write_wav_pcm16(&x, 16_000).unwrap();
        let audio = parse_wav(&body, LIMIT).unwrap();
        assert_eq!(audio.sample_rate, 16_000);
        assert!((audio.duration_s() - 0.1).abs() < 1e-9);
        for (a, b) in x.iter().zip(&audio.samples) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    /// Header fields mutated at random: errors, never panics.
    #[test]
    fn mutated_headers_never_panic() {
        let body = write(spec(2, 16_000, 16, false), 64, |i, c| ((i + c) % 5) as f64 / 10.0);
        let mut seed = 0xdead_beefu32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..3_000 {
            let mut m = body.clone();
            for _ in 0..1 + next() % 4 {
                let pos = (next() as usize) % 48;
                m[pos] = next() as u8;
            }
            let cut = if next() % 4 == 0 { (next() as usize) % m.len() } else { m.len() };
            let _ = parse_wav(&m[..cut], LIMIT);
        }
    }

    #[test]
    fn garbage_and_limits_are_clear_errors() {
        assert!(matches!(parse_wav(b"definitely not a wav file", LIMIT), Err(WavError::Malformed(_))));
        assert!(matches!(parse_wav(&[], LIMIT), Err(WavError::Malformed(_))));
        let body = write(spec(1, 16_000, 16, false), 1000, |i, _| (i % 7) as f64 / 10.0);
        assert!(matches!(parse_wav(&body, 100), Err(WavError::TooLarge { limit: 100, .. })));
        // Truncated data chunk.
        assert!(parse_wav(&body[..body.len() - 301], LIMIT).is_err());
        // Header only: the RIFF header survives but data is cut at the first sample.
        assert!(parse_wav(&body[..45], LIMIT).is_err());
        let e = parse_wav(&write(spec(1, 96_000, 16, false), 10, |_, _| 0.0), LIMIT).unwrap_err();
        assert!(matches!(e, WavError::UnsupportedRate(96_000)), "{e}");
        let e = parse_wav(&write(spec(1, 16_000, 16, false), 0, |_, _| 0.0), LIMIT).unwrap_err();
        assert!(matches!(e, WavError::Empty), "{e}");
        // Random bytes after a valid RIFF magic never panic.
        let mut junk = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
        junk.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
        assert!(parse_wav(&junk, LIMIT).is_err());
    }

    #[test]
    fn streamed_placeholder_sizes_are_fixed() {
        let mut b = write_wav_pcm16(&[0.25, -0.25, 0.5], 22_050).unwrap();
        // what espeak-ng --stdout writes: sizes unknown
        b[4..8].copy_from_slice(&0x7fff_f024u32.to_le_bytes());
        let data = b.windows(4).position(|w| w == b"data").unwrap();
        b[data + 4..data + 8].copy_from_slice(&0x7fff_f000u32.to_le_bytes());
        let a = parse_wav(&b, 1 << 20).unwrap();
        assert_eq!(a.samples.len(), 3);
        assert!((a.samples[2] - 0.5).abs() < 1e-3);
    }
}
