//! Listening motion: how much the head moves while the partner talks,
//! against the same model driven with silence on the listen branch.
//!
//! Motion energy of a frame is the mean absolute colour difference (0..1)
//! to the previous frame over the head region of the layout (face, hair
//! and room for nods and turns) without the eyes: blinks and gaze saccades
//! are abrupt, so they dominate frame differences, yet they are no
//! listening reaction (the synth even moves the gaze *less* while
//! listening, when it looks at the partner, than while idle). What remains
//! is nods, head turns, smiles and brow raises. The listening frames are the partner's
//! turns plus a tail (reactions such as nods come a few hundred
//! milliseconds after a phrase ends), without the avatar's own talk frames
//! and without frame 0 (it has no previous frame). The score is the ratio
//! of the mean energy of the listening frames in the evaluated stream to
//! the mean energy of the same frames in the silent-listen stream; a model
//! that ignores the partner scores about 1.

use serde::Serialize;

use super::face_layout::FaceLayout;
use super::EvalError;
use crate::media::frame::RgbFrame;
use crate::synth::conversation::{Speaker, Turn};
use crate::synth::motion::BehaviourState;

/// Mean absolute colour difference (0..1) of two frames over the head
/// region without the eyes.
pub fn motion_energy(previous: &RgbFrame, frame: &RgbFrame, layout: &FaceLayout) -> f32 {
    let (h, e) = (layout.head, layout.eyes);
    let diff = |row: usize, x0: usize, x1: usize| -> u64 {
        let (a, b) = ((row + x0) * 3, (row + x1) * 3);
        frame.data[a..b]
            .iter()
            .zip(&previous.data[a..b])
            .map(|(&p, &q)| (p as i32 - q as i32).unsigned_abs() as u64)
            .sum()
    };
    let (mut sum, mut pixels) = (0u64, 0usize);
    for y in h.y0..h.y1 {
        let row = y * frame.width;
        if y >= e.y0 && y < e.y1 && e.x0 < e.x1 {
            // The row without the eye span [e.x0, e.x1).
            let (l1, r0) = (e.x0.clamp(h.x0, h.x1), e.x1.clamp(h.x0, h.x1));
            sum += diff(row, h.x0, l1) + diff(row, r0, h.x1);
            pixels += (l1 - h.x0) + (h.x1 - r0);
        } else {
            sum += diff(row, h.x0, h.x1);
            pixels += h.width();
        }
    }
    sum as f32 / (pixels.max(1) * 3) as f32 / 255.0
}

/// Frames (of `states.len()`) in which the avatar listens: the partner's
/// turns extended by `tail_s` seconds, minus the avatar's talk frames and
/// frame 0.
pub fn listening_frames(turns: &[Turn], states: &[BehaviourState], fps: f64, tail_s: f64) -> Vec<bool> {
    let n = states.len();
    let mut mask = vec![false; n];
    for turn in turns.iter().filter(|t| t.speaker == Speaker::Partner) {
        let a = ((turn.start_s * fps).round().max(0.0) as usize).min(n);
        let b = (((turn.end_s + tail_s) * fps).round().max(0.0) as usize).min(n);
        for m in mask.iter_mut().take(b).skip(a) {
            *m = true;
        }
    }
    for (m, s) in mask.iter_mut().zip(states) {
        if *s == BehaviourState::Talk {
            *m = false;
        }
    }
    if let Some(first) = mask.first_mut() {
        *first = false;
    }
    mask
}

/// Motion energy summed over the listening frames of one or more streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ListeningSums {
    pub listen_energy_sum: f64,
    pub silent_energy_sum: f64,
    pub frames: usize,
}

impl ListeningSums {
    /// Sums over the frames where `mask` is set (`main` is the evaluated
    /// stream, `silent` the silent-listen stream, both per-frame energies).
    pub fn measure(main: &[f32], silent: &[f32], mask: &[bool]) -> Result<Self, EvalError> {
        if main.len() < mask.len() || silent.len() < mask.len() {
            return Err(EvalError::Invalid(format!(
                "listening: {} mask frames but {} evaluated and {} silent-listen frames",
                mask.len(),
                main.len(),
                silent.len()
            )));
        }
        let mut s = Self::default();
        for (f, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            s.listen_energy_sum += main[f] as f64;
            s.silent_energy_sum += silent[f] as f64;
            s.frames += 1;
        }
        Ok(s)
    }

    pub fn merge(&mut self, other: &Self) {
        self.listen_energy_sum += other.listen_energy_sum;
        self.silent_energy_sum += other.silent_energy_sum;
        self.frames += other.frames;
    }

    /// The pooled result (`None` without listening frames).
    pub fn result(&self) -> Option<ListeningResult> {
        if self.frames == 0 {
            return None;
        }
        let n = self.frames as f64;
        let (listen, silent) = (self.listen_energy_sum / n, self.silent_energy_sum / n);
        // A silent stream without any motion: any motion counts as a large
        // ratio, none as 1 (the floor keeps the number finite).
        let ratio = listen.max(1e-6) / silent.max(1e-6);
        Some(ListeningResult { listen_energy: listen, silent_energy: silent, ratio, frames: self.frames })
    }
}

/// Listening motion scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ListeningResult {
    /// Mean head motion energy per listening frame with the partner's audio.
    pub listen_energy: f64,
    /// The same with silence on the listen branch.
    pub silent_energy: f64,
    /// `listen_energy / silent_energy`.
    pub ratio: f64,
    pub frames: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::avatar::draw_avatar;
    use crate::synth::identity::Identity;
    use crate::synth::motion::Pose;

    #[test]
    fn nods_count_as_motion_and_blinks_do_not() {
        let id = Identity::from_id(crate::synth::HELDOUT_IDENTITY_START + 2);
        let layout = FaceLayout::of_identity(&id, 128).unwrap();
        let still = draw_avatar(&id, &Pose::neutral(), 128);
        let blink = draw_avatar(&id, &Pose { blink: 1.0, ..Pose::neutral() }, 128);
        let nod = draw_avatar(&id, &Pose { pitch: 6.0, ..Pose::neutral() }, 128);
        assert_eq!(motion_energy(&still, &still, &layout), 0.0);
        let (b, n) = (motion_energy(&still, &blink, &layout), motion_energy(&still, &nod, &layout));
        assert!(n > 0.002 && b < 0.05 * n, "blink {b}, nod {n}");
    }

    #[test]
    fn listening_mask_covers_partner_turns_and_tail_but_not_talk() {
        let turn =
            |speaker, start_s, end_s| Turn { speaker, start_s, end_s, sentence_ids: vec![], text: String::new() };
        let turns = [turn(Speaker::Partner, 0.0, 1.0), turn(Speaker::Avatar, 1.25, 2.0)];
        let mut states = vec![BehaviourState::Idle; 60];
        for s in states.iter_mut().take(48).skip(30) {
            *s = BehaviourState::Talk;
        }
        let m = listening_frames(&turns, &states, 24.0, 0.5);
        assert!(!m[0] && m[1] && m[23] && m[29]);
        assert!(!m[30] && !m[40] && !m[50]);
        let s = ListeningSums::measure(&[0.2; 60], &[0.1; 60], &m).unwrap();
        let r = s.result().unwrap();
        assert_eq!(r.frames, 29);
        assert!((r.ratio - 2.0).abs() < 1e-9);
        assert!(ListeningSums::default().result().is_none());
        assert!(ListeningSums::measure(&[0.2; 10], &[0.1; 60], &m).is_err());
    }
}
