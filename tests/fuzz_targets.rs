//! Runs every cargo-fuzz target of `fuzz/` for a bounded time (CI's fuzz
//! step; `.ci/run` installs cargo-fuzz). Each target starts from its
//! committed corpus (`fuzz/corpus/<target>`, read-only here: new inputs go
//! to a temporary folder) and must finish with 0 crashes. A crash leaves
//! its input in the printed artifact path: fix the bug and add the input to
//! the target's corpus.
//!
//! Works on stable Rust: `RUSTC_BOOTSTRAP=1` lets cargo-fuzz pass its `-Z`
//! flags, and `--sanitizer none` builds with libFuzzer's coverage only
//! (AddressSanitizer needs a nightly standard library). Rust code is memory
//! safe without it; panics, overflows (debug assertions are on), timeouts
//! and out-of-memory are what the runs catch.
//!
//! `STREAMAVATAR_FUZZ_SECONDS` sets the time per target (default 20),
//! `STREAMAVATAR_FUZZ_TARGET_DIR` the build folder (default `fuzz/target`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const TARGETS: [&str; 6] =
    ["sdp_offer", "signaling_json", "talk_protocol", "wav_upload", "avatar_image", "safetensors_header"];

/// Coverage instrumentation only (no ASan: see fuzz/README.md); 16 codegen
/// units instead of cargo-fuzz's default 1 for a shorter build.
const BUILD_FLAGS: [&str; 4] = ["--sanitizer", "none", "--codegen-units", "16"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn cargo_fuzz() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.arg("fuzz").current_dir(fuzz_dir()).env("RUSTC_BOOTSTRAP", "1");
    // The fuzz build is instrumented: keep it out of the main target dir.
    let target_dir =
        std::env::var_os("STREAMAVATAR_FUZZ_TARGET_DIR").unwrap_or_else(|| fuzz_dir().join("target").into());
    c.env("CARGO_TARGET_DIR", target_dir);
    c
}

#[test]
fn every_fuzz_target_runs_without_crashes() {
    let probe = cargo_fuzz().arg("--version").output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!("cargo-fuzz is missing: `cargo install cargo-fuzz --locked` (see .ci/run and fuzz/README.md)"),
    }
    let seconds: u64 = std::env::var("STREAMAVATAR_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);

    let t0 = Instant::now();
    let build = cargo_fuzz().arg("build").args(BUILD_FLAGS).status().expect("run cargo fuzz build");
    assert!(build.success(), "cargo fuzz build failed");
    eprintln!("fuzz build: {:.0} s", t0.elapsed().as_secs_f64());

    let scratch = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for target in TARGETS {
        let corpus = fuzz_dir().join("corpus").join(target);
        assert!(corpus.is_dir(), "no committed corpus for {target} ({})", corpus.display());
        let new_inputs = scratch.path().join(target);
        std::fs::create_dir_all(&new_inputs).unwrap();
        let artifacts = scratch.path().join(format!("{target}-artifacts"));
        std::fs::create_dir_all(&artifacts).unwrap();
        let t = Instant::now();
        let out = cargo_fuzz()
            .arg("run")
            .args(BUILD_FLAGS)
            .arg(target)
            .arg(&new_inputs)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-rss_limit_mb=2048", "-timeout=10", "-max_len=65536", "-print_final_stats=1"])
            .output()
            .expect("run cargo fuzz run");
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log.lines().find_map(|l| l.strip_prefix("stat::number_of_executed_units:")).map(str::trim);
        eprintln!(
            "fuzz {target}: {:.0} s, {} runs, exit {:?}",
            t.elapsed().as_secs_f64(),
            runs.unwrap_or("?"),
            out.status.code()
        );
        let crashed: Vec<_> = std::fs::read_dir(&artifacts).unwrap().flatten().map(|e| e.path()).collect();
        if !out.status.success() || !crashed.is_empty() {
            let tail: String =
                log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            // Keep the crashing inputs where the developer can find them.
            let keep = std::env::temp_dir().join(format!("streamavatar-fuzz-{target}-crashes"));
            let _ = std::fs::create_dir_all(&keep);
            for c in &crashed {
                let _ = std::fs::copy(c, keep.join(c.file_name().unwrap()));
            }
            failures.push(format!("{target}: exit {:?}, inputs kept in {}\n{tail}", out.status.code(), keep.display()));
        }
    }
    assert!(failures.is_empty(), "fuzz targets crashed:\n{}", failures.join("\n\n"));
}
