//! The sans-IO A/V media clock and pacing policy of the outgoing tracks.
//!
//! * [`MediaClock`] maps a wall-clock `Instant` to the video frame slot
//!   (`fps` from the config) and the 20 ms audio packet that are due, and
//!   back; it also gives the RTP timestamps (90 kHz video, 48 kHz audio).
//! * [`AvPacer`] decides what goes out at each slot. Generated chunks are
//!   pushed in (frames + the 48 kHz talk audio that drove them); `poll(now)`
//!   returns the frame for the current video slot and the due audio packets.
//! * [`TalkDelayLine`] holds the 48 kHz talk audio that was fed to the
//!   generator until the chunk that shows it is out, so the audio path is
//!   delayed by exactly the generator latency.
//!
//! ## Pacing policy (chunk level)
//!
//! Chunk `k` has a nominal start slot `anchor_slot + (k - anchor_k) * F`
//! (`F` frames per chunk); the anchor is set by the first chunk after
//! start / [`AvPacer::reset`]. Frames of a chunk go out one per slot, chunks
//! back to back. When the next chunk is not ready at the slot it is needed,
//! the last frame is repeated (`frames_repeated`) and playout slips; a chunk
//! that then arrives plays from the next slot (it is *late* by the slots it
//! slipped). When the chunk at the head of the queue is late by a whole
//! chunk period or more (`lateness >= F`) and a newer chunk is already
//! queued, the stale chunk is dropped with its audio (`chunks_skipped`) so
//! playout catches up by one period; the only queued chunk is never dropped
//! (that would freeze video for nothing). A chunk that would be early (after
//! an overflow drop) re-anchors the schedule.
//!
//! A/V alignment: a chunk's talk audio is released into the audio FIFO at
//! the moment its first frame goes out, padded with silence so that its first
//! sample is scheduled at (or, if that 20 ms packet already left, just after)
//! the frame's slot time; [`PacerStats::av_offset_ms`] reports the residual
//! (0 in steady state, < 20 ms after a slip). Audio packets go out every
//! 20 ms whether or not there is talk audio (silence otherwise), so RTP
//! timestamps stay continuous.
//!
//! ## Bounds
//!
//! [`CHUNK_QUEUE_CAPACITY`] chunks wait at most (the oldest waiting chunk is
//! dropped when a new one arrives on a full queue); the audio FIFO holds at
//! most [`AUDIO_FIFO_CHUNKS`] chunks of audio plus [`MAX_AUDIO_BURST_PACKETS`]
//! packets; a caller that polls late gets at most one frame (missed slots
//! are consumed and counted as `frames_dropped_late`) and at most
//! [`MAX_AUDIO_BURST_PACKETS`] audio packets (older ones are dropped and
//! counted); the delay line holds at most [`DELAY_LINE_MAX_SECONDS`].
//!
//! ## Wiring (what `session` does)
//!
//! ```text
//! let cfg = PacerConfig::new(gen.fps(), gen.frames_per_chunk())?;
//! let mut pacer = AvPacer::new(cfg, Instant::now())?;
//! let mut line = TalkDelayLine::new(cfg.audio_samples_per_chunk);
//! // talk PCM at rate r: the same audio goes to the generator (16 kHz) and
//! // to the delay line (48 kHz), in lockstep; silence for both when idle.
//! gen.push_talk(&to16k.process(&pcm)?);   line.push(&to48k.process(&pcm)?, now)?;
//! // a chunk is ready:
//! let chunk = gen.next_chunk()?;
//! let talk = line.take_chunk(chunk.index);
//! pacer.push_chunk(PacedChunk::from_generated(chunk, talk))?;
//! // the output task:
//! loop {
//!     let out = pacer.poll(Instant::now());
//!     if let Some(v) = out.video { video_track.send(h264.encode_rgb(&v.frame, pli)?.data, 1/fps) }
//!     for a in out.audio { audio_track.send(opus.encode_frame(&a.samples)?, 20 ms) }
//!     sleep_until(pacer.next_deadline(Instant::now()));
//! }
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::frame::RgbFrame;

/// Rate of the outgoing audio (Opus).
pub const AUDIO_RATE: u32 = 48_000;
/// Samples per outgoing audio packet (20 ms at 48 kHz).
pub const AUDIO_PACKET_SAMPLES: usize = 960;
/// Duration of one outgoing audio packet.
pub const AUDIO_PACKET_DURATION: Duration = Duration::from_millis(20);
/// RTP clock rate of H.264 video.
pub const VIDEO_RTP_RATE: u32 = 90_000;
/// Chunks that may wait behind the playing one (3 = 1.5 s at 12 frames / 24 fps).
pub const CHUNK_QUEUE_CAPACITY: usize = 3;
/// Chunks' worth of released, not yet packetized talk audio kept at most.
pub const AUDIO_FIFO_CHUNKS: usize = 2;
/// Due audio packets a late caller receives at most per poll; older ones are dropped.
pub const MAX_AUDIO_BURST_PACKETS: u64 = 5;
/// Capacity of the talk delay line in seconds (generator latency must stay below).
pub const DELAY_LINE_MAX_SECONDS: usize = 30;
/// Push timestamps remembered by the delay line.
const DELAY_LINE_MAX_MARKS: usize = 4_096;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Errors of the clock, pacer and delay line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    #[error("invalid frame rate {0} (1..=120)")]
    BadFps(u32),
    #[error("frames per chunk must be >= 1")]
    NoFramesPerChunk,
    #[error("chunk {index} has {got} frames, the pacer expects {expected}")]
    BadChunkLength { index: u64, got: usize, expected: usize },
    #[error("talk delay line is full ({capacity} samples = {DELAY_LINE_MAX_SECONDS} s); the generator is not consuming audio")]
    DelayLineFull { capacity: usize },
}

/// Maps wall-clock time to media slots. All math is integer nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaClock {
    start: Instant,
    fps: u32,
}

impl MediaClock {
    /// A clock whose frame 0 and audio packet 0 start at `start`.
    pub fn new(start: Instant, fps: u32) -> Result<Self, ClockError> {
        if !(1..=120).contains(&fps) {
            return Err(ClockError::BadFps(fps));
        }
        Ok(Self { start, fps })
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn fps(&self) -> u32 {
        self.fps
    }

    fn elapsed_ns(&self, now: Instant) -> u128 {
        now.saturating_duration_since(self.start).as_nanos()
    }

    /// Index of the frame slot that contains `now` (0 before the start).
    pub fn frame_index_at(&self, now: Instant) -> u64 {
        (self.elapsed_ns(now) * self.fps as u128 / NANOS_PER_SEC) as u64
    }

    /// Start time of frame slot `index` (rounded up to the nanosecond, so
    /// `frame_index_at(frame_time(i)) == i`).
    pub fn frame_time(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((index as u128 * NANOS_PER_SEC).div_ceil(self.fps as u128) as u64)
    }

    /// Index of the 20 ms audio packet that contains `now`.
    pub fn audio_packet_index_at(&self, now: Instant) -> u64 {
        (self.elapsed_ns(now) / AUDIO_PACKET_DURATION.as_nanos()) as u64
    }

    /// Start time of audio packet `index`.
    pub fn audio_packet_time(&self, index: u64) -> Instant {
        self.start + AUDIO_PACKET_DURATION * index as u32
    }

    /// 48 kHz sample index at the start of frame slot `index` (rounded down).
    pub fn audio_sample_at_frame(&self, index: u64) -> u64 {
        (index as u128 * AUDIO_RATE as u128 / self.fps as u128) as u64
    }

    /// RTP timestamp (90 kHz, wrapping) of frame slot `index`.
    pub fn video_rtp_timestamp(&self, index: u64) -> u32 {
        (index as u128 * VIDEO_RTP_RATE as u128 / self.fps as u128) as u32
    }

    /// RTP timestamp (48 kHz, wrapping) of audio packet `index`.
    pub fn audio_rtp_timestamp(&self, index: u64) -> u32 {
        (index.wrapping_mul(AUDIO_PACKET_SAMPLES as u64)) as u32
    }
}

/// What the pacer needs to know about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacerConfig {
    pub fps: u32,
    /// Frames per generated chunk (F).
    pub frames_per_chunk: usize,
    /// 48 kHz talk samples per chunk: `floor(F * 48000 / fps)`.
    pub audio_samples_per_chunk: usize,
}

impl PacerConfig {
    pub fn new(fps: u32, frames_per_chunk: usize) -> Result<Self, ClockError> {
        if !(1..=120).contains(&fps) {
            return Err(ClockError::BadFps(fps));
        }
        if frames_per_chunk == 0 {
            return Err(ClockError::NoFramesPerChunk);
        }
        Ok(Self {
            fps,
            frames_per_chunk,
            audio_samples_per_chunk: frames_per_chunk * AUDIO_RATE as usize / fps as usize,
        })
    }

    /// Duration of one chunk.
    pub fn chunk_duration(&self) -> Duration {
        Duration::from_nanos((self.frames_per_chunk as u128 * NANOS_PER_SEC / self.fps as u128) as u64)
    }
}

/// A generated chunk handed to the pacer.
#[derive(Debug, Clone)]
pub struct PacedChunk {
    /// Generator chunk index (0, 1, 2, ... since the last reset).
    pub index: u64,
    /// Exactly `frames_per_chunk` frames.
    pub frames: Vec<RgbFrame>,
    /// 48 kHz mono talk audio shown by this chunk; padded with silence or
    /// truncated to `audio_samples_per_chunk`.
    pub talk_audio: Vec<f32>,
    /// When the chunk's first talk sample entered the pipeline (for latency).
    pub audio_input_time: Option<Instant>,
}

impl PacedChunk {
    /// From a generator chunk and the delay line's audio for it.
    pub fn from_generated(chunk: crate::generator::VideoChunk, talk: TalkChunkAudio) -> Self {
        Self { index: chunk.index, frames: chunk.frames, talk_audio: talk.samples, audio_input_time: talk.input_time }
    }
}

/// What happened to a pushed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    /// The queue was full: the oldest waiting chunk was dropped (counted in `chunks_skipped`).
    QueuedDroppedOldest {
        dropped_index: u64,
    },
    /// Index not newer than the last accepted chunk: ignored.
    Stale {
        last_index: u64,
    },
}

/// Where an outgoing frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// Frame `frame` of chunk `chunk`.
    Fresh { chunk: u64, frame: usize },
    /// The last frame again: the next chunk was not ready.
    Repeat,
}

/// One frame to send now.
#[derive(Debug, Clone)]
pub struct VideoOut {
    /// Frame slot index (see [`MediaClock`]).
    pub slot: u64,
    /// Scheduled time of the slot.
    pub time: Instant,
    /// 90 kHz RTP timestamp of the slot.
    pub rtp_timestamp: u32,
    pub frame: Arc<RgbFrame>,
    pub source: FrameSource,
}

/// One 20 ms audio packet of 48 kHz mono PCM to encode and send now.
#[derive(Debug, Clone)]
pub struct AudioOut {
    /// Packet index (see [`MediaClock`]).
    pub packet: u64,
    pub time: Instant,
    /// 48 kHz RTP timestamp of the packet.
    pub rtp_timestamp: u32,
    /// Exactly [`AUDIO_PACKET_SAMPLES`] samples.
    pub samples: Vec<f32>,
    /// False when the packet is pure padding silence (no talk audio released).
    pub has_talk: bool,
}

/// Output of one [`AvPacer::poll`].
#[derive(Debug, Clone, Default)]
pub struct PacerPoll {
    pub video: Option<VideoOut>,
    pub audio: Vec<AudioOut>,
}

/// Counters and gauges of the pacer (for `SessionStats` and metrics).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PacerStats {
    pub frames_sent: u64,
    pub frames_repeated: u64,
    /// Slots a late caller missed; their frames were consumed, not sent.
    pub frames_dropped_late: u64,
    pub chunks_played: u64,
    /// Chunks dropped to catch up or because the queue was full.
    pub chunks_skipped: u64,
    pub audio_packets_sent: u64,
    pub audio_packets_dropped_late: u64,
    /// Talk samples dropped with skipped chunks or FIFO overflow.
    pub audio_samples_dropped: u64,
    /// Slots the last started chunk was behind its nominal start.
    pub last_chunk_lateness_frames: u64,
    /// Audio start minus video start of the last started chunk (ms, >= 0).
    pub av_offset_ms: f64,
    /// Scheduled display time of the last chunk minus its audio input time.
    pub latency_ms: f64,
    pub queued_chunks: usize,
}

struct Playing {
    index: u64,
    frames: std::vec::IntoIter<RgbFrame>,
    next_frame: usize,
}

/// The chunk-level A/V pacer. See the module docs for the policy.
pub struct AvPacer {
    clock: MediaClock,
    cfg: PacerConfig,
    queue: VecDeque<PacedChunk>,
    playing: Option<Playing>,
    last_frame: Option<Arc<RgbFrame>>,
    /// (chunk index, slot) the nominal schedule is anchored at.
    anchor: Option<(u64, u64)>,
    last_accepted: Option<u64>,
    next_video_slot: Option<u64>,
    audio_fifo: VecDeque<f32>,
    /// Samples in the FIFO that are talk audio (the rest is padding).
    fifo_talk: VecDeque<bool>,
    next_audio_packet: u64,
    stats: PacerStats,
}

impl std::fmt::Debug for AvPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvPacer").field("cfg", &self.cfg).field("stats", &self.stats).finish()
    }
}

impl AvPacer {
    /// A pacer whose media clock starts at `start`.
    pub fn new(cfg: PacerConfig, start: Instant) -> Result<Self, ClockError> {
        let clock = MediaClock::new(start, cfg.fps)?;
        Ok(Self {
            clock,
            cfg,
            queue: VecDeque::with_capacity(CHUNK_QUEUE_CAPACITY + 1),
            playing: None,
            last_frame: None,
            anchor: None,
            last_accepted: None,
            next_video_slot: None,
            audio_fifo: VecDeque::new(),
            fifo_talk: VecDeque::new(),
            next_audio_packet: 0,
            stats: PacerStats::default(),
        })
    }

    pub fn clock(&self) -> &MediaClock {
        &self.clock
    }

    pub fn config(&self) -> &PacerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &PacerStats {
        &self.stats
    }

    /// Chunks waiting behind the playing one.
    pub fn queued_chunks(&self) -> usize {
        self.queue.len()
    }

    /// True when a new chunk would not overflow the queue.
    pub fn has_room(&self) -> bool {
        self.queue.len() < CHUNK_QUEUE_CAPACITY
    }

    fn audio_fifo_capacity(&self) -> usize {
        AUDIO_FIFO_CHUNKS * self.cfg.audio_samples_per_chunk + MAX_AUDIO_BURST_PACKETS as usize * AUDIO_PACKET_SAMPLES
    }

    /// Hand a generated chunk to the pacer.
    pub fn push_chunk(&mut self, mut chunk: PacedChunk) -> Result<PushOutcome, ClockError> {
        if chunk.frames.len() != self.cfg.frames_per_chunk {
            return Err(ClockError::BadChunkLength {
                index: chunk.index,
                got: chunk.frames.len(),
                expected: self.cfg.frames_per_chunk,
            });
        }
        if let Some(last) = self.last_accepted {
            if chunk.index <= last {
                return Ok(PushOutcome::Stale { last_index: last });
            }
        }
        chunk.talk_audio.resize(self.cfg.audio_samples_per_chunk, 0.0);
        self.last_accepted = Some(chunk.index);
        let mut outcome = PushOutcome::Queued;
        if self.queue.len() >= CHUNK_QUEUE_CAPACITY {
            if let Some(old) = self.queue.pop_front() {
                self.drop_chunk(&old);
                outcome = PushOutcome::QueuedDroppedOldest { dropped_index: old.index };
            }
        }
        self.queue.push_back(chunk);
        self.stats.queued_chunks = self.queue.len();
        Ok(outcome)
    }

    /// Forget queued chunks and the schedule (generator reset). The last
    /// frame keeps being repeated until the first new chunk arrives; audio
    /// already released keeps playing.
    pub fn reset(&mut self) {
        for c in std::mem::take(&mut self.queue) {
            self.drop_chunk(&c);
        }
        self.playing = None;
        self.anchor = None;
        self.last_accepted = None;
        self.stats.queued_chunks = 0;
    }

    /// Barge-in: replace all talk audio not yet packetized (released or
    /// queued) by silence, keeping the timing. Returns the samples silenced.
    pub fn silence_talk(&mut self) -> usize {
        let mut n = 0;
        for (s, talk) in self.audio_fifo.iter_mut().zip(self.fifo_talk.iter_mut()) {
            if *talk {
                n += 1;
            }
            *s = 0.0;
            *talk = false;
        }
        for c in &mut self.queue {
            n += c.talk_audio.len();
            c.talk_audio.iter_mut().for_each(|s| *s = 0.0);
        }
        n
    }

    /// Released talk audio not yet sent, in milliseconds.
    pub fn pending_audio_ms(&self) -> u64 {
        self.audio_fifo.len() as u64 * 1000 / AUDIO_RATE as u64
    }

    /// The next instant at which `poll` has something to do (never before
    /// `now`): the next audio packet or video slot. Before the first chunk
    /// there are no video slots; after a push, poll again right away.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let audio = self.clock.audio_packet_time(self.next_audio_packet);
        let video = match (self.next_video_slot, self.queue.is_empty()) {
            (Some(slot), _) => self.clock.frame_time(slot),
            (None, false) => now,
            (None, true) => audio,
        };
        audio.min(video).max(now)
    }

    /// Everything due at `now`: the frame for the current slot (if one is
    /// due and not sent yet) and the due audio packets.
    pub fn poll(&mut self, now: Instant) -> PacerPoll {
        let due_packet = self.clock.audio_packet_index_at(now);
        // A late caller: drop audio packets beyond the burst bound first, so
        // the audio FIFO position used for A/V alignment is current.
        if due_packet >= self.next_audio_packet + MAX_AUDIO_BURST_PACKETS {
            let skip = due_packet + 1 - MAX_AUDIO_BURST_PACKETS - self.next_audio_packet;
            let samples = (skip as usize * AUDIO_PACKET_SAMPLES).min(self.audio_fifo.len());
            let talk = self.fifo_talk.drain(..samples).filter(|t| *t).count();
            self.audio_fifo.drain(..samples);
            self.stats.audio_samples_dropped += talk as u64;
            self.stats.audio_packets_dropped_late += skip;
            self.next_audio_packet += skip;
        }
        let video = self.poll_video(now);
        let mut audio = Vec::new();
        while self.next_audio_packet <= due_packet {
            audio.push(self.next_audio_out());
        }
        PacerPoll { video, audio }
    }

    fn poll_video(&mut self, now: Instant) -> Option<VideoOut> {
        let due = self.clock.frame_index_at(now);
        let mut slot = match self.next_video_slot {
            Some(s) => s,
            None => {
                // Nothing was ever shown: start with the first chunk.
                if self.queue.is_empty() {
                    return None;
                }
                due
            }
        };
        if slot > due {
            return None;
        }
        // Missed slots are consumed (keeps the schedule), only the current one is sent.
        let mut out = None;
        while slot <= due {
            let produced = self.step(slot);
            if slot < due && produced.is_some() {
                self.stats.frames_dropped_late += 1;
            }
            out = produced.map(|(frame, source)| VideoOut {
                slot,
                time: self.clock.frame_time(slot),
                rtp_timestamp: self.clock.video_rtp_timestamp(slot),
                frame,
                source,
            });
            slot += 1;
        }
        self.next_video_slot = Some(slot);
        if let Some(v) = &out {
            self.stats.frames_sent += 1;
            if v.source == FrameSource::Repeat {
                self.stats.frames_repeated += 1;
            }
        }
        out
    }

    /// Produce the frame of `slot`.
    fn step(&mut self, slot: u64) -> Option<(Arc<RgbFrame>, FrameSource)> {
        if let Some(p) = &mut self.playing {
            if let Some(frame) = p.frames.next() {
                let source = FrameSource::Fresh { chunk: p.index, frame: p.next_frame };
                p.next_frame += 1;
                let frame = Arc::new(frame);
                self.last_frame = Some(frame.clone());
                return Some((frame, source));
            }
            self.playing = None;
        }
        // Catch up: drop stale head chunks while a newer one is queued.
        while self.queue.len() >= 2 && self.lateness(self.queue[0].index, slot) >= self.cfg.frames_per_chunk as i64 {
            if let Some(stale) = self.queue.pop_front() {
                self.drop_chunk(&stale);
            }
        }
        self.stats.queued_chunks = self.queue.len();
        match self.queue.pop_front() {
            Some(chunk) => {
                self.stats.queued_chunks = self.queue.len();
                self.start_chunk(chunk, slot);
                self.step(slot)
            }
            None => self.last_frame.clone().map(|f| (f, FrameSource::Repeat)),
        }
    }

    fn lateness(&self, index: u64, slot: u64) -> i64 {
        match self.anchor {
            Some((k0, s0)) => {
                let nominal = s0 as i64 + (index as i64 - k0 as i64) * self.cfg.frames_per_chunk as i64;
                slot as i64 - nominal
            }
            None => 0,
        }
    }

    fn start_chunk(&mut self, chunk: PacedChunk, slot: u64) {
        let late = self.lateness(chunk.index, slot);
        if self.anchor.is_none() || late < 0 {
            self.anchor = Some((chunk.index, slot));
        }
        self.stats.last_chunk_lateness_frames = late.max(0) as u64;
        self.stats.chunks_played += 1;
        let slot_time = self.clock.frame_time(slot);
        if let Some(t) = chunk.audio_input_time {
            self.stats.latency_ms = slot_time.saturating_duration_since(t).as_secs_f64() * 1000.0;
        }
        // Release the chunk's audio aligned with its first frame.
        let target = self.clock.audio_sample_at_frame(slot);
        let fifo_end = self.next_audio_packet * AUDIO_PACKET_SAMPLES as u64 + self.audio_fifo.len() as u64;
        if fifo_end < target {
            let pad = (target - fifo_end) as usize;
            self.audio_fifo.extend(std::iter::repeat_n(0.0, pad));
            self.fifo_talk.extend(std::iter::repeat_n(false, pad));
        }
        let start = fifo_end.max(target);
        self.stats.av_offset_ms = (start - target) as f64 * 1000.0 / AUDIO_RATE as f64;
        self.fifo_talk.extend(std::iter::repeat_n(true, chunk.talk_audio.len()));
        self.audio_fifo.extend(chunk.talk_audio);
        let cap = self.audio_fifo_capacity();
        if self.audio_fifo.len() > cap {
            let over = self.audio_fifo.len() - cap;
            self.audio_fifo.drain(..over);
            let talk = self.fifo_talk.drain(..over).filter(|t| *t).count();
            self.stats.audio_samples_dropped += talk as u64;
        }
        self.playing = Some(Playing { index: chunk.index, frames: chunk.frames.into_iter(), next_frame: 0 });
    }

    fn drop_chunk(&mut self, chunk: &PacedChunk) {
        self.stats.chunks_skipped += 1;
        self.stats.audio_samples_dropped += chunk.talk_audio.len() as u64;
    }

    fn next_audio_out(&mut self) -> AudioOut {
        let n = AUDIO_PACKET_SAMPLES.min(self.audio_fifo.len());
        let mut samples: Vec<f32> = self.audio_fifo.drain(..n).collect();
        let has_talk = self.fifo_talk.drain(..n).any(|t| t);
        samples.resize(AUDIO_PACKET_SAMPLES, 0.0);
        let packet = self.next_audio_packet;
        self.next_audio_packet += 1;
        self.stats.audio_packets_sent += 1;
        AudioOut {
            packet,
            time: self.clock.audio_packet_time(packet),
            rtp_timestamp: self.clock.audio_rtp_timestamp(packet),
            samples,
            has_talk,
        }
    }
}

/// The talk audio of one chunk, taken from the [`TalkDelayLine`].
#[derive(Debug, Clone, PartialEq)]
pub struct TalkChunkAudio {
    /// 48 kHz mono samples (exactly the chunk's share; silence where missing).
    pub samples: Vec<f32>,
    /// When the chunk's first sample was pushed, if known.
    pub input_time: Option<Instant>,
}

/// 48 kHz talk audio waiting for the chunk that shows it.
///
/// Contract: push to this line in lockstep with the generator's talk branch
/// (the same audio, resampled to 48 kHz; silence when the generator gets
/// silence). Chunk `k` then owns samples
/// `[k * samples_per_chunk, (k + 1) * samples_per_chunk)`.
#[derive(Debug)]
pub struct TalkDelayLine {
    samples: VecDeque<f32>,
    /// Absolute 48 kHz index of `samples[0]`.
    base: u64,
    samples_per_chunk: usize,
    capacity: usize,
    /// (absolute index of a push's first sample, push time).
    marks: VecDeque<(u64, Instant)>,
}

impl TalkDelayLine {
    /// `samples_per_chunk` as in [`PacerConfig::audio_samples_per_chunk`].
    pub fn new(samples_per_chunk: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            base: 0,
            samples_per_chunk,
            capacity: DELAY_LINE_MAX_SECONDS * AUDIO_RATE as usize,
            marks: VecDeque::new(),
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Absolute index one past the last pushed sample.
    pub fn end(&self) -> u64 {
        self.base + self.samples.len() as u64
    }

    /// Append talk audio pushed at `now`. Fails (pushing nothing) when the
    /// line would exceed its capacity.
    pub fn push(&mut self, samples: &[f32], now: Instant) -> Result<(), ClockError> {
        if self.samples.len() + samples.len() > self.capacity {
            return Err(ClockError::DelayLineFull { capacity: self.capacity });
        }
        if samples.is_empty() {
            return Ok(());
        }
        self.marks.push_back((self.end(), now));
        if self.marks.len() > DELAY_LINE_MAX_MARKS {
            self.marks.pop_front();
        }
        self.samples.extend(samples.iter().copied());
        Ok(())
    }

    /// Append `n` samples of silence pushed at `now`.
    pub fn push_silence(&mut self, n: usize, now: Instant) -> Result<(), ClockError> {
        if self.samples.len() + n > self.capacity {
            return Err(ClockError::DelayLineFull { capacity: self.capacity });
        }
        if n > 0 {
            self.marks.push_back((self.end(), now));
            self.samples.extend(std::iter::repeat_n(0.0, n));
        }
        Ok(())
    }

    /// Take chunk `k`'s audio. Samples before it are discarded; samples not
    /// pushed (yet) or already taken come out as silence.
    pub fn take_chunk(&mut self, k: u64) -> TalkChunkAudio {
        let start = k * self.samples_per_chunk as u64;
        let end = start + self.samples_per_chunk as u64;
        let input_time = self.marks.iter().take_while(|(i, _)| *i <= start).last().map(|(_, t)| *t);
        // Discard everything before `start`.
        let discard = start.saturating_sub(self.base).min(self.samples.len() as u64) as usize;
        self.samples.drain(..discard);
        self.base += discard as u64;
        let mut out = Vec::with_capacity(self.samples_per_chunk);
        // Silence for the part before `base` (already consumed).
        let missing_head = self.base.saturating_sub(start).min(self.samples_per_chunk as u64) as usize;
        out.extend(std::iter::repeat_n(0.0, missing_head));
        let avail_from = self.base.max(start);
        let take = end.saturating_sub(avail_from).min(self.samples.len() as u64) as usize;
        out.extend(self.samples.drain(..take));
        self.base += take as u64;
        // A chunk's range is consumed even where it was not pushed yet:
        // later pushes continue after it (keeps chunk k <-> its range).
        self.base = self.base.max(end);
        out.resize(self.samples_per_chunk, 0.0);
        // Forget marks that no longer start inside the held samples (keep the one covering base).
        while self.marks.len() >= 2 && self.marks[1].0 <= self.base {
            self.marks.pop_front();
        }
        TalkChunkAudio { samples: out, input_time }
    }

    /// Barge-in: silence everything held (timing unchanged). Returns the count.
    pub fn silence_pending(&mut self) -> usize {
        self.samples.iter_mut().for_each(|s| *s = 0.0);
        self.samples.len()
    }

    /// Start over at chunk 0 (generator reset).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.marks.clear();
        self.base = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: usize = 12;
    const FPS: u32 = 24;

    /// A fake time source: the test moves it, nothing sleeps.
    struct FakeTime {
        start: Instant,
        now: Instant,
    }

    impl FakeTime {
        fn new() -> Self {
            let start = Instant::now();
            Self { start, now: start }
        }
        fn at_ms(&mut self, ms: u64) -> Instant {
            self.now = self.start + Duration::from_millis(ms);
            self.now
        }
        fn at_slot(&mut self, clock: &MediaClock, slot: u64) -> Instant {
            self.now = clock.frame_time(slot);
            self.now
        }
    }

    fn frame(tag: u8) -> RgbFrame {
        RgbFrame::solid(2, 2, [tag, 0, 0])
    }

    fn chunk(index: u64, audio_value: f32) -> PacedChunk {
        PacedChunk {
            index,
            frames: (0..F).map(|j| frame((index as usize * F + j) as u8)).collect(),
            talk_audio: vec![audio_value; 24_000],
            audio_input_time: None,
        }
    }

    fn pacer(t: &FakeTime) -> AvPacer {
        AvPacer::new(PacerConfig::new(FPS, F).unwrap(), t.start).unwrap()
    }

    /// Poll every slot from `from` to `to` (inclusive); returns the video sources.
    fn run_slots(p: &mut AvPacer, t: &mut FakeTime, from: u64, to: u64) -> Vec<FrameSource> {
        let clock = *p.clock();
        (from..=to)
            .map(|s| {
                let now = t.at_slot(&clock, s);
                p.poll(now).video.expect("a frame per slot").source
            })
            .collect()
    }

    #[test]
    fn clock_maps_time_to_slots_and_back() {
        let mut t = FakeTime::new();
        let c = MediaClock::new(t.start, 24).unwrap();
        assert_eq!(c.frame_index_at(t.at_ms(0)), 0);
        assert_eq!(c.frame_index_at(t.at_ms(41)), 0);
        assert_eq!(c.frame_index_at(t.at_ms(42)), 1);
        assert_eq!(c.frame_index_at(t.at_ms(1000)), 24);
        assert_eq!(c.audio_packet_index_at(t.at_ms(19)), 0);
        assert_eq!(c.audio_packet_index_at(t.at_ms(20)), 1);
        assert_eq!(c.audio_packet_index_at(t.at_ms(1000)), 50);
        for i in [0u64, 1, 23, 24, 1_000_000] {
            assert_eq!(c.frame_index_at(c.frame_time(i)), i);
            assert_eq!(c.audio_packet_index_at(c.audio_packet_time(i)), i);
        }
        assert_eq!(c.frame_index_at(t.start - Duration::from_millis(5)), 0);
        assert_eq!(c.video_rtp_timestamp(24), 90_000);
        assert_eq!(c.audio_rtp_timestamp(50), 48_000);
        assert_eq!(c.audio_sample_at_frame(12), 24_000);
        assert_eq!(MediaClock::new(t.start, 0), Err(ClockError::BadFps(0)));
        let cfg = PacerConfig::new(24, 12).unwrap();
        assert_eq!(cfg.audio_samples_per_chunk, 24_000);
        assert_eq!(cfg.chunk_duration(), Duration::from_millis(500));
        assert_eq!(PacerConfig::new(24, 0), Err(ClockError::NoFramesPerChunk));
    }

    #[test]
    fn on_time_chunks_play_back_to_back_with_aligned_audio() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        // Nothing to show before the first chunk; audio still flows (silence).
        let first = p.poll(t.at_ms(0));
        assert!(first.video.is_none());
        assert_eq!(first.audio.len(), 1);
        assert!(!first.audio[0].has_talk);
        p.push_chunk(chunk(0, 0.25)).unwrap();
        p.push_chunk(chunk(1, 0.5)).unwrap();
        let mut audio = first.audio;
        let mut video = Vec::new();
        // A real loop polls often; here every 5 ms for just under a second.
        for ms in (0..1000).step_by(5) {
            let out = p.poll(t.at_ms(ms));
            audio.extend(out.audio);
            video.extend(out.video);
        }
        let want: Vec<FrameSource> =
            (0..2u64).flat_map(|c| (0..F).map(move |j| FrameSource::Fresh { chunk: c, frame: j })).collect();
        let got: Vec<FrameSource> = video.iter().map(|v| v.source).collect();
        assert_eq!(got, want);
        assert_eq!(video.iter().map(|v| v.slot).collect::<Vec<_>>(), (0..24).collect::<Vec<_>>());
        let st = p.stats();
        assert_eq!((st.frames_repeated, st.chunks_skipped, st.frames_dropped_late), (0, 0, 0));
        assert_eq!(st.chunks_played, 2);
        assert_eq!(audio.len(), 50);
        // Chunk 0 started at slot 0 (t = 0) after packet 0 had left as
        // silence: its audio starts one packet later, which is reported.
        assert!(st.av_offset_ms <= 20.0, "{}", st.av_offset_ms);
        let all: Vec<f32> = audio.iter().flat_map(|a| a.samples.iter().copied()).collect();
        let audio_start = all.iter().position(|&s| s != 0.0).unwrap();
        assert!(audio_start <= 960, "audio starts {audio_start} samples after the video");
        // Exactly one chunk of 0.25, immediately followed by chunk 1's 0.5.
        assert_eq!(all.iter().filter(|&&s| s == 0.25).count(), 24_000);
        let first_half = all.iter().position(|&s| s == 0.5).unwrap();
        assert_eq!(first_half, audio_start + 24_000, "chunk audio is contiguous");
    }

    #[test]
    fn steady_state_offset_is_zero_when_chunks_start_on_packet_boundaries() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        p.push_chunk(chunk(0, 0.1)).unwrap();
        // Chunk 0 starts at slot 0 (t = 0), aligned with packet 0.
        let out = p.poll(t.at_ms(0));
        assert_eq!(out.video.unwrap().source, FrameSource::Fresh { chunk: 0, frame: 0 });
        assert!(out.audio[0].has_talk);
        assert_eq!(out.audio[0].samples[0], 0.1);
        assert_eq!(p.stats().av_offset_ms, 0.0);
        p.push_chunk(chunk(1, 0.2)).unwrap();
        let mut audio = Vec::new();
        for ms in (20..=520).step_by(20) {
            audio.extend(p.poll(t.at_ms(ms)).audio);
        }
        // Slot 12 = 500 ms = packet 25: chunk 1 audio starts exactly there.
        assert_eq!(p.stats().chunks_played, 2);
        assert_eq!(p.stats().av_offset_ms, 0.0);
        let p25 = audio.iter().find(|a| a.packet == 25).unwrap();
        assert!(p25.samples.iter().all(|&s| s == 0.2));
        let p24 = audio.iter().find(|a| a.packet == 24).unwrap();
        assert!(p24.samples.iter().all(|&s| s == 0.1));
    }

    #[test]
    fn late_chunk_repeats_last_frame_then_plays() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        p.push_chunk(chunk(0, 0.1)).unwrap();
        let s = run_slots(&mut p, &mut t, 0, 11);
        assert_eq!(s[11], FrameSource::Fresh { chunk: 0, frame: 11 });
        // Chunk 1 is 3 slots late.
        let s = run_slots(&mut p, &mut t, 12, 14);
        assert_eq!(s, vec![FrameSource::Repeat; 3]);
        assert_eq!(p.stats().frames_repeated, 3);
        p.push_chunk(chunk(1, 0.2)).unwrap();
        let s = run_slots(&mut p, &mut t, 15, 26);
        assert_eq!(s[0], FrameSource::Fresh { chunk: 1, frame: 0 });
        assert_eq!(s[11], FrameSource::Fresh { chunk: 1, frame: 11 });
        assert_eq!(p.stats().last_chunk_lateness_frames, 3);
        assert_eq!(p.stats().chunks_skipped, 0);
        // The repeated frame is the last fresh one.
        let mut t2 = FakeTime::new();
        let mut q = pacer(&t2);
        q.push_chunk(chunk(0, 0.1)).unwrap();
        run_slots(&mut q, &mut t2, 0, 11);
        let clock = *q.clock();
        let v = q.poll(t2.at_slot(&clock, 12)).video.unwrap();
        assert_eq!(v.frame.data[0], 11);
        // A/V: chunk 1's audio starts at (or within a packet after) slot 15.
        assert!(p.stats().av_offset_ms < 20.0);
    }

    #[test]
    fn chunk_later_than_a_period_is_skipped_when_a_newer_one_is_queued() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        p.push_chunk(chunk(0, 0.1)).unwrap();
        run_slots(&mut p, &mut t, 0, 11);
        // Generator stalls for 1.5 periods: 18 repeated frames.
        let s = run_slots(&mut p, &mut t, 12, 29);
        assert!(s.iter().all(|x| *x == FrameSource::Repeat));
        // Then bursts chunks 1 and 2.
        p.push_chunk(chunk(1, 0.2)).unwrap();
        p.push_chunk(chunk(2, 0.3)).unwrap();
        let s = run_slots(&mut p, &mut t, 30, 30);
        // Chunk 1 is 18 slots (>= 12) late and chunk 2 is queued: skip 1, play 2.
        assert_eq!(s[0], FrameSource::Fresh { chunk: 2, frame: 0 });
        assert_eq!(p.stats().chunks_skipped, 1);
        assert_eq!(p.stats().audio_samples_dropped, 24_000);
        assert_eq!(p.stats().last_chunk_lateness_frames, 6);
        assert_eq!(p.stats().frames_repeated, 18);
    }

    #[test]
    fn only_chunk_is_never_dropped_even_when_very_late() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        p.push_chunk(chunk(0, 0.1)).unwrap();
        run_slots(&mut p, &mut t, 0, 11);
        run_slots(&mut p, &mut t, 12, 60); // 49 repeats, 4 periods
        p.push_chunk(chunk(1, 0.2)).unwrap();
        let s = run_slots(&mut p, &mut t, 61, 61);
        assert_eq!(s[0], FrameSource::Fresh { chunk: 1, frame: 0 });
        assert_eq!(p.stats().chunks_skipped, 0);
        assert_eq!(p.stats().last_chunk_lateness_frames, 49);
    }

    #[test]
    fn slow_generator_keeps_video_moving_without_growing_queues() {
        // Generator at 0.8x real time: a chunk every 15 slots.
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        let clock = *p.clock();
        let mut next_chunk = 0u64;
        let mut fresh = 0;
        for slot in 0..600u64 {
            if slot % 15 == 0 {
                p.push_chunk(chunk(next_chunk, 0.1)).unwrap();
                next_chunk += 1;
            }
            let v = p.poll(t.at_slot(&clock, slot)).video.unwrap();
            if matches!(v.source, FrameSource::Fresh { .. }) {
                fresh += 1;
            }
            assert!(p.queued_chunks() <= 1);
        }
        let st = p.stats();
        assert_eq!(st.frames_sent, 600);
        assert_eq!(fresh + st.frames_repeated as usize, 600);
        assert_eq!(st.chunks_skipped, 0, "nothing newer was ever queued");
        assert!(st.frames_repeated >= 110 && st.frames_repeated <= 125, "{st:?}");
    }

    #[test]
    fn full_queue_drops_oldest_and_stale_indices_are_ignored() {
        let t = FakeTime::new();
        let mut p = pacer(&t);
        for k in 0..CHUNK_QUEUE_CAPACITY as u64 {
            assert_eq!(p.push_chunk(chunk(k, 0.1)).unwrap(), PushOutcome::Queued);
        }
        assert!(!p.has_room());
        assert_eq!(p.push_chunk(chunk(3, 0.1)).unwrap(), PushOutcome::QueuedDroppedOldest { dropped_index: 0 });
        assert_eq!(p.queued_chunks(), CHUNK_QUEUE_CAPACITY);
        assert_eq!(p.stats().chunks_skipped, 1);
        assert_eq!(p.push_chunk(chunk(2, 0.1)).unwrap(), PushOutcome::Stale { last_index: 3 });
        let mut short = chunk(4, 0.1);
        short.frames.pop();
        assert!(matches!(p.push_chunk(short), Err(ClockError::BadChunkLength { got: 11, .. })));
    }

    #[test]
    fn late_caller_gets_one_frame_and_bounded_audio() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        p.push_chunk(chunk(0, 0.1)).unwrap();
        p.push_chunk(chunk(1, 0.2)).unwrap();
        p.poll(t.at_ms(0));
        // The caller sleeps for 300 ms (7 slots, 15 packets).
        let out = p.poll(t.at_ms(300));
        let v = out.video.unwrap();
        assert_eq!(v.slot, 7);
        assert_eq!(v.source, FrameSource::Fresh { chunk: 0, frame: 7 });
        assert_eq!(p.stats().frames_dropped_late, 6);
        assert_eq!(out.audio.len() as u64, MAX_AUDIO_BURST_PACKETS);
        assert_eq!(out.audio.last().unwrap().packet, 15);
        assert_eq!(p.stats().audio_packets_dropped_late, 15 - MAX_AUDIO_BURST_PACKETS);
        // Alignment is kept: chunk 1 starts at slot 12 with its audio at packet 25.
        let mut audio = Vec::new();
        for ms in (320..=520).step_by(20) {
            audio.extend(p.poll(t.at_ms(ms)).audio);
        }
        let p25 = audio.iter().find(|a| a.packet == 25).unwrap();
        assert_eq!(p25.samples[0], 0.2);
    }

    #[test]
    fn deadline_points_at_the_next_slot_or_packet() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        let clock = *p.clock();
        let now = t.at_ms(0);
        assert_eq!(p.next_deadline(now), now, "packet 0 is due");
        p.poll(now);
        assert_eq!(p.next_deadline(now), clock.audio_packet_time(1));
        p.push_chunk(chunk(0, 0.1)).unwrap();
        let now = t.at_ms(5);
        assert_eq!(p.next_deadline(now), now, "a queued first chunk starts at once");
        p.poll(now);
        // Slot 0 was sent at 5 ms; next: packet 1 at 20 ms, slot 1 at 41.7 ms.
        assert_eq!(p.next_deadline(now), clock.audio_packet_time(1));
        let now = t.at_ms(21);
        p.poll(now);
        assert_eq!(p.next_deadline(now), clock.audio_packet_time(2));
        let now = t.at_ms(40);
        p.poll(now);
        assert_eq!(p.next_deadline(now), clock.frame_time(1));
    }

    #[test]
    fn reset_repeats_last_frame_until_the_new_stream_starts() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        p.push_chunk(chunk(0, 0.1)).unwrap();
        p.push_chunk(chunk(1, 0.1)).unwrap();
        run_slots(&mut p, &mut t, 0, 5);
        p.reset();
        assert_eq!(p.stats().chunks_skipped, 1);
        let s = run_slots(&mut p, &mut t, 6, 8);
        assert_eq!(s, vec![FrameSource::Repeat; 3]);
        // Index 0 is accepted again after a reset.
        assert_eq!(p.push_chunk(chunk(0, 0.3)).unwrap(), PushOutcome::Queued);
        let s = run_slots(&mut p, &mut t, 9, 9);
        assert_eq!(s[0], FrameSource::Fresh { chunk: 0, frame: 0 });
        assert_eq!(p.stats().last_chunk_lateness_frames, 0);
    }

    #[test]
    fn barge_in_silences_pending_talk_audio() {
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        p.push_chunk(chunk(0, 0.5)).unwrap();
        p.push_chunk(chunk(1, 0.5)).unwrap();
        let out = p.poll(t.at_ms(0));
        assert_eq!(out.audio[0].samples[0], 0.5);
        let silenced = p.silence_talk();
        assert_eq!(silenced, 24_000 - 960 + 24_000);
        let out = p.poll(t.at_ms(20));
        assert!(out.audio[0].samples.iter().all(|&s| s == 0.0));
        assert!(!out.audio[0].has_talk);
    }

    /// Random generator timing and random poll jitter: the bounds and the
    /// accounting identities hold at every step.
    #[test]
    fn invariants_hold_under_random_timing() {
        let mut seed = 0x9e37_79b9u64;
        let mut rnd = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut t = FakeTime::new();
        let mut p = pacer(&t);
        let clock = *p.clock();
        let mut next_index = 0u64;
        let mut pushed = 0u64;
        let mut next_push_ms = 0u64;
        let mut last_slot: Option<u64> = None;
        let mut last_packet: Option<u64> = None;
        let mut last_fresh: Option<(u64, usize)> = None;
        let mut first_slot = None;
        let mut ms = 0u64;
        while ms < 20_000 {
            if ms >= next_push_ms {
                // Occasionally skip an index (generator reset-free gap) to exercise anchoring.
                next_index += 1 + u64::from(rnd(20) == 0);
                p.push_chunk(chunk(next_index - 1, 0.1)).unwrap();
                pushed += 1;
                // 0.15 .. 0.85 s between chunks (real time is 0.5 s): stalls and bursts.
                next_push_ms = ms + 150 + rnd(700);
            }
            let out = p.poll(t.at_ms(ms));
            if let Some(v) = &out.video {
                assert!(last_slot.is_none_or(|l| v.slot > l));
                assert_eq!(v.slot, clock.frame_index_at(t.now));
                first_slot.get_or_insert(v.slot);
                last_slot = Some(v.slot);
                if let FrameSource::Fresh { chunk, frame } = v.source {
                    if let Some((c, f)) = last_fresh {
                        assert!(chunk > c || (chunk == c && frame > f), "fresh frames go forward");
                    }
                    last_fresh = Some((chunk, frame));
                }
            }
            for a in &out.audio {
                assert_eq!(a.samples.len(), AUDIO_PACKET_SAMPLES);
                assert!(last_packet.is_none_or(|l| a.packet > l));
                last_packet = Some(a.packet);
            }
            assert!(out.audio.len() as u64 <= MAX_AUDIO_BURST_PACKETS);
            assert!(p.queued_chunks() <= CHUNK_QUEUE_CAPACITY);
            assert!(p.audio_fifo.len() <= p.audio_fifo_capacity());
            assert_eq!(p.audio_fifo.len(), p.fifo_talk.len());
            // Poll jitter: 1 .. 120 ms (sometimes very late).
            let max_gap = if rnd(10) == 0 { 120 } else { 25 };
            ms += 1 + rnd(max_gap);
        }
        let st = p.stats().clone();
        let slots = last_slot.unwrap() - first_slot.unwrap() + 1;
        assert_eq!(st.frames_sent + st.frames_dropped_late, slots);
        assert_eq!(st.audio_packets_sent + st.audio_packets_dropped_late, last_packet.unwrap() + 1);
        assert_eq!(st.chunks_played + st.chunks_skipped + p.queued_chunks() as u64, pushed);
        // This seed exercises every policy branch.
        assert!(st.frames_repeated > 0 && st.chunks_skipped > 0 && st.chunks_played > 20, "{st:?}");
        assert!(st.frames_dropped_late > 0 && st.audio_packets_dropped_late > 0, "{st:?}");
        assert!(st.av_offset_ms <= 20.0 + 1e-9, "{st:?}");
    }

    #[test]
    fn delay_line_hands_each_chunk_its_audio() {
        let t = FakeTime::new();
        let spc = 4;
        let mut line = TalkDelayLine::new(spc);
        let t0 = t.start;
        let t1 = t.start + Duration::from_millis(10);
        line.push(&[1.0, 2.0, 3.0], t0).unwrap();
        line.push(&[4.0, 5.0, 6.0, 7.0, 8.0, 9.0], t1).unwrap();
        assert_eq!(line.len(), 9);
        let c0 = line.take_chunk(0);
        assert_eq!(c0.samples, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(c0.input_time, Some(t0));
        let c1 = line.take_chunk(1);
        assert_eq!(c1.samples, vec![5.0, 6.0, 7.0, 8.0]);
        assert_eq!(c1.input_time, Some(t1));
        // Chunk 2 is only partly pushed: padded with silence.
        let c2 = line.take_chunk(2);
        assert_eq!(c2.samples, vec![9.0, 0.0, 0.0, 0.0]);
        // Chunk 2's range [8, 12) is consumed: later pushes start at 12.
        assert_eq!(line.end(), 12);
        line.push_silence(4, t1).unwrap();
        line.push(&[10.0, 11.0, 12.0, 13.0, 14.0], t1).unwrap();
        assert_eq!(line.take_chunk(3).samples, vec![0.0; 4]);
        // Skipping chunk 4 discards its samples; chunk 5 gets what exists.
        let c5 = line.take_chunk(5);
        assert_eq!(c5.samples, vec![14.0, 0.0, 0.0, 0.0]);
        assert_eq!(c5.input_time, Some(t1));
        assert_eq!(line.take_chunk(5).samples, vec![0.0; 4], "a chunk is taken once");
        let full = TalkDelayLine::new(spc).push(&vec![0.0; DELAY_LINE_MAX_SECONDS * 48_000 + 1], t0);
        assert!(matches!(full, Err(ClockError::DelayLineFull { .. })));
        line.reset();
        assert!(line.is_empty());
        assert_eq!(line.end(), 0);
    }
}
