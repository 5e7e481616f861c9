//! The streaming self-attention KV cache with reference sink and rolling
//! window (StreamAvatar).
//!
//! Per DiT layer it holds the **un-roped** keys (after `norm_k`) and the
//! values of past latent frames, as `[B, tokens, inner_dim]` tensors grouped
//! in segments (one per appended chunk) tagged with absolute frame ids, so
//! the model can re-rotate the keys with RAPR positions at every chunk
//! (see [`crate::model::rope::TemporalPositions`]).
//!
//! Segments:
//! - the reference frame (frame 0) and the first generated chunk (starting at
//!   frame 1) form the **sink** and are never evicted when `reference_sink`;
//! - every later chunk enters the **rolling window** of `window_chunks * C`
//!   frames; appending evicts the oldest window chunks beyond that.
//!
//! Without `reference_sink` (ablation) every segment, the reference included,
//! is part of the plain rolling window. Either way the cache holds at most
//! `(1 + C + window_chunks * C) * tokens_per_frame` tokens per layer.
//!
//! The cache also keeps the [`PreparedPast`] of the chunk being denoised:
//! its keys rotated for that chunk's positions and split into heads. The
//! few denoising steps of a chunk share it, so the whole cache is rotated
//! once per chunk rather than once per step; any change to the cache drops it.

use std::collections::VecDeque;

use candle_core::Tensor;

use crate::config::StreamConfig;
use crate::model::rope::TemporalPositions;

/// Errors of the KV cache (misuse by the caller, never bad external data).
#[derive(Debug, thiserror::Error)]
pub enum KvCacheError {
    #[error(
        "frames {first}..{end} appended after frame {last_cached}: chunks must be appended in increasing frame order"
    )]
    OutOfOrder { first: usize, end: usize, last_cached: usize },
    #[error("{got} layers of K/V given, the cache has {expected}")]
    LayerCount { got: usize, expected: usize },
    #[error("a segment must have 1..={max} frames (the reference exactly 1), got {got} at frame {first}")]
    SegmentSize { got: usize, max: usize, first: usize },
    #[error("bad K/V shape: {0}")]
    Shape(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Streaming settings the cache needs (a slice of [`StreamConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Latent frames per chunk (C).
    pub chunk_frames: usize,
    /// Chunks kept in the rolling window besides the sink.
    pub window_chunks: usize,
    /// Keep reference frame + first chunk forever.
    pub reference_sink: bool,
    /// Temporal RoPE positions (RAPR or absolute).
    pub positions: TemporalPositions,
}

impl CachePolicy {
    pub fn from_stream(cfg: &StreamConfig) -> Self {
        Self {
            chunk_frames: cfg.chunk_frames,
            window_chunks: cfg.window_chunks,
            reference_sink: cfg.reference_sink,
            positions: TemporalPositions::from_stream(cfg),
        }
    }

    /// Upper bound on cached frames: reference + sink chunk + window.
    pub fn max_frames(&self) -> usize {
        1 + self.chunk_frames + self.window_chunks * self.chunk_frames
    }
}

/// Un-roped keys (after `norm_k`) and values of one layer, `[B, tokens, inner_dim]`.
#[derive(Debug, Clone)]
pub struct LayerKv {
    pub k: Tensor,
    pub v: Tensor,
}

/// Every layer's cached K / V made ready for the attention of the chunk at
/// `chunk_start`: keys RoPE-rotated at the positions the cache policy gives
/// for that chunk, keys and values split into heads, `[B, heads, tokens,
/// head_dim]`. Built by the DiT (which owns the rotation), kept by the cache.
#[derive(Debug, Clone)]
pub struct PreparedPast {
    pub chunk_start: usize,
    pub layers: Vec<(Tensor, Tensor)>,
}

/// What a segment is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentRole {
    /// Frame 0 (pinned when `reference_sink`).
    Reference,
    /// First generated chunk (pinned when `reference_sink`).
    Sink,
    /// Rolling window (evicted oldest first).
    Window,
}

#[derive(Debug, Clone)]
struct Segment {
    first_frame: usize,
    num_frames: usize,
    role: SegmentRole,
    pinned: bool,
    layers: Vec<LayerKv>,
}

/// Rolling KV cache with reference sink, for all layers of the DiT.
#[derive(Debug, Clone)]
pub struct KvCache {
    policy: CachePolicy,
    num_layers: usize,
    tokens_per_frame: Option<usize>,
    segments: VecDeque<Segment>,
    prepared: Option<PreparedPast>,
}

impl KvCache {
    pub fn new(num_layers: usize, policy: CachePolicy) -> Self {
        Self { policy, num_layers, tokens_per_frame: None, segments: VecDeque::new(), prepared: None }
    }

    /// Cache for `num_layers` layers with the settings of `stream`.
    pub fn from_stream(num_layers: usize, stream: &StreamConfig) -> Self {
        Self::new(num_layers, CachePolicy::from_stream(stream))
    }

    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Drop everything (new reference / new session).
    pub fn clear(&mut self) {
        self.segments.clear();
        self.tokens_per_frame = None;
        self.prepared = None;
    }

    /// The prepared past of the chunk at `chunk_start`, if it is current.
    pub fn prepared(&self, chunk_start: usize) -> Option<&PreparedPast> {
        self.prepared.as_ref().filter(|p| p.chunk_start == chunk_start)
    }

    /// Keep `prepared` until the cache changes (it must have been built
    /// from the cache as it is now).
    pub fn set_prepared(&mut self, prepared: PreparedPast) -> Result<(), KvCacheError> {
        if prepared.layers.len() != self.num_layers {
            return Err(KvCacheError::LayerCount { got: prepared.layers.len(), expected: self.num_layers });
        }
        self.prepared = Some(prepared);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Cut every cached K/V out of the autograd graph (training with
    /// student forcing: no gradient flows from a chunk into the chunks whose
    /// K/V it attends to).
    pub fn detach(&mut self) {
        for kv in self.segments.iter_mut().flat_map(|s| s.layers.iter_mut()) {
            kv.k = kv.k.detach();
            kv.v = kv.v.detach();
        }
        self.prepared = None;
    }

    /// Absolute ids of the cached frames, in order.
    pub fn frame_ids(&self) -> Vec<usize> {
        self.segments.iter().flat_map(|s| s.first_frame..s.first_frame + s.num_frames).collect()
    }

    /// (first frame, frames, role) of every segment, in order.
    pub fn segments(&self) -> Vec<(usize, usize, SegmentRole)> {
        self.segments.iter().map(|s| (s.first_frame, s.num_frames, s.role)).collect()
    }

    pub fn num_frames(&self) -> usize {
        self.segments.iter().map(|s| s.num_frames).sum()
    }

    /// Cached tokens per layer.
    pub fn num_tokens(&self) -> usize {
        self.num_frames() * self.tokens_per_frame.unwrap_or(0)
    }

    /// Tokens per latent frame of the cached K/V (None while empty).
    pub fn tokens_per_frame(&self) -> Option<usize> {
        self.tokens_per_frame
    }

    /// Batch size of the cached K/V (None while empty).
    pub fn batch(&self) -> Option<usize> {
        self.segments.front().and_then(|s| s.layers.first()).and_then(|kv| kv.k.dim(0).ok())
    }

    /// One past the last cached frame (0 when empty): the earliest frame a
    /// new chunk may start at.
    pub fn next_frame(&self) -> usize {
        self.segments.back().map(|s| s.first_frame + s.num_frames).unwrap_or(0)
    }

    /// RoPE temporal positions of the cached frames while generating the
    /// chunk that starts at `chunk_start`.
    pub fn temporal_positions(&self, chunk_start: usize) -> Vec<usize> {
        self.policy.positions.positions(&self.frame_ids(), chunk_start)
    }

    /// Append the K/V of `num_frames` frames starting at `first_frame` (one
    /// entry per layer), then evict the oldest window chunks beyond the
    /// window size.
    pub fn append(&mut self, first_frame: usize, num_frames: usize, layers: Vec<LayerKv>) -> Result<(), KvCacheError> {
        if !self.segments.is_empty() && first_frame < self.next_frame() {
            return Err(KvCacheError::OutOfOrder {
                first: first_frame,
                end: first_frame + num_frames,
                last_cached: self.next_frame() - 1,
            });
        }
        let max = if first_frame == 0 { 1 } else { self.policy.chunk_frames };
        if num_frames == 0 || num_frames > max {
            return Err(KvCacheError::SegmentSize { got: num_frames, max, first: first_frame });
        }
        if layers.len() != self.num_layers {
            return Err(KvCacheError::LayerCount { got: layers.len(), expected: self.num_layers });
        }
        let tokens_per_frame = self.check_shapes(&layers, num_frames)?;
        self.tokens_per_frame = Some(tokens_per_frame);

        let role = match first_frame {
            0 => SegmentRole::Reference,
            1 => SegmentRole::Sink,
            _ => SegmentRole::Window,
        };
        let pinned = self.policy.reference_sink && role != SegmentRole::Window;
        self.prepared = None;
        self.segments.push_back(Segment { first_frame, num_frames, role, pinned, layers });
        self.evict();
        Ok(())
    }

    /// Concatenated un-roped K and V of `layer`, `[B, cached_tokens, inner]`,
    /// or None while empty.
    pub fn layer(&self, layer: usize) -> Result<Option<LayerKv>, KvCacheError> {
        if layer >= self.num_layers {
            return Err(KvCacheError::LayerCount { got: layer + 1, expected: self.num_layers });
        }
        if self.segments.is_empty() {
            return Ok(None);
        }
        let ks: Vec<&Tensor> = self.segments.iter().map(|s| &s.layers[layer].k).collect();
        let vs: Vec<&Tensor> = self.segments.iter().map(|s| &s.layers[layer].v).collect();
        Ok(Some(LayerKv { k: Tensor::cat(&ks, 1)?, v: Tensor::cat(&vs, 1)? }))
    }

    fn check_shapes(&self, layers: &[LayerKv], num_frames: usize) -> Result<usize, KvCacheError> {
        let reference = self.segments.front().map(|s| &s.layers[0].k);
        let mut tokens_per_frame = None;
        for (i, kv) in layers.iter().enumerate() {
            let (b, n, d) = kv.k.dims3()?;
            if kv.v.dims3()? != (b, n, d) {
                return Err(KvCacheError::Shape(format!(
                    "layer {i}: K {:?} and V {:?} differ",
                    kv.k.dims(),
                    kv.v.dims()
                )));
            }
            if n % num_frames != 0 {
                return Err(KvCacheError::Shape(format!(
                    "layer {i}: {n} tokens do not divide into {num_frames} frames"
                )));
            }
            let tpf = n / num_frames;
            if tokens_per_frame.is_some_and(|t| t != tpf) || self.tokens_per_frame.is_some_and(|t| t != tpf) {
                return Err(KvCacheError::Shape(format!(
                    "layer {i}: {tpf} tokens per frame, cache holds {:?}",
                    self.tokens_per_frame.or(tokens_per_frame)
                )));
            }
            tokens_per_frame = Some(tpf);
            if let Some(r) = reference {
                let (rb, _, rd) = r.dims3()?;
                if (rb, rd) != (b, d) || r.dtype() != kv.k.dtype() {
                    return Err(KvCacheError::Shape(format!(
                        "layer {i}: batch/width/dtype ({b}, {d}, {:?}) differ from cached ({rb}, {rd}, {:?})",
                        kv.k.dtype(),
                        r.dtype()
                    )));
                }
            }
        }
        tokens_per_frame.ok_or_else(|| KvCacheError::Shape("no layers".into()))
    }

    fn evict(&mut self) {
        let capacity = self.policy.window_chunks * self.policy.chunk_frames;
        loop {
            let window: usize = self.segments.iter().filter(|s| !s.pinned).map(|s| s.num_frames).sum();
            if window <= capacity {
                break;
            }
            match self.segments.iter().position(|s| !s.pinned) {
                Some(oldest) => {
                    self.segments.remove(oldest);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    const TPF: usize = 4;

    fn kv(frames: usize, fill: f32, layers: usize) -> Vec<LayerKv> {
        (0..layers)
            .map(|l| {
                let t = Tensor::full(fill + l as f32 * 1000.0, (1, frames * TPF, 8), &Device::Cpu).unwrap();
                LayerKv { k: t.clone(), v: (t * 2.0).unwrap() }
            })
            .collect()
    }

    fn policy(sink: bool) -> CachePolicy {
        CachePolicy {
            chunk_frames: 3,
            window_chunks: 2,
            reference_sink: sink,
            positions: TemporalPositions { chunk_frames: 3, rapr_max_distance: Some(10) },
        }
    }

    fn fill(cache: &mut KvCache, chunks: usize) {
        cache.append(0, 1, kv(1, 0.0, 2)).unwrap();
        for k in 0..chunks {
            let s = 1 + 3 * k;
            cache.append(s, 3, kv(3, s as f32, 2)).unwrap();
        }
    }

    #[test]
    fn sink_is_never_evicted_and_window_is_bounded() {
        let mut cache = KvCache::new(2, policy(true));
        let bound = policy(true).max_frames() * TPF;
        fill(&mut cache, 1);
        for k in 1..50 {
            let s = 1 + 3 * k;
            cache.append(s, 3, kv(3, s as f32, 2)).unwrap();
            let ids = cache.frame_ids();
            assert_eq!(&ids[..4], &[0, 1, 2, 3], "sink kept");
            assert!(cache.num_tokens() <= bound);
            // window = the newest min(k, 2) chunks.
            let window: Vec<usize> = ((s + 3).saturating_sub(6).max(4)..s + 3).collect();
            assert_eq!(&ids[4..], &window[..]);
        }
        assert_eq!(cache.num_tokens(), bound);
        let roles: Vec<SegmentRole> = cache.segments().iter().map(|s| s.2).collect();
        assert_eq!(roles, vec![SegmentRole::Reference, SegmentRole::Sink, SegmentRole::Window, SegmentRole::Window]);
    }

    #[test]
    fn concatenation_keeps_order_and_layers() {
        let mut cache = KvCache::new(2, policy(true));
        fill(&mut cache, 4); // frames 0, 1..=3, window 7..=12 (4..=6 evicted)
        assert_eq!(cache.frame_ids(), vec![0, 1, 2, 3, 7, 8, 9, 10, 11, 12]);
        let l1 = cache.layer(1).unwrap().unwrap();
        assert_eq!(l1.k.dims(), &[1, 10 * TPF, 8]);
        let firsts: Vec<f32> = (0..10)
            .map(|f| l1.k.get(0).unwrap().get(f * TPF).unwrap().get(0).unwrap().to_scalar::<f32>().unwrap())
            .collect();
        assert_eq!(firsts, vec![1000., 1001., 1001., 1001., 1007., 1007., 1007., 1010., 1010., 1010.]);
        let v0 = l1.v.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(v0, 2000.0);
        assert!(cache.layer(2).is_err());
    }

    #[test]
    fn plain_window_without_sink_evicts_reference() {
        let mut cache = KvCache::new(2, policy(false));
        fill(&mut cache, 3);
        assert_eq!(cache.frame_ids(), vec![4, 5, 6, 7, 8, 9]);
        assert!(cache.num_frames() <= 6);
    }

    #[test]
    fn rejects_misuse() {
        let mut cache = KvCache::new(2, policy(true));
        fill(&mut cache, 1);
        assert!(matches!(cache.append(2, 3, kv(3, 0.0, 2)), Err(KvCacheError::OutOfOrder { .. })));
        assert!(matches!(cache.append(4, 4, kv(4, 0.0, 2)), Err(KvCacheError::SegmentSize { .. })));
        assert!(matches!(cache.append(4, 3, kv(3, 0.0, 1)), Err(KvCacheError::LayerCount { .. })));
        let bad = vec![
            LayerKv {
                k: Tensor::zeros((1, 10, 8), DType::F32, &Device::Cpu).unwrap(),
                v: Tensor::zeros((1, 10, 8), DType::F32, &Device::Cpu).unwrap()
            };
            2
        ];
        assert!(matches!(cache.append(4, 2, bad), Err(KvCacheError::Shape(_))));
        assert_eq!(cache.next_frame(), 4);
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.layer(0).unwrap().is_none());
    }

    #[test]
    fn detach_cuts_the_graph_and_keeps_values() -> anyhow::Result<()> {
        let mut cache = KvCache::new(1, policy(true));
        let w = candle_core::Var::new(&[[2f32; 8]; TPF], &Device::Cpu)?;
        let k = w.as_tensor().unsqueeze(0)?;
        cache.append(0, 1, vec![LayerKv { k: k.clone(), v: (k * 3.0)? }])?;
        assert!(cache.layer(0)?.map(|kv| kv.k.track_op()).unwrap_or(false));
        cache.detach();
        let kv = cache.layer(0)?.expect("cached");
        assert!(!kv.k.track_op() && !kv.v.track_op());
        assert_eq!(kv.v.flatten_all()?.to_vec1::<f32>()?, vec![6.0; 8 * TPF]);
        Ok(())
    }

    #[test]
    fn temporal_positions_follow_rapr() {
        let mut cache = KvCache::new(2, policy(true));
        fill(&mut cache, 5); // next chunk starts at 16 > D = 10
        assert_eq!(cache.frame_ids(), vec![0, 1, 2, 3, 10, 11, 12, 13, 14, 15]);
        assert_eq!(cache.temporal_positions(16), vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
}
