//! The threads and tasks of one call, around the sans-IO `pacer` and
//! `talk_queue`:
//!
//! * generator thread (OS thread: candle is synchronous and CPU/GPU heavy):
//!   audio in over a bounded `sync_channel`, `VideoChunk`s out over a
//!   bounded tokio channel;
//! * pacing task (tokio, 20 ms interval): drains the talk queue and the
//!   listen ring, runs the pacer, encodes Opus, hands frames on;
//! * video encoder thread: RGB -> I420 -> H.264 at each frame's due time,
//!   keyframe on PLI/FIR, writes the access units to the video track;
//! * remote-audio task: Opus -> 48 kHz -> 16 kHz -> listen ring;
//! * supervisor task: starts the pacing once the peer is connected and
//!   closes the session when the peer fails, disconnects or closes.
//!
//! Every channel is bounded; nothing here blocks the WebRTC I/O tasks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};

use super::pacer::{Pacer, PacerConfig, PlayFrame, TICKS_PER_SECOND};
use super::talk_queue::{TalkQueue, TICK_16K};
use super::{SessionError, SessionSpec, SessionStats, TalkCommand, TalkEvent, NEGOTIATION_TIMEOUT};
use crate::generator::{AvatarSource, GeneratorError, VideoChunk};
use crate::media::h264::H264Encoder;
use crate::media::opus::{OpusDecoder, OpusEncoder};
use crate::media::resample::StreamResampler;
use crate::rtc::{Peer, PeerOptions, PeerState, RemoteAudioPacket, RtcError};

/// Knobs of a session (defaults suit a browser call).
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub peer: PeerOptions,
    /// Talk audio accepted ahead of playout.
    pub talk_cap_ms: u64,
    /// Extra playout delay beyond the first chunk's arrival (20 ms ticks).
    pub playout_margin_ticks: u64,
    /// Silence fed to the generator at the start (16 kHz samples, whole
    /// 20 ms ticks) so the first frames need no real audio. `None` =
    /// `PacerConfig::default_lead_in` (chunk + audio lookahead less the
    /// first real tick: first frame after about one chunk's generation
    /// time); `Some(0)` = none (first frame after chunk + lookahead +
    /// generation). Talk -> ear is the same either way. See `session::pacer`.
    pub lead_in_samples: Option<usize>,
    /// Close the session when the peer has not connected after this long.
    pub connect_timeout: Duration,
    /// H.264 target bitrate; `None` = from the frame size.
    pub video_bitrate_bps: Option<u32>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            peer: PeerOptions::default(),
            talk_cap_ms: 60_000,
            playout_margin_ticks: 3,
            lead_in_samples: None,
            connect_timeout: Duration::from_secs(30),
            video_bitrate_bps: None,
        }
    }
}

/// Listen audio kept for the pacer (16 kHz); beyond this the oldest goes.
const LISTEN_RING_MAX: usize = 16_000 / 5; // 200 ms
const LISTEN_RING_TRIM_TO: usize = 16_000 / 20; // 50 ms

/// Everything the pacing task and `talk()` share; one short lock per tick.
struct Core {
    talk: TalkQueue,
    pacer: Pacer,
    listen: VecDeque<f32>,
    connected: bool,
    sent_times: VecDeque<Instant>,
}

struct GeneratorThread {
    input: Option<SyncSender<GenInput>>,
    handle: Option<JoinHandle<()>>,
}

enum GenInput {
    Audio { talk: Vec<f32>, listen: Vec<f32> },
}

struct SourceInfo {
    fps: u32,
    frame_size: (usize, usize),
}

struct Inner {
    spec: SessionSpec,
    opts: SessionOptions,
    source: SourceInfo,
    core: Mutex<Core>,
    events: broadcast::Sender<TalkEvent>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    peer: tokio::sync::Mutex<Option<Peer>>,
    generator: Mutex<GeneratorThread>,
    chunks: Mutex<Option<mpsc::Receiver<Result<VideoChunk, String>>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    encoder_thread: Mutex<Option<JoinHandle<()>>>,
    keyframe_requests: std::sync::atomic::AtomicU64,
}

/// One call. Cheap to clone; all clones drive the same call.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the session down with a poisoned lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// Starts the agent: the generator runs on its own OS thread, bounded
    /// channels everywhere. Spawns no tokio task (callable from a blocking
    /// thread); the async methods must run inside a tokio runtime.
    pub fn start(spec: SessionSpec, source: Box<dyn AvatarSource>) -> Result<Session, SessionError> {
        Self::start_with(spec, source, SessionOptions::default())
    }

    /// `start` with explicit options.
    pub fn start_with(
        spec: SessionSpec,
        source: Box<dyn AvatarSource>,
        opts: SessionOptions,
    ) -> Result<Session, SessionError> {
        let fps = source.fps();
        let (w, h) = source.frame_size();
        let fpc = source.frames_per_chunk();
        let spc = source.samples_per_chunk();
        let lookahead = source.lookahead_samples();
        if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
            return Err(SessionError::Generator(format!("frame size {w}x{h} must be even and non-zero")));
        }
        let mut pcfg = PacerConfig::new(fps, fpc, spc, lookahead);
        pcfg.playout_margin_ticks = opts.playout_margin_ticks;
        if let Some(lead_in) = opts.lead_in_samples {
            pcfg.lead_in_samples = lead_in;
        }
        let pacer = Pacer::new(pcfg).map_err(|e| SessionError::Generator(e.to_string()))?;

        // Input queue (messages; the lead-in is one): enough for the
        // pacer's backlog limit plus lookahead.
        let input_cap = (3 * spc + lookahead) / TICK_16K + 16;
        let (in_tx, in_rx) = sync_channel::<GenInput>(input_cap);
        let (chunk_tx, chunk_rx) = mpsc::channel(2);
        let handle = std::thread::Builder::new()
            .name("streamavatar-generator".into())
            .spawn(move || generator_loop(source, in_rx, chunk_tx))
            .map_err(|e| SessionError::Generator(format!("cannot spawn generator thread: {e}")))?;

        let (events, _) = broadcast::channel(64);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            spec,
            source: SourceInfo { fps, frame_size: (w, h) },
            core: Mutex::new(Core {
                talk: TalkQueue::new(opts.talk_cap_ms),
                pacer,
                listen: VecDeque::new(),
                connected: false,
                sent_times: VecDeque::new(),
            }),
            opts,
            events,
            closed: AtomicBool::new(false),
            shutdown,
            peer: tokio::sync::Mutex::new(None),
            generator: Mutex::new(GeneratorThread { input: Some(in_tx), handle: Some(handle) }),
            chunks: Mutex::new(Some(chunk_rx)),
            tasks: Mutex::new(Vec::new()),
            encoder_thread: Mutex::new(None),
            keyframe_requests: Default::default(),
        });
        tracing::info!(model = %inner.spec.model.name, fps, width = w, height = h, "session started");
        Ok(Session { inner })
    }

    /// The spec this session was started with.
    pub fn spec(&self) -> &SessionSpec {
        &self.inner.spec
    }

    /// Non-trickle WHIP-style: takes the remote offer, returns the full
    /// answer SDP after ICE gathering.
    pub async fn accept_offer(&self, offer_sdp: &str) -> Result<String, SessionError> {
        self.ensure_open()?;
        crate::rtc::sdp::check(offer_sdp).map_err(|e| SessionError::BadSdp(e.to_string()))?;
        let peer = self.attach_peer(self.inner.opts.peer.clone()).await?;
        let answer = tokio::time::timeout(NEGOTIATION_TIMEOUT, peer.answer(offer_sdp)).await;
        match answer {
            Ok(Ok(sdp)) => Ok(sdp),
            Ok(Err(e)) => {
                self.close().await;
                Err(rtc_to_session(e))
            }
            Err(_) => {
                self.close().await;
                Err(SessionError::Rtc(format!("negotiation took longer than {NEGOTIATION_TIMEOUT:?}")))
            }
        }
    }

    /// Offerer side (WHIP publishing): our complete offer SDP.
    pub async fn create_offer(&self) -> Result<String, SessionError> {
        self.ensure_open()?;
        let peer = self.attach_peer(self.inner.opts.peer.clone()).await?;
        match tokio::time::timeout(NEGOTIATION_TIMEOUT, peer.offer()).await {
            Ok(r) => r.map_err(rtc_to_session),
            Err(_) => Err(SessionError::Rtc("ICE gathering timed out".into())),
        }
    }

    /// Offerer side: apply the answer from the WHIP endpoint.
    pub async fn accept_answer(&self, answer_sdp: &str) -> Result<(), SessionError> {
        self.ensure_open()?;
        let peer = self.inner.peer.lock().await.clone().ok_or(SessionError::Closed)?;
        peer.accept_answer(answer_sdp).await.map_err(rtc_to_session)
    }

    /// Feed audio from another peer (e.g. a WHEP subscription) into the
    /// listen branch.
    pub fn listen_from(&self, packets: mpsc::Receiver<RemoteAudioPacket>) {
        let task = tokio::spawn(remote_audio_loop(self.clone(), packets));
        lock(&self.inner.tasks).push(task);
    }

    pub fn talk(&self, cmd: TalkCommand) -> Result<(), SessionError> {
        self.ensure_open()?;
        let mut core = lock(&self.inner.core);
        match cmd {
            TalkCommand::Pcm { sample_rate, samples } => {
                core.talk.push_pcm(sample_rate, &samples).map_err(|e| SessionError::BadAudio(e.to_string()))
            }
            TalkCommand::End => core.talk.end().map(|_| ()).map_err(|e| SessionError::BadAudio(e.to_string())),
            TalkCommand::Clear => {
                core.talk.clear();
                let ev = core.pacer.clear_talk();
                drop(core);
                let _ = self.inner.events.send(ev);
                Ok(())
            }
        }
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<TalkEvent> {
        self.inner.events.subscribe()
    }

    pub fn stats(&self) -> SessionStats {
        let mut core = lock(&self.inner.core);
        let now = Instant::now();
        while core.sent_times.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(2)) {
            core.sent_times.pop_front();
        }
        let fps = core.sent_times.len() as f64 / 2.0;
        let c = core.pacer.counters();
        SessionStats {
            connected: core.connected && !self.is_closed(),
            fps,
            latency_ms: c.latency_ms as f64,
            frames_sent: c.frames_sent,
            frames_repeated: c.frames_repeated,
            chunks_skipped: c.chunks_skipped,
            talk_queue_ms: core.talk.queued_ms(),
            frames_late: c.frames_late,
            keyframe_requests: self.inner.keyframe_requests.load(Ordering::Relaxed),
        }
    }

    /// End the call: close the peer, stop the tasks, join the generator
    /// and encoder threads. Idempotent.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.inner.shutdown.send(true);
        lock(&self.inner.core).connected = false;
        if let Some(peer) = self.inner.peer.lock().await.clone() {
            peer.hang_up("call ended").await;
        }
        let tasks: Vec<_> = std::mem::take(&mut *lock(&self.inner.tasks));
        for t in tasks {
            // Tasks see the shutdown signal; abort guards against a stuck one.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t).await.is_err() {
                tracing::warn!("session task did not stop in 2 s; aborting it");
                abort.abort();
            }
        }
        let (input, handle) = {
            let mut g = lock(&self.inner.generator);
            (g.input.take(), g.handle.take())
        };
        drop(input);
        lock(&self.inner.chunks).take();
        let encoder = lock(&self.inner.encoder_thread).take();
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(h) = handle {
                let _ = h.join();
            }
            if let Some(h) = encoder {
                let _ = h.join();
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!("joining session threads failed");
        }
        tracing::info!("session closed");
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn ensure_open(&self) -> Result<(), SessionError> {
        if self.is_closed() {
            Err(SessionError::Closed)
        } else {
            Ok(())
        }
    }

    /// Create the single peer connection of this session and its supervisor.
    async fn attach_peer(&self, opts: PeerOptions) -> Result<Peer, SessionError> {
        let mut slot = self.inner.peer.lock().await;
        if slot.is_some() {
            return Err(SessionError::AlreadyConnected);
        }
        let (peer, handles) = Peer::new(opts).await.map_err(rtc_to_session)?;
        *slot = Some(peer.clone());
        drop(slot);
        self.listen_from(handles.remote_audio);
        let task = tokio::spawn(supervise(self.clone(), peer.clone(), handles.state));
        lock(&self.inner.tasks).push(task);
        Ok(peer)
    }

    /// Peer connected: start the encoder thread and the pacing task.
    fn start_media(&self, peer: Peer) -> Result<(), SessionError> {
        let input = lock(&self.inner.generator).input.take().ok_or(SessionError::Closed)?;
        let chunks = lock(&self.inner.chunks).take().ok_or(SessionError::Closed)?;
        let (w, h) = self.inner.source.frame_size;
        let fps = self.inner.source.fps;
        let bitrate = self
            .inner
            .opts
            .video_bitrate_bps
            .unwrap_or_else(|| ((w * h) as f64 * fps as f64 * 0.12).clamp(150_000.0, 4_000_000.0) as u32);
        let encoder = H264Encoder::new(w, h, fps, Some(bitrate)).map_err(|e| SessionError::Rtc(e.to_string()))?;
        let (video_tx, video_rx) = sync_channel::<VideoJob>(64);
        let handle = tokio::runtime::Handle::current();
        let enc_session = self.clone();
        let enc_peer = peer.clone();
        let thread = std::thread::Builder::new()
            .name("streamavatar-h264".into())
            .spawn(move || video_encoder_loop(encoder, video_rx, enc_peer, enc_session, handle))
            .map_err(|e| SessionError::Rtc(format!("cannot spawn encoder thread: {e}")))?;
        *lock(&self.inner.encoder_thread) = Some(thread);
        let opus = OpusEncoder::new().map_err(|e| SessionError::Rtc(e.to_string()))?;
        lock(&self.inner.core).connected = true;
        let task = tokio::spawn(pacing_loop(self.clone(), peer, input, chunks, video_tx, opus));
        lock(&self.inner.tasks).push(task);
        Ok(())
    }

    fn close_in_background(&self) {
        let s = self.clone();
        tokio::spawn(async move { s.close().await });
    }
}

fn rtc_to_session(e: RtcError) -> SessionError {
    match e {
        RtcError::Sdp(e) => SessionError::BadSdp(e.to_string()),
        RtcError::RemoteDescription(m) => SessionError::BadSdp(m),
        RtcError::NothingToAnswer => SessionError::BadSdp(e.to_string()),
        RtcError::Closed => SessionError::Closed,
        other => SessionError::Rtc(other.to_string()),
    }
}

/// Wait for the peer to connect (then start media) and to end (then close).
async fn supervise(session: Session, peer: Peer, mut state: watch::Receiver<PeerState>) {
    let mut shutdown = session.inner.shutdown.subscribe();
    let deadline = tokio::time::sleep(session.inner.opts.connect_timeout);
    tokio::pin!(deadline);
    let mut started = false;
    loop {
        let current = state.borrow_and_update().clone();
        match current {
            PeerState::Connected if !started => {
                started = true;
                tracing::info!("peer connected; media starts");
                if let Err(e) = session.start_media(peer.clone()) {
                    tracing::error!("cannot start media: {e}");
                    session.close_in_background();
                    return;
                }
            }
            PeerState::Ended(why) => {
                tracing::info!(reason = %why, "peer ended; closing session");
                session.close_in_background();
                return;
            }
            _ => {}
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { session.close_in_background(); return; },
            _ = shutdown.changed() => return,
            _ = &mut deadline, if !started => {
                tracing::warn!("peer did not connect in time; closing session");
                session.close_in_background();
                return;
            }
        }
    }
}

fn generator_loop(
    mut source: Box<dyn AvatarSource>,
    input: Receiver<GenInput>,
    output: mpsc::Sender<Result<VideoChunk, String>>,
) {
    let depth = source.pipeline_depth().max(1);
    loop {
        // Wait for audio only when there is nothing to start or collect.
        if source.chunks_in_flight() == 0 && !source.ready() {
            match input.recv() {
                Ok(GenInput::Audio { talk, listen }) => {
                    source.push_talk(&talk);
                    source.push_listen(&listen);
                }
                Err(_) => return,
            }
        }
        // Take everything already queued before generating.
        while let Ok(GenInput::Audio { talk, listen }) = input.try_recv() {
            source.push_talk(&talk);
            source.push_listen(&listen);
        }
        let started = Instant::now();
        let step = if depth == 1 {
            if !source.ready() {
                continue;
            }
            Some(source.next_chunk())
        } else if let Some(done) = source.try_finish_chunk() {
            // Frames first: a decoded chunk never waits for the next DiT.
            Some(done)
        } else if source.ready() && source.chunks_in_flight() < depth {
            match source.begin_chunk() {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            }
        } else if source.chunks_in_flight() > 0 {
            Some(source.finish_chunk())
        } else {
            None
        };
        match step {
            None => {}
            Some(Ok(chunk)) => {
                tracing::debug!(index = chunk.index, ms = started.elapsed().as_millis() as u64, "chunk generated");
                if output.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Some(Err(GeneratorError::NotEnoughAudio { .. })) => {}
            Some(Err(e)) => {
                let _ = output.blocking_send(Err(e.to_string()));
                return;
            }
        }
    }
}

/// One frame for the encoder thread.
struct VideoJob {
    frame: Arc<crate::media::frame::RgbFrame>,
    due: Instant,
    duration: Duration,
}

async fn pacing_loop(
    session: Session,
    peer: Peer,
    gen_input: SyncSender<GenInput>,
    mut chunks: mpsc::Receiver<Result<VideoChunk, String>>,
    video: SyncSender<VideoJob>,
    mut opus: OpusEncoder,
) {
    let inner = &session.inner;
    let mut shutdown = inner.shutdown.subscribe();
    let mut interval = tokio::time::interval(Duration::from_millis(1000 / TICKS_PER_SECOND));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let audio_duration = super::pacer::rtp_exact(48_000, 0, 960);
    let mut chunks_open = true;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            chunk = chunks.recv(), if chunks_open => match chunk {
                Some(Ok(c)) => lock(&inner.core).pacer.on_chunk(c),
                Some(Err(e)) => {
                    tracing::error!("generator failed: {e}");
                    session.close_in_background();
                    return;
                }
                None => {
                    chunks_open = false;
                }
            },
            _ = interval.tick() => {
                let tick_start = Instant::now();
                let out = {
                    let mut core = lock(&inner.core);
                    let core = &mut *core;
                    let mut listen16: Vec<f32> = core.listen.drain(..core.listen.len().min(TICK_16K)).collect();
                    listen16.resize(TICK_16K, 0.0);
                    let talk = core.talk.pop_tick();
                    let talk16 = talk.pcm16.clone();
                    let out = core.pacer.tick(talk, &talk16, &listen16);
                    if let Ok(o) = &out {
                        for _ in &o.frames {
                            core.sent_times.push_back(tick_start);
                        }
                        while core.sent_times.len() > 4 * 120 {
                            core.sent_times.pop_front();
                        }
                    }
                    out
                };
                let out = match out {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!("pacer: {e}");
                        session.close_in_background();
                        return;
                    }
                };
                if !out.feed_talk.is_empty() {
                    match gen_input.try_send(GenInput::Audio { talk: out.feed_talk, listen: out.feed_listen }) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => tracing::warn!("generator input full; audio dropped"),
                        Err(TrySendError::Disconnected(_)) => {
                            tracing::error!("generator thread ended");
                            session.close_in_background();
                            return;
                        }
                    }
                }
                for ev in out.events {
                    let _ = inner.events.send(ev);
                }
                if let Some(pcm) = out.audio {
                    match opus.encode_frame(&pcm) {
                        Ok(pkt) => {
                            if let Err(e) = peer.write_audio(Bytes::from(pkt), audio_duration).await {
                                tracing::debug!("audio write: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("opus encode: {e}"),
                    }
                }
                for PlayFrame { frame, due_in, duration, .. } in out.frames {
                    if video.try_send(VideoJob { frame, due: tick_start + due_in, duration }).is_err() {
                        tracing::warn!("video encoder queue full; frame dropped");
                    }
                }
            }
        }
    }
}

fn video_encoder_loop(
    mut encoder: H264Encoder,
    jobs: Receiver<VideoJob>,
    peer: Peer,
    session: Session,
    rt: tokio::runtime::Handle,
) {
    let mut first = true;
    let mut carried = Duration::ZERO;
    while let Ok(job) = jobs.recv() {
        if session.is_closed() {
            break;
        }
        let now = Instant::now();
        if job.due > now {
            std::thread::sleep(job.due - now);
        }
        let keyframe = first || peer.take_keyframe_request();
        if keyframe && !first {
            session.inner.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        match encoder.encode_rgb(&job.frame, keyframe).map(|f| f.data) {
            Ok(au) if !au.is_empty() => {
                let duration = job.duration + std::mem::take(&mut carried);
                if let Err(e) = rt.block_on(peer.write_video(Bytes::from(au), duration)) {
                    tracing::debug!("video write: {e}");
                }
            }
            Ok(_) => carried += job.duration,
            Err(e) => {
                tracing::warn!("h264 encode: {e}");
                carried += job.duration;
            }
        }
    }
}

async fn remote_audio_loop(session: Session, mut packets: mpsc::Receiver<RemoteAudioPacket>) {
    let mut shutdown = session.inner.shutdown.subscribe();
    let decoder = OpusDecoder::new().map_err(|e| e.to_string());
    let resampler = StreamResampler::new(48_000, 16_000).map_err(|e| e.to_string());
    let (mut decoder, mut resampler) = match (decoder, resampler) {
        (Ok(d), Ok(r)) => (d, r),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("listen branch disabled: {e}");
            return;
        }
    };
    loop {
        let pkt = tokio::select! {
            _ = shutdown.changed() => return,
            p = packets.recv() => match p { Some(p) => p, None => return },
        };
        let pcm48 = match decoder.decode(&pkt.payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(seq = pkt.sequence, "bad remote opus packet: {e}");
                continue;
            }
        };
        let pcm16 = match resampler.process(&pcm48) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("listen resample: {e}");
                continue;
            }
        };
        let mut core = lock(&session.inner.core);
        core.listen.extend(pcm16);
        if core.listen.len() > LISTEN_RING_MAX {
            let excess = core.listen.len() - LISTEN_RING_TRIM_TO;
            core.listen.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::ChunkTimings;
    use crate::media::frame::RgbFrame;

    const SAMPLES: usize = 100;

    /// A pipelined source: chunk k needs `(k+1) * SAMPLES` talk samples;
    /// every other `try_finish_chunk` reports "still decoding".
    #[derive(Default)]
    struct Piped {
        pushed: usize,
        begun: u64,
        in_flight: VecDeque<u64>,
        max_in_flight: Arc<Mutex<usize>>,
        polls: u64,
    }

    impl Piped {
        fn chunk(&self, index: u64) -> VideoChunk {
            let frame = RgbFrame { width: 2, height: 2, data: vec![index as u8; 12] };
            VideoChunk {
                index,
                audio_sample_start: index * SAMPLES as u64,
                frames: vec![frame],
                timings: ChunkTimings::default(),
            }
        }
    }

    impl AvatarSource for Piped {
        fn fps(&self) -> u32 {
            24
        }
        fn frame_size(&self) -> (usize, usize) {
            (2, 2)
        }
        fn frames_per_chunk(&self) -> usize {
            1
        }
        fn samples_per_chunk(&self) -> usize {
            SAMPLES
        }
        fn lookahead_samples(&self) -> usize {
            0
        }
        fn push_talk(&mut self, pcm: &[f32]) {
            self.pushed += pcm.len();
        }
        fn push_listen(&mut self, _: &[f32]) {}
        fn ready(&self) -> bool {
            self.pushed >= (self.begun as usize + 1) * SAMPLES
        }
        fn next_chunk(&mut self) -> Result<VideoChunk, GeneratorError> {
            Err(GeneratorError::Model("a pipelined source is driven by begin/finish".into()))
        }
        fn pipeline_depth(&self) -> usize {
            2
        }
        fn begin_chunk(&mut self) -> Result<(), GeneratorError> {
            if !self.ready() {
                return Err(GeneratorError::NotEnoughAudio { needed: 0, have: 0 });
            }
            self.in_flight.push_back(self.begun);
            self.begun += 1;
            let mut max = lock(&self.max_in_flight);
            *max = (*max).max(self.in_flight.len());
            Ok(())
        }
        fn finish_chunk(&mut self) -> Result<VideoChunk, GeneratorError> {
            let index = self.in_flight.pop_front().ok_or_else(|| GeneratorError::Model("nothing in flight".into()))?;
            Ok(self.chunk(index))
        }
        fn try_finish_chunk(&mut self) -> Option<Result<VideoChunk, GeneratorError>> {
            self.polls += 1;
            if self.polls % 2 == 0 || self.in_flight.is_empty() {
                return None;
            }
            Some(self.finish_chunk())
        }
        fn chunks_in_flight(&self) -> usize {
            self.in_flight.len()
        }
        fn reset(&mut self, _: Option<&RgbFrame>) -> Result<(), GeneratorError> {
            Ok(())
        }
    }

    /// The generator thread drives a pipelined source with up to (and never
    /// more than) `pipeline_depth` chunks in flight, delivers every chunk in
    /// order, and drains the chunks in flight when the audio input closes.
    #[test]
    fn generator_loop_drives_a_pipelined_source_in_order() {
        let max_in_flight = Arc::new(Mutex::new(0));
        let source = Piped { max_in_flight: max_in_flight.clone(), ..Default::default() };
        let (input, input_rx) = sync_channel::<GenInput>(16);
        let (output, mut output_rx) = mpsc::channel(16);
        // All audio is queued before the loop starts: chunks can overlap.
        for _ in 0..6 {
            input.send(GenInput::Audio { talk: vec![0.0; SAMPLES], listen: vec![0.0; SAMPLES] }).unwrap();
        }
        drop(input);
        let worker = std::thread::spawn(move || generator_loop(Box::new(source), input_rx, output));
        let mut indices = Vec::new();
        while let Some(chunk) = output_rx.blocking_recv() {
            let chunk = chunk.expect("no generator error");
            assert_eq!(chunk.frames[0].data[0] as u64, chunk.index);
            indices.push(chunk.index);
        }
        worker.join().unwrap();
        assert_eq!(indices, (0..6).collect::<Vec<u64>>());
        assert_eq!(*lock(&max_in_flight), 2, "the next chunk starts while one is decoding, never more");
    }
}
