//! Seeded cartoon identities: everything about a person that does not
//! change within a clip (face shape, skin, hair, eyes, clothes, accessories,
//! background, voice).
//!
//! An identity is a pure function of its id ([`Identity::from_id`]).
//! **Split:** ids `0..HELDOUT_IDENTITY_START` are training identities, ids
//! `HELDOUT_IDENTITY_START..HELDOUT_IDENTITY_END` are held out for
//! evaluation ([`IdentitySplit`]). The two ranges are disjoint, so a model
//! trained on the first never saw a person of the second.
//!
//! Geometry is in the 256 x 256 design space of [`super::avatar`] (x right,
//! y down); the renderer scales it to the frame size.

use serde::Serialize;

use super::render::{rgb8, Rgb};
use super::rng::SynthRng;

/// First held-out identity id (training ids are `0..HELDOUT_IDENTITY_START`).
pub const HELDOUT_IDENTITY_START: u64 = 1 << 32;
/// One past the last held-out identity id.
pub const HELDOUT_IDENTITY_END: u64 = 1 << 33;

/// Which part of the identity space an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySplit {
    Train,
    Heldout,
}

impl IdentitySplit {
    /// The split of an id; `None` for ids past [`HELDOUT_IDENTITY_END`].
    pub fn of(id: u64) -> Option<Self> {
        if id < HELDOUT_IDENTITY_START {
            Some(Self::Train)
        } else if id < HELDOUT_IDENTITY_END {
            Some(Self::Heldout)
        } else {
            None
        }
    }

    /// Map any 64-bit value to an id of this split.
    pub fn id_from(self, value: u64) -> u64 {
        let offset = value % HELDOUT_IDENTITY_START;
        match self {
            Self::Train => offset,
            Self::Heldout => HELDOUT_IDENTITY_START + offset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HairStyle {
    Bald,
    Short,
    Long,
    Bun,
    Curly,
    Bob,
    Spiky,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HatStyle {
    Beanie,
    Cap,
    Brimmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Neckline {
    Round,
    VNeck,
    Collar,
}

/// Glasses: frame colour and shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Glasses {
    pub color: Rgb,
    pub round: bool,
    /// Half width / half height of one lens.
    pub lens: (f32, f32),
}

/// A hat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hat {
    pub style: HatStyle,
    pub color: Rgb,
    pub band: Rgb,
}

/// The espeak-ng voice of a speaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VoiceSpec {
    /// espeak-ng voice name with variant, e.g. `en-us+f3`.
    pub name: String,
    /// Words per minute.
    pub rate: u32,
    /// Base pitch 0..=99.
    pub pitch: u32,
    /// Pitch range 0..=99.
    pub range: u32,
}

/// A person: every static appearance parameter, plus the voice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    pub id: u64,
    pub split: IdentitySplit,
    // --- face
    pub skin: Rgb,
    /// Head centre in design space.
    pub head_center: (f32, f32),
    /// Cranium half width / half height.
    pub face_rx: f32,
    pub face_ry: f32,
    /// Lower-face width relative to `face_rx` (narrow = pointed chin).
    pub jaw_width: f32,
    /// How far below the head centre the chin reaches, relative to `face_ry`.
    pub chin_drop: f32,
    pub eye_spacing: f32,
    pub eye_height: f32,
    pub eye_rx: f32,
    pub eye_ry: f32,
    pub iris: Rgb,
    pub brow_thickness: f32,
    pub nose_len: f32,
    pub mouth_half_width: f32,
    pub mouth_drop: f32,
    pub lips: Rgb,
    pub blush: f32,
    // --- hair
    pub hair_style: HairStyle,
    pub hair: Rgb,
    pub beard: bool,
    // --- body
    pub shoulder_half_width: f32,
    pub shoulder_y: f32,
    pub neck_half_width: f32,
    pub shirt: Rgb,
    pub jacket: Option<Rgb>,
    pub neckline: Neckline,
    // --- accessories
    pub glasses: Option<Glasses>,
    pub earrings: Option<Rgb>,
    pub hat: Option<Hat>,
    // --- background
    pub bg_top: Rgb,
    pub bg_bottom: Rgb,
    /// Soft background discs: (x, y, radius, colour, alpha).
    pub bg_discs: Vec<(f32, f32, f32, Rgb, f32)>,
    // --- voice
    pub voice: VoiceSpec,
    /// Personal motion style: gesture amplitude (0.3..1.2) and head-motion
    /// amplitude (0.5..1.5).
    pub gesture_amount: f32,
    pub head_motion: f32,
}

const SKIN: [(u8, u8, u8); 10] = [
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 132),
    (198, 145, 108),
    (170, 120, 86),
    (141, 96, 66),
    (112, 74, 52),
    (84, 56, 40),
    (236, 188, 150),
    (250, 210, 180),
];
const HAIR: [(u8, u8, u8); 10] = [
    (30, 24, 20),
    (60, 40, 28),
    (100, 66, 40),
    (150, 100, 60),
    (200, 160, 90),
    (230, 206, 140),
    (160, 60, 30),
    (120, 120, 124),
    (220, 220, 225),
    (70, 50, 90),
];
const IRIS: [(u8, u8, u8); 6] =
    [(70, 45, 25), (40, 30, 20), (60, 110, 160), (70, 120, 80), (110, 90, 60), (90, 110, 130)];
const FEMALE_VARIANTS: [&str; 5] = ["f1", "f2", "f3", "f4", "f5"];
const MALE_VARIANTS: [&str; 7] = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"];
const ACCENTS: [&str; 2] = ["en-us", "en"];

/// HSV (h in [0,1), s, v in [0,1]) to RGB.
pub fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn color(c: (u8, u8, u8)) -> Rgb {
    rgb8(c.0, c.1, c.2)
}

/// A random voice; `feminine` picks the variant family.
pub fn random_voice(rng: &mut SynthRng, feminine: bool) -> VoiceSpec {
    let variant = if feminine { *rng.pick(&FEMALE_VARIANTS) } else { *rng.pick(&MALE_VARIANTS) };
    VoiceSpec {
        name: format!("{}+{}", rng.pick(&ACCENTS), variant),
        rate: rng.range(150.0, 195.0) as u32,
        pitch: rng.range(30.0, 70.0) as u32,
        range: rng.range(40.0, 90.0) as u32,
    }
}

impl Identity {
    /// The identity with this id (deterministic). Ids past
    /// [`HELDOUT_IDENTITY_END`] are folded into the held-out range.
    pub fn from_id(id: u64) -> Self {
        let id = if id >= HELDOUT_IDENTITY_END { IdentitySplit::Heldout.id_from(id) } else { id };
        let split = IdentitySplit::of(id).unwrap_or(IdentitySplit::Heldout);
        let mut r = SynthRng::derive(id, 0x1D);
        let skin = color(*r.pick(&SKIN));
        let skin = [skin[0] * r.rangef(0.95, 1.03), skin[1] * r.rangef(0.95, 1.03), skin[2] * r.rangef(0.95, 1.03)];
        let feminine = r.chance(0.5);
        let face_rx = r.rangef(37.0, 46.0);
        let face_ry = face_rx * r.rangef(1.06, 1.22);
        let hair_style = if feminine {
            *r.pick(&[
                HairStyle::Long,
                HairStyle::Long,
                HairStyle::Bun,
                HairStyle::Bob,
                HairStyle::Curly,
                HairStyle::Short,
            ])
        } else {
            *r.pick(&[
                HairStyle::Short,
                HairStyle::Short,
                HairStyle::Bald,
                HairStyle::Curly,
                HairStyle::Spiky,
                HairStyle::Bob,
            ])
        };
        let hair = color(*r.pick(&HAIR));
        let shirt = hsv(r.rangef(0.0, 1.0), r.rangef(0.2, 0.8), r.rangef(0.35, 0.95));
        let jacket = r.chance(0.4).then(|| hsv(r.rangef(0.0, 1.0), r.rangef(0.1, 0.6), r.rangef(0.15, 0.6)));
        let neckline = *r.pick(&[Neckline::Round, Neckline::VNeck, Neckline::Collar]);
        let glasses = r.chance(0.3).then(|| Glasses {
            color: hsv(r.rangef(0.0, 1.0), r.rangef(0.0, 0.7), r.rangef(0.05, 0.5)),
            round: r.chance(0.5),
            lens: (r.rangef(7.5, 10.0), r.rangef(5.5, 8.0)),
        });
        let earrings = (feminine && r.chance(0.5) || r.chance(0.1))
            .then(|| *r.pick(&[rgb8(230, 190, 60), rgb8(200, 200, 210), rgb8(180, 40, 60), rgb8(60, 140, 200)]));
        let hat = r.chance(0.2).then(|| Hat {
            style: *r.pick(&[HatStyle::Beanie, HatStyle::Cap, HatStyle::Brimmed]),
            color: hsv(r.rangef(0.0, 1.0), r.rangef(0.3, 0.9), r.rangef(0.25, 0.9)),
            band: hsv(r.rangef(0.0, 1.0), r.rangef(0.3, 0.9), r.rangef(0.2, 0.9)),
        });
        let bg_h = r.rangef(0.0, 1.0);
        let bg_top = hsv(bg_h, r.rangef(0.05, 0.45), r.rangef(0.55, 0.95));
        let bg_bottom = hsv(bg_h + r.rangef(-0.1, 0.1), r.rangef(0.05, 0.5), r.rangef(0.3, 0.8));
        let n_discs = r.index(5);
        let bg_discs = (0..n_discs)
            .map(|_| {
                (
                    r.rangef(0.0, 256.0),
                    r.rangef(0.0, 200.0),
                    r.rangef(15.0, 60.0),
                    hsv(r.rangef(0.0, 1.0), r.rangef(0.1, 0.5), r.rangef(0.6, 1.0)),
                    r.rangef(0.1, 0.35),
                )
            })
            .collect();
        let voice = random_voice(&mut r, feminine);
        Identity {
            id,
            split,
            skin,
            head_center: (r.rangef(121.0, 135.0), r.rangef(86.0, 96.0)),
            face_rx,
            face_ry,
            jaw_width: r.rangef(0.62, 0.92),
            chin_drop: r.rangef(1.0, 1.18),
            eye_spacing: face_rx * r.rangef(0.36, 0.46),
            eye_height: r.rangef(-2.0, 4.0),
            eye_rx: r.rangef(5.5, 7.5),
            eye_ry: r.rangef(4.0, 5.6),
            iris: color(*r.pick(&IRIS)),
            brow_thickness: r.rangef(1.2, 2.6),
            nose_len: r.rangef(6.0, 11.0),
            mouth_half_width: face_rx * r.rangef(0.28, 0.4),
            mouth_drop: face_ry * r.rangef(0.5, 0.62),
            lips: if feminine && r.chance(0.5) {
                hsv(r.rangef(0.93, 1.0), r.rangef(0.5, 0.8), r.rangef(0.55, 0.8))
            } else {
                [skin[0] * 0.8, skin[1] * 0.55, skin[2] * 0.55]
            },
            blush: if r.chance(0.4) { r.rangef(0.1, 0.3) } else { 0.0 },
            hair_style,
            hair,
            beard: !feminine && r.chance(0.25),
            shoulder_half_width: r.rangef(72.0, 96.0),
            shoulder_y: r.rangef(166.0, 178.0),
            neck_half_width: face_rx * r.rangef(0.34, 0.44),
            shirt,
            jacket,
            neckline,
            glasses,
            earrings,
            hat,
            bg_top,
            bg_bottom,
            bg_discs,
            voice,
            gesture_amount: r.rangef(0.3, 1.2),
            head_motion: r.rangef(0.5, 1.5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_are_disjoint() {
        assert_eq!(IdentitySplit::of(0), Some(IdentitySplit::Train));
        assert_eq!(IdentitySplit::of(HELDOUT_IDENTITY_START - 1), Some(IdentitySplit::Train));
        assert_eq!(IdentitySplit::of(HELDOUT_IDENTITY_START), Some(IdentitySplit::Heldout));
        assert_eq!(IdentitySplit::of(HELDOUT_IDENTITY_END), None);
        for v in [0u64, 1, u64::MAX, HELDOUT_IDENTITY_START + 5] {
            assert_eq!(IdentitySplit::of(IdentitySplit::Train.id_from(v)), Some(IdentitySplit::Train));
            assert_eq!(IdentitySplit::of(IdentitySplit::Heldout.id_from(v)), Some(IdentitySplit::Heldout));
        }
        assert_eq!(Identity::from_id(u64::MAX).split, IdentitySplit::Heldout);
    }

    #[test]
    fn identities_are_deterministic_and_varied() {
        assert_eq!(Identity::from_id(42), Identity::from_id(42));
        let ids: Vec<Identity> = (0..40).map(Identity::from_id).collect();
        let styles: std::collections::HashSet<String> = ids.iter().map(|i| format!("{:?}", i.hair_style)).collect();
        assert!(styles.len() >= 4, "{styles:?}");
        assert!(ids.iter().any(|i| i.glasses.is_some()) && ids.iter().any(|i| i.glasses.is_none()));
        assert!(ids.iter().any(|i| i.hat.is_some()));
        for w in ids.windows(2) {
            assert!(w[0].face_rx != w[1].face_rx || w[0].shirt != w[1].shirt);
        }
    }
}
