//! The listen-contrast term of the teacher: what the partner's speech
//! changes in the head, scored against what the synth's listening reactions
//! change (`train teacher --head-expert F --listen-contrast-weight W`).
//!
//! Why: `eval` scores listening as the head motion with the partner's
//! audio against the same stream with silence on the listen branch. The
//! head expert's plain term ([`super::head_expert`], `--head-motion-expert-
//! weight`) scores the raw pitch on listening frames: idle drift, talk nods
//! and listening nods together, most of which the partner's audio does not
//! explain, and the teachers it trained moved the head ~0.1 degrees more
//! with the partner's audio than without, where the synth nods 2-8
//! (session-18 log). This term scores exactly the contrast: the head
//! expert's read-out of the clean estimate with the partner's listen
//! tokens minus its read-out of the clean estimate from the same noisy
//! input with silent listen tokens (zero features, as the serving path's
//! voice-activity mask makes silence), against the synth's reaction
//! component of the pitch ([`crate::synth::motion::Pose::reaction_pitch`],
//! per latent frame over [`PITCH_SCALE`], 0 where nothing reacts). Both
//! estimates keep their gradients: a change of weights that moves both
//! alike leaves the contrast as it is, so only what the listen tokens
//! change is pushed (with the silent estimate detached, the gradient
//! would move the heard estimate through the weights both share, and the
//! silent one would follow at the next step).
//! Clips without a listening frame are skipped (both estimates see zero
//! listen features there).

use candle_core::{Device, Tensor};

use super::data::{ClipSource, HeadTruth};
use super::head_expert::{face_sampling, PITCH_SCALE};
use super::latent_readout::{per_latent_mean, GridSampling, Readout, TruthCache};
use super::TrainError;

/// Per latent frame after the reference: the mean reaction pitch of its
/// four video frames over [`PITCH_SCALE`] (the head expert's units).
pub fn latent_reaction(reaction: &[f32]) -> Vec<f32> {
    per_latent_mean(reaction).into_iter().map(|p| p / PITCH_SCALE).collect()
}

/// The frozen head expert and the term's weight.
pub struct ListenContrast {
    readout: Readout,
    weight: f64,
    cache: TruthCache<HeadTruth>,
}

impl ListenContrast {
    /// `weight` must be finite and > 0.
    pub fn new(readout: Readout, weight: f64) -> Result<Self, TrainError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(TrainError::Invalid(format!("--listen-contrast-weight {weight}: must be > 0")));
        }
        Ok(Self { readout, weight, cache: TruthCache::default() })
    }

    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// Clip `index`'s targets `[F]` and face grid on an `h x w` latent
    /// grid; `None` when the avatar never listens in the clip.
    pub fn targets(
        &mut self,
        data: &ClipSource,
        index: u64,
        factor: usize,
        (h, w): (usize, usize),
        dev: &Device,
    ) -> Result<Option<(Tensor, GridSampling)>, TrainError> {
        let truth = self.cache.get_or_read(index, || data.head_truth(index))?;
        if !truth.listening.iter().any(|&l| l > 0.0) {
            return Ok(None);
        }
        let targets = latent_reaction(&truth.reaction);
        let at = face_sampling(&truth.face, factor, targets.len(), (h, w), dev)?;
        Ok(Some((Tensor::from_slice(&targets, targets.len(), dev)?, at)))
    }

    /// `mean((read(heard) - read(silent) - target)^2)` over the latent
    /// frames; `heard` and `silent` are `[1, z, F, h, w]` clean estimates
    /// after `reference`.
    pub fn error(
        &self,
        heard: &Tensor,
        silent: &Tensor,
        reference: &Tensor,
        at: &GridSampling,
        target: &Tensor,
    ) -> Result<Tensor, TrainError> {
        let contrast = (self.readout.forward(heard, reference, at)? - self.readout.forward(silent, reference, at)?)?;
        Ok((contrast - target)?.sqr()?.mean_all()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::latent_readout::ReadoutTargets;

    #[test]
    fn reaction_targets_are_latent_frame_means_in_expert_units() {
        let reaction = [9.0, 0.0, 0.0, 4.0, 4.0, 8.0, 8.0, 8.0, 8.0];
        assert_eq!(latent_reaction(&reaction), vec![0.5, 2.0]);
    }

    /// A clip that never listens has no targets; one that does has a target
    /// per latent frame; the error is 0 when the heard estimate's read-out
    /// exceeds the silent one's by the target, and both get a gradient.
    #[test]
    fn contrast_of_heard_and_silent_estimates() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let data = ClipSource {
            seed: 3,
            size: 64,
            latent_frames: 2,
            identities: 4,
            max_offset_s: 8.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        let store = crate::train::params::ParamStore::new(5, &dev);
        let readout = crate::train::head_expert::PitchTargets::readout(4, store.var_builder())?;
        let mut term = ListenContrast::new(readout.clone(), 2.0)?;
        assert!(ListenContrast::new(readout, 0.0).is_err());
        let (mut listening, mut quiet) = (0, 0);
        for index in 0..24u64 {
            match term.targets(&data, index, 8, (8, 8), &dev)? {
                None => quiet += 1,
                Some((target, at)) => {
                    listening += 1;
                    assert_eq!(target.dims(), &[2]);
                    let reference = Tensor::randn(0f32, 1.0, (1, 4, 1, 8, 8), &dev)?;
                    let silent = Tensor::randn(0f32, 1.0, (1, 4, 2, 8, 8), &dev)?;
                    let heard = candle_core::Var::from_tensor(&silent)?;
                    let silent = candle_core::Var::from_tensor(&silent)?;
                    let (h, s) = (heard.as_tensor(), silent.as_tensor());
                    let zero = term.error(h, s, &reference, &at, &target.zeros_like()?)?;
                    assert_eq!(zero.to_scalar::<f32>()?, 0.0);
                    let err = term.error(h, s, &reference, &at, &(target + 1.0)?)?;
                    assert!(err.to_scalar::<f32>()? > 0.5);
                    let grads = err.backward()?;
                    assert!(grads.get(h).is_some() && grads.get(s).is_some());
                }
            }
        }
        assert!(listening > 0 && quiet > 0, "{listening} listening clips, {quiet} quiet");
        Ok(())
    }
}
