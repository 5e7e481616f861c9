//! Where a VAE round trip loses the listening motion: the head-region
//! motion energy (`eval::listening::motion_energy`) of one held-out
//! conversation, ground truth and round trip, each driven with the
//! partner's speech and with silence, over the listening frames.
//!
//! ```sh
//! cargo run --release --example listening_trace -- <VAE params> [<light decoder>] [--seconds 15] [--images]
//! ```
//!
//! `--images` round-trips every frame alone through the VAE's image path
//! (no temporal compression, no causal cache): if the nods survive there
//! and not in the video path, the temporal path loses them. `--latents`
//! also prints, per latent frame, how far the partner and silent streams'
//! latents (posterior means) are apart next to how far their frames are:
//! if the latents react when the clip does and the decoded frames later,
//! the decoder smooths the motion; if the latents lag too, the encoder.
//!
//! Prints the mean energies (the listening metric's numerator and
//! denominator), the mean difference between the partner and silent
//! streams' frames (the reaction itself), the energy by frame phase in the
//! 4-frame latent groups and 12-frame decoder chunks (a decoder seam shows
//! there), and the frames where the ground truth reacts.

use std::path::Path;

use streamavatar::eval::face_layout::FaceLayout;
use streamavatar::eval::listening::{listening_frames, motion_energy};
use streamavatar::eval::vae_roundtrip::VaeRoundTripModel;
use streamavatar::eval::{EvalModel, GroundTruthModel, ListenAudio};
use streamavatar::media::frame::RgbFrame;
use streamavatar::synth::motion::{BehaviourState, FPS};
use streamavatar::synth::{script_clip, ClipScript, ClipSpec};

fn stream(
    model: &mut dyn EvalModel,
    script: &ClipScript,
    listen: ListenAudio,
    n: usize,
) -> anyhow::Result<Vec<RgbFrame>> {
    let mut frames = Vec::with_capacity(n);
    model.generate(script, listen, n, &mut |f| {
        frames.push(f.clone());
        Ok(())
    })?;
    Ok(frames)
}

/// Every frame of the ground truth encoded and decoded alone (images).
struct ImageRoundTrip(streamavatar::model::vae::WanVae);

impl EvalModel for ImageRoundTrip {
    fn describe(&self) -> String {
        "ground truth through the VAE, frame by frame as images".into()
    }

    fn generate(
        &mut self,
        script: &ClipScript,
        listen: ListenAudio,
        n_frames: usize,
        sink: &mut dyn FnMut(&RgbFrame) -> Result<(), streamavatar::eval::EvalError>,
    ) -> Result<(), streamavatar::eval::EvalError> {
        use streamavatar::generator::reference::{frame_to_tensor, video_to_frames};
        let err = |e: String| streamavatar::eval::EvalError::Invalid(e);
        let truth = stream(&mut GroundTruthModel, script, listen, n_frames).map_err(|e| err(e.to_string()))?;
        for batch in truth.chunks(16) {
            let images: Vec<_> = batch
                .iter()
                .map(|f| frame_to_tensor(f, candle_core::DType::F32, &candle_core::Device::Cpu))
                .collect::<Result<_, _>>()?;
            let images = candle_core::Tensor::cat(&images, 0).map_err(|e| err(e.to_string()))?;
            let z = self.0.encode_image(&images).map_err(|e| err(e.to_string()))?;
            let video = self.0.decode(&z).map_err(|e| err(e.to_string()))?;
            let k = video.dim(0).map_err(|e| err(e.to_string()))?;
            for i in 0..k {
                for frame in video_to_frames(&video.narrow(0, i, 1).map_err(|e| err(e.to_string()))?)? {
                    sink(&frame)?;
                }
            }
        }
        Ok(())
    }
}

/// Per latent frame: mean |mu_partner - mu_silent| next to the mean
/// partner-vs-silent frame distance of the clip and of the round trip over
/// the latent frame's video frames.
fn latent_trace(
    vae_file: &Path,
    cfg: &streamavatar::config::ModelConfig,
    truth: &(Vec<RgbFrame>, Vec<RgbFrame>),
    decoded: &(Vec<RgbFrame>, Vec<RgbFrame>),
    apart: impl Fn(&[RgbFrame], &[RgbFrame], usize) -> f32,
) -> anyhow::Result<()> {
    use streamavatar::generator::reference::frame_to_tensor;
    let dev = candle_core::Device::Cpu;
    let tensors = candle_core::safetensors::load(vae_file, &dev)?;
    let vae = streamavatar::model::vae::WanVae::new(
        &cfg.vae,
        candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &dev),
    )?;
    let n = (truth.0.len() - 1) / 4 * 4 + 1;
    let encode = |frames: &[RgbFrame]| -> anyhow::Result<candle_core::Tensor> {
        let per_frame: Vec<_> =
            frames[..n].iter().map(|f| frame_to_tensor(f, candle_core::DType::F32, &dev)).collect::<Result<_, _>>()?;
        Ok(vae.encode(&candle_core::Tensor::stack(&per_frame, 2)?)?.mu)
    };
    let (zp, zs) = (encode(&truth.0)?, encode(&truth.1)?);
    let latent_apart: Vec<f32> = (zp - zs)?.abs()?.mean((0, 1, 3, 4))?.to_vec1()?;
    println!("latent frame (video frames): |mu partner - mu silent| | frames apart: truth, round trip");
    for (g, d) in latent_apart.iter().enumerate().skip(1) {
        let frames = 4 * g - 3..=4 * g;
        let mean = |a: &[RgbFrame], b: &[RgbFrame]| frames.clone().map(|t| apart(a, b, t)).sum::<f32>() / 4.0;
        let (t, r) = (mean(&truth.0, &truth.1), mean(&decoded.0, &decoded.1));
        if t > 2e-4 || r > 2e-4 || *d > 1e-3 {
            println!("{g:4} ({:3}-{:3}): {d:.3e} | {t:.2e} {r:.2e}", frames.start(), frames.end());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let images = args.iter().any(|a| a == "--images");
    let latents = args.iter().any(|a| a == "--latents");
    args.retain(|a| a != "--images" && a != "--latents");
    let mut seconds = 15.0;
    if let Some(i) = args.iter().position(|a| a == "--seconds") {
        seconds = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("--seconds needs a value"))?.parse()?;
        args.drain(i..i + 2);
    }
    let Some(vae) = args.first() else {
        anyhow::bail!("usage: listening_trace <VAE params> [<light decoder>] [--seconds S]");
    };
    let cfg = streamavatar::config::ModelConfig::mini();
    let size = cfg.stream.width;
    let mut round_trip: Box<dyn EvalModel> = if images {
        let tensors = candle_core::safetensors::load(vae, &candle_core::Device::Cpu)?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &candle_core::Device::Cpu);
        Box::new(ImageRoundTrip(streamavatar::model::vae::WanVae::new(&cfg.vae, vb)?))
    } else {
        let mut video = VaeRoundTripModel::load(&cfg, Path::new(vae))?;
        if let Some(light) = args.get(1) {
            video = video.with_light_decoder(&cfg, Path::new(light))?;
        }
        Box::new(video)
    };
    println!("{}", round_trip.describe());
    // The first held-out identity and conversation of `streamavatar eval`.
    let script = script_clip(&ClipSpec::new(1 << 32, 0, seconds, size))?;
    let n = (seconds * FPS) as usize;
    let layout = FaceLayout::of_identity(&script.identity, size)?;
    let states: Vec<BehaviourState> = script.truth[..n].iter().map(|t| t.state).collect();
    let mask = listening_frames(&script.conversation.turns, &states, FPS, 1.0);
    let truth = (
        stream(&mut GroundTruthModel, &script, ListenAudio::Partner, n)?,
        stream(&mut GroundTruthModel, &script, ListenAudio::Silence, n)?,
    );
    let decoded = (
        stream(round_trip.as_mut(), &script, ListenAudio::Partner, n)?,
        stream(round_trip.as_mut(), &script, ListenAudio::Silence, n)?,
    );

    let listening: Vec<usize> = (1..n).filter(|&t| mask[t]).collect();
    let mean =
        |f: &dyn Fn(usize) -> f32| listening.iter().map(|&t| f(t) as f64).sum::<f64>() / listening.len().max(1) as f64;
    let change = |v: &[RgbFrame], t: usize| motion_energy(&v[t - 1], &v[t], &layout);
    let apart = |a: &[RgbFrame], b: &[RgbFrame], t: usize| motion_energy(&a[t], &b[t], &layout);
    println!("{} listening frames of {n}", listening.len());
    println!(
        "energy: truth partner {:.3e} silent {:.3e} | round trip partner {:.3e} silent {:.3e}",
        mean(&|t| change(&truth.0, t)),
        mean(&|t| change(&truth.1, t)),
        mean(&|t| change(&decoded.0, t)),
        mean(&|t| change(&decoded.1, t)),
    );
    println!(
        "partner vs silent frames: truth {:.3e} | round trip {:.3e}; round trip vs truth {:.3e}",
        mean(&|t| apart(&truth.0, &truth.1, t)),
        mean(&|t| apart(&decoded.0, &decoded.1, t)),
        mean(&|t| apart(&decoded.0, &truth.0, t)),
    );
    for (name, v) in [("truth silent", &truth.1), ("round trip silent", &decoded.1)] {
        let mut by_phase = [0.0f64; 12];
        let mut count = [0usize; 12];
        for t in 1..n {
            by_phase[(t - 1) % 12] += change(v, t) as f64;
            count[(t - 1) % 12] += 1;
        }
        let phases: Vec<String> =
            by_phase.iter().zip(&count).map(|(e, c)| format!("{:.1e}", e / (*c).max(1) as f64)).collect();
        println!("{name}, all frames, energy by (frame - 1) mod 12: {}", phases.join(" "));
    }
    if latents {
        latent_trace(Path::new(vae), &cfg, &truth, &decoded, |a, b, t| apart(a, b, t))?;
    }
    println!("frame  truth: partner silent apart | round trip: partner silent apart");
    for &t in listening.iter().filter(|&&t| apart(&truth.0, &truth.1, t) > 5e-4) {
        println!(
            "{t:5}  {:.2e} {:.2e} {:.2e} | {:.2e} {:.2e} {:.2e}",
            change(&truth.0, t),
            change(&truth.1, t),
            apart(&truth.0, &truth.1, t),
            change(&decoded.0, t),
            change(&decoded.1, t),
            apart(&decoded.0, &decoded.1, t)
        );
    }
    Ok(())
}
