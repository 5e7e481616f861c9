//! Stage-2 check: what a teacher checkpoint generates
//! (`streamavatar train teacher_check --teacher <params> --vae <params>
//! --out <folder>`).
//!
//! For clips the training pool never holds, the frozen teacher integrates
//! its flow ODE from noise (Euler, `euler_steps` on the sampler's shifted
//! sigma grid), conditioned as in training on the clean reference latent
//! (frame 0) and the clip's talk / listen audio; the VAE decodes the result.
//! Three PSNR / SSIM figures against the real clip, over the frames after
//! the reference, tell how far the teacher is:
//! * `generated` — the teacher's clip;
//! * `static_reference` — the decoded reference frame held still: a
//!   teacher that only copies the reference scores about this, one that
//!   moves like the clip (mouth, head, blinks) scores above it;
//! * `vae_ceiling` — the VAE's own reconstruction of the clip: what a
//!   perfect teacher would score through this VAE;
//! * `swapped_audio` — the same noise and reference, but the talk / listen
//!   audio features of the next clip: a teacher that follows its audio
//!   scores lower here than in `generated`, one that ignores it the same.
//!   `audio_effect_mae` is the mean absolute difference (0-255 levels)
//!   between the two generations, `motion_mae` the real clip's own mean
//!   absolute difference to its decoded reference frame, for scale. Lip
//!   sync lives in a few hundred pixels, so every score also has a
//!   `mouth_psnr_db` over the mouth box, and `audio_effect_mouth_psnr_db`
//!   compares the two generations there (99 dB: identical mouths).
//!
//! `clean_error_by_sigma` is the teacher's one-step estimate of the clean
//! latents (`x_t - sigma v`) against the clip's at fixed noise levels, split
//! into the part every frame of the clip shares (`static_part`: the error
//! of the per-position mean over the frames) and the part that changes over
//! time; `clip_temporal_variance` is the clip's own change over its frames,
//! for scale. A teacher whose error at sigma 1 exceeds what the reference
//! and audio leave open cannot carry the noise through its head (session
//! 14: a velocity head of 192 wide for 768-value patches lost 3/4 of it).
//! `mouth_own` / `mouth_swapped` give the same estimate's error over the
//! mouth box's latent pixels with the clip's own and the swapped audio:
//! the gap is what the audio tells the teacher about the mouth.
//!
//! `lip_sync` is `eval`'s lip measure on these short clips: the mouth
//! openness measured on each video (the tracked mouth box against the
//! identity's closed-mouth neutral frame) correlated with the synth's true
//! openness, over all checked frames, each clip centred on its own means.
//! The real clips score near 1, the VAE's reconstruction less (0.55 for
//! the session-15 VAE, 0.32 before its mouth term);
//! a teacher that follows its audio scores well above its swapped-audio
//! generation, which keeps only what the reference and chance give.
//!
//! `lip_sync_detrended` removes each clip's least-squares line instead of
//! its mean: the decoded generations drift away from the neutral mouth
//! over a clip as the decoder's error builds up (session 16), a trend that
//! is no lip motion and hides it from the centred figure.
//!
//! With a lip-sync expert (`--lip-expert`, [`super::lip_expert`]),
//! `lip_expert` is the same correlation from the expert's read-out of the
//! latents (per latent frame): on the real clip's latents it says how well
//! the expert reads unseen clips, on the generations what the DiT put at
//! the mouth, before the decoder.
//!
//! With a head expert (`--head-expert`, [`super::head_expert`]),
//! `head_expert` correlates its read-out of head pitch with the synth's
//! (per latent frame, each clip centred) for the real latents, the
//! generations, and generations with the listen track silenced (zero
//! listen features, as the serving path's voice-activity mask gives for
//! silence); and
//! `listen_reaction` is the mean |generated - silenced| read-out: 0 when
//! the listen branch changes nothing about the head; `reaction_r`
//! correlates `generated - silenced` with the synth's listening nods
//! (`reaction_truth` is their mean size in the same units).
//!
//! `clip_NNN.png` shows real (top), generated (middle) and static (bottom)
//! rows at the first, middle and last frame after the reference.

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::eval::face_layout::FaceLayout;
use crate::eval::lip_sync::pearson;
use crate::eval::probe::StreamProbe;
use crate::generator::reference::video_to_frames;
use crate::media::frame::RgbFrame;
use crate::model::sampler::{warp_sigma, NoiseSource};

use super::frame_quality::{psnr_db, psnr_from_mse, region_psnr_db, ssim};
use super::head_expert::PitchTargets;
use super::latent_readout::{Readout, ReadoutTargets};
use super::lip_expert::{latent_openness, mouth_sampling, LipExpert};
use super::listen_contrast::latent_reaction;
use super::recon::{frame_rows, RECON_FIRST_CLIP};
use super::teacher_stage::{TeacherSample, TeacherStage};
use super::TrainError;

/// PSNR / SSIM of one video against the real clip (frames after the reference).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Score {
    pub psnr_db: f64,
    pub ssim: f64,
    /// PSNR over the clip identity's mouth box (grown by the largest head
    /// motion): where lip sync shows.
    pub mouth_psnr_db: f64,
}

/// One checked clip.
#[derive(Debug, Clone, Serialize)]
pub struct ClipCheck {
    pub index: u64,
    pub generated: Score,
    pub static_reference: Score,
    pub vae_ceiling: Score,
    pub swapped_audio: Score,
    pub audio_effect_mae: f64,
    pub motion_mae: f64,
    /// PSNR of the swapped-audio generation against the generation over
    /// the mouth box (99 = identical: the audio changes nothing there).
    pub audio_effect_mouth_psnr_db: f64,
    /// How much the projected audio tokens themselves change with the
    /// swap: mean |own - swapped| / mean |own| over the talk and the
    /// listen tokens (0: the projection gives the DiT the same tokens).
    pub talk_token_change: f64,
    pub listen_token_change: f64,
    /// Per generated latent frame (after the reference): MSE of the
    /// teacher's latent against the clip's (normalised latents) ...
    pub latent_mse_per_frame: Vec<f64>,
    /// The same for the reference latent held still (scale: a teacher that
    /// copies the reference scores about this) ...
    pub still_latent_mse_per_frame: Vec<f64>,
    /// ... and PSNR of the decoded video frames against the real ones, per
    /// video frame after the reference. Where the pixels degrade with the
    /// distance from the reference but the latents do not, the decoder's
    /// causal cache carries the errors forward.
    pub psnr_per_frame: Vec<f64>,
    /// The VAE's own reconstruction per video frame (the decoder alone).
    pub ceiling_psnr_per_frame: Vec<f64>,
    /// The one-step clean-latent error at [`CLEAN_ERROR_SIGMAS`] (module docs).
    pub clean_error_by_sigma: Vec<CleanError>,
    /// The clip's own latents' variance over its frames after the reference
    /// (per value, mean over positions and channels).
    pub clip_temporal_variance: f64,
    /// Per video frame after the reference: the synth's true mouth openness
    /// and the openness `eval` measures on each video (module docs).
    pub mouth_openness: MouthTraces,
    /// Per latent frame after the reference: the true openness (mean of the
    /// frame's video frames) and the lip-sync expert's read-out of each
    /// latent video (only with an expert).
    pub expert_openness: Option<MouthTraces>,
    /// Per latent frame after the reference: the head expert's pitch
    /// traces (only with a head expert).
    pub head_pitch: Option<HeadTraces>,
}

/// Head pitch per latent frame after the reference of one clip (the head
/// expert's units: degrees / `PITCH_SCALE` against the first frame).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeadTraces {
    pub truth: Vec<f32>,
    pub real: Vec<f32>,
    pub generated: Vec<f32>,
    /// Generated with the listen track replaced by silence (zero listen
    /// features).
    pub silent_listen: Vec<f32>,
    /// The synth's listening reactions (the nods' part of `truth`).
    pub reaction: Vec<f32>,
}

/// The head expert's figures over all checked clips (module docs).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HeadCheck {
    pub real: f64,
    pub generated: f64,
    pub silent_listen: f64,
    /// Mean |generated - silent_listen| read-out.
    pub listen_reaction: f64,
    /// Pearson r of `generated - silent_listen` against the synth's
    /// reaction component, over all clips' latent frames (0 when
    /// undefined): does the partner's audio move the head where and as
    /// the synth's listening nods do?
    pub reaction_r: f64,
    /// Mean |reaction| of the truth, the scale `listen_reaction` aims at.
    pub reaction_truth: f64,
}

/// Mouth openness per video frame after the reference of one clip.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MouthTraces {
    pub truth: Vec<f32>,
    pub real: Vec<f32>,
    pub vae_ceiling: Vec<f32>,
    pub generated: Vec<f32>,
    pub swapped_audio: Vec<f32>,
}

/// Lip sync of each video: Pearson r of measured against true mouth
/// openness over the frames of all checked clips, each clip centred on its
/// own means (so identities' different mouth colours do not count).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LipSyncCheck {
    pub real: f64,
    pub vae_ceiling: f64,
    pub generated: f64,
    pub swapped_audio: f64,
}

/// Noise levels of [`ClipCheck::clean_error_by_sigma`].
pub const CLEAN_ERROR_SIGMAS: [f64; 6] = [1.0, 0.85, 0.7, 0.5, 0.3, 0.1];

/// The teacher's one-step clean-latent error at one noise level (mean per
/// latent value, normalised latents).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CleanError {
    pub sigma: f64,
    pub total: f64,
    /// Error of the per-position mean over the generated frames.
    pub static_part: f64,
    /// `total - static_part`: the error that changes from frame to frame.
    pub temporal_part: f64,
    /// Error per value over the latent pixels of the mouth box (grown by
    /// the head's largest motion) with the clip's own audio, and with the
    /// next clip's: where own < swapped, the audio informs the mouth.
    pub mouth_own: f64,
    pub mouth_swapped: f64,
}

/// Every clip and the means.
#[derive(Debug, Clone, Serialize)]
pub struct TeacherCheckReport {
    pub euler_steps: usize,
    pub clips: Vec<ClipCheck>,
    pub generated: Score,
    pub static_reference: Score,
    pub vae_ceiling: Score,
    pub swapped_audio: Score,
    pub audio_effect_mae: f64,
    pub motion_mae: f64,
    pub audio_effect_mouth_psnr_db: f64,
    pub talk_token_change: f64,
    pub listen_token_change: f64,
    /// Means over the clips of [`ClipCheck::latent_mse_per_frame`] and
    /// [`ClipCheck::psnr_per_frame`].
    pub latent_mse_per_frame: Vec<f64>,
    pub still_latent_mse_per_frame: Vec<f64>,
    pub psnr_per_frame: Vec<f64>,
    pub ceiling_psnr_per_frame: Vec<f64>,
    pub clean_error_by_sigma: Vec<CleanError>,
    pub clip_temporal_variance: f64,
    /// Lip sync of the real clips, the VAE's reconstruction, the teacher's
    /// generations and its swapped-audio generations (module docs).
    pub lip_sync: LipSyncCheck,
    /// The same with each clip's least-squares line removed from both
    /// series instead of its mean: the decoded generations drift away
    /// from the neutral mouth over a clip (decoder error builds up), a
    /// trend that hides the mouth's motion from `lip_sync`.
    pub lip_sync_detrended: LipSyncCheck,
    /// The same correlation from the lip-sync expert's read-out of the
    /// latents (`vae_ceiling` = `real`: the clip's own latents); only with
    /// an expert.
    pub lip_expert: Option<LipSyncCheck>,
    /// Head pitch through the head expert; only with one.
    pub head_expert: Option<HeadCheck>,
    pub seconds: f64,
}

/// The descending sigma grid of `steps` Euler steps: uniform in the
/// unwarped noise level, warped by the sampler's `shift`, ending at 0.
pub fn euler_grid(steps: usize, shift: f64) -> Vec<f64> {
    let n = steps.max(1);
    (0..=n).map(|k| warp_sigma(1.0 - k as f64 / n as f64, shift)).collect()
}

/// Generate and score `clips` clips (indices from [`RECON_FIRST_CLIP`] of the
/// teacher's clip source); PNGs into `out` when given.
pub fn check_teacher(
    teacher: &TeacherStage,
    clips: u64,
    euler_steps: usize,
    seed: u64,
    expert: Option<&LipExpert>,
    head_expert: Option<&Readout>,
    out: Option<&Path>,
) -> Result<TeacherCheckReport, TrainError> {
    let t0 = std::time::Instant::now();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .map_err(|e| TrainError::Checkpoint { path: dir.to_path_buf(), msg: e.to_string() })?;
    }
    let vae = teacher.vae();
    let grid = euler_grid(euler_steps, teacher.config().stream.shift);
    let (_, proj, _) = teacher.frozen_modules()?;
    let token_change = |own: &Tensor, other: &Tensor| -> Result<f64, TrainError> {
        let (a, b) = (proj.forward_clip(own)?, proj.forward_clip(other)?);
        let num = (&a - &b)?.abs()?.mean_all()?.to_scalar::<f32>()? as f64;
        let den = a.abs()?.mean_all()?.to_scalar::<f32>()? as f64;
        Ok(num / den.max(1e-12))
    };
    let mut checks = Vec::new();
    for i in 0..clips {
        let index = RECON_FIRST_CLIP + i;
        let clip = teacher.data().clip(index, vae.device())?;
        let sample = teacher.prepare(&clip)?;
        let x0 = &sample.x0;
        let (f, dims) = (x0.dim(2)?, x0.dims().to_vec());
        if f < 2 {
            return Err(TrainError::Invalid("teacher_check needs clips with >= 1 latent frame".into()));
        }
        let mut noise = NoiseSource::new(seed ^ index);
        let eps = noise.sample((dims[0], dims[1], f - 1, dims[3], dims[4]), DType::F32, vae.device())?;
        let x = teacher.integrate_flow(&sample, &eps, &grid, 1, |_, _| ())?;
        let other = teacher.prepare(&teacher.data().clip(index + clips.max(1), vae.device())?)?;
        let swapped_sample = TeacherSample {
            x0: sample.x0.clone(),
            talk_features: other.talk_features.narrow(2, 0, sample.talk_features.dim(2)?)?,
            listen_features: other.listen_features.narrow(2, 0, sample.listen_features.dim(2)?)?,
        };
        let x_swapped = teacher.integrate_flow(&swapped_sample, &eps, &grid, 1, |_, _| ())?;
        let reference = x0.narrow(2, 0, 1)?;
        let decode = |latents: &Tensor| -> Result<Tensor, TrainError> {
            Ok(vae.decode(&vae.latent_norm().denormalize(latents)?)?)
        };
        let generated_video = decode(&Tensor::cat(&[&reference, &x], 2)?)?;
        let swapped_video = decode(&Tensor::cat(&[&reference, &x_swapped], 2)?)?;
        let ceiling_video = decode(x0)?;
        let generated = after_reference(&generated_video)?;
        let swapped = after_reference(&swapped_video)?;
        let ceiling = after_reference(&ceiling_video)?;
        let real = after_reference(&clip.video)?;
        let still = still_reference(&vae.decode(&vae.latent_norm().denormalize(&reference)?)?, real.len())?;
        let (_, _, t, h, w) = clip.video.dims5()?;
        let layout = teacher.data().face_layout(index)?;
        let mouth = layout.with_motion(layout.mouth);
        let neutral = teacher.data().reference_frame(index)?;
        let mouth_latent = teacher.mouth_latent_mask(index, x0.dim(3)?, x0.dim(4)?)?;
        let openness = |video: &Tensor| mouth_openness_trace(video, &layout, &neutral);
        let expert_openness = match expert {
            None => None,
            Some(e) => {
                let factor = teacher.config().vae.scale_factor_spatial;
                let at = mouth_sampling(&clip.mouth_centres, factor, x0.dim(3)?, x0.dim(4)?, vae.device())?;
                let read = |latents: &Tensor| -> Result<Vec<f32>, TrainError> {
                    Ok(e.forward(latents, &reference, &at)?.to_vec1::<f32>()?)
                };
                let real = read(&x0.narrow(2, 1, f - 1)?)?;
                Some(MouthTraces {
                    truth: latent_openness(&clip.mouth_open),
                    vae_ceiling: real.clone(),
                    real,
                    generated: read(&x)?,
                    swapped_audio: read(&x_swapped)?,
                })
            }
        };
        let head_pitch = match head_expert {
            None => None,
            Some(e) => {
                let factor = teacher.config().vae.scale_factor_spatial;
                let (truth, at) = PitchTargets::default().of(
                    teacher.data(),
                    index,
                    factor,
                    (x0.dim(3)?, x0.dim(4)?),
                    vae.device(),
                )?;
                // Silence as the serving path sees it: its voice-activity
                // mask zeroes the listen features of silent audio.
                let silent_sample = TeacherSample {
                    x0: sample.x0.clone(),
                    talk_features: sample.talk_features.clone(),
                    listen_features: sample.listen_features.zeros_like()?,
                };
                let x_silent = teacher.integrate_flow(&silent_sample, &eps, &grid, 1, |_, _| ())?;
                let read = |latents: &Tensor| -> Result<Vec<f32>, TrainError> {
                    Ok(e.forward(latents, &reference, &at)?.to_vec1::<f32>()?)
                };
                let reaction = latent_reaction(&teacher.data().head_truth(index)?.reaction);
                Some(HeadTraces {
                    reaction,
                    truth: truth.to_vec1::<f32>()?,
                    real: read(&x0.narrow(2, 1, f - 1)?)?,
                    generated: read(&x)?,
                    silent_listen: read(&x_silent)?,
                })
            }
        };
        let mouth_openness = MouthTraces {
            truth: clip.mouth_open[1..].to_vec(),
            real: openness(&clip.video)?,
            vae_ceiling: openness(&ceiling_video)?,
            generated: openness(&generated_video)?,
            swapped_audio: openness(&swapped_video)?,
        };
        let score = |v: &[u8]| -> Result<Score, TrainError> {
            Ok(Score {
                psnr_db: psnr_db(&real, v),
                ssim: ssim(&real, v, 3, t - 1, h, w)?,
                mouth_psnr_db: region_psnr_db(&real, v, h, w, mouth),
            })
        };
        checks.push(ClipCheck {
            index,
            generated: score(&generated)?,
            static_reference: score(&still)?,
            vae_ceiling: score(&ceiling)?,
            swapped_audio: score(&swapped)?,
            audio_effect_mae: mean_abs_diff(&generated, &swapped),
            motion_mae: mean_abs_diff(&real, &still),
            audio_effect_mouth_psnr_db: region_psnr_db(&generated, &swapped, h, w, mouth),
            talk_token_change: token_change(&sample.talk_features, &swapped_sample.talk_features)?,
            listen_token_change: token_change(&sample.listen_features, &swapped_sample.listen_features)?,
            latent_mse_per_frame: (0..f - 1)
                .map(|j| latent_mse(&x.narrow(2, j, 1)?, &x0.narrow(2, j + 1, 1)?))
                .collect::<Result<_, _>>()?,
            still_latent_mse_per_frame: (0..f - 1)
                .map(|j| latent_mse(&reference, &x0.narrow(2, j + 1, 1)?))
                .collect::<Result<_, _>>()?,
            psnr_per_frame: per_frame_psnr(&real, &generated, t - 1),
            ceiling_psnr_per_frame: per_frame_psnr(&real, &ceiling, t - 1),
            clean_error_by_sigma: CLEAN_ERROR_SIGMAS
                .iter()
                .map(|&sigma| -> Result<CleanError, TrainError> {
                    let own = teacher.predict_clean(&sample, &eps, sigma)?;
                    let swapped = teacher.predict_clean(&swapped_sample, &eps, sigma)?;
                    Ok(CleanError {
                        mouth_own: masked_error(&own, x0, &mouth_latent)?,
                        mouth_swapped: masked_error(&swapped, x0, &mouth_latent)?,
                        ..clean_error(&own, x0, sigma)?
                    })
                })
                .collect::<Result<_, _>>()?,
            clip_temporal_variance: temporal_variance(&x0.narrow(2, 1, f - 1)?)?,
            mouth_openness,
            expert_openness,
            head_pitch,
        });
        if let Some(dir) = out {
            let path = dir.join(format!("clip_{i:03}.png"));
            frame_rows(&[&real, &generated, &still], t - 1, h, w)
                .save(&path)
                .map_err(|e| TrainError::Checkpoint { path: path.clone(), msg: e.to_string() })?;
        }
    }
    let n = checks.len().max(1) as f64;
    let avg = |pick: &dyn Fn(&ClipCheck) -> f64| checks.iter().map(pick).sum::<f64>() / n;
    let mean = |pick: fn(&ClipCheck) -> Score| Score {
        psnr_db: avg(&|c| pick(c).psnr_db),
        ssim: avg(&|c| pick(c).ssim),
        mouth_psnr_db: avg(&|c| pick(c).mouth_psnr_db),
    };
    Ok(TeacherCheckReport {
        euler_steps,
        generated: mean(|c| c.generated),
        static_reference: mean(|c| c.static_reference),
        vae_ceiling: mean(|c| c.vae_ceiling),
        swapped_audio: mean(|c| c.swapped_audio),
        audio_effect_mae: avg(&|c| c.audio_effect_mae),
        motion_mae: avg(&|c| c.motion_mae),
        audio_effect_mouth_psnr_db: avg(&|c| c.audio_effect_mouth_psnr_db),
        latent_mse_per_frame: mean_per_index(checks.iter().map(|c| &c.latent_mse_per_frame)),
        still_latent_mse_per_frame: mean_per_index(checks.iter().map(|c| &c.still_latent_mse_per_frame)),
        psnr_per_frame: mean_per_index(checks.iter().map(|c| &c.psnr_per_frame)),
        ceiling_psnr_per_frame: mean_per_index(checks.iter().map(|c| &c.ceiling_psnr_per_frame)),
        clean_error_by_sigma: CLEAN_ERROR_SIGMAS
            .iter()
            .enumerate()
            .map(|(k, &sigma)| {
                let part = |pick: fn(&CleanError) -> f64| avg(&|c| pick(&c.clean_error_by_sigma[k]));
                CleanError {
                    sigma,
                    total: part(|e| e.total),
                    static_part: part(|e| e.static_part),
                    temporal_part: part(|e| e.temporal_part),
                    mouth_own: part(|e| e.mouth_own),
                    mouth_swapped: part(|e| e.mouth_swapped),
                }
            })
            .collect(),
        clip_temporal_variance: avg(&|c| c.clip_temporal_variance),
        lip_sync: lip_sync_of(checks.iter().map(|c| &c.mouth_openness), false),
        lip_sync_detrended: lip_sync_of(checks.iter().map(|c| &c.mouth_openness), true),
        lip_expert: expert.map(|_| lip_sync_of(checks.iter().filter_map(|c| c.expert_openness.as_ref()), false)),
        head_expert: head_expert.map(|_| head_check_of(checks.iter().filter_map(|c| c.head_pitch.as_ref()))),
        talk_token_change: avg(&|c| c.talk_token_change),
        listen_token_change: avg(&|c| c.listen_token_change),
        clips: checks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// [`CleanError`] of the estimate `clean` (`[1, z, F-1, h, w]`) against the
/// frames after the reference of `x0`.
fn clean_error(clean: &Tensor, x0: &Tensor, sigma: f64) -> Result<CleanError, TrainError> {
    let f = x0.dim(2)?;
    let err = (clean - x0.narrow(2, 1, f - 1)?)?;
    let total = err.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    let static_part = err.mean_keepdim(2)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    Ok(CleanError { sigma, total, static_part, temporal_part: total - static_part, mouth_own: 0.0, mouth_swapped: 0.0 })
}

/// Squared error per value of `clean` (`[1, z, F-1, h, w]`) against the
/// frames after the reference of `x0`, over the latent pixels of `mask`.
fn masked_error(clean: &Tensor, x0: &Tensor, mask: &Tensor) -> Result<f64, TrainError> {
    let f = x0.dim(2)?;
    let err = (clean - x0.narrow(2, 1, f - 1)?)?.sqr()?.broadcast_mul(mask)?;
    let count = mask.sum_all()?.to_scalar::<f32>()? as f64 * (clean.elem_count() / mask.elem_count()) as f64;
    Ok(err.sum_all()?.to_scalar::<f32>()? as f64 / count.max(1.0))
}

/// Variance over the frame axis of `latents` (`[1, z, F, h, w]`), mean per value.
fn temporal_variance(latents: &Tensor) -> Result<f64, TrainError> {
    let centred = latents.broadcast_sub(&latents.mean_keepdim(2)?)?;
    Ok(centred.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
}

/// The mouth openness `eval` measures (tracked mouth box against the
/// identity's closed-mouth `neutral` frame) on each frame after the
/// reference of `video` (`[1, 3, T, H, W]` in [-1, 1]).
fn mouth_openness_trace(video: &Tensor, layout: &FaceLayout, neutral: &RgbFrame) -> Result<Vec<f32>, TrainError> {
    let invalid = |e: crate::eval::EvalError| TrainError::Invalid(format!("mouth openness: {e}"));
    let frames = video_to_frames(video).map_err(|e| TrainError::Invalid(format!("mouth openness: {e}")))?;
    let mut probe = StreamProbe::new(layout.clone(), neutral.clone()).map_err(invalid)?;
    for frame in frames.iter().skip(1) {
        probe.push(frame).map_err(invalid)?;
    }
    Ok(probe.openness())
}

/// [`LipSyncCheck`] of every clip's traces, each clip's series centred
/// on their means (`detrend`: their least-squares lines removed instead).
fn lip_sync_of<'a>(traces: impl Iterator<Item = &'a MouthTraces> + Clone, detrend: bool) -> LipSyncCheck {
    LipSyncCheck {
        real: within_clip_lip_r(traces.clone(), |m| &m.real, detrend),
        vae_ceiling: within_clip_lip_r(traces.clone(), |m| &m.vae_ceiling, detrend),
        generated: within_clip_lip_r(traces.clone(), |m| &m.generated, detrend),
        swapped_audio: within_clip_lip_r(traces, |m| &m.swapped_audio, detrend),
    }
}

/// [`within_clip_r`] of `pick`ed measured openness against the truth.
fn within_clip_lip_r<'a>(
    traces: impl Iterator<Item = &'a MouthTraces>,
    pick: fn(&MouthTraces) -> &Vec<f32>,
    detrend: bool,
) -> f64 {
    within_clip_r(traces.map(|m| (m.truth.as_slice(), pick(m).as_slice())), detrend)
}

/// [`HeadCheck`] over the clips' head traces.
fn head_check_of<'a>(traces: impl Iterator<Item = &'a HeadTraces> + Clone) -> HeadCheck {
    let r = |pick: fn(&HeadTraces) -> &Vec<f32>| {
        within_clip_r(traces.clone().map(|h| (h.truth.as_slice(), pick(h).as_slice())), false)
    };
    let (mut contrast, mut reaction) = (Vec::new(), Vec::new());
    for h in traces.clone() {
        for ((a, b), t) in h.generated.iter().zip(&h.silent_listen).zip(&h.reaction) {
            contrast.push((a - b) as f64);
            reaction.push(*t as f64);
        }
    }
    let mean_abs = |v: &[f64]| v.iter().map(|x| x.abs()).sum::<f64>() / v.len().max(1) as f64;
    HeadCheck {
        real: r(|h| &h.real),
        generated: r(|h| &h.generated),
        silent_listen: r(|h| &h.silent_listen),
        listen_reaction: mean_abs(&contrast),
        reaction_r: crate::eval::lip_sync::pearson(&contrast, &reaction).unwrap_or(0.0),
        reaction_truth: mean_abs(&reaction),
    }
}

/// Pearson r of measured against true series over every clip's frames,
/// each clip's `(truth, measured)` reduced to their residuals from their
/// mean (or, with `detrend`, their least-squares line): 0 when undefined.
fn within_clip_r<'a>(pairs: impl Iterator<Item = (&'a [f32], &'a [f32])>, detrend: bool) -> f64 {
    let (mut truth, mut measured) = (Vec::new(), Vec::new());
    for (t, m) in pairs {
        let n = t.len().min(m.len());
        truth.extend(residuals(&t[..n], detrend));
        measured.extend(residuals(&m[..n], detrend));
    }
    pearson(&truth, &measured).unwrap_or(0.0)
}

/// `v` minus its mean, or minus its least-squares line over the index.
fn residuals(v: &[f32], detrend: bool) -> Vec<f64> {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let t_mean = (n - 1.0) / 2.0;
    let (mut cov, mut var) = (0.0, 0.0);
    for (t, &x) in v.iter().enumerate() {
        cov += (t as f64 - t_mean) * (x as f64 - mean);
        var += (t as f64 - t_mean).powi(2);
    }
    let slope = if detrend && var > 0.0 { cov / var } else { 0.0 };
    v.iter().enumerate().map(|(t, &x)| x as f64 - mean - slope * (t as f64 - t_mean)).collect()
}

/// Mean squared difference of two latent tensors.
fn latent_mse(a: &Tensor, b: &Tensor) -> Result<f64, TrainError> {
    Ok((a - b)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64)
}

/// PSNR of each of `frames` frames of `b` against `a`, both u8 in
/// (C, T, H, W) order.
fn per_frame_psnr(a: &[u8], b: &[u8], frames: usize) -> Vec<f64> {
    let frames = frames.max(1);
    let plane = a.len() / 3 / frames;
    (0..frames)
        .map(|t| {
            let (mut sq, mut n) = (0f64, 0usize);
            for c in 0..3 {
                let start = (c * frames + t) * plane;
                for (x, y) in a[start..start + plane].iter().zip(&b[start..start + plane]) {
                    sq += (f64::from(*x) - f64::from(*y)).powi(2);
                    n += 1;
                }
            }
            psnr_from_mse(sq / n.max(1) as f64)
        })
        .collect()
}

/// Element-wise mean of equally long series (the shortest length wins).
fn mean_per_index<'a>(series: impl Iterator<Item = &'a Vec<f64>> + Clone) -> Vec<f64> {
    let n = series.clone().count().max(1) as f64;
    let len = series.clone().map(Vec::len).min().unwrap_or(0);
    (0..len).map(|i| series.clone().map(|s| s[i]).sum::<f64>() / n).collect()
}

/// Mean absolute difference of two equally long u8 videos (0-255 levels).
fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>() / n as f64
}

/// `[1, 3, T, H, W]` in [-1, 1] -> u8 (C, T-1, H, W): the frames after frame 0.
fn after_reference(video: &Tensor) -> Result<Vec<u8>, TrainError> {
    let t = video.dim(2)?;
    let rest = video.narrow(2, 1, t - 1)?;
    let v: Vec<f32> = ((rest.flatten_all()? + 1.0)? * 127.5)?.to_vec1()?;
    Ok(v.iter().map(|x| x.round().clamp(0.0, 255.0) as u8).collect())
}

/// The decoded reference frame `[1, 3, 1, H, W]` repeated to `len` u8 values
/// in (C, T, H, W) order.
fn still_reference(frame: &Tensor, len: usize) -> Result<Vec<u8>, TrainError> {
    let v: Vec<f32> = ((frame.flatten_all()? + 1.0)? * 127.5)?.to_vec1()?;
    let plane = v.len() / 3;
    let frames = len / v.len().max(1);
    let mut out = Vec::with_capacity(len);
    for c in 0..3 {
        for _ in 0..frames {
            out.extend(v[c * plane..(c + 1) * plane].iter().map(|x| x.round().clamp(0.0, 255.0) as u8));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error shared by every frame is all static; one that flips sign
    /// from frame to frame is all temporal.
    #[test]
    fn clean_error_splits_static_from_temporal() -> anyhow::Result<()> {
        let dev = candle_core::Device::Cpu;
        let x0 = Tensor::randn(0f32, 1.0, (1, 2, 3, 2, 2), &dev)?;
        let rest = x0.narrow(2, 1, 2)?;
        let shared = clean_error(&(&rest + 0.5)?, &x0, 1.0)?;
        assert!((shared.total - 0.25).abs() < 1e-5 && (shared.static_part - 0.25).abs() < 1e-5);
        assert!(shared.temporal_part.abs() < 1e-5);
        let flip = Tensor::new(&[0.5f32, -0.5], &dev)?.reshape((1, 1, 2, 1, 1))?;
        let flipping = clean_error(&rest.broadcast_add(&flip)?, &x0, 0.5)?;
        assert!(flipping.static_part.abs() < 1e-5 && (flipping.temporal_part - 0.25).abs() < 1e-5);
        let steps = Tensor::new(&[1f32, 3.0], &dev)?.reshape((1, 1, 2, 1, 1))?.broadcast_as((1, 2, 2, 2, 2))?;
        assert!((temporal_variance(&steps.contiguous()?)? - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn euler_grid_runs_from_pure_noise_to_clean() {
        let g = euler_grid(4, 5.0);
        assert_eq!(g.len(), 5);
        assert!((g[0] - 1.0).abs() < 1e-12 && g[4] == 0.0);
        assert!(g.windows(2).all(|w| w[0] > w[1]), "{g:?}");
        // The shift keeps more of the steps at high noise.
        assert!(g[2] > 0.5, "{g:?}");
    }

    #[test]
    fn per_frame_psnr_scores_each_frame_over_all_channels() {
        // 3 channels x 2 frames x 2 pixels; frame 1 differs by 10 everywhere.
        let a = vec![0u8; 12];
        let mut b = vec![0u8; 12];
        for c in 0..3 {
            b[c * 4 + 2] = 10;
            b[c * 4 + 3] = 10;
        }
        let p = per_frame_psnr(&a, &b, 2);
        assert_eq!(p[0], 99.0);
        assert!((p[1] - 10.0 * (255.0f64 * 255.0 / 100.0).log10()).abs() < 1e-9, "{p:?}");
        assert_eq!(mean_per_index([vec![1.0, 2.0], vec![3.0, 4.0, 5.0]].iter()), vec![2.0, 3.0]);
    }

    #[test]
    fn still_reference_repeats_each_channel_plane() -> anyhow::Result<()> {
        // 3 channels of a 1x2 frame: values -1, 0, 1 per channel.
        let frame = Tensor::from_vec(vec![-1f32, -1., 0., 0., 1., 1.], (1, 3, 1, 1, 2), &candle_core::Device::Cpu)?;
        let v = still_reference(&frame, 12)?;
        assert_eq!(v, [0, 0, 0, 0, 128, 128, 128, 128, 255, 255, 255, 255]);
        Ok(())
    }

    /// Each clip is centred on its own means: a measured trace that follows
    /// the truth up to a per-clip offset scores 1, one that does not scores
    /// about 0.
    #[test]
    fn lip_r_is_taken_within_clips() {
        let clip = |truth: Vec<f32>, generated: Vec<f32>| MouthTraces { truth, generated, ..Default::default() };
        let a = vec![0.0, 0.3, 0.1, 0.5, 0.0];
        let b = vec![0.2, 0.0, 0.4, 0.1, 0.3];
        // Offsets of +0.5 and -0.2 per clip: pooled raw values correlate less.
        let follows = [
            clip(a.clone(), a.iter().map(|x| x + 0.5).collect()),
            clip(b.clone(), b.iter().map(|x| x - 0.2).collect()),
        ];
        assert!((within_clip_lip_r(follows.iter(), |m| &m.generated, false) - 1.0).abs() < 1e-9);
        let still = [clip(a.clone(), vec![0.5; 5]), clip(b.clone(), vec![0.1; 5])];
        assert_eq!(within_clip_lip_r(still.iter(), |m| &m.generated, false), 0.0);
        let inverted = [
            clip(a.clone(), a.iter().map(|x| 1.0 - x).collect()),
            clip(b.clone(), b.iter().map(|x| 1.0 - x).collect()),
        ];
        assert!((within_clip_lip_r(inverted.iter(), |m| &m.generated, false) + 1.0).abs() < 1e-9);
        // A drift added to the measured series: centring keeps it, detrending removes it.
        let drifting = [clip(a.clone(), a.iter().enumerate().map(|(t, x)| x + 0.3 * t as f32).collect())];
        assert!(within_clip_lip_r(drifting.iter(), |m| &m.generated, false) < 0.9);
        assert!((within_clip_lip_r(drifting.iter(), |m| &m.generated, true) - 1.0).abs() < 1e-6);
    }

    /// The mouth error is the mean over the masked latent pixels only (the
    /// mask itself: `teacher_stage`'s `mouth_weights_cover_the_mouth_...`).
    #[test]
    fn masked_error_counts_the_box_only() -> anyhow::Result<()> {
        let dev = candle_core::Device::Cpu;
        let x0 = Tensor::zeros((1, 2, 3, 4, 4), DType::F32, &dev)?;
        // Latent pixel row 0, column 1.
        let mut cells = vec![0f32; 16];
        cells[1] = 1.0;
        let mask = Tensor::from_vec(cells, (1, 1, 1, 4, 4), &dev)?;
        // An error of 2 on that pixel, 1 everywhere else.
        let mut err = vec![1f32; 2 * 2 * 16];
        for c in 0..2 {
            for t in 0..2 {
                err[(c * 2 + t) * 16 + 1] = 2.0;
            }
        }
        let clean = Tensor::from_vec(err, (1, 2, 2, 4, 4), &dev)?;
        assert!((masked_error(&clean, &x0, &mask)? - 4.0).abs() < 1e-6);
        Ok(())
    }
}
