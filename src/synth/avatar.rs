//! Draws one frame of a cartoon person ([`Identity`] in a [`Pose`]) with
//! the rasteriser of [`super::render`].
//!
//! Design space is 256 x 256 (x right, y down); a frame shows the window
//! of [`FRAMING`] scaled to the frame size.
//! Draw order (back to front): background, long hair, torso and neckline,
//! neck, arms and hands, ears, face, beard, eyes, brows, nose, mouth,
//! glasses, hair, hat. The head is drawn through its own transform: roll
//! rotates it about the neck, yaw and pitch translate it and shift the
//! facial features further (a cheap parallax that reads as a head turn).

use super::framing::FRAMING;
use super::identity::{HairStyle, HatStyle, Identity, Neckline};
use super::motion::Pose;
use super::render::{
    bbox_of, mix, quad_bezier, sd_ellipse, sd_polygon, sd_polyline, sd_rounded_box, sd_segment, shade, unrotate,
    Canvas, Rgb, Xform,
};
use crate::media::frame::RgbFrame;

/// Side length of the design space.
pub const DESIGN_SIZE: f32 = 256.0;

#[allow(clippy::too_many_arguments)]
fn ellipse(c: &mut Canvas, xf: &Xform, (cx, cy): (f32, f32), rx: f32, ry: f32, angle: f32, col: Rgb, alpha: f32) {
    let r = rx.max(ry) + 1.0;
    c.fill(xf, [cx - r, cy - r, cx + r, cy + r], col, alpha, |x, y| {
        let (u, v) = unrotate(x, y, cx, cy, angle);
        sd_ellipse(u, v, rx, ry)
    });
}

fn capsule(c: &mut Canvas, xf: &Xform, a: (f32, f32), b: (f32, f32), r: f32, col: Rgb) {
    c.fill(xf, bbox_of(&[a, b], r + 1.0), col, 1.0, |x, y| sd_segment(x, y, a, b, r));
}

fn stroke(c: &mut Canvas, xf: &Xform, pts: &[(f32, f32)], r0: f32, r1: f32, col: Rgb, alpha: f32) {
    c.fill(xf, bbox_of(pts, r0.max(r1) + 1.0), col, alpha, |x, y| sd_polyline(x, y, pts, r0, r1));
}

fn polygon(c: &mut Canvas, xf: &Xform, pts: &[(f32, f32)], col: Rgb, alpha: f32) {
    c.fill(xf, bbox_of(pts, 1.0), col, alpha, |x, y| sd_polygon(x, y, pts));
}

fn smoothstep(a: f32, b: f32, x: f32) -> f32 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Body anchor points of a pose (design space).
struct Body {
    cx: f32,
    shoulder_y: f32,
}

fn body(id: &Identity, pose: &Pose) -> Body {
    Body { cx: 128.0 + pose.sway, shoulder_y: id.shoulder_y - 2.5 * pose.breath }
}

/// Shoulder, elbow and hand of arm `side` (0 = viewer's left).
fn arm_points(id: &Identity, pose: &Pose, side: usize) -> [(f32, f32); 3] {
    let b = body(id, pose);
    let s = if side == 0 { -1.0 } else { 1.0 };
    let arm = pose.arms[side.min(1)];
    let shoulder = (b.cx + s * (id.shoulder_half_width - 13.0), b.shoulder_y + 14.0);
    let elbow = (shoulder.0 + s * (8.0 + 6.0 * arm.raise), shoulder.1 + 68.0 - 12.0 * arm.raise);
    let raise = arm.raise.clamp(0.0, 1.0);
    let hand_x = b.cx + s * (id.shoulder_half_width * 0.55 + 22.0 * arm.spread.clamp(-1.0, 1.0) * raise);
    let hand_y = 268.0 - 100.0 * raise;
    [shoulder, elbow, (hand_x, hand_y)]
}

/// Hand centres `[viewer's left, viewer's right]` in normalised frame
/// coordinates (0..1, beyond 1 when a hand rests below the frame).
pub fn hand_positions(id: &Identity, pose: &Pose) -> [(f32, f32); 2] {
    [0, 1].map(|side| FRAMING.normalised(arm_points(id, pose, side)[2]))
}

/// Render `id` in `pose` as a `size` x `size` frame.
/// The head's sideways and vertical shift in avatar units (sway and yaw
/// move it sideways, pitch and breathing up and down).
fn head_shift(pose: &Pose) -> (f32, f32) {
    (pose.sway + pose.yaw * 0.35, pose.pitch * 0.25 + 1.2 * (pose.breath - 0.5))
}

/// The head's transform: the frame's, rolled about the chin and shifted.
fn head_xform(frame: &Xform, id: &Identity, pose: &Pose) -> Xform {
    let (hx, hy) = id.head_center;
    let (dx, dy) = head_shift(pose);
    frame.rotated_about(hx, hy + id.face_ry, pose.roll.to_radians(), dx, dy)
}

/// The mouth's anchor in head coordinates (it moves across the face
/// with yaw and pitch).
fn mouth_anchor(id: &Identity, pose: &Pose) -> (f32, f32) {
    let (hx, hy) = id.head_center;
    (hx + pose.yaw * 0.5 * 0.85, hy + id.mouth_drop + pose.pitch * 0.3 * 0.9)
}

/// Where the mouth's anchor (the line between the lips) lands in a
/// `size`-pixel frame drawn for `pose`, in pixels: the ground-truth mouth
/// position per frame (the lip-sync expert reads the latents there).
pub fn mouth_centre(id: &Identity, pose: &Pose, size: usize) -> (f32, f32) {
    let (x, y) = mouth_anchor(id, pose);
    head_xform(&FRAMING.xform(size), id, pose).apply(x, y)
}

pub fn draw_avatar(id: &Identity, pose: &Pose, size: usize) -> RgbFrame {
    let mut c = Canvas::new(size, size);
    let xf = FRAMING.xform(size);
    c.vertical_gradient(id.bg_top, id.bg_bottom);
    for &(x, y, r, col, a) in &id.bg_discs {
        ellipse(&mut c, &xf, (x, y), r, r, 0.0, col, a);
    }
    let b = body(id, pose);
    let (hx, hy) = id.head_center;
    let head_dx = head_shift(pose).0;
    let hxf = head_xform(&xf, id, pose);

    // Long hair behind everything of the person.
    match id.hair_style {
        HairStyle::Long => {
            let top = hy - id.face_ry * 0.9;
            let bottom = hy + id.face_ry + 58.0;
            let w = id.face_rx * 1.3;
            c.fill(&hxf, [hx - w - 1.0, top - 1.0, hx + w + 1.0, bottom + 1.0], shade(id.hair, 0.85), 1.0, |x, y| {
                sd_rounded_box(x - hx, y - (top + bottom) / 2.0, w, (bottom - top) / 2.0, w * 0.8)
            });
        }
        HairStyle::Bob => {
            let w = id.face_rx * 1.22;
            let top = hy - id.face_ry;
            let bottom = hy + id.face_ry * 0.75;
            c.fill(&hxf, [hx - w - 1.0, top - 1.0, hx + w + 1.0, bottom + 1.0], shade(id.hair, 0.85), 1.0, |x, y| {
                sd_rounded_box(x - hx, y - (top + bottom) / 2.0, w, (bottom - top) / 2.0, w * 0.6)
            });
        }
        _ => {}
    }

    draw_torso(&mut c, &xf, id, &b);
    draw_neck(&mut c, &xf, id, &b, head_dx);
    for side in 0..2 {
        draw_arm(&mut c, &xf, id, pose, side);
    }
    draw_head(&mut c, &hxf, id, pose);
    c.to_frame()
}

fn draw_torso(c: &mut Canvas, xf: &Xform, id: &Identity, b: &Body) {
    let outer = id.jacket.unwrap_or(id.shirt);
    let (cx, top) = (b.cx, b.shoulder_y);
    let hw = id.shoulder_half_width;
    c.fill(xf, [cx - hw - 2.0, top - 2.0, cx + hw + 2.0, 300.0], shade(outer, 0.6), 1.0, |x, y| {
        sd_rounded_box(x - cx, y - (top + 110.0), hw, 110.0, 30.0) - 1.2
    });
    c.fill(xf, [cx - hw - 1.0, top - 1.0, cx + hw + 1.0, 300.0], outer, 1.0, |x, y| {
        sd_rounded_box(x - cx, y - (top + 110.0), hw, 110.0, 30.0)
    });
    let nw = id.neck_half_width;
    if id.jacket.is_some() {
        // Open jacket: a shirt panel in the middle, lapels as darker edges.
        let panel =
            [(cx - nw * 1.6, top - 1.0), (cx + nw * 1.6, top - 1.0), (cx + nw * 0.9, 270.0), (cx - nw * 0.9, 270.0)];
        polygon(c, xf, &panel, id.shirt, 1.0);
        for s in [-1.0f32, 1.0] {
            let lapel = [(cx + s * nw * 1.6, top - 1.0), (cx + s * nw * 2.3, top + 6.0), (cx + s * nw * 0.9, 262.0)];
            polygon(c, xf, &lapel, shade(outer, 0.8), 1.0);
        }
    }
    match id.neckline {
        Neckline::Round => {
            ellipse(c, xf, (cx, top), nw * 1.35, 12.0, 0.0, shade(id.skin, 0.92), 1.0);
            stroke(
                c,
                xf,
                &quad_bezier((cx - nw * 1.35, top), (cx, top + 24.0), (cx + nw * 1.35, top), 12),
                1.3,
                1.3,
                shade(id.shirt, 0.75),
                1.0,
            );
        }
        Neckline::VNeck => {
            let v = [(cx - nw * 1.3, top - 1.0), (cx + nw * 1.3, top - 1.0), (cx, top + 26.0)];
            polygon(c, xf, &v, shade(id.skin, 0.92), 1.0);
            stroke(
                c,
                xf,
                &[(cx - nw * 1.3, top), (cx, top + 26.0), (cx + nw * 1.3, top)],
                1.3,
                1.3,
                shade(id.shirt, 0.75),
                1.0,
            );
        }
        Neckline::Collar => {
            let v = [(cx - nw * 1.1, top - 1.0), (cx + nw * 1.1, top - 1.0), (cx, top + 14.0)];
            polygon(c, xf, &v, shade(id.skin, 0.92), 1.0);
            let collar = mix(id.shirt, [1.0; 3], 0.35);
            for s in [-1.0f32, 1.0] {
                let flap =
                    [(cx + s * nw * 1.15, top - 3.0), (cx + s * nw * 2.0, top + 4.0), (cx + s * nw * 0.2, top + 18.0)];
                polygon(c, xf, &flap, collar, 1.0);
                stroke(c, xf, &[flap[0], flap[1], flap[2]], 0.6, 0.6, shade(collar, 0.7), 1.0);
            }
        }
    }
}

fn draw_neck(c: &mut Canvas, xf: &Xform, id: &Identity, b: &Body, head_dx: f32) {
    let (hx, hy) = id.head_center;
    let top = hy + id.face_ry * 0.4;
    let bottom = b.shoulder_y + 8.0;
    let cx = (hx + head_dx + b.cx) / 2.0;
    let nw = id.neck_half_width;
    c.fill(xf, [cx - nw - 1.0, top - 1.0, cx + nw + 1.0, bottom + 1.0], shade(id.skin, 0.93), 1.0, |x, y| {
        sd_rounded_box(x - cx, y - (top + bottom) / 2.0, nw, (bottom - top) / 2.0, 4.0)
    });
    // Shadow under the jaw (the chin covers its top).
    ellipse(
        c,
        xf,
        (hx + head_dx, hy + id.face_ry * id.chin_drop + 2.0),
        nw * 1.05,
        7.0,
        0.0,
        shade(id.skin, 0.75),
        0.6,
    );
}

fn draw_arm(c: &mut Canvas, xf: &Xform, id: &Identity, pose: &Pose, side: usize) {
    let [s, e, h] = arm_points(id, pose, side);
    let sleeve = shade(id.jacket.unwrap_or(id.shirt), 0.88);
    let edge = shade(sleeve, 0.6);
    // Outline first, so the arm reads against a torso of the same colour.
    capsule(c, xf, s, e, 14.2, edge);
    capsule(c, xf, e, h, 11.7, edge);
    capsule(c, xf, s, e, 13.0, sleeve);
    capsule(c, xf, e, h, 10.5, sleeve);
    let dir = ((h.0 - e.0), (h.1 - e.1));
    let len = (dir.0 * dir.0 + dir.1 * dir.1).sqrt().max(1e-3);
    let (ux, uy) = (dir.0 / len, dir.1 / len);
    let wrist = (h.0 - ux * 7.0, h.1 - uy * 7.0);
    capsule(c, xf, (wrist.0 - ux * 4.0, wrist.1 - uy * 4.0), wrist, 10.0, shade(sleeve, 0.8));
    // Hand: palm, four finger strokes, thumb (pointing along the forearm).
    let angle = uy.atan2(ux) - std::f32::consts::FRAC_PI_2;
    let palm = (h.0 + ux * 5.0, h.1 + uy * 5.0);
    let skin_edge = shade(id.skin, 0.72);
    ellipse(c, xf, palm, 11.0, 12.0, angle, skin_edge, 1.0);
    ellipse(c, xf, palm, 10.0, 11.0, angle, id.skin, 1.0);
    let (px, py) = (-uy, ux);
    for k in 0..3 {
        let o = (k as f32 - 1.0) * 5.0;
        let a = (palm.0 + px * o + ux * 3.0, palm.1 + py * o + uy * 3.0);
        let b = (a.0 + ux * 7.0, a.1 + uy * 7.0);
        stroke(c, xf, &[a, b], 0.7, 0.7, skin_edge, 0.8);
    }
    let s = if side == 0 { 1.0 } else { -1.0 };
    let thumb = (palm.0 + px * s * 9.0 - ux * 2.0, palm.1 + py * s * 9.0 - uy * 2.0);
    ellipse(c, xf, thumb, 3.6, 7.0, angle + s * 0.6, skin_edge, 1.0);
    ellipse(c, xf, thumb, 2.8, 6.2, angle + s * 0.6, id.skin, 1.0);
}

fn draw_head(c: &mut Canvas, xf: &Xform, id: &Identity, pose: &Pose) {
    let (hx, hy) = id.head_center;
    let (rx, ry) = (id.face_rx, id.face_ry);
    let fdx = pose.yaw * 0.5;
    let fdy = pose.pitch * 0.3;
    let skin = id.skin;

    // Ears (+ earrings) — they shift against the yaw.
    for s in [-1.0f32, 1.0] {
        let ex = hx + s * rx * 0.97 - pose.yaw * 0.25;
        let ey = hy + 4.0 + fdy * 0.5;
        ellipse(c, xf, (ex, ey), 5.5, 9.0, s * 0.15, shade(skin, 0.9), 1.0);
        ellipse(c, xf, (ex + s * 0.5, ey), 2.5, 5.0, s * 0.15, shade(skin, 0.75), 0.5);
        if let Some(er) = id.earrings {
            ellipse(c, xf, (ex, ey + 11.0), 2.6, 2.6, 0.0, er, 1.0);
            ellipse(c, xf, (ex - 0.8, ey + 10.2), 0.8, 0.8, 0.0, mix(er, [1.0; 3], 0.7), 1.0);
        }
    }

    // Face: cranium ellipse united with a narrower jaw ellipse.
    let jaw_cy = hy + ry * 0.3;
    let jaw_ry = ry * (id.chin_drop - 0.3);
    let jaw_rx = rx * id.jaw_width;
    let face_sdf =
        |x: f32, y: f32| sd_ellipse(x - hx, y - hy, rx, ry).min(sd_ellipse(x - hx, y - jaw_cy, jaw_rx, jaw_ry));
    let face_box = [hx - rx - 1.0, hy - ry - 1.0, hx + rx + 1.0, jaw_cy + jaw_ry + 1.0];
    let outline_box = [face_box[0] - 1.5, face_box[1] - 1.5, face_box[2] + 1.5, face_box[3] + 1.5];
    c.fill(xf, outline_box, shade(skin, 0.7), 1.0, |x, y| face_sdf(x, y) - 1.0);
    c.fill(xf, face_box, skin, 1.0, face_sdf);
    // Soft side shading on the far side of the turn.
    let shade_x = hx - pose.yaw.signum() * rx * 1.05;
    c.fill(xf, face_box, shade(skin, 0.85), 0.35 * (pose.yaw.abs() / 8.0).min(1.0), |x, y| {
        face_sdf(x, y).max(sd_ellipse(x - shade_x, y - hy, rx * 0.45, ry * 1.3))
    });

    let eye_y = hy + id.eye_height + fdy;
    let mouth = mouth_anchor(id, pose);
    if id.beard {
        let hole = (mouth.0, mouth.1 + 1.0);
        c.fill(
            xf,
            [hx - rx - 3.0, hy - 1.0, hx + rx + 3.0, jaw_cy + jaw_ry + 5.0],
            shade(id.hair, 0.95),
            0.95,
            |x, y| {
                let d_jaw = sd_ellipse(x - hx, y - jaw_cy - 2.0, jaw_rx + 2.5, jaw_ry + 3.0);
                let d_line = (hy + ry * 0.28) - y + 0.4 * (x - hx).abs();
                let d_mouth =
                    sd_ellipse(x - hole.0, y - hole.1, id.mouth_half_width * 1.15, 5.0 + 7.0 * pose.mouth_open);
                d_jaw.max(d_line).max(-d_mouth)
            },
        );
    }
    if id.blush > 0.0 {
        for s in [-1.0f32, 1.0] {
            ellipse(
                c,
                xf,
                (hx + s * id.eye_spacing * 1.1 + fdx, eye_y + 12.0),
                7.0,
                4.0,
                0.0,
                [0.95, 0.45, 0.45],
                id.blush * (0.6 + 0.6 * pose.smile),
            );
        }
    }

    // Eyes.
    let open = (1.0 - pose.blink).clamp(0.0, 1.0);
    for s in [-1.0f32, 1.0] {
        let ex = hx + s * id.eye_spacing + fdx;
        let (erx, ery) = (id.eye_rx, id.eye_ry * (open * (1.0 - 0.15 * pose.smile)).max(0.0));
        if ery > 0.6 {
            let white = [0.97, 0.97, 0.96];
            ellipse(c, xf, (ex, eye_y), erx, ery, 0.0, white, 1.0);
            let ir = id.eye_ry * 0.85;
            let (ix, iy) = (ex + pose.gaze.0 * erx * 0.45, eye_y + pose.gaze.1 * id.eye_ry * 0.35);
            let clip = |x: f32, y: f32| sd_ellipse(x - ex, y - eye_y, erx, ery);
            let bx = [ix - ir - 1.0, iy - ir - 1.0, ix + ir + 1.0, iy + ir + 1.0];
            c.fill(xf, bx, id.iris, 1.0, |x, y| sd_ellipse(x - ix, y - iy, ir, ir).max(clip(x, y)));
            c.fill(xf, bx, [0.05, 0.05, 0.06], 1.0, |x, y| {
                sd_ellipse(x - ix, y - iy, ir * 0.5, ir * 0.5).max(clip(x, y))
            });
            c.fill(xf, bx, [1.0; 3], 0.9, |x, y| {
                sd_ellipse(x - ix + ir * 0.35, y - iy + ir * 0.35, ir * 0.22, ir * 0.22).max(clip(x, y))
            });
            // Upper lid line along the top of the (partly closed) eye.
            let lid: Vec<(f32, f32)> = (0..=10)
                .map(|k| {
                    let a = std::f32::consts::PI * (1.0 + k as f32 / 10.0);
                    (ex + erx * 1.05 * a.cos(), eye_y + ery * 1.05 * a.sin())
                })
                .collect();
            stroke(c, xf, &lid, 0.9, 0.9, [0.12, 0.09, 0.08], 1.0);
        } else {
            // Closed: a downward arc.
            let arc = quad_bezier((ex - erx, eye_y), (ex, eye_y + 2.5), (ex + erx, eye_y), 8);
            stroke(c, xf, &arc, 0.9, 0.9, [0.12, 0.09, 0.08], 1.0);
        }
    }

    // Eyebrows.
    let brow_col = shade(id.hair, 0.8);
    for s in [-1.0f32, 1.0] {
        let ex = hx + s * id.eye_spacing + fdx;
        let by = eye_y - id.eye_ry - 5.0 - pose.brow * 4.0;
        let inner = (ex - s * id.eye_rx * 1.1, by + 1.0 - pose.brow * 0.5);
        let outer = (ex + s * id.eye_rx * 1.25, by + 1.5);
        let pts = quad_bezier(inner, (ex, by - 2.5 - pose.brow), outer, 8);
        stroke(c, xf, &pts, id.brow_thickness, id.brow_thickness * 0.45, brow_col, 1.0);
    }

    // Nose.
    let nx = hx + fdx * 1.3;
    let ny0 = eye_y + 3.0;
    let ny1 = eye_y + 3.0 + id.nose_len;
    let nose = quad_bezier((nx - 0.5, ny0), (nx + 3.0, ny1 - 2.0), (nx - 2.5, ny1 + 1.0), 8);
    stroke(c, xf, &nose, 0.6, 1.0, shade(skin, 0.7), 0.9);
    ellipse(c, xf, (nx, ny1 + 1.0), 4.0, 2.0, 0.0, shade(skin, 0.85), 0.4);

    draw_mouth(c, xf, id, pose, mouth);

    if let Some(g) = id.glasses {
        let (lw, lh) = g.lens;
        let lens_sdf = move |x: f32, y: f32, lx: f32| {
            if g.round {
                sd_ellipse(x - lx, y - eye_y, lw, lh)
            } else {
                sd_rounded_box(x - lx, y - eye_y, lw, lh, 2.5)
            }
        };
        for s in [-1.0f32, 1.0] {
            let lx = hx + s * id.eye_spacing + fdx;
            let bx = [lx - lw - 2.0, eye_y - lh - 2.0, lx + lw + 2.0, eye_y + lh + 2.0];
            c.fill(xf, bx, [0.8, 0.9, 1.0], 0.12, |x, y| lens_sdf(x, y, lx));
            c.fill(xf, bx, g.color, 1.0, |x, y| lens_sdf(x, y, lx).abs() - 0.9);
            let temple_end = (hx + s * rx * 0.98 - pose.yaw * 0.25, eye_y + 1.0);
            stroke(c, xf, &[(lx + s * lw, eye_y - 1.0), temple_end], 0.8, 0.8, g.color, 1.0);
        }
        let bridge = quad_bezier(
            (hx - id.eye_spacing + lw + fdx, eye_y - 1.0),
            (hx + fdx, eye_y - 3.5),
            (hx + id.eye_spacing - lw + fdx, eye_y - 1.0),
            6,
        );
        stroke(c, xf, &bridge, 0.8, 0.8, g.color, 1.0);
    }

    draw_hair(c, xf, id, pose);
    if let Some(hat) = id.hat {
        draw_hat(c, xf, id, hat);
    }
}

fn draw_mouth(c: &mut Canvas, xf: &Xform, id: &Identity, pose: &Pose, (mx, my): (f32, f32)) {
    let w = id.mouth_half_width * (0.7 + 0.55 * pose.mouth_width);
    let h = 0.8 + pose.mouth_open * id.face_ry * 0.32;
    let corner = pose.smile * 3.5;
    const N: usize = 12;
    let upper: Vec<(f32, f32)> = (0..=N)
        .map(|k| {
            let u = -1.0 + 2.0 * k as f32 / N as f32;
            (mx + u * w, my - h * 0.3 * (1.0 - u * u) - corner * u * u)
        })
        .collect();
    let lower: Vec<(f32, f32)> = (0..=N)
        .rev()
        .map(|k| {
            let u = -1.0 + 2.0 * k as f32 / N as f32;
            (mx + u * w, my + h * 0.7 * (1.0 - u * u) + 1.2 * pose.smile * (1.0 - u * u) - corner * u * u)
        })
        .collect();
    let outline: Vec<(f32, f32)> = upper.iter().chain(lower.iter()).copied().collect();
    let inside = [0.32, 0.08, 0.1];
    polygon(c, xf, &outline, inside, 1.0);
    if pose.mouth_open > 0.15 {
        let bx = bbox_of(&outline, 1.0);
        let teeth_bottom = my - h * 0.3 + h * 0.28;
        c.fill(xf, bx, [0.96, 0.95, 0.9], 1.0, |x, y| sd_polygon(x, y, &outline).max(y - teeth_bottom));
        let (tx, ty) = (mx, my + h * 0.65);
        c.fill(xf, bx, [0.85, 0.4, 0.45], 1.0, |x, y| {
            sd_polygon(x, y, &outline).max(sd_ellipse(x - tx, y - ty, w * 0.55, h * 0.35))
        });
    }
    let lip_col = id.lips;
    stroke(c, xf, &upper, 0.9, 0.9, lip_col, 1.0);
    let lower_lip: Vec<(f32, f32)> = lower.iter().map(|&(x, y)| (x, y + 0.6)).collect();
    c.fill(xf, bbox_of(&lower_lip, 3.0), lip_col, 1.0, |x, y| {
        let d = sd_polyline(x, y, &lower_lip, 1.0, 1.0);
        let u = ((x - mx) / w).clamp(-1.0, 1.0);
        d - 0.8 * (1.0 - u * u)
    });
}

fn draw_hair(c: &mut Canvas, xf: &Xform, id: &Identity, pose: &Pose) {
    let (hx, hy) = id.head_center;
    let (rx, ry) = (id.face_rx, id.face_ry);
    let col = id.hair;
    let hdy = pose.pitch * 0.1;
    // A cap of hair over the cranium above a curved hairline that drops at the temples.
    let fringe = matches!(id.hair_style, HairStyle::Bob | HairStyle::Long) as u8 as f32;
    let cap = |x: f32, y: f32, grow: f32| {
        let dx = ((x - hx) / rx).abs();
        let hairline = hy - ry * (0.42 - 0.12 * fringe) + hdy + ry * 0.55 * smoothstep(0.62, 1.0, dx)
            - 3.0 * (1.0 - dx * dx).max(0.0) * fringe;
        sd_ellipse(x - hx, y - hy + 2.0, rx * 1.07 + grow, ry * 1.04 + grow).max(y - hairline)
    };
    let bx = [hx - rx * 1.2 - 8.0, hy - ry * 1.3 - 30.0, hx + rx * 1.2 + 8.0, hy + ry * 0.5];
    match id.hair_style {
        HairStyle::Bald => {
            ellipse(c, xf, (hx - rx * 0.3, hy - ry * 0.7), rx * 0.25, ry * 0.12, -0.3, [1.0; 3], 0.15);
        }
        HairStyle::Short | HairStyle::Long | HairStyle::Bob => {
            c.fill(xf, bx, col, 1.0, |x, y| cap(x, y, 0.0));
            // A parting line.
            let part = quad_bezier(
                (hx - rx * 0.25, hy - ry * 1.02),
                (hx - rx * 0.2, hy - ry * 0.8),
                (hx - rx * 0.45, hy - ry * 0.45),
                6,
            );
            stroke(c, xf, &part, 0.7, 0.3, shade(col, 0.7), 0.8);
        }
        HairStyle::Bun => {
            c.fill(xf, bx, col, 1.0, |x, y| cap(x, y, 0.0));
            ellipse(c, xf, (hx, hy - ry * 1.05 - 8.0), 12.0, 11.0, 0.0, col, 1.0);
            stroke(
                c,
                xf,
                &quad_bezier((hx - 9.0, hy - ry * 1.05), (hx, hy - ry * 1.05 + 3.0), (hx + 9.0, hy - ry * 1.05), 6),
                1.2,
                1.2,
                shade(col, 0.7),
                1.0,
            );
        }
        HairStyle::Curly => {
            c.fill(xf, bx, col, 1.0, |x, y| cap(x, y, 0.0));
            for k in 0..13 {
                let a = std::f32::consts::PI * (1.0 + k as f32 / 12.0);
                let (px, py) = (hx + rx * 1.02 * a.cos(), hy - 2.0 + ry * 0.98 * a.sin() + hdy);
                if py < hy + ry * 0.15 {
                    ellipse(c, xf, (px, py), 8.5, 8.5, 0.0, if k % 2 == 0 { col } else { shade(col, 0.88) }, 1.0);
                }
            }
        }
        HairStyle::Spiky => {
            c.fill(xf, bx, col, 1.0, |x, y| cap(x, y, 0.0));
            let mut pts = Vec::new();
            for k in 0..=8 {
                let a = std::f32::consts::PI * (1.1 + 0.8 * k as f32 / 8.0);
                let r = if k % 2 == 0 { 1.0 } else { 1.28 };
                pts.push((hx + rx * r * a.cos(), hy - 4.0 + ry * r * a.sin() + hdy));
            }
            pts.push((hx, hy - ry * 0.4 + hdy));
            polygon(c, xf, &pts, col, 1.0);
        }
    }
}

fn draw_hat(c: &mut Canvas, xf: &Xform, id: &Identity, hat: super::identity::Hat) {
    let (hx, hy) = id.head_center;
    let (rx, ry) = (id.face_rx, id.face_ry);
    let brim_y = hy - ry * 0.45;
    match hat.style {
        HatStyle::Beanie => {
            c.fill(xf, [hx - rx * 1.2, hy - ry * 1.4, hx + rx * 1.2, brim_y + 8.0], hat.color, 1.0, |x, y| {
                sd_ellipse(x - hx, y - hy + 3.0, rx * 1.1, ry * 1.12).max(y - brim_y)
            });
            c.fill(xf, [hx - rx * 1.2, brim_y - 10.0, hx + rx * 1.2, brim_y + 2.0], hat.band, 1.0, |x, y| {
                sd_ellipse(x - hx, y - hy + 3.0, rx * 1.13, ry * 1.15).max(y - brim_y).max(brim_y - 8.0 - y)
            });
            ellipse(c, xf, (hx, hy - ry * 1.08 - 5.0), 6.0, 6.0, 0.0, hat.band, 1.0);
        }
        HatStyle::Cap => {
            c.fill(xf, [hx - rx * 1.2, hy - ry * 1.4, hx + rx * 1.2, brim_y + 2.0], hat.color, 1.0, |x, y| {
                sd_ellipse(x - hx, y - hy + 4.0, rx * 1.08, ry * 1.1).max(y - brim_y)
            });
            ellipse(c, xf, (hx + rx * 0.35, brim_y), rx * 0.95, 4.5, 0.0, hat.band, 1.0);
            ellipse(c, xf, (hx, hy - ry * 1.08), 3.0, 2.0, 0.0, hat.band, 1.0);
        }
        HatStyle::Brimmed => {
            ellipse(c, xf, (hx, brim_y), rx * 1.75, 7.0, 0.0, hat.color, 1.0);
            c.fill(xf, [hx - rx, brim_y - ry * 0.9, hx + rx, brim_y + 1.0], hat.color, 1.0, |x, y| {
                sd_rounded_box(x - hx, y - (brim_y - ry * 0.42), rx * 0.85, ry * 0.45, 8.0)
            });
            c.fill(xf, [hx - rx, brim_y - 12.0, hx + rx, brim_y], hat.band, 1.0, |x, y| {
                sd_rounded_box(x - hx, y - (brim_y - 5.5), rx * 0.85, 3.5, 1.0)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_has_requested_size_and_a_face() {
        let id = Identity::from_id(1);
        let f = draw_avatar(&id, &Pose::neutral(), 64);
        assert_eq!((f.width, f.height, f.data.len()), (64, 64, 64 * 64 * 3));
        // The face centre has the skin colour.
        let (x, y) = FRAMING.xform(64).apply(id.head_center.0, id.head_center.1 + id.face_ry * 0.35);
        let (x, y) = (x as usize, y as usize);
        let i = (y * 64 + x) * 3;
        let px = [f.data[i] as f32 / 255.0, f.data[i + 1] as f32 / 255.0, f.data[i + 2] as f32 / 255.0];
        let diff: f32 = px.iter().zip(id.skin.iter()).map(|(a, b)| (a - b).abs()).sum();
        assert!(diff < 0.25, "pixel {px:?} vs skin {:?}", id.skin);
    }

    /// `mouth_centre` follows the head: where the frame changes when the
    /// mouth opens is around it, in any pose.
    #[test]
    fn mouth_centre_is_where_the_mouth_opens() {
        let size = 128;
        for (id, yaw, pitch, roll, sway) in
            [(2, 0.0, 0.0, 0.0, 0.0), (5, 8.0, -5.0, 6.0, 3.0), (9, -7.0, 4.0, -5.0, -4.0)]
        {
            let id = Identity::from_id(id);
            let pose = Pose { yaw, pitch, roll, sway, ..Pose::neutral() };
            let closed = draw_avatar(&id, &pose, size);
            let open = draw_avatar(&id, &Pose { mouth_open: 0.8, ..pose }, size);
            let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
            for y in 0..size {
                for x in 0..size {
                    let i = 3 * (y * size + x);
                    if (0..3).any(|c| closed.data[i + c].abs_diff(open.data[i + c]) > 30) {
                        (sx, sy, n) = (sx + x as f32 + 0.5, sy + y as f32 + 0.5, n + 1.0);
                    }
                }
            }
            assert!(n > 10.0, "the mouth did not open");
            let (cx, cy) = mouth_centre(&id, &pose, size);
            // The opening hangs below the lip line: its centre is a few pixels lower.
            assert!(
                (sx / n - cx).abs() < 2.0 && (sy / n - cy) > -1.0 && (sy / n - cy) < 5.0,
                "changed around ({}, {}), centre ({cx}, {cy})",
                sx / n,
                sy / n
            );
        }
    }

    #[test]
    fn open_mouth_and_blink_change_the_face() {
        let id = Identity::from_id(2);
        let base = draw_avatar(&id, &Pose::neutral(), 96);
        let open = draw_avatar(&id, &Pose { mouth_open: 1.0, ..Pose::neutral() }, 96);
        let blink = draw_avatar(&id, &Pose { blink: 1.0, ..Pose::neutral() }, 96);
        let changed = |a: &RgbFrame, b: &RgbFrame| a.data.iter().zip(&b.data).filter(|(x, y)| x != y).count();
        assert!(changed(&base, &open) > 20);
        assert!(changed(&base, &blink) > 10);
    }
}
