//! Training clips rendered in-process by [`crate::synth`]: video as a
//! tensor in [-1, 1] with `1 + 4k` frames (the causal VAE's clip length),
//! the talk / listen 16 kHz tracks cut to the same span, and per-video-frame
//! talk / listen masks from the synth ground-truth behaviour state
//! (StreamAvatar takes them from TalkNet; here they are exact).
//!
//! A clip is a window of a longer conversation that starts at a random
//! offset (up to [`ClipSource::max_offset_s`]): the first second of a
//! conversation is an idle lead-in and the start of one turn, so clips cut
//! there never showed the listening reactions (nods 0.2-0.6 s after the
//! partner's phrase ends) that the models must learn (session 11).
//!
//! With [`WindowChoice::Motion`] the window is the one with the most head
//! motion among [`MOTION_CANDIDATES`] random offsets: hard examples for a
//! VAE whose temporal path damps nods (session 11). With
//! [`WindowChoice::Listening`] it is the one with the most listening
//! reaction (the synth's nods timed to the partner's speech): the
//! examples of the teacher's listen-contrast term, which plain windows
//! hold on few of their clips (session 19).
//!
//! Clip `i` of a [`ClipSource`] is a pure function of `(seed, i)`, so the
//! loader's whole state is one cursor (saved in the checkpoint).

use candle_core::{Device, Tensor};

use crate::eval::face_layout::FaceLayout;
use crate::synth::motion::BehaviourState;
use crate::synth::rng::SynthRng;
use crate::synth::{script_clip, ClipSpec};

use super::TrainError;

/// Offsets are whole multiples of this many video frames: 3 frames at
/// 24 fps are exactly 2,000 samples at 16 kHz, so a window's audio starts
/// on a sample.
const OFFSET_STEP_FRAMES: usize = 3;
const SAMPLES_PER_OFFSET_STEP: usize = 2_000;

/// The default of [`ClipSource::max_offset_s`] for training: windows over
/// the first ~12 s of a conversation (a few turns each way).
pub const DEFAULT_MAX_OFFSET_S: f64 = 12.0;

/// Random offsets a motion or listening window is chosen from.
pub const MOTION_CANDIDATES: usize = 8;

/// Where in its conversation a clip's window lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowChoice {
    /// At one random offset.
    #[default]
    Random,
    /// Where the head moves most ([`head_motion`]) among
    /// [`MOTION_CANDIDATES`] random offsets.
    Motion,
    /// Where the listening reactions are largest ([`listening_reaction`])
    /// among [`MOTION_CANDIDATES`] random offsets.
    Listening,
}

/// Listening-reaction pitch (degrees, summed over the frames) that comes
/// after a frame of the partner's turn in the same window: a window that
/// starts after the turn shows the nod without the speech that explains
/// it.
pub fn listening_reaction(poses: &[crate::synth::motion::Pose]) -> f32 {
    let Some(first_listen) = poses.iter().position(|p| p.state == BehaviourState::Listen) else {
        return 0.0;
    };
    poses[first_listen + 1..].iter().map(|p| p.reaction_pitch.abs()).sum()
}

/// Head motion in `poses`: the summed frame-to-frame change of yaw, pitch
/// and roll, degrees.
pub fn head_motion(poses: &[crate::synth::motion::Pose]) -> f32 {
    poses
        .windows(2)
        .map(|w| (w[1].yaw - w[0].yaw).abs() + (w[1].pitch - w[0].pitch).abs() + (w[1].roll - w[0].roll).abs())
        .sum()
}

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
    /// Per video frame: the synth's ground-truth mouth openness ...
    pub mouth_open: Vec<f32>,
    /// ... and where the mouth is (pixels).
    pub mouth_centres: Vec<(f32, f32)>,
}

/// The synth's truth about the mouth per video frame of a clip.
#[derive(Debug, Clone)]
pub struct MouthTruth {
    /// Openness (the same values as [`ClipTensors::mouth_open`]).
    pub open: Vec<f32>,
    /// Where the mouth is, pixels.
    pub centres: Vec<(f32, f32)>,
}

/// The synth's truth about the head per video frame of a clip.
#[derive(Debug, Clone)]
pub struct HeadTruth {
    /// Head pitch, degrees (> 0 nods down).
    pub pitch: Vec<f32>,
    /// The face region of the clip's identity at rest, pixels.
    pub face: crate::eval::face_layout::PixelBox,
    /// 1 where the avatar listens (the partner's turn), else 0.
    pub listening: Vec<f32>,
    /// Degrees of `pitch` that are listening reactions (nods timed to the
    /// partner's speech, [`crate::synth::motion::Pose::reaction_pitch`]).
    pub reaction: Vec<f32>,
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
    /// Clip `i` starts at a random offset in `[0, max_offset_s]` seconds
    /// of its conversation (0: every clip starts the conversation).
    pub max_offset_s: f64,
    /// Where the window lies (see module docs).
    pub windows: WindowChoice,
}

impl ClipSource {
    /// Video frames per clip.
    pub fn video_frames(&self) -> usize {
        1 + 4 * self.latent_frames
    }

    /// The window starts clip `index` may take: one uniform draw, or
    /// [`MOTION_CANDIDATES`] for motion and listening windows.
    fn candidate_offsets(&self, index: u64) -> Vec<usize> {
        let steps = (self.max_offset_s.max(0.0) * 24.0 / OFFSET_STEP_FRAMES as f64).floor() as usize;
        let mut rng = SynthRng::derive(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0x0FF5E7);
        let count = if self.windows == WindowChoice::Random { 1 } else { MOTION_CANDIDATES };
        (0..count).map(|_| rng.index(steps + 1) * OFFSET_STEP_FRAMES).collect()
    }

    /// The latest frame clip `index`'s window may start at.
    fn max_offset_frames(&self, index: u64) -> usize {
        self.candidate_offsets(index).into_iter().max().unwrap_or(0)
    }

    /// The first video frame of clip `index` in its conversation, given the
    /// conversation's script.
    pub fn offset_frames(&self, index: u64, script: &crate::synth::ClipScript) -> usize {
        let n = self.video_frames();
        let score_of = |start: usize| {
            let poses = script.poses.get(start..start + n).unwrap_or(&[]);
            match self.windows {
                WindowChoice::Listening => listening_reaction(poses),
                WindowChoice::Random | WindowChoice::Motion => head_motion(poses),
            }
        };
        let mut best = (0, f32::NEG_INFINITY);
        for start in self.candidate_offsets(index) {
            let score = score_of(start);
            if score > best.1 {
                best = (start, score);
            }
        }
        best.0
    }

    /// The spec of clip `index`'s whole conversation (up to the window's end).
    pub fn spec(&self, index: u64) -> ClipSpec {
        let frames = self.max_offset_frames(index) + self.video_frames();
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

    /// Clip `index`'s identity in the neutral pose, mouth closed: the
    /// reference the evaluation measures mouth openness against.
    pub fn reference_frame(&self, index: u64) -> Result<crate::media::frame::RgbFrame, TrainError> {
        Ok(script_clip(&self.spec(index))?.reference_frame())
    }

    /// Clip `index`'s conversation script and the first frame of its
    /// window (checked to hold the window's frames).
    fn window(&self, index: u64) -> Result<(crate::synth::ClipScript, usize), TrainError> {
        let script = script_clip(&self.spec(index))?;
        let (start, n) = (self.offset_frames(index, &script), self.video_frames());
        if script.poses.len() < start + n {
            return Err(TrainError::Invalid(format!(
                "synth gave {} frames, need {} (offset {start})",
                script.poses.len(),
                start + n
            )));
        }
        Ok((script, start))
    }

    /// The synth's truth about the mouth in each video frame of clip
    /// `index`, without rendering (the same values as the clip's
    /// [`ClipTensors::mouth_open`] and [`ClipTensors::mouth_centres`]).
    pub fn mouth_truth(&self, index: u64) -> Result<MouthTruth, TrainError> {
        let (script, start) = self.window(index)?;
        Ok(self.mouth_truth_in(&script, start))
    }

    /// The synth's truth about the head in each video frame of clip
    /// `index`, without rendering.
    pub fn head_truth(&self, index: u64) -> Result<HeadTruth, TrainError> {
        let (script, start) = self.window(index)?;
        let poses = &script.poses[start..start + self.video_frames()];
        let pitch = poses.iter().map(|p| p.pitch).collect();
        let listening = poses.iter().map(|p| f32::from(p.state == BehaviourState::Listen)).collect();
        let reaction = poses.iter().map(|p| p.reaction_pitch).collect();
        Ok(HeadTruth { pitch, face: self.face_layout(index)?.face, listening, reaction })
    }

    /// The mouth's openness and position in the window from `start`.
    fn mouth_truth_in(&self, script: &crate::synth::ClipScript, start: usize) -> MouthTruth {
        let n = self.video_frames();
        let open = script.truth[start..start + n].iter().map(|t| t.mouth_open).collect();
        let poses = &script.poses[start..start + n];
        let centres =
            poses.iter().map(|p| crate::synth::avatar::mouth_centre(&script.identity, p, self.size)).collect();
        MouthTruth { open, centres }
    }

    /// Render clip `index` into tensors on `device`: only the window's
    /// frames are drawn.
    pub fn clip(&self, index: u64, device: &Device) -> Result<ClipTensors, TrainError> {
        let (script, start) = self.window(index)?;
        let n = self.video_frames();
        let frames = (start..start + n).map(|f| script.render_frame(f)).collect::<Result<Vec<_>, _>>()?;
        let (h, w) = (frames[0].height, frames[0].width);
        let mut pix = Vec::with_capacity(3 * n * h * w);
        for c in 0..3 {
            for f in &frames {
                pix.extend(f.data.iter().skip(c).step_by(3).map(|&v| v as f32 / 127.5 - 1.0));
            }
        }
        let video = Tensor::from_vec(pix, (1, 3, n, h, w), device)?;
        // One video frame of extra (silent) audio: the wav2vec2 hop (20 ms)
        // does not divide a 24 fps frame, so the features of exactly `n`
        // frames of audio end short of the last frame.
        let first = start / OFFSET_STEP_FRAMES * SAMPLES_PER_OFFSET_STEP;
        let samples = (n + 1) * 16_000 / 24;
        let cut = |a: &[f32]| {
            let mut v = a[first.min(a.len())..a.len().min(first + samples)].to_vec();
            v.resize(samples, 0.0);
            v
        };
        let conv = &script.conversation;
        let truth = &script.truth[start..start + n];
        let talk_mask = truth.iter().map(|t| f32::from(t.state == BehaviourState::Talk)).collect();
        let listen_mask = truth.iter().map(|t| f32::from(t.state == BehaviourState::Listen)).collect();
        let MouthTruth { open: mouth_open, centres: mouth_centres } = self.mouth_truth_in(&script, start);
        Ok(ClipTensors {
            video,
            talk: cut(&conv.talk),
            listen: cut(&conv.listen),
            talk_mask,
            listen_mask,
            mouth_open,
            mouth_centres,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_shapes_and_ranges() -> anyhow::Result<()> {
        let src = ClipSource {
            seed: 1,
            size: 32,
            latent_frames: 2,
            identities: 4,
            max_offset_s: 0.0,
            windows: WindowChoice::Random,
        };
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
        assert_eq!(src.mouth_truth(0)?.open, c.mouth_open);
        assert_eq!(src.mouth_truth(0)?.centres, c.mouth_centres);
        Ok(())
    }

    #[test]
    fn windows_start_across_the_conversation_and_match_its_frames_and_audio() -> anyhow::Result<()> {
        let src = ClipSource {
            seed: 2,
            size: 32,
            latent_frames: 2,
            identities: 4,
            max_offset_s: 6.0,
            windows: WindowChoice::Random,
        };
        let offsets: Vec<usize> = (0..40).map(|i| src.candidate_offsets(i)[0]).collect();
        assert!(offsets.iter().all(|&o| o % OFFSET_STEP_FRAMES == 0 && o <= 6 * 24), "{offsets:?}");
        assert!(offsets.iter().any(|&o| o > 3 * 24) && offsets.iter().any(|&o| o < 3 * 24), "{offsets:?}");
        assert_eq!(ClipSource { max_offset_s: 0.0, ..src.clone() }.candidate_offsets(7), vec![0]);

        // The window is the same frames and audio as the whole conversation
        // rendered from its start, cut at the offset.
        let index = (0..40).find(|&i| src.candidate_offsets(i)[0] >= 24).expect("an offset of >= 1 s");
        let whole = crate::synth::render_clip(&src.spec(index))?;
        let start = src.offset_frames(index, &whole.script);
        assert_eq!(start, src.candidate_offsets(index)[0]);
        let clip = src.clip(index, &Device::Cpu)?;
        let frame = |f: &crate::media::frame::RgbFrame| -> Vec<f32> {
            f.data.iter().step_by(3).map(|&v| v as f32 / 127.5 - 1.0).collect()
        };
        for k in [0, 8] {
            let red: Vec<f32> = clip.video.narrow(2, k, 1)?.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
            assert_eq!(red, frame(&whole.frames[start + k]), "frame {k}");
        }
        let first = start * 16_000 / 24;
        let conv = &whole.script.conversation;
        assert_eq!(&clip.talk[..100], &conv.talk[first..first + 100]);
        assert_eq!(&clip.listen[..100], &conv.listen[first..first + 100]);
        let states = &whole.script.truth[start..start + 9];
        let listen: Vec<f32> = states.iter().map(|t| f32::from(t.state == BehaviourState::Listen)).collect();
        assert_eq!(clip.listen_mask, listen);
        Ok(())
    }

    #[test]
    fn motion_windows_pick_the_candidate_where_the_head_moves_most() -> anyhow::Result<()> {
        let src = ClipSource {
            seed: 5,
            size: 32,
            latent_frames: 5,
            identities: 4,
            max_offset_s: 12.0,
            windows: WindowChoice::Motion,
        };
        let (mut picked, mut uniform) = (0.0, 0.0);
        for index in 0..6 {
            let candidates = src.candidate_offsets(index);
            assert_eq!(candidates.len(), MOTION_CANDIDATES);
            let script = crate::synth::script_clip(&src.spec(index))?;
            let n = src.video_frames();
            let start = src.offset_frames(index, &script);
            let motion = |s: usize| head_motion(&script.poses[s..s + n]);
            assert!(candidates.contains(&start));
            assert!(candidates.iter().all(|&c| motion(c) <= motion(start)), "not the most moving window");
            picked += motion(start);
            uniform += motion(candidates[0]);
        }
        assert!(picked > uniform, "motion windows move no more than uniform ones: {picked} vs {uniform}");
        Ok(())
    }

    /// Listening windows hold more of the synth's listening nods (after a
    /// frame of the partner's turn) than plain windows of the same clips,
    /// and at least half of them hold one.
    #[test]
    fn listening_windows_pick_the_candidate_with_the_most_reaction() -> anyhow::Result<()> {
        let src = ClipSource {
            seed: 5,
            size: 32,
            latent_frames: 6,
            identities: 4,
            max_offset_s: 12.0,
            windows: WindowChoice::Listening,
        };
        let plain = ClipSource { windows: WindowChoice::Random, ..src.clone() };
        let (mut reacting, mut plain_reacting) = (0, 0);
        for index in 0..12 {
            let candidates = src.candidate_offsets(index);
            assert_eq!(candidates.len(), MOTION_CANDIDATES);
            let reaction = |s: &ClipSource| -> anyhow::Result<f32> {
                let truth = s.head_truth(index)?;
                let Some(first) = truth.listening.iter().position(|&l| l > 0.0) else {
                    return Ok(0.0);
                };
                Ok(truth.reaction[first + 1..].iter().map(|r| r.abs()).sum())
            };
            let (picked, first) = (reaction(&src)?, reaction(&plain)?);
            assert!(picked >= first, "clip {index}: {picked} < {first}");
            reacting += usize::from(picked > 0.0);
            plain_reacting += usize::from(first > 0.0);
        }
        assert!(reacting >= 6 && reacting > 2 * plain_reacting, "{reacting} vs {plain_reacting} of 12 clips react");
        Ok(())
    }
}
