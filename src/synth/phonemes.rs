//! espeak-ng phonemes -> visemes -> per-frame mouth shape.
//!
//! Each espeak-ng English phoneme mnemonic maps to a [`Viseme`]: a target
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

/// Viseme of one espeak-ng phoneme mnemonic (stress marks ignored).
pub fn viseme_for(symbol: &str) -> Viseme {
    let s: String = symbol.chars().filter(|c| !matches!(c, '\'' | ',' | '%' | '=')).collect();
    let v = |open, width| Viseme { open, width };
    match s.as_str() {
        "" | "_" | "_:" | "_!" | "_|" | "_^_" | "?" => REST,
        // bilabials: lips closed
        "p" | "b" | "m" => v(0.0, 0.45),
        // labiodentals
        "f" | "v" => v(0.12, 0.55),
        // dentals
        "T" | "D" => v(0.22, 0.55),
        // alveolars
        "t" | "d" | "n" | "l" | "s" | "z" | "t#" | "d#" | "n-" | "l-" | "L" => v(0.2, 0.6),
        // postalveolars: slightly rounded
        "S" | "Z" | "tS" | "dZ" => v(0.22, 0.35),
        "r" | "r-" | "R" | "3" => v(0.25, 0.35),
        "w" | "W" => v(0.12, 0.2),
        "j" => v(0.25, 0.7),
        "k" | "g" | "N" | "x" | "h" => v(0.32, 0.5),
        // open vowels
        "a" | "A:" | "A" | "aI" | "aU" | "a#" | "A@" | "aa" => v(0.9, 0.6),
        "E" | "e" | "eI" | "e@" | "E@" => v(0.6, 0.72),
        "i:" | "i" | "I" | "I#" | "i@" | "I2" => v(0.3, 0.85),
        "@" | "V" | "3:" | "@2" | "@5" | "@L" | "@r" | "a@" => v(0.5, 0.55),
        "O:" | "O" | "0" | "OI" | "O@" | "o@" => v(0.72, 0.35),
        "oU" | "o" | "U" | "u:" | "u" | "U@" => v(0.4, 0.2),
        other => {
            // Unknown mnemonic: judge by its first character.
            match other.chars().next() {
                Some('a' | 'A') => v(0.85, 0.6),
                Some('e' | 'E' | '@' | 'V' | '3') => v(0.55, 0.6),
                Some('i' | 'I' | 'y') => v(0.3, 0.8),
                Some('o' | 'O' | 'u' | 'U' | '0') => v(0.5, 0.3),
                Some(_) => v(0.25, 0.5),
                None => REST,
            }
        }
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
