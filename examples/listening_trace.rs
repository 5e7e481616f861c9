//! Where a VAE round trip loses the listening motion: the head-region
//! motion energy (`eval::listening::motion_energy`) of one held-out
//! conversation, ground truth and round trip, each driven with the
//! partner's speech and with silence, over the listening frames.
//!
//! ```sh
//! cargo run --release --example listening_trace -- <VAE params> [<light decoder>] [--seconds 15]
//! ```
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

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
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
    let mut round_trip = VaeRoundTripModel::load(&cfg, Path::new(vae))?;
    if let Some(light) = args.get(1) {
        round_trip = round_trip.with_light_decoder(&cfg, Path::new(light))?;
    }
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
        stream(&mut round_trip, &script, ListenAudio::Partner, n)?,
        stream(&mut round_trip, &script, ListenAudio::Silence, n)?,
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
