//! One synthetic clip, in process: conversation audio, per-frame poses and
//! ground truth ([`script_clip`], cheap) and the rendered frames
//! ([`render_clip`], or frame by frame with [`ClipScript::render_frame`]).

use serde::Serialize;

use super::avatar::{draw_avatar, hand_positions};
use super::conversation::{build_conversation, frame_rms, Conversation, SentenceSplit, AUDIO_RATE};
use super::identity::{Identity, IdentitySplit};
use super::motion::{synthesize_motion, BehaviourState, MotionInput, Pose, FPS};
use super::phonemes::viseme_track;
use super::SynthError;
use crate::media::frame::RgbFrame;

/// Smallest and largest frame side accepted.
pub const MIN_SIZE: usize = 16;
pub const MAX_SIZE: usize = 1024;
/// Longest clip accepted (seconds).
pub const MAX_SECONDS: f64 = 600.0;

/// What to synthesise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipSpec {
    /// Identity id (see [`super::identity`] for the train / held-out ranges).
    pub identity_id: u64,
    /// Seed of the conversation and the motion.
    pub seed: u64,
    pub seconds: f64,
    /// Frame side in pixels (frames are square).
    pub size: usize,
    /// Sentence subset; held-out identities normally use held-out sentences.
    pub sentences: SentenceSplit,
}

impl ClipSpec {
    /// A clip whose sentence split follows the identity's split.
    pub fn new(identity_id: u64, seed: u64, seconds: f64, size: usize) -> Self {
        let sentences = match IdentitySplit::of(identity_id) {
            Some(IdentitySplit::Train) => SentenceSplit::Train,
            _ => SentenceSplit::Heldout,
        };
        Self { identity_id, seed, seconds, size, sentences }
    }

    /// Number of video frames (24 fps).
    pub fn n_frames(&self) -> usize {
        (self.seconds * FPS).floor() as usize
    }

    fn validate(&self) -> Result<(), SynthError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(SynthError::InvalidSpec(format!(
                "frame size {} must be in {MIN_SIZE}..={MAX_SIZE}",
                self.size
            )));
        }
        if !(self.seconds.is_finite() && self.seconds >= 1.0 / FPS && self.seconds <= MAX_SECONDS) {
            return Err(SynthError::InvalidSpec(format!(
                "clip length {} s must be in [{:.3}, {MAX_SECONDS}]",
                self.seconds,
                1.0 / FPS
            )));
        }
        Ok(())
    }
}

/// Ground truth of one frame (one line of `gt.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameTruth {
    pub frame: usize,
    pub time_s: f64,
    pub state: BehaviourState,
    pub mouth_open: f32,
    pub mouth_width: f32,
    /// Degrees.
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
    /// Degrees of `pitch` that are listening reactions (nods timed to the
    /// partner's speech; [`Pose::reaction_pitch`]).
    pub reaction_pitch: f32,
    pub gaze_x: f32,
    pub gaze_y: f32,
    pub blink: f32,
    pub brow: f32,
    pub smile: f32,
    pub breath: f32,
    /// Hand centres, viewer's left then right, normalised image coordinates
    /// (y > 1 means below the frame).
    pub hands: [[f32; 2]; 2],
    /// Per-frame RMS of the talk and listen tracks.
    pub talk_rms: f32,
    pub listen_rms: f32,
}

/// Everything about a clip except its pixels.
#[derive(Debug, Clone)]
pub struct ClipScript {
    pub spec: ClipSpec,
    pub identity: Identity,
    pub conversation: Conversation,
    pub poses: Vec<Pose>,
    pub truth: Vec<FrameTruth>,
}

impl ClipScript {
    /// Render frame `index` (an out-of-range index is an error).
    pub fn render_frame(&self, index: usize) -> Result<RgbFrame, SynthError> {
        let pose = self.poses.get(index).ok_or_else(|| {
            SynthError::InvalidSpec(format!("frame {index} out of range (clip has {})", self.poses.len()))
        })?;
        Ok(draw_avatar(&self.identity, pose, self.spec.size))
    }

    /// The identity in a neutral front-facing pose: the reference image.
    pub fn reference_frame(&self) -> RgbFrame {
        draw_avatar(&self.identity, &Pose::neutral(), self.spec.size)
    }

    /// Sample rate of the talk and listen tracks.
    pub fn audio_rate(&self) -> u32 {
        AUDIO_RATE
    }
}

/// A rendered clip.
#[derive(Debug, Clone)]
pub struct Clip {
    pub script: ClipScript,
    pub frames: Vec<RgbFrame>,
}

/// Build the conversation, motion and ground truth of a clip (no pixels).
pub fn script_clip(spec: &ClipSpec) -> Result<ClipScript, SynthError> {
    spec.validate()?;
    let identity = Identity::from_id(spec.identity_id);
    let conversation = build_conversation(spec.seed, spec.seconds, &identity.voice, spec.sentences)?;
    let n = spec.n_frames();
    let visemes = viseme_track(&conversation.talk_phonemes, FPS, n);
    let talk_rms = frame_rms(&conversation.talk, AUDIO_RATE, FPS, n);
    let listen_rms = frame_rms(&conversation.listen, AUDIO_RATE, FPS, n);
    let input = MotionInput {
        n_frames: n,
        visemes: &visemes,
        talk_rms: &talk_rms,
        listen_rms: &listen_rms,
        turns: &conversation.turns,
    };
    let poses = synthesize_motion(&identity, &input, spec.seed);
    let truth = poses
        .iter()
        .enumerate()
        .map(|(f, p)| {
            let hands = hand_positions(&identity, p);
            FrameTruth {
                frame: f,
                time_s: f as f64 / FPS,
                state: p.state,
                mouth_open: p.mouth_open,
                mouth_width: p.mouth_width,
                yaw: p.yaw,
                pitch: p.pitch,
                roll: p.roll,
                reaction_pitch: p.reaction_pitch,
                gaze_x: p.gaze.0,
                gaze_y: p.gaze.1,
                blink: p.blink,
                brow: p.brow,
                smile: p.smile,
                breath: p.breath,
                hands: [[hands[0].0, hands[0].1], [hands[1].0, hands[1].1]],
                talk_rms: talk_rms[f],
                listen_rms: listen_rms[f],
            }
        })
        .collect();
    Ok(ClipScript { spec: spec.clone(), identity, conversation, poses, truth })
}

/// Script and render a whole clip in memory.
pub fn render_clip(spec: &ClipSpec) -> Result<Clip, SynthError> {
    let script = script_clip(spec)?;
    let frames = script.poses.iter().map(|p| draw_avatar(&script.identity, p, spec.size)).collect();
    Ok(Clip { script, frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_are_errors() {
        assert!(script_clip(&ClipSpec::new(0, 0, 2.0, 8)).is_err());
        assert!(script_clip(&ClipSpec::new(0, 0, f64::NAN, 64)).is_err());
        assert!(script_clip(&ClipSpec::new(0, 0, 0.0, 64)).is_err());
    }

    #[test]
    fn script_lengths_match() {
        let s = script_clip(&ClipSpec::new(9, 1, 3.0, 32)).unwrap();
        assert_eq!(s.poses.len(), 72);
        assert_eq!(s.truth.len(), 72);
        assert_eq!(s.conversation.talk.len(), 48_000);
        assert!(s.render_frame(72).is_err());
        assert_eq!(s.render_frame(71).unwrap().width, 32);
    }
}
