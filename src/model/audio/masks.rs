//! Talk / listen masks: per-video-frame weights in {0, 1} multiplied into
//! the wav2vec2 features AFTER the encoder (StreamAvatar: masking the
//! features instead of the waveform keeps the encoder input in its
//! pretrained distribution; "Pre-Mask" is worse on every metric).
//!
//! Talk features come from the talk waveform (TTS) masked by the talk mask;
//! listen features come from the listen waveform (remote caller) masked by
//! the listen mask. A mask comes from the caller (explicit turn state) or
//! from [`super::vad`] on the same PCM.

use candle_core::Tensor;

use super::AudioError;

/// Multiply features [B, L, N, H] (N video frames) by a per-frame mask of
/// length N. Values must be finite and within [0, 1] (a {0,1} mask is the
/// normal case; values in between fade a frame). The encoder input is not
/// touched: this only scales its output.
pub fn apply_frame_mask(features: &Tensor, mask: &[f32]) -> Result<Tensor, AudioError> {
    let (_b, _l, n, _h) = features
        .dims4()
        .map_err(|_| AudioError::BadInput(format!("features must be [B, L, N, H], got {:?}", features.dims())))?;
    validate_mask(mask)?;
    if mask.len() != n {
        return Err(AudioError::BadInput(format!(
            "mask has {} frames but the features have {n} video frames",
            mask.len()
        )));
    }
    let m = Tensor::from_slice(mask, (1, 1, n, 1), features.device())?.to_dtype(features.dtype())?;
    Ok(features.broadcast_mul(&m)?)
}

/// Check a mask: finite values in [0, 1].
pub fn validate_mask(mask: &[f32]) -> Result<(), AudioError> {
    if let Some((i, v)) = mask.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
        return Err(AudioError::BadInput(format!("mask value {v} at frame {i} is outside [0, 1]")));
    }
    Ok(())
}

/// The listen mask implied by a talk mask when one waveform carries both
/// turns (the paper's training setting): `1 - talk`.
pub fn complement(mask: &[f32]) -> Vec<f32> {
    mask.iter().map(|m| 1.0 - m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Wav2Vec2Config;
    use crate::model::audio::{FrameRateMap, InputNormalization, Wav2Vec2Model};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    #[test]
    fn zeroes_masked_frames_only() -> anyhow::Result<()> {
        let f = Tensor::ones((1, 3, 4, 2), DType::F32, &Device::Cpu)?;
        let out = apply_frame_mask(&f, &[1.0, 0.0, 1.0, 0.0])?;
        assert_eq!(out.dims(), &[1, 3, 4, 2]);
        let per_frame = out.sum((0, 1, 3))?.to_vec1::<f32>()?;
        assert_eq!(per_frame, vec![6.0, 0.0, 6.0, 0.0]);
        Ok(())
    }

    #[test]
    fn rejects_bad_masks() -> anyhow::Result<()> {
        let f = Tensor::ones((1, 1, 2, 1), DType::F32, &Device::Cpu)?;
        assert!(apply_frame_mask(&f, &[1.0]).is_err());
        assert!(apply_frame_mask(&f, &[1.0, f32::NAN]).is_err());
        assert!(apply_frame_mask(&f, &[1.0, 2.0]).is_err());
        assert_eq!(complement(&[1.0, 0.0]), vec![0.0, 1.0]);
        Ok(())
    }

    /// The mask acts after the encoder: the masked frames are zero, the
    /// unmasked frames equal the unmasked encoder output (the waveform the
    /// encoder saw was not modified, so even frames next to masked ones keep
    /// their full-context values).
    #[test]
    fn mask_is_applied_after_the_encoder() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let cfg = Wav2Vec2Config::tiny();
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = Wav2Vec2Model::new(&cfg, InputNormalization::None, vb)?;
        let wav: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let x = Tensor::from_vec(wav.clone(), (1, 8000), &dev)?;
        let map = FrameRateMap::new(&cfg, 16_000, 24)?;
        let feats = map.resample_clip(&model.forward(&x)?.hidden_states, 8000)?;
        let n = feats.dim(2)?;
        let mask: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        let masked = apply_frame_mask(&feats, &mask)?;
        for (i, m) in mask.iter().enumerate() {
            let a = masked.narrow(2, i, 1)?;
            let b = feats.narrow(2, i, 1)?;
            let want = (b * *m as f64)?;
            let diff = (a - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "frame {i}");
        }
        // The input waveform is untouched by masking.
        assert_eq!(x.to_vec2::<f32>()?[0], wav);
        assert!(feats.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }
}
