//! The synth renderer as a perfect model: its frames are the ground truth
//! of the conversation. It validates the metrics (the ground truth must pass
//! every threshold) and gives the upper reference numbers.
//!
//! Its silent-listen stream is what the synth does when the partner says
//! nothing: the same talk track and seed, the partner's turns and listen
//! energy removed (so no listening reactions), rendered the same way.

use super::protocol::{EvalModel, ListenAudio};
use super::EvalError;
use crate::media::frame::RgbFrame;
use crate::synth::avatar::draw_avatar;
use crate::synth::conversation::{frame_rms, Speaker, Turn, AUDIO_RATE};
use crate::synth::motion::{synthesize_motion, MotionInput, Pose, FPS};
use crate::synth::phonemes::viseme_track;
use crate::synth::ClipScript;

/// The synth renderer (see module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct GroundTruthModel;

/// The poses of `script`'s conversation with a silent partner.
pub fn silent_listen_poses(script: &ClipScript) -> Vec<Pose> {
    let conversation = &script.conversation;
    let n = script.spec.n_frames();
    let visemes = viseme_track(&conversation.talk_phonemes, FPS, n);
    let talk_rms = frame_rms(&conversation.talk, AUDIO_RATE, FPS, n);
    let listen_rms = vec![0.0f32; n];
    let turns: Vec<Turn> = conversation.turns.iter().filter(|t| t.speaker == Speaker::Avatar).cloned().collect();
    let input =
        MotionInput { n_frames: n, visemes: &visemes, talk_rms: &talk_rms, listen_rms: &listen_rms, turns: &turns };
    synthesize_motion(&script.identity, &input, script.spec.seed)
}

impl EvalModel for GroundTruthModel {
    fn describe(&self) -> String {
        "ground truth (synth renderer)".into()
    }

    fn generate(
        &mut self,
        script: &ClipScript,
        listen: ListenAudio,
        n_frames: usize,
        sink: &mut dyn FnMut(&RgbFrame) -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        if n_frames > script.poses.len() {
            return Err(EvalError::Invalid(format!("{n_frames} frames asked of a {}-frame clip", script.poses.len())));
        }
        let silent;
        let poses = match listen {
            ListenAudio::Partner => &script.poses,
            ListenAudio::Silence => {
                silent = silent_listen_poses(script);
                &silent
            }
        };
        for pose in &poses[..n_frames] {
            sink(&draw_avatar(&script.identity, pose, script.spec.size))?;
        }
        Ok(())
    }
}
