//! 3-D rotary position embedding of the Wan DiT and StreamAvatar's RAPR
//! (reference-anchored positional re-encoding).
//!
//! **Wan RoPE** (diffusers `WanRotaryPosEmbed` + the `apply_rotary_emb` of
//! `WanAttnProcessor`): the head dimension `hd` is split into a temporal part
//! `t = hd - 4*(hd/6)` and two spatial parts `h = w = 2*(hd/6)`; each part
//! rotates interleaved pairs `(x[2i], x[2i+1])` by `pos * theta^(-2i/d)` with
//! `theta = 10000`. Here the temporal positions are an explicit list (one per
//! latent frame) instead of `0..F`, so cached keys can be re-encoded.
//!
//! **RAPR** ([`TemporalPositions`]): keys are cached *before* RoPE. For a
//! chunk that starts at absolute latent frame `s` (reference = frame 0,
//! chunks of `C` frames starting at 1) and the cap `D`, with `p0 = min(s, D)`:
//!
//! | frame `m`                        | temporal position      |
//! |----------------------------------|------------------------|
//! | reference (`m = 0`)              | `0`                    |
//! | sink chunk (`1 <= m <= C`)       | `m`                    |
//! | any later frame (window/current) | `p0 - (s - m)` = `p0 + (m - s)` |
//!
//! While `s <= D` this equals the plain absolute position. With
//! `D > C * (1 + window_chunks)` (checked by `ModelConfig::validate`) the
//! order `ref < sink < window < current` is strict and the largest position,
//! `D + C - 1`, is bounded forever. `rapr = false` gives plain absolute
//! positions (ablation), which grow without bound.

use candle_core::{DType, Device, Result, Tensor};

use crate::config::StreamConfig;

/// RoPE base of Wan.
pub const WAN_ROPE_THETA: f64 = 10_000.0;

/// Wan's 3-D RoPE: frequencies for the temporal / height / width axes.
#[derive(Debug, Clone)]
pub struct WanRope {
    head_dim: usize,
    t_dim: usize,
    h_dim: usize,
    w_dim: usize,
    /// Inverse frequencies per axis (`d/2` entries each), f64 as diffusers.
    inv_freq: [Vec<f64>; 3],
}

impl WanRope {
    /// `head_dim` must be even and split into even axis parts (every Wan head
    /// size does; 128 -> t 44, h 42, w 42).
    pub fn new(head_dim: usize) -> Result<Self> {
        let h_dim = 2 * (head_dim / 6);
        let w_dim = h_dim;
        if head_dim < 6 || head_dim % 2 != 0 || head_dim < h_dim + w_dim {
            candle_core::bail!("RoPE head_dim {head_dim} must be even and >= 6");
        }
        let t_dim = head_dim - h_dim - w_dim;
        if t_dim % 2 != 0 {
            candle_core::bail!("RoPE temporal part {t_dim} of head_dim {head_dim} must be even");
        }
        let freqs = |d: usize| -> Vec<f64> {
            (0..d / 2).map(|i| 1.0 / WAN_ROPE_THETA.powf((2 * i) as f64 / d as f64)).collect()
        };
        Ok(Self { head_dim, t_dim, h_dim, w_dim, inv_freq: [freqs(t_dim), freqs(h_dim), freqs(w_dim)] })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// (t, h, w) widths of the head-dimension split.
    pub fn axis_dims(&self) -> (usize, usize, usize) {
        (self.t_dim, self.h_dim, self.w_dim)
    }

    /// cos / sin tables of shape `[L, head_dim / 2]` (f32) for the tokens of
    /// `temporal_positions.len()` latent frames of `height x width` patches,
    /// laid out frame-major then row-major (the DiT token order). Frame `i`
    /// gets temporal position `temporal_positions[i]`, rows and columns get
    /// `0..height` and `0..width`.
    pub fn cos_sin(
        &self,
        temporal_positions: &[usize],
        height: usize,
        width: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        // Small per-axis tables, expanded to tokens on the device.
        let table = |positions: &mut dyn Iterator<Item = usize>, axis: usize| -> Result<(Tensor, Tensor)> {
            let freqs = &self.inv_freq[axis];
            let (mut c, mut s, mut n) = (Vec::new(), Vec::new(), 0usize);
            for pos in positions {
                for &f in freqs {
                    let angle = pos as f64 * f;
                    c.push(angle.cos() as f32);
                    s.push(angle.sin() as f32);
                }
                n += 1;
            }
            Ok((Tensor::from_vec(c, (n, freqs.len()), device)?, Tensor::from_vec(s, (n, freqs.len()), device)?))
        };
        let nf = temporal_positions.len();
        let (tc, ts) = table(&mut temporal_positions.iter().copied(), 0)?;
        let (hc, hs) = table(&mut (0..height), 1)?;
        let (wc, ws) = table(&mut (0..width), 2)?;
        let (dt, dh, dw) = (self.t_dim / 2, self.h_dim / 2, self.w_dim / 2);
        let expand = |t: &Tensor, h: &Tensor, w: &Tensor| -> Result<Tensor> {
            let shape = |d: usize| (nf, height, width, d);
            let t = t.reshape((nf, 1, 1, dt))?.broadcast_as(shape(dt))?;
            let h = h.reshape((1, height, 1, dh))?.broadcast_as(shape(dh))?;
            let w = w.reshape((1, 1, width, dw))?.broadcast_as(shape(dw))?;
            Tensor::cat(&[&t, &h, &w], 3)?.reshape((nf * height * width, self.head_dim / 2))
        };
        Ok((expand(&tc, &hc, &wc)?, expand(&ts, &hs, &ws)?))
    }
}

/// Rotate interleaved pairs of `x` (`[B, heads, L, head_dim]`) with the
/// tables of [`WanRope::cos_sin`]. Computed in f32 (as diffusers, whose
/// tables are f64) and returned in `x`'s dtype.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    crate::model::grad_ops::rope_i(&xf, cos, sin)?.to_dtype(dtype)
}

/// How temporal RoPE positions are assigned while streaming: RAPR (capped
/// distance to the reference) or plain absolute frame indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalPositions {
    /// Latent frames per generated chunk (C); frames `1..=C` are the sink chunk.
    pub chunk_frames: usize,
    /// `Some(D)`: RAPR with cap D. `None`: absolute positions (ablation).
    pub rapr_max_distance: Option<usize>,
}

impl TemporalPositions {
    pub fn from_stream(cfg: &StreamConfig) -> Self {
        Self { chunk_frames: cfg.chunk_frames, rapr_max_distance: cfg.rapr.then_some(cfg.rapr_max_distance) }
    }

    /// Temporal position of absolute latent frame `frame` while the chunk
    /// starting at absolute frame `chunk_start` is generated. `frame` is a
    /// cached frame (`< chunk_start`) or a frame of the current chunk.
    pub fn position(&self, frame: usize, chunk_start: usize) -> usize {
        let Some(d) = self.rapr_max_distance else {
            return frame;
        };
        if frame == 0 || chunk_start <= d || frame <= self.chunk_frames {
            // Reference, sink chunk, or everything while s <= D: own index.
            return frame;
        }
        let p0 = chunk_start.min(d);
        if frame >= chunk_start {
            p0 + (frame - chunk_start)
        } else {
            p0.saturating_sub(chunk_start - frame)
        }
    }

    /// Positions of `frames` (absolute ids) for a chunk starting at `chunk_start`.
    pub fn positions(&self, frames: &[usize], chunk_start: usize) -> Vec<usize> {
        frames.iter().map(|&m| self.position(m, chunk_start)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// Frames a reference-sink cache holds when the chunk at `s` is generated.
    fn cached_frames(s: usize, c: usize, window_chunks: usize) -> Vec<usize> {
        let mut v = vec![0];
        v.extend((1..=c).filter(|&m| m < s));
        let window_start = (s.saturating_sub(window_chunks * c)).max(c + 1);
        v.extend(window_start..s);
        v
    }

    #[test]
    fn axis_split_matches_wan() {
        let r = WanRope::new(128).unwrap();
        assert_eq!(r.axis_dims(), (44, 42, 42));
        let r = WanRope::new(16).unwrap();
        assert_eq!(r.axis_dims(), (8, 4, 4));
        assert!(WanRope::new(7).is_err());
    }

    #[test]
    fn cos_sin_layout_is_frame_row_column() {
        let r = WanRope::new(16).unwrap();
        let (cos, sin) = r.cos_sin(&[0, 5], 2, 3, &Device::Cpu).unwrap();
        assert_eq!(cos.dims(), &[12, 8]);
        let cos = cos.to_vec2::<f32>().unwrap();
        let sin = sin.to_vec2::<f32>().unwrap();
        // token 0: all positions 0.
        assert!(cos[0].iter().all(|&c| (c - 1.0).abs() < 1e-7));
        // token (f=1, y=1, x=2) = 6 + 3 + 2 = 11: temporal freq 0 angle = 5.
        assert!((cos[11][0] - 5f32.cos()).abs() < 1e-6);
        // its h part starts at t_dim/2 = 4 with angle y * 1 = 1, w part at 6 with angle 2.
        assert!((sin[11][4] - 1f32.sin()).abs() < 1e-6);
        assert!((sin[11][6] - 2f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn apply_rope_rotates_interleaved_pairs() {
        let r = WanRope::new(6 * 2).unwrap(); // t 4, h 4, w 4
        let (cos, sin) = r.cos_sin(&[3], 1, 1, &Device::Cpu).unwrap();
        let x = Tensor::arange(0f32, 12., &Device::Cpu).unwrap().reshape((1, 1, 1, 12)).unwrap();
        let y = apply_rope(&x, &cos, &sin).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let a = 3f64; // first temporal pair, freq 1
        let (x0, x1) = (0f64, 1f64);
        assert!((y[0] as f64 - (x0 * a.cos() - x1 * a.sin())).abs() < 1e-6);
        assert!((y[1] as f64 - (x0 * a.sin() + x1 * a.cos())).abs() < 1e-6);
        // spatial pairs at position 0 are unchanged.
        assert_eq!(&y[4..], &[4., 5., 6., 7., 8., 9., 10., 11.]);
    }

    #[test]
    fn rapr_equals_plain_positions_while_s_le_d() {
        let p = TemporalPositions { chunk_frames: 3, rapr_max_distance: Some(10) };
        for s in (1..=10).step_by(3) {
            for m in 0..s + 3 {
                assert_eq!(p.position(m, s), m);
            }
        }
    }

    #[test]
    fn rapr_is_bounded_and_ordered_forever() {
        for cfg in [ModelConfig::tiny().stream, ModelConfig::full().stream] {
            let p = TemporalPositions::from_stream(&cfg);
            let (c, w, d) = (cfg.chunk_frames, cfg.window_chunks, cfg.rapr_max_distance);
            for k in 0..5000 {
                let s = 1 + k * c;
                let cached = cached_frames(s, c, w);
                let mut pos: Vec<usize> = p.positions(&cached, s);
                pos.extend((s..s + c).map(|m| p.position(m, s)));
                // strictly increasing: ref < sink < window < current, no ties.
                assert!(pos.windows(2).all(|x| x[0] < x[1]), "s={s}: {pos:?}");
                assert_eq!(pos[0], 0);
                assert!(*pos.last().unwrap() < d + c, "s={s}: {pos:?}");
                // current chunk keeps unit spacing.
                let cur = &pos[pos.len() - c..];
                assert!(cur.windows(2).all(|x| x[1] == x[0] + 1));
                // sink keeps its own indices.
                for m in 1..=c.min(s - 1) {
                    assert_eq!(p.position(m, s), m);
                }
            }
        }
    }

    #[test]
    fn absolute_positions_when_rapr_off() {
        let p = TemporalPositions { chunk_frames: 3, rapr_max_distance: None };
        assert_eq!(p.position(1000, 998), 1000);
        assert_eq!(p.positions(&[0, 1, 500], 997), vec![0, 1, 500]);
    }
}
