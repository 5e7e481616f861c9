//! HTTP / WebSocket tests of the signaling server on a real loopback socket.
//! The call agent is an in-test fake (`ScriptedAgent`) so these tests run
//! in seconds without a model or a WebRTC stack; the fake's SDP answer is
//! derived from the offer and is only ever used here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use streamavatar::config::ModelConfig;
use streamavatar::generator::DecoderKind;
use streamavatar::session::{SessionError, SessionSpec, SessionStats, TalkCommand, TalkEvent};
use streamavatar::signaling::api_key::ApiKeys;
use streamavatar::signaling::{AgentFactory, AgentStartError, AppState, CallAgent, ServerConfig};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=rtpmap:102 H264/90000\r\n";

// ---------------------------------------------------------------- test agent

/// Fake agent: answers offers with their m-lines mirrored, records talk
/// commands and emits the talk events a real session would.
struct ScriptedAgent {
    spec: SessionSpec,
    commands: Mutex<Vec<TalkCommand>>,
    events: broadcast::Sender<TalkEvent>,
    connected: AtomicBool,
    closed: AtomicBool,
    /// accept_offer fails with an RTC error (a broken session).
    fail_offers: bool,
    /// Samples of the current utterance, and whether it started.
    utterance: Mutex<(u64, u32, bool)>,
}

impl ScriptedAgent {
    fn played_ms(&self) -> u64 {
        let u = self.utterance.lock().unwrap();
        u.0 * 1000 / u64::from(u.1.max(1))
    }
}

impl CallAgent for ScriptedAgent {
    fn accept_offer<'a>(&'a self, offer: &'a str) -> BoxFuture<'a, Result<String, SessionError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::SeqCst) {
                return Err(SessionError::Closed);
            }
            if self.fail_offers {
                return Err(SessionError::Rtc("ICE agent exploded".into()));
            }
            if !offer.contains("m=video") {
                return Err(SessionError::BadSdp("offer has no video section".into()));
            }
            let mut answer = String::from("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
            for line in offer.lines().filter(|l| l.starts_with("m=")) {
                answer.push_str(line);
                answer.push_str("\r\na=setup:active\r\n");
            }
            self.connected.store(true, Ordering::SeqCst);
            Ok(answer)
        })
    }

    fn talk(&self, cmd: TalkCommand) -> Result<(), SessionError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SessionError::Closed);
        }
        match &cmd {
            TalkCommand::Pcm { sample_rate, samples } => {
                let mut u = self.utterance.lock().unwrap();
                if !u.2 {
                    u.2 = true;
                    let _ = self.events.send(TalkEvent::SpeechStarted);
                }
                u.0 += samples.len() as u64;
                u.1 = *sample_rate;
            }
            TalkCommand::End => {
                let played_ms = self.played_ms();
                *self.utterance.lock().unwrap() = (0, 0, false);
                let _ = self.events.send(TalkEvent::SpeechDone { played_ms });
            }
            TalkCommand::Clear => {
                let played_ms = self.played_ms();
                *self.utterance.lock().unwrap() = (0, 0, false);
                let _ = self.events.send(TalkEvent::SpeechCleared { played_ms });
            }
        }
        self.commands.lock().unwrap().push(cmd);
        Ok(())
    }

    fn subscribe_events(&self) -> broadcast::Receiver<TalkEvent> {
        self.events.subscribe()
    }

    #[allow(clippy::field_reassign_with_default)]
    fn stats(&self) -> SessionStats {
        // Field by field: the real SessionStats may grow more fields.
        let mut s = SessionStats::default();
        s.connected = self.connected.load(Ordering::SeqCst);
        s.fps = 24.0;
        s.latency_ms = 250.0;
        s.frames_sent = 48;
        s.frames_repeated = 2;
        s
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.closed.store(true, Ordering::SeqCst) })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Factory that keeps every agent it started; seeds of 666 get a broken agent.
#[derive(Default)]
struct ScriptedFactory {
    started: Mutex<Vec<Arc<ScriptedAgent>>>,
}

impl AgentFactory for ScriptedFactory {
    fn start(&self, spec: SessionSpec) -> Result<Arc<dyn CallAgent>, AgentStartError> {
        let agent = Arc::new(ScriptedAgent {
            fail_offers: spec.seed == 666,
            spec,
            commands: Mutex::new(Vec::new()),
            events: broadcast::channel(64).0,
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            utterance: Mutex::new((0, 0, false)),
        });
        self.started.lock().unwrap().push(agent.clone());
        Ok(agent)
    }
}

// ---------------------------------------------------------------- harness

struct Server {
    base: String,
    ws_base: String,
    factory: Arc<ScriptedFactory>,
    http: reqwest::Client,
    _web: tempfile::TempDir,
    /// Sends the stop signal (as SIGTERM does for `streamavatar serve`).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>streamavatar</title>").unwrap();
    let mut cfg = ServerConfig::new(ModelConfig::tiny());
    cfg.web_dir = Some(web.path().to_path_buf());
    cfg.max_sessions = 8;
    cfg.cors_origins = vec!["http://allowed.example".into()];
    cfg.max_sdp_bytes = 16 * 1024;
    cfg.max_talk_message_bytes = 8 * 1024;
    cfg.max_room_message_bytes = 4 * 1024;
    cfg.stats_interval = Duration::from_millis(100);
    tweak(&mut cfg);
    let factory = Arc::new(ScriptedFactory::default());
    let state = AppState::new(cfg, factory.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::spawn(streamavatar::signaling::serve(listener, state, shutdown));
    Server {
        stop: Some(stop),
        served: Some(served),
        base: format!("http://{addr}"),
        ws_base: format!("ws://{addr}"),
        factory,
        http: reqwest::Client::new(),
        _web: web,
    }
}

async fn start() -> Server {
    start_with(|_| {}).await
}

#[derive(serde::Deserialize, Debug)]
struct Created {
    id: String,
    token: String,
    whip_url: String,
    talk_url: String,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v1/sessions` with a multipart body of one text part.
    async fn post_multipart_field(&self, name: &str, value: &str) -> reqwest::Response {
        let boundary = "XyZbOuNdArY";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--{boundary}--\r\n"
        );
        self.http
            .post(self.url("/v1/sessions"))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn create(&self) -> Created {
        self.create_json(serde_json::json!({})).await
    }

    async fn create_json(&self, body: serde_json::Value) -> Created {
        let r = self.http.post(self.url("/v1/sessions")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    async fn whip(
        &self,
        s: &Created,
        ctype: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self.http.post(self.url(&s.whip_url)).header("content-type", ctype).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    fn agent(&self, index: usize) -> Arc<ScriptedAgent> {
        self.factory.started.lock().unwrap()[index].clone()
    }

    async fn talk(&self, s: &Created, query: &str) -> Ws {
        let url = format!("{}{}?token={}{query}", self.ws_base, s.talk_url, s.token);
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v["error"].as_str().unwrap().to_string()
}

/// Next non-ping message within 5 s.
async fn next(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timely message")
            .expect("stream open")
            .expect("no transport error");
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        m => panic!("expected JSON text, got {m:?}"),
    }
}

/// Wait for a close frame and return (code, reason).
async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match next(ws).await {
            Message::Close(Some(f)) => return (u16::from(f.code), f.reason.to_string()),
            Message::Close(None) => panic!("close without a reason"),
            _ => continue,
        }
    }
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut cur = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    cur.into_inner()
}

// ---------------------------------------------------------------- sessions

#[tokio::test]
async fn create_session_returns_scoped_credentials() {
    let srv = start().await;
    let r = srv.http.post(srv.url("/v1/sessions")).json(&serde_json::json!({"seed": 7})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let s: Created = r.json().await.unwrap();
    assert_eq!(location, format!("/v1/sessions/{}", s.id));
    assert_eq!(s.token.len(), 64);
    assert!(s.token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(s.whip_url, format!("/v1/sessions/{}/whip", s.id));
    assert_eq!(s.talk_url, format!("/v1/sessions/{}/talk", s.id));
    assert_eq!(srv.agent(0).spec.seed, 7);
    assert_eq!(srv.agent(0).spec.model.name, "tiny");
    assert_eq!(srv.agent(0).spec.decoder, DecoderKind::Full, "the server's default decoder");

    let info: serde_json::Value =
        srv.http.get(srv.url(&location)).bearer_auth(&s.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["whip"], "idle");
    assert_eq!(info["stats"]["fps"], 24.0);

    let other = srv.create().await;
    let r = srv.http.get(srv.url(&location)).bearer_auth(&other.token).send().await.unwrap();
    assert_eq!(r.status(), 403, "a token is scoped to its own session");

    let r = srv.http.delete(srv.url(&location)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(srv.agent(0).is_closed());
    let r = srv.http.get(srv.url(&location)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn avatar_upload_in_all_three_shapes() {
    let srv = start().await;
    let img = png(24, 16);
    // raw body
    let r = srv
        .http
        .post(srv.url("/v1/sessions"))
        .header("content-type", "image/png")
        .body(img.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // multipart
    let boundary = "XyZbOuNdArY";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&img);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = srv
        .http
        .post(srv.url("/v1/sessions"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // JSON base64
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&img);
    srv.create_json(serde_json::json!({ "avatar": format!("data:image/png;base64,{b64}") })).await;
    for i in 0..3 {
        let reference = srv.agent(i).spec.reference.clone().expect("decoded avatar");
        assert_eq!((reference.width, reference.height), (24, 16));
        assert_eq!(&reference.data[..3], &[10, 20, 30]);
    }
}

/// The decoder is chosen per session (JSON or multipart), defaulting to the
/// server's `--decoder`.
#[tokio::test]
async fn decoder_is_chosen_per_session() {
    let srv = start_with(|c| c.decoder = DecoderKind::Light).await;
    srv.create_json(serde_json::json!({ "decoder": "full" })).await;
    srv.create_json(serde_json::json!({})).await;
    let r = srv.post_multipart_field("decoder", "full").await;
    assert_eq!(r.status(), 201);
    let kinds: Vec<DecoderKind> = (0..3).map(|i| srv.agent(i).spec.decoder).collect();
    assert_eq!(kinds, [DecoderKind::Full, DecoderKind::Light, DecoderKind::Full]);
}

#[tokio::test]
async fn bad_uploads_are_refused_clearly() {
    let srv = start_with(|c| c.max_image_bytes = 64 * 1024).await;
    let post = |ctype: &'static str, body: Vec<u8>| {
        srv.http.post(srv.url("/v1/sessions")).header("content-type", ctype).body(body).send()
    };
    // not an image, declared as one
    let r = post("image/png", b"definitely not a png".to_vec()).await.unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(r).await, "bad_image");
    // truncated PNG
    let p = png(8, 8);
    let r = post("image/png", p[..p.len() / 2].to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    // unsupported content type
    let r = post("text/plain", b"hello".to_vec()).await.unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(r).await, "unsupported_media_type");
    // invalid JSON / bad base64 / unknown field
    let r = post("application/json", b"{nope".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post("application/json", br#"{"avatar":"@@@"}"#.to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post("application/json", br#"{"avatr":"x"}"#.to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    // unknown decoder, in JSON and in multipart
    let r = post("application/json", br#"{"decoder":"tiny"}"#.to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = srv.post_multipart_field("decoder", "fancy").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown decoder `fancy`"));
    // oversized body (tower-http limit)
    let r = post("image/png", vec![0u8; 200 * 1024]).await.unwrap();
    assert_eq!(r.status(), 413);
    // no agent was started for any of them
    assert!(srv.factory.started.lock().unwrap().is_empty());
}

#[tokio::test]
async fn capacity_limit_answers_503_with_retry_after() {
    let srv = start_with(|c| {
        c.max_sessions = 2;
        c.retry_after_s = 7;
    })
    .await;
    let a = srv.create().await;
    srv.create().await;
    let r = srv.http.post(srv.url("/v1/sessions")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(error_code(r).await, "server_full");
    // a slot frees when a session ends
    srv.http.delete(srv.url(&format!("/v1/sessions/{}", a.id))).bearer_auth(&a.token).send().await.unwrap();
    srv.create().await;
}

// ---------------------------------------------------------------- API key

const KEY_OLD: &str = "old-key-0123456789abcdef";
const KEY_NEW: &str = "new-key-fedcba9876543210";

fn with_api_keys(c: &mut ServerConfig) {
    c.api_keys = ApiKeys::parse(&[format!("{KEY_OLD},{KEY_NEW}")]).unwrap();
}

#[tokio::test]
async fn without_an_api_key_configured_session_creation_stays_open() {
    let srv = start().await;
    let r = srv.http.post(srv.url("/v1/sessions")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // an Authorization header the server does not ask for changes nothing
    let r = srv.http.post(srv.url("/v1/sessions")).bearer_auth("whatever").json(&serde_json::json!({})).send();
    assert_eq!(r.await.unwrap().status(), 201);
    let (mut a, _) = join_room(&srv, "open").await;
    a.send(Message::Text(r#"{"type":"request_avatar"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut a).await["type"], "peer_joined");
}

#[tokio::test]
async fn api_key_guards_session_creation_and_rotates() {
    let srv = start_with(with_api_keys).await;
    let post = |key: Option<&str>| {
        let mut req = srv.http.post(srv.url("/v1/sessions")).json(&serde_json::json!({}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    // missing, wrong, another scheme: 401 with a Bearer challenge, no agent
    let r = post(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(r).await, "missing_api_key");
    let r = post(Some("old-key-0123456789abcdeX")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let body = r.text().await.unwrap();
    assert!(body.contains("wrong_api_key") && !body.contains("0123456789"), "{body}");
    let r = srv.http.post(srv.url("/v1/sessions")).basic_auth("u", Some(KEY_OLD)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // a big upload without the key is refused before its body is decoded
    let r = srv.http.post(srv.url("/v1/sessions")).header("content-type", "image/png").body(png(64, 64));
    assert_eq!(r.send().await.unwrap().status(), 401);
    assert!(srv.factory.started.lock().unwrap().is_empty());

    // both keys of a rotation work
    let r = post(Some(KEY_OLD)).await.unwrap();
    assert_eq!(r.status(), 201);
    let s: Created = r.json().await.unwrap();
    assert_eq!(post(Some(KEY_NEW)).await.unwrap().status(), 201);
    assert_eq!(srv.factory.started.lock().unwrap().len(), 2);

    // session-scoped requests use the session token, not the API key
    let info = srv.url(&format!("/v1/sessions/{}", s.id));
    assert_eq!(srv.http.get(&info).bearer_auth(KEY_OLD).send().await.unwrap().status(), 403);
    assert_eq!(srv.http.get(&info).bearer_auth(&s.token).send().await.unwrap().status(), 200);
    assert_eq!(srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await.status(), 201);
    // probes and metrics need no key
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(srv.http.get(srv.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
}

#[tokio::test]
async fn api_key_guards_room_avatars() {
    let srv = start_with(with_api_keys).await;
    // without a key: a plain room peer, but no avatar
    let (mut a, _) = join_room(&srv, "keyed").await;
    a.send(Message::Text(r#"{"type":"request_avatar"}"#.into())).await.unwrap();
    let e = next_json(&mut a).await;
    assert_eq!(e["type"], "error");
    assert!(e["message"].as_str().unwrap().contains("API key"), "{e}");
    assert!(srv.factory.started.lock().unwrap().is_empty());
    // a wrong key is refused before the upgrade (as a query or a header)
    let refused = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("a wrong API key was accepted"),
    };
    let url = format!("{}/v1/rooms/keyed/ws?api_key=wrong-key-0123456789", srv.ws_base);
    assert_eq!(refused(tokio_tungstenite::connect_async(url).await.map(|_| ())), 401);
    let mut req = format!("{}/v1/rooms/keyed/ws", srv.ws_base).into_client_request().unwrap();
    req.headers_mut().insert("authorization", "Bearer wrong-key-0123456789".parse().unwrap());
    assert_eq!(refused(tokio_tungstenite::connect_async(req).await.map(|_| ())), 401);
    // the key as a header (clients) or as ?api_key= (browsers)
    let mut req = format!("{}/v1/rooms/keyed/ws", srv.ws_base).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {KEY_NEW}").parse().unwrap());
    let mut b = tokio_tungstenite::connect_async(req).await.unwrap().0;
    assert_eq!(next_json(&mut b).await["type"], "welcome");
    let url = format!("{}/v1/rooms/keyed/ws?api_key={KEY_OLD}", srv.ws_base);
    let mut c = tokio_tungstenite::connect_async(url).await.unwrap().0;
    assert_eq!(next_json(&mut c).await["type"], "welcome");
    for ws in [&mut b, &mut c] {
        ws.send(Message::Text(r#"{"type":"request_avatar"}"#.into())).await.unwrap();
        loop {
            let m = next_json(ws).await;
            assert_ne!(m["type"], "error", "{m}");
            if m["type"] == "avatar_ready" {
                break;
            }
        }
    }
    assert_eq!(srv.factory.started.lock().unwrap().len(), 2);
}

// ---------------------------------------------------------------- WHIP

#[tokio::test]
async fn whip_offer_answer_and_hangup() {
    let srv = start().await;
    let s = srv.create().await;
    let r = srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("/v1/sessions/{}/whip/", s.id)), "{location}");
    let answer = r.text().await.unwrap();
    assert!(answer.starts_with("v=0\r\n") && answer.contains("m=video"), "{answer}");

    // one peer connection per session
    let r = srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(r).await, "already_connected");

    // non-preflight OPTIONS advertises SDP
    let r = srv.http.request(reqwest::Method::OPTIONS, srv.url(&s.whip_url)).send().await.unwrap();
    assert_eq!(r.headers()["accept-post"], "application/sdp");

    // trickle ICE is not supported
    let r = srv.http.patch(srv.url(&location)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // DELETE of an unknown resource, then of the real one
    let r = srv.http.delete(srv.url(&format!("{}/nope", s.whip_url))).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = srv.http.delete(srv.url(&location)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(srv.agent(0).is_closed());
    let r = srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await;
    assert_eq!(r.status(), 404, "hung-up session is gone");
}

#[tokio::test]
async fn whip_bad_requests() {
    let srv = start().await;
    let s = srv.create().await;
    let r = srv.whip(&s, "text/plain", Some(&s.token), OFFER).await;
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(r).await, "unsupported_media_type");

    let r = srv.whip(&s, "application/sdp", Some(&s.token), "this is not SDP").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "malformed_sdp");
    let r = srv.whip(&s, "application/sdp", Some(&s.token), "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nbogus\r\n").await;
    assert_eq!(r.status(), 400);
    // syntactically fine, refused by the agent
    let audio_only = OFFER.split("m=video").next().unwrap().to_string();
    let r = srv.whip(&s, "application/sdp", Some(&s.token), audio_only).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "malformed_sdp");

    let r = srv.whip(&s, "application/sdp", None, OFFER).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = srv.whip(&s, "application/sdp", Some("0000"), OFFER).await;
    assert_eq!(r.status(), 403);
    let other = srv.create().await;
    let r = srv.whip(&s, "application/sdp", Some(&other.token), OFFER).await;
    assert_eq!(r.status(), 403);

    let r = srv
        .http
        .post(srv.url("/v1/sessions/doesnotexist/whip"))
        .header("content-type", "application/sdp")
        .bearer_auth(&s.token)
        .body(OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "unknown_session");

    let huge = format!("{OFFER}{}", "a=x-padding:0123456789\r\n".repeat(2000));
    let r = srv.whip(&s, "application/sdp", Some(&s.token), huge).await;
    assert_eq!(r.status(), 413);

    // after all of that, a good offer still works
    let r = srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn cors_preflight_only_for_configured_origins() {
    let srv = start().await;
    let preflight = |origin: &'static str| {
        srv.http
            .request(reqwest::Method::OPTIONS, srv.url("/v1/sessions/x/whip"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let r = preflight("http://allowed.example").await.unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "http://allowed.example");
    let r = preflight("http://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

// ---------------------------------------------------------------- talk socket

#[tokio::test]
async fn talk_socket_streams_pcm_and_events() {
    let srv = start().await;
    let s = srv.create().await;
    let mut ws = srv.talk(&s, "&rate=16000").await;
    let frame: Vec<u8> = (0..320i16).flat_map(|i| (i * 10).to_le_bytes()).collect(); // 20 ms
    ws.send(Message::Binary(frame.clone().into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await, serde_json::json!({"type": "speech_started"}));
    for _ in 0..49 {
        ws.send(Message::Binary(frame.clone().into())).await.unwrap();
    }
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await, serde_json::json!({"type": "speech_done", "played_ms": 1000}));
    ws.send(Message::Binary(frame.clone().into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "speech_started");
    ws.send(Message::Text(r#"{"type":"clear"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await, serde_json::json!({"type": "speech_cleared", "played_ms": 20}));
    let cmds = srv.agent(0).commands.lock().unwrap().clone();
    match &cmds[0] {
        TalkCommand::Pcm { sample_rate, samples } => {
            assert_eq!(*sample_rate, 16000);
            assert_eq!(samples[1], 10);
            assert_eq!(samples.len(), 320);
        }
        c => panic!("{c:?}"),
    }
    ws.close(None).await.unwrap();

    // the header form of the token works too
    let mut req = format!("{}{}", srv.ws_base, s.talk_url).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.token).parse().unwrap());
    let mut ws = tokio_tungstenite::connect_async(req).await.unwrap().0;
    ws.send(Message::Text(r#"{"type":"end"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "speech_done");
}

async fn talk_close_reason(srv: &Server, s: &Created, query: &str, send: Message) -> (u16, String) {
    let mut ws = srv.talk(s, query).await;
    if !matches!(send, Message::Pong(_)) {
        ws.send(send).await.unwrap();
    }
    expect_close(&mut ws).await
}

#[tokio::test]
async fn talk_socket_bad_input_closes_with_reason() {
    let srv = start().await;
    let s = srv.create().await;
    let (code, reason) = talk_close_reason(&srv, &s, "", Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(code, 1007);
    assert!(reason.contains("odd byte count"), "{reason}");

    let (code, reason) = talk_close_reason(&srv, &s, "", Message::Text("{not json".into())).await;
    assert_eq!(code, 1007);
    assert!(reason.contains("invalid JSON"), "{reason}");

    let (code, reason) = talk_close_reason(&srv, &s, "", Message::Text(r#"{"type":"dance"}"#.into())).await;
    assert_eq!(code, 1003);
    assert!(reason.contains("clear or end"), "{reason}");

    let (code, reason) = talk_close_reason(&srv, &s, "&rate=96000", Message::Pong(Default::default())).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("unsupported sample rate 96000"), "{reason}");
    let (code, reason) = talk_close_reason(&srv, &s, "&rate=fast", Message::Pong(Default::default())).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("not an integer"), "{reason}");

    // frames above the per-connection cap (8 KiB in this server)
    let (code, reason) = talk_close_reason(&srv, &s, "", Message::Binary(vec![0u8; 10_000].into())).await;
    assert_eq!(code, 1009);
    assert!(reason.contains("exceeds"), "{reason}");

    // handshake refusals are HTTP statuses
    let url = format!("{}{}", srv.ws_base, s.talk_url);
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    match tokio_tungstenite::connect_async(format!("{url}?token=bad")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    // none of it reached the agent, and the session is still usable
    assert!(srv.agent(0).commands.lock().unwrap().is_empty());
    let r = srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn abrupt_disconnect_frees_the_talk_socket() {
    let srv = start().await;
    let s = srv.create().await;
    let mut ws = srv.talk(&s, "").await;
    ws.send(Message::Binary(vec![0u8; 960].into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "speech_started");
    // a second backend is refused while the first is attached
    match tokio_tungstenite::connect_async(format!("{}{}?token={}", srv.ws_base, s.talk_url, s.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 409),
        other => panic!("expected 409, got {:?}", other.map(|_| ())),
    }
    // drop the TCP connection without a close handshake
    drop(ws);
    let mut reattached = None;
    for _ in 0..50 {
        let url = format!("{}{}?token={}", srv.ws_base, s.talk_url, s.token);
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await {
            reattached = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ws = reattached.expect("talk socket freed after abrupt disconnect");
    ws.send(Message::Text(r#"{"type":"clear"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "speech_cleared");
}

#[tokio::test]
async fn deleting_a_session_closes_its_talk_socket() {
    let srv = start().await;
    let s = srv.create().await;
    let mut ws = srv.talk(&s, "").await;
    srv.http.delete(srv.url(&format!("/v1/sessions/{}", s.id))).bearer_auth(&s.token).send().await.unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1001, "session ended"));
}

// ---------------------------------------------------------------- say / speak

#[tokio::test]
async fn say_plays_a_wav_body() {
    let srv = start().await;
    let s = srv.create().await;
    let samples: Vec<i16> = (0..22050).map(|i| ((i % 100) * 100) as i16).collect();
    let r = srv
        .http
        .post(srv.url(&format!("/v1/sessions/{}/say", s.id)))
        .bearer_auth(&s.token)
        .header("content-type", "audio/wav")
        .body(wav(22050, &samples))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["duration_ms"], 1000);
    let cmds = srv.agent(0).commands.lock().unwrap().clone();
    let queued: usize = cmds
        .iter()
        .map(|c| match c {
            TalkCommand::Pcm { sample_rate: 22050, samples } => samples.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(queued, 22050);
    assert!(matches!(cmds.last(), Some(TalkCommand::End)));

    let say = |ctype: &'static str, body: Vec<u8>| {
        srv.http
            .post(srv.url(&format!("/v1/sessions/{}/say", s.id)))
            .bearer_auth(&s.token)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let r = say("audio/wav", b"RIFF garbage".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "bad_wav");
    let r = say("audio/wav", wav(96000, &[0; 10])).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = say("audio/mpeg", vec![0; 10]).await.unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn speak_without_espeak_is_501() {
    let srv = start_with(|c| c.espeak_binary = "/nonexistent/espeak-ng".into()).await;
    let s = srv.create().await;
    let r = srv
        .http
        .post(srv.url(&format!("/v1/sessions/{}/speak", s.id)))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "tts_not_installed");
    assert!(v["message"].as_str().unwrap().contains("espeak-ng"));
}

#[tokio::test]
async fn speak_synthesizes_with_espeak() {
    let srv = start().await;
    let s = srv.create().await;
    let speak = |body: serde_json::Value| {
        srv.http.post(srv.url(&format!("/v1/sessions/{}/speak", s.id))).bearer_auth(&s.token).json(&body).send()
    };
    let r = speak(serde_json::json!({"text": ""})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = speak(serde_json::json!({"text": "x".repeat(5000)})).await.unwrap();
    assert!(r.status() == 400 || r.status() == 413, "{}", r.status());
    let r = speak(serde_json::json!({"text": "Hello, I am your avatar."})).await.unwrap();
    if r.status() == 501 {
        eprintln!("espeak-ng not installed here; synthesis path not exercised");
        return;
    }
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["duration_ms"].as_u64().unwrap() > 500, "{v}");
    assert!(matches!(srv.agent(0).commands.lock().unwrap().last(), Some(TalkCommand::End)));
}

// ---------------------------------------------------------------- isolation, health, metrics, page

#[tokio::test]
async fn one_broken_session_does_not_affect_another() {
    let srv = start().await;
    let broken = srv.create_json(serde_json::json!({"seed": 666})).await;
    let good = srv.create().await;
    let r = srv.whip(&broken, "application/sdp", Some(&broken.token), OFFER).await;
    assert_eq!(r.status(), 500);
    assert_eq!(error_code(r).await, "session_failed");
    let mut bad_ws = srv.talk(&broken, "").await;
    bad_ws.send(Message::Binary(vec![9].into())).await.unwrap();
    assert_eq!(expect_close(&mut bad_ws).await.0, 1007);
    // the broken agent dies on its own: the server reaps it
    srv.agent(0).close().await;

    let r = srv.whip(&good, "application/sdp", Some(&good.token), OFFER).await;
    assert_eq!(r.status(), 201);
    let mut ws = srv.talk(&good, "").await;
    ws.send(Message::Binary(vec![0u8; 960].into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "speech_started");

    let mut reaped = false;
    for _ in 0..50 {
        let r = srv
            .http
            .get(srv.url(&format!("/v1/sessions/{}", broken.id)))
            .bearer_auth(&broken.token)
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            reaped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reaped, "closed agent's session is removed");
    let r = srv.http.get(srv.url(&format!("/v1/sessions/{}", good.id))).bearer_auth(&good.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn health_metrics_and_page() {
    let srv = start().await;
    let s = srv.create().await;
    assert_eq!(srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await.status(), 201);
    let h: serde_json::Value = srv.http.get(srv.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["sessions_active"], 1);
    let text = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "streamavatar_sessions_active 1",
        "streamavatar_sessions_created_total 1",
        &format!("streamavatar_session_fps{{session=\"{}\"}} 24.0", s.id),
        "streamavatar_frames_repeated_total 2",
        "stage=\"negotiation\"",
        "stage=\"agent_start\"",
        "stage=\"audio_to_frame\"",
        "streamavatar_session_talk_queue_ms",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(&s.token));
    let page = srv.http.get(srv.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("streamavatar"));
}

// ---------------------------------------------------------------- rooms

async fn join_room(srv: &Server, room: &str) -> (Ws, String) {
    let mut ws = tokio_tungstenite::connect_async(format!("{}/v1/rooms/{room}/ws", srv.ws_base)).await.unwrap().0;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    (ws, welcome["peer_id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn room_relays_between_peers_and_adds_an_avatar() {
    let srv = start().await;
    let (mut a, a_id) = join_room(&srv, "lobby").await;
    let (mut b, b_id) = join_room(&srv, "lobby").await;
    assert_eq!(next_json(&mut a).await, serde_json::json!({"type":"peer_joined","peer_id":b_id,"avatar":false}));
    a.send(Message::Text(serde_json::json!({"type":"offer","to":b_id,"sdp":"v=0"}).to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut b).await, serde_json::json!({"type":"offer","from":a_id,"sdp":"v=0"}));
    b.send(Message::Text(
        serde_json::json!({"type":"candidate","to":a_id,"candidate":{"candidate":"c"}}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut a).await["candidate"]["candidate"], "c");
    a.send(Message::Text(serde_json::json!({"type":"answer","to":"peer-0","sdp":""}).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut a).await["type"], "error");

    a.send(Message::Text(r#"{"type":"request_avatar"}"#.into())).await.unwrap();
    let joined = next_json(&mut a).await;
    assert_eq!(joined["type"], "peer_joined");
    assert_eq!(joined["avatar"], true);
    let ready = next_json(&mut a).await;
    assert_eq!(ready["type"], "avatar_ready");
    let avatar = ready["peer_id"].as_str().unwrap().to_string();
    assert_eq!(next_json(&mut b).await["peer_id"], avatar.as_str());
    a.send(Message::Text(serde_json::json!({"type":"offer","to":avatar,"sdp":OFFER}).to_string().into()))
        .await
        .unwrap();
    let answer = next_json(&mut a).await;
    assert_eq!(answer["type"], "answer");
    assert_eq!(answer["from"], avatar.as_str());
    assert!(answer["sdp"].as_str().unwrap().contains("m=video"));
    // the avatar session can be driven with the credentials it came with
    let session_id = ready["session_id"].as_str().unwrap();
    let token = ready["token"].as_str().unwrap();
    let r = srv.http.get(srv.url(&format!("/v1/sessions/{session_id}"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // the requester leaves: its avatar session ends
    a.close(None).await.unwrap();
    let mut ended = false;
    for _ in 0..50 {
        if srv.agent(0).is_closed() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ended);
    let left: Vec<serde_json::Value> = vec![next_json(&mut b).await, next_json(&mut b).await];
    assert!(left.iter().all(|m| m["type"] == "peer_left"), "{left:?}");
}

#[tokio::test]
async fn room_bad_input_and_limits() {
    let srv = start_with(|c| c.max_room_peers = 2).await;
    let (mut a, _) = join_room(&srv, "r").await;
    a.send(Message::Text("{oops".into())).await.unwrap();
    let (code, reason) = expect_close(&mut a).await;
    assert_eq!(code, 1007);
    assert!(reason.contains("invalid JSON"), "{reason}");

    let (mut b, _) = join_room(&srv, "r").await;
    b.send(Message::Text("x".repeat(5000).into())).await.unwrap();
    let (code, _) = expect_close(&mut b).await;
    assert_eq!(code, 1009);

    let (_c, _) = join_room(&srv, "full").await;
    let (_d, _) = join_room(&srv, "full").await;
    let mut e = tokio_tungstenite::connect_async(format!("{}/v1/rooms/full/ws", srv.ws_base)).await.unwrap().0;
    let (code, reason) = expect_close(&mut e).await;
    assert_eq!(code, 1013);
    assert!(reason.contains("room is full"), "{reason}");

    let r = srv.http.get(srv.url("/v1/rooms/bad%20name/ws")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

// ---------------------------------------------------------------- the example dialog backend

#[tokio::test]
async fn dialog_backend_example_streams_and_barges_in() {
    let have = |bin: &str| std::process::Command::new(bin).arg("--version").output().is_ok();
    if !have("python3") || !have("espeak-ng") {
        eprintln!("python3 or espeak-ng missing: example not exercised");
        return;
    }
    let srv = start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dialog_backend.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args([script, "--server", &srv.base, "--speed", "20", "--barge-in-after", "0.5", "--wait-for-peer", "0"])
            .output(),
    )
    .await
    .expect("example finishes")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in
        ["'type': 'speech_started'", "'type': 'speech_done'", "'type': 'speech_cleared'", "session deleted (HTTP 204)"]
    {
        assert!(stdout.contains(needle), "missing {needle} in\n{stdout}");
    }
    // what the agent received: 24 kHz PCM in 20 ms frames, end, then clear
    let agent = srv.agent(0);
    let cmds = agent.commands.lock().unwrap().clone();
    assert!(matches!(&cmds[0], TalkCommand::Pcm { sample_rate: 24000, samples } if samples.len() == 480));
    assert!(cmds.iter().any(|c| matches!(c, TalkCommand::End)));
    assert!(matches!(cmds.last(), Some(TalkCommand::Clear)));
    assert!(agent.is_closed());
}

#[tokio::test]
async fn room_avatar_refusals_are_error_messages() {
    let srv = start_with(|c| c.max_sessions = 1).await;
    let (mut a, _) = join_room(&srv, "r").await;
    a.send(Message::Text(r#"{"type":"request_avatar","avatar":"!!notbase64"}"#.into())).await.unwrap();
    let e = next_json(&mut a).await;
    assert_eq!(e["type"], "error");
    assert!(e["message"].as_str().unwrap().contains("bad avatar image"), "{e}");
    a.send(Message::Text(r#"{"type":"request_avatar"}"#.into())).await.unwrap();
    assert_eq!(next_json(&mut a).await["type"], "peer_joined");
    let avatar = next_json(&mut a).await["peer_id"].as_str().unwrap().to_string();
    a.send(Message::Text(r#"{"type":"request_avatar"}"#.into())).await.unwrap();
    let e = next_json(&mut a).await;
    assert!(e["message"].as_str().unwrap().contains("already have an avatar"), "{e}");
    // malformed SDP to the avatar: an error, and the avatar still answers a good offer
    a.send(Message::Text(serde_json::json!({"type":"offer","to":avatar,"sdp":"garbage"}).to_string().into()))
        .await
        .unwrap();
    let e = next_json(&mut a).await;
    assert!(e["message"].as_str().unwrap().contains("SDP"), "{e}");
    a.send(Message::Text(serde_json::json!({"type":"offer","to":avatar,"sdp":OFFER}).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut a).await["type"], "answer");
    // a second peer asks for an avatar while the server is at capacity
    let (mut b, _) = join_room(&srv, "r").await;
    b.send(Message::Text(r#"{"type":"request_avatar"}"#.into())).await.unwrap();
    let e = next_json(&mut b).await;
    assert_eq!(e["type"], "error");
    assert!(e["message"].as_str().unwrap().contains("server is full"), "{e}");
}

// ---------------------------------------------------------------- drain, expiry, rate limits

#[tokio::test]
async fn drain_refuses_new_sessions_then_hangs_up_running_calls() {
    let mut srv = start_with(|c| {
        c.drain_grace = Duration::from_millis(1500);
        c.retry_after_s = 5;
    })
    .await;
    let s = srv.create().await;
    assert_eq!(srv.whip(&s, "application/sdp", Some(&s.token), OFFER).await.status(), 201);
    let ready = srv.http.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    srv.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = srv.http.post(srv.url("/v1/sessions")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(error_code(r).await, "draining");
    assert_eq!(srv.http.get(srv.url("/readyz")).send().await.unwrap().status(), 503);
    let health: serde_json::Value = srv.http.get(srv.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "draining");
    // The running call still works during the grace period.
    let r = srv.http.get(srv.url(&format!("/v1/sessions/{}", s.id))).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!srv.agent(0).is_closed());

    let served = srv.served.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), served).await.expect("serve returns after the drain");
    result.unwrap().unwrap();
    assert!(srv.agent(0).is_closed(), "the call is hung up at the end of the grace period");
}

#[tokio::test]
async fn drain_ends_early_when_calls_end() {
    let mut srv = start_with(|c| c.drain_grace = Duration::from_secs(60)).await;
    let s = srv.create().await;
    srv.stop.take().unwrap().send(()).unwrap();
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = srv.http.delete(srv.url(&format!("/v1/sessions/{}", s.id))).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let served = srv.served.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), served).await.expect("no 60 s wait").unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sessions_that_never_connect_expire() {
    let srv = start_with(|c| {
        c.expiry.connect_timeout = Duration::from_millis(600);
        c.expiry.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let abandoned = srv.create().await;
    let connected = srv.create().await;
    assert_eq!(srv.whip(&connected, "application/sdp", Some(&connected.token), OFFER).await.status(), 201);
    // Polling is not a connection: the abandoned session still expires.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ =
            srv.http.get(srv.url(&format!("/v1/sessions/{}", abandoned.id))).bearer_auth(&abandoned.token).send().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = srv
        .http
        .get(srv.url(&format!("/v1/sessions/{}", abandoned.id)))
        .bearer_auth(&abandoned.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(srv.agent(0).is_closed());
    let r = srv
        .http
        .get(srv.url(&format!("/v1/sessions/{}", connected.id)))
        .bearer_auth(&connected.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a connected session does not expire");
    let metrics = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("streamavatar_sessions_expired_total{reason=\"never_connected\"} 1"), "{metrics}");
}

#[tokio::test]
async fn idle_sessions_expire_and_activity_keeps_them() {
    let srv = start_with(|c| {
        c.expiry.connect_timeout = Duration::from_secs(60);
        c.expiry.idle_timeout = Duration::from_millis(700);
    })
    .await;
    let idle = srv.create().await;
    let busy = srv.create().await;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r =
            srv.http.get(srv.url(&format!("/v1/sessions/{}", busy.id))).bearer_auth(&busy.token).send().await.unwrap();
        assert_eq!(r.status(), 200, "requests keep a session alive");
    }
    let r = srv.http.get(srv.url(&format!("/v1/sessions/{}", idle.id))).bearer_auth(&idle.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let metrics = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("streamavatar_sessions_expired_total{reason=\"idle\"} 1"), "{metrics}");
}

#[tokio::test]
async fn per_token_rate_limit_answers_429_with_retry_after() {
    let srv =
        start_with(|c| c.token_rate = streamavatar::signaling::rate_limit::RateLimit { per_second: 1.0, burst: 3.0 })
            .await;
    let a = srv.create().await;
    let b = srv.create().await;
    let get = |s: &Created| srv.http.get(srv.url(&format!("/v1/sessions/{}", s.id))).bearer_auth(&s.token).send();
    for _ in 0..3 {
        assert_eq!(get(&a).await.unwrap().status(), 200);
    }
    let r = get(&a).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_code(r).await, "rate_limited");
    assert_eq!(get(&b).await.unwrap().status(), 200, "another session's token has its own budget");
    // A wrong token is refused before it can spend the session's budget.
    let r = srv.http.get(srv.url(&format!("/v1/sessions/{}", b.id))).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status(), 403);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&a).await.unwrap().status(), 200, "the bucket refills");
    let metrics = srv.http.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("streamavatar_requests_rate_limited_total 1"), "{metrics}");
}
