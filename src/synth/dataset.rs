//! The on-disk dataset written by `streamavatar synth`.
//!
//! Layout of `OUT/`:
//!
//! ```text
//! dataset.json            the DatasetSpec and the list of clips
//! clip_00000/
//!   frames.rgb            FrameFormat::Raw: all frames, raw RGB24, row-major,
//!                         frame after frame (n_frames * size * size * 3 bytes)
//!   frames/000000.png ... FrameFormat::Png instead: one PNG per frame
//!   reference.png         the identity in a neutral pose (reference image)
//!   talk.wav, listen.wav  16 kHz mono PCM16 (avatar speech, partner speech)
//!   gt.jsonl              one FrameTruth JSON object per frame
//!   meta.json             spec, identity, voices, turns, fps, sizes, format
//! ```
//!
//! Clip `k` of a dataset with seed `s` uses clip seed `mix64(s, k)` and an
//! identity id of the requested split derived from it, so the whole
//! dataset is a deterministic function of the [`DatasetSpec`].

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::clip::{script_clip, Clip, ClipSpec};
use super::identity::IdentitySplit;
use super::motion::FPS;
use super::rng::mix64;
use super::SynthError;
use crate::media::frame::RgbFrame;

/// How frames are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameFormat {
    /// One `frames.rgb` file of raw RGB24 frames (fast to write and read).
    Raw,
    /// One PNG per frame under `frames/`.
    Png,
}

/// A dataset request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetSpec {
    pub out: PathBuf,
    pub clips: usize,
    pub seconds: f64,
    pub size: usize,
    pub seed: u64,
    /// Held-out identities and sentences instead of training ones.
    pub heldout: bool,
    pub format: FrameFormat,
}

impl DatasetSpec {
    /// The clip spec of clip `index`.
    pub fn clip_spec(&self, index: usize) -> ClipSpec {
        let clip_seed = mix64(self.seed ^ mix64(index as u64 + 1));
        let split = if self.heldout { IdentitySplit::Heldout } else { IdentitySplit::Train };
        ClipSpec::new(split.id_from(mix64(clip_seed ^ 0x1D)), clip_seed, self.seconds, self.size)
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub clips: Vec<PathBuf>,
    pub frames: usize,
    /// Wall time spent rendering frames (not scripting or writing), seconds.
    pub render_s: f64,
    /// Wall time spent on speech synthesis, motion and ground truth, seconds.
    pub script_s: f64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io { path: path.to_path_buf(), source }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    std::fs::write(path, bytes).map_err(io_err(path))
}

fn write_png(path: &Path, frame: &RgbFrame) -> Result<(), SynthError> {
    let img = image::RgbImage::from_raw(frame.width as u32, frame.height as u32, frame.data.clone())
        .ok_or_else(|| SynthError::Encode { path: path.to_path_buf(), message: "frame buffer size mismatch".into() })?;
    img.save(path).map_err(|e| SynthError::Encode { path: path.to_path_buf(), message: e.to_string() })
}

fn write_wav(path: &Path, samples: &[f32], rate: u32) -> Result<(), SynthError> {
    let body = crate::media::wav::write_wav_pcm16(samples, rate)
        .map_err(|e| SynthError::Encode { path: path.to_path_buf(), message: e.to_string() })?;
    write_file(path, &body)
}

fn json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, SynthError> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| SynthError::Encode { path: path.to_path_buf(), message: e.to_string() })
}

/// Write one rendered clip into `dir` (created if missing).
pub fn write_clip(dir: &Path, clip: &Clip, format: FrameFormat) -> Result<(), SynthError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let s = &clip.script;
    match format {
        FrameFormat::Raw => {
            let path = dir.join("frames.rgb");
            let file = std::fs::File::create(&path).map_err(io_err(&path))?;
            let mut w = std::io::BufWriter::new(file);
            for f in &clip.frames {
                w.write_all(&f.data).map_err(io_err(&path))?;
            }
            w.flush().map_err(io_err(&path))?;
        }
        FrameFormat::Png => {
            let frames_dir = dir.join("frames");
            std::fs::create_dir_all(&frames_dir).map_err(io_err(&frames_dir))?;
            for (i, f) in clip.frames.iter().enumerate() {
                write_png(&frames_dir.join(format!("{i:06}.png")), f)?;
            }
        }
    }
    write_png(&dir.join("reference.png"), &s.reference_frame())?;
    write_wav(&dir.join("talk.wav"), &s.conversation.talk, s.audio_rate())?;
    write_wav(&dir.join("listen.wav"), &s.conversation.listen, s.audio_rate())?;
    let gt_path = dir.join("gt.jsonl");
    let mut gt = Vec::new();
    for t in &s.truth {
        let line =
            serde_json::to_vec(t).map_err(|e| SynthError::Encode { path: gt_path.clone(), message: e.to_string() })?;
        gt.extend_from_slice(&line);
        gt.push(b'\n');
    }
    write_file(&gt_path, &gt)?;
    #[derive(Serialize)]
    struct Meta<'a> {
        spec: &'a ClipSpec,
        fps: f64,
        n_frames: usize,
        width: usize,
        height: usize,
        frame_format: FrameFormat,
        frames_file: &'static str,
        audio_rate: u32,
        identity: &'a super::identity::Identity,
        avatar_voice: &'a super::identity::VoiceSpec,
        partner_voice: &'a super::identity::VoiceSpec,
        turns: &'a [super::conversation::Turn],
    }
    let meta_path = dir.join("meta.json");
    let meta = Meta {
        spec: &s.spec,
        fps: FPS,
        n_frames: clip.frames.len(),
        width: s.spec.size,
        height: s.spec.size,
        frame_format: format,
        frames_file: match format {
            FrameFormat::Raw => "frames.rgb",
            FrameFormat::Png => "frames/%06d.png",
        },
        audio_rate: s.audio_rate(),
        identity: &s.identity,
        avatar_voice: &s.conversation.avatar_voice,
        partner_voice: &s.conversation.partner_voice,
        turns: &s.conversation.turns,
    };
    write_file(&meta_path, &json(&meta_path, &meta)?)
}

/// Render and write every clip of `spec`.
pub fn write_dataset(spec: &DatasetSpec) -> Result<DatasetSummary, SynthError> {
    if spec.clips == 0 {
        return Err(SynthError::InvalidSpec("a dataset needs at least one clip".into()));
    }
    std::fs::create_dir_all(&spec.out).map_err(io_err(&spec.out))?;
    let mut summary = DatasetSummary { clips: Vec::new(), frames: 0, render_s: 0.0, script_s: 0.0 };
    for k in 0..spec.clips {
        let cs = spec.clip_spec(k);
        let t0 = std::time::Instant::now();
        let script = script_clip(&cs)?;
        summary.script_s += t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let frames = (0..script.poses.len()).map(|i| script.render_frame(i)).collect::<Result<Vec<_>, _>>()?;
        summary.render_s += t1.elapsed().as_secs_f64();
        let clip = Clip { script, frames };
        let dir = spec.out.join(format!("clip_{k:05}"));
        write_clip(&dir, &clip, spec.format)?;
        summary.frames += clip.frames.len();
        tracing::info!(clip = k, identity = cs.identity_id, frames = clip.frames.len(), dir = %dir.display(), "synth clip written");
        summary.clips.push(dir);
    }
    #[derive(Serialize)]
    struct Index<'a> {
        spec: &'a DatasetSpec,
        clips: Vec<ClipSpec>,
    }
    let path = spec.out.join("dataset.json");
    let index = Index { spec, clips: (0..spec.clips).map(|k| spec.clip_spec(k)).collect() };
    write_file(&path, &json(&path, &index)?)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_specs_follow_the_split() {
        let mut spec = DatasetSpec {
            out: PathBuf::from("/nonexistent"),
            clips: 4,
            seconds: 2.0,
            size: 64,
            seed: 11,
            heldout: false,
            format: FrameFormat::Raw,
        };
        let train: Vec<ClipSpec> = (0..4).map(|k| spec.clip_spec(k)).collect();
        assert!(train.iter().all(|c| IdentitySplit::of(c.identity_id) == Some(IdentitySplit::Train)));
        assert_ne!(train[0].seed, train[1].seed);
        assert_eq!(train[2], spec.clip_spec(2));
        spec.heldout = true;
        let held: Vec<ClipSpec> = (0..4).map(|k| spec.clip_spec(k)).collect();
        assert!(held.iter().all(|c| IdentitySplit::of(c.identity_id) == Some(IdentitySplit::Heldout)));
        assert!(held.iter().all(|c| c.sentences == super::super::conversation::SentenceSplit::Heldout));
    }
}
