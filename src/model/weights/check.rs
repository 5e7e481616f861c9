//! `weights check`: compare weight files against the tensor list a config's
//! model asks for (recorded with `RecordingBackend`) and report missing,
//! unexpected and shape-mismatched tensors per file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::backend::CheckpointFile;
use super::names::{FileKind, NameScheme};

/// Tensors the model expects, grouped by the file kind that must hold them.
#[derive(Debug, Clone, Default)]
pub struct ExpectedTensors {
    pub by_kind: BTreeMap<FileKind, BTreeMap<String, Vec<usize>>>,
    /// Tensors a file may hold and the model then uses (never reported
    /// missing), e.g. the VAE's measured latent statistics.
    pub optional: BTreeMap<FileKind, BTreeMap<String, Vec<usize>>>,
}

impl ExpectedTensors {
    /// Add `(name, shape)` pairs for `kind`; names owned by our audio file
    /// are routed there when `kind` is the transformer.
    pub fn add(&mut self, kind: FileKind, tensors: impl IntoIterator<Item = (String, Vec<usize>)>) {
        for (name, shape) in tensors {
            let k = if kind == FileKind::Transformer { super::names::owner_of(&name) } else { kind };
            self.by_kind.entry(k).or_default().insert(name, shape);
        }
    }

    pub fn total(&self) -> usize {
        self.by_kind.values().map(|m| m.len()).sum()
    }
}

/// One stored tensor whose shape differs from what the model expects.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeMismatch {
    pub name: String,
    pub stored: String,
    pub got: Vec<usize>,
    pub expected: Vec<usize>,
}

/// Findings for one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: String,
    pub kind: FileKind,
    pub scheme: NameScheme,
    pub tensors: usize,
    pub matched: usize,
    /// Stored tensors (stored names) the model never asks for.
    pub unexpected: Vec<String>,
    /// Stored tensors that are known extras (a CTC head, a quantizer), not errors.
    pub ignored: Vec<String>,
    pub mismatched: Vec<ShapeMismatch>,
}

/// The whole check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub files: Vec<FileReport>,
    /// Expected tensors (canonical names) that no file of their kind holds,
    /// for every kind at least one file was given for.
    pub missing: BTreeMap<FileKind, Vec<String>>,
    /// Kinds the config needs but no file was given for (not checked).
    pub not_given: Vec<FileKind>,
}

impl CheckReport {
    /// True when nothing is missing, unexpected or mismatched.
    pub fn ok(&self) -> bool {
        self.missing.values().all(|v| v.is_empty())
            && self.files.iter().all(|f| f.unexpected.is_empty() && f.mismatched.is_empty())
    }
}

/// Extras that checkpoints commonly carry and our model does not use.
fn is_known_extra(kind: FileKind, canonical: &str) -> bool {
    match kind {
        FileKind::Wav2Vec2 => {
            canonical.starts_with("lm_head.")
                || canonical.starts_with("quantizer.")
                || canonical.starts_with("project_q.")
                || canonical.starts_with("project_hid.")
                || canonical == "masked_spec_embed"
        }
        // Published TAEHV files carry their encoder too.
        FileKind::LightDecoder => canonical.starts_with("encoder."),
        _ => false,
    }
}

/// Shapes that are accepted although not equal: `prompt_embeds` may be
/// stored unpadded ([L <= text_len, text_dim]); it is zero-padded at load.
fn shape_accepted(name: &str, got: &[usize], expected: &[usize]) -> bool {
    if got == expected {
        return true;
    }
    // A light decoder's temporal grow stored with a larger stride (the
    // loader keeps the last rows, `LightDecoder`).
    if name.starts_with("decoder.")
        && name.ends_with(".conv.weight")
        && got.len() == 4
        && expected.len() == 4
        && got[1..] == expected[1..]
        && expected[2..] == [1, 1]
        && got[0] > expected[0]
        && got[0] % expected[0] == 0
    {
        return true;
    }
    name == "prompt_embeds"
        && got.len() == 2
        && expected.len() == 2
        && got[1] == expected[1]
        && got[0] <= expected[0]
        && got[0] > 0
}

/// Compare `files` against `expected`.
pub fn check_files(files: &[Arc<CheckpointFile>], expected: &ExpectedTensors) -> CheckReport {
    let mut report = CheckReport::default();
    let mut found: BTreeMap<FileKind, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let empty = BTreeMap::new();
        let want = expected.by_kind.get(&f.kind).unwrap_or(&empty);
        let mut fr = FileReport {
            path: f.display_path(),
            kind: f.kind,
            scheme: f.scheme,
            tensors: f.file.tensors().len(),
            matched: 0,
            unexpected: vec![],
            ignored: vec![],
            mismatched: vec![],
        };
        // Walk stored names once; canonical aliases share a stored name.
        let mut by_stored: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (canon, stored) in &f.canonical {
            by_stored.entry(stored.as_str()).or_default().push(canon.as_str());
        }
        for (stored, canons) in by_stored {
            let optional = expected.optional.get(&f.kind);
            let required = canons.iter().find(|c| want.contains_key(**c)).map(|c| (*c, &want[*c], true));
            let known = required
                .or_else(|| canons.iter().find_map(|c| optional.and_then(|o| o.get(*c)).map(|exp| (*c, exp, false))));
            let Some((canon, exp, is_required)) = known else {
                if canons.iter().any(|c| is_known_extra(f.kind, c)) {
                    fr.ignored.push(stored.to_string());
                } else {
                    fr.unexpected.push(stored.to_string());
                }
                continue;
            };
            if is_required {
                found.entry(f.kind).or_default().insert(canon.to_string());
            }
            let got = f.file.info(stored).map(|i| i.shape.clone()).unwrap_or_default();
            if shape_accepted(canon, &got, exp) {
                fr.matched += 1;
            } else {
                fr.mismatched.push(ShapeMismatch {
                    name: canon.to_string(),
                    stored: stored.to_string(),
                    got,
                    expected: exp.clone(),
                });
            }
        }
        report.files.push(fr);
    }
    for (kind, want) in &expected.by_kind {
        if !files.iter().any(|f| f.kind == *kind) {
            report.not_given.push(*kind);
            continue;
        }
        let have = found.get(kind);
        let missing: Vec<String> = want.keys().filter(|n| !have.is_some_and(|h| h.contains(*n))).cloned().collect();
        report.missing.insert(*kind, missing);
    }
    report
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 20;
        for fr in &self.files {
            writeln!(
                f,
                "{}: {} ({:?} names), {} tensors, {} ok, {} unexpected, {} shape mismatches, {} ignored extras",
                fr.path,
                fr.kind.describe(),
                fr.scheme,
                fr.tensors,
                fr.matched,
                fr.unexpected.len(),
                fr.mismatched.len(),
                fr.ignored.len()
            )?;
            for n in fr.unexpected.iter().take(SHOW) {
                writeln!(f, "  unexpected: {n}")?;
            }
            if fr.unexpected.len() > SHOW {
                writeln!(f, "  ... and {} more unexpected", fr.unexpected.len() - SHOW)?;
            }
            for m in fr.mismatched.iter().take(SHOW) {
                writeln!(
                    f,
                    "  shape mismatch: {} (stored `{}`): file {:?}, model {:?}",
                    m.name, m.stored, m.got, m.expected
                )?;
            }
            if fr.mismatched.len() > SHOW {
                writeln!(f, "  ... and {} more mismatches", fr.mismatched.len() - SHOW)?;
            }
        }
        for (kind, names) in &self.missing {
            if names.is_empty() {
                continue;
            }
            writeln!(f, "missing from the {} file(s): {} tensors", kind.describe(), names.len())?;
            for n in names.iter().take(SHOW) {
                writeln!(f, "  missing: {n}")?;
            }
            if names.len() > SHOW {
                writeln!(f, "  ... and {} more missing", names.len() - SHOW)?;
            }
        }
        for kind in &self.not_given {
            writeln!(f, "not checked: no {} file given", kind.describe())?;
        }
        write!(f, "{}", if self.ok() { "OK" } else { "PROBLEMS FOUND" })
    }
}
