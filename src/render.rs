//! `streamavatar render`: offline clip from a reference image and talk /
//! listen WAV files, written as numbered PNG frames (plus the per-chunk
//! stage timings on stdout).

use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::generator::{AvatarSource, GeneratorError, GeneratorOptions, GeneratorWeights, StreamingGenerator};
use crate::media::frame::RgbFrame;
use crate::media::resample::StreamResampler;
use crate::media::wav::parse_wav;

/// Errors of the render command.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read image {path}: {reason}")]
    Image { path: String, reason: String },
    #[error("cannot read WAV {path}: {reason}")]
    Wav { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("bad render request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Generator(#[from] GeneratorError),
}

/// What to render.
#[derive(Debug, Clone)]
pub struct RenderSpec {
    pub config: String,
    pub weights: Vec<String>,
    pub device: String,
    /// PNG/JPEG; a neutral grey frame when absent.
    pub reference: Option<PathBuf>,
    /// WAV for the avatar's own speech; silence when absent.
    pub talk: Option<PathBuf>,
    /// WAV of the other party; silence when absent.
    pub listen: Option<PathBuf>,
    pub seconds: f64,
    pub out: PathBuf,
    pub seed: u64,
    pub decoder: crate::generator::DecoderKind,
}

/// Summary of a render.
#[derive(Debug, Clone)]
pub struct RenderSummary {
    pub frames_written: usize,
    pub chunks: usize,
    pub generation_ms: f64,
}

/// Decode a PNG/JPEG file into an RGB frame.
pub fn load_image(path: &Path) -> Result<RgbFrame, RenderError> {
    let img = image::open(path)
        .map_err(|e| RenderError::Image { path: path.display().to_string(), reason: e.to_string() })?;
    let rgb = img.to_rgb8();
    Ok(RgbFrame { width: rgb.width() as usize, height: rgb.height() as usize, data: rgb.into_raw() })
}

/// Largest WAV file an offline render reads (about 3 h of 48 kHz stereo PCM16).
const MAX_WAV_BYTES: usize = 2 << 30;

/// Read a WAV (PCM 8/16/24/32-bit or float; `media::wav`), mix to mono and
/// resample to 16 kHz (`media::resample`, the resampler of live calls).
pub fn load_wav_16k(path: &Path) -> Result<Vec<f32>, RenderError> {
    let err = |reason: String| RenderError::Wav { path: path.display().to_string(), reason };
    let body = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let audio = parse_wav(&body, MAX_WAV_BYTES).map_err(|e| err(e.to_string()))?;
    let mut resampler = StreamResampler::to_16k(audio.sample_rate).map_err(|e| err(e.to_string()))?;
    let mut out = resampler.process(&audio.samples).map_err(|e| err(e.to_string()))?;
    resampler.flush_into(&mut out).map_err(|e| err(e.to_string()))?;
    Ok(out)
}

/// Render `spec.seconds` of video into `spec.out/frame_NNNNNN.png`.
pub fn render(spec: &RenderSpec) -> Result<RenderSummary, RenderError> {
    if !(spec.seconds > 0.0 && spec.seconds <= 3600.0) {
        return Err(RenderError::Invalid(format!("seconds must be in (0, 3600], got {}", spec.seconds)));
    }
    let cfg = ModelConfig::load(&spec.config).map_err(|e| RenderError::Invalid(e.to_string()))?;
    let reference = match &spec.reference {
        Some(p) => load_image(p)?,
        None => RgbFrame::solid(cfg.stream.width, cfg.stream.height, [128, 128, 128]),
    };
    let weights = GeneratorWeights::from_cli(&cfg, &spec.weights)?;
    let mut g = StreamingGenerator::new(
        cfg,
        weights,
        &reference,
        &GeneratorOptions { device: spec.device.clone(), seed: spec.seed, decoder: spec.decoder, ..Default::default() },
    )?;
    let fpc = g.frames_per_chunk();
    let total_frames = (spec.seconds * g.fps() as f64).ceil() as usize;
    let chunks = total_frames.div_ceil(fpc);
    let needed = chunks * g.samples_per_chunk() + g.lookahead_samples();
    let fit = |mut pcm: Vec<f32>| {
        pcm.resize(needed, 0.0);
        pcm
    };
    let talk = fit(match &spec.talk {
        Some(p) => load_wav_16k(p)?,
        None => Vec::new(),
    });
    let listen = fit(match &spec.listen {
        Some(p) => load_wav_16k(p)?,
        None => Vec::new(),
    });
    std::fs::create_dir_all(&spec.out)
        .map_err(|e| RenderError::Write { path: spec.out.display().to_string(), reason: e.to_string() })?;
    // Feed audio chunk by chunk, as a live stream would arrive.
    let s = g.samples_per_chunk();
    let mut fed = 0;
    let mut written = 0;
    let mut generation_ms = 0.0;
    for k in 0..chunks {
        let until = ((k + 1) * s + g.lookahead_samples()).min(needed);
        g.push_talk(&talk[fed..until]);
        g.push_listen(&listen[fed..until]);
        fed = until;
        let chunk = g.next_chunk()?;
        generation_ms += chunk.timings.total_ms();
        println!(
            "chunk {k}: audio {:.1} ms, DiT {:?} ms, VAE {:.1} ms",
            chunk.timings.audio_ms, chunk.timings.dit_step_ms, chunk.timings.vae_ms
        );
        for frame in chunk.frames {
            if written >= total_frames {
                break;
            }
            let path = spec.out.join(format!("frame_{written:06}.png"));
            let img =
                image::RgbImage::from_raw(frame.width as u32, frame.height as u32, frame.data).ok_or_else(|| {
                    RenderError::Write { path: path.display().to_string(), reason: "frame buffer size mismatch".into() }
                })?;
            img.save(&path)
                .map_err(|e| RenderError::Write { path: path.display().to_string(), reason: e.to_string() })?;
            written += 1;
        }
    }
    Ok(RenderSummary { frames_written: written, chunks, generation_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_reading_mixes_and_resamples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 32_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for _ in 0..3200 {
            w.write_sample(16384i16).unwrap();
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        let pcm = load_wav_16k(&p).unwrap();
        // 0.1 s at 32 kHz -> 0.1 s at 16 kHz; the stereo mix of 0.5 and 0 is 0.25.
        assert_eq!(pcm.len(), 1600);
        assert!((pcm[800] - 0.25).abs() < 1e-2, "{}", pcm[800]);
        assert!(matches!(load_wav_16k(&dir.path().join("none.wav")), Err(RenderError::Wav { .. })));
    }
}
