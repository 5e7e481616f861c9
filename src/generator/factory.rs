//! Builds the avatar source for one call from a `SessionSpec`: the real
//! `StreamingGenerator` with the spec's weights (or the preset's bundled /
//! deterministic random weights) and the spec's reference image, or, when
//! the caller sent no image, a default procedural avatar drawn by `synth`.

use crate::generator::{AvatarSource, GeneratorOptions, GeneratorWeights, StreamingGenerator};
use crate::media::frame::RgbFrame;
use crate::session::SessionSpec;

/// Identity of the default avatar (a training identity of `synth`).
pub const DEFAULT_AVATAR_IDENTITY: u64 = 7;

/// The default reference image: a procedural person in a neutral pose,
/// drawn square at the larger side of the output (the generator fits it).
pub fn default_reference(width: usize, height: usize) -> RgbFrame {
    let identity = crate::synth::identity::Identity::from_id(DEFAULT_AVATAR_IDENTITY);
    let side = width.max(height).clamp(64, 1024);
    crate::synth::avatar::draw_avatar(&identity, &crate::synth::motion::Pose::neutral(), side)
}

/// Build the streaming generator for a call. Errors are plain strings for
/// the signaling layer (reported as a 500 with the message).
pub fn build_source(spec: &SessionSpec) -> Result<Box<dyn AvatarSource>, String> {
    let files: Vec<String> = spec.weights.iter().map(|p| p.display().to_string()).collect();
    let weights = GeneratorWeights::from_cli(&spec.model, &files).map_err(|e| e.to_string())?;
    let reference = match &spec.reference {
        Some(frame) => frame.clone(),
        None => default_reference(spec.model.stream.width, spec.model.stream.height),
    };
    let options =
        GeneratorOptions { device: spec.device.clone(), seed: spec.seed, decoder: spec.decoder, ..Default::default() };
    let generator =
        StreamingGenerator::new(spec.model.clone(), weights, &reference, &options).map_err(|e| e.to_string())?;
    Ok(Box::new(generator))
}
