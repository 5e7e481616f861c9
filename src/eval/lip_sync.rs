//! Lip sync: mouth openness measured on frames, correlated with the
//! ground-truth openness of the driving talk audio.
//!
//! **Measurement.** The reference image shows the identity with its mouth
//! closed. In a frame, the mouth box of the layout is moved by the tracked
//! face shift and compared pixel by pixel with the reference's mouth box:
//! the openness is the mean absolute colour difference (0..1). The synth
//! draws an open mouth as a dark interior (RGB 0.32, 0.08, 0.10) with teeth
//! (near white) and a tongue (pink), none of which is skin or lip colour,
//! so the changed area grows with the opening whatever the skin tone or
//! beard; a still mouth measures near 0. Measured this way on the synth's
//! own frames the openness correlates with the true openness at r > 0.9 at
//! 128 x 128 and r > 0.75 at 64 x 64, where a one-pixel tracking error is
//! a large part of a mouth (`tests/eval.rs`).
//!
//! **Score.** Pearson correlation of measured and true openness over all
//! frames, at the best lag within `±max_lag` frames (video late = positive
//! lag), as SyncNet-style scores search the offset; the lag-0 correlation
//! and the correlation over the avatar's talk turns only are reported too.
//! A mouth that never changes has no defined correlation and scores 0.

use serde::Serialize;

use super::face_layout::FaceLayout;
use super::face_tracker::shifted_pixel;
use super::EvalError;
use crate::media::frame::RgbFrame;

/// Mouth openness of `frame` (0..1): mean L1 colour difference of the
/// shifted mouth box against the reference's closed mouth.
pub fn mouth_openness(frame: &RgbFrame, reference: &RgbFrame, layout: &FaceLayout, shift: (i32, i32)) -> f32 {
    let m = layout.mouth;
    let mut sum = 0u64;
    for y in m.y0..m.y1 {
        for x in m.x0..m.x1 {
            let f = shifted_pixel(frame, x, y, shift);
            let i = (y * reference.width + x) * 3;
            let r = &reference.data[i..i + 3];
            sum += (0..3).map(|c| (f[c] as i32 - r[c] as i32).unsigned_abs() as u64).sum::<u64>();
        }
    }
    sum as f32 / (m.area().max(1) * 3) as f32 / 255.0
}

/// Pearson correlation; `None` when fewer than 3 pairs or either side is
/// constant.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len());
    if n < 3 {
        return None;
    }
    let ma = a[..n].iter().sum::<f64>() / n as f64;
    let mb = b[..n].iter().sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a[..n].iter().zip(&b[..n]) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    let den = (saa * sbb).sqrt();
    (den > 1e-12 * n as f64).then(|| sab / den)
}

/// Lip-sync scores of one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LipSyncResult {
    /// Correlation at the best lag.
    pub corr: f64,
    /// The best lag in frames (positive: the video is late).
    pub best_lag_frames: i32,
    pub corr_lag0: f64,
    /// Lag-0 correlation over the frames of the avatar's talk turns only
    /// (`None` when there are fewer than 3 or either side is constant there).
    pub talk_turns_corr: Option<f64>,
    pub frames: usize,
}

/// Correlate `measured` openness with the ground truth `truth` (same
/// frames); `talking[f]` marks frames of the avatar's turns.
pub fn lip_sync(truth: &[f32], measured: &[f32], talking: &[bool], max_lag: usize) -> Result<LipSyncResult, EvalError> {
    let n = truth.len();
    if measured.len() != n || talking.len() != n {
        return Err(EvalError::Invalid(format!(
            "lip sync needs equal lengths: truth {n}, measured {}, talking {}",
            measured.len(),
            talking.len()
        )));
    }
    if n <= 2 * max_lag + 2 {
        return Err(EvalError::Invalid(format!("{n} frames are too few for lip sync with lags of ±{max_lag}")));
    }
    let t: Vec<f64> = truth.iter().map(|&v| v as f64).collect();
    let m: Vec<f64> = measured.iter().map(|&v| v as f64).collect();
    let at_lag = |lag: i32| -> f64 {
        // Compare truth[f] with measured[f + lag] over the common frames.
        let (ts, ms) = if lag >= 0 {
            (&t[..n - lag as usize], &m[lag as usize..])
        } else {
            (&t[(-lag) as usize..], &m[..n - (-lag) as usize])
        };
        pearson(ts, ms).unwrap_or(0.0)
    };
    let corr_lag0 = at_lag(0);
    let (mut best_lag, mut corr) = (0, corr_lag0);
    let max_lag = max_lag as i32;
    for lag in -max_lag..=max_lag {
        let c = at_lag(lag);
        if c > corr {
            corr = c;
            best_lag = lag;
        }
    }
    let (tt, mt): (Vec<f64>, Vec<f64>) =
        t.iter().zip(&m).zip(talking).filter(|(_, &k)| k).map(|((&a, &b), _)| (a, b)).unzip();
    Ok(LipSyncResult { corr, best_lag_frames: best_lag, corr_lag0, talk_turns_corr: pearson(&tt, &mt), frames: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_basics() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]).is_none());
        assert!(pearson(&[1.0, 2.0], &[1.0, 2.0]).is_none());
    }

    #[test]
    fn finds_a_late_video() {
        let truth: Vec<f32> = (0..200).map(|i| ((i as f32 * 0.37).sin() * (i as f32 * 0.05).cos()).max(0.0)).collect();
        let late: Vec<f32> = (0..200).map(|i| if i >= 2 { truth[i - 2] } else { 0.0 }).collect();
        let talking = vec![true; 200];
        let r = lip_sync(&truth, &late, &talking, 3).unwrap();
        assert_eq!(r.best_lag_frames, 2);
        assert!(r.corr > 0.99 && r.corr_lag0 < r.corr, "{r:?}");
        let still = vec![0.1f32; 200];
        let r = lip_sync(&truth, &still, &talking, 3).unwrap();
        assert_eq!((r.corr, r.talk_turns_corr), (0.0, None));
        assert!(lip_sync(&truth, &still[..10], &talking, 3).is_err());
    }
}
