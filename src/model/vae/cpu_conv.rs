//! The CPU kernel of the VAE's stride-1 convolutions (3-D causal and 2-D):
//! forward, input gradient and weight gradient as candle custom ops.
//!
//! Why: candle 0.11's CPU `conv2d` (tiled im2col) and a tensor-level
//! "shifted GEMM" (one `matmul` + one `add` per kernel tap, each allocating)
//! reach 3-7 GFLOP/s on the small channel counts of the `mini` decoder (8-32
//! channels at 32-64 px), which made its decode ~4x slower than real time; and
//! their backward (conv-transpose, `narrow` -> pad + add per tap) made VAE
//! training cost ~13 s per step.
//!
//! How: the input of one batch element, `[T_in, C, H, W]` with the time
//! padding already applied, is copied once into a channel-major zero-padded
//! buffer `P[C, T_in * Hp * Wp]`. On the flattened `[T, Hp, Wp]` grid, output
//! position `o` of tap `(t, dy, dx)` reads input position `o + t*Hp*Wp +
//! dy*Wp + dx`, so every tap is ONE GEMM of the tap's `[C_out, C]` weight
//! against a shifted view of `P`, accumulated in place into one output buffer
//! by the `gemm` crate (the GEMM candle itself uses) — no intermediate
//! tensors. Grid positions that fall in the padding columns are computed and
//! cropped. The gradients are the same shifted GEMMs transposed:
//! `dP[:, off + j] += W_tap^T dY[:, j]` and `dW_tap += dY P[:, off ..]^T`.
//!
//! Only f32 on the CPU; other devices / dtypes use candle's own conv
//! (cuDNN on CUDA), see `causal_conv.rs`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Kernel geometry of one stride-1 convolution (symmetric spatial padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub kt: usize,
    pub kh: usize,
    pub kw: usize,
    pub pad: usize,
}

/// Sizes of one call, derived from the input `[B, T_in, C, H, W]`.
#[derive(Debug, Clone, Copy)]
struct Grid {
    b: usize,
    t_in: usize,
    c: usize,
    h: usize,
    w: usize,
    hp: usize,
    wp: usize,
    t_out: usize,
    ho: usize,
    wo: usize,
}

impl Grid {
    fn new(g: ConvGeometry, dims: &[usize]) -> Result<Self> {
        let &[b, t_in, c, h, w] = dims else {
            candle_core::bail!("cpu conv: expected a [B, T, C, H, W] input, got {dims:?}")
        };
        if dims.contains(&0) || g.kt == 0 || g.kh == 0 || g.kw == 0 {
            candle_core::bail!("cpu conv: empty input {dims:?} or kernel {}x{}x{}", g.kt, g.kh, g.kw);
        }
        let (hp, wp) = (h + 2 * g.pad, w + 2 * g.pad);
        if t_in < g.kt || hp < g.kh || wp < g.kw {
            candle_core::bail!(
                "cpu conv: input {dims:?} (pad {}) too small for a {}x{}x{} kernel",
                g.pad,
                g.kt,
                g.kh,
                g.kw
            );
        }
        Ok(Self { b, t_in, c, h, w, hp, wp, t_out: t_in - g.kt + 1, ho: hp - g.kh + 1, wo: wp - g.kw + 1 })
    }
    fn plane(&self) -> usize {
        self.hp * self.wp
    }
    /// Columns of the padded input buffer.
    fn in_cols(&self) -> usize {
        self.t_in * self.plane()
    }
    /// Columns of the output grid buffer (`[T_out, Hp, Wp]`).
    fn out_cols(&self) -> usize {
        self.t_out * self.plane()
    }
    /// Grid columns every tap's GEMM covers (up to the last valid output).
    fn span(&self) -> usize {
        (self.t_out - 1) * self.plane() + (self.ho - 1) * self.wp + self.wo
    }
    fn frame_len(&self) -> usize {
        self.c * self.h * self.w
    }
}

impl ConvGeometry {
    fn taps(&self) -> usize {
        self.kt * self.kh * self.kw
    }
    /// `(tap index, offset on the flattened input grid)` of every tap.
    fn tap_offsets(&self, grid: &Grid) -> Vec<(usize, usize)> {
        let mut taps = Vec::with_capacity(self.taps());
        for t in 0..self.kt {
            for dy in 0..self.kh {
                for dx in 0..self.kw {
                    taps.push(((t * self.kh + dy) * self.kw + dx, t * grid.plane() + dy * grid.wp + dx));
                }
            }
        }
        taps
    }
}

/// `C = alpha * C + A B` (or `C = A B` when `accumulate` is false) on raw
/// strided f32 buffers. `(rs, cs)` = (row, column) strides in elements.
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_at: usize,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_at: usize,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    rhs_at: usize,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    // Bounds: the last element each operand touches must be inside its slice,
    // which makes the raw-pointer call below sound.
    let last = |at: usize, rows: usize, cols: usize, rs: usize, cs: usize| at + (rows - 1) * rs + (cols - 1) * cs;
    assert!(m > 0 && n > 0 && k > 0, "gemm_f32: empty product");
    assert!(last(dst_at, m, n, dst_rs, dst_cs) < dst.len(), "gemm_f32: dst out of bounds");
    assert!(last(lhs_at, m, k, lhs_rs, lhs_cs) < lhs.len(), "gemm_f32: lhs out of bounds");
    assert!(last(rhs_at, k, n, rhs_rs, rhs_cs) < rhs.len(), "gemm_f32: rhs out of bounds");
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: every index the GEMM reads or writes lies within the slices
    // (checked above); `dst` is exclusively borrowed and does not alias the
    // shared `lhs` / `rhs` borrows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_at),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr().add(lhs_at),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr().add(rhs_at),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Copies batch element `x` (`[T_in, C, H, W]`, contiguous) into the
/// channel-major zero-padded buffer `[C, T_in * Hp * Wp]`.
fn pad_channel_major(x: &[f32], grid: &Grid, pad: usize) -> Vec<f32> {
    let mut p = vec![0f32; grid.c * grid.in_cols()];
    for t in 0..grid.t_in {
        for ci in 0..grid.c {
            for y in 0..grid.h {
                let src = ((t * grid.c + ci) * grid.h + y) * grid.w;
                let dst = ci * grid.in_cols() + t * grid.plane() + (y + pad) * grid.wp + pad;
                p[dst..dst + grid.w].copy_from_slice(&x[src..src + grid.w]);
            }
        }
    }
    p
}

/// Copies `dy` of one batch element (`[T_out, C_out, Ho, Wo]`) onto the
/// zeroed output grid `[C_out, T_out * Hp * Wp]`.
fn scatter_to_grid(dy: &[f32], grid: &Grid, c_out: usize) -> Vec<f32> {
    let mut g = vec![0f32; c_out * grid.out_cols()];
    for t in 0..grid.t_out {
        for co in 0..c_out {
            for y in 0..grid.ho {
                let src = ((t * c_out + co) * grid.ho + y) * grid.wo;
                let dst = co * grid.out_cols() + t * grid.plane() + y * grid.wp;
                g[dst..dst + grid.wo].copy_from_slice(&dy[src..src + grid.wo]);
            }
        }
    }
    g
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("cpu conv: {what} must be f32, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("cpu conv: {what} must be contiguous"),
    }
}

fn check_weight(w_dims: &[usize], g: ConvGeometry, c_in: usize) -> Result<usize> {
    match *w_dims {
        [co, ci, kt, kh, kw] if co > 0 && ci == c_in && (kt, kh, kw) == (g.kt, g.kh, g.kw) => Ok(co),
        _ => candle_core::bail!(
            "cpu conv: weight {w_dims:?} does not match {c_in} input channels and a {}x{}x{} kernel",
            g.kt,
            g.kh,
            g.kw
        ),
    }
}

/// Forward: `(x [B, T_in, C, H, W], w [C_out, C, kt, kh, kw]) -> y [B, T_out, C_out, Ho, Wo]` (no bias).
#[derive(Debug, Clone, Copy)]
struct ConvForward(ConvGeometry);

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "vae-cpu-conv"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let grid = Grid::new(g, xl.dims())?;
        let c_out = check_weight(wl.dims(), g, grid.c)?;
        let (x, w) = (contiguous_f32(xs, xl, "input")?, contiguous_f32(ws, wl, "weight")?);
        let taps = g.tap_offsets(&grid);
        let out_frame = c_out * grid.ho * grid.wo;
        let mut y = vec![0f32; grid.b * grid.t_out * out_frame];
        let mut acc = vec![0f32; c_out * grid.out_cols()];
        for bi in 0..grid.b {
            let p = pad_channel_major(
                &x[bi * grid.t_in * grid.frame_len()..][..grid.t_in * grid.frame_len()],
                &grid,
                g.pad,
            );
            for (i, &(tap, off)) in taps.iter().enumerate() {
                gemm_f32(
                    (c_out, grid.span(), grid.c),
                    &mut acc,
                    0,
                    (grid.out_cols(), 1),
                    i > 0,
                    w,
                    tap,
                    (grid.c * g.taps(), g.taps()),
                    &p,
                    off,
                    (grid.in_cols(), 1),
                );
            }
            let yb = &mut y[bi * grid.t_out * out_frame..][..grid.t_out * out_frame];
            for t in 0..grid.t_out {
                for co in 0..c_out {
                    for r in 0..grid.ho {
                        let src = co * grid.out_cols() + t * grid.plane() + r * grid.wp;
                        let dst = ((t * c_out + co) * grid.ho + r) * grid.wo;
                        yb[dst..dst + grid.wo].copy_from_slice(&acc[src..src + grid.wo]);
                    }
                }
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((grid.b, grid.t_out, c_out, grid.ho, grid.wo))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &ConvInputGrad { geometry: self.0, input_dims: x.dims5()? })?;
        let dw = dy.apply_op2_no_bwd(x, &ConvWeightGrad { geometry: self.0, weight_dims: w.dims5()? })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `(dy, w) -> dx` of [`ConvForward`].
#[derive(Debug, Clone, Copy)]
struct ConvInputGrad {
    geometry: ConvGeometry,
    input_dims: (usize, usize, usize, usize, usize),
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "vae-cpu-conv-input-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let (b, t_in, c, h, w_) = self.input_dims;
        let grid = Grid::new(g, &[b, t_in, c, h, w_])?;
        let c_out = check_weight(wl.dims(), g, c)?;
        if dl.dims() != [b, grid.t_out, c_out, grid.ho, grid.wo] {
            candle_core::bail!("cpu conv backward: gradient {:?} does not match the output shape", dl.dims());
        }
        let (dy, w) = (contiguous_f32(ds, dl, "output gradient")?, contiguous_f32(ws, wl, "weight")?);
        let taps = g.tap_offsets(&grid);
        let out_len = grid.t_out * c_out * grid.ho * grid.wo;
        let mut dx = vec![0f32; b * t_in * grid.frame_len()];
        for bi in 0..b {
            let dg = scatter_to_grid(&dy[bi * out_len..][..out_len], &grid, c_out);
            let mut dp = vec![0f32; c * grid.in_cols()];
            for &(tap, off) in &taps {
                gemm_f32(
                    (c, grid.span(), c_out),
                    &mut dp,
                    off,
                    (grid.in_cols(), 1),
                    true,
                    w,
                    tap,
                    (g.taps(), c * g.taps()),
                    &dg,
                    0,
                    (grid.out_cols(), 1),
                );
            }
            let dxb = &mut dx[bi * t_in * grid.frame_len()..][..t_in * grid.frame_len()];
            for t in 0..t_in {
                for ci in 0..c {
                    for r in 0..h {
                        let src = ci * grid.in_cols() + t * grid.plane() + (r + g.pad) * grid.wp + g.pad;
                        let dst = ((t * c + ci) * h + r) * w_;
                        dxb[dst..dst + w_].copy_from_slice(&dp[src..src + w_]);
                    }
                }
            }
        }
        Ok((CpuStorage::F32(dx), Shape::from(self.input_dims)))
    }
}

/// `(dy, x) -> dw` of [`ConvForward`].
#[derive(Debug, Clone, Copy)]
struct ConvWeightGrad {
    geometry: ConvGeometry,
    weight_dims: (usize, usize, usize, usize, usize),
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "vae-cpu-conv-weight-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let grid = Grid::new(g, xl.dims())?;
        let (c_out, c, ..) = self.weight_dims;
        if dl.dims() != [grid.b, grid.t_out, c_out, grid.ho, grid.wo] || c != grid.c {
            candle_core::bail!("cpu conv backward: gradient {:?} does not match the output shape", dl.dims());
        }
        let (dy, x) = (contiguous_f32(ds, dl, "output gradient")?, contiguous_f32(xs, xl, "input")?);
        let taps = g.tap_offsets(&grid);
        let out_len = grid.t_out * c_out * grid.ho * grid.wo;
        let mut dw = vec![0f32; c_out * c * g.taps()];
        for bi in 0..grid.b {
            let dg = scatter_to_grid(&dy[bi * out_len..][..out_len], &grid, c_out);
            let p = pad_channel_major(
                &x[bi * grid.t_in * grid.frame_len()..][..grid.t_in * grid.frame_len()],
                &grid,
                g.pad,
            );
            for &(tap, off) in &taps {
                gemm_f32(
                    (c_out, c, grid.span()),
                    &mut dw,
                    tap,
                    (c * g.taps(), g.taps()),
                    true,
                    &dg,
                    0,
                    (grid.out_cols(), 1),
                    &p,
                    off,
                    (1, grid.in_cols()),
                );
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from(self.weight_dims)))
    }
}

/// Whether [`conv`] handles this device / dtype (CPU f32).
pub fn supported(device: &candle_core::Device, dtype: candle_core::DType) -> bool {
    device.is_cpu() && dtype == candle_core::DType::F32
}

/// Stride-1 convolution of `x` `[B, T_in, C, H, W]` (time padding already
/// applied) with `w` `[C_out, C, kt, kh, kw]` and spatial zero padding
/// `pad`: `[B, T_in - kt + 1, C_out, Ho, Wo]`, no bias. Differentiable in
/// both arguments.
pub fn conv(x: &Tensor, w: &Tensor, pad: usize) -> Result<Tensor> {
    let (_, _, kt, kh, kw) = w.dims5()?;
    x.contiguous()?.apply_op2(&w.contiguous()?, ConvForward(ConvGeometry { kt, kh, kw, pad }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same convolution by candle's conv2d over time-stacked frames.
    fn reference(x: &Tensor, w: &Tensor, pad: usize) -> Tensor {
        let (b, t_in, c, h, wd) = x.dims5().unwrap();
        let (co, _, kt, kh, kw) = w.dims5().unwrap();
        let t_out = t_in - kt + 1;
        let taps: Vec<Tensor> = (0..kt).map(|k| x.narrow(1, k, t_out).unwrap()).collect();
        let stacked = Tensor::cat(&taps, 2).unwrap().reshape((b * t_out, kt * c, h, wd)).unwrap();
        let w2 = w.permute((0, 2, 1, 3, 4)).unwrap().contiguous().unwrap().reshape((co, kt * c, kh, kw)).unwrap();
        let y = stacked.conv2d(&w2, pad, 1, 1, 1).unwrap();
        let (_, _, ho, wo) = y.dims4().unwrap();
        y.reshape((b, t_out, co, ho, wo)).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn forward_matches_candle_conv() {
        let dev = Device::Cpu;
        for (kt, k, pad) in [(3, 3, 1), (1, 3, 1), (3, 1, 0), (1, 1, 0), (2, 3, 0)] {
            let x = Tensor::randn(0f32, 1.0, (2, 4, 5, 6, 7), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (3, 5, kt, k, k), &dev).unwrap();
            let d = max_diff(&conv(&x, &w, pad).unwrap(), &reference(&x, &w, pad));
            assert!(d < 1e-4, "kernel {kt}x{k}x{k} pad {pad}: {d}");
        }
    }

    #[test]
    fn gradients_match_candle_conv() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4, 3, 5, 6), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3, 3, 3, 3), &dev).unwrap()).unwrap();
        let target = Tensor::randn(0f32, 1.0, (2, 2, 4, 5, 6), &dev).unwrap();
        let loss = |y: Tensor| (y * &target).unwrap().sum_all().unwrap();
        let ours = loss(conv(x.as_tensor(), w.as_tensor(), 1).unwrap()).backward().unwrap();
        let theirs = loss(reference(x.as_tensor(), w.as_tensor(), 1)).backward().unwrap();
        for (name, v) in [("input", &x), ("weight", &w)] {
            let (a, b) = (ours.get(v).unwrap(), theirs.get(v).unwrap());
            let d = max_diff(a, b);
            assert!(d < 1e-3, "{name} gradient differs by {d}");
        }
    }

    /// The same check at the sizes training runs (a 64x64 crop of the mini
    /// decoder's top level, batch 1 and 2, every kernel shape the VAE uses):
    /// large enough that the GEMMs take their blocked / threaded paths.
    #[test]
    fn gradients_match_candle_conv_on_vae_shapes() {
        let dev = Device::Cpu;
        for (b, t_in, c, co, hw, kt, k, pad) in [
            (1, 5, 8, 12, 32, 3, 3, 1),
            (2, 3, 16, 8, 24, 1, 3, 1),
            (1, 4, 16, 32, 16, 1, 1, 0),
            (1, 6, 12, 16, 20, 3, 1, 0),
        ] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t_in, c, hw, hw), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.2, (co, c, kt, k, k), &dev).unwrap()).unwrap();
            let ho = hw + 2 * pad - k + 1;
            let target = Tensor::randn(0f32, 1.0, (b, t_in - kt + 1, co, ho, ho), &dev).unwrap();
            let loss = |y: Tensor| (y * &target).unwrap().sum_all().unwrap();
            let ours = loss(conv(x.as_tensor(), w.as_tensor(), pad).unwrap()).backward().unwrap();
            let theirs = loss(reference(x.as_tensor(), w.as_tensor(), pad)).backward().unwrap();
            for (name, v) in [("input", &x), ("weight", &w)] {
                let (a, r) = (ours.get(v).unwrap(), theirs.get(v).unwrap());
                let scale = r.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                let d = max_diff(a, r);
                assert!(
                    d <= 1e-4 * scale.max(1.0),
                    "{name} gradient of {b}x{t_in}x{c}->{co} {hw}px {kt}x{k}x{k}: differs by {d} (max {scale})"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 3, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((2, 3, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(conv(&x, &w, 1).is_err(), "2 frames cannot feed a 3-frame kernel");
        let w = Tensor::zeros((2, 5, 1, 3, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(conv(&x, &w, 1).is_err(), "channel mismatch");
        let x16 = x.to_dtype(candle_core::DType::F16).unwrap();
        let w = Tensor::zeros((2, 3, 1, 3, 3), candle_core::DType::F16, &dev).unwrap();
        assert!(conv(&x16, &w, 1).is_err(), "f16 is not handled by this kernel");
        let empty = Tensor::zeros((1, 3, 0, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let w0 = Tensor::zeros((2, 0, 1, 3, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(conv(&empty, &w0, 1).is_err(), "zero channels are an error, not a panic");
    }

    /// Throughput on VAE decoder shapes (`cargo test --release --lib cpu_conv -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn throughput() {
        let dev = Device::Cpu;
        for (c, hw, t) in [(8usize, 64usize, 12usize), (16, 32, 12), (32, 16, 6), (32, 64, 12), (64, 64, 12)] {
            let x = Tensor::randn(0f32, 1.0, (1, t + 2, c, hw, hw), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (c, c, 3, 3, 3), &dev).unwrap();
            let mut best = [f64::MAX; 2];
            for _ in 0..3 {
                let t0 = std::time::Instant::now();
                conv(&x, &w, 1).unwrap();
                best[0] = best[0].min(t0.elapsed().as_secs_f64());
                let t0 = std::time::Instant::now();
                reference(&x, &w, 1);
                best[1] = best[1].min(t0.elapsed().as_secs_f64());
            }
            let gflop = 2.0 * (c * c * 27 * hw * hw * t) as f64 / 1e9;
            eprintln!(
                "C={c} {hw}x{hw} T={t}: gemm kernel {:.1} ms ({:.1} GFLOP/s), candle conv2d {:.1} ms ({:.1} GFLOP/s)",
                best[0] * 1e3,
                gflop / best[0],
                best[1] * 1e3,
                gflop / best[1]
            );
        }
    }
}
