//! Streaming sample-rate conversion (rubato FFT resampler) between the rates
//! the call agent sees: anything from 8 kHz to 48 kHz in, 16 kHz out (the
//! generator's audio encoder) or 48 kHz out (Opus).
//!
//! [`StreamResampler`] takes input blocks of any length and returns whatever
//! output is ready. Internally input is cut into fixed chunks of about 10 ms
//! (a multiple of the rate pair's period), so the output does not depend on
//! how the input was split. The resampler's group delay is trimmed from the
//! start of the output, so output sample `n` corresponds to time
//! `n / output_rate` of the input; [`StreamResampler::flush`] pushes out the
//! tail so that a finished stream yields exactly
//! `round(total_in * out_rate / in_rate)` samples. Memory is bounded: at most
//! one chunk of input is held between calls.

use rubato::{FftFixedInOut, Resampler};

/// Lowest supported sample rate (Hz).
pub const MIN_RATE: u32 = 8_000;
/// Highest supported sample rate (Hz).
pub const MAX_RATE: u32 = 48_000;
/// The generator's audio rate.
pub const GENERATOR_RATE: u32 = 16_000;
/// The Opus rate.
pub const OPUS_RATE: u32 = 48_000;
/// A rate pair must share this grid (gcd >= 25 Hz): it bounds the FFT chunk
/// to 40 ms of input. Every common rate (8000, 11025, 12000, 16000, 22050,
/// 24000, 32000, 44100, 48000) qualifies.
pub const MIN_RATE_GCD: u32 = 25;
/// Target chunk length in milliseconds (rounded up to the pair's period).
const CHUNK_MS: u32 = 10;

/// Errors of the resampler.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResampleError {
    #[error(
        "unsupported sample rate {rate} Hz: must be within {MIN_RATE}..={MAX_RATE} Hz \
         (common rates: 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)"
    )]
    UnsupportedRate { rate: u32 },
    #[error(
        "unsupported rate pair {input} Hz -> {output} Hz: their greatest common divisor \
         must be >= {MIN_RATE_GCD} Hz (use a common rate such as 44100 or 48000)"
    )]
    UnsupportedPair { input: u32, output: u32 },
    #[error("resampler failure: {0}")]
    Internal(String),
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Check that `rate` is one the resampler accepts (8000..=48000 Hz).
pub fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(ResampleError::UnsupportedRate { rate })
    }
}

struct FftStage {
    inner: FftFixedInOut<f32>,
    chunk_in: usize,
    /// Output samples still to discard (group delay).
    delay_left: usize,
    input: Vec<f32>,
    out_buf: Vec<Vec<f32>>,
}

/// A streaming mono resampler with bounded memory. See the module docs.
pub struct StreamResampler {
    input_rate: u32,
    output_rate: u32,
    /// `None` when the rates are equal (pass-through).
    stage: Option<FftStage>,
    total_in: u64,
    total_out: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamResampler({} Hz -> {} Hz)", self.input_rate, self.output_rate)
    }
}

impl StreamResampler {
    /// A resampler from `input_rate` to `output_rate` (both 8000..=48000 Hz).
    pub fn new(input_rate: u32, output_rate: u32) -> Result<Self, ResampleError> {
        check_rate(input_rate)?;
        check_rate(output_rate)?;
        let stage = if input_rate == output_rate {
            None
        } else {
            let g = gcd(input_rate, output_rate);
            if g < MIN_RATE_GCD {
                return Err(ResampleError::UnsupportedPair { input: input_rate, output: output_rate });
            }
            let wanted = (input_rate * CHUNK_MS / 1000) as usize;
            let inner = FftFixedInOut::<f32>::new(input_rate as usize, output_rate as usize, wanted, 1)
                .map_err(|e| ResampleError::Internal(e.to_string()))?;
            let chunk_in = inner.input_frames_next();
            let delay_left = inner.output_delay();
            let out_buf = inner.output_buffer_allocate(true);
            Some(FftStage { inner, chunk_in, delay_left, input: Vec::with_capacity(chunk_in), out_buf })
        };
        Ok(Self { input_rate, output_rate, stage, total_in: 0, total_out: 0 })
    }

    /// To the generator's 16 kHz.
    pub fn to_16k(input_rate: u32) -> Result<Self, ResampleError> {
        Self::new(input_rate, GENERATOR_RATE)
    }

    /// To Opus' 48 kHz.
    pub fn to_48k(input_rate: u32) -> Result<Self, ResampleError> {
        Self::new(input_rate, OPUS_RATE)
    }

    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Input samples held back until the next internal chunk is complete
    /// (always < one chunk, about 10 ms).
    pub fn pending_input(&self) -> usize {
        self.stage.as_ref().map_or(0, |s| s.input.len())
    }

    /// Output samples a finished stream of `total_in` input samples yields.
    pub fn expected_output_len(&self, total_in: u64) -> u64 {
        (total_in * self.output_rate as u64 + self.input_rate as u64 / 2) / self.input_rate as u64
    }

    /// Resample `input`, appending the output that is ready to `out`.
    /// Returns the number of samples appended.
    pub fn process_into(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        self.total_in += input.len() as u64;
        let before = out.len();
        match &mut self.stage {
            None => out.extend_from_slice(input),
            Some(stage) => {
                let mut rest = input;
                while !rest.is_empty() {
                    let take = (stage.chunk_in - stage.input.len()).min(rest.len());
                    stage.input.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if stage.input.len() == stage.chunk_in {
                        run_chunk(stage, out)?;
                    }
                }
            }
        }
        let n = out.len() - before;
        self.total_out += n as u64;
        Ok(n)
    }

    /// Resample `input` and return the output that is ready.
    pub fn process(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        self.process_into(input, &mut out)?;
        Ok(out)
    }

    /// End of stream: push the held input and the filter tail through,
    /// appending to `out` so that the total output length is
    /// [`expected_output_len`](Self::expected_output_len) of the total input.
    /// The resampler is reset afterwards and can start a new stream.
    pub fn flush_into(&mut self, out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        let target = self.expected_output_len(self.total_in);
        let before = out.len();
        if let Some(stage) = &mut self.stage {
            // Zero-pad chunk by chunk until enough output came out.
            let mut guard = 0;
            while self.total_out + ((out.len() - before) as u64) < target {
                let fill = stage.chunk_in - stage.input.len();
                stage.input.extend(std::iter::repeat_n(0.0, fill));
                run_chunk(stage, out)?;
                guard += 1;
                if guard > 64 {
                    return Err(ResampleError::Internal("flush did not converge".into()));
                }
            }
            let keep = target.saturating_sub(self.total_out) as usize;
            out.truncate(before + keep);
        }
        let n = out.len() - before;
        self.reset();
        Ok(n)
    }

    /// [`flush_into`](Self::flush_into) returning a new vector.
    pub fn flush(&mut self) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        self.flush_into(&mut out)?;
        Ok(out)
    }

    /// Drop all held input and filter state (e.g. on barge-in).
    pub fn reset(&mut self) {
        if let Some(stage) = &mut self.stage {
            stage.inner.reset();
            stage.input.clear();
            stage.delay_left = stage.inner.output_delay();
        }
        self.total_in = 0;
        self.total_out = 0;
    }
}

fn run_chunk(stage: &mut FftStage, out: &mut Vec<f32>) -> Result<(), ResampleError> {
    let (_, produced) = stage
        .inner
        .process_into_buffer(&[&stage.input[..]], &mut stage.out_buf, None)
        .map_err(|e| ResampleError::Internal(e.to_string()))?;
    stage.input.clear();
    let skip = stage.delay_left.min(produced);
    stage.delay_left -= skip;
    out.extend_from_slice(&stage.out_buf[0][skip..produced]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()).collect()
    }

    /// Frequency estimate from the zero crossings of the middle of a signal.
    fn zero_crossing_freq(x: &[f32], rate: u32) -> f32 {
        let mid = &x[x.len() / 4..3 * x.len() / 4];
        let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        crossings as f32 / 2.0 / (mid.len() as f32 / rate as f32)
    }

    #[test]
    fn rates_convert_with_frequency_and_length_preserved() {
        for (rin, rout) in [(48_000, 16_000), (44_100, 16_000), (8_000, 48_000), (22_050, 48_000), (16_000, 48_000)] {
            let n = rin as usize; // one second
            let x = tone(440.0, rin, n);
            let mut r = StreamResampler::new(rin, rout).unwrap();
            let mut y = r.process(&x).unwrap();
            y.extend(r.flush().unwrap());
            assert_eq!(y.len(), rout as usize, "{rin}->{rout}");
            let f = zero_crossing_freq(&y, rout);
            assert!((f - 440.0).abs() < 3.0, "{rin}->{rout}: {f} Hz");
            // Delay is trimmed: output aligns with the input's time axis.
            let reference = tone(440.0, rout, y.len());
            let err: f32 = y[y.len() / 4..y.len() * 3 / 4]
                .iter()
                .zip(&reference[y.len() / 4..y.len() * 3 / 4])
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                / (y.len() / 2) as f32;
            assert!(err < 1e-3, "{rin}->{rout}: misaligned, mse {err}");
        }
    }

    #[test]
    fn streaming_blocks_equal_one_block() {
        let x = tone(300.0, 44_100, 30_000);
        let mut one = StreamResampler::to_16k(44_100).unwrap();
        let mut a = one.process(&x).unwrap();
        a.extend(one.flush().unwrap());

        let mut streamed = StreamResampler::to_16k(44_100).unwrap();
        let mut b = Vec::new();
        let sizes = [1usize, 7, 441, 1000, 13, 2048, 3];
        let mut pos = 0;
        let mut i = 0;
        while pos < x.len() {
            let n = sizes[i % sizes.len()].min(x.len() - pos);
            streamed.process_into(&x[pos..pos + n], &mut b).unwrap();
            assert!(streamed.pending_input() < 441 * 2, "input must stay bounded");
            pos += n;
            i += 1;
        }
        streamed.flush_into(&mut b).unwrap();
        assert_eq!(a.len(), b.len());
        let max = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(max < 1e-5, "max diff {max}");
    }

    #[test]
    fn same_rate_passes_through() {
        let x = tone(440.0, 16_000, 999);
        let mut r = StreamResampler::to_16k(16_000).unwrap();
        assert_eq!(r.process(&x).unwrap(), x);
        assert!(r.flush().unwrap().is_empty());
    }

    #[test]
    fn unsupported_rates_are_clear_errors() {
        let e = StreamResampler::to_16k(96_000).unwrap_err();
        assert_eq!(e, ResampleError::UnsupportedRate { rate: 96_000 });
        assert!(e.to_string().contains("96000"));
        assert!(StreamResampler::to_48k(4_000).is_err());
        assert!(StreamResampler::to_16k(0).is_err());
        let e = StreamResampler::to_16k(44_099).unwrap_err();
        assert!(matches!(e, ResampleError::UnsupportedPair { .. }), "{e}");
    }

    #[test]
    fn reset_starts_a_fresh_stream() {
        let x = tone(440.0, 48_000, 4_800);
        let mut r = StreamResampler::to_16k(48_000).unwrap();
        let mut first = r.process(&x).unwrap();
        first.extend(r.flush().unwrap());
        let mut second = r.process(&x).unwrap();
        second.extend(r.flush().unwrap());
        assert_eq!(first, second);
        assert_eq!(first.len(), 1_600);
    }
}
