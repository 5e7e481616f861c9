//! Smoke tests of the training stages on the tiny config: the loss is
//! finite and decreases over a few steps on one fixed clip, and a run
//! resumes from its checkpoint at the saved step (for the two-network
//! stages DMD and GAN: both networks and both optimizers).

use streamavatar::config::ModelConfig;
use streamavatar::train::checkpoint;
use streamavatar::train::data::{ClipSource, WindowChoice};
use streamavatar::train::discriminator::DiscriminatorConfig;
use streamavatar::train::dmd_stage::{DmdOptions, DmdStage};
use streamavatar::train::gan_stage::{GanOptions, GanStage};
use streamavatar::train::ode_init_stage::OdeInitStage;
use streamavatar::train::optim::AdamWConfig;
use streamavatar::train::params::ParamStore;
use streamavatar::train::runner::{run, RunOptions, Stage};
use streamavatar::train::teacher_stage::{FrozenModules, TeacherStage};
use streamavatar::train::vae_stage::VaeStage;

fn opts(out: &std::path::Path, steps: u64, lr: f64) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        steps,
        resume: true,
        save_every: 0,
        seed: 7,
        config_name: "tiny".into(),
        optim: AdamWConfig { lr, weight_decay: 0.0, ..Default::default() },
        fixed_data: true,
        max_seconds: None,
        init_from: None,
        init_skip: Vec::new(),
    }
}

fn source() -> ClipSource {
    ClipSource { seed: 3, size: 64, latent_frames: 2, identities: 8, max_offset_s: 2.0, windows: WindowChoice::Motion }
}

fn assert_decreases(losses: &[(u64, f32)]) {
    assert!(losses.iter().all(|(_, l)| l.is_finite()), "{losses:?}");
    let first = losses.first().expect("losses").1;
    let last = losses.last().expect("losses").1;
    assert!(last < first * 0.95, "loss did not decrease: {losses:?}");
}

/// Every variable of `params` gets a nonzero gradient in `grads`.
fn assert_every_parameter_has_a_gradient(
    params: &ParamStore,
    grads: &candle_core::backprop::GradStore,
) -> anyhow::Result<()> {
    let vars = params.named_vars();
    let mut frozen = Vec::new();
    for (name, var) in &vars {
        let norm = match grads.get(var.as_tensor()) {
            Some(g) => g.sqr()?.sum_all()?.to_scalar::<f32>()?,
            None => 0.0,
        };
        if norm == 0.0 {
            frozen.push(name.clone());
        }
    }
    assert!(frozen.is_empty(), "{} of {} parameters get no gradient: {frozen:?}", frozen.len(), vars.len());
    Ok(())
}

#[test]
fn vae_stage_loss_decreases_and_resumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = ModelConfig::tiny();
    let mut st = VaeStage::new(cfg.clone(), source(), 1, Default::default(), 7);
    let r = run(&mut st, &opts(dir.path(), 8, 3e-3))?;
    assert_eq!((r.first_step, r.last_step), (0, 8));
    assert_decreases(&r.losses);
    // A fresh stage resumes at step 8 and continues to 10.
    let mut again = VaeStage::new(cfg, source(), 1, Default::default(), 7);
    let r2 = run(&mut again, &opts(dir.path(), 10, 3e-3))?;
    assert_eq!((r2.first_step, r2.last_step), (8, 10));
    assert!(r2.losses[0].1 < r.losses[0].1, "resumed loss {:?} vs first {:?}", r2.losses, r.losses);
    // A spent time budget stops after one step and checkpoints it.
    let mut timed = VaeStage::new(ModelConfig::tiny(), source(), 1, Default::default(), 7);
    let r3 = run(&mut timed, &RunOptions { max_seconds: Some(0.0), ..opts(dir.path(), 100, 3e-3) })?;
    assert_eq!((r3.first_step, r3.last_step), (10, 11));
    assert_eq!(checkpoint::load_state(dir.path())?.step, 11);
    vae_checkpoint_carries_latent_statistics_through_export(&ModelConfig::tiny(), dir.path())
}

/// `--freeze-encoder`: resumed on the decoder only, a VAE keeps its
/// encoder, `quant_conv` and latent statistics bit for bit (so its latents
/// and the DiT stages' clip pools stay valid: the pool fingerprint of the
/// encoding tensors is unchanged) while its decoder learns.
#[test]
fn vae_with_a_frozen_encoder_trains_the_decoder_only() -> anyhow::Result<()> {
    use streamavatar::train::sample_store::{is_vae_encoding_tensor, FrozenSource};
    let dir = tempfile::tempdir()?;
    let (whole, decoder_only) = (dir.path().join("whole"), dir.path().join("decoder_only"));
    let mut st = VaeStage::new(ModelConfig::tiny(), source(), 1, Default::default(), 7);
    run(&mut st, &opts(&whole, 3, 3e-3))?;
    std::fs::create_dir_all(&decoder_only)?;
    for f in ["params.safetensors", "optim.safetensors", "state.json"] {
        std::fs::copy(whole.join(f), decoder_only.join(f))?;
    }
    let mut frozen = VaeStage::new(ModelConfig::tiny(), source(), 1, Default::default(), 7).with_frozen_encoder();
    let r = run(&mut frozen, &RunOptions { save_every: 1, ..opts(&decoder_only, 6, 3e-3) })?;
    assert_eq!((r.first_step, r.last_step), (3, 6));

    let before = candle_core::safetensors::load(whole.join("params.safetensors"), &candle_core::Device::Cpu)?;
    let after = candle_core::safetensors::load(decoder_only.join("params.safetensors"), &candle_core::Device::Cpu)?;
    assert_eq!(before.len(), after.len());
    let mut decoder_moved = false;
    for (name, t) in &before {
        let d = (t - &after[name])?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        if is_vae_encoding_tensor(name) {
            assert_eq!(d, 0.0, "`{name}` changed with the encoder frozen");
        } else if d > 0.0 {
            decoder_moved = true;
        }
    }
    assert!(decoder_moved, "no decoder tensor moved");
    assert!(before.contains_key("latents_mean"));
    let fingerprint = |p: &std::path::Path| FrozenSource::of_tensors(Some(p), 0, is_vae_encoding_tensor);
    assert_eq!(fingerprint(&whole.join("params.safetensors"))?, fingerprint(&decoder_only.join("params.safetensors"))?);
    assert_ne!(
        FrozenSource::of(Some(&whole.join("params.safetensors")), 0)?,
        FrozenSource::of(Some(&decoder_only.join("params.safetensors")), 0)?
    );
    Ok(())
}

/// `init_from`: a VAE with a wider decoder starts from a trained VAE's
/// encoder (loaded exactly) and a fresh decoder (the shapes differ).
#[test]
fn vae_with_a_wider_decoder_warm_starts_from_a_trained_encoder() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let narrow = dir.path().join("narrow");
    let mut st = VaeStage::new(ModelConfig::tiny(), source(), 1, Default::default(), 7);
    run(&mut st, &opts(&narrow, 2, 3e-3))?;
    let mut wide_cfg = ModelConfig::tiny();
    wide_cfg.vae.decoder_base_dim *= 2;
    let mut wide = VaeStage::new(wide_cfg, source(), 1, Default::default(), 8);
    let no_step =
        RunOptions { init_from: Some(narrow.join("params.safetensors")), ..opts(&dir.path().join("wide"), 0, 3e-3) };
    run(&mut wide, &no_step)?;
    let (from, to) = (ParamStore::new(0, &candle_core::Device::Cpu), wide.params());
    from.load(&narrow.join("params.safetensors"))?;
    let from: std::collections::HashMap<_, _> = from.named_vars().into_iter().collect();
    let (mut same, mut fresh) = (0, 0);
    for (name, var) in to.named_vars() {
        let Some(src) = from.get(&name) else { continue };
        if src.dims() != var.dims() {
            assert!(name.starts_with("decoder."), "{name} changed shape");
            fresh += 1;
            continue;
        }
        let diff = (src.as_tensor() - var.as_tensor())?.abs()?.max_all()?.to_scalar::<f32>()?;
        if name.starts_with("encoder.") {
            assert_eq!(diff, 0.0, "{name} was not loaded");
        }
        same += 1;
    }
    assert!(same > 10 && fresh > 10, "{same} loaded, {fresh} fresh");
    // A file that matches nothing is an error, not a silent fresh start.
    let mut other = VaeStage::new(ModelConfig::tiny(), source(), 1, Default::default(), 9);
    let dit_file = dir.path().join("dit.safetensors");
    let dit = ParamStore::new(0, &candle_core::Device::Cpu);
    dit.insert("blocks.0.x", &candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)?)?;
    dit.save(&dit_file)?;
    let bad = RunOptions { init_from: Some(dit_file), ..opts(&dir.path().join("bad"), 0, 3e-3) };
    assert!(run(&mut other, &bad).is_err());
    Ok(())
}

/// `init_from` into a VAE of a wider latent (`z_dim` 8 -> 16): the trained
/// channels go first and the new ones are cut off from them, so the
/// widened VAE reconstructs exactly as the trained one
/// (`train::latent_widening`); the new channels are live (non-zero).
#[test]
fn vae_with_a_wider_latent_warm_starts_computing_the_same_reconstruction() -> anyhow::Result<()> {
    use streamavatar::model::vae::WanVae;
    let dir = tempfile::tempdir()?;
    let narrow = dir.path().join("narrow");
    let narrow_cfg = ModelConfig::tiny();
    let mut st = VaeStage::new(narrow_cfg.clone(), source(), 1, Default::default(), 7);
    run(&mut st, &opts(&narrow, 3, 3e-3))?;
    let mut wide_cfg = ModelConfig::tiny();
    let z = 2 * narrow_cfg.vae.z_dim;
    wide_cfg.vae.z_dim = z;
    wide_cfg.vae.latents_mean = vec![0.0; z];
    wide_cfg.vae.latents_std = vec![1.0; z];
    wide_cfg.dit.in_channels = z;
    wide_cfg.dit.out_channels = z;
    wide_cfg.validate()?;
    let mut wide = VaeStage::new(wide_cfg.clone(), source(), 1, Default::default(), 8);
    let no_step =
        RunOptions { init_from: Some(narrow.join("params.safetensors")), ..opts(&dir.path().join("wide"), 0, 3e-3) };
    run(&mut wide, &no_step)?;

    let dev = candle_core::Device::Cpu;
    let trained = ParamStore::new(0, &dev);
    trained.load(&narrow.join("params.safetensors"))?;
    let a = WanVae::new(&narrow_cfg.vae, trained.var_builder())?;
    let b = WanVae::new(&wide_cfg.vae, wide.params().var_builder())?;
    let video = candle_core::Tensor::rand(-1f32, 1f32, (1, 3, 5, 64, 64), &dev)?;
    let (mu_a, mu_b) = (a.encode(&video)?.mu, b.encode(&video)?.mu);
    let old = narrow_cfg.vae.z_dim;
    let same_mu = (mu_b.narrow(1, 0, old)? - &mu_a)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(same_mu < 1e-4, "trained latent channels moved by {same_mu}");
    let new_mu = mu_b.narrow(1, old, z - old)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(new_mu > 1e-3, "new latent channels are dead ({new_mu})");
    let (ra, rb) = (a.decode(&mu_a)?, b.decode(&mu_b)?);
    let diff = (ra - rb)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-4, "the widened VAE reconstructs differently (max diff {diff})");
    Ok(())
}

/// The VAE checkpoint holds the measured `latents_mean` / `latents_std`; a
/// frozen VAE loaded from it (what stages 2+ do) normalises with them, and
/// `train export` writes them into `vae.safetensors`, which then passes
/// `weights check` against the config.
fn vae_checkpoint_carries_latent_statistics_through_export(
    cfg: &ModelConfig,
    vae_dir: &std::path::Path,
) -> anyhow::Result<()> {
    use streamavatar::model::vae::{LATENTS_MEAN, LATENTS_STD};
    let vae_file = vae_dir.join("params.safetensors");
    let tensors = candle_core::safetensors::load(&vae_file, &candle_core::Device::Cpu)?;
    let mean: Vec<f32> = tensors[LATENTS_MEAN].to_vec1()?;
    let std: Vec<f32> = tensors[LATENTS_STD].to_vec1()?;
    assert_eq!((mean.len(), std.len()), (cfg.vae.z_dim, cfg.vae.z_dim));
    assert!(mean.iter().all(|m| m.is_finite()) && std.iter().all(|s| s.is_finite() && *s > 0.0), "{mean:?} {std:?}");
    // A trained (even briefly) VAE's latents are not exactly N(0, 1).
    assert!(std.iter().any(|s| (s - 1.0).abs() > 1e-3), "{std:?}");

    let frozen = FrozenModules::load(cfg, Some(&vae_file), None, 7)?;
    let z = cfg.vae.z_dim;
    let at = |v: Vec<f32>| candle_core::Tensor::from_vec(v, (1, z, 1, 1, 1), &candle_core::Device::Cpu);
    let one_std: Vec<f32> = mean.iter().zip(&std).map(|(m, s)| m + s).collect();
    let norm = frozen.vae.latent_norm();
    let at_mean: Vec<f32> = norm.normalize(&at(mean.clone())?)?.flatten_all()?.to_vec1()?;
    let at_one: Vec<f32> = norm.normalize(&at(one_std)?)?.flatten_all()?.to_vec1()?;
    assert!(at_mean.iter().all(|v| v.abs() < 1e-4), "{at_mean:?}");
    assert!(at_one.iter().all(|v| (v - 1.0).abs() < 1e-3), "{at_one:?}");

    // Export with a seeded DiT (every tensor the config expects) and check it.
    let mut teacher = TeacherStage::new(cfg.clone(), frozen, source(), 7);
    teacher.init()?;
    let dit_file = vae_dir.join("dit_params.safetensors");
    teacher.params().save(&dit_file)?;
    let out = vae_dir.join("export");
    let sources = streamavatar::train::export::ExportSources {
        vae: vae_file,
        dit: dit_file,
        wav2vec2: None,
        wav2vec2_seed: streamavatar::train::export::frozen_wav2vec2_seed(7),
    };
    streamavatar::train::export::export(cfg, &sources, &out)?;
    let exported = candle_core::safetensors::load(out.join("vae.safetensors"), &candle_core::Device::Cpu)?;
    assert_eq!(exported[LATENTS_STD].to_vec1::<f32>()?, std);
    let files: Vec<std::path::PathBuf> =
        ["dit", "streamavatar_audio", "vae", "wav2vec2"].iter().map(|n| out.join(format!("{n}.safetensors"))).collect();
    let weights = streamavatar::model::weights::ModelWeights::open(&files)?;
    let report = weights.check(&streamavatar::model::weights::expected_tensors(cfg).map_err(anyhow::Error::msg)?);
    assert!(report.ok(), "{report}");
    Ok(())
}

/// The light decoder learns to decode a (frozen, random) VAE's latents of
/// a fixed clip; its checkpoint is a light-decoder weights file the
/// generator recognises (`decoder.<index>.*`) and streams with.
#[test]
fn light_decoder_stage_loss_decreases_and_its_checkpoint_decodes() -> anyhow::Result<()> {
    use streamavatar::train::light_decoder_stage::{LightDecoderStage, LightLossWeights};
    let dir = tempfile::tempdir()?;
    let cfg = ModelConfig::tiny();
    let frozen = FrozenModules::load(&cfg, None, None, 7)?;
    // Every loss term on, the face and temporal ones included.
    let weights = LightLossWeights { face: 3.0, temporal: 3.0, face_temporal: 1.0, ..Default::default() };
    let mut st = LightDecoderStage::new(cfg.clone(), frozen.vae, source(), 1, weights, 7);
    let r = run(&mut st, &opts(dir.path(), 8, 3e-3))?;
    assert_eq!((r.first_step, r.last_step), (0, 8));
    assert_decreases(&r.losses);

    // The checkpoint's params file is a light-decoder weights file: it is
    // recognised by its names and streams video.
    use streamavatar::model::weights::{Component, ModelWeights};
    let weights = ModelWeights::open(&[dir.path().join("params.safetensors")])?;
    assert!(weights.has(Component::LightDecoder));
    let vb = weights.var_builder(Component::LightDecoder, candle_core::DType::F32, &candle_core::Device::Cpu);
    let decoder = streamavatar::model::vae::LightDecoder::new(&cfg.light_decoder, &cfg.vae, vb)?;
    let z = candle_core::Tensor::randn(0f32, 1.0, (1, cfg.vae.z_dim, 4, 2, 2), &candle_core::Device::Cpu)?;
    let video = decoder.streaming().decode_chunk(&z)?;
    assert_eq!(video.dims(), &[1, 3, 13, 32, 32]);
    Ok(())
}

#[test]
fn teacher_stage_loss_decreases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = ModelConfig::tiny();
    let frozen = FrozenModules::load(&cfg, None, None, 7)?;
    let mut st = TeacherStage::new(cfg, frozen, source(), 7);
    // Teacher noise differs per step; average the first / last halves.
    let r = run(&mut st, &opts(dir.path(), 16, 3e-3))?;
    assert!(r.losses.iter().all(|(_, l)| l.is_finite()));
    let mean = |s: &[(u64, f32)]| s.iter().map(|x| x.1).sum::<f32>() / s.len() as f32;
    let (a, b) = r.losses.split_at(8);
    assert!(mean(b) < mean(a), "teacher loss did not decrease: {:?}", r.losses);
    Ok(())
}

/// Each latent expert (lip sync, head pitch) fits its read-out on fixed
/// latents (loss falls), and with it the teacher's loss gains a finite
/// part of the expert's name whose gradient reaches the DiT.
#[test]
fn latent_experts_fit_and_their_losses_reach_the_teacher() -> anyhow::Result<()> {
    use streamavatar::train::head_expert::{HeadExpertStage, PitchTargets};
    use streamavatar::train::latent_readout::ReadoutTargets;
    use streamavatar::train::lip_expert::{LipExpertStage, OpennessTargets};
    let dir = tempfile::tempdir()?;
    let cfg = ModelConfig::tiny();
    let dev = candle_core::Device::Cpu;
    let frozen = FrozenModules::load(&cfg, None, None, 7)?;
    let mut lip = LipExpertStage::new(TeacherStage::new(cfg.clone(), frozen, source(), 7), 1, 0.0, 7)?;
    assert_decreases(&run(&mut lip, &opts(&dir.path().join("lip"), 20, 3e-3))?.losses);
    let frozen = FrozenModules::load(&cfg, None, None, 7)?;
    let mut head = HeadExpertStage::new(TeacherStage::new(cfg.clone(), frozen, source(), 7), 1, 0.0, 7)?;
    assert_decreases(&run(&mut head, &opts(&dir.path().join("head"), 20, 3e-3))?.losses);
    let lip = OpennessTargets::load(&dir.path().join("lip/params.safetensors"), cfg.vae.z_dim, &dev)?;
    let head = PitchTargets::load(&dir.path().join("head/params.safetensors"), cfg.vae.z_dim, &dev)?;
    // A lip expert's file is no head expert.
    assert!(PitchTargets::load(&dir.path().join("lip/params.safetensors"), cfg.vae.z_dim, &dev).is_err());
    let frozen = FrozenModules::load(&cfg, None, None, 7)?;
    let mut teacher =
        TeacherStage::new(cfg, frozen, source(), 7).with_lip_sync(lip, 10.0)?.with_head_motion(head, 10.0)?;
    teacher.init()?;
    let (loss, parts) = teacher.loss(0, &mut 0)?;
    for name in ["lip_sync", "head_motion"] {
        let part = parts.iter().find(|(n, _)| *n == name).map(|p| p.1);
        assert!(part.is_some_and(f32::is_finite), "{name}: {parts:?}");
    }
    let grads = loss.backward()?;
    let reached = teacher.store().named_vars().iter().filter(|(_, v)| grads.get(v.as_tensor()).is_some()).count();
    assert!(reached > 0);
    Ok(())
}

#[test]
fn teacher_stage_on_a_clip_pool_prepares_each_clip_once() -> anyhow::Result<()> {
    use streamavatar::train::sample_store::{FrozenSource, SampleKey, SampleStore};
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("samples");
    let cfg = ModelConfig::tiny();
    let pooled = |cfg: &ModelConfig| -> anyhow::Result<TeacherStage> {
        let key =
            SampleKey::new("tiny", FrozenSource::Seeded { seed: 6 }, FrozenSource::Seeded { seed: 5 }, &source(), 2);
        let frozen = FrozenModules::load(cfg, None, None, 7)?;
        Ok(TeacherStage::new(cfg.clone(), frozen, source(), 7)
            .with_samples(SampleStore::pooled(key, Some(cache.clone()))?))
    };
    let mut st = pooled(&cfg)?;
    let r = run(&mut st, &RunOptions { fixed_data: false, ..opts(&dir.path().join("run"), 5, 1e-3) })?;
    assert!(r.losses.iter().all(|(_, l)| l.is_finite()), "{:?}", r.losses);
    assert_eq!(checkpoint::load_state(&dir.path().join("run"))?.data_cursor, 5);
    // Five steps over a pool of two clips: two prepared samples, reused.
    let files = std::fs::read_dir(&cache)?
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".safetensors")));
    assert_eq!(files.count(), 2);
    assert!(std::rc::Rc::ptr_eq(&st.sample(1)?, &st.sample(3)?));
    // Another process reads the same latents back from the folder.
    let mut again = pooled(&cfg)?;
    let (a, b) = (st.sample(4)?, again.sample(0)?);
    assert_eq!((a.x0.clone() - b.x0.clone())?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
    Ok(())
}

#[test]
fn ode_init_stage_loss_decreases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = ModelConfig::tiny();
    let frozen = FrozenModules::load(&cfg, None, None, 7)?;
    let teacher = TeacherStage::new(cfg, frozen, source(), 7);
    let mut st = OdeInitStage::new(teacher, 2, 7)?;
    // 3 student sigmas cycle; compare the same sigma 3 steps apart.
    let r = run(&mut st, &opts(dir.path(), 9, 3e-3))?;
    assert!(r.losses.iter().all(|(_, l)| l.is_finite()));
    let first: f32 = r.losses[..3].iter().map(|x| x.1).sum();
    let last: f32 = r.losses[6..].iter().map(|x| x.1).sum();
    assert!(last < first, "ode init loss did not decrease: {:?}", r.losses);
    Ok(())
}

/// Clips of 6 latent frames after the reference: two chunks of 3 in the
/// tiny config, so student forcing goes through the KV cache. Every clip
/// starts its conversation (no window offset): the DMD / GAN checks train a
/// critic for a few updates and measure it on clip 0, which needs clips
/// alike (`source()` covers the windows).
fn two_chunk_source() -> ClipSource {
    ClipSource { seed: 3, size: 64, latent_frames: 6, identities: 8, max_offset_s: 0.0, windows: WindowChoice::Random }
}

fn teacher(source: ClipSource) -> anyhow::Result<TeacherStage> {
    let cfg = ModelConfig::tiny();
    let frozen = FrozenModules::load(&cfg, None, None, 7)?;
    Ok(TeacherStage::new(cfg, frozen, source, 7))
}

/// Max |a - b| over every variable the two stores share (by name).
fn max_diff(a: &ParamStore, b: &ParamStore) -> anyhow::Result<f32> {
    let other: std::collections::HashMap<String, candle_core::Var> = b.named_vars().into_iter().collect();
    let mut worst = 0f32;
    for (name, var) in a.named_vars() {
        let o = other.get(&name).ok_or_else(|| anyhow::anyhow!("`{name}` missing"))?;
        let d = (var.as_tensor() - o.as_tensor())?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        worst = worst.max(d);
    }
    Ok(worst)
}

fn critic_value(st: &mut dyn Stage) -> anyhow::Result<f32> {
    // Update 0 of step 0 on clip 0: the same sigma, noise and clip every time.
    Ok(st.critic_loss(0, 0, &mut 0)?.0.to_scalar::<f32>()?)
}

#[test]
fn dmd_stage_fake_score_learns_and_both_networks_resume() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let critic_optim = AdamWConfig { lr: 3e-3, weight_decay: 0.0, ..Default::default() };
    // While the fake score is still the teacher's copy, the DMD gradient
    // (x0_fake - x0_real) vanishes: the first generator step has loss 0.
    let frozen_critic = DmdOptions { critic_updates: 0, critic_optim, ..Default::default() };
    let mut st = DmdStage::new(teacher(two_chunk_source())?, None, frozen_critic, 7)?;
    let r = run(&mut st, &opts(dir.path(), 1, 1e-4))?;
    eprintln!("dmd, fake score = teacher copy: losses {:?}", r.losses);
    assert!(r.losses[0].1.abs() < 1e-10, "DMD loss with fake == real: {:?}", r.losses);
    assert!(r.critic_losses.is_empty());

    // Resume with fake-score updates: the fake score's flow-matching loss on
    // a fixed batch falls, and the DMD loss becomes non-zero.
    let o = DmdOptions { critic_updates: 2, critic_optim, ..Default::default() };
    let mut st = DmdStage::new(teacher(two_chunk_source())?, None, o, 7)?;
    st.init()?;
    let before = critic_value(&mut st)?;
    let r = run(&mut st, &opts(dir.path(), 5, 1e-4))?;
    let after = critic_value(&mut st)?;
    eprintln!("dmd: fake-score loss on the fixed batch {before} -> {after}; run {r:?}");
    assert_eq!((r.first_step, r.last_step), (1, 5));
    assert_eq!(r.critic_losses.len(), 8);
    assert!(r.losses.iter().chain(&r.critic_losses).all(|(_, l)| l.is_finite()), "{r:?}");
    assert!(after < 0.9 * before, "fake-score loss on a fixed batch: {before} -> {after}");
    assert!(r.losses.iter().any(|(_, l)| *l > 0.0), "DMD loss stayed 0: {:?}", r.losses);
    let state = checkpoint::load_state(dir.path())?;
    assert_eq!((state.step, state.critic_updates), (5, 8));

    // A fresh stage restores the student and the fake score exactly.
    let mut again = DmdStage::new(teacher(two_chunk_source())?, None, o, 7)?;
    let r = run(&mut again, &opts(dir.path(), 5, 1e-4))?;
    assert_eq!((r.first_step, r.last_step), (5, 5));
    assert_eq!(max_diff(again.student(), st.student())?, 0.0);
    assert_eq!(max_diff(again.fake_score(), st.fake_score())?, 0.0);
    let init = teacher(two_chunk_source())?;
    init.frozen_modules()?;
    assert!(max_diff(again.student(), init.store())? > 0.0, "the student did not move from its initialisation");
    Ok(())
}

#[test]
fn gan_stage_discriminator_learns_and_resumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let o = GanOptions {
        disc: DiscriminatorConfig { heads: 2, ..Default::default() },
        critic_optim: AdamWConfig { lr: 3e-3, beta1: 0.0, beta2: 0.99, weight_decay: 0.0, ..Default::default() },
        ..Default::default()
    };
    let mut st = GanStage::new(teacher(two_chunk_source())?, None, o, 7)?;
    st.init()?;
    let before = critic_value(&mut st)?;
    let r = run(&mut st, &opts(dir.path(), 6, 1e-4))?;
    let after = critic_value(&mut st)?;
    eprintln!("gan: discriminator loss on the fixed pair {before} -> {after}; run {r:?}");
    assert!(r.losses.iter().chain(&r.critic_losses).all(|(_, l)| l.is_finite()), "{r:?}");
    assert_eq!(r.critic_losses.len(), 6);
    assert!(after < before, "discriminator loss on a fixed real/fake pair: {before} -> {after}");
    let names: Vec<String> = st.discriminator_store().named_vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.contains("global_attn")) && !names.iter().any(|n| n.starts_with("backbone.")));

    let mut again = GanStage::new(teacher(two_chunk_source())?, None, o, 7)?;
    let r = run(&mut again, &opts(dir.path(), 7, 1e-4))?;
    assert_eq!((r.first_step, r.last_step), (6, 7));
    assert_eq!(checkpoint::load_state(dir.path())?.critic_updates, 7);

    // The ablation without the consistency branch has no global parameters,
    // and cannot resume the full discriminator's checkpoint.
    let plain = GanOptions { disc: DiscriminatorConfig { consistency: false, ..o.disc }, ..o };
    let mut mixed = GanStage::new(teacher(two_chunk_source())?, None, plain, 7)?;
    let err = run(&mut mixed, &opts(dir.path(), 8, 1e-4)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("does not match"), "resume with another discriminator: {err:?}");
    let mut st = GanStage::new(teacher(two_chunk_source())?, None, plain, 7)?;
    let dir2 = tempfile::tempdir()?;
    let r = run(&mut st, &opts(dir2.path(), 1, 1e-4))?;
    assert!(r.losses[0].1.is_finite() && r.critic_losses[0].1.is_finite());
    assert!(!st.discriminator_store().named_vars().iter().any(|(n, _)| n.contains("global")));

    // A trainable backbone starts as the teacher (`backbone.*`) and learns.
    let trained = GanOptions { disc: DiscriminatorConfig { train_backbone: true, ..o.disc }, ..o };
    let mut st = GanStage::new(teacher(two_chunk_source())?, None, trained, 7)?;
    let dir3 = tempfile::tempdir()?;
    run(&mut st, &opts(dir3.path(), 1, 1e-4))?;
    let init = teacher(two_chunk_source())?;
    init.frozen_modules()?;
    let backbone = ParamStore::new(0, &candle_core::Device::Cpu);
    init.store().copy_into(&backbone, "backbone.")?;
    let disc = st.discriminator_store();
    let trained_backbone = ParamStore::new(0, &candle_core::Device::Cpu);
    for (name, var) in disc.vars_with_prefix("backbone.") {
        trained_backbone.insert(&name, var.as_tensor())?;
    }
    assert_eq!(trained_backbone.named_vars().len(), backbone.named_vars().len());
    assert!(max_diff(&trained_backbone, &backbone)? > 0.0, "the backbone did not train");
    Ok(())
}

#[test]
fn student_rollout_gradient_path_matches_inference_path() -> anyhow::Result<()> {
    use streamavatar::model::sampler::NoiseSource;
    use streamavatar::train::rollout::{student_rollout, ConditionedDit, ExitStep};
    let mut t = teacher(two_chunk_source())?;
    t.frozen_modules()?;
    let cfg = t.config().clone();
    let sample = t.sample(0)?;
    let reference = sample.x0.narrow(2, 0, 1)?;
    let frames = sample.x0.dim(2)?;
    let frozen = ConditionedDit::new(&cfg, t.store().frozen_var_builder(), &sample)?;
    let live = ConditionedDit::new(&cfg, t.store().var_builder(), &sample)?;
    let roll = |live: Option<&ConditionedDit>, exit| {
        student_rollout(&cfg, &frozen, live, &reference, frames, exit, &mut NoiseSource::new(5))
    };
    let plain = roll(None, ExitStep::Last)?;
    let tracked = roll(Some(&live), ExitStep::Last)?;
    assert_eq!(plain.dims(), &[1, cfg.vae.z_dim, frames - 1, 4, 4]);
    assert!(!plain.track_op() && tracked.track_op(), "only the live path carries a gradient");
    let diff = (&plain - &tracked)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    assert!(diff < 1e-4, "tracked and detached paths differ by {diff}");
    // An earlier exit returns that step's (different) x0 prediction.
    let early = roll(Some(&live), ExitStep::Index(0))?;
    assert!((&plain - &early)?.abs()?.mean_all()?.to_scalar::<f32>()? > 1e-3);
    Ok(())
}

/// Every VAE parameter gets a non-zero gradient from the stage-1 loss (a
/// module that copies a weight without its graph would silently freeze it).
#[test]
fn vae_stage_loss_reaches_every_parameter() -> anyhow::Result<()> {
    use streamavatar::train::vae_stage::VaeLossWeights;
    // Every term of the recipe on.
    let weights = VaeLossWeights { chroma: 0.5, face: 3.0, temporal: 10.0, face_temporal: 3.0, ..Default::default() };
    let mut st = VaeStage::new(ModelConfig::tiny(), source(), 1, weights, 7);
    st.init()?;
    let (loss, parts) = st.loss(0, &mut 0)?;
    let names: Vec<&str> = parts.iter().map(|p| p.0).collect();
    for term in ["l1", "edge", "chroma", "temporal", "face", "face_temporal"] {
        assert!(names.contains(&term), "no `{term}` among {names:?}");
    }
    let grads = loss.backward()?;
    assert_every_parameter_has_a_gradient(st.params(), &grads)?;
    Ok(())
}

/// A fresh VAE stage starts with a narrow posterior (logvar bias
/// `INITIAL_LOGVAR`), so reconstruction starts from nearly clean latents.
#[test]
fn vae_stage_starts_with_a_narrow_posterior() -> anyhow::Result<()> {
    use streamavatar::train::vae_stage::INITIAL_LOGVAR;
    let cfg = ModelConfig::tiny();
    let mut st = VaeStage::new(cfg.clone(), source(), 1, Default::default(), 7);
    st.init()?;
    let video = source().clip(0, &candle_core::Device::Cpu)?.video;
    let post = st.vae()?.encode(&video)?;
    let mean_logvar = post.logvar.mean_all()?.to_scalar::<f32>()?;
    let max_logvar = post.logvar.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    assert!((mean_logvar - INITIAL_LOGVAR).abs() < 0.5, "mean logvar {mean_logvar}");
    assert!(max_logvar < INITIAL_LOGVAR + 2.0, "max logvar {max_logvar}");
    Ok(())
}

/// `train/reproduce.sh`, the one command that makes the bundled weights,
/// runs every stage end to end (tiny config, one step per stage: STEPS_DIV
/// divides the recipe's counts), exports weight files that pass `weights
/// check` and that `render` streams; a second run resumes and trains
/// nothing new.
#[test]
fn reproduce_script_runs_every_stage_and_exports_weights() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = || {
        std::process::Command::new("bash")
            .arg(root.join("train/reproduce.sh"))
            .env("SA", env!("CARGO_BIN_EXE_streamavatar"))
            .env("RUNS", dir.path())
            .env("CONFIG", "tiny")
            .env("STEPS_DIV", "100000")
            .env("AUDIO_ENCODER", "1")
            .env("RUST_LOG", "warn")
            .output()
    };
    let out = run()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reproduce.sh failed: {stderr}");
    for stage in [
        "audio_encoder",
        "vae_images",
        "vae_video",
        "light_decoder_m",
        "teacher",
        "teacher_x0",
        "teacher_x0a",
        "teacher_x0m",
        "lip_expert",
        "teacher_x0l",
        "head_expert",
        "teacher_x0k",
        "teacher_x0km",
        "teacher_x0c",
        "teacher_x0cl",
        "teacher_x0cl2",
        "ode_init",
        "dmd",
        "gan",
    ] {
        let state = checkpoint::load_state(&dir.path().join(stage))?;
        assert!(state.step >= 1, "{stage} trained no step");
    }
    let weights = dir.path().join("weights");
    let mut files: Vec<String> = std::fs::read_dir(&weights)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    assert!(files.contains(&"light_decoder.safetensors".to_string()), "{files:?}");
    assert!(files.len() >= 5, "{files:?}");
    // The exported wav2vec2 is the trained audio encoder of stage 0 (in
    // f16, without its recognition head), not the seeded random one.
    let cpu = candle_core::Device::Cpu;
    let trained = candle_core::safetensors::load(dir.path().join("audio_encoder/params.safetensors"), &cpu)?;
    let exported = candle_core::safetensors::load(weights.join("wav2vec2.safetensors"), &cpu)?;
    let name = "encoder.layers.0.attention.q_proj.weight";
    let diff = (&trained[name] - exported[name].to_dtype(candle_core::DType::F32)?)?.abs()?.max_all()?;
    assert!(diff.to_scalar::<f32>()? < 1e-2, "exported wav2vec2 differs from the trained one");
    assert!(trained.contains_key("phone_head.weight") && !exported.contains_key("phone_head.weight"));
    let frames = dir.path().join("render");
    let mut render = std::process::Command::new(env!("CARGO_BIN_EXE_streamavatar"));
    render.args(["render", "--config", "tiny", "--decoder", "light", "--seconds", "1", "--out"]).arg(&frames);
    for f in &files {
        render.arg("--weights").arg(weights.join(f));
    }
    let r = render.env("RUST_LOG", "warn").output()?;
    assert!(r.status.success(), "render failed: {}", String::from_utf8_lossy(&r.stderr));
    // `train recon` scores the exported stages: the VAE and the light decoder
    // on the same latents (PSNR, SSIM, light vs full), with comparison PNGs.
    let recon_dir = dir.path().join("recon");
    let recon = std::process::Command::new(env!("CARGO_BIN_EXE_streamavatar"))
        .args(["train", "recon", "--config", "tiny", "--clips", "2", "--latent-frames", "1", "--vae"])
        .arg(dir.path().join("vae_video/params.safetensors"))
        .arg("--light-decoder")
        .arg(dir.path().join("light_decoder_m/params.safetensors"))
        .arg("--out")
        .arg(&recon_dir)
        .env("RUST_LOG", "warn")
        .output()?;
    assert!(recon.status.success(), "recon failed: {}", String::from_utf8_lossy(&recon.stderr));
    let report: serde_json::Value = serde_json::from_slice(&recon.stdout)?;
    for key in ["mean_psnr_db", "mean_ssim", "mean_face_psnr_db", "mean_mouth_psnr_db"] {
        assert!(report[key].as_f64().is_some_and(f64::is_finite), "{key}: {report}");
    }
    let light = &report["light"];
    for key in ["psnr_db", "ssim", "psnr_vs_full_db"] {
        assert!(light[key].as_f64().is_some_and(f64::is_finite), "light {key}: {report}");
    }
    assert!(report["mean_ssim"].as_f64().unwrap_or(2.0) <= 1.0);
    // One PSNR per frame of the 5-frame clips (--latent-frames 1).
    assert_eq!(report["psnr_by_frame"].as_array().map(Vec::len), Some(5), "{report}");
    // Flicker: the reconstruction's frame-to-frame change against the
    // original's, overall and per frame (entry 0 has no previous frame).
    assert!(report["frame_change_ratio"].as_f64().is_some_and(|r| r.is_finite() && r > 0.0), "{report}");
    let by_frame = report["frame_change_ratio_by_frame"].as_array().cloned().unwrap_or_default();
    assert_eq!(by_frame.len(), 5, "{report}");
    assert_eq!(by_frame[0].as_f64(), Some(0.0));
    assert!(recon_dir.join("recon_001.png").is_file() && recon_dir.join("light_001.png").is_file());
    // `train teacher_check` generates with the trained teacher and scores it
    // against the real clip, a still reference and the VAE's own ceiling.
    let check_dir = dir.path().join("teacher_check");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_streamavatar"))
        .args(["train", "teacher_check", "--config", "tiny", "--clips", "1", "--euler-steps", "2"])
        .args(["--latent-frames", "2", "--vae"])
        .arg(dir.path().join("vae_video/params.safetensors"))
        .arg("--teacher")
        .arg(dir.path().join("teacher/params.safetensors"))
        .arg("--lip-expert")
        .arg(dir.path().join("lip_expert/params.safetensors"))
        .arg("--head-expert")
        .arg(dir.path().join("head_expert/params.safetensors"))
        .arg("--out")
        .arg(&check_dir)
        .env("RUST_LOG", "warn")
        .output()?;
    assert!(check.status.success(), "teacher_check failed: {}", String::from_utf8_lossy(&check.stderr));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout)?;
    for part in ["generated", "static_reference", "vae_ceiling"] {
        for key in ["psnr_db", "ssim"] {
            assert!(report[part][key].as_f64().is_some_and(f64::is_finite), "{part} {key}: {report}");
        }
    }
    assert!(report["lip_expert"]["real"].as_f64().is_some_and(f64::is_finite), "{report}");
    for key in ["real", "generated", "silent_listen", "listen_reaction", "reaction_r", "reaction_truth"] {
        assert!(report["head_expert"][key].as_f64().is_some_and(f64::is_finite), "head {key}: {report}");
    }
    assert!(check_dir.join("clip_000.png").is_file());
    // Everything is at its step count: a rerun resumes and trains nothing,
    // and leaves the checkpoints as they were (the VAE's file keys the DiT
    // stages' clip pool), even where `before_save` would now measure other
    // latent statistics (as after packing to f16).
    let vae_file = dir.path().join("vae_video/params.safetensors");
    let mut tensors = candle_core::safetensors::load(&vae_file, &candle_core::Device::Cpu)?;
    let mean = tensors.get("latents_mean").expect("latent statistics in the VAE checkpoint");
    let shifted = (mean + 0.25)?;
    tensors.insert("latents_mean".into(), shifted);
    candle_core::safetensors::save(&tensors, &vae_file)?;
    // (Other statistics are another latent space: the clip pools made with
    // the old ones would be refused, rightly.)
    std::fs::remove_dir_all(dir.path().join("samples_lf6m"))?;
    std::fs::remove_dir_all(dir.path().join("samples_lf6mw"))?;
    std::fs::remove_dir_all(dir.path().join("samples_lf6ml"))?;
    let vae_before = std::fs::read(&vae_file)?;
    let again = run()?;
    assert!(again.status.success(), "rerun failed: {}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(checkpoint::load_state(&dir.path().join("gan"))?.step, 1);
    assert!(std::fs::read(&vae_file)? == vae_before, "a rerun rewrote the finished VAE checkpoint");
    Ok(())
}

/// Stage 0: the phone-recognition loss reaches every wav2vec2 parameter
/// (its LayerNorms must take the differentiable path), falls on a fixed
/// window, and the checkpoint is a wav2vec2 file the DiT stages load.
#[test]
fn audio_encoder_stage_learns_every_parameter_and_its_checkpoint_loads() -> anyhow::Result<()> {
    use streamavatar::train::audio_encoder_stage::AudioEncoderStage;
    let cfg = ModelConfig::tiny();
    let dev = candle_core::Device::Cpu;
    let mut st = AudioEncoderStage::new(cfg.clone(), 1, 8, 1, 7, &dev);
    st.init()?;
    let (loss, parts) = st.loss(0, &mut 0)?;
    assert!(parts.iter().any(|(n, v)| *n == "acc" && (0.0..=1.0).contains(v)), "{parts:?}");
    let grads = loss.backward()?;
    assert_every_parameter_has_a_gradient(st.params(), &grads)?;

    let dir = tempfile::tempdir()?;
    let r = run(&mut st, &opts(dir.path(), 8, 3e-3))?;
    assert_decreases(&r.losses);
    let file = dir.path().join("params.safetensors");
    let w2v = streamavatar::train::teacher_stage::load_frozen_wav2vec2(&cfg, Some(&file), 7, &dev)?;
    let wave = candle_core::Tensor::randn(0f32, 0.1, (1, 16_000), &dev)?;
    let hs = w2v.forward(&wave)?.hidden_states;
    assert_eq!(hs.dim(1)?, cfg.audio.wav2vec2.num_hidden_layers + 1);
    Ok(())
}

/// The audio probe reads mouth openness out of the talk track: the synth's
/// mouth follows its speech, so even the RMS read-out correlates on
/// held-out clips.
#[test]
fn audio_probe_finds_the_mouth_in_the_talk_track() -> anyhow::Result<()> {
    use streamavatar::train::audio_probe::{probe_audio_encoder, AudioProbeSpec};
    let cfg = ModelConfig::tiny();
    let dev = candle_core::Device::Cpu;
    let w2v = streamavatar::train::teacher_stage::load_frozen_wav2vec2(&cfg, None, 7, &dev)?;
    let report = probe_audio_encoder(&cfg, &w2v, &AudioProbeSpec { eval_clips: 2, context: 2, seed: 7 }, &dev)?;
    assert!(report.eval_talk_frames > 50, "{report:?}");
    assert!(report.rms.corr > 0.3, "{report:?}");
    assert_eq!(report.per_layer.len(), cfg.audio.wav2vec2.num_hidden_layers + 1);
    assert!(report.all_layers.corr.is_finite() && report.all_layers.corr > 0.0, "{report:?}");
    Ok(())
}
