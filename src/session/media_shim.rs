//! Thin codec adapters the session needs (streaming resampler, Opus
//! encoder/decoder at 48 kHz mono 20 ms, RGB -> I420 -> H.264 Annex-B).
//!
//! These mirror the API the `media` module publishes
//! (`media::resample::StreamResampler`, `media::opus`, `media::h264`) and
//! exist so `session` builds before that branch is merged. Once `media` is
//! merged, this file's whole body becomes the adapter below (verified: the
//! session unit tests and tests/e2e_loopback.rs pass with it on top of the
//! media branch at 37ccb78, A/V offset -5 ms):
//!
//! ```text
//! use crate::media::frame::RgbFrame;
//! use crate::media::{h264, opus};
//! pub use crate::media::opus::OpusDecoder;
//! pub use crate::media::resample::StreamResampler;
//!
//! pub struct OpusEncoder(opus::OpusEncoder);
//! impl OpusEncoder {
//!     pub fn new() -> Result<Self, opus::OpusError> { opus::OpusEncoder::new().map(Self) }
//!     pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, opus::OpusError> { self.0.encode_frame(pcm) }
//! }
//! pub struct H264Encoder(h264::H264Encoder);
//! impl H264Encoder {
//!     pub fn new(width: usize, height: usize, fps: u32, bitrate_bps: u32) -> Result<Self, h264::H264Error> {
//!         h264::H264Encoder::new(width, height, fps, Some(bitrate_bps)).map(Self)
//!     }
//!     pub fn encode(&mut self, frame: &RgbFrame, force_keyframe: bool) -> Result<Vec<u8>, h264::H264Error> {
//!         self.0.encode_rgb(frame, force_keyframe).map(|f| f.data)
//!     }
//! }
//! ```

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Level, Profile, RateControlMode, UsageType,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::OpenH264API;
use rubato::{FastFixedIn, PolynomialDegree, Resampler};

use crate::media::frame::RgbFrame;

/// Opus frame: 20 ms at 48 kHz.
pub const OPUS_FRAME_48K: usize = 960;

/// Codec failures.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("sample rate {0} Hz outside 8000..=48000")]
    BadRate(u32),
    #[error("resampler: {0}")]
    Resample(String),
    #[error("opus: {0}")]
    Opus(String),
    #[error("h264: {0}")]
    H264(String),
    #[error("frame is {got_w}x{got_h} with {len} bytes, expected {want_w}x{want_h} RGB24")]
    BadFrame {
        got_w: usize,
        got_h: usize,
        len: usize,
        want_w: usize,
        want_h: usize,
    },
}

/// Streaming resampler: input blocks of any length, output as it is ready;
/// output sample `n` is at time `n / out_rate` of the input (group delay trimmed).
pub struct StreamResampler {
    in_rate: u32,
    out_rate: u32,
    inner: Option<FastFixedIn<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    to_trim: usize,
    total_in: u64,
    total_out: u64,
}

impl StreamResampler {
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, CodecError> {
        for r in [in_rate, out_rate] {
            if !(8000..=48000).contains(&r) {
                return Err(CodecError::BadRate(r));
            }
        }
        let chunk = (in_rate / 100) as usize; // 10 ms
        let (inner, to_trim) = if in_rate == out_rate {
            (None, 0)
        } else {
            let r = FastFixedIn::<f32>::new(out_rate as f64 / in_rate as f64, 1.0, PolynomialDegree::Cubic, chunk, 1)
                .map_err(|e| CodecError::Resample(e.to_string()))?;
            let delay = r.output_delay();
            (Some(r), delay)
        };
        Ok(Self {
            in_rate,
            out_rate,
            inner,
            chunk,
            pending: Vec::new(),
            to_trim,
            total_in: 0,
            total_out: 0,
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.in_rate
    }

    pub fn process(&mut self, input: &[f32]) -> Result<Vec<f32>, CodecError> {
        self.total_in += input.len() as u64;
        let Some(r) = self.inner.as_mut() else {
            self.total_out += input.len() as u64;
            return Ok(input.to_vec());
        };
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        let mut start = 0;
        while self.pending.len() - start >= self.chunk {
            let block = &self.pending[start..start + self.chunk];
            let res = r
                .process(&[block], None)
                .map_err(|e| CodecError::Resample(e.to_string()))?;
            out.extend_from_slice(&res[0]);
            start += self.chunk;
        }
        self.pending.drain(..start);
        Ok(self.trim(out))
    }

    /// Push out everything still held; the stream then has exactly
    /// `round(total_in * out_rate / in_rate)` output samples. Resets the state.
    pub fn flush(&mut self) -> Result<Vec<f32>, CodecError> {
        let want = (self.total_in as f64 * self.out_rate as f64 / self.in_rate as f64).round() as u64;
        let mut out = Vec::new();
        if let Some(r) = self.inner.as_mut() {
            let mut guard = 0;
            while self.total_out + (out.len() as u64).saturating_sub(self.to_trim as u64) < want && guard < 8 {
                let mut block = std::mem::take(&mut self.pending);
                block.resize(self.chunk, 0.0);
                let res = r
                    .process(&[&block[..]], None)
                    .map_err(|e| CodecError::Resample(e.to_string()))?;
                out.extend_from_slice(&res[0]);
                guard += 1;
            }
        }
        let mut out = self.trim(out);
        let room = want.saturating_sub(self.total_out - out.len() as u64) as usize;
        out.truncate(room);
        self.total_out = self.total_out - (self.total_out.min(out.len() as u64)) + out.len() as u64;
        self.reset();
        Ok(out)
    }

    pub fn reset(&mut self) {
        if let Some(r) = self.inner.as_mut() {
            r.reset();
            self.to_trim = r.output_delay();
        }
        self.pending.clear();
        self.total_in = 0;
        self.total_out = 0;
    }

    fn trim(&mut self, mut out: Vec<f32>) -> Vec<f32> {
        let n = self.to_trim.min(out.len());
        out.drain(..n);
        self.to_trim -= n;
        self.total_out += out.len() as u64;
        out
    }
}

/// Opus encoder, 48 kHz mono, 20 ms frames, VoIP tuned.
pub struct OpusEncoder {
    enc: opus::Encoder,
}

impl OpusEncoder {
    pub fn new() -> Result<Self, CodecError> {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| CodecError::Opus(e.to_string()))?;
        enc.set_bitrate(opus::Bitrate::Bits(32_000))
            .map_err(|e| CodecError::Opus(e.to_string()))?;
        Ok(Self { enc })
    }

    /// Encode exactly 960 samples (20 ms at 48 kHz).
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, CodecError> {
        if pcm.len() != OPUS_FRAME_48K {
            return Err(CodecError::Opus(format!(
                "need {OPUS_FRAME_48K} samples, got {}",
                pcm.len()
            )));
        }
        self.enc
            .encode_vec_float(pcm, 4000)
            .map_err(|e| CodecError::Opus(e.to_string()))
    }
}

/// Opus decoder to 48 kHz mono (stereo streams are downmixed by libopus).
pub struct OpusDecoder {
    dec: opus::Decoder,
    buf: Vec<f32>,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, CodecError> {
        let dec = opus::Decoder::new(48_000, opus::Channels::Mono).map_err(|e| CodecError::Opus(e.to_string()))?;
        Ok(Self {
            dec,
            buf: vec![0.0; 5760],
        })
    }

    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, CodecError> {
        let n = self
            .dec
            .decode_float(packet, &mut self.buf, false)
            .map_err(|e| CodecError::Opus(e.to_string()))?;
        Ok(self.buf[..n].to_vec())
    }
}

/// RGB frames -> H.264 (constrained baseline, Annex-B), keyframe on demand.
pub struct H264Encoder {
    enc: Encoder,
    width: usize,
    height: usize,
}

impl H264Encoder {
    pub fn new(width: usize, height: usize, fps: u32, bitrate_bps: u32) -> Result<Self, CodecError> {
        if width == 0 || height == 0 || width % 2 != 0 || height % 2 != 0 {
            return Err(CodecError::H264(format!(
                "frame size {width}x{height} must be even and non-zero"
            )));
        }
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 2));
        let enc = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| CodecError::H264(e.to_string()))?;
        Ok(Self { enc, width, height })
    }

    /// Encode one frame; returns the Annex-B access unit (may be empty if
    /// the encoder chose to skip it).
    pub fn encode(&mut self, frame: &RgbFrame, force_keyframe: bool) -> Result<Vec<u8>, CodecError> {
        if frame.width != self.width || frame.height != self.height || frame.data.len() != self.width * self.height * 3
        {
            return Err(CodecError::BadFrame {
                got_w: frame.width,
                got_h: frame.height,
                len: frame.data.len(),
                want_w: self.width,
                want_h: self.height,
            });
        }
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&frame.data, (self.width, self.height)));
        if force_keyframe {
            self.enc.force_intra_frame();
        }
        let bits = self.enc.encode(&yuv).map_err(|e| CodecError::H264(e.to_string()))?;
        Ok(bits.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampler_length_and_tone_survive() {
        let mut r = StreamResampler::new(24_000, 16_000).unwrap();
        let tone: Vec<f32> = (0..24_000)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 24_000.0).sin())
            .collect();
        let mut out = Vec::new();
        for block in tone.chunks(333) {
            out.extend(r.process(block).unwrap());
        }
        out.extend(r.flush().unwrap());
        assert_eq!(out.len(), 16_000);
        let rms = (out[2000..14000].iter().map(|x| x * x).sum::<f32>() / 12000.0).sqrt();
        assert!((rms - 0.707).abs() < 0.05, "rms {rms}");
        assert!(StreamResampler::new(4000, 16000).is_err());
    }

    #[test]
    fn opus_round_trip_and_h264_keyframe() {
        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let pcm: Vec<f32> = (0..960).map(|i| 0.3 * (i as f32 * 0.05).sin()).collect();
        let pkt = enc.encode(&pcm).unwrap();
        assert_eq!(dec.decode(&pkt).unwrap().len(), 960);
        assert!(enc.encode(&pcm[..100]).is_err());

        let mut h = H264Encoder::new(64, 64, 24, 300_000).unwrap();
        let au = h.encode(&RgbFrame::solid(64, 64, [10, 200, 30]), true).unwrap();
        assert!(au.starts_with(&[0, 0, 0, 1]));
        assert!(h.encode(&RgbFrame::solid(32, 32, [0, 0, 0]), false).is_err());
        assert!(H264Encoder::new(63, 64, 24, 1).is_err());
    }
}
