//! Integration tests of the synthetic avatar data generator (`synth`):
//! determinism, identity variety, talk/listen behaviour against the audio,
//! blinking, frame sizes, the held-out split and the on-disk writer.

use streamavatar::synth::conversation::{sentence_ids, SentenceSplit, Speaker, AUDIO_RATE};
use streamavatar::synth::dataset::write_clip;
use streamavatar::synth::motion::BehaviourState;
use streamavatar::synth::{
    render_clip, script_clip, ClipSpec, DatasetSpec, FrameFormat, IdentitySplit, HELDOUT_IDENTITY_START,
};

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa.sqrt() * sbb.sqrt()).max(1e-12)
}

#[test]
fn same_seed_gives_identical_clips() {
    let spec = ClipSpec::new(123, 7, 3.0, 48);
    let a = render_clip(&spec).unwrap();
    let b = render_clip(&spec).unwrap();
    assert_eq!(a.frames.len(), 72);
    assert!(a.frames == b.frames, "frames differ between runs");
    assert!(a.script.truth == b.script.truth, "ground truth differs between runs");
    assert!(a.script.conversation.talk == b.script.conversation.talk);
    assert!(a.script.conversation.listen == b.script.conversation.listen);
    // A different seed changes the clip.
    let c = render_clip(&ClipSpec::new(123, 8, 3.0, 48)).unwrap();
    assert!(a.script.truth != c.script.truth);
}

#[test]
fn identities_look_different() {
    let mut refs = Vec::new();
    for id in [1u64, 2, 3, 4] {
        refs.push(script_clip(&ClipSpec::new(id, 0, 1.0, 64)).unwrap().reference_frame());
    }
    for i in 0..refs.len() {
        for j in i + 1..refs.len() {
            let mad: f64 =
                refs[i].data.iter().zip(&refs[j].data).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>()
                    / refs[i].data.len() as f64;
            assert!(mad > 10.0, "identities {i} and {j} differ by only {mad:.1} per channel");
        }
    }
}

#[test]
fn mouth_follows_talk_audio_not_partner_audio() {
    let mut checked = 0;
    for seed in 0..6u64 {
        let s = script_clip(&ClipSpec::new(1000 + seed, seed, 14.0, 32)).unwrap();
        let talk: Vec<&_> = s.truth.iter().filter(|t| t.state == BehaviourState::Talk).collect();
        let listen: Vec<&_> = s.truth.iter().filter(|t| t.state == BehaviourState::Listen).collect();
        if talk.len() < 24 || listen.len() < 24 {
            continue;
        }
        checked += 1;
        let mean = |v: &[&streamavatar::synth::FrameTruth]| {
            v.iter().map(|t| t.mouth_open as f64).sum::<f64>() / v.len() as f64
        };
        let (mt, ml) = (mean(&talk), mean(&listen));
        assert!(mt > 0.15 && mt > 5.0 * ml, "seed {seed}: mouth open talking {mt:.3} vs listening {ml:.3}");
        let open: Vec<f32> = s.truth.iter().map(|t| t.mouth_open).collect();
        let talk_rms: Vec<f32> = s.truth.iter().map(|t| t.talk_rms).collect();
        let listen_rms: Vec<f32> = s.truth.iter().map(|t| t.listen_rms).collect();
        let r_talk = pearson(&open, &talk_rms);
        let r_listen = pearson(&open, &listen_rms);
        assert!(r_talk > 0.4, "seed {seed}: corr(mouth, talk energy) = {r_talk:.3}");
        assert!(r_listen < 0.1, "seed {seed}: corr(mouth, partner energy) = {r_listen:.3}");
        // States match the turns and the audio tracks.
        for turn in &s.conversation.turns {
            let mid = ((turn.start_s + turn.end_s) / 2.0 * 24.0) as usize;
            if let Some(t) = s.truth.get(mid) {
                let want = if turn.speaker == Speaker::Avatar { BehaviourState::Talk } else { BehaviourState::Listen };
                assert_eq!(t.state, want);
            }
        }
    }
    assert!(checked >= 3, "only {checked} clips had both talking and listening");
}

#[test]
fn blinks_happen_at_plausible_rates() {
    let s = script_clip(&ClipSpec::new(77, 3, 20.0, 32)).unwrap();
    let onsets = s.truth.windows(2).filter(|w| w[0].blink < 0.5 && w[1].blink >= 0.5).count();
    // Intervals of 1.8-5.5 s (shorter while talking) in 20 s.
    assert!((3..=13).contains(&onsets), "{onsets} blinks in 20 s");
    assert!(s.truth.iter().any(|t| t.blink >= 0.99));
}

#[test]
fn frames_have_the_requested_size() {
    for size in [128usize, 256] {
        let s = script_clip(&ClipSpec::new(5, 5, 1.0, size)).unwrap();
        let f = s.render_frame(10).unwrap();
        assert_eq!((f.width, f.height, f.data.len()), (size, size, size * size * 3));
    }
    assert!(script_clip(&ClipSpec::new(5, 5, 1.0, 4)).is_err());
}

#[test]
fn heldout_split_is_disjoint_from_training() {
    let spec = |heldout| DatasetSpec {
        out: std::env::temp_dir(),
        clips: 20,
        seconds: 6.0,
        size: 32,
        seed: 1,
        heldout,
        format: FrameFormat::Raw,
    };
    let train: Vec<ClipSpec> = (0..20).map(|k| spec(false).clip_spec(k)).collect();
    let held: Vec<ClipSpec> = (0..20).map(|k| spec(true).clip_spec(k)).collect();
    assert!(train.iter().all(|c| c.identity_id < HELDOUT_IDENTITY_START));
    assert!(held.iter().all(|c| IdentitySplit::of(c.identity_id) == Some(IdentitySplit::Heldout)));
    let heldout_sentences = sentence_ids(SentenceSplit::Heldout);
    let s = script_clip(&held[0]).unwrap();
    assert_eq!(s.identity.split, IdentitySplit::Heldout);
    assert!(!s.conversation.turns.is_empty());
    assert!(s.conversation.turns.iter().flat_map(|t| &t.sentence_ids).all(|i| heldout_sentences.contains(i)));
    let s = script_clip(&train[0]).unwrap();
    assert!(s.conversation.turns.iter().flat_map(|t| &t.sentence_ids).all(|i| !heldout_sentences.contains(i)));
}

#[test]
fn writer_produces_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let clip = render_clip(&ClipSpec::new(9, 2, 2.0, 32)).unwrap();
    let raw = dir.path().join("raw");
    write_clip(&raw, &clip, FrameFormat::Raw).unwrap();
    let bytes = std::fs::read(raw.join("frames.rgb")).unwrap();
    assert_eq!(bytes.len(), 48 * 32 * 32 * 3);
    assert_eq!(&bytes[..32 * 32 * 3], &clip.frames[0].data[..]);
    let gt = std::fs::read_to_string(raw.join("gt.jsonl")).unwrap();
    assert_eq!(gt.lines().count(), 48);
    let first: serde_json::Value = serde_json::from_str(gt.lines().next().unwrap()).unwrap();
    for key in ["mouth_open", "mouth_width", "yaw", "pitch", "roll", "gaze_x", "gaze_y", "blink", "state", "hands"] {
        assert!(first.get(key).is_some(), "gt.jsonl lacks {key}");
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(raw.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["n_frames"], 48);
    assert_eq!(meta["frame_format"], "raw");
    for wav in ["talk.wav", "listen.wav"] {
        let audio = streamavatar::media::wav::parse_wav(&std::fs::read(raw.join(wav)).unwrap(), 1 << 24).unwrap();
        assert_eq!(audio.sample_rate, AUDIO_RATE);
        assert_eq!(audio.samples.len(), 2 * AUDIO_RATE as usize);
    }
    assert!(raw.join("reference.png").is_file());
    let png = dir.path().join("png");
    write_clip(&png, &clip, FrameFormat::Png).unwrap();
    let img = image::open(png.join("frames/000047.png")).unwrap().to_rgb8();
    assert_eq!(img.as_raw(), &clip.frames[47].data);
}
