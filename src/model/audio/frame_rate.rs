//! Resampling of wav2vec2 features (one frame per `hop` samples, 50 Hz) to
//! the video frame rate by linear interpolation in time.
//!
//! MultiTalk / OmniAvatar interpolate a whole clip with
//! `F.interpolate(mode="linear", align_corners=True)` to the clip's frame
//! count. That mapping depends on the clip length, so a streamed chunk would
//! not land on the same positions as the whole clip. Here every frame is
//! placed at its absolute time instead:
//!
//! * video frame `i` shows audio `[i/fps, (i+1)/fps)`; it samples the
//!   features at its centre, `t_i = (i + 0.5) / fps`;
//! * feature frame `j` covers samples `[j*hop, j*hop + rf)`; its centre is
//!   `(j*hop + rf/2) / sr`.
//!
//! So video frame `i` reads the fractional feature index
//! `p_i = ((i + 0.5) * sr / fps - rf / 2) / hop`, linearly interpolated
//! between its two neighbours and clamped to the available frames. For a
//! whole clip this differs from the align_corners mapping by less than one
//! feature frame; in exchange the streamed and whole-clip features agree.

use candle_core::Tensor;

use super::wav2vec2::receptive_field;
use super::AudioError;
use crate::config::Wav2Vec2Config;

/// Time mapping between wav2vec2 feature frames and video frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRateMap {
    pub sample_rate: usize,
    pub fps: u32,
    /// Samples between feature frames (320).
    pub hop: usize,
    /// Samples seen by one feature frame (400).
    pub receptive_field: usize,
}

impl FrameRateMap {
    pub fn new(cfg: &Wav2Vec2Config, sample_rate: usize, fps: u32) -> Result<Self, AudioError> {
        if sample_rate == 0 || fps == 0 || cfg.hop() == 0 {
            return Err(AudioError::Config(format!(
                "sample_rate ({sample_rate}), fps ({fps}) and the wav2vec2 hop ({}) must be > 0",
                cfg.hop()
            )));
        }
        Ok(Self { sample_rate, fps, hop: cfg.hop(), receptive_field: receptive_field(cfg) })
    }

    /// Fractional global feature index read by global video frame `frame`.
    pub fn feature_position(&self, frame: u64) -> f64 {
        let t_samples = (frame as f64 + 0.5) * self.sample_rate as f64 / self.fps as f64;
        (t_samples - self.receptive_field as f64 / 2.0) / self.hop as f64
    }

    /// Whole video frames covered by `samples` samples of audio.
    pub fn video_frames_for_samples(&self, samples: u64) -> u64 {
        samples * self.fps as u64 / self.sample_rate as u64
    }

    /// First sample of global video frame `frame` (floor).
    pub fn frame_start_sample(&self, frame: u64) -> u64 {
        frame * self.sample_rate as u64 / self.fps as u64
    }

    /// Interpolate `features` [B, L, T, H], whose frame 0 is global feature
    /// frame `first_feature`, at the global video frames `video_frames`:
    /// returns [B, L, video_frames.len(), H]. Positions outside the available
    /// feature frames are clamped to the first / last one.
    pub fn resample(&self, features: &Tensor, first_feature: u64, video_frames: &[u64]) -> Result<Tensor, AudioError> {
        let (_b, _l, t, _h) = features
            .dims4()
            .map_err(|_| AudioError::BadInput(format!("features must be [B, L, T, H], got {:?}", features.dims())))?;
        if t == 0 || video_frames.is_empty() {
            return Err(AudioError::BadInput(format!(
                "cannot resample {t} feature frames to {} video frames",
                video_frames.len()
            )));
        }
        let n = video_frames.len();
        let mut lo = Vec::with_capacity(n);
        let mut hi = Vec::with_capacity(n);
        let mut w = Vec::with_capacity(n);
        let last = (t - 1) as f64;
        for &f in video_frames {
            let p = (self.feature_position(f) - first_feature as f64).clamp(0.0, last);
            let l = p.floor();
            lo.push(l as u32);
            hi.push((l as usize + 1).min(t - 1) as u32);
            w.push((p - l) as f32);
        }
        let dev = features.device();
        let lo = Tensor::from_vec(lo, n, dev)?;
        let hi = Tensor::from_vec(hi, n, dev)?;
        let w = Tensor::from_vec(w, (1, 1, n, 1), dev)?.to_dtype(features.dtype())?;
        let a = features.index_select(&lo, 2)?;
        let b = features.index_select(&hi, 2)?;
        // a + w * (b - a)
        Ok((&a + (b - &a)?.broadcast_mul(&w)?)?)
    }

    /// Whole clip: features [B, L, T, H] of a clip of `samples` samples
    /// (starting at sample 0) -> [B, L, N, H] with N = whole video frames.
    pub fn resample_clip(&self, features: &Tensor, samples: u64) -> Result<Tensor, AudioError> {
        let n = self.video_frames_for_samples(samples);
        let frames: Vec<u64> = (0..n).collect();
        self.resample(features, 0, &frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn map() -> FrameRateMap {
        FrameRateMap::new(&Wav2Vec2Config::tiny(), 16_000, 24).unwrap()
    }

    #[test]
    fn positions_follow_frame_centres() {
        let m = map();
        // frame 0 centre = 333.3 samples; feature 0 centre = 200 samples.
        assert!((m.feature_position(0) - (333.333_333 - 200.0) / 320.0).abs() < 1e-6);
        // 24 video frames per second, 50 feature frames per second.
        let d = m.feature_position(24) - m.feature_position(0);
        assert!((d - 50.0).abs() < 1e-9);
        assert_eq!(m.video_frames_for_samples(16_000), 24);
        assert_eq!(m.frame_start_sample(12), 8_000);
    }

    #[test]
    fn linear_ramp_is_reproduced_exactly() -> anyhow::Result<()> {
        // feature value = its global index: interpolation must return p_i.
        let m = map();
        let t = 60usize;
        let vals: Vec<f32> = (0..t).map(|j| j as f32).collect();
        let feats = Tensor::from_vec(vals, (1, 1, t, 1), &Device::Cpu)?;
        let out = m.resample_clip(&feats, 16_000)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(out.len(), 24);
        for (i, v) in out.iter().enumerate() {
            let p = m.feature_position(i as u64) as f32;
            assert!((v - p).abs() < 1e-4, "frame {i}: {v} vs {p}");
        }
        // Offset window: same global positions from a slice starting at feature 10.
        let part = feats.narrow(2, 10, 40)?;
        let frames: Vec<u64> = (6..18).collect();
        let out2 = m.resample(&part, 10, &frames)?.flatten_all()?.to_vec1::<f32>()?;
        for (k, v) in out2.iter().enumerate() {
            assert!((v - out[6 + k]).abs() < 1e-4);
        }
        Ok(())
    }

    #[test]
    fn clamps_at_edges() -> anyhow::Result<()> {
        let m = map();
        let feats = Tensor::from_vec(vec![1f32, 2., 3.], (1, 1, 3, 1), &Device::Cpu)?;
        let out = m.resample(&feats, 0, &[0, 100])?.flatten_all()?.to_vec1::<f32>()?;
        assert!((out[0] - (1.0 + m.feature_position(0) as f32)).abs() < 1e-5);
        assert_eq!(out[1], 3.0);
        Ok(())
    }
}
