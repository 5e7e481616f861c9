//! `streamavatar bench call`: a loopback call against the real server.
//!
//! Starts `signaling::serve` in-process on 127.0.0.1 with the product agent
//! (`SessionAgentFactory` + `generator::factory::build_source`), then for
//! each of N concurrent sessions: `POST /v1/sessions`, a WHIP offer from a
//! webrtc-rs client (sendrecv Opus fed with a 300 Hz tone, recvonly H.264),
//! H.264 depacketized and decoded with openh264, Opus decoded. Measures
//! offer -> first decoded frame, received fps over a sustained window, the
//! decoded frame size, process CPU per session, and the talk audio latency:
//! tone bursts sent as PCM16LE 24 kHz over the talk WebSocket, found by
//! envelope cross-correlation on the received audio track. The pacer's own
//! view (playout delay, late/repeated frames) comes from
//! `GET /v1/sessions/{id}`. Fault injection in the client: video loss
//! (`--video-loss`) and userspace jitter (`--video-jitter-ms`, `jitter.rs`);
//! soaks sample RSS periodically (`--rss-every`, `rss.rs`).

pub mod jitter;
pub mod rss;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use openh264::formats::YUVSource;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::codecs::h264::H264Packet;
use webrtc::rtp::packet::Packet as RtpPacket;
use webrtc::rtp::packetizer::Depacketizer;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_remote::TrackRemote;

use self::jitter::{DelayQueue, Released, ReorderBuffer};
use self::rss::{process_rss_kib, RssSampler, RssSeries};

use crate::config::ModelConfig;
use crate::signaling::session_agent::SessionAgentFactory;
use crate::signaling::sessions::CreatedSession;
use crate::signaling::{self, AgentFactory, AppState, ServerConfig};

/// Everything that can stop the call bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchCallError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("HTTP {step}: {msg}")]
    Http { step: &'static str, msg: String },
    #[error("WebRTC client: {0}")]
    Rtc(#[from] webrtc::Error),
    #[error("talk WebSocket: {0}")]
    Talk(String),
    #[error("session {session}: {msg}")]
    Call { session: usize, msg: String },
    #[error("invalid bench parameters: {0}")]
    Params(String),
    #[error("POST /v1/sessions refused with 503 (Retry-After {retry_after:?})")]
    Refused { retry_after: Option<String> },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CallBenchSpec {
    pub model: ModelConfig,
    /// Generator device of the agents (`cpu`, `cuda:N`, `cuda:A,cuda:B`).
    pub device: String,
    /// Decoder of the agents.
    pub decoder: crate::generator::DecoderKind,
    /// Length of the sustained measurement window.
    pub seconds: f64,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Address the in-process server binds (port 0: any free port).
    pub listen: String,
    /// Server capacity (`max_sessions`); `None` = room for every session.
    /// Below `sessions`, the calls beyond it must be refused (503).
    pub capacity: Option<usize>,
    /// Repeat the talk pattern every this many seconds through the window
    /// (talk/listen alternation for soaks); `None` = once.
    pub talk_every_s: Option<f64>,
    /// Fault injection in the client: drop this percentage of the received
    /// video RTP packets (after NACK, so the loss is final). The client then
    /// freezes until a keyframe, asks for one with a PLI, and the report
    /// says how fast video recovered. 0 = no loss.
    pub video_loss_percent: f64,
    /// Fault injection in the client: hold each received video RTP packet
    /// for a random 0..J ms before handing it on (packets reorder, as under
    /// netem jitter); the client's jitter buffer puts them back in sequence
    /// order (`jitter.rs`). 0 = none.
    pub video_jitter_ms: u64,
    /// Sample the process RSS every this many seconds through the window.
    pub rss_every_s: Option<f64>,
}

/// Packets the jitter stages hold at most (delay queue, reorder buffer):
/// about 2 s of the tiny/mini streams, 0.2 s of a 1280x704 one.
pub const JITTER_QUEUE_PACKETS: usize = 512;
/// Extra wait of the client's jitter buffer over J (timer slack).
const REORDER_MARGIN: Duration = Duration::from_millis(5);
/// Largest accepted `--video-jitter-ms`.
pub const MAX_JITTER_MS: u64 = 1000;

/// What admission control did with the bench's session requests.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub requested: usize,
    pub admitted: usize,
    /// `POST /v1/sessions` answered 503, with its `Retry-After` values.
    pub refused_503: usize,
    pub retry_after: Vec<String>,
    /// Other failures (status and body).
    pub other_errors: Vec<String>,
    /// One more `POST /v1/sessions` in the middle of the window: status, Retry-After.
    pub probe_mid_window: Option<(u16, Option<String>)>,
}

/// Numbers of one session.
#[derive(Debug, Clone)]
pub struct SessionResult {
    pub offer_to_first_frame_ms: f64,
    /// Decoded frames received per second over the window (the pacer keeps
    /// the frame clock by repeating frames when the generator falls behind:
    /// see `frames_repeated` in `server_view`).
    pub received_fps: f64,
    pub frame_size: (usize, usize),
    pub decode_errors: usize,
    /// Fault injection (`video_loss_percent`): packets dropped, frames
    /// skipped while frozen, PLIs sent, loss -> next decoded keyframe (ms).
    pub loss: LossView,
    /// Fault injection (`video_jitter_ms`): what the delay queue and the
    /// client's jitter buffer did.
    pub jitter: JitterView,
    /// Talk sent on the WebSocket -> heard on the received audio track
    /// (envelope cross-correlation; None when not found).
    pub talk_to_ear_ms: Option<i64>,
    /// Normalized correlation of that match.
    pub talk_corr: f32,
    /// `GET /v1/sessions/{id}` JSON at the end of the window (pacer view).
    pub server_view: serde_json::Value,
}

/// The whole bench.
#[derive(Debug, Clone)]
pub struct CallBenchReport {
    pub addr: String,
    pub window_s: f64,
    /// Process CPU seconds per wall second (1.0 = one core) over the window.
    pub cpu_cores_total: f64,
    pub sessions: Vec<SessionResult>,
    pub admission: Admission,
    /// Process resident memory at the start and the end of the window, KiB.
    pub rss_kib: (Option<u64>, Option<u64>),
    /// Talk patterns sent per session over the window.
    pub talk_bursts: usize,
    /// Periodic RSS readings over the window (`rss_every_s`).
    pub rss_series: Option<RssSeries>,
    /// The window stopped before `seconds` because a call ended (why).
    pub ended_early: Option<String>,
}

impl CallBenchReport {
    /// Process CPU (server + in-process clients) per session, in cores.
    pub fn cpu_cores_per_session(&self) -> f64 {
        self.cpu_cores_total / self.sessions.len().max(1) as f64
    }

    /// Human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "server {} | window {:.1} s | {} session(s)\n\
             process CPU over the window: {:.2} cores total, {:.2} cores per session \
             (server + in-process client decode, one process)\n",
            self.addr,
            self.window_s,
            self.sessions.len(),
            self.cpu_cores_total,
            self.cpu_cores_per_session()
        );
        let a = &self.admission;
        s += &format!(
            "admission: {} requested, {} admitted, {} refused with 503 (Retry-After {:?}), other errors {:?}; \
             extra POST mid-window: {}\n",
            a.requested,
            a.admitted,
            a.refused_503,
            a.retry_after,
            a.other_errors,
            a.probe_mid_window.as_ref().map_or("not tried".into(), |(st, ra)| format!(
                "{st} (Retry-After {})",
                ra.as_deref().unwrap_or("none")
            )),
        );
        let kib = |v: Option<u64>| v.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        s += &format!(
            "process RSS: window start {}, end {} | talk bursts per session: {}\n",
            kib(self.rss_kib.0),
            kib(self.rss_kib.1),
            self.talk_bursts
        );
        if let Some(series) = &self.rss_series {
            s += &series.render();
        }
        if let Some(why) = &self.ended_early {
            s += &format!("WINDOW ENDED EARLY: a call ended {why}\n");
        }
        for (i, r) in self.sessions.iter().enumerate() {
            let stats = &r.server_view["stats"];
            s += &format!(
                "session {i}: offer->first decoded frame {:.0} ms | received {:.2} fps (decoded, incl. pacer repeats) | frame {}x{} | \
                 decode errors {}\n  talk->ear (talk WS sent -> heard on the audio track, measured): {} (corr {:.2})\n  \
                 pacer (server, GET /v1/sessions/{{id}}): playout delay audio-in->frame-out {} ms \
                 (A/V offset 0 by construction: frames scheduled on the audio clock), \
                 server fps {}, frames sent {}, repeated {}, late {}, chunks skipped {}\n",
                r.offer_to_first_frame_ms,
                r.received_fps,
                r.frame_size.0,
                r.frame_size.1,
                r.decode_errors,
                r.talk_to_ear_ms.map_or("not found".to_string(), |v| format!("{v} ms")),
                r.talk_corr,
                stats["latency_ms"],
                stats["fps"],
                stats["frames_sent"],
                stats["frames_repeated"],
                stats["frames_late"],
                stats["chunks_skipped"],
            );
            let j = &r.jitter;
            if j.delayed > 0 {
                s += &format!(
                    "  injected video jitter (userspace, 0..J ms per packet): {} packets delayed, {} reordered on arrival, \
                     queue max {} (overflow dropped {}), jitter buffer skipped {} lost, discarded {} late\n",
                    j.delayed, j.reordered_arrivals, j.max_depth, j.overflow_dropped, j.gaps_lost, j.late_discarded
                );
            }
            if r.loss.packets_dropped > 0 || r.jitter.gaps_lost > 0 {
                let mut rec = r.loss.recoveries_ms.clone();
                rec.sort_by(f64::total_cmp);
                let pick =
                    |q: f64| rec.get(((rec.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
                s += &format!(
                    "  injected video loss: {} packets dropped, {} frames skipped while frozen, {} PLIs sent, \
                     server saw {} keyframe requests; {} recoveries, loss->keyframe decoded p50 {:.0} ms, max {:.0} ms\n",
                    r.loss.packets_dropped,
                    r.loss.frames_frozen,
                    r.loss.plis_sent,
                    stats["keyframe_requests"],
                    rec.len(),
                    pick(0.5),
                    rec.last().copied().unwrap_or(f64::NAN)
                );
            }
        }
        s
    }
}

/// Process CPU time (user + system) from /proc/self/stat.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line, in seconds
/// (USER_HZ is 100 on Linux).
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces: count after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Width of the envelope bins for the talk latency.
pub const BIN_MS: usize = 5;

/// Energy envelope of `pcm` at `rate` Hz in `BIN_MS` bins.
pub fn envelope(pcm: &[f32], rate: usize) -> Vec<f32> {
    pcm.chunks(rate * BIN_MS / 1000).map(|c| (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32).sqrt()).collect()
}

/// Lag (bins) of `reference` inside `signal` maximizing the normalized
/// correlation, and that correlation.
pub fn best_lag(signal: &[f32], reference: &[f32]) -> (usize, f32) {
    let norm = |v: &[f32]| -> Vec<f32> {
        let m = v.iter().sum::<f32>() / v.len().max(1) as f32;
        v.iter().map(|x| x - m).collect()
    };
    let r = norm(reference);
    let rn = r.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut best = (0, f32::MIN);
    for lag in 0..signal.len().saturating_sub(r.len()) {
        let s = norm(&signal[lag..lag + r.len()]);
        let sn = s.iter().map(|x| x * x).sum::<f32>().sqrt();
        if sn == 0.0 || rn == 0.0 {
            continue;
        }
        let c = s.iter().zip(&r).map(|(a, b)| a * b).sum::<f32>() / (sn * rn);
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

/// Talk signal at 24 kHz: 440 Hz tone bursts with an irregular on/off pattern.
fn talk_signal_24k() -> Vec<f32> {
    let pattern_ms = [(240, true), (160, false), (400, true), (120, false), (160, true), (320, false), (280, true)];
    let mut out = Vec::new();
    for (ms, on) in pattern_ms {
        for _ in 0..ms * 24 {
            let n = out.len() as f32;
            out.push(if on { 0.3 * (n * 440.0 * std::f32::consts::TAU / 24_000.0).sin() } else { 0.0 });
        }
    }
    out
}

/// What the client saw of injected video loss.
#[derive(Debug, Clone, Default)]
pub struct LossView {
    pub packets_dropped: usize,
    pub frames_frozen: usize,
    pub plis_sent: usize,
    pub recoveries_ms: Vec<f64>,
}

/// What the client's jitter stages did (`video_jitter_ms`).
#[derive(Debug, Clone, Default)]
pub struct JitterView {
    /// Packets that went through the delay queue.
    pub delayed: usize,
    /// Dropped because the delay queue was full.
    pub overflow_dropped: usize,
    /// Most packets held in the delay queue at once.
    pub max_depth: usize,
    /// Packets that reached the jitter buffer after a later one.
    pub reordered_arrivals: usize,
    /// Sequence numbers the jitter buffer gave up on (lost).
    pub gaps_lost: u64,
    /// Packets that came after their gap was skipped (discarded).
    pub late_discarded: usize,
}

#[derive(Default)]
struct Received {
    loss: LossView,
    jitter: JitterView,
    /// Keep received audio only up to here (the talk-latency search window);
    /// None = all of it.
    audio_until: Option<Duration>,
    /// (arrival since the bench clock origin, width, height)
    frames: Vec<(Duration, usize, usize)>,
    /// (arrival, energy envelope of the decoded 48 kHz audio in `BIN_MS` bins:
    /// kept instead of the samples so that long runs do not grow the client)
    audio: Vec<(Duration, Vec<f32>)>,
    decode_errors: usize,
}

/// One receiving client of the bench.
struct Client {
    pc: Arc<RTCPeerConnection>,
    created: CreatedSession,
    received: Arc<Mutex<Received>>,
    offer_to_first_frame: Duration,
    mic_task: tokio::task::JoinHandle<()>,
}

/// A webrtc-rs peer on loopback with an Opus send track (the caller's
/// microphone) and a receive-only video transceiver: the client side of a
/// WHIP call, shared by the bench and `tests/e2e_loopback.rs`.
pub async fn client_peer() -> Result<(Arc<RTCPeerConnection>, Arc<TrackLocalStaticSample>), webrtc::Error> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let mic = Arc::new(TrackLocalStaticSample::new(
        RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.into(),
            clock_rate: 48_000,
            channels: 2,
            ..Default::default()
        },
        "mic".into(),
        "bench".into(),
    ));
    pc.add_track(Arc::clone(&mic) as Arc<dyn TrackLocal + Send + Sync>).await?;
    pc.add_transceiver_from_kind(
        RTPCodecType::Video,
        Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, send_encodings: vec![] }),
    )
    .await?;
    Ok((pc, mic))
}

/// True when an Annex-B access unit holds an IDR slice (NAL type 5).
fn has_idr(au: &[u8]) -> bool {
    au.windows(4).any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x1f == 5)
}

/// The client's video path after the network (and the injected jitter):
/// optional injected loss, H.264 depacketizing and decoding, freeze until a
/// keyframe after a loss, PLI requests.
struct VideoReceiver {
    rx: Arc<Mutex<Received>>,
    pc: Weak<RTCPeerConnection>,
    media_ssrc: u32,
    origin: Instant,
    loss_percent: f64,
    depack: H264Packet,
    au: Vec<u8>,
    decoder: openh264::decoder::Decoder,
    /// A packet of the access unit being collected was lost: the unit and
    /// every frame after it are undecodable until a keyframe (as in a real
    /// receiver).
    broken_au: bool,
    frozen_since: Option<Duration>,
    last_pli: Option<Instant>,
}

impl VideoReceiver {
    fn new(
        rx: Arc<Mutex<Received>>,
        pc: Weak<RTCPeerConnection>,
        media_ssrc: u32,
        origin: Instant,
        loss_percent: f64,
    ) -> Option<Self> {
        Some(Self {
            rx,
            pc,
            media_ssrc,
            origin,
            loss_percent,
            depack: H264Packet::default(),
            au: Vec::new(),
            decoder: openh264::decoder::Decoder::new().ok()?,
            broken_au: false,
            frozen_since: None,
            last_pli: None,
        })
    }

    /// The jitter buffer gave up on a packet: the current unit is broken.
    fn on_lost(&mut self) {
        self.broken_au = true;
    }

    /// One packet in sequence order; false when the bench has gone away.
    async fn on_packet(&mut self, pkt: RtpPacket) -> bool {
        if self.loss_percent > 0.0 && rand::random::<f64>() * 100.0 < self.loss_percent {
            self.broken_au = true;
            if let Ok(mut r) = self.rx.lock() {
                r.loss.packets_dropped += 1;
            }
        } else if let Ok(nal) = self.depack.depacketize(&pkt.payload) {
            self.au.extend_from_slice(&nal);
        }
        if !pkt.header.marker {
            return true;
        }
        let data = std::mem::take(&mut self.au);
        let this_broken = std::mem::take(&mut self.broken_au);
        if this_broken {
            self.frozen_since.get_or_insert(self.origin.elapsed());
            // A lost fragment leaves the depacketizer mid-NAL.
            self.depack = H264Packet::default();
        }
        if let Some(since) = self.frozen_since {
            if has_idr(&data) && !this_broken {
                self.frozen_since = None;
                if let Ok(mut r) = self.rx.lock() {
                    r.loss.recoveries_ms.push((self.origin.elapsed() - since).as_secs_f64() * 1000.0);
                }
            } else {
                let due = self.last_pli.is_none_or(|t| t.elapsed() > Duration::from_millis(300));
                if let (true, Some(pc)) = (due, self.pc.upgrade()) {
                    self.last_pli = Some(Instant::now());
                    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: self.media_ssrc };
                    if pc.write_rtcp(&[Box::new(pli)]).await.is_ok() {
                        if let Ok(mut r) = self.rx.lock() {
                            r.loss.plis_sent += 1;
                        }
                    }
                }
                if let Ok(mut r) = self.rx.lock() {
                    r.loss.frames_frozen += 1;
                }
                return true;
            }
        }
        let decoded = self.decoder.decode(&data);
        let at = self.origin.elapsed();
        let Ok(mut r) = self.rx.lock() else { return false };
        match decoded {
            Ok(Some(yuv)) => {
                let (w, h) = yuv.dimensions();
                r.frames.push((at, w, h));
            }
            Ok(None) => {}
            Err(_) => r.decode_errors += 1,
        }
        true
    }
}

/// Read the video track into `rcv`, through the injected jitter when
/// `jitter_ms > 0`: a reader task forwards packets (so no read is ever
/// cancelled), each waits a random 0..J ms in a bounded [`DelayQueue`], and
/// the client's [`ReorderBuffer`] hands them on in sequence order.
async fn receive_video(track: Arc<TrackRemote>, mut rcv: VideoReceiver, jitter_ms: u64) {
    if jitter_ms == 0 {
        while let Ok((pkt, _)) = track.read_rtp().await {
            if !rcv.on_packet(pkt).await {
                return;
            }
        }
        return;
    }
    let (tx, mut inbox) = tokio::sync::mpsc::channel::<RtpPacket>(JITTER_QUEUE_PACKETS);
    let reader = tokio::spawn(async move {
        while let Ok((pkt, _)) = track.read_rtp().await {
            if tx.send(pkt).await.is_err() {
                break;
            }
        }
    });
    let jitter = Duration::from_millis(jitter_ms);
    let mut delay = DelayQueue::<RtpPacket>::new(JITTER_QUEUE_PACKETS);
    let mut reorder = ReorderBuffer::<RtpPacket>::new(jitter + REORDER_MARGIN, JITTER_QUEUE_PACKETS);
    let mut delayed = 0usize;
    'run: loop {
        let now = Instant::now();
        while let Some(pkt) = delay.pop_due(now) {
            reorder.insert(now, pkt.header.sequence_number, pkt);
        }
        while let Some(out) = reorder.pop(now) {
            match out {
                Released::Packet(pkt) => {
                    if !rcv.on_packet(pkt).await {
                        break 'run;
                    }
                }
                Released::Lost(_) => rcv.on_lost(),
            }
        }
        if let Ok(mut r) = rcv.rx.lock() {
            r.jitter = JitterView {
                delayed,
                overflow_dropped: delay.overflow_dropped,
                max_depth: delay.max_depth,
                reordered_arrivals: reorder.reordered_arrivals,
                gaps_lost: reorder.lost,
                late_discarded: reorder.late_discarded,
            };
        }
        let wake = [delay.next_due(), reorder.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            pkt = inbox.recv() => match pkt {
                Some(pkt) => {
                    let hold = jitter.mul_f64(rand::random::<f64>());
                    if delay.push(Instant::now(), hold, pkt) {
                        delayed += 1;
                    }
                }
                None => break 'run,
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    }
    reader.abort();
}

fn attach_receivers(
    pc: &Arc<RTCPeerConnection>,
    received: Arc<Mutex<Received>>,
    origin: Instant,
    loss_percent: f64,
    jitter_ms: u64,
) {
    let weak_pc = Arc::downgrade(pc);
    pc.on_track(Box::new(move |track, _, _| {
        let rx = received.clone();
        let weak_pc = weak_pc.clone();
        Box::pin(async move {
            if track.kind() == RTPCodecType::Video {
                let Some(rcv) = VideoReceiver::new(rx, weak_pc, track.ssrc(), origin, loss_percent) else { return };
                tokio::spawn(receive_video(track, rcv, jitter_ms));
            } else {
                tokio::spawn(async move {
                    let Ok(mut dec) = opus::Decoder::new(48_000, opus::Channels::Mono) else { return };
                    let mut buf = vec![0f32; 5760];
                    while let Ok((pkt, _)) = track.read_rtp().await {
                        let at = origin.elapsed();
                        if let Ok(n) = dec.decode_float(&pkt.payload, &mut buf, false) {
                            if let Ok(mut r) = rx.lock() {
                                if r.audio_until.is_none_or(|until| at <= until) {
                                    r.audio.push((at, envelope(&buf[..n], 48_000)));
                                }
                            }
                        }
                    }
                });
            }
        })
    }));
}

/// The remote "person": a 300 Hz tone into the session's listen branch.
fn spawn_mic(mic: Arc<TrackLocalStaticSample>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut enc) = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip) else { return };
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for k in 0u64.. {
            tick.tick().await;
            let pcm: Vec<f32> = (0..960)
                .map(|i| 0.2 * ((k * 960 + i) as f32 * 300.0 * std::f32::consts::TAU / 48_000.0).sin())
                .collect();
            let Ok(pkt) = enc.encode_vec_float(&pcm, 4000) else { break };
            let s = Sample { data: Bytes::from(pkt), duration: Duration::from_millis(20), ..Default::default() };
            if mic.write_sample(&s).await.is_err() {
                break;
            }
        }
    })
}

fn http_err(step: &'static str) -> impl Fn(reqwest::Error) -> BenchCallError {
    move |e| BenchCallError::Http { step, msg: e.to_string() }
}

/// Create a session over HTTP, negotiate over WHIP, wait for the first frame.
async fn open_call(
    index: usize,
    http: &reqwest::Client,
    base: &str,
    origin: Instant,
    loss_percent: f64,
    jitter_ms: u64,
) -> Result<Client, BenchCallError> {
    let resp = http
        .post(format!("{base}/v1/sessions"))
        .header("content-type", "application/json")
        .body(format!("{{\"seed\":{index}}}"))
        .send()
        .await
        .map_err(http_err("POST /v1/sessions"))?;
    if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        return Err(BenchCallError::Refused { retry_after });
    }
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(BenchCallError::Http { step: "POST /v1/sessions", msg: format!("{status}: {body}") });
    }
    let created: CreatedSession = resp.json().await.map_err(http_err("POST /v1/sessions body"))?;

    let (pc, mic) = client_peer().await?;
    let received = Arc::new(Mutex::new(Received::default()));
    attach_receivers(&pc, received.clone(), origin, loss_percent, jitter_ms);

    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = gathered.recv().await;
    let offer_sdp = pc
        .local_description()
        .await
        .ok_or(BenchCallError::Call { session: index, msg: "no local description".into() })?
        .sdp;
    let offered_at = origin.elapsed();
    let resp = http
        .post(format!("{base}{}?token={}", created.whip_url, created.token))
        .header("content-type", "application/sdp")
        .body(offer_sdp)
        .send()
        .await
        .map_err(http_err("WHIP POST"))?;
    let status = resp.status();
    let answer = resp.text().await.map_err(http_err("WHIP answer body"))?;
    if status.as_u16() != 201 {
        return Err(BenchCallError::Http { step: "WHIP POST", msg: format!("{status}: {answer}") });
    }
    pc.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
    let mic_task = spawn_mic(mic);

    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(f) = received.lock().ok().and_then(|r| r.frames.first().map(|f| f.0)) {
            break f;
        }
        if Instant::now() > deadline {
            mic_task.abort();
            let _ = pc.close().await;
            return Err(BenchCallError::Call { session: index, msg: "no video frame decoded within 60 s".into() });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok(Client { pc, created, received, offer_to_first_frame: first.saturating_sub(offered_at), mic_task })
}

type TalkSink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Message,
>;

/// Open the session's talk WebSocket (24 kHz PCM16); its events are drained
/// in the background. The socket stays open: closing it may clear the talk
/// queue, and a session has one talk socket at a time.
async fn open_talk(addr: &str, c: &CreatedSession) -> Result<TalkSink, BenchCallError> {
    let url = format!("ws://{addr}{}?token={}&rate=24000", c.talk_url, c.token);
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.map_err(|e| BenchCallError::Talk(e.to_string()))?;
    let (sink, mut events) = ws.split();
    tokio::spawn(async move { while let Some(Ok(_)) = events.next().await {} });
    Ok(sink)
}

/// Send the talk signal as one utterance; returns when it was sent
/// (relative to `origin`).
async fn send_talk(sink: &mut TalkSink, pcm: &[f32], origin: Instant) -> Result<Duration, BenchCallError> {
    use tokio_tungstenite::tungstenite::Message;
    let sent_at = origin.elapsed();
    for piece in pcm.chunks(2400) {
        let bytes: Vec<u8> = piece.iter().flat_map(|x| ((x * 32767.0) as i16).to_le_bytes()).collect();
        sink.send(Message::binary(bytes)).await.map_err(|e| BenchCallError::Talk(e.to_string()))?;
    }
    sink.send(Message::text("{\"type\":\"end\"}")).await.map_err(|e| BenchCallError::Talk(e.to_string()))?;
    Ok(sent_at)
}

/// Shortest window that holds the talk pattern and its echo.
pub const MIN_WINDOW_S: f64 = 6.0;

/// Run the bench: server in-process, `spec.sessions` concurrent calls.
pub async fn bench_call(spec: &CallBenchSpec) -> Result<CallBenchReport, BenchCallError> {
    // The talk pattern (1.7 s) starts 1 s into the window and comes back
    // after the playout delay (1-2.5 s): shorter windows cannot hold it.
    if spec.sessions == 0 || spec.seconds.is_nan() || spec.seconds < MIN_WINDOW_S {
        return Err(BenchCallError::Params(format!(
            "need --sessions >= 1 and --seconds >= {MIN_WINDOW_S} (got {} and {})",
            spec.sessions, spec.seconds
        )));
    }
    if !(0.0..=50.0).contains(&spec.video_loss_percent) {
        return Err(BenchCallError::Params("need 0 <= --video-loss <= 50 (percent)".into()));
    }
    if spec.capacity == Some(0) || spec.talk_every_s.is_some_and(|t| t.is_nan() || t < 3.0) {
        return Err(BenchCallError::Params("need --capacity >= 1 and --talk-every >= 3 s".into()));
    }
    if spec.video_jitter_ms > MAX_JITTER_MS {
        return Err(BenchCallError::Params(format!("need --video-jitter-ms <= {MAX_JITTER_MS}")));
    }
    if spec.rss_every_s.is_some_and(|t| !(t >= 1.0 && t <= spec.seconds)) {
        return Err(BenchCallError::Params("need 1 s <= --rss-every <= --seconds".into()));
    }
    let mut cfg = ServerConfig::new(spec.model.clone());
    cfg.device = spec.device.clone();
    cfg.decoder = spec.decoder;
    cfg.max_sessions = spec.capacity.unwrap_or(spec.sessions.max(cfg.max_sessions));
    // The bench polls nothing while it runs: no idle expiry of its sessions.
    cfg.expiry.idle_timeout = Duration::from_secs(24 * 3600);
    let factory: Arc<dyn AgentFactory> = Arc::new(SessionAgentFactory::new(crate::generator::factory::build_source));
    let listener = tokio::net::TcpListener::bind(&spec.listen)
        .await
        .map_err(|source| BenchCallError::Bind { addr: spec.listen.clone(), source })?;
    let addr =
        listener.local_addr().map_err(|source| BenchCallError::Bind { addr: spec.listen.clone(), source })?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(signaling::serve(listener, AppState::new(cfg, factory), async move {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let origin = Instant::now();

    let opened = futures::future::join_all(
        (0..spec.sessions).map(|i| open_call(i, &http, &base, origin, spec.video_loss_percent, spec.video_jitter_ms)),
    )
    .await;
    let mut clients = Vec::new();
    let mut first_err = None;
    let mut admission = Admission { requested: spec.sessions, ..Default::default() };
    let over_capacity = spec.capacity.is_some_and(|c| c < spec.sessions);
    for o in opened {
        match o {
            Ok(c) => clients.push(c),
            Err(BenchCallError::Refused { retry_after }) if over_capacity => {
                admission.refused_503 += 1;
                admission.retry_after.extend(retry_after);
            }
            Err(e) => {
                admission.other_errors.push(e.to_string());
                first_err = first_err.or(Some(e));
            }
        }
    }
    admission.admitted = clients.len();
    if clients.is_empty() && first_err.is_none() {
        first_err = Some(BenchCallError::Params("no session was admitted".into()));
    }
    let result = async {
        if let Some(e) = first_err {
            return Err(e);
        }
        // Sustained window: every call is up.
        let win_start = origin.elapsed();
        let cpu0 = process_cpu_seconds();
        let rss0 = process_rss_kib();
        let rss_sampler = spec.rss_every_s.map(|t| RssSampler::start(Duration::from_secs_f64(t)));
        let talk = talk_signal_24k();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut sinks = Vec::new();
        for c in &clients {
            sinks.push(open_talk(&addr, &c.created).await?);
        }
        let mut sent = Vec::new();
        for (sink, c) in sinks.iter_mut().zip(&clients) {
            let at = send_talk(sink, &talk, origin).await?;
            sent.push(at);
            // With repeated bursts only the first is searched (below): the
            // client keeps no audio beyond it, so soaks do not grow it.
            if let (Some(t), Ok(mut r)) = (spec.talk_every_s, c.received.lock()) {
                r.audio_until = Some(at + Duration::from_secs_f64(t));
            }
        }
        let mut talk_bursts = 1;
        let mut ended_early = None;
        let window = Duration::from_secs_f64(spec.seconds);
        let mid = window / 2;
        let mut probed = false;
        loop {
            let elapsed = origin.elapsed() - win_start;
            if elapsed >= window {
                break;
            }
            if !probed && elapsed >= mid {
                probed = true;
                if over_capacity {
                    let r = http
                        .post(format!("{base}/v1/sessions"))
                        .header("content-type", "application/json")
                        .body("{}")
                        .send()
                        .await
                        .map_err(http_err("POST /v1/sessions (mid-window probe)"))?;
                    let ra = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                    admission.probe_mid_window = Some((r.status().as_u16(), ra));
                }
            }
            let next_talk = spec
                .talk_every_s
                .map(|t| Duration::from_secs(1) + Duration::from_secs_f64(t) * talk_bursts as u32)
                .filter(|at| *at + Duration::from_secs(3) < window);
            let wake =
                [Some(window), (!probed).then_some(mid), next_talk].into_iter().flatten().min().unwrap_or(window);
            tokio::time::sleep(wake.saturating_sub(origin.elapsed() - win_start)).await;
            if next_talk.is_some_and(|at| origin.elapsed() - win_start >= at) {
                // Talk, then listen (the mic tone goes on all the time) until the next burst.
                let mut failed = None;
                for sink in &mut sinks {
                    if let Err(e) = send_talk(sink, &talk, origin).await {
                        failed = Some(e);
                    }
                }
                if let Some(e) = failed {
                    // A call ended under the bench (its talk socket closed): stop
                    // the window here and report what was measured up to now.
                    let after_s = (origin.elapsed() - win_start).as_secs_f64();
                    ended_early = Some(format!("after {after_s:.1} s of the window: {e}"));
                    break;
                }
                talk_bursts += 1;
            }
        }
        let win_end = origin.elapsed();
        let cpu1 = process_cpu_seconds();
        let rss1 = process_rss_kib();
        let rss_series = rss_sampler.map(RssSampler::finish);
        let window_s = (win_end - win_start).as_secs_f64();
        let cpu_cores_total = match (cpu0, cpu1) {
            (Some(a), Some(b)) => (b - a) / window_s,
            _ => f64::NAN,
        };
        let reference = envelope(&talk, 24_000);
        let mut sessions = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let server_view: serde_json::Value = http
                .get(format!("{base}/v1/sessions/{}?token={}", c.created.id, c.created.token))
                .send()
                .await
                .map_err(http_err("GET /v1/sessions/{id}"))?
                .json()
                .await
                .map_err(http_err("GET /v1/sessions/{id} body"))?;
            let r = c.received.lock().map_err(|_| BenchCallError::Call { session: i, msg: "poisoned".into() })?;
            let in_win: Vec<_> = r.frames.iter().filter(|f| f.0 >= win_start && f.0 <= win_end).collect();
            let received_fps = match (in_win.first(), in_win.last()) {
                (Some(a), Some(b)) if b.0 > a.0 => (in_win.len() - 1) as f64 / (b.0 - a.0).as_secs_f64(),
                _ => 0.0,
            };
            let frame_size = r.frames.last().map(|f| (f.1, f.2)).unwrap_or((0, 0));
            // Received audio as an envelope on the bench clock, from the talk send on.
            let bin = |d: Duration| d.as_millis() as usize / BIN_MS;
            let from = bin(sent[i]);
            // With repeated bursts, search the first one only.
            let first_burst_end =
                spec.talk_every_s.map_or(win_end, |t| (sent[i] + Duration::from_secs_f64(t)).min(win_end));
            let horizon = bin(first_burst_end) + 1;
            let mut env = vec![0f32; horizon.saturating_sub(from)];
            for (at, env_bins) in &r.audio {
                for (j, v) in env_bins.iter().enumerate() {
                    let b = bin(*at) + j;
                    if b >= from && b < horizon {
                        env[b - from] = *v;
                    }
                }
            }
            let (lag, corr) = best_lag(&env, &reference);
            let talk_to_ear_ms = (corr > 0.5).then_some((lag * BIN_MS) as i64);
            sessions.push(SessionResult {
                offer_to_first_frame_ms: c.offer_to_first_frame.as_secs_f64() * 1000.0,
                received_fps,
                frame_size,
                decode_errors: r.decode_errors,
                loss: r.loss.clone(),
                jitter: r.jitter.clone(),
                talk_to_ear_ms,
                talk_corr: corr.max(0.0),
                server_view,
            });
        }
        Ok(CallBenchReport {
            addr: addr.clone(),
            window_s,
            cpu_cores_total,
            sessions,
            admission: admission.clone(),
            rss_kib: (rss0, rss1),
            talk_bursts,
            rss_series,
            ended_early,
        })
    }
    .await;

    for c in &clients {
        c.mic_task.abort();
        let _ = c.pc.close().await;
        let _ = http.delete(format!("{base}/v1/sessions/{}?token={}", c.created.id, c.created.token)).send().await;
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_parse_after_the_command_name() {
        let line = "1234 (my (odd) cmd) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_cpu_seconds(line), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        assert!(process_cpu_seconds().is_some());
    }

    #[test]
    fn best_lag_finds_a_delayed_talk_envelope() {
        let talk = talk_signal_24k();
        let reference = envelope(&talk, 24_000);
        let mut delayed = vec![0f32; 24_000 / 1000 * 130];
        delayed.extend_from_slice(&talk);
        delayed.extend(vec![0f32; 24_000]);
        let (lag, corr) = best_lag(&envelope(&delayed, 24_000), &reference);
        assert_eq!(lag * BIN_MS, 130);
        assert!(corr > 0.99);
    }
}
