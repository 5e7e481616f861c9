//! The camera of the synth: which square window of the 256 x 256 design
//! space a frame shows.
//!
//! The person is drawn in design space (`avatar::DESIGN_SIZE`); the frame
//! shows [`FRAMING`], an upper-body shot: the head, the shoulders and the
//! hands when they rise to gesture. Every consumer of design coordinates
//! in pixels (the renderer, the ground-truth hand positions, the
//! evaluation's face layout) maps through this one window, so they agree.
//!
//! Why not the whole design space: at the mini model's 128 x 128 and the
//! VAE's 16x spatial compression a face spanning half of a 256-unit frame
//! covers only ~2.5 latent cells, too few to keep eyes and a mouth through
//! the VAE (docs/TRAINING.md, session 8). The 192-unit window enlarges
//! everything by 4/3 (the face covers ~3.8 cells).

use super::render::Xform;

/// A square window `[x0, x0 + side) x [y0, y0 + side)` of design space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Framing {
    pub x0: f32,
    pub y0: f32,
    pub side: f32,
}

/// The synth's camera: centred on the body axis (x = 128), from the top of
/// the hair (hats may leave the frame) down to below the shoulders.
pub const FRAMING: Framing = Framing { x0: 32.0, y0: 12.0, side: 192.0 };

impl Framing {
    /// Pixels per design unit in a `size` x `size` frame.
    pub fn scale(&self, size: usize) -> f32 {
        size as f32 / self.side
    }

    /// Design space -> pixels of a `size` x `size` frame.
    pub fn xform(&self, size: usize) -> Xform {
        let s = self.scale(size);
        Xform { scale: s, cos: 1.0, sin: 0.0, tx: -self.x0 * s, ty: -self.y0 * s }
    }

    /// A design point in normalised frame coordinates (0..1 inside the
    /// frame; outside when the point is out of view).
    pub fn normalised(&self, (x, y): (f32, f32)) -> (f32, f32) {
        ((x - self.x0) / self.side, (y - self.y0) / self.side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_corners_map_to_frame_corners() {
        let xf = FRAMING.xform(128);
        let (x, y) = xf.apply(FRAMING.x0, FRAMING.y0);
        assert!(x.abs() < 1e-4 && y.abs() < 1e-4);
        let (x, y) = xf.apply(FRAMING.x0 + FRAMING.side, FRAMING.y0 + FRAMING.side);
        assert!((x - 128.0).abs() < 1e-3 && (y - 128.0).abs() < 1e-3);
        assert_eq!(FRAMING.normalised((128.0, FRAMING.y0 + FRAMING.side / 2.0)), (0.5, 0.5));
    }
}
