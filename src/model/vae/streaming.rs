//! Streaming VAE decoding: the decoder's per-convolution temporal cache
//! carried across chunks of latent frames, so decoding a stream chunk by
//! chunk (reference frame, then chunks of 3) yields exactly the video a
//! whole-sequence decode gives.
//!
//! Memory is bounded: one slot per cached convolution, each holding at most
//! `CACHE_T = 2` frames of that convolution's input.

use candle_core::{DType, Tensor};

use super::causal_conv::CacheSlot;
use super::decoder::VaeDecoder;
use super::{check_latent_chunk, from_frames_unpatchify, to_frames, VaeError};

/// Decodes one stream of latents chunk by chunk. Cheap to create (the
/// weights are shared); one per concurrent stream.
#[derive(Debug, Clone)]
pub struct StreamingDecoder {
    decoder: VaeDecoder,
    cache: Vec<CacheSlot>,
    z_dim: usize,
    patch_size: usize,
    temporal_factor: usize,
    dtype: DType,
    /// Latent frames consumed since the last reset.
    frames_in: usize,
    /// `(batch, h, w)` of the stream, fixed by its first chunk.
    geometry: Option<(usize, usize, usize)>,
    /// Latent frames the decoder takes per step (a chunk is decoded in
    /// steps of at most this many; the result is the same, see the
    /// streaming tests). 1 is diffusers' frame-by-frame decode: peak memory
    /// of one latent frame's activations, what the full decoder at 1280x704
    /// needs on an 80 GB GPU.
    max_step_frames: usize,
}

impl StreamingDecoder {
    pub(super) fn new(
        decoder: VaeDecoder,
        z_dim: usize,
        patch_size: usize,
        temporal_factor: usize,
        dtype: DType,
    ) -> Self {
        let cache = vec![CacheSlot::Empty; decoder.num_cache_slots()];
        Self {
            decoder,
            cache,
            z_dim,
            patch_size,
            temporal_factor,
            dtype,
            frames_in: 0,
            geometry: None,
            max_step_frames: usize::MAX,
        }
    }

    /// Decode at most `n` (>= 1) latent frames per decoder step.
    pub fn set_max_step_frames(&mut self, n: usize) {
        self.max_step_frames = n.max(1);
    }

    /// Forget the stream: the next chunk starts a new video (its first latent
    /// frame decodes to a single video frame).
    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|s| *s = CacheSlot::Empty);
        self.frames_in = 0;
        self.geometry = None;
    }

    /// Cut the cached frames off the autograd graph (truncated
    /// backpropagation through the stream): later chunks still read them,
    /// but no gradient flows back into the chunks that made them.
    pub fn detach_cache(&mut self) {
        for slot in &mut self.cache {
            if let CacheSlot::Frames(t) = slot {
                *t = t.detach();
            }
        }
    }

    /// Latent frames decoded since the last reset.
    pub fn latent_frames_decoded(&self) -> usize {
        self.frames_in
    }

    /// Video frames the next chunk of `latent_frames` frames will produce:
    /// `1 + 4 (n - 1)` at the start of a stream, `4 n` afterwards.
    pub fn output_frames_for(&self, latent_frames: usize) -> usize {
        if latent_frames == 0 {
            0
        } else if self.frames_in == 0 {
            1 + self.temporal_factor * (latent_frames - 1)
        } else {
            self.temporal_factor * latent_frames
        }
    }

    /// Decode the next chunk `z` `[B, z_dim, Fc, h, w]` (un-normalized
    /// latents) into video `[B, 3, T, 16h, 16w]` in [-1, 1], with `T` as
    /// given by [`output_frames_for`](Self::output_frames_for).
    pub fn decode_chunk(&mut self, z: &Tensor) -> Result<Tensor, VaeError> {
        Ok(self.decode_chunk_unclamped(z)?.clamp(-1f32, 1f32)?)
    }

    /// [`decode_chunk`](Self::decode_chunk) without the final clamp to
    /// [-1, 1]. Training decodes through this: the clamp passes no gradient
    /// outside [-1, 1], so a pixel the decoder once pushed past it (a bright
    /// background overshooting to 1.3) would never learn again.
    pub fn decode_chunk_unclamped(&mut self, z: &Tensor) -> Result<Tensor, VaeError> {
        let (b, f, h, w) = check_latent_chunk(z, self.z_dim, self.geometry, "VAE")?;
        let frames = to_frames(&z.to_dtype(self.dtype)?)?;
        let mut outs = Vec::with_capacity(2);
        let mut start = 0;
        if self.frames_in == 0 {
            // diffusers decodes the stream's first latent frame alone with
            // `first_chunk = True` (time conv skipped, DupUp3D trimmed).
            outs.push(self.decoder.step(&frames.narrow(1, 0, 1)?, &mut self.cache, true)?);
            start = 1;
        }
        while start < f {
            let n = self.max_step_frames.min(f - start);
            outs.push(self.decoder.step(&frames.narrow(1, start, n)?, &mut self.cache, false)?);
            start += n;
        }
        self.geometry = Some((b, h, w));
        self.frames_in += f;
        let out = if outs.len() == 1 { outs.remove(0) } else { Tensor::cat(&outs, 1)? };
        Ok(from_frames_unpatchify(&out, self.patch_size)?)
    }
}
