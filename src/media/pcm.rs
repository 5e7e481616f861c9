//! Raw PCM helpers: PCM16 little-endian byte parsing (the talk WebSocket
//! format), i16 <-> f32 sample conversion and mono mixdown of interleaved
//! multi-channel audio.
//!
//! Conventions used everywhere in `media`: f32 samples are nominally in
//! [-1, 1]; i16 -> f32 divides by 32768, f32 -> i16 multiplies by 32767,
//! rounds and saturates (out-of-range floats never wrap).

/// Errors of PCM parsing and channel handling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcmError {
    #[error("PCM16 payload has an odd number of bytes ({0}); each sample is 2 bytes")]
    OddByteCount(usize),
    #[error("channel count must be >= 1, got {0}")]
    ZeroChannels(usize),
    #[error("{samples} interleaved samples do not divide into {channels} channels")]
    RaggedInterleave { samples: usize, channels: usize },
}

/// Parse PCM16 little-endian bytes into samples. An odd byte count is an error.
pub fn parse_pcm16le(bytes: &[u8]) -> Result<Vec<i16>, PcmError> {
    if bytes.len() % 2 != 0 {
        return Err(PcmError::OddByteCount(bytes.len()));
    }
    Ok(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
}

/// Serialize samples as PCM16 little-endian bytes.
pub fn to_pcm16le(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// One i16 sample to f32 in [-1, 1).
#[inline]
pub fn sample_i16_to_f32(s: i16) -> f32 {
    s as f32 / 32768.0
}

/// One f32 sample to i16: scaled by 32767, rounded, saturated; NaN -> 0.
#[inline]
pub fn sample_f32_to_i16(s: f32) -> i16 {
    if s.is_nan() {
        return 0;
    }
    (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Convert i16 samples to f32.
pub fn i16_to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| sample_i16_to_f32(s)).collect()
}

/// Convert f32 samples to i16 (saturating).
pub fn f32_to_i16(samples: &[f32]) -> Vec<i16> {
    samples.iter().map(|&s| sample_f32_to_i16(s)).collect()
}

/// Average interleaved frames of `channels` channels into mono.
/// `channels == 1` copies the input.
pub fn mixdown_interleaved(samples: &[f32], channels: usize) -> Result<Vec<f32>, PcmError> {
    if channels == 0 {
        return Err(PcmError::ZeroChannels(channels));
    }
    if samples.len() % channels != 0 {
        return Err(PcmError::RaggedInterleave { samples: samples.len(), channels });
    }
    if channels == 1 {
        return Ok(samples.to_vec());
    }
    let scale = 1.0 / channels as f32;
    Ok(samples.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() * scale).collect())
}

/// Parse PCM16LE bytes straight to mono f32 (`channels` interleaved).
pub fn pcm16le_to_mono_f32(bytes: &[u8], channels: usize) -> Result<Vec<f32>, PcmError> {
    let samples = parse_pcm16le(bytes)?;
    mixdown_interleaved(&i16_to_f32(&samples), channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_byte_count_is_an_error() {
        assert_eq!(parse_pcm16le(&[1, 2, 3]), Err(PcmError::OddByteCount(3)));
        assert!(pcm16le_to_mono_f32(&[0], 1).is_err());
    }

    #[test]
    fn parses_little_endian() {
        let s = parse_pcm16le(&[0x01, 0x00, 0xff, 0xff, 0x00, 0x80, 0xff, 0x7f]).unwrap();
        assert_eq!(s, vec![1, -1, i16::MIN, i16::MAX]);
        assert_eq!(to_pcm16le(&s), vec![0x01, 0x00, 0xff, 0xff, 0x00, 0x80, 0xff, 0x7f]);
        assert!(parse_pcm16le(&[]).unwrap().is_empty());
    }

    #[test]
    fn i16_f32_round_trip_and_saturation() {
        let s: Vec<i16> = vec![0, 1, -1, 1000, -1000, i16::MAX, i16::MIN + 1];
        let back = f32_to_i16(&i16_to_f32(&s));
        for (a, b) in s.iter().zip(&back) {
            assert!((*a as i32 - *b as i32).abs() <= 1, "{a} vs {b}");
        }
        assert_eq!(sample_f32_to_i16(2.0), i16::MAX);
        assert_eq!(sample_f32_to_i16(-2.0), i16::MIN);
        assert_eq!(sample_f32_to_i16(f32::NAN), 0);
        assert_eq!(sample_i16_to_f32(i16::MIN), -1.0);
    }

    #[test]
    fn mixdown_averages_channels() {
        let st = [1.0, 0.0, 0.5, 0.5, -1.0, 1.0];
        assert_eq!(mixdown_interleaved(&st, 2).unwrap(), vec![0.5, 0.5, 0.0]);
        assert_eq!(mixdown_interleaved(&st, 1).unwrap(), st.to_vec());
        assert_eq!(mixdown_interleaved(&st, 4), Err(PcmError::RaggedInterleave { samples: 6, channels: 4 }));
        assert_eq!(mixdown_interleaved(&st, 0), Err(PcmError::ZeroChannels(0)));
        let bytes = to_pcm16le(&[16384, -16384, 16384, 16384]);
        assert_eq!(pcm16le_to_mono_f32(&bytes, 2).unwrap(), vec![0.0, 0.5]);
    }
}
