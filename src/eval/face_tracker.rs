//! The translation of the face in a frame relative to the reference image:
//! block matching of the reference's face region (mouth left out, so
//! speech does not pull the match) on luma, minimising the mean squared
//! difference over integer shifts within [`FaceLayout::max_shift`].
//!
//! Coarse to fine: every second shift on every second template pixel, then
//! all shifts within 2 pixels of the coarse best on the full template.
//! Pixels shifted outside the frame read the nearest edge pixel. Ties keep
//! the smaller shift (a still frame tracks to (0, 0)).

use super::face_layout::FaceLayout;
use super::EvalError;
use crate::media::frame::RgbFrame;

/// Luma of an RGB frame, one f32 (0..255) per pixel.
pub fn luma(frame: &RgbFrame) -> Vec<f32> {
    frame.data.chunks_exact(3).map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect()
}

/// Check that `frame` is a `size` x `size` RGB frame.
pub fn check_frame(frame: &RgbFrame, size: usize) -> Result<(), EvalError> {
    if frame.width != size || frame.height != size || frame.data.len() != size * size * 3 {
        return Err(EvalError::Invalid(format!(
            "frame is {}x{} ({} bytes), the evaluation expects {size}x{size} RGB",
            frame.width,
            frame.height,
            frame.data.len()
        )));
    }
    Ok(())
}

/// Template of one reference face, ready to match frames against.
#[derive(Debug, Clone)]
pub struct FaceTracker {
    size: usize,
    max_shift: i32,
    /// (x, y, reference luma) of every face pixel outside the mouth.
    template: Vec<(i32, i32, f32)>,
    /// The subset with even x and y (coarse pass).
    coarse: Vec<(i32, i32, f32)>,
}

impl FaceTracker {
    pub fn new(layout: &FaceLayout, reference: &RgbFrame) -> Result<Self, EvalError> {
        check_frame(reference, layout.size)?;
        let y = luma(reference);
        let mut template = Vec::new();
        for py in layout.face.y0..layout.face.y1 {
            for px in layout.face.x0..layout.face.x1 {
                if layout.in_face_not_mouth(px, py) {
                    template.push((px as i32, py as i32, y[py * layout.size + px]));
                }
            }
        }
        if template.len() < 16 {
            return Err(EvalError::Invalid(format!("face template has only {} pixels", template.len())));
        }
        let coarse = template.iter().copied().filter(|&(x, y, _)| x % 2 == 0 && y % 2 == 0).collect();
        Ok(Self { size: layout.size, max_shift: layout.max_shift, template, coarse })
    }

    fn cost(&self, luma: &[f32], points: &[(i32, i32, f32)], dx: i32, dy: i32) -> f32 {
        let last = self.size as i32 - 1;
        let mut sum = 0.0f32;
        for &(x, y, r) in points {
            let sx = (x + dx).clamp(0, last) as usize;
            let sy = (y + dy).clamp(0, last) as usize;
            let d = luma[sy * self.size + sx] - r;
            sum += d * d;
        }
        sum / points.len().max(1) as f32
    }

    /// Shift `(dx, dy)` in pixels such that frame pixel `p + shift` shows
    /// what reference pixel `p` shows.
    pub fn track(&self, frame: &RgbFrame) -> Result<(i32, i32), EvalError> {
        check_frame(frame, self.size)?;
        let y = luma(frame);
        let r = self.max_shift;
        let better = |cost: f32, best: f32, shift: (i32, i32), at: (i32, i32)| {
            cost < best || (cost == best && shift.0.abs() + shift.1.abs() < at.0.abs() + at.1.abs())
        };
        let mut at = (0, 0);
        let mut best = self.cost(&y, &self.coarse, 0, 0);
        for dy in (-r..=r).step_by(2) {
            for dx in (-r..=r).step_by(2) {
                let c = self.cost(&y, &self.coarse, dx, dy);
                if better(c, best, (dx, dy), at) {
                    best = c;
                    at = (dx, dy);
                }
            }
        }
        let (cx, cy) = at;
        let mut best = self.cost(&y, &self.template, cx, cy);
        for dy in (cy - 2).max(-r)..=(cy + 2).min(r) {
            for dx in (cx - 2).max(-r)..=(cx + 2).min(r) {
                let c = self.cost(&y, &self.template, dx, dy);
                if better(c, best, (dx, dy), at) {
                    best = c;
                    at = (dx, dy);
                }
            }
        }
        Ok(at)
    }
}

/// Pixel `(x + dx, y + dy)` of `frame` (edge pixels outside), as RGB.
#[inline]
pub fn shifted_pixel(frame: &RgbFrame, x: usize, y: usize, shift: (i32, i32)) -> [u8; 3] {
    let last_x = frame.width as i32 - 1;
    let last_y = frame.height as i32 - 1;
    let sx = (x as i32 + shift.0).clamp(0, last_x) as usize;
    let sy = (y as i32 + shift.1).clamp(0, last_y) as usize;
    let i = (sy * frame.width + sx) * 3;
    [frame.data[i], frame.data[i + 1], frame.data[i + 2]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::avatar::draw_avatar;
    use crate::synth::identity::Identity;
    use crate::synth::motion::Pose;

    #[test]
    fn finds_the_head_translation_of_a_swaying_avatar() {
        let id = Identity::from_id(crate::synth::HELDOUT_IDENTITY_START + 11);
        let size = 128;
        let layout = FaceLayout::of_identity(&id, size).unwrap();
        let reference = draw_avatar(&id, &Pose::neutral(), size);
        let tracker = FaceTracker::new(&layout, &reference).unwrap();
        assert_eq!(tracker.track(&reference).unwrap(), (0, 0));
        // Sway moves head and body by `sway` design units = sway * 2/3 px
        // at 128 (the camera shows 192 design units).
        let px_per_unit = crate::synth::framing::FRAMING.scale(size);
        for sway in [-8.0f32, 6.0, 12.0] {
            let f = draw_avatar(&id, &Pose { sway, ..Pose::neutral() }, size);
            let (dx, dy) = tracker.track(&f).unwrap();
            let want = sway * px_per_unit;
            assert!((dx as f32 - want).abs() <= 1.0 && dy.abs() <= 1, "sway {sway}: ({dx}, {dy}), want {want}");
        }
        // A nod moves the face down.
        let f = draw_avatar(&id, &Pose { pitch: 12.0, ..Pose::neutral() }, size);
        let (_, dy) = tracker.track(&f).unwrap();
        assert!(dy >= 1, "nod: dy {dy}");
        assert!(tracker.track(&RgbFrame::solid(64, 64, [0; 3])).is_err());
    }
}
