//! The Wan2.2 VAE decoder (diffusers `WanDecoder3d` with `is_residual`)
//! plus `post_quant_conv`: latents -> patchified frames, one causal step
//! at a time with the temporal cache held by the caller.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{MidBlock, ResidualUpBlock, RmsNorm};
use super::causal_conv::{CacheSlot, CausalConv3d, SlotAllocator};
use crate::config::VaeConfig;

/// diffusers `WanDecoder3d` (names under `decoder.`).
#[derive(Debug, Clone)]
pub struct Decoder3d {
    conv_in: CausalConv3d,
    conv_in_slot: usize,
    mid_block: MidBlock,
    up_blocks: Vec<ResidualUpBlock>,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
    conv_out_slot: usize,
    num_slots: usize,
}

impl Decoder3d {
    /// `vb` is rooted at `decoder`.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let mut slots = SlotAllocator::default();
        let dim = cfg.decoder_base_dim;
        let n = cfg.dim_mult.len();
        let dims: Vec<usize> =
            std::iter::once(cfg.dim_mult[n - 1]).chain(cfg.dim_mult.iter().rev().copied()).map(|u| dim * u).collect();
        let temporal_upsample: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let conv_in = CausalConv3d::k3(cfg.z_dim, dims[0], vb.pp("conv_in"))?;
        let conv_in_slot = slots.next();
        let mid_block = MidBlock::new(dims[0], &mut slots, vb.pp("mid_block"))?;
        let mut up_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let up_flag = i != n - 1;
            let t_up = up_flag && temporal_upsample.get(i).copied().unwrap_or(false);
            up_blocks.push(ResidualUpBlock::new(
                dims[i],
                dims[i + 1],
                cfg.num_res_blocks,
                t_up,
                up_flag,
                &mut slots,
                vb.pp(format!("up_blocks.{i}")),
            )?);
        }
        let out_dim = dims[n];
        let norm_out = RmsNorm::new(out_dim, false, vb.pp("norm_out"))?;
        let conv_out = CausalConv3d::k3(out_dim, cfg.out_channels, vb.pp("conv_out"))?;
        let conv_out_slot = slots.next();
        Ok(Self {
            conv_in,
            conv_in_slot,
            mid_block,
            up_blocks,
            norm_out,
            conv_out,
            conv_out_slot,
            num_slots: slots.count(),
        })
    }

    pub fn num_cache_slots(&self) -> usize {
        self.num_slots
    }

    /// One causal step: `x` `[B, T, z, h, w]` -> `[B, T_out, 12, H/2, W/2]`
    /// with `T_out = 4T`, or `4T - 3` on the `first_chunk` of a stream.
    pub fn forward(&self, x: &Tensor, cache: &mut [CacheSlot], first_chunk: bool) -> Result<Tensor> {
        let x = self.conv_in.forward_cached(x, &mut cache[self.conv_in_slot])?;
        let mut x = self.mid_block.forward(&x, cache)?;
        for b in &self.up_blocks {
            x = b.forward(&x, cache, first_chunk)?;
        }
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward_cached(&x, &mut cache[self.conv_out_slot])
    }
}

/// `post_quant_conv` + decoder (names `post_quant_conv.*`, `decoder.*`).
#[derive(Debug, Clone)]
pub struct VaeDecoder {
    post_quant_conv: CausalConv3d,
    decoder: Decoder3d,
}

impl VaeDecoder {
    /// `vb` is the VAE root (it holds `decoder.*` and `post_quant_conv.*`).
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            post_quant_conv: CausalConv3d::k1(cfg.z_dim, cfg.z_dim, vb.pp("post_quant_conv"))?,
            decoder: Decoder3d::new(cfg, vb.pp("decoder"))?,
        })
    }

    pub fn num_cache_slots(&self) -> usize {
        self.decoder.num_cache_slots()
    }

    /// Frames-major latents `[B, T, z, h, w]` -> patchified frames. When
    /// `first_chunk`, only `z` with T == 1 follows diffusers exactly; the
    /// caller (see `streaming.rs`) splits the first frame off.
    pub fn step(&self, z: &Tensor, cache: &mut [CacheSlot], first_chunk: bool) -> Result<Tensor> {
        let x = self.post_quant_conv.forward(z, None)?;
        self.decoder.forward(&x, cache, first_chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn rss_mb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
            / 1024
    }

    /// Per-stage time and peak memory of one decoder step (diagnostics, not
    /// an assertion): `cargo test --lib decoder::tests -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn stage_profile() {
        let dev = Device::Cpu;
        let mut cfg = crate::config::ModelConfig::full().vae;
        cfg.decoder_base_dim = 64;
        let map = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let d = Decoder3d::new(&cfg, vb).unwrap();
        let mut cache = vec![CacheSlot::Empty; d.num_cache_slots()];
        for (t, first) in [(1usize, true), (3, false)] {
            let x = Tensor::randn(0f32, 1.0, (1, t, 48, 2, 2), &dev).unwrap();
            let t0 = std::time::Instant::now();
            let x = d.conv_in.forward_cached(&x, &mut cache[d.conv_in_slot]).unwrap();
            let mut x = d.mid_block.forward(&x, &mut cache).unwrap();
            eprintln!("T={t} mid {:?} {:.0} ms rss {}", x.dims(), t0.elapsed().as_secs_f64() * 1e3, rss_mb());
            for (i, b) in d.up_blocks.iter().enumerate() {
                let t0 = std::time::Instant::now();
                x = b.forward(&x, &mut cache, first).unwrap();
                eprintln!("T={t} up{i} {:?} {:.0} ms rss {}", x.dims(), t0.elapsed().as_secs_f64() * 1e3, rss_mb());
            }
        }
    }
}
