//! Anti-aliased 2-D rasteriser of filled shapes, built on signed distance
//! functions (SDFs).
//!
//! Every shape is an SDF in a *local* coordinate frame (the synth draws in a
//! 256 x 256 design space); a [`Xform`] (uniform scale, rotation,
//! translation) maps local coordinates to pixels. For each pixel centre in
//! the shape's bounding box the SDF is evaluated in local units, converted
//! to pixels, and turned into coverage `clamp(0.5 - d_px, 0, 1)`: an exact
//! one-pixel box-filter approximation at edges, so edges are smooth at any
//! scale. Colours are blended in linear-ish float RGB (`[0, 1]`) and
//! quantised once in [`Canvas::to_frame`].
//!
//! Primitives: [`sd_ellipse`], [`sd_rounded_box`], [`sd_polygon`],
//! [`sd_segment`] (capsule), [`sd_polyline`] (tapered stroke),
//! [`quad_bezier`] (curve to polyline). Shapes combine with `min` (union),
//! `max` (intersection) and `abs(d) - t` (outline ring) before filling.

use crate::media::frame::RgbFrame;

/// Linear RGB colour, components in `[0, 1]`.
pub type Rgb = [f32; 3];

/// Similarity transform local -> pixel: `p_px = scale * R(angle) * p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Xform {
    pub scale: f32,
    pub cos: f32,
    pub sin: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Xform {
    /// Pure scale (design space -> pixels).
    pub fn scale(scale: f32) -> Self {
        Self { scale, cos: 1.0, sin: 0.0, tx: 0.0, ty: 0.0 }
    }

    /// This transform preceded by a rotation of `angle` radians about the
    /// local point `(px, py)` and a local translation `(dx, dy)`.
    pub fn rotated_about(&self, px: f32, py: f32, angle: f32, dx: f32, dy: f32) -> Self {
        // local' = R(angle) (p - pivot) + pivot + d ; then self.
        let (s, c) = angle.sin_cos();
        let ox = px + dx - (c * px - s * py);
        let oy = py + dy - (s * px + c * py);
        let (tx, ty) = self.apply(ox, oy);
        Self { scale: self.scale, cos: self.cos * c - self.sin * s, sin: self.sin * c + self.cos * s, tx, ty }
    }

    /// Local point -> pixel.
    #[inline]
    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (self.scale * (self.cos * x - self.sin * y) + self.tx, self.scale * (self.sin * x + self.cos * y) + self.ty)
    }

    /// Pixel -> local point.
    #[inline]
    pub fn invert(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = ((x - self.tx) / self.scale, (y - self.ty) / self.scale);
        (self.cos * dx + self.sin * dy, -self.sin * dx + self.cos * dy)
    }
}

/// A float RGB canvas.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Canvas {
    /// A black canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height, data: vec![0.0; width * height * 3] }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Colour of one pixel.
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Fill with a vertical gradient from `top` to `bottom`.
    pub fn vertical_gradient(&mut self, top: Rgb, bottom: Rgb) {
        let h = self.height.max(2) as f32 - 1.0;
        for y in 0..self.height {
            let t = y as f32 / h;
            let c = mix(top, bottom, t);
            for px in self.data[y * self.width * 3..(y + 1) * self.width * 3].chunks_exact_mut(3) {
                px.copy_from_slice(&c);
            }
        }
    }

    /// Fill the shape `sdf(x, y) < 0` (local units) with `color` at opacity
    /// `alpha`. `bbox = [x0, y0, x1, y1]` must contain the shape (local
    /// units); pixels outside it are not visited.
    pub fn fill<F: Fn(f32, f32) -> f32>(&mut self, xf: &Xform, bbox: [f32; 4], color: Rgb, alpha: f32, sdf: F) {
        if alpha <= 0.0 {
            return;
        }
        let Some((x0, y0, x1, y1)) = self.pixel_bounds(xf, bbox) else { return };
        let scale = xf.scale;
        // Tiles whose centre is far from the edge are wholly inside or
        // outside (SDFs change by at most ~1 px per px; the margin doubles
        // the tile's half diagonal to cover the approximate ellipse SDF).
        const TILE: usize = 8;
        let margin = TILE as f32 * std::f32::consts::SQRT_2 + 1.0;
        let mut ty = y0;
        while ty < y1 {
            let ty1 = (ty + TILE).min(y1);
            let mut tx = x0;
            while tx < x1 {
                let tx1 = (tx + TILE).min(x1);
                let (cx, cy) = xf.invert((tx + tx1) as f32 * 0.5, (ty + ty1) as f32 * 0.5);
                let dc = sdf(cx, cy) * scale;
                if dc > margin {
                    tx = tx1;
                    continue;
                }
                let solid = dc < -margin;
                for py in ty..ty1 {
                    let row = py * self.width;
                    for px in tx..tx1 {
                        let cov = if solid {
                            alpha
                        } else {
                            let (lx, ly) = xf.invert(px as f32 + 0.5, py as f32 + 0.5);
                            (0.5 - sdf(lx, ly) * scale).clamp(0.0, 1.0) * alpha
                        };
                        if cov <= 0.0 {
                            continue;
                        }
                        let i = (row + px) * 3;
                        let p = &mut self.data[i..i + 3];
                        p[0] += (color[0] - p[0]) * cov;
                        p[1] += (color[1] - p[1]) * cov;
                        p[2] += (color[2] - p[2]) * cov;
                    }
                }
                tx = tx1;
            }
            ty = ty1;
        }
    }

    /// Pixel rectangle `[x0, x1) x [y0, y1)` covering a local bbox (+1 px).
    fn pixel_bounds(&self, xf: &Xform, b: [f32; 4]) -> Option<(usize, usize, usize, usize)> {
        if !b.iter().all(|v| v.is_finite()) {
            return None;
        }
        let corners = [xf.apply(b[0], b[1]), xf.apply(b[2], b[1]), xf.apply(b[0], b[3]), xf.apply(b[2], b[3])];
        let (mut lx, mut ly, mut hx, mut hy) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for (x, y) in corners {
            lx = lx.min(x);
            ly = ly.min(y);
            hx = hx.max(x);
            hy = hy.max(y);
        }
        if !(lx.is_finite() && ly.is_finite() && hx.is_finite() && hy.is_finite()) {
            return None;
        }
        let x0 = (lx - 1.0).floor().max(0.0) as usize;
        let y0 = (ly - 1.0).floor().max(0.0) as usize;
        let x1 = ((hx + 2.0).ceil().max(0.0) as usize).min(self.width);
        let y1 = ((hy + 2.0).ceil().max(0.0) as usize).min(self.height);
        (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
    }

    /// Quantise to an 8-bit RGB frame.
    pub fn to_frame(&self) -> RgbFrame {
        let data = self.data.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8).collect();
        RgbFrame { width: self.width, height: self.height, data }
    }
}

/// Linear interpolation of colours.
#[inline]
pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// `c` scaled towards black (`k < 1`) or white (`k > 1`, via mix).
pub fn shade(c: Rgb, k: f32) -> Rgb {
    if k <= 1.0 {
        [c[0] * k, c[1] * k, c[2] * k]
    } else {
        mix(c, [1.0; 3], (k - 1.0).min(1.0))
    }
}

/// 8-bit sRGB-ish triple to [`Rgb`].
pub fn rgb8(r: u8, g: u8, b: u8) -> Rgb {
    [r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0]
}

/// Approximate signed distance to an axis-aligned ellipse of radii
/// `(rx, ry)` centred at the origin, evaluated at `(x, y)` (rotate the point
/// first for a rotated ellipse). Exact on the boundary's normal direction to
/// first order, which is all anti-aliasing needs.
#[inline]
pub fn sd_ellipse(x: f32, y: f32, rx: f32, ry: f32) -> f32 {
    let (rx, ry) = (rx.max(1e-3), ry.max(1e-3));
    let (ux, uy) = (x / rx, y / ry);
    let k0 = (ux * ux + uy * uy).sqrt();
    if k0 < 1e-6 {
        return -rx.min(ry);
    }
    let (vx, vy) = (x / (rx * rx), y / (ry * ry));
    let k1 = (vx * vx + vy * vy).sqrt();
    k0 * (k0 - 1.0) / k1
}

/// Signed distance to a box of half sizes `(hx, hy)` with corner radius `r`,
/// centred at the origin.
#[inline]
pub fn sd_rounded_box(x: f32, y: f32, hx: f32, hy: f32, r: f32) -> f32 {
    let r = r.min(hx).min(hy).max(0.0);
    let qx = x.abs() - hx + r;
    let qy = y.abs() - hy + r;
    let ox = qx.max(0.0);
    let oy = qy.max(0.0);
    (ox * ox + oy * oy).sqrt() + qx.max(qy).min(0.0) - r
}

/// Distance from `p` to segment `a-b` and the projection parameter in `[0, 1]`.
#[inline]
pub fn segment_distance(px: f32, py: f32, a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    let (pax, pay) = (px - a.0, py - a.1);
    let (bax, bay) = (b.0 - a.0, b.1 - a.1);
    let len2 = bax * bax + bay * bay;
    let h = if len2 > 0.0 { ((pax * bax + pay * bay) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (dx, dy) = (pax - bax * h, pay - bay * h);
    ((dx * dx + dy * dy).sqrt(), h)
}

/// Signed distance to a capsule (segment `a-b` thickened by radius `r`).
#[inline]
pub fn sd_segment(x: f32, y: f32, a: (f32, f32), b: (f32, f32), r: f32) -> f32 {
    segment_distance(x, y, a, b).0 - r
}

/// Signed distance to a stroke along `points`, with the radius interpolated
/// linearly from `r0` at the first point to `r1` at the last (a tapered
/// brush stroke). An empty polyline is infinitely far.
pub fn sd_polyline(x: f32, y: f32, points: &[(f32, f32)], r0: f32, r1: f32) -> f32 {
    let n = points.len();
    if n == 0 {
        return f32::MAX;
    }
    if n == 1 {
        return sd_segment(x, y, points[0], points[0], r0);
    }
    let segs = (n - 1) as f32;
    let mut best = f32::MAX;
    for i in 0..n - 1 {
        let (d, h) = segment_distance(x, y, points[i], points[i + 1]);
        let t = (i as f32 + h) / segs;
        best = best.min(d - (r0 + (r1 - r0) * t));
    }
    best
}

/// Exact signed distance to a simple polygon (negative inside).
pub fn sd_polygon(x: f32, y: f32, v: &[(f32, f32)]) -> f32 {
    let n = v.len();
    if n < 3 {
        return f32::MAX;
    }
    let mut d = {
        let (dx, dy) = (x - v[0].0, y - v[0].1);
        dx * dx + dy * dy
    };
    let mut sign = 1.0f32;
    let mut j = n - 1;
    for i in 0..n {
        let (ex, ey) = (v[j].0 - v[i].0, v[j].1 - v[i].1);
        let (wx, wy) = (x - v[i].0, y - v[i].1);
        let len2 = ex * ex + ey * ey;
        let h = if len2 > 0.0 { ((wx * ex + wy * ey) / len2).clamp(0.0, 1.0) } else { 0.0 };
        let (bx, by) = (wx - ex * h, wy - ey * h);
        d = d.min(bx * bx + by * by);
        let c1 = y >= v[i].1;
        let c2 = y < v[j].1;
        let c3 = ex * wy > ey * wx;
        if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
            sign = -sign;
        }
        j = i;
    }
    sign * d.sqrt()
}

/// Bounding box `[x0, y0, x1, y1]` of points, grown by `pad`.
pub fn bbox_of(points: &[(f32, f32)], pad: f32) -> [f32; 4] {
    let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
    for &(x, y) in points {
        b[0] = b[0].min(x);
        b[1] = b[1].min(y);
        b[2] = b[2].max(x);
        b[3] = b[3].max(y);
    }
    [b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad]
}

/// A quadratic Bezier `p0 -> p2` with control `p1`, as `n + 1` points.
pub fn quad_bezier(p0: (f32, f32), p1: (f32, f32), p2: (f32, f32), n: usize) -> Vec<(f32, f32)> {
    let n = n.max(1);
    (0..=n)
        .map(|i| {
            let t = i as f32 / n as f32;
            let u = 1.0 - t;
            (u * u * p0.0 + 2.0 * u * t * p1.0 + t * t * p2.0, u * u * p0.1 + 2.0 * u * t * p1.1 + t * t * p2.1)
        })
        .collect()
}

/// Rotate `(x, y)` about `(cx, cy)` by `-angle` (to evaluate a shape rotated
/// by `+angle` in its own axis-aligned frame).
#[inline]
pub fn unrotate(x: f32, y: f32, cx: f32, cy: f32, angle: f32) -> (f32, f32) {
    let (s, c) = angle.sin_cos();
    let (dx, dy) = (x - cx, y - cy);
    (c * dx + s * dy, -s * dx + c * dy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circle_area_and_soft_edges() {
        let mut c = Canvas::new(64, 64);
        let xf = Xform::scale(1.0);
        let r = 20.0;
        c.fill(&xf, [12.0, 12.0, 52.0, 52.0], [1.0; 3], 1.0, |x, y| sd_ellipse(x - 32.0, y - 32.0, r, r));
        let mut area = 0.0f64;
        let mut partial = 0;
        for y in 0..64 {
            for x in 0..64 {
                let v = c.pixel(x, y)[0];
                area += v as f64;
                if v > 0.02 && v < 0.98 {
                    partial += 1;
                }
            }
        }
        let want = std::f64::consts::PI * 20.0 * 20.0;
        assert!((area - want).abs() / want < 0.01, "area {area} vs {want}");
        // Roughly one partially covered pixel per pixel of circumference.
        assert!(partial > 80 && partial < 200, "partial pixels {partial}");
        // Centre solid, far corner untouched.
        assert_eq!(c.pixel(32, 32), [1.0; 3]);
        assert_eq!(c.pixel(0, 0), [0.0; 3]);
    }

    #[test]
    fn polygon_sdf_signs_and_distance() {
        let sq = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)];
        assert!((sd_polygon(5.0, 5.0, &sq) + 5.0).abs() < 1e-5);
        assert!((sd_polygon(13.0, 5.0, &sq) - 3.0).abs() < 1e-5);
        assert!((sd_rounded_box(13.0, 0.0, 10.0, 10.0, 0.0) - 3.0).abs() < 1e-5);
        assert!((sd_segment(0.0, 4.0, (-5.0, 0.0), (5.0, 0.0), 1.0) - 3.0).abs() < 1e-5);
        assert!(sd_polygon(0.0, 0.0, &sq[..2]) > 1e6);
    }

    #[test]
    fn xform_round_trips_and_rotates() {
        let xf = Xform::scale(2.0).rotated_about(10.0, 10.0, 0.3, 1.0, -2.0);
        let (px, py) = xf.apply(3.0, 4.0);
        let (x, y) = xf.invert(px, py);
        assert!((x - 3.0).abs() < 1e-4 && (y - 4.0).abs() < 1e-4);
        // The pivot only moves by the translation.
        let (px, py) = xf.apply(10.0, 10.0);
        assert!((px - 22.0).abs() < 1e-4 && (py - 16.0).abs() < 1e-4);
    }

    #[test]
    fn shapes_outside_the_canvas_are_ignored() {
        let mut c = Canvas::new(8, 8);
        c.fill(&Xform::scale(1.0), [100.0, 100.0, 120.0, 120.0], [1.0; 3], 1.0, |x, y| {
            sd_ellipse(x - 110.0, y - 110.0, 5.0, 5.0)
        });
        c.fill(&Xform::scale(1.0), [f32::NAN, 0.0, 1.0, 1.0], [1.0; 3], 1.0, |_, _| -1.0);
        assert!(c.to_frame().data.iter().all(|&v| v == 0));
    }
}
