//! Stage 1: the causal VAE. Loss per clip (video in [-1, 1]):
//! `L1 + L2 + edge_weight * L1(spatial gradients) + kl_weight * KL`, with
//! the reconstruction from a reparameterised sample `z = mu + sigma * eps`
//! decoded by the same streaming decoder used at inference (chunks of 3
//! latent frames, causal cache), so training and streaming decode agree.
//!
//! `crop`: train on a random square crop of each clip (side a multiple of
//! the VAE's 16-pixel spatial factor). The VAE is fully convolutional, so a
//! 64x64 crop of a 128x128 clip teaches the same kernels at a quarter of the
//! cost; the crop position is drawn from the step, so runs stay reproducible.
//!
//! Every checkpoint also carries the latent statistics measured with the
//! current weights (`latent_stats`), which later stages normalise with.

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::model::vae::WanVae;

use super::data::ClipSource;
use super::params::{ParamStore, WarmStart};
use super::runner::{Stage, StepLoss};
use super::TrainError;

/// Loss weights of stage 1.
#[derive(Debug, Clone, Copy)]
pub struct VaeLossWeights {
    pub kl: f64,
    pub edge: f64,
    /// Weight of [`chroma_l1`]: a colour signal the luminance edges do not
    /// drown (see docs/TRAINING.md, session 4: the decoder never learned to
    /// read chroma from the latent).
    pub chroma: f64,
    /// Decode a posterior sample `mu + sigma * eps` (a VAE, default) or
    /// `mu` itself (a plain autoencoder; the KL term then only regularises
    /// `mu`'s scale): isolates whether the sampling noise limits what the
    /// latent carries.
    pub sample_posterior: bool,
    /// Weight of [`face_region_loss`]: L1 + edge L1 again inside the face
    /// (hairline to chin, with room for head motion). The mouth and eyes are
    /// a few pixels at 128x128 and what the evaluation reads (lip sync,
    /// identity); a whole-frame loss spends the small decoder on background
    /// and clothes first (docs/TRAINING.md, session 8).
    pub face: f64,
    /// Weight of [`temporal_l1`]: the reconstruction should change from
    /// frame to frame as the clip does. Per-frame losses leave the error
    /// free to differ between the 4 frames a latent frame decodes to and
    /// between decoder chunks; that flicker buries the head motion the
    /// listening metric reads (docs/TRAINING.md, sessions 8-9).
    pub temporal: f64,
    /// Weight of [`face_temporal_l1`]: the temporal term again inside the
    /// face mask. Head nods move only the head; over the whole frame their
    /// changes are a small share of the temporal term, and a VAE trained
    /// without it damped nods ~4x (docs/TRAINING.md, session 11).
    pub face_temporal: f64,
    /// Weight of the mouth term ([`face_region_loss`] + [`face_temporal_l1`]
    /// inside the mouth box): the mouth is ~1 % of the face mask, and a VAE
    /// trained without it returned a mouth that hardly opens (the round
    /// trip's lip r within clips 0.32-0.39 against the clips' 0.95,
    /// `train teacher_check`'s `lip_sync`, session 15).
    pub mouth: f64,
    /// Weight of the head-motion term ([`strided_temporal_l1`] inside the
    /// face mask at [`HEAD_MOTION_STRIDE`]): the change over several frames.
    /// A nod moves the head ~1 px per frame; per-frame changes that small
    /// sit under the reconstruction error, and the decoder damped nods ~4x
    /// and spread them over ~20 frames (docs/TRAINING.md, sessions 11-16).
    pub head_motion: f64,
}

impl VaeLossWeights {
    fn face_temporal_weights(&self) -> FaceTemporalWeights {
        FaceTemporalWeights {
            edge: self.edge,
            face: self.face,
            temporal: self.temporal,
            face_temporal: self.face_temporal,
            mouth: self.mouth,
            head_motion: self.head_motion,
        }
    }

    /// Whether any term needs the face / mouth masks.
    pub fn needs_masks(&self) -> bool {
        self.face > 0.0 || self.face_temporal > 0.0 || self.mouth > 0.0 || self.head_motion > 0.0
    }
}

impl Default for VaeLossWeights {
    fn default() -> Self {
        Self {
            kl: 1e-4,
            edge: 0.5,
            chroma: 0.0,
            sample_posterior: true,
            face: 0.0,
            temporal: 0.0,
            face_temporal: 0.0,
            mouth: 0.0,
            head_motion: 0.0,
        }
    }
}

/// `[1, 1, 1, size, size]`: 1 inside the face region of clip `index`'s
/// identity (hairline to chin, grown by the largest head motion), 0 outside.
pub fn face_mask(data: &ClipSource, index: u64, dev: &Device) -> Result<Tensor, TrainError> {
    let layout = data.face_layout(index)?;
    box_mask(layout.with_motion(layout.face), data.size, dev)
}

/// `[1, 1, 1, size, size]`: 1 inside the mouth box of clip `index`'s
/// identity (grown by the largest head motion), 0 outside.
pub fn mouth_mask(data: &ClipSource, index: u64, dev: &Device) -> Result<Tensor, TrainError> {
    let layout = data.face_layout(index)?;
    box_mask(layout.with_motion(layout.mouth), data.size, dev)
}

/// `[1, 1, 1, n, n]`: 1 inside `b`, 0 outside.
fn box_mask(b: crate::eval::face_layout::PixelBox, n: usize, dev: &Device) -> Result<Tensor, TrainError> {
    let mut m = vec![0f32; n * n];
    for y in b.y0..b.y1 {
        m[y * n + b.x0..y * n + b.x1].fill(1.0);
    }
    Ok(Tensor::from_vec(m, (1, 1, 1, n, n), dev)?)
}

/// L1 + `edge_weight` * edge L1 of `recon - video` inside `mask`
/// (`[B, 1, 1, H, W]`, 0 / 1), as a mean over the masked pixels; 0 when the
/// mask is empty (a crop without the face).
pub fn face_region_loss(
    recon: &Tensor,
    video: &Tensor,
    mask: &Tensor,
    edge_weight: f64,
) -> candle_core::Result<Tensor> {
    let share = mask.mean_all()?.to_scalar::<f32>()?;
    if share <= 0.0 {
        return Tensor::zeros((), recon.dtype(), recon.device());
    }
    let d = (recon - video)?.broadcast_mul(mask)?;
    let zero = d.zeros_like()?;
    (d.abs()?.mean_all()? + (edge_l1(&d, &zero)? * edge_weight)?)? / f64::from(share)
}

/// L1 between the frame-to-frame changes `x[t] - x[t - 1]` of `a` and `b`
/// (`[B, C, T, H, W]`); 0 for single frames.
pub fn temporal_l1(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    strided_temporal_l1(a, b, 1)
}

/// L1 between the changes over `stride` frames `x[t] - x[t - stride]` of
/// `a` and `b` (`[B, C, T, H, W]`); 0 for clips of `stride` frames or fewer.
pub fn strided_temporal_l1(a: &Tensor, b: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    let t = a.dim(2)?;
    if stride == 0 || t <= stride {
        return Tensor::zeros((), a.dtype(), a.device());
    }
    let change = |x: &Tensor| x.narrow(2, stride, t - stride)? - x.narrow(2, 0, t - stride)?;
    (change(a)? - change(b)?)?.abs()?.mean_all()
}

/// Frames over which the head-motion term compares changes: about half a
/// listening nod (0.45 s, 11 frames at 24 fps), so the head's displacement
/// through a nod is compared whole, and two latent frames' worth of the
/// causal decoder's memory.
pub const HEAD_MOTION_STRIDE: usize = 6;

/// [`strided_temporal_l1`] at [`HEAD_MOTION_STRIDE`] inside `mask`
/// (`[B, 1, 1, H, W]`, 0 / 1) as a mean over the masked pixels; 0 when the
/// mask is empty.
pub fn head_motion_l1(recon: &Tensor, video: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let share = mask.mean_all()?.to_scalar::<f32>()?;
    if share <= 0.0 {
        return Tensor::zeros((), recon.dtype(), recon.device());
    }
    strided_temporal_l1(&recon.broadcast_mul(mask)?, &video.broadcast_mul(mask)?, HEAD_MOTION_STRIDE)?
        / f64::from(share)
}

/// [`temporal_l1`] inside `mask` (`[B, 1, 1, H, W]`, 0 / 1) as a mean over
/// the masked pixels; 0 when the mask is empty.
pub fn face_temporal_l1(recon: &Tensor, video: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let share = mask.mean_all()?.to_scalar::<f32>()?;
    if share <= 0.0 {
        return Tensor::zeros((), recon.dtype(), recon.device());
    }
    temporal_l1(&recon.broadcast_mul(mask)?, &video.broadcast_mul(mask)?)? / f64::from(share)
}

/// Weights of the terms [`add_face_and_temporal_terms`] adds (0 skips one).
#[derive(Debug, Clone, Copy)]
pub struct FaceTemporalWeights {
    /// The edge weight inside [`face_region_loss`].
    pub edge: f64,
    pub face: f64,
    pub temporal: f64,
    pub face_temporal: f64,
    /// Weight of the mouth term (region L1 + edge and temporal L1 inside
    /// the mouth mask).
    pub mouth: f64,
    /// Weight of [`head_motion_l1`] inside the face mask.
    pub head_motion: f64,
}

/// Per clip of a batch, `[B, 1, 1, H, W]` 0 / 1 masks of its identity's
/// face and mouth regions.
pub struct RegionMasks {
    pub face: Tensor,
    pub mouth: Tensor,
}

/// `batch` clips from `cursor` on (advanced past them) as one
/// `[batch, 3, T, H, W]` video, with their face and mouth masks when
/// `with_masks`, all cut to the same random `crop` square when one is set;
/// with `crop_around_mouth` every other step's square holds the first
/// clip's mouth box.
#[allow(clippy::too_many_arguments)]
pub fn load_clip_batch(
    data: &ClipSource,
    device: &Device,
    batch: usize,
    cursor: &mut u64,
    with_masks: bool,
    crop_around_mouth: bool,
    crop: Option<usize>,
    step: u64,
    seed: u64,
) -> Result<(Tensor, Option<RegionMasks>), TrainError> {
    let mut clips = Vec::with_capacity(batch);
    let (mut faces, mut mouths) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
    for _ in 0..batch {
        clips.push(data.clip(*cursor, device)?.video);
        if with_masks {
            faces.push(face_mask(data, *cursor, device)?);
            mouths.push(mouth_mask(data, *cursor, device)?);
        }
        *cursor += 1;
    }
    // With a mouth term, every other step's crop holds the first clip's
    // mouth box (a uniform 64-pixel crop of a 128-pixel frame misses it
    // about half the time).
    let around = if crop_around_mouth && step % 2 == 0 {
        let layout = data.face_layout(*cursor - batch as u64)?;
        Some(layout.with_motion(layout.mouth))
    } else {
        None
    };
    let crop_to = |t: Tensor| -> Result<Tensor, TrainError> {
        match (crop, around) {
            (Some(side), Some(mouth)) => Ok(random_crop_containing(&t, data.size, side, step, seed, mouth)?),
            (Some(side), None) => Ok(random_crop(&t, data.size, side, step, seed)?),
            (None, _) => Ok(t),
        }
    };
    let video = crop_to(Tensor::cat(&clips, 0)?)?;
    let masks = if with_masks {
        Some(RegionMasks { face: crop_to(Tensor::cat(&faces, 0)?)?, mouth: crop_to(Tensor::cat(&mouths, 0)?)? })
    } else {
        None
    };
    Ok((video, masks))
}

/// `loss` plus the temporal term, then (with `masks`) the face term, the
/// face-temporal term, the mouth term and the head-motion term, each weighted; their values are appended to `parts`
/// in that order. A term with weight 0 is neither computed nor logged
/// (the face term is logged whenever there is a mask).
pub fn add_face_and_temporal_terms(
    loss: Tensor,
    parts: &mut Vec<(&'static str, f32)>,
    recon: &Tensor,
    video: &Tensor,
    masks: Option<&RegionMasks>,
    weights: FaceTemporalWeights,
) -> Result<Tensor, TrainError> {
    let s = |t: &Tensor| t.to_scalar::<f32>().unwrap_or(f32::NAN);
    let mut loss = loss;
    if weights.temporal > 0.0 {
        let temporal = temporal_l1(recon, video)?;
        parts.push(("temporal", s(&temporal)));
        loss = (loss + (temporal * weights.temporal)?)?;
    }
    if let Some(m) = masks {
        let face = face_region_loss(recon, video, &m.face, weights.edge)?;
        parts.push(("face", s(&face)));
        loss = (loss + (face * weights.face)?)?;
        if weights.face_temporal > 0.0 {
            let face_temporal = face_temporal_l1(recon, video, &m.face)?;
            parts.push(("face_temporal", s(&face_temporal)));
            loss = (loss + (face_temporal * weights.face_temporal)?)?;
        }
        if weights.mouth > 0.0 {
            let mouth =
                (face_region_loss(recon, video, &m.mouth, weights.edge)? + face_temporal_l1(recon, video, &m.mouth)?)?;
            parts.push(("mouth", s(&mouth)));
            loss = (loss + (mouth * weights.mouth)?)?;
        }
        if weights.head_motion > 0.0 {
            let motion = head_motion_l1(recon, video, &m.face)?;
            parts.push(("head_motion", s(&motion)));
            loss = (loss + (motion * weights.head_motion)?)?;
        }
    }
    Ok(loss)
}

/// Side of the average pooling in [`chroma_l1`] (pixels).
const CHROMA_POOL: usize = 8;

/// L1 between the low-passed chroma (R - G, B - G; `CHROMA_POOL` x
/// `CHROMA_POOL` averages) of `a` and `b` (`[B, 3, T, H, W]`).
pub fn chroma_l1(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let chroma = |x: &Tensor| -> candle_core::Result<Tensor> {
        let (n, _, t, h, w) = x.dims5()?;
        let g = x.narrow(1, 1, 1)?;
        let c = Tensor::cat(&[&(x.narrow(1, 0, 1)? - &g)?, &(x.narrow(1, 2, 1)? - &g)?], 1)?;
        let p = CHROMA_POOL.min(h).min(w);
        c.reshape((n, 2 * t, h, w))?.avg_pool2d(p)?.reshape((n, 2, t, h / p, w / p))
    };
    (chroma(a)? - chroma(b)?)?.abs()?.mean_all()
}

/// Initial log-variance of the posterior (the logvar half of
/// `quant_conv`, the 1x1 conv after the encoder). With the default init the posterior
/// starts at sigma = 1, the decoder learns from latents drowned in noise and
/// settles on a blurred grey average (the first mini VAE: 18 dB after 1750
/// steps, logvar bias still ~0). sigma = e^-3 = 0.05 lets reconstruction
/// start from nearly clean latents; the KL term still regularises them.
pub const INITIAL_LOGVAR: f32 = -6.0;
const POSTERIOR_BIAS: &str = "quant_conv.bias";
const POSTERIOR_WEIGHT: &str = "quant_conv.weight";

/// Latent frames per chunk of the streaming decode (the generator's chunk).
const STREAM_CHUNK_LATENT_FRAMES: usize = 3;

/// Stage 1 state.
pub struct VaeStage {
    cfg: ModelConfig,
    params: ParamStore,
    data: ClipSource,
    batch: usize,
    weights: VaeLossWeights,
    device: Device,
    seed: u64,
    crop: Option<usize>,
    /// Train the decoder only (see [`VaeStage::with_frozen_encoder`]).
    frozen_encoder: bool,
    /// Latent frames decoded without gradient before the trained ones
    /// (see [`VaeStage::with_stream_warmup`]).
    stream_warmup: usize,
    /// Std of the noise added to the latents before decoding, in
    /// normalised latent units (see [`VaeStage::with_latent_noise`]).
    latent_noise: f64,
}

impl VaeStage {
    pub fn new(cfg: ModelConfig, data: ClipSource, batch: usize, weights: VaeLossWeights, seed: u64) -> Self {
        let device = Device::Cpu;
        Self {
            params: ParamStore::new(seed, &device),
            cfg,
            data,
            batch: batch.max(1),
            weights,
            device,
            seed,
            crop: None,
            frozen_encoder: false,
            stream_warmup: 0,
            latent_noise: 0.0,
        }
    }

    /// Decode `z + std * eps` (in normalised latent units, i.e. scaled by
    /// each channel's `latents_std`) against the clean frames: the decoder
    /// learns to tolerate latents slightly off the encoder's, as a DiT
    /// produces them (a teacher's latent error grows into pixel error
    /// through the decoder's causal cache, docs/TRAINING.md session 13).
    /// Needs [`with_frozen_encoder`](Self::with_frozen_encoder): the noise
    /// must not reach the encoder's gradient.
    pub fn with_latent_noise(mut self, std: f64) -> Result<Self, TrainError> {
        if !(std.is_finite() && std >= 0.0) {
            return Err(TrainError::Invalid(format!("--latent-noise {std}: must be >= 0")));
        }
        if std > 0.0 && !self.frozen_encoder {
            return Err(TrainError::Invalid("--latent-noise needs --freeze-encoder".into()));
        }
        self.latent_noise = std;
        Ok(self)
    }

    /// Train on `device` (default: the CPU). Call before training: the
    /// variables are created on the store's device.
    pub fn on_device(mut self, device: &Device) -> Self {
        self.params = ParamStore::new(self.seed, device);
        self.device = device.clone();
        self
    }

    /// Train on random `side x side` crops (see the module doc).
    pub fn with_crop(mut self, side: usize) -> Result<Self, TrainError> {
        self.crop = Some(check_crop(&self.cfg, &self.data, side)?);
        Ok(self)
    }

    /// Train the decoder only: the posterior is detached, so the encoder
    /// and `quant_conv` get no gradient (AdamW skips them, no weight decay
    /// either), and the stored latent statistics are kept. The latents,
    /// and every DiT stage's clip pool made from them, stay valid
    /// (`sample_store` fingerprints only the encoding half of a VAE file).
    pub fn with_frozen_encoder(mut self) -> Self {
        self.frozen_encoder = true;
        self
    }

    /// Train the decoder mid-stream: each clip starts with `latent_frames`
    /// extra latent frames (after its first) that the streaming decoder
    /// decodes first, filling its causal cache, with the cache then cut off
    /// the graph ([`StreamingDecoder::detach_cache`]); only the frames after
    /// them are decoded with gradient and scored, together with the last
    /// warm-up frame (detached) so the temporal terms see the step across
    /// the boundary. The clip source's `latent_frames` must include the
    /// warm-up. A decoder trained only from an empty cache on short clips
    /// lags and carries head nods on ~20 frames when it streams for
    /// minutes (docs/TRAINING.md, session 11); 250 steps of this made its
    /// flicker worse (session 12), so the recipe does not use it. Needs the frozen encoder
    /// (the warm-up latents get no gradient) and a multiple of 3 latent
    /// frames, the chunk size the generator decodes in, so the trained
    /// chunks start where streamed chunks start.
    ///
    /// [`StreamingDecoder::detach_cache`]: crate::model::vae::StreamingDecoder::detach_cache
    pub fn with_stream_warmup(mut self, latent_frames: usize) -> Result<Self, TrainError> {
        if latent_frames == 0 {
            self.stream_warmup = 0;
            return Ok(self);
        }
        if !self.frozen_encoder {
            return Err(TrainError::Invalid("--stream-warmup needs --freeze-encoder".into()));
        }
        if latent_frames % STREAM_CHUNK_LATENT_FRAMES != 0 {
            return Err(TrainError::Invalid(format!(
                "--stream-warmup {latent_frames}: must be a multiple of {STREAM_CHUNK_LATENT_FRAMES} latent frames"
            )));
        }
        if self.data.latent_frames <= latent_frames {
            return Err(TrainError::Invalid(format!(
                "--stream-warmup {latent_frames} leaves no trained latent frame in clips of {}",
                self.data.latent_frames
            )));
        }
        self.stream_warmup = latent_frames;
        Ok(self)
    }

    /// (Re)build the VAE from the current variables.
    pub fn vae(&self) -> Result<WanVae, TrainError> {
        Ok(WanVae::new(&self.cfg.vae, self.params.var_builder())?)
    }
}

/// A crop side the VAE can take: a positive multiple of its spatial factor,
/// no larger than the clips.
pub fn check_crop(cfg: &ModelConfig, data: &ClipSource, side: usize) -> Result<usize, TrainError> {
    let factor = cfg.vae.scale_factor_spatial;
    if side == 0 || side % factor != 0 || side > data.size {
        return Err(TrainError::Invalid(format!(
            "crop {side} must be a positive multiple of {factor} no larger than the clip size {}",
            data.size
        )));
    }
    Ok(side)
}

/// The `side x side` crop of `video` `[B, C, T, H, W]` (clips of `size`
/// pixels) at a position drawn from (`step`, `seed`): reproducible runs.
pub fn random_crop(video: &Tensor, size: usize, side: usize, step: u64, seed: u64) -> candle_core::Result<Tensor> {
    let span = (size - side) as u64 + 1;
    let h = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
    let (y, x) = ((h % span) as usize, ((h >> 32) % span) as usize);
    video.narrow(3, y, side)?.narrow(4, x, side)?.contiguous()
}

/// A `side` square crop of `video` (`[B, C, T, size, size]`) that holds
/// `inside` where it fits (origin drawn from the positions that do, seeded
/// like [`random_crop`]); a box larger than the crop is centred.
pub fn random_crop_containing(
    video: &Tensor,
    size: usize,
    side: usize,
    step: u64,
    seed: u64,
    inside: crate::eval::face_layout::PixelBox,
) -> candle_core::Result<Tensor> {
    let h = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
    let origin = |lo: usize, hi: usize, draw: u64| -> usize {
        let max = size - side;
        let (a, b) = (hi.saturating_sub(side).min(max), lo.min(max));
        if a <= b {
            a + (draw % (b - a + 1) as u64) as usize
        } else {
            ((lo + hi) / 2).saturating_sub(side / 2).min(max)
        }
    };
    let (y, x) = (origin(inside.y0, inside.y1, h), origin(inside.x0, inside.x1, h >> 32));
    video.narrow(3, y, side)?.narrow(4, x, side)?.contiguous()
}

/// Mean absolute horizontal + vertical finite differences of `a - b`
/// (`[B, C, T, H, W]`): penalises blurred edges.
pub fn edge_l1(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let d = (a - b)?;
    let (h, w) = (d.dim(3)?, d.dim(4)?);
    let dy = (d.narrow(3, 1, h - 1)? - d.narrow(3, 0, h - 1)?)?.abs()?.mean_all()?;
    let dx = (d.narrow(4, 1, w - 1)? - d.narrow(4, 0, w - 1)?)?.abs()?.mean_all()?;
    dy + dx
}

impl VaeStage {
    /// The reconstruction of `z` and the frames of `video` it is scored
    /// against: all of them, or with a stream warm-up the frames from the
    /// last warm-up frame on (see [`VaeStage::with_stream_warmup`]).
    fn decode_for_loss(&self, vae: &WanVae, z: &Tensor, video: &Tensor) -> Result<(Tensor, Tensor), TrainError> {
        if self.stream_warmup == 0 {
            return Ok((vae.decode_unclamped(z)?, video.clone()));
        }
        let f = z.dim(2)?;
        let warm_end = 1 + self.stream_warmup;
        let mut stream = vae.streaming_decoder();
        let mut warm = stream.decode_chunk_unclamped(&z.narrow(2, 0, 1)?)?;
        let mut start = 1;
        while start < warm_end {
            let n = (warm_end - start).min(STREAM_CHUNK_LATENT_FRAMES);
            warm = stream.decode_chunk_unclamped(&z.narrow(2, start, n)?)?;
            start += n;
        }
        let last_warm = warm.narrow(2, warm.dim(2)? - 1, 1)?.detach();
        drop(warm);
        stream.detach_cache();
        let mut outs = vec![last_warm];
        while start < f {
            let n = (f - start).min(STREAM_CHUNK_LATENT_FRAMES);
            outs.push(stream.decode_chunk_unclamped(&z.narrow(2, start, n)?)?);
            start += n;
        }
        let recon = Tensor::cat(&outs, 2)?;
        let frames = recon.dim(2)?;
        let target = video.narrow(2, video.dim(2)? - frames, frames)?;
        Ok((recon, target))
    }
}

impl Stage for VaeStage {
    fn name(&self) -> &'static str {
        "vae"
    }

    fn init(&mut self) -> Result<(), TrainError> {
        self.vae()?;
        // Start the posterior narrow (see INITIAL_LOGVAR); a resumed run
        // overwrites this with its checkpoint.
        let z = self.cfg.vae.z_dim;
        let vars: std::collections::HashMap<String, candle_core::Var> = self.params.named_vars().into_iter().collect();
        let bias = vars
            .get(POSTERIOR_BIAS)
            .ok_or_else(|| TrainError::Invalid(format!("the VAE has no `{POSTERIOR_BIAS}`")))?;
        let mu = bias.as_tensor().narrow(0, 0, z)?;
        let logvar = Tensor::full(INITIAL_LOGVAR, z, &self.device)?.to_dtype(mu.dtype())?;
        bias.set(&Tensor::cat(&[&mu, &logvar], 0)?)?;
        // Damp the logvar rows of the kernel too, so the random features do
        // not spread the initial logvar by several units.
        let weight = vars
            .get(POSTERIOR_WEIGHT)
            .ok_or_else(|| TrainError::Invalid(format!("the VAE has no `{POSTERIOR_WEIGHT}`")))?;
        let w = weight.as_tensor();
        let damped = (w.narrow(0, z, z)? * 0.05)?;
        weight.set(&Tensor::cat(&[&w.narrow(0, 0, z)?, &damped], 0)?)?;
        Ok(())
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Matching tensors, and a trained VAE of a narrower latent widened
    /// without changing what it computes (`latent_widening`).
    fn warm_start(&mut self, file: &std::path::Path, skip: &[String]) -> candle_core::Result<WarmStart> {
        let mut report = self.params.load_matching(file, skip)?;
        let tensors = candle_core::safetensors::load(file, &self.device)?;
        let vars = self.params.named_vars().into_iter().collect();
        let widened = super::latent_widening::widen_latent(&vars, &tensors, self.cfg.vae.z_dim, &mut report)?;
        if widened > 0 {
            tracing::info!(widened, z_dim = self.cfg.vae.z_dim, "latent widened from a narrower VAE");
        }
        Ok(report)
    }

    fn before_save(&mut self) -> Result<(), TrainError> {
        if self.frozen_encoder {
            return Ok(());
        }
        super::latent_stats::store(&self.params, &self.vae()?, &self.data, &self.device)
    }

    fn loss(&mut self, step: u64, cursor: &mut u64) -> Result<StepLoss, TrainError> {
        let vae = self.vae()?;
        let (video, mask) = load_clip_batch(
            &self.data,
            &self.device,
            self.batch,
            cursor,
            self.weights.needs_masks(),
            self.weights.mouth > 0.0,
            self.crop,
            step,
            self.seed,
        )?;
        let mut post = vae.encode(&video)?;
        if self.frozen_encoder {
            post.mu = post.mu.detach();
            post.logvar = post.logvar.detach();
        }
        let z = if self.weights.sample_posterior {
            let eps = crate::model::sampler::NoiseSource::new(self.seed ^ step.wrapping_mul(0x2545_F491)).sample(
                post.mu.shape().clone(),
                candle_core::DType::F32,
                &self.device,
            )?;
            (&post.mu + (eps * (&post.logvar * 0.5)?.exp()?)?)?
        } else {
            post.mu.clone()
        };
        let z = if self.latent_noise > 0.0 {
            let norm = vae.latent_norm();
            let eps = crate::model::sampler::NoiseSource::new(self.seed ^ step.wrapping_mul(0x9E37_79B9) ^ 0x1A7E)
                .sample(z.shape().clone(), candle_core::DType::F32, &self.device)?;
            norm.denormalize(&(norm.normalize(&z)? + (eps * self.latent_noise)?)?)?
        } else {
            z
        };
        let (recon, video) = self.decode_for_loss(&vae, &z, &video)?;
        let l1 = (&recon - &video)?.abs()?.mean_all()?;
        let l2 = (&recon - &video)?.sqr()?.mean_all()?;
        let edge = edge_l1(&recon, &video)?;
        // KL(N(mu, sigma) || N(0, 1)), mean over latent elements.
        let kl = ((post.mu.sqr()? + post.logvar.exp()? - &post.logvar)? - 1.0)?.mean_all()? * 0.5;
        let kl = kl?;
        let chroma = chroma_l1(&recon, &video)?;
        let loss = (((&l1 + &l2)? + (&edge * self.weights.edge)?)? + (&kl * self.weights.kl)?)?;
        let loss = (loss + (&chroma * self.weights.chroma)?)?;
        let s = |t: &Tensor| t.to_scalar::<f32>().unwrap_or(f32::NAN);
        let mut parts =
            vec![("l1", s(&l1)), ("l2", s(&l2)), ("edge", s(&edge)), ("kl", s(&kl)), ("chroma", s(&chroma))];
        let loss = add_face_and_temporal_terms(
            loss,
            &mut parts,
            &recon,
            &video,
            mask.as_ref(),
            self.weights.face_temporal_weights(),
        )?;
        Ok((loss, parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn face_mask_covers_the_mouth_and_eyes_of_the_clip_identity() -> anyhow::Result<()> {
        let data = ClipSource {
            seed: 1,
            size: 128,
            latent_frames: 0,
            identities: 50,
            max_offset_s: 0.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        for index in [0u64, 7, 33] {
            let m = face_mask(&data, index, &Device::Cpu)?;
            assert_eq!(m.dims(), &[1, 1, 1, 128, 128]);
            let share = m.mean_all()?.to_scalar::<f32>()?;
            assert!(share > 0.03 && share < 0.5, "clip {index}: face share {share}");
            let layout = data.face_layout(index)?;
            let v = m.flatten_all()?.to_vec1::<f32>()?;
            for b in [layout.mouth, layout.eyes] {
                let (x, y) = ((b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2);
                assert_eq!(v[y * 128 + x], 1.0, "clip {index}: ({x}, {y}) outside the mask");
            }
        }
        Ok(())
    }

    #[test]
    fn temporal_l1_sees_flicker_but_not_a_steady_offset() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let video = Tensor::arange(0f32, 5.0, &dev)?.reshape((1, 1, 5, 1, 1))?.broadcast_as((1, 3, 5, 2, 2))?;
        let video = (video.contiguous()? * 0.1)?;
        // A constant error changes nothing from frame to frame.
        let offset = (&video + 0.3)?;
        assert!(temporal_l1(&offset, &video)?.to_scalar::<f32>()?.abs() < 1e-6);
        // Alternating +-0.1 on top: every change is off by 0.2.
        let sign = Tensor::new(&[1f32, -1.0, 1.0, -1.0, 1.0], &dev)?.reshape((1, 1, 5, 1, 1))?;
        let flicker = (&video + sign.broadcast_as(video.shape())? * 0.1)?;
        assert!((temporal_l1(&flicker, &video)?.to_scalar::<f32>()? - 0.2).abs() < 1e-5);
        assert_eq!(temporal_l1(&video.narrow(2, 0, 1)?, &video.narrow(2, 0, 1)?)?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    /// A reconstruction that follows a slow motion at half its speed (a
    /// damped nod) misses a little per frame and `stride` times that over
    /// `stride` frames, so the strided term weighs the damping `stride`x.
    #[test]
    fn strided_temporal_l1_weighs_a_damped_slow_motion_by_its_stride() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let ramp = |speed: f64| -> candle_core::Result<Tensor> {
            Tensor::arange(0f32, 12.0, &dev)?.reshape((1, 1, 12, 1, 1))?.broadcast_as((1, 3, 12, 2, 2))?.contiguous()?
                * speed
        };
        let (video, damped) = (ramp(0.01)?, ramp(0.005)?);
        let per_frame = strided_temporal_l1(&damped, &video, 1)?.to_scalar::<f32>()?;
        let over_six = strided_temporal_l1(&damped, &video, HEAD_MOTION_STRIDE)?.to_scalar::<f32>()?;
        assert!((per_frame - 0.005).abs() < 1e-6, "{per_frame}");
        assert!((over_six - 0.005 * HEAD_MOTION_STRIDE as f32).abs() < 1e-5, "{over_six}");
        // Too short a clip for the stride: nothing to compare.
        let short = video.narrow(2, 0, HEAD_MOTION_STRIDE)?;
        assert_eq!(strided_temporal_l1(&short, &short.zeros_like()?, HEAD_MOTION_STRIDE)?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    /// The mouth mask sits inside the face mask, covers the mouth box, and
    /// the mouth term sees an error only where the mouth mask is.
    #[test]
    fn mouth_term_scores_the_mouth_box_only() -> anyhow::Result<()> {
        let data = ClipSource {
            seed: 1,
            size: 128,
            latent_frames: 0,
            identities: 8,
            max_offset_s: 0.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        let dev = Device::Cpu;
        let (face, mouth) = (face_mask(&data, 3, &dev)?, mouth_mask(&data, 3, &dev)?);
        let inside = (mouth.broadcast_mul(&face)? - &mouth)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(inside, 0.0, "mouth mask leaves the face mask");
        let (f, m) = (face.sum_all()?.to_scalar::<f32>()?, mouth.sum_all()?.to_scalar::<f32>()?);
        assert!(m > 0.0 && m < f / 2.0, "mouth {m} px, face {f} px");
        let layout = data.face_layout(3)?;
        let (cx, cy) = ((layout.mouth.x0 + layout.mouth.x1) / 2, (layout.mouth.y0 + layout.mouth.y1) / 2);
        assert_eq!(mouth.flatten_all()?.to_vec1::<f32>()?[cy * 128 + cx], 1.0);
        let masks = RegionMasks { face, mouth: mouth.clone() };
        let weights = FaceTemporalWeights {
            edge: 0.0,
            face: 0.0,
            temporal: 0.0,
            face_temporal: 0.0,
            mouth: 5.0,
            head_motion: 0.0,
        };
        let video = Tensor::zeros((1, 3, 2, 128, 128), DType::F32, &dev)?;
        let term = |recon: &Tensor| -> anyhow::Result<(f32, f32)> {
            let mut parts = Vec::new();
            let zero = Tensor::zeros((), DType::F32, &dev)?;
            let loss = add_face_and_temporal_terms(zero, &mut parts, recon, &video, Some(&masks), weights)?;
            let mouth = parts.iter().find(|(n, _)| *n == "mouth").map(|p| p.1).unwrap_or(f32::NAN);
            Ok((loss.to_scalar::<f32>()?, mouth))
        };
        // An error of 0.2 outside the mouth only: no mouth term.
        let outside = ((1.0 - &mouth)? * 0.2)?.broadcast_as((1, 3, 2, 128, 128))?.contiguous()?;
        assert_eq!(term(&outside)?, (0.0, 0.0));
        // 0.2 inside the mouth, constant over time: L1 0.2, no change.
        let within = (&mouth * 0.2)?.broadcast_as((1, 3, 2, 128, 128))?.contiguous()?;
        let (loss, part) = term(&within)?;
        assert!((part - 0.2).abs() < 1e-5 && (loss - 1.0).abs() < 1e-4, "{part} {loss}");
        Ok(())
    }

    /// Every crop holds the box, and the crops still move between steps.
    #[test]
    fn crops_containing_a_box_hold_it() -> candle_core::Result<()> {
        use crate::eval::face_layout::PixelBox;
        let dev = Device::Cpu;
        let ramp: Vec<f32> = (0..32 * 32).map(|i| i as f32).collect();
        let video = Tensor::from_vec(ramp, (1, 1, 1, 32, 32), &dev)?;
        let inside = PixelBox { x0: 20, y0: 4, x1: 26, y1: 10 };
        let mut origins = std::collections::HashSet::new();
        for step in 0..50 {
            let c = random_crop_containing(&video, 32, 12, step, 7, inside)?.flatten_all()?.to_vec1::<f32>()?;
            let (y, x) = ((c[0] as usize) / 32, (c[0] as usize) % 32);
            assert!(y <= 4 && y + 12 >= 10 && x <= 20 && x + 12 >= 26, "crop at ({y}, {x})");
            origins.insert((y, x));
        }
        assert!(origins.len() > 10, "{origins:?}");
        // A box larger than the crop: centred on it.
        let wide = PixelBox { x0: 0, y0: 0, x1: 32, y1: 20 };
        let c = random_crop_containing(&video, 32, 12, 3, 7, wide)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(((c[0] as usize) / 32, (c[0] as usize) % 32), (4, 10));
        Ok(())
    }

    #[test]
    fn face_temporal_l1_sees_changes_inside_the_mask_only() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let video = Tensor::zeros((1, 3, 3, 4, 4), DType::F32, &dev)?;
        // The reconstruction flickers by 0.4 in the left half only.
        let left = Tensor::cat(
            &[Tensor::ones((1, 1, 1, 4, 2), DType::F32, &dev)?, Tensor::zeros((1, 1, 1, 4, 2), DType::F32, &dev)?],
            4,
        )?;
        let pulse = Tensor::new(&[0f32, 0.4, 0.0], &dev)?.reshape((1, 1, 3, 1, 1))?;
        let recon = left.broadcast_mul(&pulse)?.broadcast_as((1, 3, 3, 4, 4))?.contiguous()?;
        let right = (1.0 - &left)?;
        assert!((face_temporal_l1(&recon, &video, &left)?.to_scalar::<f32>()? - 0.4).abs() < 1e-6);
        assert_eq!(face_temporal_l1(&recon, &video, &right)?.to_scalar::<f32>()?, 0.0);
        assert_eq!(face_temporal_l1(&recon, &video, &left.zeros_like()?)?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    #[test]
    fn face_region_loss_is_the_masked_mean_and_zero_without_a_face() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let video = Tensor::zeros((1, 3, 1, 4, 4), DType::F32, &dev)?;
        let recon = (video.ones_like()? * 0.5)?;
        let all = Tensor::ones((1, 1, 1, 4, 4), DType::F32, &dev)?;
        // A constant error: L1 0.5, no edges.
        assert!((face_region_loss(&recon, &video, &all, 0.5)?.to_scalar::<f32>()? - 0.5).abs() < 1e-6);
        let none = all.zeros_like()?;
        assert_eq!(face_region_loss(&recon, &video, &none, 0.5)?.to_scalar::<f32>()?, 0.0);
        // Half the frame masked: still the mean over the masked pixels.
        let half = Tensor::cat(&[&all.narrow(3, 0, 2)?, &none.narrow(3, 0, 2)?], 3)?;
        let v = face_region_loss(&recon, &video, &half, 0.0)?.to_scalar::<f32>()?;
        assert!((v - 0.5).abs() < 1e-6, "{v}");
        Ok(())
    }

    #[test]
    fn chroma_l1_sees_hue_and_ignores_grey_level_and_fine_detail() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let grey = Tensor::full(0.2f32, (1, 3, 2, 16, 16), &dev)?;
        // Brighter grey: same (zero) chroma.
        assert_eq!(chroma_l1(&grey, &(&grey + 0.5)?)?.to_scalar::<f32>()?, 0.0);
        // A red tint: R - G = 0.4 everywhere, B - G = 0 -> mean 0.2.
        let red = Tensor::cat(&[&(grey.narrow(1, 0, 1)? + 0.4)?, &grey.narrow(1, 1, 2)?], 1)?;
        assert!((chroma_l1(&grey, &red)?.to_scalar::<f32>()? - 0.2).abs() < 1e-6);
        // A checkerboard of +-0.4 on R averages out inside each 8x8 pool.
        let checker: Vec<f32> = (0..2 * 16 * 16).map(|i| if (i % 16 + i / 16) % 2 == 0 { 0.4 } else { -0.4 }).collect();
        let r = (grey.narrow(1, 0, 1)? + Tensor::from_vec(checker, (1, 1, 2, 16, 16), &dev)?)?;
        let fine = Tensor::cat(&[&r, &grey.narrow(1, 1, 2)?], 1)?;
        assert!(chroma_l1(&grey, &fine)?.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }

    /// With a stream warm-up the scored reconstruction is exactly the
    /// whole-clip decode from the last warm-up frame on (the warm-up only
    /// fills the cache), it lines up with the same video frames, and its
    /// gradient reaches the decoder.
    #[test]
    fn stream_warmup_scores_the_frames_after_the_warmup() -> anyhow::Result<()> {
        let data = ClipSource {
            seed: 2,
            size: 64,
            latent_frames: 5,
            identities: 4,
            max_offset_s: 0.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        let mut st = VaeStage::new(ModelConfig::tiny(), data, 1, VaeLossWeights::default(), 3)
            .with_frozen_encoder()
            .with_stream_warmup(3)?;
        st.init()?;
        let vae = st.vae()?;
        let video = st.data.clip(0, &Device::Cpu)?.video;
        assert_eq!(video.dim(2)?, 21);
        let z = vae.encode(&video)?.mu.detach();
        let whole = vae.decode_unclamped(&z)?;
        let (recon, target) = st.decode_for_loss(&vae, &z, &video)?;
        // Latent frames 0..=3 decode to video frames 0..=12; the scored
        // part is frame 12 (the last warm-up frame) and frames 13..=20.
        assert_eq!(recon.dim(2)?, 9);
        let d = (&recon - whole.narrow(2, 12, 9)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "streamed tail differs from the whole decode by {d}");
        assert_eq!((&target - video.narrow(2, 12, 9)?)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);

        let grads = (&recon - &target)?.abs()?.mean_all()?.backward()?;
        let decoder_vars: Vec<_> =
            st.params.named_vars().into_iter().filter(|(n, _)| n.starts_with("decoder.")).collect();
        assert!(!decoder_vars.is_empty());
        let moved = decoder_vars.iter().filter_map(|(_, v)| grads.get(v.as_tensor())).count();
        assert_eq!(moved, decoder_vars.len(), "every decoder tensor gets a gradient");
        Ok(())
    }

    #[test]
    fn stream_warmup_needs_a_frozen_encoder_whole_chunks_and_trained_frames() {
        let data = ClipSource {
            seed: 2,
            size: 64,
            latent_frames: 6,
            identities: 4,
            max_offset_s: 0.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        let stage = || VaeStage::new(ModelConfig::tiny(), data.clone(), 1, VaeLossWeights::default(), 3);
        assert!(stage().with_stream_warmup(3).is_err(), "needs --freeze-encoder");
        assert!(stage().with_frozen_encoder().with_stream_warmup(2).is_err(), "not a whole chunk");
        assert!(stage().with_frozen_encoder().with_stream_warmup(6).is_err(), "nothing left to train");
        assert!(stage().with_frozen_encoder().with_stream_warmup(3).is_ok());
        assert!(stage().with_stream_warmup(0).is_ok());
    }

    /// Latent noise trains the decoder only, and its step still yields a
    /// finite loss that differs from the noiseless one on the same batch.
    #[test]
    fn latent_noise_needs_a_frozen_encoder_and_changes_the_decoded_input() -> anyhow::Result<()> {
        let data = ClipSource {
            seed: 2,
            size: 64,
            latent_frames: 1,
            identities: 4,
            max_offset_s: 0.0,
            windows: crate::train::data::WindowChoice::Random,
        };
        let stage = || VaeStage::new(ModelConfig::tiny(), data.clone(), 1, VaeLossWeights::default(), 3);
        assert!(stage().with_latent_noise(0.3).is_err(), "needs --freeze-encoder");
        assert!(stage().with_frozen_encoder().with_latent_noise(-1.0).is_err());
        assert!(stage().with_latent_noise(0.0).is_ok());
        let mut plain = stage().with_frozen_encoder();
        let mut noisy = stage().with_frozen_encoder().with_latent_noise(0.5)?;
        let (a, _) = plain.loss(0, &mut 0)?;
        let (b, _) = noisy.loss(0, &mut 0)?;
        let (a, b) = (a.to_scalar::<f32>()?, b.to_scalar::<f32>()?);
        assert!(a.is_finite() && b.is_finite() && a != b, "{a} vs {b}");
        Ok(())
    }
}
