//! Which decoder turns a chunk's latents into RGB frames: the full Wan2.2
//! VAE decoder or the light TAEHV-style one (`model::vae::light_decoder`),
//! chosen per session (`DecoderKind`). Both take the DiT's normalized
//! latents and keep their own streaming state.

use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::reference::video_to_frames;
use super::GeneratorError;
use crate::media::frame::RgbFrame;
use crate::model::vae::{LatentNorm, LightStreamingDecoder, StreamingDecoder};

/// The decoder a session uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    /// The full Wan2.2 VAE decoder (best quality).
    #[default]
    Full,
    /// The light conv2d-only decoder (taew2_2 architecture): for real time
    /// on one GPU, at a quality cost.
    Light,
}

impl DecoderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Light => "light",
        }
    }
}

impl FromStr for DecoderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "full" => Ok(Self::Full),
            "light" => Ok(Self::Light),
            other => Err(format!("unknown decoder `{other}` (expected full or light)")),
        }
    }
}

/// A streaming decoder of either kind.
pub enum FrameDecoder {
    Full { decoder: StreamingDecoder, norm: LatentNorm },
    Light(LightStreamingDecoder),
}

impl FrameDecoder {
    pub fn kind(&self) -> DecoderKind {
        match self {
            Self::Full { .. } => DecoderKind::Full,
            Self::Light(_) => DecoderKind::Light,
        }
    }

    /// Forget the stream.
    pub fn reset(&mut self) {
        match self {
            Self::Full { decoder, .. } => decoder.reset(),
            Self::Light(d) => d.reset(),
        }
    }

    /// Decode normalized latents `[1, z, F, h, w]` (any device) into video
    /// `[1, 3, T, H, W]` in [-1, 1] on the decoder's device.
    pub fn decode_video(&mut self, z: &Tensor, device: &candle_core::Device) -> Result<Tensor, GeneratorError> {
        let e = |m: String| GeneratorError::Model(format!("VAE decode: {m}"));
        let z = z.to_device(device).map_err(|er| e(er.to_string()))?;
        match self {
            Self::Full { decoder, norm } => {
                let z = norm.denormalize(&z).map_err(|er| e(er.to_string()))?;
                decoder.decode_chunk(&z).map_err(|er| e(er.to_string()))
            }
            Self::Light(d) => d.decode_chunk(&z).map_err(|er| e(er.to_string())),
        }
    }

    /// [`decode_video`](Self::decode_video) as RGB frames.
    pub fn decode_frames(&mut self, z: &Tensor, device: &candle_core::Device) -> Result<Vec<RgbFrame>, GeneratorError> {
        let video = self.decode_video(z, device)?;
        video_to_frames(&video)
    }
}
