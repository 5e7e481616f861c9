//! espeak-ng phonemes -> visemes -> per-frame mouth shape.
//!
//! Each espeak-ng English phoneme mnemonic has a [`PhoneClass`] (its
//! articulation), and each class a [`Viseme`]: a target
//! mouth openness (jaw drop, 0 = lips closed, 1 = wide open) and width
//! (0 = rounded/pursed, 1 = spread). The phoneme sequence with its sample
//! timing becomes a step function of targets, which is smoothed with a
//! Gaussian (coarticulation: the mouth starts moving before a phoneme and
//! lags after it) and averaged over each video frame.

use super::espeak::PhonemeEvent;

/// A mouth target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viseme {
    pub open: f32,
    pub width: f32,
}

/// The rest mouth (silence).
pub const REST: Viseme = Viseme { open: 0.0, width: 0.5 };

/// Coarticulation smoothing (standard deviation, seconds).
pub const COARTICULATION_SIGMA_S: f64 = 0.025;

/// Articulatory class of an espeak-ng phoneme mnemonic: place of
/// articulation for consonants, quality for vowels. It fixes the phoneme's
/// [`Viseme`] and is the label of the audio encoder's phone-recognition
/// pretraining (`train/audio_encoder_stage.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneClass {
    Silence,
    /// p b m: lips closed.
    Bilabial,
    /// f v
    Labiodental,
    /// T D
    Dental,
    /// t d n l s z
    Alveolar,
    /// S Z tS dZ: slightly rounded.
    Postalveolar,
    /// r R 3
    Rhotic,
    /// w
    LabialVelar,
    /// j
    Palatal,
    /// k g N x h
    Dorsal,
    /// a A: aI aU: open.
    OpenVowel,
    /// E e eI
    MidFrontVowel,
    /// i: I
    CloseFrontVowel,
    /// @ V 3:
    CentralVowel,
    /// O: O 0 OI
    OpenBackRoundedVowel,
    /// oU u: U
    CloseBackRoundedVowel,
    /// Unknown mnemonics, judged by their first character.
    OtherOpen,
    OtherMid,
    OtherClose,
    OtherRounded,
    OtherConsonant,
}

impl PhoneClass {
    /// The class of one mnemonic (stress and length marks ignored).
    pub fn of(symbol: &str) -> Self {
        use PhoneClass::*;
        let s: String = symbol.chars().filter(|c| !matches!(c, '\'' | ',' | '%' | '=')).collect();
        match s.as_str() {
            "" | "_" | "_:" | "_!" | "_|" | "_^_" | "?" => Silence,
            "p" | "b" | "m" => Bilabial,
            "f" | "v" => Labiodental,
            "T" | "D" => Dental,
            "t" | "d" | "n" | "l" | "s" | "z" | "t#" | "d#" | "n-" | "l-" | "L" => Alveolar,
            "S" | "Z" | "tS" | "dZ" => Postalveolar,
            "r" | "r-" | "R" | "3" => Rhotic,
            "w" | "W" => LabialVelar,
            "j" => Palatal,
            "k" | "g" | "N" | "x" | "h" => Dorsal,
            "a" | "A:" | "A" | "aI" | "aU" | "a#" | "A@" | "aa" => OpenVowel,
            "E" | "e" | "eI" | "e@" | "E@" => MidFrontVowel,
            "i:" | "i" | "I" | "I#" | "i@" | "I2" => CloseFrontVowel,
            "@" | "V" | "3:" | "@2" | "@5" | "@L" | "@r" | "a@" => CentralVowel,
            "O:" | "O" | "0" | "OI" | "O@" | "o@" => OpenBackRoundedVowel,
            "oU" | "o" | "U" | "u:" | "u" | "U@" => CloseBackRoundedVowel,
            other => match other.chars().next() {
                Some('a' | 'A') => OtherOpen,
                Some('e' | 'E' | '@' | 'V' | '3') => OtherMid,
                Some('i' | 'I' | 'y') => OtherClose,
                Some('o' | 'O' | 'u' | 'U' | '0') => OtherRounded,
                Some(_) => OtherConsonant,
                None => Silence,
            },
        }
    }

    /// The mouth target of the class.
    pub fn viseme(self) -> Viseme {
        use PhoneClass::*;
        let v = |open, width| Viseme { open, width };
        match self {
            Silence => REST,
            Bilabial => v(0.0, 0.45),
            Labiodental => v(0.12, 0.55),
            Dental => v(0.22, 0.55),
            Alveolar => v(0.2, 0.6),
            Postalveolar => v(0.22, 0.35),
            Rhotic => v(0.25, 0.35),
            LabialVelar => v(0.12, 0.2),
            Palatal => v(0.25, 0.7),
            Dorsal => v(0.32, 0.5),
            OpenVowel => v(0.9, 0.6),
            MidFrontVowel => v(0.6, 0.72),
            CloseFrontVowel => v(0.3, 0.85),
            CentralVowel => v(0.5, 0.55),
            OpenBackRoundedVowel => v(0.72, 0.35),
            CloseBackRoundedVowel => v(0.4, 0.2),
            OtherOpen => v(0.85, 0.6),
            OtherMid => v(0.55, 0.6),
            OtherClose => v(0.3, 0.8),
            OtherRounded => v(0.5, 0.3),
            OtherConsonant => v(0.25, 0.5),
        }
    }

    /// Number of recognition labels ([`label`](Self::label) is below it).
    pub const LABELS: usize = 17;

    /// Recognition label: the sixteen named classes and one for unknown
    /// consonants; unknown vowels join the named vowel they resemble.
    pub fn label(self) -> usize {
        use PhoneClass::*;
        match self {
            Silence => 0,
            Bilabial => 1,
            Labiodental => 2,
            Dental => 3,
            Alveolar => 4,
            Postalveolar => 5,
            Rhotic => 6,
            LabialVelar => 7,
            Palatal => 8,
            Dorsal => 9,
            OpenVowel | OtherOpen => 10,
            MidFrontVowel | OtherMid => 11,
            CloseFrontVowel | OtherClose => 12,
            CentralVowel => 13,
            OpenBackRoundedVowel | OtherRounded => 14,
            CloseBackRoundedVowel => 15,
            OtherConsonant => 16,
        }
    }
}

/// Viseme of one espeak-ng phoneme mnemonic (stress marks ignored).
pub fn viseme_for(symbol: &str) -> Viseme {
    PhoneClass::of(symbol).viseme()
}

/// The phone label (see [`PhoneClass::label`]) at time `t_s` of a track
/// with these phonemes (in time order, as a conversation holds them):
/// silence outside every phoneme.
pub fn phone_label_at(phonemes: &[TimedPhoneme], t_s: f64) -> usize {
    // Phonemes are in time order; the last one starting at or before t.
    let i = phonemes.partition_point(|p| p.start_s <= t_s);
    match i.checked_sub(1).map(|i| &phonemes[i]) {
        Some(p) if t_s < p.end_s => PhoneClass::of(&p.symbol).label(),
        _ => PhoneClass::Silence.label(),
    }
}

/// A phoneme with absolute timing in a conversation track.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedPhoneme {
    pub symbol: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// Convert espeak events of one utterance (placed at `offset_s` in the
/// track, `total_samples` long at `sample_rate`) into timed phonemes.
pub fn timed_phonemes(
    events: &[PhonemeEvent],
    sample_rate: u32,
    total_samples: usize,
    offset_s: f64,
) -> Vec<TimedPhoneme> {
    let sr = sample_rate.max(1) as f64;
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let end = events.get(i + 1).map(|n| n.sample).unwrap_or(total_samples).max(e.sample);
            TimedPhoneme {
                symbol: e.symbol.clone(),
                start_s: offset_s + e.sample as f64 / sr,
                end_s: offset_s + end as f64 / sr,
            }
        })
        .collect()
}

/// Per-frame mouth shape for `n_frames` frames at `fps`: viseme targets on
/// a 1 ms grid, Gaussian-smoothed, averaged over each frame's interval.
/// Time not covered by any phoneme is [`REST`].
pub fn viseme_track(phonemes: &[TimedPhoneme], fps: f64, n_frames: usize) -> Vec<Viseme> {
    const GRID_HZ: f64 = 1000.0;
    let total = ((n_frames as f64 / fps) * GRID_HZ).ceil() as usize + 1;
    let mut open = vec![REST.open; total];
    let mut width = vec![REST.width; total];
    for p in phonemes {
        let v = viseme_for(&p.symbol);
        let a = ((p.start_s * GRID_HZ).round().max(0.0) as usize).min(total);
        let b = ((p.end_s * GRID_HZ).round().max(0.0) as usize).min(total);
        for i in a..b {
            open[i] = v.open;
            width[i] = v.width;
        }
    }
    let open = gaussian_smooth(&open, COARTICULATION_SIGMA_S * GRID_HZ);
    let width = gaussian_smooth(&width, COARTICULATION_SIGMA_S * GRID_HZ);
    (0..n_frames)
        .map(|f| {
            let a = ((f as f64 / fps) * GRID_HZ) as usize;
            let b = ((((f + 1) as f64 / fps) * GRID_HZ) as usize).min(total).max(a + 1).min(total);
            let a = a.min(b.saturating_sub(1));
            let n = (b - a).max(1) as f32;
            Viseme { open: open[a..b].iter().sum::<f32>() / n, width: width[a..b].iter().sum::<f32>() / n }
        })
        .collect()
}

/// Gaussian blur of a 1-D signal (edges clamp).
pub fn gaussian_smooth(x: &[f32], sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 || x.is_empty() {
        return x.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
    let norm: f32 = kernel.iter().sum();
    let n = x.len() as isize;
    (0..n)
        .map(|i| {
            let mut acc = 0.0;
            for (k, w) in kernel.iter().enumerate() {
                let j = (i + k as isize - r).clamp(0, n - 1);
                acc += w * x[j as usize];
            }
            acc / norm
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vowels_open_more_than_bilabials() {
        assert!(viseme_for("A:").open > 0.8);
        assert!(viseme_for("'a").open > 0.8);
        assert_eq!(viseme_for("m").open, 0.0);
        assert_eq!(viseme_for("_:"), REST);
        assert!(viseme_for("u:").width < viseme_for("i:").width);
        // Unknown symbols still give a sane target.
        let v = viseme_for("Q#");
        assert!((0.0..=1.0).contains(&v.open));
    }

    #[test]
    fn phone_labels_cover_classes_and_follow_timing() {
        for sym in
            ["", "m", "f", "D", "s", "tS", "r", "w", "j", "k", "aI", "eI", "i:", "@", "O:", "u:", "Q#", "ee", "y"]
        {
            assert!(PhoneClass::of(sym).label() < PhoneClass::LABELS, "{sym}");
        }
        assert_eq!(PhoneClass::of("'a").label(), PhoneClass::of("aa").label());
        assert_eq!(PhoneClass::of("Q#"), PhoneClass::OtherConsonant);
        let ph = vec![
            TimedPhoneme { symbol: "m".into(), start_s: 0.10, end_s: 0.20 },
            TimedPhoneme { symbol: "A:".into(), start_s: 0.20, end_s: 0.40 },
        ];
        assert_eq!(phone_label_at(&ph, 0.05), 0);
        assert_eq!(phone_label_at(&ph, 0.15), PhoneClass::Bilabial.label());
        assert_eq!(phone_label_at(&ph, 0.20), PhoneClass::OpenVowel.label());
        assert_eq!(phone_label_at(&ph, 0.45), 0);
    }

    #[test]
    fn track_follows_phoneme_timing() {
        let ph = vec![
            TimedPhoneme { symbol: "m".into(), start_s: 0.0, end_s: 0.5 },
            TimedPhoneme { symbol: "A:".into(), start_s: 0.5, end_s: 1.0 },
        ];
        let t = viseme_track(&ph, 24.0, 48);
        assert_eq!(t.len(), 48);
        assert!(t[5].open < 0.01, "{:?}", t[5]);
        assert!(t[18].open > 0.85, "{:?}", t[18]);
        // Silence after the last phoneme.
        assert!(t[40].open < 0.01);
        // Smooth: no jump bigger than the coarticulation allows.
        assert!(t.windows(2).all(|w| (w[0].open - w[1].open).abs() < 0.6));
    }

    #[test]
    fn timed_phonemes_use_sample_positions() {
        let ev =
            vec![PhonemeEvent { symbol: "h".into(), sample: 0 }, PhonemeEvent { symbol: "@".into(), sample: 1000 }];
        let t = timed_phonemes(&ev, 1000, 3000, 2.0);
        assert_eq!(t[0].start_s, 2.0);
        assert_eq!(t[0].end_s, 3.0);
        assert_eq!(t[1].end_s, 5.0);
    }
}
