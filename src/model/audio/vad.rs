//! Energy-based voice-activity detection per video frame, used to derive a
//! talk or listen mask from PCM when no explicit mask is given.
//!
//! A frame is active when the RMS level of its samples reaches
//! `threshold_dbfs`; an active frame keeps the next `hangover_frames` frames
//! active (so short pauses between words do not flicker the mask).
//! Deterministic and stateless: the result for a frame depends only on the
//! samples of that frame and the `hangover_frames` frames before it, so a
//! streaming caller that keeps that much history gets the whole-clip result.

/// VAD thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// RMS level (dB relative to full scale 1.0) at or above which a frame is speech.
    pub threshold_dbfs: f32,
    /// Frames kept active after the last active frame.
    pub hangover_frames: usize,
}

impl Default for VadConfig {
    /// -40 dBFS, 6 frames (250 ms at 24 fps) of hangover.
    fn default() -> Self {
        Self { threshold_dbfs: -40.0, hangover_frames: 6 }
    }
}

/// RMS level in dBFS of a block of samples (-inf-ish floor of -200 dB for silence).
pub fn rms_dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return -200.0;
    }
    let energy: f64 = samples.iter().map(|s| (*s as f64) * (*s as f64)).sum::<f64>() / samples.len() as f64;
    if energy <= 0.0 || !energy.is_finite() {
        return -200.0;
    }
    (10.0 * energy.log10()).max(-200.0) as f32
}

/// Mask in {0, 1} for every whole video frame of `pcm` (starting at sample 0).
pub fn voice_activity(pcm: &[f32], sample_rate: usize, fps: u32, cfg: &VadConfig) -> Vec<f32> {
    if sample_rate == 0 || fps == 0 {
        return Vec::new();
    }
    let n = (pcm.len() as u64 * fps as u64 / sample_rate as u64) as usize;
    voice_activity_frames(pcm, 0, 0, n, sample_rate, fps, cfg)
}

/// Mask for global video frames `[first_frame, first_frame + n)` from a PCM
/// slice whose first sample is global sample `pcm_start`. Frames (or
/// hangover history) not covered by the slice count as silence.
pub fn voice_activity_frames(
    pcm: &[f32],
    pcm_start: u64,
    first_frame: u64,
    n: usize,
    sample_rate: usize,
    fps: u32,
    cfg: &VadConfig,
) -> Vec<f32> {
    if sample_rate == 0 || fps == 0 {
        return vec![0.0; n];
    }
    let frame_start = |f: u64| f * sample_rate as u64 / fps as u64;
    let active = |f: u64| -> bool {
        let (a, b) = (frame_start(f), frame_start(f + 1));
        let end = pcm_start + pcm.len() as u64;
        let (a, b) = (a.max(pcm_start), b.min(end));
        if a >= b {
            return false;
        }
        let s = &pcm[(a - pcm_start) as usize..(b - pcm_start) as usize];
        rms_dbfs(s) >= cfg.threshold_dbfs
    };
    let history = cfg.hangover_frames as u64;
    let from = first_frame.saturating_sub(history);
    // Frames since the last active frame, walking from the history start.
    let mut since_active: Option<u64> = None;
    let mut out = Vec::with_capacity(n);
    for f in from..first_frame + n as u64 {
        since_active = if active(f) { Some(0) } else { since_active.map(|d| d + 1) };
        if f >= first_frame {
            let on = matches!(since_active, Some(d) if d <= history);
            out.push(if on { 1.0 } else { 0.0 });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|i| amp * (i as f32 * 2.0 * std::f32::consts::PI * 220.0 / 16_000.0).sin()).collect()
    }

    #[test]
    fn silence_is_inactive_tone_is_active() {
        let cfg = VadConfig::default();
        assert!(voice_activity(&vec![0.0; 16_000], 16_000, 24, &cfg).iter().all(|m| *m == 0.0));
        let low_noise: Vec<f32> = (0..16_000).map(|i| if i % 2 == 0 { 1e-4 } else { -1e-4 }).collect();
        assert!(voice_activity(&low_noise, 16_000, 24, &cfg).iter().all(|m| *m == 0.0));
        let m = voice_activity(&tone(16_000, 0.3), 16_000, 24, &cfg);
        assert_eq!(m.len(), 24);
        assert!(m.iter().all(|m| *m == 1.0));
        assert!((rms_dbfs(&tone(16_000, 1.0)) + 3.01).abs() < 0.05);
    }

    #[test]
    fn hangover_extends_speech_then_releases() {
        let cfg = VadConfig { threshold_dbfs: -40.0, hangover_frames: 3 };
        // 0.5 s tone (12 frames), then 0.5 s silence.
        let mut pcm = tone(8_000, 0.3);
        pcm.extend(vec![0.0; 8_000]);
        let m = voice_activity(&pcm, 16_000, 24, &cfg);
        let on: Vec<usize> = m.iter().enumerate().filter(|(_, v)| **v == 1.0).map(|(i, _)| i).collect();
        assert_eq!(on, (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn streaming_slice_matches_whole_clip() {
        let cfg = VadConfig::default();
        let mut pcm = tone(6_000, 0.2);
        pcm.extend(vec![0.0; 10_000]);
        pcm.extend(tone(8_000, 0.2));
        let whole = voice_activity(&pcm, 16_000, 24, &cfg);
        // frames 12..24 from a slice starting at sample 4000 (enough history).
        let part = voice_activity_frames(&pcm[4_000..], 4_000, 12, 12, 16_000, 24, &cfg);
        assert_eq!(part, whole[12..24].to_vec());
    }
}
