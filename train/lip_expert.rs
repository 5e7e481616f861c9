//! The latent lip-sync expert: a frozen read-out
//! ([`super::latent_readout`]) of mouth openness from VAE latents, fit by
//! `streamavatar train lip_expert`.
//!
//! Why: the flow-matching MSE cannot teach the DiT lip sync at mini scale
//! (sessions 13-15, docs/TRAINING.md). An opening of 0.3 moves ~8-72 of a
//! latent frame's squared error, while the mouth box's error is ~500 per
//! frame, almost all of it where the head is: what the audio explains is a
//! few percent of even a mouth-only loss. Talking-head models meet the same
//! problem with a lip-sync expert (Wav2Lip's and LatentSync's SyncNet loss,
//! MuseTalk's sync loss): a frozen network that reads the mouth, whose
//! error is added to the generator's loss. Ours reads the synth's ground
//! truth instead of judging audio-video sync, which the synth makes exact:
//! `expert(latents) ~ mouth openness`, fit on real latents of the training
//! pool; the DiT stages then add `weight * (expert(x0_hat) - openness)^2`
//! (`--lip-expert`, `--lip-sync-weight`), a signal about the mouth alone
//! that head-position error does not drown.
//!
//! The read-out follows the head: the synth knows where the mouth is in
//! every frame ([`crate::synth::avatar::mouth_centre`]), so the expert
//! samples the latents (bilinearly, differentiably) on a small grid of
//! [`GRID_DX`] x [`GRID_DY`] latent pixels around the mouth of each latent
//! frame (the mean position over its four video frames) and of the
//! reference frame, and maps `[crop_f, crop_f - crop_ref]` through
//! Linear -> SiLU -> Linear to the openness. A read-out over a fixed box
//! sees mostly where the head is (a per-pixel MLP summed over the mouth box
//! grown by the head's motion reached a batch r of ~0.2 in 800 steps); the
//! head-following one reads the mouth (a ridge read-out of the same grid:
//! within-clip r 0.77 on held-out pool clips; this expert 0.92 on
//! `teacher_check`'s unseen clips, session 16). Target: the mean true openness of the
//! latent frame's four video frames (the causal VAE's layout: latent
//! `j >= 1` holds video frames `4j-3 ..= 4j`).
//!
//! The positions are the real clip's, so the expert fits a DiT output that
//! keeps the clip's head motion: the teacher's clean estimates (at high
//! noise their head is the posterior mean's, near the truth). A student's
//! free rollout moves the head its own way, so the students learn lip sync
//! from the teacher (DMD), not from the expert.
//!
//! Weights: `lip_expert.fc1.{weight,bias}`, `lip_expert.fc2.{weight,bias}`
//! in the stage's `params.safetensors`.

use candle_core::{Device, Tensor};

use super::data::{ClipSource, MouthTruth};
use super::latent_readout::{
    offset_grid, per_latent_mean, to_latent, GridSampling, Readout, ReadoutTargets, TruthCache,
};
use super::TrainError;

/// Horizontal offsets (latent pixels) of the sampling grid from the mouth.
pub const GRID_DX: [f32; 4] = [-1.5, -0.5, 0.5, 1.5];
/// Vertical offsets (the mouth opens downwards from its anchor).
pub const GRID_DY: [f32; 3] = [-1.0, 0.0, 1.0];
/// Sampling points per frame.
pub const GRID_POINTS: usize = GRID_DX.len() * GRID_DY.len();

/// The lip expert is a [`Readout`] named `lip_expert`.
pub type LipExpert = Readout;

/// The mouth grid of a clip on an `h x w` latent grid of `factor`-pixel
/// latent pixels, from the mouth centres per video frame (pixels, `1 + 4k`
/// frames): around each latent frame's mean mouth position, and the first
/// frame's for the reference.
pub fn mouth_sampling(
    centres: &[(f32, f32)],
    factor: usize,
    h: usize,
    w: usize,
    dev: &Device,
) -> Result<GridSampling, TrainError> {
    let first = centres.first().copied().ok_or_else(|| TrainError::Invalid("a clip without frames".into()))?;
    let grid = |c: (f32, f32)| offset_grid(to_latent(c, factor), &GRID_DX, &GRID_DY);
    let frames: Vec<_> = latent_centres(centres).into_iter().map(grid).collect();
    GridSampling::new(&frames, &grid(first), h, w, dev)
}

/// Mean mouth position of each latent frame after the reference (its four
/// video frames).
fn latent_centres(centres: &[(f32, f32)]) -> Vec<(f32, f32)> {
    let xs: Vec<f32> = centres.iter().map(|c| c.0).collect();
    let ys: Vec<f32> = centres.iter().map(|c| c.1).collect();
    per_latent_mean(&xs).into_iter().zip(per_latent_mean(&ys)).collect()
}

/// The target of latent frame `j >= 1`: mean openness of its four video
/// frames (`mouth_open` per video frame, `1 + 4k` of them). Returns `k`
/// values (the latent frames after the reference).
pub fn latent_openness(mouth_open: &[f32]) -> Vec<f32> {
    per_latent_mean(mouth_open)
}

/// Per-clip openness targets and mouth grids, read once per clip from the
/// synth script (no rendering; the script costs ~0.1 s, its result a few
/// hundred bytes).
#[derive(Debug, Default)]
pub struct OpennessTargets {
    cache: TruthCache<MouthTruth>,
}

impl ReadoutTargets for OpennessTargets {
    const NAME: &'static str = "lip_expert";
    const POINTS: usize = GRID_POINTS;

    fn of(
        &mut self,
        data: &ClipSource,
        index: u64,
        factor: usize,
        (h, w): (usize, usize),
        dev: &Device,
    ) -> Result<(Tensor, GridSampling), TrainError> {
        let truth = self.cache.get_or_read(index, || data.mouth_truth(index))?;
        let targets = latent_openness(&truth.open);
        Ok((Tensor::from_slice(&targets, targets.len(), dev)?, mouth_sampling(&truth.centres, factor, h, w, dev)?))
    }
}

/// The stage that fits the lip expert (`train lip_expert`).
pub type LipExpertStage = super::latent_readout::ExpertStage<OpennessTargets>;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn latent_targets_average_each_latent_frames_video_frames() {
        let open = [9.0, 0.0, 0.0, 0.4, 0.4, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(latent_openness(&open), vec![0.2, 1.0]);
        let centres: Vec<(f32, f32)> = (0..9).map(|i| (i as f32, 0.0)).collect();
        assert_eq!(latent_centres(&centres), vec![(2.5, 0.0), (6.5, 0.0)]);
    }

    /// The mouth grid follows the mouth: a change at the mouth of frame 1
    /// changes frame 1's read-out only, a far corner nothing.
    #[test]
    fn expert_reads_the_latents_around_the_mouth() -> anyhow::Result<()> {
        let (h, w) = (8, 8);
        let dev = Device::Cpu;
        let store = super::super::params::ParamStore::new(3, &dev);
        OpennessTargets::readout(2, store.var_builder())?;
        // The last layer starts at zero (ZERO_INIT): give it values.
        store.insert(
            "lip_expert.fc2.weight",
            &Tensor::ones((1, super::super::latent_readout::READOUT_HIDDEN), DType::F32, &dev)?,
        )?;
        let expert = OpennessTargets::readout(2, store.var_builder())?;
        // A mouth at pixel (36, 36) of a 64-pixel frame: latent (4, 4) at factor 8.
        let centres = vec![(36.0f32, 36.0f32); 9];
        let at = mouth_sampling(&centres, 8, h, w, &dev)?;
        let frames = Tensor::randn(0f32, 1.0, (1, 2, 2, h, w), &dev)?;
        let reference = Tensor::randn(0f32, 1.0, (1, 2, 1, h, w), &dev)?;
        let base = expert.forward(&frames, &reference, &at)?.to_vec1::<f32>()?;
        let bump = |f: std::ops::Range<usize>, y: usize, x: usize| -> anyhow::Result<Tensor> {
            let ones = Tensor::ones((1, 2, f.len(), 1, 1), DType::F32, &dev)?;
            Ok(Tensor::zeros((1, 2, 2, h, w), DType::F32, &dev)?
                .slice_assign(&[0..1, 0..2, f, y..y + 1, x..x + 1], &ones)?)
        };
        let far = expert.forward(&(&frames + bump(0..2, 0, 0)?)?, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(far, base);
        let near = expert.forward(&(&frames + bump(1..2, 4, 4)?)?, &reference, &at)?.to_vec1::<f32>()?;
        assert_eq!(near[0], base[0]);
        assert_ne!(near[1], base[1]);
        Ok(())
    }
}
