//! Training clips rendered in-process by [`crate::synth`]: video as a
//! tensor in [-1, 1] with `1 + 4k` frames (the causal VAE's clip length),
//! the talk / listen 16 kHz tracks cut to the same span, and per-video-frame
//! talk / listen masks from the synth ground-truth behaviour state
//! (StreamAvatar takes them from TalkNet; here they are exact).
//!
//! Clip `i` of a [`ClipSource`] is a pure function of `(seed, i)`, so the
//! loader's whole state is one cursor (saved in the checkpoint).

use candle_core::{Device, Tensor};

use crate::eval::face_layout::FaceLayout;
use crate::synth::motion::BehaviourState;
use crate::synth::{render_clip, ClipSpec};

use super::TrainError;

/// One clip ready for a model.
#[derive(Debug, Clone)]
pub struct ClipTensors {
    /// `[1, 3, N, H, W]` in [-1, 1], `N = 1 + 4k`.
    pub video: Tensor,
    /// `(N + 1) * 16000 / 24` samples each (rounded down; one frame of silent tail).
    pub talk: Vec<f32>,
    pub listen: Vec<f32>,
    /// Per video frame: 1 while the avatar talks / listens.
    pub talk_mask: Vec<f32>,
    pub listen_mask: Vec<f32>,
}

/// Where clips come from: training identities, seeded.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipSource {
    pub seed: u64,
    /// Frame side in pixels.
    pub size: usize,
    /// Latent frames per clip after the reference (`N = 1 + 4 * latent_frames`).
    pub latent_frames: usize,
    /// Distinct identities cycled through (training range).
    pub identities: u64,
}

impl ClipSource {
    /// Video frames per clip.
    pub fn video_frames(&self) -> usize {
        1 + 4 * self.latent_frames
    }

    /// The spec of clip `index`.
    pub fn spec(&self, index: u64) -> ClipSpec {
        let frames = self.video_frames();
        // A little more than needed so the synth's frame count covers N.
        let seconds = (frames as f64 + 0.5) / 24.0;
        let identity = index % self.identities.max(1);
        ClipSpec::new(identity, self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(index), seconds, self.size)
    }

    /// The face regions of clip `index`'s identity at rest, in pixels.
    pub fn face_layout(&self, index: u64) -> Result<FaceLayout, TrainError> {
        let identity = crate::synth::identity::Identity::from_id(self.spec(index).identity_id);
        FaceLayout::of_identity(&identity, self.size)
            .map_err(|e| TrainError::Invalid(format!("face layout of clip {index}: {e}")))
    }

    /// Render clip `index` into tensors on `device`.
    pub fn clip(&self, index: u64, device: &Device) -> Result<ClipTensors, TrainError> {
        let spec = self.spec(index);
        let clip = render_clip(&spec)?;
        let n = self.video_frames();
        if clip.frames.len() < n {
            return Err(TrainError::Invalid(format!("synth gave {} frames, need {n}", clip.frames.len())));
        }
        let (h, w) = (clip.frames[0].height, clip.frames[0].width);
        let mut pix = Vec::with_capacity(3 * n * h * w);
        for c in 0..3 {
            for f in &clip.frames[..n] {
                pix.extend(f.data.iter().skip(c).step_by(3).map(|&v| v as f32 / 127.5 - 1.0));
            }
        }
        let video = Tensor::from_vec(pix, (1, 3, n, h, w), device)?;
        // One video frame of extra (silent) audio: the wav2vec2 hop (20 ms)
        // does not divide a 24 fps frame, so the features of exactly `n`
        // frames of audio end short of the last frame.
        let samples = (n + 1) * 16_000 / 24;
        let cut = |a: &[f32]| {
            let mut v = a[..a.len().min(samples)].to_vec();
            v.resize(samples, 0.0);
            v
        };
        let conv = &clip.script.conversation;
        let truth = &clip.script.truth[..n];
        let talk_mask = truth.iter().map(|t| f32::from(t.state == BehaviourState::Talk)).collect();
        let listen_mask = truth.iter().map(|t| f32::from(t.state == BehaviourState::Listen)).collect();
        Ok(ClipTensors { video, talk: cut(&conv.talk), listen: cut(&conv.listen), talk_mask, listen_mask })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_shapes_and_ranges() -> anyhow::Result<()> {
        let src = ClipSource { seed: 1, size: 32, latent_frames: 2, identities: 4 };
        let c = src.clip(0, &Device::Cpu)?;
        assert_eq!(c.video.dims(), &[1, 3, 9, 32, 32]);
        let (lo, hi) = (c.video.min_all()?.to_scalar::<f32>()?, c.video.max_all()?.to_scalar::<f32>()?);
        assert!(lo >= -1.0 && hi <= 1.0 && hi > lo);
        assert_eq!(c.talk.len(), 10 * 16_000 / 24);
        // 13 frames: one frame of silent tail, so the features cover frame 12.
        assert_eq!(ClipSource { latent_frames: 3, ..src.clone() }.clip(1, &Device::Cpu)?.talk.len(), 9_333);
        assert_eq!(c.talk_mask.len(), 9);
        assert!(c.talk_mask.iter().zip(&c.listen_mask).all(|(t, l)| t + l <= 1.0));
        assert_eq!(src.spec(3), src.spec(3));
        Ok(())
    }
}
