//! Pass / fail of an evaluation: the thresholds a model that talks,
//! listens and keeps its identity meets, and that noise does not.
//!
//! Calibrated on the synth ground truth (which must pass with margin) and
//! on seeded random weights (which must fail); the numbers of both are in
//! docs/BENCHMARKS.md ("Evaluation").

use serde::Serialize;

use super::protocol::ModelMetrics;

/// Minimum scores (see the metric modules for their definitions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Best-lag correlation of measured with true mouth openness.
    pub min_lip_sync_corr: f64,
    /// Listening / silent-listen head motion energy.
    pub min_listening_ratio: f64,
    /// Mean identity PSNR over the stream (dB).
    pub min_identity_psnr_db: f64,
    /// First window minus last window (dB).
    pub max_identity_drift_db: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_lip_sync_corr: 0.5,
            min_listening_ratio: 1.2,
            min_identity_psnr_db: 20.0,
            max_identity_drift_db: 3.0,
        }
    }
}

/// The outcome of [`Thresholds::check`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub pass: bool,
    /// One line per failed threshold.
    pub failures: Vec<String>,
}

impl Thresholds {
    pub fn check(&self, m: &ModelMetrics) -> Verdict {
        let mut failures = Vec::new();
        if !(m.lip_sync_corr >= self.min_lip_sync_corr) {
            failures.push(format!("lip sync correlation {:.3} < {}", m.lip_sync_corr, self.min_lip_sync_corr));
        }
        match &m.listening {
            Some(l) if l.ratio >= self.min_listening_ratio => {}
            Some(l) => failures.push(format!("listening motion ratio {:.3} < {}", l.ratio, self.min_listening_ratio)),
            None => failures.push("listening motion: the partner never spoke in the baseline window".into()),
        }
        if !(m.identity.mean_psnr >= self.min_identity_psnr_db) {
            failures.push(format!("identity PSNR {:.2} dB < {} dB", m.identity.mean_psnr, self.min_identity_psnr_db));
        }
        if !(m.identity.drift_db <= self.max_identity_drift_db) {
            failures.push(format!("identity drift {:.2} dB > {} dB", m.identity.drift_db, self.max_identity_drift_db));
        }
        Verdict { pass: failures.is_empty(), failures }
    }
}
