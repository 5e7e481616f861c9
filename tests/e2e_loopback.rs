//! End-to-end loopback call: a webrtc-rs client peer (sendrecv Opus audio
//! fed with a tone, recvonly video) negotiates with `Session::accept_offer`
//! directly, receives H.264, depacketizes it with webrtc's H.264
//! depacketizer and decodes it with openh264; talk PCM pushed through
//! `Session::talk` comes back on the audio track.
//!
//! The avatar source here is deterministic: the left half of each frame has
//! a brightness that follows the talk-audio energy of the frame's own audio
//! window, the right half shows a moving bar. Cross-correlating the
//! received brightness envelope and the received audio envelope against the
//! sent talk signal gives the A/V offset as the receiver sees it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use openh264::formats::YUVSource;
use streamavatar::bench_call::{best_lag, client_peer, envelope, BIN_MS};
use streamavatar::config::ModelConfig;
use streamavatar::generator::{AvatarSource, GeneratorError, VideoChunk};
use streamavatar::media::frame::RgbFrame;
use streamavatar::rtc::PeerOptions;
use streamavatar::session::{Session, SessionError, SessionOptions, SessionSpec, TalkCommand, TalkEvent};
use webrtc::media::Sample;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::codecs::h264::H264Packet;
use webrtc::rtp::packetizer::Depacketizer;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;

// 50 fps keeps the video envelope's quantization (one frame) at 20 ms.
const FPS: u32 = 50;
const FRAMES_PER_CHUNK: usize = 8; // 160 ms chunks
const SAMPLES_PER_CHUNK: usize = 2560;
const LOOKAHEAD: usize = 640; // 40 ms
const WIDTH: usize = 96;
const HEIGHT: usize = 64;

/// Deterministic avatar: brightness of the left half = talk energy of the
/// frame's audio window; the right half has a bar moving one column per frame.
struct PatternSource {
    talk: Vec<f32>,
    listen_len: usize,
    chunk: u64,
    probe: Arc<Probe>,
}

/// What the test can observe of the source from outside the generator thread.
#[derive(Default)]
struct Probe {
    dropped: AtomicBool,
    /// (samples, sum of squares) of the listen audio pushed.
    listen: Mutex<(usize, f64)>,
}

impl Drop for PatternSource {
    fn drop(&mut self) {
        self.probe.dropped.store(true, Ordering::SeqCst);
    }
}

fn brightness_of(rms: f32) -> u8 {
    (30.0 + 400.0 * rms).clamp(30.0, 230.0) as u8
}

impl AvatarSource for PatternSource {
    fn fps(&self) -> u32 {
        FPS
    }
    fn frame_size(&self) -> (usize, usize) {
        (WIDTH, HEIGHT)
    }
    fn frames_per_chunk(&self) -> usize {
        FRAMES_PER_CHUNK
    }
    fn samples_per_chunk(&self) -> usize {
        SAMPLES_PER_CHUNK
    }
    fn lookahead_samples(&self) -> usize {
        LOOKAHEAD
    }
    fn push_talk(&mut self, pcm: &[f32]) {
        self.talk.extend_from_slice(pcm);
    }
    fn push_listen(&mut self, pcm: &[f32]) {
        self.listen_len += pcm.len();
        let mut l = self.probe.listen.lock().unwrap();
        l.0 += pcm.len();
        l.1 += pcm.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>();
    }
    fn ready(&self) -> bool {
        let need = (self.chunk as usize + 1) * SAMPLES_PER_CHUNK + LOOKAHEAD;
        self.talk.len() >= need && self.listen_len >= need
    }
    fn next_chunk(&mut self) -> Result<VideoChunk, GeneratorError> {
        let need = (self.chunk as usize + 1) * SAMPLES_PER_CHUNK + LOOKAHEAD;
        if !self.ready() {
            return Err(GeneratorError::NotEnoughAudio { needed: need, have: self.talk.len().min(self.listen_len) });
        }
        // Pretend to compute for a while, like a model would.
        std::thread::sleep(Duration::from_millis(15));
        let start = self.chunk as usize * SAMPLES_PER_CHUNK;
        let per_frame = SAMPLES_PER_CHUNK / FRAMES_PER_CHUNK;
        let frames = (0..FRAMES_PER_CHUNK)
            .map(|i| {
                let w = &self.talk[start + i * per_frame..start + (i + 1) * per_frame];
                let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
                let b = brightness_of(rms);
                let mut f = RgbFrame::solid(WIDTH, HEIGHT, [b, b, b]);
                let bar = WIDTH / 2 + ((self.chunk as usize * FRAMES_PER_CHUNK + i) % (WIDTH / 2));
                for y in 0..HEIGHT {
                    for x in WIDTH / 2..WIDTH {
                        let v = if x == bar { 255 } else { 0 };
                        let p = (y * WIDTH + x) * 3;
                        f.data[p..p + 3].copy_from_slice(&[v, v / 2, 0]);
                    }
                }
                f
            })
            .collect();
        let chunk =
            VideoChunk { index: self.chunk, audio_sample_start: start as u64, frames, timings: Default::default() };
        self.chunk += 1;
        Ok(chunk)
    }
    fn reset(&mut self, _reference: Option<&RgbFrame>) -> Result<(), GeneratorError> {
        self.talk.clear();
        self.listen_len = 0;
        self.chunk = 0;
        Ok(())
    }
}

fn spec() -> SessionSpec {
    SessionSpec {
        model: ModelConfig::tiny(),
        weights: vec![],
        device: "cpu".into(),
        reference: None,
        seed: 0,
        decoder: Default::default(),
    }
}

fn start_session() -> Result<(Session, Arc<Probe>)> {
    let probe = Arc::new(Probe::default());
    let source = PatternSource { talk: vec![], listen_len: 0, chunk: 0, probe: probe.clone() };
    let opts =
        SessionOptions { peer: PeerOptions { include_loopback: true, ..Default::default() }, ..Default::default() };
    Ok((Session::start_with(spec(), Box::new(source), opts)?, probe))
}

/// The talk signal: 16 kHz noise bursts with an irregular on/off envelope.
fn talk_signal() -> Vec<f32> {
    let pattern_ms = [(240, true), (160, false), (400, true), (120, false), (160, true), (320, false), (280, true)];
    let mut out = Vec::new();
    let mut seed = 0x1234_5678u32;
    for (ms, on) in pattern_ms {
        for _ in 0..ms * 16 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            out.push(if on { 0.35 * noise } else { 0.0 });
        }
    }
    out
}

#[derive(Default, Clone)]
struct Received {
    /// (arrival since t0, width, height, mean luma of the left half)
    frames: Vec<(Duration, usize, usize, f32)>,
    /// Arrival times of access units holding an IDR slice.
    idr_at: Vec<Duration>,
    video_ssrc: Option<u32>,
    /// (arrival since t0, decoded 48 kHz samples)
    audio: Vec<(Duration, Vec<f32>)>,
    decode_errors: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_call_delivers_video_and_synced_talk_audio() -> Result<()> {
    let (session, probe) = start_session()?;
    let mut events = session.subscribe_events();
    let (pc, mic) = client_peer().await?;

    let t0 = Instant::now();
    let received = Arc::new(Mutex::new(Received::default()));
    let rx = received.clone();
    pc.on_track(Box::new(move |track, _, _| {
        let rx = rx.clone();
        Box::pin(async move {
            if track.kind() == RTPCodecType::Video {
                rx.lock().unwrap().video_ssrc = Some(track.ssrc());
                tokio::spawn(async move {
                    let mut depack = H264Packet::default();
                    let mut au = Vec::<u8>::new();
                    let mut decoder = match openh264::decoder::Decoder::new() {
                        Ok(d) => d,
                        Err(_) => return,
                    };
                    while let Ok((pkt, _)) = track.read_rtp().await {
                        if let Ok(nal) = depack.depacketize(&pkt.payload) {
                            au.extend_from_slice(&nal);
                        }
                        if !pkt.header.marker {
                            continue;
                        }
                        let at = t0.elapsed();
                        let data = std::mem::take(&mut au);
                        let mut r = rx.lock().unwrap();
                        if openh264::nal_units(&data)
                            .any(|n| n.len() > 4 && (n[if n[2] == 1 { 3 } else { 4 }] & 0x1f) == 5)
                        {
                            r.idr_at.push(at);
                        }
                        match decoder.decode(&data) {
                            Ok(Some(yuv)) => {
                                let (w, h) = yuv.dimensions();
                                let stride = yuv.strides().0;
                                let y = yuv.y();
                                let mut sum = 0u64;
                                for row in 0..h {
                                    sum += y[row * stride..row * stride + w / 2].iter().map(|&v| v as u64).sum::<u64>();
                                }
                                r.frames.push((at, w, h, sum as f32 / (h * w / 2) as f32));
                            }
                            Ok(None) => {}
                            Err(_) => r.decode_errors += 1,
                        }
                    }
                });
            } else {
                tokio::spawn(async move {
                    let mut dec = match opus::Decoder::new(48_000, opus::Channels::Mono) {
                        Ok(d) => d,
                        Err(_) => return,
                    };
                    let mut buf = vec![0f32; 5760];
                    while let Ok((pkt, _)) = track.read_rtp().await {
                        let at = t0.elapsed();
                        if let Ok(n) = dec.decode_float(&pkt.payload, &mut buf, false) {
                            rx.lock().unwrap().audio.push((at, buf[..n].to_vec()));
                        }
                    }
                });
            }
        })
    }));
    let (conn_tx, mut conn_rx) = tokio::sync::watch::channel(RTCPeerConnectionState::New);
    pc.on_peer_connection_state_change(Box::new(move |s| {
        let _ = conn_tx.send(s);
        Box::pin(async {})
    }));

    // Non-trickle offer, answered by the session directly.
    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = gathered.recv().await;
    let offer_sdp = pc.local_description().await.context("no local description")?.sdp;
    let answer = session.accept_offer(&offer_sdp).await?;
    assert!(answer.contains("H264") && answer.contains("packetization-mode=1"));
    assert!(matches!(session.accept_offer(&offer_sdp).await, Err(SessionError::AlreadyConnected)));
    pc.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        while *conn_rx.borrow_and_update() != RTCPeerConnectionState::Connected {
            conn_rx.changed().await?;
        }
        anyhow::Ok(())
    })
    .await
    .context("client never connected")??;
    let connected_at = t0.elapsed();

    // The remote "person" talks: a 300 Hz tone into the session's listen branch.
    let mic_task = tokio::spawn(async move {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for k in 0..400u64 {
            tick.tick().await;
            let pcm: Vec<f32> = (0..960)
                .map(|i| 0.2 * ((k * 960 + i) as f32 * 300.0 * std::f32::consts::TAU / 48_000.0).sin())
                .collect();
            let Ok(pkt) = enc.encode_vec_float(&pcm, 4000) else {
                break;
            };
            let s = Sample { data: Bytes::from(pkt), duration: Duration::from_millis(20), ..Default::default() };
            if mic.write_sample(&s).await.is_err() {
                break;
            }
        }
    });

    // Talk once video flows, as PCM16 at 16 kHz in 100 ms pieces.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let talk = talk_signal();
    let talk_sent_at = t0.elapsed();
    for piece in talk.chunks(1600) {
        let samples: Vec<i16> = piece.iter().map(|x| (x * 32767.0) as i16).collect();
        session.talk(TalkCommand::Pcm { sample_rate: 16_000, samples })?;
    }
    session.talk(TalkCommand::End)?;
    assert!(matches!(
        session.talk(TalkCommand::Pcm { sample_rate: 4_000, samples: vec![0; 10] }),
        Err(SessionError::BadAudio(_))
    ));
    tokio::time::sleep(Duration::from_millis(3800)).await;
    let stats = session.stats();
    mic_task.abort();

    let mut got_events = Vec::new();
    while let Ok(ev) = events.try_recv() {
        got_events.push(ev);
    }

    let r = received.lock().unwrap().clone();
    // --- video: size and rate ---
    let first_frame = r.frames.first().context("no video frame decoded")?.0;
    let frames: Vec<_> = r.frames.iter().filter(|f| f.0 >= first_frame).collect();
    for f in &frames {
        assert_eq!((f.1, f.2), (WIDTH, HEIGHT), "decoded frame size");
    }
    let span = frames.last().unwrap().0 - first_frame;
    assert!(span >= Duration::from_secs(2), "only {span:?} of video");
    let fps = (frames.len() - 1) as f64 / span.as_secs_f64();
    assert!((fps - FPS as f64).abs() <= 0.1 * FPS as f64, "measured {fps:.2} fps, configured {FPS}");
    assert_eq!(r.decode_errors, 0);

    // --- talk audio back on the audio track, and A/V alignment ---
    let bin = |d: Duration| (d.as_millis() as u64 / BIN_MS as u64) as usize;
    let horizon = bin(t0.elapsed()) + 1;
    let mut audio_env = vec![0f32; horizon];
    for (at, pcm) in &r.audio {
        // A 20 ms packet plays from its arrival on (as a receiver would).
        let e = envelope(pcm, 48_000);
        let first = bin(*at);
        for (j, v) in e.iter().enumerate() {
            let b = first + j;
            if b < horizon {
                audio_env[b] = *v;
            }
        }
    }
    let mut video_env = vec![0f32; horizon];
    for w in frames.windows(2) {
        let (from, to) = (bin(w[0].0).min(horizon), bin(w[1].0).min(horizon));
        video_env[from..to].fill(w[0].3);
    }
    let reference = envelope(&talk, 16_000);
    let (lag_a, corr_a) = best_lag(&audio_env, &reference);
    let (lag_v, corr_v) = best_lag(&video_env, &reference);
    let av_offset_ms = (lag_v as i64 - lag_a as i64) * BIN_MS as i64;
    let talk_latency_ms = (lag_a as u64 * BIN_MS as u64) as i64 - talk_sent_at.as_millis() as i64;
    println!(
        "first frame {} ms after offer ({} ms after connect); {} frames, {fps:.2} fps; \
         audio corr {corr_a:.3} lag {} ms; video corr {corr_v:.3} lag {} ms; A/V offset {av_offset_ms} ms \
         (video minus audio); talk->ear latency {talk_latency_ms} ms; stats {stats:?}; events {got_events:?}",
        first_frame.as_millis(),
        (first_frame - connected_at).as_millis(),
        frames.len(),
        lag_a as u64 * BIN_MS as u64,
        lag_v as u64 * BIN_MS as u64,
    );
    assert!(corr_a > 0.7, "talk audio not found on the audio track (corr {corr_a:.3})");
    assert!(corr_v > 0.7, "talk energy not found in the video brightness (corr {corr_v:.3})");
    assert!(av_offset_ms.abs() <= 40, "A/V offset {av_offset_ms} ms");

    // --- talk events and stats ---
    assert_eq!(got_events.first(), Some(&TalkEvent::SpeechStarted));
    let talk_ms = (talk.len() / 16) as i64;
    let done = got_events.iter().find_map(|e| match e {
        TalkEvent::SpeechDone { played_ms } => Some(*played_ms as i64),
        _ => None,
    });
    let done = done.context("no SpeechDone")?;
    assert!((done - talk_ms).abs() <= 20, "played {done} ms of {talk_ms} ms");
    assert!(stats.connected && stats.frames_sent as usize >= frames.len());
    assert!(stats.fps > 0.8 * FPS as f64);
    // The remote's tone reached the generator's listen branch (0.2 amplitude sine: rms 0.14).
    let (n, sumsq) = *probe.listen.lock().unwrap();
    let listen_rms = (sumsq / n.max(1) as f64).sqrt();
    println!("listen branch: {:.1} s pushed, rms {listen_rms:.3}", n as f64 / 16_000.0);
    assert!(listen_rms > 0.05, "remote audio did not reach the listen branch (rms {listen_rms:.4})");
    let video_ssrc = r.video_ssrc.context("no video ssrc")?;

    // --- barge-in: Clear cuts a long utterance mid-way ---
    let long: Vec<i16> = talk_signal()
        .iter()
        .cycle()
        .take(16_000 * 3)
        .map(|x| (x.abs().max(0.2) * 0.35 * 32767.0 * x.signum()) as i16)
        .collect();
    session.talk(TalkCommand::Pcm { sample_rate: 16_000, samples: long })?;
    session.talk(TalkCommand::End)?;
    let started = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(TalkEvent::SpeechStarted) = events.recv().await {
                return t0.elapsed();
            }
        }
    })
    .await
    .context("no SpeechStarted for the long utterance")?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let clear_at = t0.elapsed();
    session.talk(TalkCommand::Clear)?;
    let cleared = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match events.recv().await {
                Ok(TalkEvent::SpeechCleared { played_ms }) => return Some(played_ms),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await?
    .context("no SpeechCleared")?;
    tokio::time::sleep(Duration::from_millis(900)).await;
    {
        let r = received.lock().unwrap();
        let loud_after = r
            .audio
            .iter()
            .filter(|(at, _)| *at > clear_at + Duration::from_millis(60))
            .map(|(_, pcm)| envelope(pcm, 48_000).into_iter().fold(0f32, f32::max))
            .fold(0f32, f32::max);
        let video_back = r.frames.iter().find(|f| f.0 > clear_at && f.3 < 45.0).map(|f| (f.0 - clear_at).as_millis());
        println!(
            "barge-in: cleared after {} ms of speech, SpeechCleared{{played_ms: {cleared}}}; \
             audio peak after clear+60ms {loud_after:.4}; video back to listening {video_back:?} ms after clear",
            (clear_at - started).as_millis()
        );
        assert!((cleared as i64 - (clear_at - started).as_millis() as i64).abs() <= 60);
        assert!(loud_after < 0.01, "talk audio still playing after Clear");
        let back = video_back.context("video never returned to listening after Clear")?;
        assert!(back <= 600, "video kept talking {back} ms after Clear");
    }

    // --- PLI from the remote -> keyframe ---
    let ssrc = video_ssrc;
    let pli_at = t0.elapsed();
    pc.write_rtcp(&[Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc })]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(session.stats().keyframe_requests >= 1, "PLI not seen by the session");
    let idr_after = received.lock().unwrap().idr_at.iter().find(|t| **t >= pli_at).copied();
    let idr_after = idr_after.context("no IDR after the PLI")?;
    println!("IDR {} ms after PLI", (idr_after - pli_at).as_millis());

    // --- the remote vanishes: the session cleans up and the generator thread ends ---
    // (ICE `disconnected` is not an end; the agent waits for `failed`, i.e.
    // ICE_DISCONNECTED_TIMEOUT + ICE_FAILED_TIMEOUT without connectivity).
    let closed_at = Instant::now();
    pc.close().await?;
    let allowed = streamavatar::rtc::peer::ICE_DISCONNECTED_TIMEOUT
        + streamavatar::rtc::peer::ICE_FAILED_TIMEOUT
        + Duration::from_secs(8);
    let deadline = Instant::now() + allowed;
    while !(session.is_closed() && probe.dropped.load(Ordering::SeqCst)) {
        if Instant::now() > deadline {
            bail!("session did not clean up after the peer left");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("session closed {} ms after the remote closed", closed_at.elapsed().as_millis());
    assert!(matches!(session.talk(TalkCommand::End), Err(SessionError::Closed)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_offers_are_bad_sdp_and_session_survives() -> Result<()> {
    let (session, probe) = start_session()?;
    for bad in ["", "garbage", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"] {
        match session.accept_offer(bad).await {
            Err(SessionError::BadSdp(_)) => {}
            other => bail!("expected BadSdp for {bad:?}, got {other:?}"),
        }
    }
    assert!(!session.is_closed());
    // Barge-in on a session without a peer: queued audio is dropped at once.
    session.talk(TalkCommand::Pcm { sample_rate: 24_000, samples: vec![1000; 24_000] })?;
    assert!(session.stats().talk_queue_ms >= 990);
    let mut ev = session.subscribe_events();
    session.talk(TalkCommand::Clear)?;
    assert_eq!(session.stats().talk_queue_ms, 0);
    assert_eq!(ev.try_recv()?, TalkEvent::SpeechCleared { played_ms: 0 });
    // 61 s of audio is beyond the talk queue cap.
    let long = vec![0i16; 16_000 * 61];
    assert!(matches!(
        session.talk(TalkCommand::Pcm { sample_rate: 16_000, samples: long }),
        Err(SessionError::BadAudio(_))
    ));
    session.close().await;
    assert!(session.is_closed() && probe.dropped.load(Ordering::SeqCst));
    Ok(())
}

/// A minimal WHIP endpoint (axum + a webrtc-rs answerer) on loopback: the
/// session publishes through `WhipClient` as `streamavatar join` does, the
/// endpoint receives H.264, then the client DELETEs the resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publish_reaches_endpoint_and_delete_ends_it() -> Result<()> {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::routing::{delete, post};
    use streamavatar::rtc::whip_client::WhipClient;

    #[derive(Default)]
    struct Endpoint {
        pc: tokio::sync::Mutex<Option<Arc<RTCPeerConnection>>>,
        video_units: std::sync::atomic::AtomicUsize,
        auth: Mutex<Option<String>>,
        deleted: AtomicBool,
    }
    let ep = Arc::new(Endpoint::default());

    let post_ep = ep.clone();
    let delete_ep = ep.clone();
    let app = axum::Router::new()
        .route(
            "/whip",
            post(move |headers: HeaderMap, body: String| {
                let ep = post_ep.clone();
                async move {
                    *ep.auth.lock().unwrap() =
                        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/sdp") {
                        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
                    }
                    let answer = async {
                        let (pc, _) = client_peer().await?;
                        let counter = ep.clone();
                        pc.on_track(Box::new(move |track, _, _| {
                            let counter = counter.clone();
                            Box::pin(async move {
                                tokio::spawn(async move {
                                    while let Ok((pkt, _)) = track.read_rtp().await {
                                        if track.kind() == RTPCodecType::Video && pkt.header.marker {
                                            counter.video_units.fetch_add(1, Ordering::SeqCst);
                                        }
                                    }
                                });
                            })
                        }));
                        pc.set_remote_description(RTCSessionDescription::offer(body)?).await?;
                        let answer = pc.create_answer(None).await?;
                        let mut gathered = pc.gathering_complete_promise().await;
                        pc.set_local_description(answer).await?;
                        let _ = gathered.recv().await;
                        let sdp = pc.local_description().await.context("no answer")?.sdp;
                        *ep.pc.lock().await = Some(pc);
                        anyhow::Ok(sdp)
                    }
                    .await
                    .map_err(|_| StatusCode::BAD_REQUEST)?;
                    Ok((
                        StatusCode::CREATED,
                        [(header::CONTENT_TYPE, "application/sdp"), (header::LOCATION, "/whip/resource/1")],
                        answer,
                    ))
                }
            }),
        )
        .route(
            "/whip/resource/1",
            delete(move || {
                let ep = delete_ep.clone();
                async move {
                    ep.deleted.store(true, Ordering::SeqCst);
                    if let Some(pc) = ep.pc.lock().await.take() {
                        let _ = pc.close().await;
                    }
                    StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (session, probe) = start_session()?;
    let whip = WhipClient::new(&format!("http://{addr}/whip"), Some("tok".into()))?;
    let offer = session.create_offer().await?;
    let published = whip.publish(&offer).await?;
    session.accept_answer(&published.answer_sdp).await?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while ep.video_units.load(Ordering::SeqCst) < 25 {
        if Instant::now() > deadline {
            bail!("endpoint received only {} video frames", ep.video_units.load(Ordering::SeqCst));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ep.auth.lock().unwrap().as_deref(), Some("Bearer tok"));
    session.close().await;
    whip.delete(&published).await?;
    assert!(ep.deleted.load(Ordering::SeqCst));
    assert!(probe.dropped.load(Ordering::SeqCst));
    server.abort();
    Ok(())
}
