//! Offline checks of `deploy/` (Dockerfiles, Kubernetes manifests, Prometheus
//! and Grafana files): runs `tests/deploy/validate.py`, which validates every
//! manifest against the Kubernetes schemas vendored in the PyPI package
//! `kubernetes-validate` (no cluster, no network, no Docker engine).

use std::path::Path;
use std::process::Command;

#[test]
fn deploy_manifests_validate_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/deploy/validate.py");
    let output = match Command::new("python3").arg(&script).current_dir(root).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run python3 for {}: {e} (install Python 3)", script.display()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {
            // Visible with `cargo test -- --nocapture`.
            println!("{stdout}");
            assert!(
                stdout.contains(" passed, 0 failed"),
                "validate.py exited 0 without its summary line:\n{stdout}\n{stderr}"
            );
        }
        Some(3) => panic!(
            "the Python package `kubernetes-validate` is missing; install the test requirements:\n    \
             python3 -m pip install -r tests/requirements.txt\n{stderr}"
        ),
        other => panic!("deploy/ validation failed (exit {other:?}):\n{stdout}\n{stderr}"),
    }
}
