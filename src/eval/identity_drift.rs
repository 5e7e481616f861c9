//! Identity over a long stream: similarity of the generated face to the
//! reference identity, per window of the stream, and its drift.
//!
//! Similarity of a frame is the PSNR (dB) between the tracked face region
//! (the layout's face without the mouth, moved by the tracked shift) and
//! the same region of the reference, after averaging both over blocks of
//! `size / 64` pixels (so the score is about who the face is, not about
//! pixel-exact detail or the pose's small parallax). Per window (60 s by
//! default) the frame PSNRs are averaged; drift = first window minus last
//! window (positive: the identity fades).

use serde::Serialize;

use super::face_layout::FaceLayout;
use super::face_tracker::shifted_pixel;
use super::EvalError;
use crate::media::frame::RgbFrame;

/// PSNR cap for identical regions.
pub const MAX_PSNR_DB: f32 = 60.0;

/// Block side of the identity comparison for a frame side `size`.
pub fn block_size(size: usize) -> usize {
    (size / 64).max(1)
}

/// Block-averaged PSNR (dB) of the tracked face (mouth excluded) against
/// the reference.
pub fn identity_psnr(frame: &RgbFrame, reference: &RgbFrame, layout: &FaceLayout, shift: (i32, i32)) -> f32 {
    let b = block_size(layout.size);
    let f = layout.face;
    let (mut se, mut cells) = (0f64, 0usize);
    let mut by = f.y0;
    while by < f.y1 {
        let mut bx = f.x0;
        while bx < f.x1 {
            let (mut fs, mut rs, mut n) = ([0f64; 3], [0f64; 3], 0usize);
            for y in by..(by + b).min(f.y1) {
                for x in bx..(bx + b).min(f.x1) {
                    if !layout.in_face_not_mouth(x, y) {
                        continue;
                    }
                    let p = shifted_pixel(frame, x, y, shift);
                    let i = (y * reference.width + x) * 3;
                    for c in 0..3 {
                        fs[c] += p[c] as f64;
                        rs[c] += reference.data[i + c] as f64;
                    }
                    n += 1;
                }
            }
            // A block counts when at least half of it is face.
            if n * 2 >= b * b {
                for c in 0..3 {
                    let d = (fs[c] - rs[c]) / n as f64;
                    se += d * d;
                }
                cells += 1;
            }
            bx += b;
        }
        by += b;
    }
    if cells == 0 {
        return 0.0;
    }
    let mse = se / (cells * 3) as f64;
    if mse <= 0.0 {
        return MAX_PSNR_DB;
    }
    ((10.0 * (255.0f64 * 255.0 / mse).log10()) as f32).min(MAX_PSNR_DB)
}

/// Identity similarity over the stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftResult {
    pub window_s: f64,
    /// Mean PSNR (dB) per window, in stream order.
    pub psnr_per_window: Vec<f64>,
    /// Mean PSNR over all frames.
    pub mean_psnr: f64,
    /// First window minus last window (dB).
    pub drift_db: f64,
}

/// Windows of `window_s` over streams of per-frame PSNR (one stream per
/// identity, all of the same length; windows are averaged across streams).
/// The frames after the last full window join it; a stream shorter than
/// one window is one window.
pub fn drift(streams: &[Vec<f32>], fps: f64, window_s: f64) -> Result<DriftResult, EvalError> {
    let n = streams.first().map_or(0, Vec::len);
    if n == 0 || streams.iter().any(|s| s.len() != n) {
        return Err(EvalError::Invalid("identity drift needs streams of equal, non-zero length".into()));
    }
    if !(window_s.is_finite() && window_s > 0.0) {
        return Err(EvalError::Invalid(format!("drift window {window_s} s must be > 0")));
    }
    let wf = ((window_s * fps).round() as usize).max(1);
    let windows = (n / wf).max(1);
    let bounds = |w: usize| (w * wf, if w + 1 == windows { n } else { (w + 1) * wf });
    let psnr_per_window: Vec<f64> = (0..windows)
        .map(|w| {
            let (a, b) = bounds(w);
            let sum: f64 = streams.iter().map(|s| s[a..b].iter().map(|&v| v as f64).sum::<f64>()).sum();
            sum / ((b - a) * streams.len()) as f64
        })
        .collect();
    let total: f64 = streams.iter().flatten().map(|&v| v as f64).sum();
    let mean_psnr = total / (n * streams.len()) as f64;
    let drift_db = psnr_per_window[0] - psnr_per_window[windows - 1];
    Ok(DriftResult { window_s, psnr_per_window, mean_psnr, drift_db })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_average_across_streams() {
        let a: Vec<f32> = (0..10).map(|i| 30.0 - i as f32).collect();
        let b = vec![20.0f32; 10];
        let r = drift(&[a, b], 1.0, 4.0).unwrap();
        // windows [0,4) and [4,10): a means 28.5 and 23.5, b 20.
        assert_eq!(r.psnr_per_window, vec![24.25, 21.75]);
        assert!((r.drift_db - 2.5).abs() < 1e-9);
        assert!((r.mean_psnr - 22.75).abs() < 1e-9);
        assert!(drift(&[vec![1.0; 3], vec![1.0; 4]], 1.0, 1.0).is_err());
        assert!(drift(&[vec![1.0; 3]], 1.0, 0.0).is_err());
        assert_eq!(drift(&[vec![5.0; 3]], 24.0, 60.0).unwrap().psnr_per_window, vec![5.0]);
    }
}
