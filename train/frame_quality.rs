//! Full-reference image quality of decoded clips against their originals:
//! PSNR and SSIM on 8-bit frames laid out like the video tensors
//! (`[1, 3, T, H, W]` flattened: channel, then frame, row, column).
//!
//! SSIM follows Wang et al. (2004) with the constants `C1 = (0.01 * 255)^2`,
//! `C2 = (0.03 * 255)^2` over 8 x 8 windows with uniform weights at a
//! stride of 4 (the fast variant of the paper's sliding window), averaged
//! over every window of every channel and frame.

use super::TrainError;
use crate::eval::face_layout::PixelBox;

/// Side and stride of the SSIM windows (pixels).
const SSIM_WINDOW: usize = 8;
const SSIM_STRIDE: usize = 4;

/// Peak signal-to-noise ratio in dB of `b` against `a` (99 when equal).
pub fn psnr_db(a: &[u8], b: &[u8]) -> f64 {
    let sq: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    psnr_from_mse(sq / a.len().max(1) as f64)
}

/// PSNR in dB of 8-bit pixels with mean squared error `mse` (99 when 0).
pub fn psnr_from_mse(mse: f64) -> f64 {
    if mse > 0.0 {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    } else {
        99.0
    }
}

/// PSNR of `b` against `a` (both `channels * frames * height * width`)
/// over the pixels of `region` in every plane.
pub fn region_psnr_db(a: &[u8], b: &[u8], height: usize, width: usize, region: PixelBox) -> f64 {
    let PixelBox { x0, y0, x1, y1 } = region;
    let plane = height * width;
    let (mut sq, mut n) = (0f64, 0usize);
    for p in 0..a.len().min(b.len()) / plane.max(1) {
        for y in y0..y1.min(height) {
            let row = p * plane + y * width;
            for x in x0..x1.min(width) {
                sq += (f64::from(a[row + x]) - f64::from(b[row + x])).powi(2);
                n += 1;
            }
        }
    }
    psnr_from_mse(sq / n.max(1) as f64)
}

/// Mean SSIM of `b` against `a`, both `channels * frames * height * width`.
pub fn ssim(
    a: &[u8],
    b: &[u8],
    channels: usize,
    frames: usize,
    height: usize,
    width: usize,
) -> Result<f64, TrainError> {
    let plane = height * width;
    if a.len() != b.len() || a.len() != channels * frames * plane {
        return Err(TrainError::Invalid(format!(
            "ssim: {} and {} values for {channels} x {frames} x {height} x {width}",
            a.len(),
            b.len()
        )));
    }
    if height < SSIM_WINDOW || width < SSIM_WINDOW {
        return Err(TrainError::Invalid(format!(
            "ssim: frames of {height} x {width} are below the {SSIM_WINDOW}-pixel window"
        )));
    }
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let n = (SSIM_WINDOW * SSIM_WINDOW) as f64;
    let (mut total, mut windows) = (0f64, 0usize);
    for p in 0..channels * frames {
        let (pa, pb) = (&a[p * plane..(p + 1) * plane], &b[p * plane..(p + 1) * plane]);
        for y0 in (0..=height - SSIM_WINDOW).step_by(SSIM_STRIDE) {
            for x0 in (0..=width - SSIM_WINDOW).step_by(SSIM_STRIDE) {
                let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0f64, 0f64, 0f64, 0f64, 0f64);
                for y in y0..y0 + SSIM_WINDOW {
                    for x in x0..x0 + SSIM_WINDOW {
                        let (u, v) = (pa[y * width + x] as f64, pb[y * width + x] as f64);
                        sa += u;
                        sb += v;
                        saa += u * u;
                        sbb += v * v;
                        sab += u * v;
                    }
                }
                let (ma, mb) = (sa / n, sb / n);
                let (va, vb, cov) = (saa / n - ma * ma, sbb / n - mb * mb, sab / n - ma * mb);
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                windows += 1;
            }
        }
    }
    Ok(total / windows.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_psnr_reads_only_the_region() {
        // 1 channel, 1 frame, 4x4: an error of 10 outside the 2x2 region
        // at (1, 1), none inside.
        let a = vec![100u8; 16];
        let mut b = vec![110u8; 16];
        for (y, x) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            b[y * 4 + x] = 100;
        }
        assert_eq!(region_psnr_db(&a, &b, 4, 4, PixelBox { x0: 1, y0: 1, x1: 3, y1: 3 }), 99.0);
        let whole = region_psnr_db(&a, &b, 4, 4, PixelBox { x0: 0, y0: 0, x1: 4, y1: 4 });
        assert!((whole - psnr_from_mse(100.0 * 12.0 / 16.0)).abs() < 1e-9, "{whole}");
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 24) as u8).collect()
    }

    #[test]
    fn identical_frames_score_one_and_noise_scores_less() -> Result<(), TrainError> {
        let a = pattern(3 * 2 * 16 * 16, 1);
        assert_eq!(ssim(&a, &a, 3, 2, 16, 16)?, 1.0);
        assert_eq!(psnr_db(&a, &a), 99.0);
        let noisy: Vec<u8> = a.iter().zip(pattern(a.len(), 7)).map(|(x, n)| x.saturating_add(n / 8)).collect();
        let s = ssim(&a, &noisy, 3, 2, 16, 16)?;
        assert!(s < 0.99 && s > 0.0, "{s}");
        // A flat grey frame keeps the mean but none of the structure.
        let grey = vec![128u8; a.len()];
        assert!(ssim(&a, &grey, 3, 2, 16, 16)? < 0.1);
        // One grey level of error everywhere: PSNR 20 log10(255) = 48.1 dB.
        let off: Vec<u8> = a.iter().map(|x| if *x < 255 { x + 1 } else { x - 1 }).collect();
        assert!((psnr_db(&a, &off) - 48.13).abs() < 0.01);
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let a = vec![0u8; 3 * 16 * 16];
        assert!(ssim(&a, &a[1..], 3, 1, 16, 16).is_err());
        assert!(ssim(&a, &a, 3, 1, 4, 64).is_err());
    }
}
