//! StreamAvatar's consistency-aware discriminator (stage 5): a DiT backbone
//! initialised from the teacher, read at `heads` evenly spaced blocks, each
//! tap feeding one Q-Former head:
//!
//! * **local branch** — the head's learned queries cross-attend to the
//!   tokens of one latent frame (every generated frame separately) ->
//!   residual, LayerNorm, mean over queries, linear -> one logit per frame;
//! * **global branch** (consistency) — the reference frame's tokens
//!   cross-attend to the tokens of all generated frames -> residual,
//!   LayerNorm, mean, linear -> one logit per clip: does the clip stay
//!   consistent with the reference identity. `consistency = false` drops it
//!   (the ablation "GAN without consistency branch").
//!
//! Inputs are latent clips `[B, z, F, h, w]` whose frame 0 is the clean
//! reference (t = 0) and frames 1.. are noised to level `sigma`; the
//! backbone runs bidirectionally with the clip's talk / listen audio tokens.
//!
//! Parameter names (the discriminator store): `heads.N.queries`,
//! `heads.N.local_attn.*`, `heads.N.local_norm.*`, `heads.N.local_out.*`,
//! `heads.N.global_attn.*`, `heads.N.global_norm.*`, `heads.N.global_out.*`,
//! and `backbone.*` (DiT names) when the backbone is trained.
//!
//! The relativistic pairing loss and the approximate R1 / R2 penalties of
//! the stage are here too ([`relativistic_loss`], [`logit_change`]).

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use crate::config::{DitConfig, ModelConfig};
use crate::model::attention::WanAttention;
use crate::model::dit::AudioTokens;

use super::rollout::ConditionedDit;
use super::teacher_stage::{reference_clean_timesteps, TeacherSample};
use super::TrainError;

/// Shape of the discriminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscriminatorConfig {
    /// Q-Former heads (N_Q), tapped at evenly spaced backbone blocks.
    pub heads: usize,
    /// Learned queries per head.
    pub queries: usize,
    /// Keep the global (reference-consistency) branch.
    pub consistency: bool,
    /// Train the backbone (`backbone.*` in the store); false = the frozen
    /// teacher (only the heads learn; gradients still flow through it to
    /// the generator's samples).
    pub train_backbone: bool,
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        Self { heads: 3, queries: 4, consistency: true, train_backbone: false }
    }
}

/// Backbone blocks read by `heads` heads: `ceil((i+1) L / heads) - 1`.
pub fn tap_blocks(num_layers: usize, heads: usize) -> Vec<usize> {
    (1..=heads).map(|i| (i * num_layers).div_ceil(heads).max(1) - 1).collect()
}

/// Logits of a batch.
#[derive(Debug, Clone)]
pub struct DiscriminatorLogits {
    /// `[B, heads * (F - 1)]`: one per head and generated frame.
    pub local: Tensor,
    /// `[B, heads]`: one per head (consistency branch), when present.
    pub global: Option<Tensor>,
}

impl DiscriminatorLogits {
    /// Rows `start .. start + len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> candle_core::Result<Self> {
        Ok(Self {
            local: self.local.narrow(0, start, len)?,
            global: self.global.as_ref().map(|g| g.narrow(0, start, len)).transpose()?,
        })
    }

    fn parts(&self) -> Vec<&Tensor> {
        std::iter::once(&self.local).chain(self.global.as_ref()).collect()
    }
}

struct Branch {
    attn: WanAttention,
    norm: LayerNorm,
    out: Linear,
}

impl Branch {
    fn new(dim: usize, heads: usize, eps: f64, vb: VarBuilder, name: &str) -> candle_core::Result<Self> {
        Ok(Self {
            attn: WanAttention::new(dim, dim, heads, eps, vb.pp(format!("{name}_attn")))?,
            norm: candle_nn::layer_norm(dim, 1e-5, vb.pp(format!("{name}_norm")))?,
            out: candle_nn::linear(dim, 1, vb.pp(format!("{name}_out")))?,
        })
    }

    /// `queries` `[N, q, D]` attend to `ctx` `[N, L, D]` -> logits `[N, 1]`.
    fn logit(&self, queries: &Tensor, ctx: &Tensor) -> candle_core::Result<Tensor> {
        let o = (queries + self.attn.cross_attend(queries, ctx)?)?;
        let o = crate::model::grad_ops::layer_norm_module(&self.norm, &o, 1e-5)?;
        self.out.forward(&o.mean(1)?)
    }
}

struct QFormerHead {
    /// `[1, q, D]`.
    queries: Tensor,
    local: Branch,
    global: Option<Branch>,
}

/// The trainable heads.
pub struct DiscriminatorHeads {
    heads: Vec<QFormerHead>,
}

impl DiscriminatorHeads {
    /// `vb` rooted at the heads (`store.pp("heads")`).
    pub fn new(cfg: &DiscriminatorConfig, dit: &DitConfig, vb: VarBuilder) -> Result<Self, TrainError> {
        if cfg.heads == 0 || cfg.queries == 0 {
            return Err(TrainError::Invalid(format!("discriminator needs >= 1 head and query, got {cfg:?}")));
        }
        let dim = dit.hidden_size();
        let heads = (0..cfg.heads)
            .map(|i| {
                let vb = vb.pp(i.to_string());
                Ok(QFormerHead {
                    queries: vb.get_with_hints(
                        (1, cfg.queries, dim),
                        "queries",
                        candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 },
                    )?,
                    local: Branch::new(dim, dit.num_attention_heads, dit.eps, vb.clone(), "local")?,
                    global: if cfg.consistency {
                        Some(Branch::new(dim, dit.num_attention_heads, dit.eps, vb.clone(), "global")?)
                    } else {
                        None
                    },
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self { heads })
    }

    /// Logits from one feature map per head (`[B, F * T, D]`, `F` frames of
    /// `T` tokens, frame 0 the reference).
    pub fn forward(&self, features: &[Tensor], frames: usize) -> Result<DiscriminatorLogits, TrainError> {
        if features.len() != self.heads.len() || frames < 2 {
            return Err(TrainError::Invalid(format!(
                "discriminator heads: {} feature maps for {} heads, {frames} frames (need >= 2)",
                features.len(),
                self.heads.len()
            )));
        }
        let mut local = Vec::with_capacity(self.heads.len());
        let mut global = Vec::with_capacity(self.heads.len());
        for (head, x) in self.heads.iter().zip(features) {
            let (b, l, d) = x.dims3()?;
            let t = l / frames;
            let x = x.reshape((b, frames, t, d))?;
            let generated = x.narrow(1, 1, frames - 1)?;
            let per_frame = generated.reshape((b * (frames - 1), t, d))?;
            let q = head.queries.broadcast_as((b * (frames - 1), head.queries.dim(1)?, d))?.contiguous()?;
            local.push(head.local.logit(&q, &per_frame)?.reshape((b, frames - 1))?);
            if let Some(g) = &head.global {
                let reference = x.narrow(1, 0, 1)?.reshape((b, t, d))?;
                let all = generated.reshape((b, (frames - 1) * t, d))?;
                global.push(g.logit(&reference, &all)?);
            }
        }
        Ok(DiscriminatorLogits {
            local: Tensor::cat(&local, 1)?,
            global: if global.is_empty() { None } else { Some(Tensor::cat(&global, 1)?) },
        })
    }
}

/// Backbone + heads, conditioned on one clip's audio.
pub struct Discriminator {
    backbone: ConditionedDit,
    heads: DiscriminatorHeads,
    taps: Vec<usize>,
}

impl Discriminator {
    /// `backbone_vb`: DiT namespace (teacher store, or the discriminator
    /// store's `backbone.*`); `heads_vb`: the store's `heads.*`.
    pub fn new(
        model: &ModelConfig,
        cfg: &DiscriminatorConfig,
        backbone_vb: VarBuilder<'static>,
        heads_vb: VarBuilder<'static>,
        sample: &TeacherSample,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            backbone: ConditionedDit::new(model, backbone_vb, sample)?,
            heads: DiscriminatorHeads::new(cfg, &model.dit, heads_vb)?,
            taps: tap_blocks(model.dit.num_layers, cfg.heads),
        })
    }

    /// Logits of `latents` `[B, z, F, h, w]` (frame 0 clean reference,
    /// frames 1.. at noise level `sigma`).
    pub fn forward(&self, latents: &Tensor, sigma: f64) -> Result<DiscriminatorLogits, TrainError> {
        let (b, _, f, _, _) = latents.dims5()?;
        let ts = reference_clean_timesteps(f, (sigma * 1000.0) as f32, latents.device())?.repeat((b, 1))?;
        let a = &self.backbone.audio;
        if a.talk.dim(1)? != f {
            return Err(TrainError::Invalid(format!("discriminator: {f} frames, the audio covers {}", a.talk.dim(1)?)));
        }
        let audio = AudioTokens { talk: a.talk.repeat((b, 1, 1, 1))?, listen: a.listen.repeat((b, 1, 1, 1))? };
        let features = self.backbone.dit.block_features(
            latents,
            &ts,
            &self.backbone.text,
            Some(&audio),
            crate::model::dit::AttentionMask::Bidirectional,
            &self.taps,
        )?;
        self.heads.forward(&features, f)
    }
}

/// `log(1 + exp(x))`, stable for large |x|.
pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?)
}

/// Relativistic pairing loss `mean softplus(-(D(winner) - D(loser)))`,
/// averaged over the local logits plus, when present, the global ones
/// (`L_D` with winner = real, `L_G` with winner = fake).
pub fn relativistic_loss(winner: &DiscriminatorLogits, loser: &DiscriminatorLogits) -> candle_core::Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (w, l) in winner.parts().into_iter().zip(loser.parts()) {
        let term = softplus(&(l - w)?)?.mean_all()?;
        total = Some(match total {
            Some(t) => (t + term)?,
            None => term,
        });
    }
    total.ok_or_else(|| candle_core::Error::Msg("no logits".into()))
}

/// Mean squared change of the logits between `a` and its perturbed copy
/// `b`: the finite-difference R1 / R2 penalty
/// `E ||D(x) - D(x + sigma_r eps)||^2 ~ sigma_r^2 E ||grad D(x)||^2`
/// (APT's approximated R1, Lin et al. 2025).
pub fn logit_change(a: &DiscriminatorLogits, b: &DiscriminatorLogits) -> candle_core::Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (x, y) in a.parts().into_iter().zip(b.parts()) {
        let term = (x - y)?.sqr()?.mean_all()?;
        total = Some(match total {
            Some(t) => (t + term)?,
            None => term,
        });
    }
    total.ok_or_else(|| candle_core::Error::Msg("no logits".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn taps_are_evenly_spaced_and_in_range() {
        assert_eq!(tap_blocks(6, 3), vec![1, 3, 5]);
        assert_eq!(tap_blocks(2, 3), vec![0, 1, 1]);
        assert_eq!(tap_blocks(30, 1), vec![29]);
    }

    #[test]
    fn softplus_is_stable_and_correct() -> candle_core::Result<()> {
        let x = Tensor::new(&[-100f32, 0.0, 2.0, 100.0], &Device::Cpu)?;
        let y = softplus(&x)?.to_vec1::<f32>()?;
        assert!(y[0] >= 0.0 && y[0] < 1e-6);
        assert!((y[1] - std::f32::consts::LN_2).abs() < 1e-6);
        assert!((y[2] - (1.0 + 2f32.exp()).ln()).abs() < 1e-5);
        assert!((y[3] - 100.0).abs() < 1e-4);
        Ok(())
    }

    #[test]
    fn heads_give_per_frame_and_global_logits() -> anyhow::Result<()> {
        let dit = ModelConfig::tiny().dit;
        let vb = crate::model::weights::SeededInitBackend::var_builder(1, DType::F32, &Device::Cpu);
        let (b, f, t, d) = (2, 4, 3, dit.hidden_size());
        let feats: Vec<Tensor> = (0..2)
            .map(|_| Tensor::randn(0f32, 1.0, (b, f * t, d), &Device::Cpu))
            .collect::<candle_core::Result<_>>()?;
        let cfg = DiscriminatorConfig { heads: 2, ..Default::default() };
        let logits = DiscriminatorHeads::new(&cfg, &dit, vb.pp("heads"))?.forward(&feats, f)?;
        assert_eq!(logits.local.dims(), &[b, 2 * (f - 1)]);
        assert_eq!(logits.global.as_ref().map(|g| g.dims().to_vec()), Some(vec![b, 2]));
        let plain = DiscriminatorConfig { consistency: false, ..cfg };
        let logits = DiscriminatorHeads::new(&plain, &dit, vb.pp("heads"))?.forward(&feats, f)?;
        assert!(logits.global.is_none());
        // Equal logits: the relativistic loss is ln 2, the change is 0.
        let l = relativistic_loss(&logits, &logits)?.to_scalar::<f32>()?;
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
        assert_eq!(logit_change(&logits, &logits)?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }
}
