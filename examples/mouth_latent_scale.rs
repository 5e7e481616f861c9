//! How big is a mouth opening, a head turn or a blink in the mini VAE's
//! latent space, next to the error a DiT makes there?
//!
//! For a few training identities it draws 25 still frames of the neutral
//! pose and of the same pose with one change (mouth openness 0.3 and 0.6,
//! yaw or pitch +3 degrees, closed eyes), encodes both clips with the VAE,
//! normalises the latents as the DiT sees them and prints the squared
//! difference of the last latent frame (summed over its channels and
//! positions; compare with a teacher's per-frame latent error from `train
//! teacher_check`: `latent_mse_per_frame` x 48 x 16 x 16), how many latent
//! positions carry it, and the squared pixel difference.
//!
//! `cargo run --release --example mouth_latent_scale -- <vae params.safetensors>`
//! (docs/TRAINING.md, session-14 log).

use candle_core::{Device, Tensor};
use streamavatar::config::ModelConfig;
use streamavatar::media::frame::RgbFrame;
use streamavatar::synth::avatar::draw_avatar;
use streamavatar::synth::motion::Pose;
use streamavatar::synth::Identity;
use streamavatar::train::teacher_stage::FrozenModules;

const FRAMES: usize = 25;
const SIZE: usize = 128;

/// `[1, 3, T, H, W]` in [-1, 1].
fn video(frames: &[RgbFrame]) -> candle_core::Result<Tensor> {
    let (h, w) = (frames[0].height, frames[0].width);
    let mut pix = Vec::with_capacity(3 * frames.len() * h * w);
    for c in 0..3 {
        for f in frames {
            pix.extend(f.data.iter().skip(c).step_by(3).map(|&v| v as f32 / 127.5 - 1.0));
        }
    }
    Tensor::from_vec(pix, (1, 3, frames.len(), h, w), &Device::Cpu)
}

fn main() -> anyhow::Result<()> {
    let vae_path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: mouth_latent_scale <vae params.safetensors>"))?;
    let cfg = ModelConfig::mini();
    let frozen = FrozenModules::load(&cfg, Some(&vae_path), None, 0)?;
    let vae = &frozen.vae;
    // The last latent frame of a still clip, and the clip's last video frame.
    let encode = |pose: &Pose, id: &Identity| -> anyhow::Result<(Tensor, Vec<u8>)> {
        let frames: Vec<_> = (0..FRAMES).map(|_| draw_avatar(id, pose, SIZE)).collect();
        let z = vae.latent_norm().normalize(&vae.encode(&video(&frames)?)?.mu)?;
        let last = z.dim(2)? - 1;
        Ok((z.narrow(2, last, 1)?, frames[FRAMES - 1].data.clone()))
    };
    println!("identity change    latent sq-diff  positions>10%  pixel sq-diff (MSE)");
    for i in 0..6u64 {
        let id = Identity::from_id(i * 7 + 3);
        let base = Pose::neutral();
        let (z0, p0) = encode(&base, &id)?;
        for (name, pose) in [
            ("open 0.3", Pose { mouth_open: 0.3, ..base.clone() }),
            ("open 0.6", Pose { mouth_open: 0.6, ..base.clone() }),
            ("yaw +3", Pose { yaw: base.yaw + 3.0, ..base.clone() }),
            ("pitch +3", Pose { pitch: base.pitch + 3.0, ..base.clone() }),
            ("blink", Pose { blink: 1.0, ..base.clone() }),
        ] {
            let (z, p) = encode(&pose, &id)?;
            let d = (z - &z0)?.sqr()?;
            let total = d.sum_all()?.to_scalar::<f32>()?;
            let per_position = d.sum(1)?.flatten_all()?.to_vec1::<f32>()?;
            let peak = per_position.iter().copied().fold(0f32, f32::max);
            let positions = per_position.iter().filter(|&&v| v > 0.1 * peak).count();
            let pixel: f64 = p.iter().zip(&p0).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
            println!("{i:>8} {name:<9} {total:>14.2} {positions:>14} {pixel:>14.0} ({:.2})", pixel / p.len() as f64);
        }
    }
    Ok(())
}
