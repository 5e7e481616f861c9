//! The Wan2.2 VAE encoder (diffusers `WanEncoder3d` with `is_residual`)
//! plus `quant_conv`: patchified video -> (mu, logvar).
//!
//! Like diffusers `_encode`, the video is fed causally: the first frame
//! alone, then chunks of 4 frames, with the temporal cache carried between
//! calls. Each chunk of 4 frames becomes one latent frame.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{MidBlock, ResidualDownBlock, RmsNorm};
use super::causal_conv::{CacheSlot, CausalConv3d, SlotAllocator};
use crate::config::VaeConfig;

/// diffusers `WanEncoder3d` (names under `encoder.`).
#[derive(Debug, Clone)]
pub struct Encoder3d {
    conv_in: CausalConv3d,
    conv_in_slot: usize,
    down_blocks: Vec<ResidualDownBlock>,
    mid_block: MidBlock,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
    conv_out_slot: usize,
    num_slots: usize,
}

impl Encoder3d {
    /// `vb` is rooted at `encoder`.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let mut slots = SlotAllocator::default();
        let dim = cfg.base_dim;
        let dims: Vec<usize> = std::iter::once(1).chain(cfg.dim_mult.iter().copied()).map(|u| dim * u).collect();
        let conv_in = CausalConv3d::k3(cfg.in_channels, dims[0], vb.pp("conv_in"))?;
        let conv_in_slot = slots.next();
        let n = cfg.dim_mult.len();
        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let last = i == n - 1;
            let t_down = !last && cfg.temperal_downsample.get(i).copied().unwrap_or(false);
            down_blocks.push(ResidualDownBlock::new(
                dims[i],
                dims[i + 1],
                cfg.num_res_blocks,
                t_down,
                !last,
                &mut slots,
                vb.pp(format!("down_blocks.{i}")),
            )?);
        }
        let out_dim = dims[n];
        let mid_block = MidBlock::new(out_dim, &mut slots, vb.pp("mid_block"))?;
        let norm_out = RmsNorm::new(out_dim, false, vb.pp("norm_out"))?;
        let conv_out = CausalConv3d::k3(out_dim, cfg.z_dim * 2, vb.pp("conv_out"))?;
        let conv_out_slot = slots.next();
        Ok(Self {
            conv_in,
            conv_in_slot,
            down_blocks,
            mid_block,
            norm_out,
            conv_out,
            conv_out_slot,
            num_slots: slots.count(),
        })
    }

    pub fn num_cache_slots(&self) -> usize {
        self.num_slots
    }

    /// One causal step: `x` `[B, T, 12, H/2, W/2]` (patchified frames) ->
    /// `[B, T', 2*z, h, w]`.
    pub fn forward(&self, x: &Tensor, cache: &mut [CacheSlot]) -> Result<Tensor> {
        let mut x = self.conv_in.forward_cached(x, &mut cache[self.conv_in_slot])?;
        for b in &self.down_blocks {
            x = b.forward(&x, cache)?;
        }
        let x = self.mid_block.forward(&x, cache)?;
        let x = self.norm_out.forward(&x)?.silu()?;
        self.conv_out.forward_cached(&x, &mut cache[self.conv_out_slot])
    }
}

/// Encoder + `quant_conv` (names `encoder.*`, `quant_conv.*`).
#[derive(Debug, Clone)]
pub struct VaeEncoder {
    encoder: Encoder3d,
    quant_conv: CausalConv3d,
}

impl VaeEncoder {
    /// `vb` is the VAE root (it holds `encoder.*` and `quant_conv.*`).
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            encoder: Encoder3d::new(cfg, vb.pp("encoder"))?,
            quant_conv: CausalConv3d::k1(cfg.z_dim * 2, cfg.z_dim * 2, vb.pp("quant_conv"))?,
        })
    }

    /// An empty causal cache for [`encode_step`](Self::encode_step).
    pub fn new_cache(&self) -> Vec<CacheSlot> {
        vec![CacheSlot::Empty; self.encoder.num_cache_slots()]
    }

    /// One streaming step over patchified frames `[B, T, 12, H/2, W/2]`:
    /// the first step of a stream takes the first frame alone (`T = 1`),
    /// every later step a group of 4 frames (`T = 4`, one latent frame), as
    /// [`forward_frames`](Self::forward_frames) does over a whole clip.
    /// Returns the quantized moments `[B, T', 2*z, h, w]`.
    pub fn encode_step(&self, x: &Tensor, cache: &mut [CacheSlot]) -> Result<Tensor> {
        self.quant_conv.forward(&self.encoder.forward(x, cache)?, None)
    }

    /// `x`: patchified frames `[B, 1 + 4k, 12, H/2, W/2]`; returns the
    /// quantized moments `[B, 1 + k, 2*z, h, w]` (frames-major).
    pub fn forward_frames(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(1)?;
        let mut cache = self.new_cache();
        let mut outs = Vec::with_capacity(1 + (t - 1) / 4);
        outs.push(self.encode_step(&x.narrow(1, 0, 1)?, &mut cache)?);
        let mut start = 1;
        while start + 4 <= t {
            outs.push(self.encode_step(&x.narrow(1, start, 4)?, &mut cache)?);
            start += 4;
        }
        if outs.len() == 1 {
            Ok(outs.remove(0))
        } else {
            Tensor::cat(&outs, 1)
        }
    }
}
