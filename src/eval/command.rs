//! `streamavatar eval` end to end: script the held-out conversations once,
//! evaluate the requested model, then every ablation row (rows whose
//! config and weights equal an already measured model reuse its metrics),
//! and assemble the report.

use std::time::Instant;

use super::ablation::{AblationRow, AblationWeights};
use super::generator_model::{EvalWeights, GeneratorModel};
use super::ground_truth::GroundTruthModel;
use super::protocol::{evaluate, prepare_scripts, EvalModel, EvalSpec, ModelMetrics};
use super::report::{EvalReport, RowReport};
use super::thresholds::Thresholds;
use super::vae_roundtrip::VaeRoundTripModel;
use super::EvalError;
use crate::config::ModelConfig;
use crate::generator::{DecoderKind, GeneratorOptions};

/// What is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalTarget {
    /// The synth renderer (the metrics' upper reference).
    GroundTruth,
    /// The streaming generator of the request's config.
    Generator(EvalWeights),
    /// The ground truth encoded by the VAE of `vae` and decoded by it or by
    /// the light decoder of `light_decoder` (the ceiling of a VAE before a
    /// DiT is trained on it).
    VaeRoundTrip { vae: std::path::PathBuf, light_decoder: Option<std::path::PathBuf> },
}

/// One `streamavatar eval` run.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// The command line, for the report.
    pub command: String,
    pub config: ModelConfig,
    pub target: EvalTarget,
    pub device: String,
    /// VAE decoder of the evaluated generator (full or light).
    pub decoder: DecoderKind,
    pub spec: EvalSpec,
    /// `Some`: also run the ablation rows (generator targets only).
    pub ablation: Option<AblationWeights>,
    pub thresholds: Thresholds,
}

/// Run the evaluation of `req`.
pub fn run_eval(req: &EvalRequest) -> Result<EvalReport, EvalError> {
    let t0 = Instant::now();
    let spec = req.spec.clone();
    if spec.size != req.config.stream.width {
        return Err(EvalError::Invalid(format!(
            "evaluation size {} differs from config `{}`'s video width {}",
            spec.size, req.config.name, req.config.stream.width
        )));
    }
    spec.validate()?;
    let scripts = prepare_scripts(&spec)?;
    let options =
        GeneratorOptions { device: req.device.clone(), seed: spec.seed, decoder: req.decoder, ..Default::default() };
    let mut measured: Vec<(ModelConfig, EvalWeights, ModelMetrics)> = Vec::new();

    let model = match &req.target {
        EvalTarget::GroundTruth => {
            if req.ablation.is_some() {
                return Err(EvalError::Invalid("the ablation table needs a generator, not the ground truth".into()));
            }
            let mut gt = GroundTruthModel;
            let description = gt.describe();
            let metrics = evaluate(&mut gt, &spec, &scripts)?;
            RowReport::measured("ground_truth", "Ground truth", description, metrics, &req.thresholds)
        }
        EvalTarget::VaeRoundTrip { vae, light_decoder } => {
            if req.ablation.is_some() {
                return Err(EvalError::Invalid("the ablation table needs a generator, not a VAE round trip".into()));
            }
            let mut m = VaeRoundTripModel::load(&req.config, vae)?;
            if let Some(light) = light_decoder {
                m = m.with_light_decoder(&req.config, light)?;
            }
            let description = m.describe();
            let metrics = evaluate(&mut m, &spec, &scripts)?;
            RowReport::measured("vae_roundtrip", "Ground truth through the VAE", description, metrics, &req.thresholds)
        }
        EvalTarget::Generator(weights) => {
            let mut g = GeneratorModel::new(req.config.clone(), weights.clone(), options.clone())?;
            let description = g.describe();
            let metrics = evaluate(&mut g, &spec, &scripts)?;
            measured.push((req.config.clone(), weights.clone(), metrics.clone()));
            RowReport::measured("model", "Evaluated model", description, metrics, &req.thresholds)
        }
    };

    let mut ablation = Vec::new();
    if let (Some(aw), EvalTarget::Generator(main_weights)) = (&req.ablation, &req.target) {
        for row in AblationRow::ALL {
            let Some(weights) = aw.for_row(row, Some(main_weights))? else {
                ablation.push(RowReport::not_available(
                    row.key(),
                    row.label(),
                    format!("not available: no weights for this row (--ablation-weights {}=PATH)", row.key()),
                ));
                continue;
            };
            let config = row.config(&req.config);
            let mut g = GeneratorModel::new(config.clone(), weights.clone(), options.clone())?;
            let description = g.describe();
            let metrics = match measured.iter().find(|(c, w, _)| *c == config && *w == weights) {
                Some((_, _, m)) => m.clone(),
                None => {
                    tracing::info!(row = row.key(), model = %description, "eval: ablation row");
                    let m = evaluate(&mut g, &spec, &scripts)?;
                    measured.push((config, weights, m.clone()));
                    m
                }
            };
            ablation.push(RowReport::measured(row.key(), row.label(), description, metrics, &req.thresholds));
        }
    }
    Ok(EvalReport {
        command: req.command.clone(),
        config: req.config.name.clone(),
        device: req.device.clone(),
        decoder: req.decoder.as_str().into(),
        build: if cfg!(debug_assertions) { "dev" } else { "release" }.into(),
        spec,
        thresholds: req.thresholds,
        model,
        ablation,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}
