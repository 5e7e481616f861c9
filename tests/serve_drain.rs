//! Graceful drain of the real `streamavatar serve` binary: SIGTERM during a
//! live WebRTC call. New sessions are refused at once (503 `draining` with
//! `Retry-After`, `/readyz` 503, `/healthz` says draining), the running call
//! keeps receiving video during the grace period, then it is hung up (RTCP
//! BYE / peer closed) and the process exits 0 within the grace period.
//!
//! The caller is the webrtc-rs loopback client of `streamavatar bench call`.
//!
//! Also the binary's API-key wiring (`--api-key`, `STREAMAVATAR_API_KEY`):
//! keys from the environment, rotation, refusal of unusable keys, the
//! warning on non-loopback listeners without a key, and no key in the log.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamavatar::bench_call::client_peer;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::goodbye::Goodbye;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;

const GRACE_S: u64 = 4;

struct Serve {
    child: Child,
    base: String,
    /// Everything the server logged (tracing writes to stdout), read on a thread.
    log: Arc<std::sync::Mutex<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve() -> Serve {
    start_serve_with("127.0.0.1", &[], None)
}

/// `serve` on `host` (reached on 127.0.0.1 either way) with extra flags and
/// the API-key environment variable set to `api_key_env` (or unset).
fn start_serve_with(host: &str, extra: &[&str], api_key_env: Option<&str>) -> Serve {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // STREAMAVATAR_BIN: a copy of the binary, for target dirs that several
    // checkouts share (their builds overwrite target/debug/streamavatar).
    let bin = std::env::var_os("STREAMAVATAR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_streamavatar").into());
    let mut cmd = Command::new(bin);
    cmd.env_remove("STREAMAVATAR_API_KEY");
    if let Some(keys) = api_key_env {
        cmd.env("STREAMAVATAR_API_KEY", keys);
    }
    let child = cmd
        .args(["serve", "--listen", &format!("{host}:{port}"), "--config", "tiny"])
        .args(["--drain-grace-s", &GRACE_S.to_string()])
        .args(extra)
        .arg("--web-dir")
        .arg(root.join("web"))
        .current_dir(&root)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn streamavatar serve");
    let mut child = child;
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Serve { child, base: format!("http://127.0.0.1:{port}"), log }
}

async fn wait_healthy(serve: &mut Serve, http: &reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = serve.child.try_wait() {
            panic!("serve exited early with {status}: {}", log_of(serve));
        }
        if let Ok(r) = http.get(format!("{}/healthz", serve.base)).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("serve did not answer /healthz within 60 s");
}

fn log_of(serve: &Serve) -> String {
    // The reader thread finishes shortly after the process exits.
    std::thread::sleep(Duration::from_millis(200));
    serve.log.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_calls_refuses_new_sessions_and_exits_zero() {
    let http = reqwest::Client::new();
    let mut serve = start_serve();
    wait_healthy(&mut serve, &http).await;
    let base = serve.base.clone();

    // A live call.
    let created: serde_json::Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, token) = (created["id"].as_str().unwrap().to_string(), created["token"].as_str().unwrap().to_string());
    let (pc, _mic) = client_peer().await.unwrap();
    let video_packets = Arc::new(AtomicU64::new(0));
    let bye_seen = Arc::new(AtomicBool::new(false));
    let (vp, bye) = (video_packets.clone(), bye_seen.clone());
    pc.on_track(Box::new(move |track, receiver, _| {
        let (vp, bye) = (vp.clone(), bye.clone());
        Box::pin(async move {
            if track.kind() != RTPCodecType::Video {
                tokio::spawn(async move { while track.read_rtp().await.is_ok() {} });
                return;
            }
            tokio::spawn(async move {
                while let Ok((packets, _)) = receiver.read_rtcp().await {
                    if packets.iter().any(|p| p.as_any().downcast_ref::<Goodbye>().is_some()) {
                        bye.store(true, Ordering::SeqCst);
                    }
                }
            });
            tokio::spawn(async move {
                while track.read_rtp().await.is_ok() {
                    vp.fetch_add(1, Ordering::SeqCst);
                }
            });
        })
    }));
    let ended_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let ended = ended_at.clone();
    pc.on_peer_connection_state_change(Box::new(move |s| {
        if matches!(
            s,
            RTCPeerConnectionState::Closed | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Disconnected
        ) {
            ended.lock().unwrap().get_or_insert_with(Instant::now);
        }
        Box::pin(async {})
    }));
    let offer = pc.create_offer(None).await.unwrap();
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await.unwrap();
    let _ = gathered.recv().await;
    let offer_sdp = pc.local_description().await.unwrap().sdp;
    let r = http
        .post(format!("{base}/v1/sessions/{id}/whip"))
        .bearer_auth(&token)
        .header("content-type", "application/sdp")
        .body(offer_sdp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    pc.set_remote_description(RTCSessionDescription::answer(r.text().await.unwrap()).unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while video_packets.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "no video within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGTERM during the call.
    let pid = serve.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill(1)");
    assert!(status.success());
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = http.post(format!("{base}/v1/sessions")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 503, "new sessions must be refused while draining");
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "draining", "{body}");
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503, "not ready while draining");
    let health: serde_json::Value = http.get(format!("{base}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "draining", "{health}");
    assert_eq!(health["sessions_active"], 1, "the running call is still there: {health}");

    // The running call is not harmed during the grace period.
    let before = video_packets.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(video_packets.load(Ordering::SeqCst) > before, "video stopped during the grace period");
    assert!(ended_at.lock().unwrap().is_none(), "call hung up before the grace period ended");

    // Then: hung up, process exits 0 within the grace period (plus shutdown slack).
    let limit = Duration::from_secs(GRACE_S + 6);
    let exit = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < limit, "serve still running {limit:?} after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exited_after = signalled.elapsed();
    let log = log_of(&serve);
    assert!(exit.success(), "serve exited with {exit} after draining:\n{log}");
    assert!(exited_after >= Duration::from_secs(GRACE_S - 1), "exited before the grace period: {exited_after:?}");
    assert!(log.contains("drain complete"), "{log}");

    // The caller saw the hang-up: an RTCP BYE, and its connection ending.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ended_at.lock().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = ended_at.lock().unwrap().expect("the caller's peer connection never ended");
    eprintln!(
        "SIGTERM -> exit {:.2} s, caller saw the end {:.2} s after the signal, RTCP BYE received: {}",
        exited_after.as_secs_f64(),
        ended.duration_since(signalled).as_secs_f64(),
        bye_seen.load(Ordering::SeqCst)
    );
    assert!(bye_seen.load(Ordering::SeqCst), "no RTCP BYE from the agent on hang-up");
    let _ = pc.close().await;
}

/// The log without terminal colour codes (tracing colours its fields).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const KEY_A: &str = "serve-key-a-0123456789abcdef";
const KEY_B: &str = "serve-key-b-fedcba9876543210";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_rotating_api_keys_from_the_environment_and_never_logs_them() {
    let http = reqwest::Client::new();
    let mut serve = start_serve_with("127.0.0.1", &[], Some(&format!("{KEY_A}, {KEY_B}")));
    wait_healthy(&mut serve, &http).await;
    let post = |key: Option<&str>| {
        let mut req = http.post(format!("{}/v1/sessions", serve.base)).json(&serde_json::json!({}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    let r = post(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(post(Some("serve-key-a-0123456789abcdeX")).await.unwrap().status(), 401);
    assert_eq!(post(Some(KEY_A)).await.unwrap().status(), 201);
    assert_eq!(post(Some(KEY_B)).await.unwrap().status(), 201);
    let log = strip_ansi(&log_of(&serve));
    assert!(log.contains("api_keys=2"), "{log}");
    assert!(!log.contains(KEY_A) && !log.contains(KEY_B), "a key reached the log:\n{log}");
    assert!(!log.contains("without --api-key"), "loopback needs no warning:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_without_a_key_off_loopback_and_refuses_unusable_keys() {
    let http = reqwest::Client::new();
    let mut serve = start_serve_with("0.0.0.0", &[], None);
    wait_healthy(&mut serve, &http).await;
    let r = http.post(format!("{}/v1/sessions", serve.base)).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 201, "no key configured: creation stays open");
    let log = log_of(&serve);
    assert_eq!(log.matches("without --api-key").count(), 1, "{log}");
    drop(serve);

    // An unusable key stops serve at startup, naming the key by position only.
    let bin = std::env::var_os("STREAMAVATAR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_streamavatar").into());
    let mut bad = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--config", "tiny", "--api-key", &format!("{KEY_A},tooshort")])
        .env_remove("STREAMAVATAR_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamavatar serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = bad.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = bad.kill();
            panic!("serve started with an unusable API key");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    bad.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("--api-key: API key #2 has 8 characters"), "{stderr}");
    assert!(!stderr.contains("tooshort") && !stderr.contains(KEY_A), "{stderr}");
}
