//! The tensor list a config's model expects, learned by constructing every
//! module (DiT with audio attention, VAE, wav2vec2, audio projection, light
//! decoder) on a
//! [`RecordingBackend`] — the same constructors that load real weights, so
//! the list can never drift from the code.

use candle_core::{DType, Device};

use super::names::FileKind;
use super::{ExpectedTensors, RecordingBackend};
use crate::config::ModelConfig;
use crate::model::audio::{AudioProjection, InputNormalization, Wav2Vec2Model};
use crate::model::dit::WanDit;
use crate::model::vae::{LightDecoder, WanVae, LATENTS_MEAN, LATENTS_STD};

/// Construct the model of `cfg` on recording backends and collect the
/// (name, shape) of every tensor it asks for, grouped by file kind.
/// Optional modules are recorded as present (the full StreamAvatar model).
/// `prompt_embeds` is recorded as `[text_len, text_dim]` (files may hold fewer rows).
pub fn expected_tensors(cfg: &ModelConfig) -> Result<ExpectedTensors, String> {
    // f16 halves any copy a constructor makes of a (zero-strided) weight
    // (bf16 is refused on CPU by the VAE).
    let (dtype, dev) = (DType::F16, Device::Cpu);
    let mut expected = ExpectedTensors::default();

    let (vb, rec) = RecordingBackend::var_builder(dtype, &dev);
    WanDit::new(&cfg.dit, vb.clone()).map_err(|e| format!("DiT: {e}"))?;
    AudioProjection::new(&cfg.audio, cfg.dit.hidden_size(), cfg.dit.audio_tokens_per_frame, vb.pp("audio_proj"))
        .map_err(|e| format!("audio projection: {e}"))?;
    let mut dit = rec.recorded().required;
    dit.insert("prompt_embeds".into(), vec![cfg.dit.text_len, cfg.dit.text_dim]);
    expected.add(FileKind::Transformer, dit);

    let (vb, rec) = RecordingBackend::var_builder(dtype, &dev);
    WanVae::new(&cfg.vae, vb).map_err(|e| format!("VAE: {e}"))?;
    expected.add(FileKind::Vae, rec.recorded().required);
    let stats = [LATENTS_MEAN, LATENTS_STD].map(|n| (n.to_string(), vec![cfg.vae.z_dim]));
    expected.optional.insert(FileKind::Vae, stats.into_iter().collect());

    let (vb, rec) = RecordingBackend::var_builder(dtype, &dev);
    Wav2Vec2Model::new(&cfg.audio.wav2vec2, InputNormalization::ZeroMeanUnitVariance, vb)
        .map_err(|e| format!("wav2vec2: {e}"))?;
    expected.add(FileKind::Wav2Vec2, rec.recorded().required);

    // The light decoder (`--decoder light`): its own file, checked when given.
    let (vb, rec) = RecordingBackend::var_builder(dtype, &dev);
    LightDecoder::new(&cfg.light_decoder, &cfg.vae, vb).map_err(|e| format!("light decoder: {e}"))?;
    expected.add(FileKind::LightDecoder, rec.recorded().required);
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_model_tensor_list() {
        let e = expected_tensors(&ModelConfig::full()).unwrap();
        let dit = &e.by_kind[&FileKind::Transformer];
        assert_eq!(dit["blocks.29.ffn.net.0.proj.weight"], vec![14336, 3072]);
        assert_eq!(dit["blocks.0.scale_shift_table"], vec![1, 6, 3072]);
        assert_eq!(dit["patch_embedding.weight"], vec![3072, 48, 1, 2, 2]);
        let ours = &e.by_kind[&FileKind::StreamAvatarAudio];
        assert!(ours.contains_key("blocks.29.talk_audio_attn.to_q.weight"));
        assert!(
            ours.contains_key("blocks.0.norm_listen.weight")
                || ours.keys().any(|k| k.starts_with("blocks.0.norm_listen"))
        );
        assert_eq!(ours["prompt_embeds"], vec![512, 4096]);
        assert!(e.by_kind[&FileKind::Vae].contains_key("decoder.conv_in.weight"));
        assert!(e.by_kind[&FileKind::Wav2Vec2].contains_key("encoder.layers.11.attention.q_proj.weight"));
        // Wan2.2-TI2V-5B DiT: ~5B parameters before our audio modules.
        let params: usize = dit.values().map(|s| s.iter().product::<usize>()).sum();
        assert!((4_500_000_000..5_500_000_000).contains(&params), "{params}");
    }
}
