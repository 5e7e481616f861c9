//! End-to-end tests against the real `streamavatar serve` binary with peers
//! nobody on the team wrote: the Python aiortc client (WHIP, H.264 decode,
//! Opus) and Debian's headless Chromium driving the call page.
//!
//! These need `python3` with `tests/requirements.txt` and, for the browser,
//! `/usr/bin/chromium` + `/usr/bin/chromedriver` (installed by `.ci/run`).
//! A missing tool is a test failure with a message saying what to install,
//! never a silent skip.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `streamavatar serve` child process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let child = Command::new(env!("CARGO_BIN_EXE_streamavatar"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config", "tiny"])
            .arg("--web-dir")
            .arg(root.join("web"))
            .current_dir(&root)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn streamavatar serve");
        let base = format!("http://127.0.0.1:{port}");
        let mut server = Server { child, base };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("serve exited early with {status}: {err}");
            }
            if let Ok(mut s) = std::net::TcpStream::connect(self.base.trim_start_matches("http://")) {
                use std::io::Write;
                let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("serve did not answer /healthz within 60 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs a Python script, returns its last stdout line parsed as JSON.
fn run_python(args: &[String]) -> (bool, serde_json::Value, String) {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 must be installed (see tests/requirements.txt and .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if stderr.contains("ModuleNotFoundError") {
        panic!("python test dependency missing; run `pip install -r tests/requirements.txt`:\n{stderr}");
    }
    let last = stdout.lines().last().unwrap_or("").to_string();
    let json = serde_json::from_str(&last).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, format!("stdout: {stdout}\nstderr: {stderr}"))
}

#[test]
fn aiortc_peer_does_whip_and_decodes_avatar_video() {
    let server = Server::start();
    let cfg = streamavatar::config::ModelConfig::tiny();
    let (ok, json, log) = run_python(&[
        script("tests/peer/aiortc_client.py").display().to_string(),
        server.base.clone(),
        "--seconds".into(),
        "3".into(),
        "--width".into(),
        cfg.stream.width.to_string(),
        "--height".into(),
        cfg.stream.height.to_string(),
        "--fps".into(),
        cfg.stream.fps.to_string(),
    ]);
    assert!(ok, "aiortc peer failed: {json}\n{log}");
    assert!(json["video_frames"].as_u64().unwrap_or(0) >= 48, "too few frames: {json}");
    assert!(json["audio_frames"].as_u64().unwrap_or(0) > 0, "no audio received: {json}");
    eprintln!("aiortc peer: {json}");
}

#[test]
fn headless_chromium_plays_the_avatar_on_the_call_page() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} missing: apt-get install chromium chromium-driver (see .ci/run)"
        );
    }
    let server = Server::start();
    let shot = std::env::temp_dir().join(format!("streamavatar-page-{}.png", std::process::id()));
    let (ok, json, log) = run_python(&[
        script("tests/browser/browser_check.py").display().to_string(),
        format!("{}/", server.base),
        "--seconds".into(),
        "3".into(),
        "--screenshot".into(),
        shot.display().to_string(),
    ]);
    assert!(ok, "browser check failed: {json}\n{log}");
    assert!(json["width"].as_u64().unwrap_or(0) > 0);
    assert!(json["distinct_frames"].as_u64().unwrap_or(0) >= 3, "video frozen: {json}");
    eprintln!("chromium: {json}");
}
