//! The paper's ablation rows, in its order (StreamAvatar, Table "Ablation
//! Study"): Self-Forcing-style baseline, + reference sink, + RAPR, + GAN
//! without the consistency discriminator, full.
//!
//! The first three rows are one set of weights (the distilled student;
//! `--ablation-weights student=...`, by default the evaluated `--weights`)
//! run with `stream.reference_sink` / `stream.rapr` switched: baseline = a
//! plain rolling KV cache with growing positions, as Self Forcing streams;
//! the cache update rule (`stream.cache_update`) is the config's in every
//! row. The GAN rows need their own weights (`gan_no_consistency=...`,
//! `full=...`); a row without weights is reported as not available.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::generator_model::EvalWeights;
use super::EvalError;
use crate::config::ModelConfig;

/// One row of the ablation table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AblationRow {
    SelfForcingBaseline,
    ReferenceSink,
    Rapr,
    GanNoConsistency,
    Full,
}

impl AblationRow {
    /// The rows in the paper's order.
    pub const ALL: [AblationRow; 5] =
        [Self::SelfForcingBaseline, Self::ReferenceSink, Self::Rapr, Self::GanNoConsistency, Self::Full];

    /// Key of the row in reports.
    pub fn key(self) -> &'static str {
        match self {
            Self::SelfForcingBaseline => "baseline",
            Self::ReferenceSink => "reference_sink",
            Self::Rapr => "rapr",
            Self::GanNoConsistency => "gan_no_consistency",
            Self::Full => "full",
        }
    }

    /// Label as in the paper's table.
    pub fn label(self) -> &'static str {
        match self {
            Self::SelfForcingBaseline => "Baseline (Self Forcing)",
            Self::ReferenceSink => "+ Reference Sink",
            Self::Rapr => "+ RAPR",
            Self::GanNoConsistency => "+ GAN w/o consistency discriminator",
            Self::Full => "Full (ours)",
        }
    }

    /// `(reference_sink, rapr)` of the row.
    pub fn stream_toggles(self) -> (bool, bool) {
        match self {
            Self::SelfForcingBaseline => (false, false),
            Self::ReferenceSink => (true, false),
            _ => (true, true),
        }
    }

    /// True for the rows that share the student's weights.
    pub fn uses_student_weights(self) -> bool {
        matches!(self, Self::SelfForcingBaseline | Self::ReferenceSink | Self::Rapr)
    }

    /// `config` with this row's stream toggles.
    pub fn config(self, config: &ModelConfig) -> ModelConfig {
        let mut c = config.clone();
        (c.stream.reference_sink, c.stream.rapr) = self.stream_toggles();
        c
    }
}

/// Weights named per ablation group: `student` (rows 1-3),
/// `gan_no_consistency`, `full`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AblationWeights {
    pub student: Option<Vec<PathBuf>>,
    pub gan_no_consistency: Option<Vec<PathBuf>>,
    pub full: Option<Vec<PathBuf>>,
}

impl AblationWeights {
    /// Parse `name=path[:path...]` items (each item may itself be a
    /// comma-separated list, as `--ablation-weights a=x,b=y`). A path may
    /// be a folder of `*.safetensors`.
    pub fn parse(items: &[String]) -> Result<Self, EvalError> {
        let mut w = Self::default();
        let mut seen = BTreeMap::new();
        for item in items.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            let (name, paths) = item.split_once('=').ok_or_else(|| {
                EvalError::Invalid(format!(
                    "ablation weights `{item}`: expected name=path (names: student, gan_no_consistency, full)"
                ))
            })?;
            let paths: Vec<PathBuf> = paths.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
            if paths.is_empty() {
                return Err(EvalError::Invalid(format!("ablation weights `{item}`: no path")));
            }
            let name = name.trim();
            if seen.insert(name.to_string(), ()).is_some() {
                return Err(EvalError::Invalid(format!("ablation weights `{name}` given twice")));
            }
            let slot = match name {
                "student" | "baseline" | "reference_sink" | "rapr" => &mut w.student,
                "gan_no_consistency" => &mut w.gan_no_consistency,
                "full" => &mut w.full,
                other => {
                    return Err(EvalError::Invalid(format!(
                        "unknown ablation weights `{other}` (names: student, gan_no_consistency, full)"
                    )))
                }
            };
            if slot.is_some() {
                return Err(EvalError::Invalid(format!("ablation weights for `{name}`'s group given twice")));
            }
            *slot = Some(paths);
        }
        Ok(w)
    }

    /// The weights of `row`: rows 1-3 use `student` or else `main`; the GAN
    /// rows only their own (`None`: not available).
    pub fn for_row(&self, row: AblationRow, main: Option<&EvalWeights>) -> Result<Option<EvalWeights>, EvalError> {
        let own = match row {
            AblationRow::GanNoConsistency => &self.gan_no_consistency,
            AblationRow::Full => &self.full,
            _ => &self.student,
        };
        match own {
            Some(paths) => Ok(Some(EvalWeights::from_paths(paths)?)),
            None if row.uses_student_weights() => Ok(main.cloned()),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_paper_and_toggle_the_stream() {
        let keys: Vec<&str> = AblationRow::ALL.iter().map(|r| r.key()).collect();
        assert_eq!(keys, ["baseline", "reference_sink", "rapr", "gan_no_consistency", "full"]);
        let base = ModelConfig::tiny();
        let c = AblationRow::SelfForcingBaseline.config(&base);
        assert!(!c.stream.reference_sink && !c.stream.rapr);
        let c = AblationRow::ReferenceSink.config(&base);
        assert!(c.stream.reference_sink && !c.stream.rapr);
        assert_eq!(AblationRow::Rapr.config(&base), base);
        assert!(AblationRow::ALL.iter().all(|r| r.config(&base).validate().is_ok()));
    }

    #[test]
    fn weights_per_row() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.safetensors");
        std::fs::write(&f, b"x").unwrap();
        let items = vec![format!("full={}", f.display())];
        let w = AblationWeights::parse(&items).unwrap();
        let main = EvalWeights::Random { seed: 1 };
        assert_eq!(w.for_row(AblationRow::Rapr, Some(&main)).unwrap(), Some(main.clone()));
        assert_eq!(w.for_row(AblationRow::GanNoConsistency, Some(&main)).unwrap(), None);
        assert_eq!(w.for_row(AblationRow::Full, Some(&main)).unwrap(), Some(EvalWeights::Files(vec![f.clone()])));
        // A folder expands to its safetensors files.
        let w = AblationWeights::parse(&[format!("student={}", dir.path().display())]).unwrap();
        assert_eq!(w.for_row(AblationRow::SelfForcingBaseline, None).unwrap(), Some(EvalWeights::Files(vec![f])));
        assert!(AblationWeights::parse(&["bogus=x".into()]).is_err());
        assert!(AblationWeights::parse(&["full".into()]).is_err());
        assert!(AblationWeights::parse(&["full=a,full=b".into()]).is_err());
        let missing = AblationWeights::parse(&["full=/nonexistent/w.safetensors".into()]).unwrap();
        assert!(missing.for_row(AblationRow::Full, None).is_err());
    }
}
