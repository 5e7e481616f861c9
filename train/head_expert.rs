//! The latent head expert: a frozen read-out ([`super::latent_readout`])
//! of how far the head has pitched (nodded) since the reference frame, from
//! VAE latents, fit by `streamavatar train head_expert`.
//!
//! Why: the listen branch of every DiT so far changed nothing (the
//! evaluation's listen and silent-listen streams moved alike, ratio 1.01-
//! 1.02, sessions 12-16). A nod moves the head ~1-2 px at 128x128 for
//! half a second, a tiny share of a clip's flow-matching error, so the MSE
//! never made the DiT read the partner's audio, just as it never made it
//! read its own for the mouth until the lip expert (session 16). This
//! expert gives the listening reaction its own loss term
//! (`--head-expert`, `--head-motion-expert-weight` on the teacher):
//! `weight * (expert(x0_hat) - pitch)^2`, where the synth's pitch follows
//! the partner's phrases (nods 0.2-0.6 s after a phrase ends) and the
//! avatar's own stressed syllables.
//!
//! The grid stays where the face of the clip's identity is at rest
//! ([`GRID_COLUMNS`] x [`GRID_ROWS`] points spread over the face box):
//! a nod moves the head across it, and `crop_f - crop_ref` reads how far.
//! Target per latent frame: the mean pitch of its four video frames minus
//! the first frame's, over [`PITCH_SCALE`] degrees. In the teacher's term
//! a latent frame counts by the share of its video frames in which the
//! avatar listens ([`ReadoutTargets::frame_weights`]): the talk turns' nods
//! follow the avatar's own speech, which the lip expert already scores,
//! and a first version that scored every frame moved the head better
//! with and without the partner's audio alike (session-17 log).
//!
//! Weights: `head_expert.fc1.{weight,bias}`, `head_expert.fc2.{weight,bias}`.

use candle_core::{Device, Tensor};

use super::data::{ClipSource, HeadTruth};
use super::latent_readout::{per_latent_mean, to_latent, GridSampling, ReadoutTargets, TruthCache};
use super::TrainError;

/// Grid columns across the face box.
pub const GRID_COLUMNS: usize = 5;
/// Grid rows down the face box (hairline to chin).
pub const GRID_ROWS: usize = 6;
/// Degrees of pitch per unit of the target (the listening nods are 4-8°).
pub const PITCH_SCALE: f32 = 4.0;

/// The fixed face grid of an identity: the centres of a
/// [`GRID_COLUMNS`] x [`GRID_ROWS`] split of its face box (pixels), as
/// latent pixel coordinates at `factor`.
pub fn face_grid(face: &crate::eval::face_layout::PixelBox, factor: usize) -> Vec<(f32, f32)> {
    let (w, h) = ((face.x1 - face.x0) as f32, (face.y1 - face.y0) as f32);
    (0..GRID_ROWS)
        .flat_map(|r| {
            (0..GRID_COLUMNS).map(move |c| {
                let x = face.x0 as f32 + w * (c as f32 + 0.5) / GRID_COLUMNS as f32;
                let y = face.y0 as f32 + h * (r as f32 + 0.5) / GRID_ROWS as f32;
                (x, y)
            })
        })
        .map(|p| to_latent(p, factor))
        .collect()
}

/// The face grid of `face` at rest for `frames` latent frames and the
/// reference, on an `h x w` latent grid of `factor`-pixel latent pixels.
pub fn face_sampling(
    face: &crate::eval::face_layout::PixelBox,
    factor: usize,
    frames: usize,
    (h, w): (usize, usize),
    dev: &Device,
) -> Result<GridSampling, TrainError> {
    let grid = face_grid(face, factor);
    GridSampling::new(&vec![grid.clone(); frames], &grid, h, w, dev)
}

/// The targets of the latent frames after the reference: mean pitch of
/// each one's four video frames minus frame 0's, over [`PITCH_SCALE`].
pub fn latent_pitch(pitch: &[f32]) -> Vec<f32> {
    let first = pitch.first().copied().unwrap_or(0.0);
    per_latent_mean(pitch).into_iter().map(|p| (p - first) / PITCH_SCALE).collect()
}

/// Per-clip pitch targets and face grids, read once per clip from the
/// synth script (no rendering).
#[derive(Debug, Default)]
pub struct PitchTargets {
    cache: TruthCache<HeadTruth>,
}

impl ReadoutTargets for PitchTargets {
    const NAME: &'static str = "head_expert";
    const POINTS: usize = GRID_COLUMNS * GRID_ROWS;

    fn of(
        &mut self,
        data: &ClipSource,
        index: u64,
        factor: usize,
        (h, w): (usize, usize),
        dev: &Device,
    ) -> Result<(Tensor, GridSampling), TrainError> {
        let truth = self.cache.get_or_read(index, || data.head_truth(index))?;
        let targets = latent_pitch(&truth.pitch);
        let at = face_sampling(&truth.face, factor, targets.len(), (h, w), dev)?;
        Ok((Tensor::from_slice(&targets, targets.len(), dev)?, at))
    }

    fn frame_weights(&self, index: u64) -> Option<Vec<f32>> {
        self.cache.get(index).map(|truth| per_latent_mean(&truth.listening))
    }
}

/// The stage that fits the head expert (`train head_expert`).
pub type HeadExpertStage = super::latent_readout::ExpertStage<PitchTargets>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitch_targets_are_relative_to_the_first_frame() {
        let pitch = [2.0, 2.0, 2.0, 2.0, 2.0, 6.0, 6.0, 10.0, 10.0];
        assert_eq!(latent_pitch(&pitch), vec![0.0, 1.5]);
    }

    /// The grid covers the face box evenly, in latent coordinates.
    #[test]
    fn face_grid_spreads_over_the_face_box() {
        let face = crate::eval::face_layout::PixelBox { x0: 40, y0: 24, x1: 80, y1: 72 };
        let g = face_grid(&face, 8);
        assert_eq!(g.len(), GRID_COLUMNS * GRID_ROWS);
        // First point: pixel (44, 28) -> latent (5.0, 3.0); last (76, 68) -> (9.0, 8.0).
        assert_eq!(g[0], (5.0, 3.0));
        assert_eq!(g[g.len() - 1], (9.0, 8.0));
    }

    /// Through the teacher's clip source: one target per latent frame, a
    /// grid inside the latent frame, and the first frame's target 0 only if
    /// the head did not move in the first latent frame.
    #[test]
    fn targets_of_a_clip() -> anyhow::Result<()> {
        let data = ClipSource {
            seed: 1,
            size: 64,
            latent_frames: 2,
            identities: 4,
            max_offset_s: 2.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        let (target, _) = PitchTargets::default().of(&data, 0, 8, (8, 8), &Device::Cpu)?;
        assert_eq!(target.dims(), &[2]);
        assert!(target.to_vec1::<f32>()?.iter().all(|v| v.is_finite() && v.abs() < 10.0));
        let truth = data.head_truth(0)?;
        assert_eq!(truth.pitch.len(), 9);
        assert!(truth.face.x1 <= 64 && truth.face.y1 <= 64 && truth.face.x0 < truth.face.x1);
        Ok(())
    }
}
