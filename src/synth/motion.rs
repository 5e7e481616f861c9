//! Per-frame behaviour (24 fps): the pose of the avatar at every frame of a
//! conversation.
//!
//! * Always: blinking at random intervals (1.8-5.5 s, a 5-frame closure),
//!   breathing (shoulder rise, 3.2-4.8 s period), idle sway of head and body
//!   (sums of slow sines), gaze fixations that change every 0.8-2.5 s.
//! * **Talk** (the avatar's turn): mouth openness and width follow the
//!   visemes of the avatar's phonemes; head nods and eyebrow raises on
//!   stressed syllables (peaks of the talk-audio energy); hand gestures whose
//!   height follows the low-passed talk energy (beat gestures on peaks);
//!   gaze mostly on the partner, sometimes looking away to think.
//! * **Listen** (the partner's turn): gaze turns to the partner after a
//!   reaction delay; at the partner's phrase ends (energy drops after
//!   speech) and some stressed syllables the avatar nods, smiles or raises
//!   its eyebrows after a human reaction delay of 0.2-0.6 s; mouth closed.
//! * **Idle** (nobody speaks): sway, breathing, blinking, wandering gaze.
//!
//! Everything is a deterministic function of the inputs and the seed.

use serde::Serialize;

use super::conversation::{Speaker, Turn};
use super::identity::Identity;
use super::phonemes::{gaussian_smooth, Viseme};
use super::rng::SynthRng;

/// Video frame rate of the synth.
pub const FPS: f64 = 24.0;

/// What the avatar is doing in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BehaviourState {
    Talk,
    Listen,
    Idle,
}

/// One arm's pose: `raise` 0 = resting low, 1 = hand at chest height;
/// `spread` -1..1 moves the hand inwards/outwards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct ArmPose {
    pub raise: f32,
    pub spread: f32,
}

/// The dynamic state of the avatar in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pose {
    pub state: BehaviourState,
    /// 0 = lips closed, 1 = wide open.
    pub mouth_open: f32,
    /// 0 = pursed, 1 = spread.
    pub mouth_width: f32,
    /// Degrees; yaw > 0 turns to the viewer's right, pitch > 0 nods down,
    /// roll > 0 tilts clockwise.
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
    /// Degrees of `pitch` that are listening reactions (the nods after the
    /// partner's phrase ends and stressed syllables), 0 elsewhere: the part
    /// of the head's motion that only the partner's speech explains.
    /// Drawing ignores it (it is already in `pitch`).
    pub reaction_pitch: f32,
    /// Gaze direction, each in -1..1 (x right, y down).
    pub gaze: (f32, f32),
    /// 0 = open, 1 = closed.
    pub blink: f32,
    /// Eyebrow raise 0..1.
    pub brow: f32,
    /// Smile 0..1.
    pub smile: f32,
    /// Breathing 0..1 (1 = inhaled, shoulders up).
    pub breath: f32,
    /// Body sway, design-space units (x).
    pub sway: f32,
    /// Left and right arm (viewer's left first).
    pub arms: [ArmPose; 2],
}

impl Pose {
    /// A neutral, front-facing pose (used for the reference image).
    pub fn neutral() -> Self {
        Pose {
            state: BehaviourState::Idle,
            mouth_open: 0.0,
            mouth_width: 0.5,
            yaw: 0.0,
            pitch: 0.0,
            roll: 0.0,
            reaction_pitch: 0.0,
            gaze: (0.0, 0.0),
            blink: 0.0,
            brow: 0.0,
            smile: 0.2,
            breath: 0.5,
            sway: 0.0,
            arms: [ArmPose::default(); 2],
        }
    }
}

/// What motion synthesis needs to know about the clip.
#[derive(Debug, Clone)]
pub struct MotionInput<'a> {
    pub n_frames: usize,
    /// Viseme per frame of the avatar's speech (rest when silent).
    pub visemes: &'a [Viseme],
    /// Per-frame RMS of the talk and listen tracks.
    pub talk_rms: &'a [f32],
    pub listen_rms: &'a [f32],
    pub turns: &'a [Turn],
}

/// Add a raised-cosine bump of `amp` centred at `center_s`, `width_s` wide.
fn add_bump(signal: &mut [f32], center_s: f64, width_s: f64, amp: f32) {
    let half = width_s / 2.0;
    let a = ((center_s - half) * FPS).floor().max(0.0) as usize;
    let b = (((center_s + half) * FPS).ceil().max(0.0) as usize).min(signal.len());
    for (f, v) in signal.iter_mut().enumerate().take(b).skip(a) {
        let x = (f as f64 / FPS - center_s) / half;
        if x.abs() < 1.0 {
            *v += amp * (0.5 + 0.5 * (std::f64::consts::PI * x).cos()) as f32;
        }
    }
}

/// A nod: down then slightly up, `amp` degrees, starting at `start_s`.
fn add_nod(pitch: &mut [f32], start_s: f64, amp: f32, dur_s: f64) {
    add_bump(pitch, start_s + dur_s * 0.35, dur_s * 0.7, amp);
    add_bump(pitch, start_s + dur_s * 0.8, dur_s * 0.4, -amp * 0.3);
}

/// Normalise an energy envelope by its 95th percentile of non-silent frames.
fn normalised(rms: &[f32]) -> Vec<f32> {
    let mut voiced: Vec<f32> = rms.iter().copied().filter(|&v| v > 1e-3).collect();
    if voiced.is_empty() {
        return vec![0.0; rms.len()];
    }
    voiced.sort_by(|a, b| a.total_cmp(b));
    let p95 = voiced[((voiced.len() - 1) as f32 * 0.95) as usize].max(1e-4);
    rms.iter().map(|v| (v / p95).min(1.5)).collect()
}

/// Local maxima of `x` above `thresh`, at least `min_gap` frames apart.
fn peaks(x: &[f32], thresh: f32, min_gap: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for i in 1..x.len().saturating_sub(1) {
        if x[i] > thresh && x[i] >= x[i - 1] && x[i] > x[i + 1] && out.last().is_none_or(|&p| i - p >= min_gap) {
            out.push(i);
        }
    }
    out
}

/// Ends of speech phrases in an energy envelope: frames where energy falls
/// below `thresh` for >= `min_pause` frames after >= `min_speech` frames of
/// speech.
fn phrase_ends(env: &[f32], thresh: f32, min_speech: usize, min_pause: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut speech, mut i) = (0usize, 0usize);
    while i < env.len() {
        if env[i] > thresh {
            speech += 1;
            i += 1;
            continue;
        }
        let mut j = i;
        while j < env.len() && env[j] <= thresh {
            j += 1;
        }
        if speech >= min_speech && (j - i >= min_pause || j == env.len()) {
            out.push(i);
        }
        if j - i >= min_pause {
            speech = 0;
        }
        i = j;
    }
    out
}

/// One-pole low-pass (time constant `tau_s`) run forward over frames.
fn lowpass(x: &[f32], tau_s: f64) -> Vec<f32> {
    let a = (1.0 - (-1.0 / (FPS * tau_s)).exp()) as f32;
    let mut y = 0.0;
    x.iter()
        .map(|&v| {
            y += a * (v - y);
            y
        })
        .collect()
}

/// Behaviour state of every frame from the turns.
pub fn states(turns: &[Turn], n_frames: usize) -> Vec<BehaviourState> {
    let mut s = vec![BehaviourState::Idle; n_frames];
    for t in turns {
        let a = (t.start_s * FPS).round().max(0.0) as usize;
        let b = ((t.end_s * FPS).round().max(0.0) as usize).min(n_frames);
        for v in s.iter_mut().take(b).skip(a) {
            *v = match t.speaker {
                Speaker::Avatar => BehaviourState::Talk,
                Speaker::Partner => BehaviourState::Listen,
            };
        }
    }
    s
}

/// Poses for every frame.
pub fn synthesize_motion(identity: &Identity, input: &MotionInput<'_>, seed: u64) -> Vec<Pose> {
    let n = input.n_frames;
    let mut rng = SynthRng::derive(seed, 0x40);
    let st = states(input.turns, n);
    let t = |f: usize| f as f64 / FPS;
    let hm = identity.head_motion;
    let talk_env = gaussian_smooth(&normalised(input.talk_rms), 1.5);
    let listen_env = gaussian_smooth(&normalised(input.listen_rms), 1.5);

    // --- slow idle motion (sums of sines with random phases)
    let ph: Vec<f64> = (0..8).map(|_| rng.range(0.0, std::f64::consts::TAU)).collect();
    let tau = std::f64::consts::TAU;
    let mut yaw: Vec<f32> = (0..n)
        .map(|f| {
            (hm as f64 * (3.0 * (tau * 0.13 * t(f) + ph[0]).sin() + 1.5 * (tau * 0.31 * t(f) + ph[1]).sin())) as f32
        })
        .collect();
    let mut pitch: Vec<f32> = (0..n).map(|f| (hm as f64 * 1.2 * (tau * 0.17 * t(f) + ph[2]).sin()) as f32).collect();
    let roll: Vec<f32> = (0..n)
        .map(|f| {
            (hm as f64 * (1.5 * (tau * 0.09 * t(f) + ph[3]).sin() + 0.6 * (tau * 0.23 * t(f) + ph[4]).sin())) as f32
        })
        .collect();
    let breath_period = rng.range(3.2, 4.8);
    let breath: Vec<f32> = (0..n).map(|f| (0.5 + 0.5 * (tau * t(f) / breath_period + ph[5]).sin()) as f32).collect();
    let sway: Vec<f32> = (0..n).map(|f| (1.5 * (tau * 0.1 * t(f) + ph[6]).sin()) as f32).collect();

    let mut brow = vec![0.0f32; n];
    let mut smile = vec![identity.blush * 0.5 + rng.rangef(0.05, 0.25); n];

    // --- talking: nods / brows on stressed syllables, extra yaw activity
    let talking: Vec<f32> = st.iter().map(|s| (*s == BehaviourState::Talk) as u8 as f32).collect();
    let talk_activity = lowpass(&talking, 0.4);
    for (f, y) in yaw.iter_mut().enumerate() {
        *y += talk_activity[f] * (hm as f64 * 4.0 * (tau * 0.45 * t(f) + ph[7]).sin()) as f32;
    }
    for p in peaks(&talk_env, 0.6, (0.35 * FPS) as usize) {
        if st[p] != BehaviourState::Talk {
            continue;
        }
        if rng.chance(0.6) {
            add_nod(&mut pitch, t(p) - 0.12, hm * rng.rangef(2.5, 6.0), 0.4);
        }
        if rng.chance(0.3) {
            add_bump(&mut brow, t(p), 0.5, rng.rangef(0.4, 0.8));
        }
    }
    for (f, p) in pitch.iter_mut().enumerate() {
        *p += 1.5 * hm * talk_env[f] * talking[f];
    }

    // --- listening: delayed reactions to the partner's speech (their
    // pitch also kept apart, for the truth)
    let mut reaction_pitch = vec![0.0f32; n];
    for end in phrase_ends(&listen_env, 0.08, (0.5 * FPS) as usize, (0.15 * FPS) as usize) {
        let delay = rng.range(0.2, 0.6);
        let at = t(end) + delay;
        if rng.chance(0.75) {
            let nods = if rng.chance(0.35) { 2 } else { 1 };
            for k in 0..nods {
                let amp = hm * rng.rangef(4.0, 8.0);
                add_nod(&mut pitch, at + k as f64 * 0.42, amp, 0.45);
                add_nod(&mut reaction_pitch, at + k as f64 * 0.42, amp, 0.45);
            }
        }
        if rng.chance(0.45) {
            add_bump(&mut smile, at + 0.5, 1.4, rng.rangef(0.25, 0.6));
        }
        if rng.chance(0.3) {
            add_bump(&mut brow, at + 0.2, 0.7, rng.rangef(0.4, 0.9));
        }
    }
    for p in peaks(&listen_env, 0.7, (0.6 * FPS) as usize) {
        if st[p] == BehaviourState::Listen && rng.chance(0.25) {
            let (start, amp) = (t(p) + rng.range(0.25, 0.5), hm * rng.rangef(2.0, 4.0));
            add_nod(&mut pitch, start, amp, 0.4);
            add_nod(&mut reaction_pitch, start, amp, 0.4);
        }
    }

    // --- gaze: fixations; partner-directed during turns (after a delay)
    let mut gaze_target = vec![(0.0f32, 0.0f32); n];
    let mut f = 0usize;
    while f < n {
        let hold = (rng.range(0.8, 2.5) * FPS) as usize;
        let target = match st[f] {
            BehaviourState::Idle => (rng.rangef(-0.7, 0.7), rng.rangef(-0.4, 0.4)),
            BehaviourState::Listen => (rng.rangef(-0.15, 0.15), rng.rangef(-0.1, 0.1)),
            BehaviourState::Talk => {
                if rng.chance(0.25) {
                    (rng.rangef(-0.8, 0.8), rng.rangef(-0.6, -0.2))
                } else {
                    (rng.rangef(-0.15, 0.15), rng.rangef(-0.1, 0.1))
                }
            }
        };
        for g in gaze_target.iter_mut().skip(f).take(hold.max(1)) {
            *g = target;
        }
        f += hold.max(1);
    }
    for turn in input.turns.iter().filter(|t| t.speaker == Speaker::Partner) {
        // Look at the partner once they start talking, after a reaction delay.
        let a = ((turn.start_s + rng.range(0.25, 0.5)) * FPS) as usize;
        let b = ((turn.start_s + 1.5).min(turn.end_s) * FPS) as usize;
        for g in gaze_target.iter_mut().take(b.min(n)).skip(a.min(n)) {
            *g = (0.0, 0.0);
        }
    }
    let mut gaze = Vec::with_capacity(n);
    let mut g = gaze_target.first().copied().unwrap_or((0.0, 0.0));
    for target in &gaze_target {
        // Saccades: 60 % of the remaining distance per frame.
        g = (g.0 + 0.6 * (target.0 - g.0), g.1 + 0.6 * (target.1 - g.1));
        gaze.push(g);
    }

    // --- blinks
    let mut blink = vec![0.0f32; n];
    const PROFILE: [f32; 5] = [0.4, 0.9, 1.0, 0.6, 0.25];
    let mut tb = rng.range(0.3, 2.0);
    while tb < t(n) {
        let f0 = (tb * FPS) as usize;
        for (k, v) in PROFILE.iter().enumerate() {
            if let Some(b) = blink.get_mut(f0 + k) {
                *b = b.max(*v);
            }
        }
        let scale = if st.get(f0) == Some(&BehaviourState::Talk) { 0.8 } else { 1.0 };
        tb += rng.range(1.8, 5.5) * scale;
    }

    // --- hands: gestures follow low-passed talk energy, per-turn handedness
    let mut raise = [vec![0.0f32; n], vec![0.0f32; n]];
    let mut spread = [vec![0.0f32; n], vec![0.0f32; n]];
    let delayed: Vec<f32> = (0..n).map(|f| if f >= 2 { talk_env[f - 2] * talking[f - 2] } else { 0.0 }).collect();
    let energy = lowpass(&delayed, 0.35);
    for turn in input.turns.iter().filter(|t| t.speaker == Speaker::Avatar) {
        let (dominant, both) = (rng.index(2), rng.chance(0.3));
        let (s0, s1) = (rng.rangef(-0.6, 0.8), rng.rangef(-0.6, 0.8));
        let a = ((turn.start_s * FPS) as usize).min(n);
        let b = (((turn.end_s + 0.8) * FPS) as usize).min(n);
        for f in a..b {
            let g = (energy[f] * 1.6 * identity.gesture_amount).min(1.0);
            raise[dominant][f] = raise[dominant][f].max(g);
            raise[1 - dominant][f] = raise[1 - dominant][f].max(if both { 0.85 * g } else { 0.3 * g });
            spread[0][f] = s0;
            spread[1][f] = s1;
        }
    }
    for p in peaks(&talk_env, 0.75, (0.3 * FPS) as usize) {
        if st[p] == BehaviourState::Talk {
            let beat = 0.15 * identity.gesture_amount;
            let (r0, r1) = raise.split_at_mut(1);
            add_bump(&mut r0[0], t(p), 0.3, beat);
            add_bump(&mut r1[0], t(p), 0.3, beat * 0.5);
        }
    }
    let raise = [lowpass(&raise[0], 0.12), lowpass(&raise[1], 0.12)];
    let spread = [lowpass(&spread[0], 0.5), lowpass(&spread[1], 0.5)];

    let mouth_gain = 0.85 + 0.15 * identity.gesture_amount;
    (0..n)
        .map(|f| {
            let v = input.visemes.get(f).copied().unwrap_or(super::phonemes::REST);
            let sm = smile[f].clamp(0.0, 1.0);
            let (mouth_open, mouth_width) = if st[f] == BehaviourState::Talk {
                ((v.open * mouth_gain).clamp(0.0, 1.0), (v.width + 0.1 * sm).clamp(0.0, 1.0))
            } else {
                // The viseme track only holds the avatar's speech: rest here.
                ((v.open * mouth_gain).clamp(0.0, 1.0), (0.5 + 0.25 * sm).clamp(0.0, 1.0))
            };
            Pose {
                state: st[f],
                mouth_open,
                mouth_width,
                yaw: yaw[f],
                pitch: pitch[f].clamp(-15.0, 15.0),
                roll: roll[f],
                reaction_pitch: reaction_pitch[f],
                gaze: gaze[f],
                blink: blink[f],
                brow: brow[f].clamp(0.0, 1.0),
                smile: sm,
                breath: breath[f],
                sway: sway[f],
                arms: [
                    ArmPose { raise: raise[0][f].clamp(0.0, 1.0), spread: spread[0][f] },
                    ArmPose { raise: raise[1][f].clamp(0.0, 1.0), spread: spread[1][f] },
                ],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_and_phrase_ends() {
        let x = [0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.9, 0.0];
        assert_eq!(peaks(&x, 0.5, 1), vec![1, 4, 6]);
        assert_eq!(peaks(&x, 0.5, 4), vec![1, 6]);
        let env = [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        assert_eq!(phrase_ends(&env, 0.5, 3, 2), vec![4]);
    }

    #[test]
    fn listening_reactions_come_after_the_partner_pauses() {
        let id = Identity::from_id(5);
        let n = 24 * 6;
        // Partner speaks 0.5..2.5 s, then silence.
        let listen: Vec<f32> = (0..n).map(|f| if (12..60).contains(&f) { 0.2 } else { 0.0 }).collect();
        let talk = vec![0.0; n];
        let turns =
            vec![Turn { speaker: Speaker::Partner, start_s: 0.5, end_s: 2.5, sentence_ids: vec![0], text: "x".into() }];
        let vis = vec![super::super::phonemes::REST; n];
        let input = MotionInput { n_frames: n, visemes: &vis, talk_rms: &talk, listen_rms: &listen, turns: &turns };
        let mut reacted = 0;
        for seed in 0..8 {
            let poses = synthesize_motion(&id, &input, seed);
            assert_eq!(poses[30].state, BehaviourState::Listen);
            assert_eq!(poses[100].state, BehaviourState::Idle);
            assert!(poses.iter().all(|p| p.mouth_open < 0.01));
            // Nod (pitch excursion) or smile/brow within 0.2..2 s after the pause,
            // measured against the same clip without the partner's pause reaction.
            let after = &poses[60 + 4..60 + 48];
            let before_pitch = poses[40..58].iter().map(|p| p.pitch).fold(f32::MIN, f32::max);
            let max_after = after.iter().map(|p| p.pitch).fold(f32::MIN, f32::max);
            if max_after > before_pitch + 1.0 || after.iter().any(|p| p.brow > 0.2) {
                reacted += 1;
            }
            // No reaction earlier than the reaction delay.
            assert!(poses[60..64].iter().all(|p| p.brow < 0.2));
        }
        assert!(reacted >= 5, "reacted in {reacted} of 8 clips");
    }

    /// The reaction component is the nods after the partner's pause: none
    /// without the partner's speech, none before the reaction delay, and
    /// in the clips that nod it reaches the nod's depth.
    #[test]
    fn reaction_pitch_holds_only_the_listening_nods() {
        let id = Identity::from_id(5);
        let n = 24 * 6;
        let turns =
            vec![Turn { speaker: Speaker::Partner, start_s: 0.5, end_s: 2.5, sentence_ids: vec![0], text: "x".into() }];
        let vis = vec![super::super::phonemes::REST; n];
        let talk = vec![0.0; n];
        let silent = vec![0.0; n];
        let listen: Vec<f32> = (0..n).map(|f| if (12..60).contains(&f) { 0.2 } else { 0.0 }).collect();
        let mut nodded = 0;
        for seed in 0..8 {
            let quiet = MotionInput { n_frames: n, visemes: &vis, talk_rms: &talk, listen_rms: &silent, turns: &turns };
            assert!(synthesize_motion(&id, &quiet, seed).iter().all(|p| p.reaction_pitch == 0.0));
            let heard = MotionInput { listen_rms: &listen, ..quiet };
            let poses = synthesize_motion(&id, &heard, seed);
            // Phrase end at frame 60, reaction delay >= 0.2 s.
            assert!(poses[..64].iter().all(|p| p.reaction_pitch == 0.0), "seed {seed}: reaction before the delay");
            let deepest = poses.iter().map(|p| p.reaction_pitch).fold(0.0f32, f32::max);
            if deepest > 0.0 {
                nodded += 1;
                assert!(deepest >= 4.0 * id.head_motion * 0.9, "seed {seed}: nod {deepest} degrees");
            }
        }
        assert!(nodded >= 4, "nodded in {nodded} of 8 clips");
    }
}
