//! A [`StreamingGenerator`] under evaluation: the conversation's 16 kHz
//! talk and listen tracks are pushed chunk by chunk as a live call would
//! deliver them, and the frames of every chunk go to the metrics.
//!
//! The generator is built on the first stream (it needs a reference image)
//! and `reset` with the next identity's reference for every later stream,
//! which also restarts its noise at the same seed: the evaluated and the
//! silent-listen streams of an identity differ only by the listen audio.

use std::path::PathBuf;

use super::protocol::{EvalModel, ListenAudio};
use super::EvalError;
use crate::config::ModelConfig;
use crate::generator::{AvatarSource, GeneratorOptions, GeneratorWeights, StreamingGenerator};
use crate::media::frame::RgbFrame;
use crate::synth::ClipScript;

/// Weights of an evaluated model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalWeights {
    /// safetensors files (any order, as `--weights`).
    Files(Vec<PathBuf>),
    /// Deterministic random weights (what an untrained model looks like).
    Random { seed: u64 },
}

impl EvalWeights {
    /// Files given directly, or every `*.safetensors` in a folder (sorted).
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self, EvalError> {
        let mut files = Vec::new();
        for p in paths {
            if p.is_dir() {
                let io = |e: std::io::Error| EvalError::Io { path: p.display().to_string(), reason: e.to_string() };
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(io)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                    .collect();
                if found.is_empty() {
                    return Err(EvalError::Invalid(format!("{} holds no .safetensors files", p.display())));
                }
                found.sort();
                files.extend(found);
            } else if p.is_file() {
                files.push(p.clone());
            } else {
                return Err(EvalError::Io { path: p.display().to_string(), reason: "no such file or folder".into() });
            }
        }
        if files.is_empty() {
            return Err(EvalError::Invalid("no weight files given".into()));
        }
        Ok(Self::Files(files))
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Files(f) => f.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" + "),
            Self::Random { seed } => format!("random (seed {seed:#x})"),
        }
    }

    fn to_generator(&self) -> GeneratorWeights {
        match self {
            Self::Files(f) => GeneratorWeights::Files(f.clone()),
            Self::Random { seed } => GeneratorWeights::Random { seed: *seed },
        }
    }
}

/// The streaming generator as an [`EvalModel`].
pub struct GeneratorModel {
    config: ModelConfig,
    weights: EvalWeights,
    options: GeneratorOptions,
    generator: Option<StreamingGenerator>,
}

impl GeneratorModel {
    /// A model of `config` (square video) with `weights`.
    pub fn new(config: ModelConfig, weights: EvalWeights, options: GeneratorOptions) -> Result<Self, EvalError> {
        config.validate().map_err(|e| EvalError::Invalid(e.to_string()))?;
        if config.stream.width != config.stream.height {
            return Err(EvalError::Invalid(format!(
                "the evaluation needs square video (synth identities are square), config `{}` is {}x{}",
                config.name, config.stream.width, config.stream.height
            )));
        }
        Ok(Self { config, weights, options, generator: None })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn generator_for(&mut self, reference: &RgbFrame) -> Result<&mut StreamingGenerator, EvalError> {
        match &mut self.generator {
            Some(g) => g.reset(Some(reference))?,
            None => {
                let g = StreamingGenerator::new(
                    self.config.clone(),
                    self.weights.to_generator(),
                    reference,
                    &self.options,
                )?;
                self.generator = Some(g);
            }
        }
        self.generator.as_mut().ok_or_else(|| EvalError::Invalid("generator missing".into()))
    }
}

impl EvalModel for GeneratorModel {
    fn describe(&self) -> String {
        let s = &self.config.stream;
        format!(
            "{} {}x{}, weights {}, reference sink {}, RAPR {}",
            self.config.name,
            s.width,
            s.height,
            self.weights.describe(),
            if s.reference_sink { "on" } else { "off" },
            if s.rapr { "on" } else { "off" }
        )
    }

    fn generate(
        &mut self,
        script: &ClipScript,
        listen: ListenAudio,
        n_frames: usize,
        sink: &mut dyn FnMut(&RgbFrame) -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        if script.spec.size != self.config.stream.width {
            return Err(EvalError::Invalid(format!(
                "clip size {} differs from the model's {}",
                script.spec.size, self.config.stream.width
            )));
        }
        if script.audio_rate() != self.config.audio.sample_rate as u32 {
            return Err(EvalError::Invalid(format!(
                "clip audio is {} Hz, the model takes {} Hz",
                script.audio_rate(),
                self.config.audio.sample_rate
            )));
        }
        let reference = script.reference_frame();
        let g = self.generator_for(&reference)?;
        let (fpc, s, look) = (g.frames_per_chunk(), g.samples_per_chunk(), g.lookahead_samples());
        let chunks = n_frames.div_ceil(fpc);
        let needed = chunks * s + look;
        let fit = |track: &[f32]| {
            let mut v = track[..track.len().min(needed)].to_vec();
            v.resize(needed, 0.0);
            v
        };
        let talk = fit(&script.conversation.talk);
        let listen = match listen {
            ListenAudio::Partner => fit(&script.conversation.listen),
            ListenAudio::Silence => vec![0.0; needed],
        };
        let (mut fed, mut emitted) = (0, 0);
        for k in 0..chunks {
            let until = ((k + 1) * s + look).min(needed);
            g.push_talk(&talk[fed..until]);
            g.push_listen(&listen[fed..until]);
            fed = until;
            let chunk = g.next_chunk()?;
            for frame in &chunk.frames {
                if emitted == n_frames {
                    break;
                }
                sink(frame)?;
                emitted += 1;
            }
        }
        Ok(())
    }
}
