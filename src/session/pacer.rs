//! The session's media clock (sans-IO): one 20 ms tick drives everything.
//!
//! Each tick the pacer
//! 1. feeds 20 ms of talk + listen audio (16 kHz) to the generator, in real
//!    time — unless the generator is `max_pending_chunks` behind, in which
//!    case a whole chunk of input is skipped (`chunks_skipped`) so its
//!    backlog stays bounded;
//! 2. stores the same tick of talk audio (48 kHz) in a delay line;
//! 3. once the first chunk has arrived, plays media tick `n - D` (the
//!    playout delay `D` = arrival tick of chunk 0 + a small margin): the
//!    delayed talk audio goes to the Opus track and every video frame whose
//!    media time falls in that tick goes to the H.264 track. So the talk
//!    audio of chunk k leaves together with chunk k's frames.
//!
//! Lead-in: on the very first tick the generator also gets `L` =
//! `lead_in_samples` of silence (talk and listen), before the first real
//! audio. By default `L` = one chunk + the audio encoder's lookahead,
//! rounded up to whole ticks, less the one tick of real audio fed with it,
//! so chunk 0 (the avatar idling at the start of the call) can be generated
//! at once instead of after chunk + lookahead of real audio:
//! the first frame leaves after about one chunk's generation time plus the
//! margin. Media time is generator time (plus the skip offsets), so real
//! tick `r` is media tick `r + L/320`: the delay line starts with `L/320`
//! silent ticks, and talk audio that arrived at real tick `r` leaves at real
//! tick `r + L/320 + D`, with the frames generated from it. The talk -> ear
//! latency (`latency_ms`) is `L/320 + D` ticks, about chunk + lookahead +
//! generation + margin as without a lead-in, where `D` itself is that long.
//! The generator's slack per chunk is unchanged (everything shifts by `L`).
//! `lead_in_samples = 0` is the plain real-time start.
//!
//! Fall-behind policy: a frame that has not arrived when due is replaced by
//! the last frame (`frames_repeated`); frames arriving after their slot are
//! dropped (`frames_late`), a chunk that is entirely late counts as skipped.
//! Audio never stalls. Talk events (started / done / cleared) are emitted at
//! playout, i.e. when the audio actually reaches the track.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::generator::VideoChunk;
use crate::media::frame::RgbFrame;
use crate::session::TalkEvent;

use super::talk_queue::{Marker, TalkTick, TICK_16K, TICK_48K};

/// Ticks per second (20 ms ticks).
pub const TICKS_PER_SECOND: u64 = 50;

/// Pacing parameters (from the avatar source plus policy knobs).
#[derive(Debug, Clone)]
pub struct PacerConfig {
    pub fps: u32,
    pub frames_per_chunk: usize,
    /// 16 kHz samples per chunk.
    pub samples_per_chunk: usize,
    pub lookahead_samples: usize,
    /// Chunks the generator may owe before input chunks are skipped.
    pub max_pending_chunks: u64,
    /// Extra playout delay beyond the first chunk's arrival, in ticks.
    pub playout_margin_ticks: u64,
    /// Give up when no chunk arrived after this many ticks.
    pub startup_timeout_ticks: u64,
    /// Silence fed to the generator on the first tick (16 kHz samples, a
    /// whole number of 20 ms ticks) so chunk 0 needs no real audio; 0 = none.
    pub lead_in_samples: usize,
}

impl PacerConfig {
    pub fn new(fps: u32, frames_per_chunk: usize, samples_per_chunk: usize, lookahead_samples: usize) -> Self {
        Self {
            fps,
            frames_per_chunk,
            samples_per_chunk,
            lookahead_samples,
            max_pending_chunks: 2,
            playout_margin_ticks: 3,
            startup_timeout_ticks: 60 * TICKS_PER_SECOND,
            lead_in_samples: Self::default_lead_in(samples_per_chunk, lookahead_samples),
        }
    }

    /// The default lead-in: what chunk 0 needs (one chunk + lookahead)
    /// rounded up to whole ticks, less the one tick of real audio fed with
    /// it on the first tick (which completes chunk 0's input). A full tick
    /// more would only add 20 ms to the talk -> ear delay.
    pub fn default_lead_in(samples_per_chunk: usize, lookahead_samples: usize) -> usize {
        ((samples_per_chunk + lookahead_samples).div_ceil(TICK_16K).saturating_sub(1)) * TICK_16K
    }

    /// The lead-in in ticks (media tick = real tick + this).
    pub fn lead_in_ticks(&self) -> u64 {
        (self.lead_in_samples / TICK_16K) as u64
    }
}

/// Pacer failures (the session ends on them).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacerError {
    #[error("invalid pacing parameters: {0}")]
    Config(String),
    #[error("no video chunk after {0} s")]
    Stalled(u64),
}

/// One frame to send now (after `due_in` within the tick).
#[derive(Debug, Clone)]
pub struct PlayFrame {
    pub index: u64,
    pub frame: Arc<RgbFrame>,
    pub repeated: bool,
    /// Offset of the frame's media time from the start of the tick.
    pub due_in: Duration,
    /// RTP-exact duration of this frame.
    pub duration: Duration,
}

/// What one tick produces.
#[derive(Debug, Default)]
pub struct TickOutput {
    /// 16 kHz talk / listen samples for the generator (empty while skipping).
    pub feed_talk: Vec<f32>,
    pub feed_listen: Vec<f32>,
    /// 960 samples at 48 kHz for the Opus track, once playout runs.
    pub audio: Option<Vec<f32>>,
    pub frames: Vec<PlayFrame>,
    pub events: Vec<TalkEvent>,
}

/// Counters for `SessionStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacerCounters {
    pub frames_sent: u64,
    pub frames_repeated: u64,
    pub frames_late: u64,
    pub chunks_skipped: u64,
    pub chunks_received: u64,
    /// Talk -> ear delay in ms: talk audio (and listen audio) entering the
    /// pacer leaves, with the frames generated from it, this much later
    /// (lead-in + playout delay); 0 before playout.
    pub latency_ms: u64,
}

/// The media clock and A/V scheduler.
pub struct Pacer {
    cfg: PacerConfig,
    tick: u64,
    /// Media ticks pushed into the delay line (real ticks + lead-in).
    delay_line_end: u64,
    gen_fed: u64,
    skip_left: usize,
    /// (generator sample where it starts, media offset) ascending.
    offsets: Vec<(u64, u64)>,
    delay_line: VecDeque<TalkTick>,
    frames: BTreeMap<u64, Arc<RgbFrame>>,
    /// Real tick minus the media tick it plays, once known.
    playout_delay: Option<u64>,
    next_frame: u64,
    last_frame: Option<Arc<RgbFrame>>,
    /// (utterance id, 48 kHz samples played)
    active: Option<(u64, u64)>,
    counters: PacerCounters,
}

impl Pacer {
    pub fn new(cfg: PacerConfig) -> Result<Self, PacerError> {
        if cfg.fps == 0 || cfg.frames_per_chunk == 0 || cfg.samples_per_chunk == 0 {
            return Err(PacerError::Config(format!("{cfg:?}")));
        }
        let expected = cfg.frames_per_chunk as u64 * 16_000 / cfg.fps as u64;
        if expected != cfg.samples_per_chunk as u64 {
            return Err(PacerError::Config(format!(
                "samples_per_chunk {} != frames_per_chunk {} * 16000 / fps {}",
                cfg.samples_per_chunk, cfg.frames_per_chunk, cfg.fps
            )));
        }
        if cfg.lead_in_samples % TICK_16K != 0 {
            return Err(PacerError::Config(format!(
                "lead_in_samples {} is not a whole number of {TICK_16K}-sample ticks",
                cfg.lead_in_samples
            )));
        }
        // The lead-in's media ticks: silence on the talk track.
        let lead_in_ticks = cfg.lead_in_ticks();
        let delay_line = (0..lead_in_ticks).map(|_| silent_tick()).collect();
        Ok(Self {
            cfg,
            tick: 0,
            delay_line_end: lead_in_ticks,
            gen_fed: 0,
            skip_left: 0,
            offsets: vec![(0, 0)],
            delay_line,
            frames: BTreeMap::new(),
            playout_delay: None,
            next_frame: 0,
            last_frame: None,
            active: None,
            counters: PacerCounters::default(),
        })
    }

    pub fn counters(&self) -> PacerCounters {
        self.counters
    }

    /// Ticks processed so far.
    pub fn ticks(&self) -> u64 {
        self.tick
    }

    /// Playout delay in ticks (real tick minus the media tick it plays),
    /// once known. Talk audio's delay is this plus the lead-in.
    pub fn playout_delay(&self) -> Option<u64> {
        self.playout_delay
    }

    /// Chunks the generator could have delivered but has not yet.
    fn pending_chunks(&self) -> u64 {
        let producible =
            self.gen_fed.saturating_sub(self.cfg.lookahead_samples as u64) / self.cfg.samples_per_chunk as u64;
        producible.saturating_sub(self.counters.chunks_received)
    }

    fn offset_for(&self, gen_sample: u64) -> u64 {
        self.offsets.iter().rev().find(|(start, _)| *start <= gen_sample).map(|(_, o)| *o).unwrap_or(0)
    }

    /// Advance the clock by one 20 ms tick. `talk16`/`listen16` are this
    /// tick's 16 kHz samples (320 each); `talk` is the same talk tick at 48 kHz.
    pub fn tick(&mut self, talk: TalkTick, talk16: &[f32], listen16: &[f32]) -> Result<TickOutput, PacerError> {
        let mut out = TickOutput::default();
        if self.tick == 0 && self.cfg.lead_in_samples > 0 {
            let silence = vec![0.0; self.cfg.lead_in_samples];
            self.feed(&silence, &silence, &mut out);
        }
        let n = talk16.len().min(listen16.len()).min(TICK_16K);
        self.feed(&talk16[..n], &listen16[..n], &mut out);
        let mut talk = talk;
        talk.pcm16 = Vec::new(); // only the 48 kHz copy is played out
        self.delay_line.push_back(talk);
        self.delay_line_end += 1;
        let now = self.tick;
        self.tick += 1;

        let Some(delay) = self.playout_delay else {
            if self.tick > self.cfg.startup_timeout_ticks {
                return Err(PacerError::Stalled(self.cfg.startup_timeout_ticks / TICKS_PER_SECOND));
            }
            return Ok(out);
        };
        if now < delay {
            return Ok(out);
        }
        let media_tick = now - delay;
        // The delay line starts at media tick `delay_line_end - len`.
        while (self.delay_line_end - self.delay_line.len() as u64) < media_tick {
            self.delay_line.pop_front();
        }
        let talk = self.delay_line.pop_front().unwrap_or_else(TalkTick::silence);
        self.account_talk(&talk, &mut out.events);
        out.audio = Some(talk.pcm48);
        self.play_frames(media_tick, &mut out.frames);
        Ok(out)
    }

    /// Feed `talk16`/`listen16` (same length) to the generator, minus skips.
    fn feed(&mut self, talk16: &[f32], listen16: &[f32], out: &mut TickOutput) {
        let s = self.cfg.samples_per_chunk;
        let n = talk16.len().min(listen16.len());
        let mut i = 0;
        while i < n {
            if self.skip_left > 0 {
                let k = self.skip_left.min(n - i);
                self.skip_left -= k;
                i += k;
                continue;
            }
            let phase = (self.gen_fed % s as u64) as usize;
            if phase == 0 && self.pending_chunks() >= self.cfg.max_pending_chunks {
                // Generator too far behind: leave out one whole chunk of input.
                let offset = self.offset_for(self.gen_fed) + s as u64;
                self.offsets.push((self.gen_fed, offset));
                self.skip_left = s;
                self.counters.chunks_skipped += 1;
                continue;
            }
            let k = (s - phase).min(n - i);
            out.feed_talk.extend_from_slice(&talk16[i..i + k]);
            out.feed_listen.extend_from_slice(&listen16[i..i + k]);
            self.gen_fed += k as u64;
            i += k;
        }
    }

    /// A chunk arrived from the generator.
    pub fn on_chunk(&mut self, chunk: VideoChunk) {
        self.counters.chunks_received += 1;
        let g = chunk.audio_sample_start;
        let media_start = g + self.offset_for(g);
        let fps = self.cfg.fps as u64;
        let first = (media_start * fps + 8_000) / 16_000;
        if self.playout_delay.is_none() {
            let media_tick = media_start / TICK_16K as u64;
            let delay = (self.tick + self.cfg.playout_margin_ticks).saturating_sub(media_tick);
            self.playout_delay = Some(delay);
            self.counters.latency_ms = (delay + self.cfg.lead_in_ticks()) * 1000 / TICKS_PER_SECOND;
            self.next_frame = first;
        }
        let mut late = 0;
        let total = chunk.frames.len();
        for (i, frame) in chunk.frames.into_iter().enumerate() {
            let idx = first + i as u64;
            if idx < self.next_frame {
                late += 1;
            } else {
                self.frames.insert(idx, Arc::new(frame));
            }
        }
        self.counters.frames_late += late;
        if total > 0 && late == total as u64 {
            self.counters.chunks_skipped += 1;
        }
    }

    /// Barge-in: silence every talk tick not yet played. Returns the event.
    pub fn clear_talk(&mut self) -> TalkEvent {
        for t in self.delay_line.iter_mut() {
            t.pcm48.iter_mut().for_each(|s| *s = 0.0);
            t.talk_samples = 0;
            t.markers.clear();
        }
        let played = self.active.take().map(|(_, p)| p).unwrap_or(0);
        TalkEvent::SpeechCleared { played_ms: played / 48 }
    }

    fn account_talk(&mut self, talk: &TalkTick, events: &mut Vec<TalkEvent>) {
        let mut added = false;
        for m in &talk.markers {
            match *m {
                Marker::Start(id) => {
                    self.active = Some((id, 0));
                    added = false;
                    events.push(TalkEvent::SpeechStarted);
                }
                Marker::End(id) => {
                    if let Some((active, played)) = self.active {
                        if active == id {
                            let played = played + if added { 0 } else { talk.talk_samples as u64 };
                            events.push(TalkEvent::SpeechDone { played_ms: played / 48 });
                            self.active = None;
                            added = true;
                        }
                    }
                }
            }
        }
        if !added {
            if let Some((_, played)) = self.active.as_mut() {
                *played += talk.talk_samples as u64;
            }
        }
    }

    fn play_frames(&mut self, media_tick: u64, frames: &mut Vec<PlayFrame>) {
        let fps = self.cfg.fps as u64;
        let tick_start = media_tick * TICK_16K as u64; // 16 kHz samples
        let tick_end = tick_start + TICK_16K as u64;
        // Frame f starts at f * 16000 / fps samples.
        while self.next_frame * 16_000 < tick_end * fps {
            let f = self.next_frame;
            self.next_frame += 1;
            let start_samples = f * 16_000 / fps;
            let due_in = Duration::from_micros(start_samples.saturating_sub(tick_start) * 1_000_000 / 16_000);
            let duration = rtp_exact(90_000, f * 90_000 / fps, (f + 1) * 90_000 / fps);
            let (frame, repeated) = match self.frames.remove(&f) {
                Some(fr) => (fr, false),
                None => match &self.last_frame {
                    Some(last) => (Arc::clone(last), true),
                    None => continue,
                },
            };
            if repeated {
                self.counters.frames_repeated += 1;
            }
            self.counters.frames_sent += 1;
            self.last_frame = Some(Arc::clone(&frame));
            frames.push(PlayFrame { index: f, frame, repeated, due_in, duration });
        }
        // Anything older than what we just played can never be shown.
        while let Some((&idx, _)) = self.frames.first_key_value() {
            if idx >= self.next_frame {
                break;
            }
            self.frames.pop_first();
            self.counters.frames_late += 1;
        }
    }
}

/// A 20 ms tick of talk-track silence, as kept in the delay line.
fn silent_tick() -> TalkTick {
    TalkTick { pcm48: vec![0.0; TICK_48K], pcm16: Vec::new(), talk_samples: 0, markers: Vec::new() }
}

/// A duration that webrtc-rs turns into exactly `to - from` RTP ticks
/// (it truncates `duration * clock_rate`), so timestamps never drift.
pub fn rtp_exact(clock_rate: u64, from: u64, to: u64) -> Duration {
    let ticks = to.saturating_sub(from);
    Duration::from_nanos((ticks * 1_000_000_000).div_ceil(clock_rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: u32 = 25;
    const FPC: usize = 4; // 4 frames = 160 ms = 2560 samples = 8 ticks
    const S: usize = 2560;

    const LOOKAHEAD: usize = 640;
    /// The default lead-in of `cfg_lead_in`: S + lookahead = 3200 = 10
    /// ticks, less the first real tick.
    const LEAD_IN_TICKS: u64 = 9;

    /// Without a lead-in (the plain real-time start).
    fn cfg() -> PacerConfig {
        let mut c = cfg_lead_in();
        c.lead_in_samples = 0;
        c
    }

    /// With the default lead-in.
    fn cfg_lead_in() -> PacerConfig {
        let mut c = PacerConfig::new(FPS, FPC, S, LOOKAHEAD);
        c.playout_margin_ticks = 2;
        c
    }

    fn chunk(index: u64, gen_start: u64, shade: u8) -> VideoChunk {
        VideoChunk {
            index,
            audio_sample_start: gen_start,
            frames: (0..FPC).map(|i| RgbFrame::solid(2, 2, [shade, i as u8, 0])).collect(),
            timings: Default::default(),
        }
    }

    fn talk(n: usize, markers: Vec<Marker>) -> TalkTick {
        TalkTick { pcm48: vec![0.5; 960], pcm16: vec![0.5; 320], talk_samples: n, markers }
    }

    #[test]
    fn rejects_inconsistent_config() {
        assert!(Pacer::new(PacerConfig::new(25, 4, 1000, 0)).is_err());
        let mut c = cfg_lead_in();
        c.lead_in_samples = 3000;
        assert!(matches!(Pacer::new(c), Err(PacerError::Config(m)) if m.contains("lead_in_samples 3000")));
    }

    #[test]
    fn default_lead_in_is_chunk_plus_lookahead_less_the_first_tick() {
        assert_eq!(cfg_lead_in().lead_in_samples, S + LOOKAHEAD - 320);
        assert_eq!(cfg_lead_in().lead_in_ticks(), LEAD_IN_TICKS);
        // mini / tiny: 0.5 s chunk + 0.5 s lookahead = 1 s = 50 ticks.
        assert_eq!(PacerConfig::new(24, 12, 8000, 8000).lead_in_ticks(), 49);
        // A lookahead that is not whole ticks rounds up: S + 100 -> 9 ticks.
        assert_eq!(PacerConfig::default_lead_in(S, 100), 8 * 320);
    }

    #[test]
    fn lead_in_feeds_silence_at_once_and_first_frames_follow_generation() {
        let mut p = Pacer::new(cfg_lead_in()).unwrap();
        let out = p.tick(talk(960, vec![Marker::Start(3)]), &[0.5; 320], &[0.25; 320]).unwrap();
        // Tick 0: the whole lead-in of silence, then this tick's real audio.
        let l = S + LOOKAHEAD - 320;
        assert_eq!(out.feed_talk.len(), l + 320);
        assert_eq!(out.feed_listen.len(), l + 320);
        assert!(out.feed_talk[..l].iter().chain(&out.feed_listen[..l]).all(|&s| s == 0.0));
        assert!(out.feed_talk[l..].iter().all(|&s| s == 0.5));
        assert!(out.feed_listen[l..].iter().all(|&s| s == 0.25));
        assert!(out.audio.is_none() && out.frames.is_empty());
        // Chunk 0 (S + lookahead fed) could be generated at once; it arrives after n = 3 ticks.
        for _ in 1..3 {
            let out = p.tick(talk(960, vec![]), &[0.5; 320], &[0.25; 320]).unwrap();
            assert_eq!(out.feed_talk.len(), 320);
            assert!(out.audio.is_none());
        }
        p.on_chunk(chunk(0, 0, 100));
        // Frames out at tick n + margin = 5 (without a lead-in: 10 + 2 = 12,
        // see `feeds_realtime_plays_av_together_after_first_chunk`).
        assert_eq!(p.playout_delay(), Some(5));
        // Talk -> ear: lead-in + playout delay.
        assert_eq!(p.counters().latency_ms, (LEAD_IN_TICKS + 5) * 20);
        let mut first = None;
        let mut started = None;
        for t in 3..20u64 {
            let out = p.tick(talk(960, vec![]), &[0.5; 320], &[0.25; 320]).unwrap();
            assert_eq!(out.audio.is_some(), t >= 5);
            if first.is_none() && !out.frames.is_empty() {
                first = Some((t, out.frames[0].index));
            }
            if out.events.contains(&TalkEvent::SpeechStarted) {
                started = Some(t);
            }
        }
        assert_eq!(first, Some((5, 0)));
        // The lead-in's media ticks play silence first; real tick 0's talk
        // (with its Start marker) follows LEAD_IN_TICKS later.
        assert_eq!(started, Some(LEAD_IN_TICKS + 5));
    }

    /// A sequential fake generator on the pacer's clock: chunk k starts once
    /// its audio ((k+1)·S + lookahead generator samples) has been fed and the
    /// previous chunk is done, takes `gen_ticks(k)` ticks, and frame i of it
    /// shows, as its red value, the talk sample fed at the frame's first
    /// generator sample — i.e. what the frame was generated from.
    struct FakeGenerator {
        fed: Vec<f32>,
        next: u64,
        busy: Option<(u64, u64)>,
    }

    struct Played {
        tick: u64,
        audio: Option<f32>,
        frames: Vec<PlayFrame>,
    }

    /// Real tick r carries talk value r % 200 + 1 (48 kHz and 16 kHz alike).
    fn run_call(cfg: PacerConfig, ticks: u64, gen_ticks: impl Fn(u64) -> u64) -> (Pacer, Vec<Played>) {
        let mut p = Pacer::new(cfg).unwrap();
        let mut g = FakeGenerator { fed: Vec::new(), next: 0, busy: None };
        let listen = vec![0.0; 320];
        let mut played = Vec::new();
        for t in 0..ticks {
            if let Some((k, done)) = g.busy {
                if done <= t {
                    let start = k as usize * S;
                    let frames =
                        (0..FPC).map(|i| RgbFrame::solid(2, 2, [g.fed[start + i * S / FPC] as u8, 0, 0])).collect();
                    p.on_chunk(VideoChunk {
                        index: k,
                        audio_sample_start: start as u64,
                        frames,
                        timings: Default::default(),
                    });
                    g.busy = None;
                }
            }
            let v = (t % 200 + 1) as f32;
            let tick = TalkTick { pcm48: vec![v; 960], pcm16: vec![v; 320], talk_samples: 960, markers: vec![] };
            let out = p.tick(tick, &[v; 320], &listen).unwrap();
            g.fed.extend_from_slice(&out.feed_talk);
            if g.busy.is_none() && g.fed.len() >= (g.next as usize + 1) * S + LOOKAHEAD {
                g.busy = Some((g.next, t + gen_ticks(g.next)));
                g.next += 1;
            }
            played.push(Played { tick: t, audio: out.audio.map(|a| a[0]), frames: out.frames });
        }
        (p, played)
    }

    /// Every generated (not repeated) frame leaves in the same tick as the
    /// talk audio it was generated from. Returns how many such frames
    /// showed real talk audio (not lead-in silence).
    fn assert_av_sync(played: &[Played]) -> usize {
        let mut talking = 0;
        for p in played {
            for f in p.frames.iter().filter(|f| !f.repeated) {
                let audio = p.audio.expect("frames only play with audio");
                assert_eq!(f.frame.data[0], audio as u8, "frame {} at tick {}: A/V out of sync", f.index, p.tick);
                talking += usize::from(audio > 0.0);
            }
        }
        talking
    }

    #[test]
    fn lead_in_starts_frames_early_and_keeps_talk_with_its_frames() {
        let (p, played) = run_call(cfg_lead_in(), 120, |_| 3);
        // Chunk 0 is generated from tick 0 on and arrives 3 ticks later:
        // frames from tick 3 + margin.
        assert_eq!(p.playout_delay(), Some(5));
        assert_eq!(played.iter().find(|p| !p.frames.is_empty()).map(|p| p.tick), Some(5));
        // Talk audio of real tick 0 (value 1) is heard lead-in + delay later.
        let heard = played.iter().find(|p| p.audio == Some(1.0)).map(|p| p.tick);
        assert_eq!(heard, Some(LEAD_IN_TICKS + 5));
        assert_eq!(p.counters().latency_ms, heard.unwrap() * 20);
        // The generator keeps up: chunk k waits for real audio up to k·S + one tick only.
        let c = p.counters();
        assert_eq!((c.frames_repeated, c.frames_late, c.chunks_skipped), (0, 0, 0));
        assert!(assert_av_sync(&played) >= 40);
    }

    #[test]
    fn without_lead_in_first_frames_wait_for_chunk_plus_lookahead_and_talk_to_ear_is_the_same() {
        let (p, played) = run_call(cfg(), 120, |_| 3);
        // Chunk 0 waits for S + lookahead = 10 ticks of real audio (fed by
        // the end of tick 9), then 3 ticks of generation.
        assert_eq!(p.playout_delay(), Some(9 + 3 + 2));
        assert_eq!(played.iter().find(|p| !p.frames.is_empty()).map(|p| p.tick), Some(14));
        // Talk -> ear is what it is with the lead-in.
        let heard = played.iter().find(|p| p.audio == Some(1.0)).map(|p| p.tick);
        assert_eq!(heard, Some(LEAD_IN_TICKS + 5));
        let with_lead_in = run_call(cfg_lead_in(), 120, |_| 3).0.counters().latency_ms;
        assert_eq!(p.counters().latency_ms, with_lead_in);
        assert_eq!(p.counters().frames_repeated, 0);
        assert!(assert_av_sync(&played) >= 40);
    }

    #[test]
    fn lead_in_with_slow_first_chunk_only_delays_the_start() {
        // Chunk 0 takes 12 ticks (warm-up on a slow machine), then 3 each.
        let (p, played) = run_call(cfg_lead_in(), 120, |k| if k == 0 { 12 } else { 3 });
        assert_eq!(p.playout_delay(), Some(14));
        assert_eq!(played.iter().find(|p| !p.frames.is_empty()).map(|p| p.tick), Some(14));
        let c = p.counters();
        assert_eq!((c.frames_repeated, c.frames_late, c.chunks_skipped), (0, 0, 0));
        assert!(assert_av_sync(&played) >= 30);
    }

    #[test]
    fn lead_in_too_slow_first_chunk_skips_as_without_lead_in() {
        // Chunk 0 takes 20 ticks: longer than the 2 chunks the generator may
        // owe, so an input chunk is skipped, with and without the lead-in.
        let slow_start = |k: u64| if k == 0 { 20 } else { 3 };
        let (p, played) = run_call(cfg_lead_in(), 150, slow_start);
        let (p0, played0) = run_call(cfg(), 150, slow_start);
        let (c, c0) = (p.counters(), p0.counters());
        assert_eq!(c.chunks_skipped, 1);
        assert_eq!(
            (c.chunks_skipped, c.frames_repeated, c.frames_late),
            (c0.chunks_skipped, c0.frames_repeated, c0.frames_late)
        );
        assert!(assert_av_sync(&played) >= 30);
        assert!(assert_av_sync(&played0) >= 30);
    }

    #[test]
    fn lead_in_generator_too_slow_repeats_and_skips_but_stays_in_sync() {
        // Every chunk takes 12 ticks for 8 ticks of media: the pacer skips
        // input chunks, frames arrive late and are repeated; every generated
        // frame that is shown still leaves with its own talk audio.
        let (p, played) = run_call(cfg_lead_in(), 200, |_| 12);
        let c = p.counters();
        assert!(c.chunks_skipped > 0 && c.frames_repeated > 0 && c.frames_late > 0, "{c:?}");
        assert!(assert_av_sync(&played) >= 5);
        // Audio never stalls once playout runs, and a frame leaves every 2 ticks.
        let start = p.playout_delay().unwrap();
        assert!(played.iter().filter(|p| p.tick >= start).all(|p| p.audio.is_some()));
        assert_eq!(c.frames_sent, (200 - start).div_ceil(2));
        let c0 = run_call(cfg(), 200, |_| 12).0.counters();
        // Talk -> ear as without the lead-in.
        assert_eq!(c.latency_ms, c0.latency_ms);
    }

    #[test]
    fn feeds_realtime_plays_av_together_after_first_chunk() {
        let mut p = Pacer::new(cfg()).unwrap();
        let z = vec![0.0; 320];
        // 10 ticks = 3200 samples fed; chunk 0 needs S + 640 = 3200.
        for t in 0..10 {
            let markers = if t == 0 { vec![Marker::Start(7)] } else { vec![] };
            let out = p.tick(talk(960, markers), &z, &z).unwrap();
            assert_eq!(out.feed_talk.len(), 320);
            assert!(out.audio.is_none() && out.frames.is_empty());
        }
        p.on_chunk(chunk(0, 0, 100));
        assert_eq!(p.playout_delay(), Some(12));
        let mut frames = Vec::new();
        let mut started = None;
        for t in 10..30u64 {
            if t == 12 {
                p.on_chunk(chunk(1, S as u64, 150));
            }
            let out = p.tick(talk(960, vec![]), &z, &z).unwrap();
            if t >= 12 {
                assert!(out.audio.is_some());
            }
            if out.events.contains(&TalkEvent::SpeechStarted) {
                started = Some(t);
            }
            for f in out.frames {
                // Frame f plays in the tick containing media time f/25 s.
                let media_tick = t - 12;
                assert_eq!(f.index * 2, media_tick, "frame {} at media tick {media_tick}", f.index);
                assert_eq!(f.due_in, Duration::ZERO);
                frames.push(f);
            }
        }
        // Talk audio of media tick 0 (with the Start marker) plays at tick 12, with frame 0.
        assert_eq!(started, Some(12));
        assert_eq!(frames[0].index, 0);
        assert!(frames.iter().take(8).all(|f| !f.repeated));
        // 18 media ticks played = 360 ms = 9 frames; chunk 2 never came -> repeats.
        assert_eq!(frames.len(), 9);
        assert_eq!(p.counters().frames_repeated, 1);
        assert_eq!(frames[0].duration, rtp_exact(90_000, 0, 3600));
    }

    #[test]
    fn skips_input_chunk_when_generator_is_behind_and_maps_later_chunks() {
        let mut p = Pacer::new(cfg()).unwrap();
        let z = vec![0.0; 320];
        let mut fed = 0;
        // Generator produces nothing: after 2 producible chunks (S*2 + 640 samples
        // = 18 ticks) plus reaching a chunk boundary (24 ticks) the pacer skips.
        for _ in 0..32 {
            fed += p.tick(TalkTick::silence(), &z, &z).unwrap().feed_talk.len();
        }
        assert_eq!(p.counters().chunks_skipped, 1);
        assert_eq!(fed, 3 * S);
        // Chunk 3 of the generator (gen samples 3S..) now shows media 4S..
        p.on_chunk(chunk(0, 0, 1));
        p.on_chunk(chunk(3, 3 * S as u64, 9));
        assert!(p.frames.contains_key(&(4 * FPC as u64)));
        assert!(!p.frames.contains_key(&(3 * FPC as u64)));
    }

    #[test]
    fn late_chunk_is_dropped_and_counted() {
        let mut c = cfg();
        c.max_pending_chunks = 100;
        let mut p = Pacer::new(c).unwrap();
        let z = vec![0.0; 320];
        for _ in 0..10 {
            p.tick(TalkTick::silence(), &z, &z).unwrap();
        }
        p.on_chunk(chunk(0, 0, 1));
        for _ in 0..40 {
            p.tick(TalkTick::silence(), &z, &z).unwrap();
        }
        p.on_chunk(chunk(1, S as u64, 2));
        let c = p.counters();
        assert_eq!(c.chunks_skipped, 1);
        assert_eq!(c.frames_late, FPC as u64);
        assert!(c.frames_repeated > 0);
    }

    #[test]
    fn done_and_cleared_report_played_ms() {
        let mut p = Pacer::new(cfg()).unwrap();
        let z = vec![0.0; 320];
        p.on_chunk(chunk(0, 0, 1)); // playout delay = margin = 2 ticks
        let mut events = Vec::new();
        let script = vec![
            talk(960, vec![Marker::Start(0)]),
            talk(480, vec![Marker::End(0)]),
            talk(960, vec![Marker::Start(1)]),
            talk(960, vec![]),
            talk(960, vec![]),
            talk(960, vec![]),
        ];
        for t in script {
            events.extend(p.tick(t, &z, &z).unwrap().events);
        }
        assert_eq!(
            events,
            vec![TalkEvent::SpeechStarted, TalkEvent::SpeechDone { played_ms: 30 }, TalkEvent::SpeechStarted]
        );
        // Utterance 1 played 2 ticks (40 ms); 2 more are in the delay line.
        assert_eq!(p.clear_talk(), TalkEvent::SpeechCleared { played_ms: 40 });
        let out = p.tick(TalkTick::silence(), &z, &z).unwrap();
        assert!(out.audio.unwrap().iter().all(|&s| s == 0.0));
    }

    #[test]
    fn stalls_without_chunks() {
        let mut c = cfg();
        c.startup_timeout_ticks = 5;
        let mut p = Pacer::new(c).unwrap();
        let z = vec![0.0; 320];
        for _ in 0..5 {
            p.tick(TalkTick::silence(), &z, &z).unwrap();
        }
        assert!(matches!(p.tick(TalkTick::silence(), &z, &z), Err(PacerError::Stalled(_))));
    }

    #[test]
    fn rtp_exact_durations_sum_without_drift() {
        let total: u64 = (0..24u64)
            .map(|f| (rtp_exact(90_000, f * 90_000 / 24, (f + 1) * 90_000 / 24).as_secs_f64() * 90_000.0) as u64)
            .sum();
        assert_eq!(total, 90_000);
    }
}
