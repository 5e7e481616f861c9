//! Where the face of a held-out synth identity is in a frame at rest: the
//! mouth box, the face region used for tracking and identity, and the head
//! region used for motion energy, in pixels of a `size` x `size` frame.
//!
//! The numbers come from the synth's drawing code (`synth::avatar`, design
//! space 256 x 256, seen through the camera window
//! `synth::framing::FRAMING`): the mouth is centred at
//! `head_center + (0, mouth_drop)` and opens downwards by up to
//! `0.32 * face_ry` (the upper lip rises by 30 % of that, the lower lip and
//! the smile add a few units); the face spans `face_rx` around the head
//! centre and reaches `chin_drop * face_ry` below it; the eyes sit
//! `eye_spacing` either side of the centre at height `eye_height`; hair and
//! hats extend above. Head motion of the synth (sway, yaw, nods) moves the
//! face by up to about 14 design units, which [`FaceLayout::max_shift`]
//! covers.

use super::EvalError;
use crate::synth::framing::{Framing, FRAMING};
use crate::synth::identity::Identity;

/// Largest face translation searched by the tracker, in design units.
pub const MAX_SHIFT_DESIGN: f32 = 16.0;

/// A pixel rectangle `[x0, x1) x [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl PixelBox {
    /// The pixels covering the design-space box `[x0, y0, x1, y1]` seen
    /// through `framing`, clipped to a `size` x `size` frame.
    fn from_design(b: [f32; 4], framing: &Framing, size: usize) -> Self {
        let xf = framing.xform(size);
        let (lo, hi) = (xf.apply(b[0], b[1]), xf.apply(b[2], b[3]));
        let clip = |v: f32| (v.max(0.0) as usize).min(size);
        Self { x0: clip(lo.0.floor()), y0: clip(lo.1.floor()), x1: clip(hi.0.ceil()), y1: clip(hi.1.ceil()) }
    }

    pub fn width(&self) -> usize {
        self.x1.saturating_sub(self.x0)
    }

    pub fn height(&self) -> usize {
        self.y1.saturating_sub(self.y0)
    }

    pub fn area(&self) -> usize {
        self.width() * self.height()
    }

    pub fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }

    /// Grown by `by` pixels on every side (not clipped).
    fn grown(&self, by: usize) -> Self {
        Self { x0: self.x0.saturating_sub(by), y0: self.y0.saturating_sub(by), x1: self.x1 + by, y1: self.y1 + by }
    }
}

/// The regions of one identity's face at rest in a square frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceLayout {
    /// Frame side in pixels.
    pub size: usize,
    /// The closed mouth with room for the widest and most open mouth.
    pub mouth: PixelBox,
    /// Cranium and jaw (hairline to chin); the tracker and the identity
    /// metric use it without [`FaceLayout::mouth_exclusion`].
    pub face: PixelBox,
    /// The mouth box grown by a margin: left out of the face region.
    pub mouth_exclusion: PixelBox,
    /// Head with hair and room for head motion (motion energy).
    pub head: PixelBox,
    /// Both eyes with room for head motion: left out of the motion energy
    /// (blinks and gaze saccades are abrupt and not a listening reaction).
    pub eyes: PixelBox,
    /// Tracker search radius in pixels.
    pub max_shift: i32,
}

impl FaceLayout {
    /// The layout of `id` in a `size` x `size` frame.
    pub fn of_identity(id: &Identity, size: usize) -> Result<Self, EvalError> {
        if size < 32 {
            return Err(EvalError::Invalid(format!("frame size {size} is too small to measure a face (>= 32)")));
        }
        let scale = FRAMING.scale(size);
        let (hx, hy) = id.head_center;
        let (rx, ry) = (id.face_rx, id.face_ry);
        let my = hy + id.mouth_drop;
        let mouth_half = id.mouth_half_width * 1.25 + 4.0;
        let mouth = PixelBox::from_design(
            [hx - mouth_half, my - 0.1 * ry - 3.0, hx + mouth_half, my + 0.23 * ry + 4.0],
            &FRAMING,
            size,
        );
        let chin = hy + ry * id.chin_drop;
        let face = PixelBox::from_design([hx - 1.1 * rx, hy - 0.75 * ry, hx + 1.1 * rx, chin + 3.0], &FRAMING, size);
        let head = PixelBox::from_design(
            [hx - 1.3 * rx - 16.0, hy - 1.3 * ry - 12.0, hx + 1.3 * rx + 16.0, chin + 14.0],
            &FRAMING,
            size,
        );
        let (eye_y, eye_half) = (hy + id.eye_height, id.eye_spacing + id.eye_rx + 6.0);
        let eyes = PixelBox::from_design(
            [hx - eye_half, eye_y - id.eye_ry - 6.0, hx + eye_half, eye_y + id.eye_ry + 6.0],
            &FRAMING,
            size,
        );
        let margin = (2.0 * scale).ceil().max(1.0) as usize;
        let layout = Self {
            size,
            mouth,
            face,
            mouth_exclusion: mouth.grown(margin),
            head,
            eyes,
            max_shift: (MAX_SHIFT_DESIGN * scale).ceil().max(1.0) as i32,
        };
        if layout.mouth.area() == 0 || layout.face.area() == 0 || layout.head.area() == 0 {
            return Err(EvalError::Invalid(format!("identity {} has no visible face at size {size}", id.id)));
        }
        Ok(layout)
    }

    /// `region` grown by the largest head motion ([`max_shift`](Self::max_shift))
    /// and clipped to the frame: where that region can be in any frame.
    pub fn with_motion(&self, region: PixelBox) -> PixelBox {
        let g = region.grown(self.max_shift.max(0) as usize);
        PixelBox { x1: g.x1.min(self.size), y1: g.y1.min(self.size), ..g }
    }

    /// True for face pixels outside the mouth (tracking, identity).
    pub fn in_face_not_mouth(&self, x: usize, y: usize) -> bool {
        self.face.contains(x, y) && !self.mouth_exclusion.contains(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_nest_and_scale_with_the_frame() {
        let id = Identity::from_id(crate::synth::HELDOUT_IDENTITY_START + 3);
        let small = FaceLayout::of_identity(&id, 64).unwrap();
        let big = FaceLayout::of_identity(&id, 256).unwrap();
        for l in [&small, &big] {
            assert!(l.face.contains(l.mouth.x0, l.mouth.y0), "{l:?}");
            assert!(l.head.contains(l.face.x0, l.face.y0) && l.head.contains(l.face.x1 - 1, l.face.y1 - 1), "{l:?}");
            assert!(l.mouth.width() > l.mouth.height());
            assert!(!l.in_face_not_mouth(l.mouth.x0 + 1, l.mouth.y0 + 1));
            assert!(l.face.contains(l.eyes.x0, l.eyes.y1) && l.eyes.y1 <= l.mouth.y0, "{l:?}");
        }
        assert!(big.mouth.area() > 12 * small.mouth.area());
        // 16 design units through the camera window (192 units wide).
        assert_eq!((big.max_shift, small.max_shift), (22, 6));
        assert!(FaceLayout::of_identity(&id, 16).is_err());
    }
}
