//! The evaluation report: JSON (everything, per identity and per window)
//! and markdown tables for docs/BENCHMARKS.md.

use serde::Serialize;

use super::protocol::{EvalSpec, ModelMetrics};
use super::thresholds::{Thresholds, Verdict};

/// Whether a row was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Measured,
    /// No weights for this row; nothing was run.
    NotAvailable,
}

/// One evaluated model (the main one or an ablation row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowReport {
    pub key: String,
    pub label: String,
    pub status: RowStatus,
    /// What ran (config, weights, toggles), or why nothing ran.
    pub description: String,
    pub metrics: Option<ModelMetrics>,
    pub verdict: Option<Verdict>,
}

impl RowReport {
    pub fn measured(
        key: &str,
        label: &str,
        description: String,
        metrics: ModelMetrics,
        thresholds: &Thresholds,
    ) -> Self {
        let verdict = Some(thresholds.check(&metrics));
        Self {
            key: key.into(),
            label: label.into(),
            status: RowStatus::Measured,
            description,
            metrics: Some(metrics),
            verdict,
        }
    }

    pub fn not_available(key: &str, label: &str, why: String) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            status: RowStatus::NotAvailable,
            description: why,
            metrics: None,
            verdict: None,
        }
    }
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The command line that produced the report.
    pub command: String,
    pub config: String,
    pub device: String,
    /// VAE decoder of the generator (`full` or `light`).
    pub decoder: String,
    /// `dev` or `release` build of the binary.
    pub build: String,
    pub spec: EvalSpec,
    pub thresholds: Thresholds,
    pub model: RowReport,
    /// The paper's ablation rows (empty when not requested).
    pub ablation: Vec<RowReport>,
    pub wall_s: f64,
}

fn fmt_windows(m: &ModelMetrics) -> String {
    m.identity.psnr_per_window.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" / ")
}

fn metric_cells(m: &ModelMetrics) -> String {
    let listening = match &m.listening {
        Some(l) => format!("{:.2} ({:.2e} / {:.2e})", l.ratio, l.listen_energy, l.silent_energy),
        None => "no listening frames".into(),
    };
    format!(
        "{:.3} | {:.3} | {listening} | {:.2} | {} | {:+.2}",
        m.lip_sync_corr,
        m.lip_sync_corr_lag0,
        m.identity.mean_psnr,
        fmt_windows(m),
        m.identity.drift_db
    )
}

impl EvalReport {
    /// Markdown: the setup, the evaluated model with its verdict, and the
    /// ablation table.
    pub fn to_markdown(&self) -> String {
        let s = &self.spec;
        let mut out = String::new();
        out.push_str(&format!(
            "Command: `{}`\n\nConfig `{}` ({}x{}), device {}, {} decoder, {} build; {} held-out identities from id 2^32 + {}, \
             {} s streams (silent-listen baseline {} s, drift windows {} s), seed {}; wall time {:.0} s.\n\n",
            self.command,
            self.config,
            s.size,
            s.size,
            self.device,
            self.decoder,
            self.build,
            s.identities,
            s.first_identity,
            s.seconds,
            s.baseline_seconds,
            s.window_s,
            s.seed,
            self.wall_s
        ));
        let t = &self.thresholds;
        out.push_str(
            "| model | lip sync r (best lag) | r (lag 0) | listening motion ratio (listen / silent energy) | identity PSNR dB | PSNR per window | drift dB | verdict |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        out.push_str(&self.row_line(&self.model, true));
        out.push_str(&format!(
            "\nThresholds: lip sync r >= {}, listening ratio >= {}, identity PSNR >= {} dB, drift <= {} dB.\n",
            t.min_lip_sync_corr, t.min_listening_ratio, t.min_identity_psnr_db, t.max_identity_drift_db
        ));
        if let Some(v) = &self.model.verdict {
            for f in &v.failures {
                out.push_str(&format!("- fails: {f}\n"));
            }
        }
        if !self.ablation.is_empty() {
            out.push_str("\nAblation (the paper's order):\n\n");
            out.push_str("| configuration | lip sync r (best lag) | r (lag 0) | listening motion ratio (listen / silent energy) | identity PSNR dB | PSNR per window | drift dB | verdict |\n");
            out.push_str("|---|---|---|---|---|---|---|---|\n");
            for row in &self.ablation {
                out.push_str(&self.row_line(row, false));
            }
            out.push('\n');
            for row in &self.ablation {
                out.push_str(&format!("- {}: {}\n", row.label, row.description));
            }
        }
        out
    }

    fn row_line(&self, row: &RowReport, describe: bool) -> String {
        let name = if describe { row.description.clone() } else { row.label.clone() };
        match (&row.metrics, &row.verdict) {
            (Some(m), Some(v)) => {
                format!("| {name} | {} | {} |\n", metric_cells(m), if v.pass { "pass" } else { "FAIL" })
            }
            _ => format!("| {name} | not available | | | | | | |\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::identity_drift::DriftResult;
    use crate::eval::listening::ListeningResult;

    fn metrics(corr: f64) -> ModelMetrics {
        ModelMetrics {
            lip_sync_corr: corr,
            lip_sync_corr_lag0: corr,
            listening: Some(ListeningResult { listen_energy: 2e-3, silent_energy: 1e-3, ratio: 2.0, frames: 10 }),
            identity: DriftResult { window_s: 60.0, psnr_per_window: vec![25.0, 24.0], mean_psnr: 24.5, drift_db: 1.0 },
            per_identity: vec![],
            frames_generated: 100,
            wall_s: 1.0,
        }
    }

    #[test]
    fn markdown_has_the_model_the_verdicts_and_unavailable_rows() {
        let t = Thresholds::default();
        let report = EvalReport {
            command: "streamavatar eval --random-weights".into(),
            config: "tiny".into(),
            device: "cpu".into(),
            decoder: "full".into(),
            build: "dev".into(),
            spec: EvalSpec::default(),
            thresholds: t,
            model: RowReport::measured("model", "Evaluated model", "tiny, weights x".into(), metrics(0.9), &t),
            ablation: vec![
                RowReport::measured("baseline", "Baseline (Self Forcing)", "sink off".into(), metrics(0.1), &t),
                RowReport::not_available("full", "Full (ours)", "no weights".into()),
            ],
            wall_s: 2.0,
        };
        let md = report.to_markdown();
        assert!(
            md.contains(
                "| tiny, weights x | 0.900 | 0.900 | 2.00 (2.00e-3 / 1.00e-3) | 24.50 | 25.0 / 24.0 | +1.00 | pass |"
            ),
            "{md}"
        );
        assert!(md.contains("| Baseline (Self Forcing) | 0.100 |") && md.contains("| FAIL |"), "{md}");
        assert!(md.contains("| Full (ours) | not available |"), "{md}");
        assert!(!md.contains("- fails:") && md.contains("`streamavatar eval --random-weights`"), "{md}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ablation"][1]["status"], "not_available");
    }
}
