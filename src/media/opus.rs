//! Opus for the audio tracks: [`OpusDecoder`] turns the remote peer's RTP
//! payloads into 48 kHz mono PCM (stereo streams are downmixed; a lost packet
//! is concealed with PLC or recovered from in-band FEC), [`OpusEncoder`]
//! turns 48 kHz mono PCM into 20 ms packets for the outgoing track (VoIP
//! application, in-band FEC on), and [`OpusFrameAccumulator`] cuts PCM of
//! any block length into the encoder's 960-sample frames.
//! [`OpusStreamDecoder`] adds RTP sequence-number handling (loss detection,
//! late / duplicate drop) on top of the decoder, and [`OpusPacketizer`]
//! combines accumulator and encoder.
//!
//! WebRTC always negotiates `opus/48000/2`; a mono encoder output is a valid
//! stream for it (RFC 7587 section 7).

use crate::media::pcm;

/// Opus RTP clock and the only rate the agent uses.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;
/// Samples per 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Frame duration in milliseconds.
pub const FRAME_MS: u32 = 20;
/// The longest Opus packet is 120 ms: samples per channel at 48 kHz.
pub const MAX_PACKET_SAMPLES: usize = 5_760;
/// Output buffer for one encoded packet (RFC 6716 recommends 4000 bytes).
const MAX_PACKET_BYTES: usize = 4_000;
/// Default encoder bitrate (speech, mono).
pub const DEFAULT_BITRATE_BPS: i32 = 32_000;
/// Packet loss the encoder plans FEC for (percent).
pub const DEFAULT_EXPECTED_LOSS_PERCENT: i32 = 5;

/// Errors of the Opus wrappers.
#[derive(Debug, thiserror::Error)]
pub enum OpusError {
    #[error("malformed Opus packet ({len} bytes): {reason}")]
    Malformed { len: usize, reason: String },
    #[error("empty Opus payload (use `conceal` for a lost packet)")]
    EmptyPacket,
    #[error("encoder frame must be {expected} samples (20 ms at 48 kHz), got {got}")]
    BadFrameLength { expected: usize, got: usize },
    #[error("invalid Opus bitrate {0} bps (allowed 6000..=510000)")]
    BadBitrate(i32),
    #[error("opus library error in {0}")]
    Library(String),
}

fn lib_err(context: &str, e: ::opus::Error) -> OpusError {
    OpusError::Library(format!("{context}: {e}"))
}

/// Decodes Opus RTP payloads (mono or stereo) to 48 kHz mono.
pub struct OpusDecoder {
    inner: ::opus::Decoder,
    /// Interleaved stereo scratch buffer, reused per packet.
    scratch: Vec<f32>,
    /// Samples per channel of the last decoded packet (size of a concealed one).
    last_packet_samples: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpusDecoder(last {} samples)", self.last_packet_samples)
    }
}

impl OpusDecoder {
    /// A 48 kHz decoder. It decodes in stereo and averages the channels, so
    /// both mono and stereo senders come out as the same mono signal.
    pub fn new() -> Result<Self, OpusError> {
        let inner = ::opus::Decoder::new(OPUS_SAMPLE_RATE, ::opus::Channels::Stereo)
            .map_err(|e| lib_err("decoder create", e))?;
        Ok(Self { inner, scratch: vec![0.0; MAX_PACKET_SAMPLES * 2], last_packet_samples: FRAME_SAMPLES })
    }

    /// Decode one RTP payload, appending mono f32 samples to `out`. Returns
    /// the number of samples appended (960 for a 20 ms packet).
    pub fn decode_into(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, OpusError> {
        if payload.is_empty() {
            return Err(OpusError::EmptyPacket);
        }
        // Validate the TOC / frame count first so a bad packet is reported
        // as malformed, not as a generic library failure.
        let n = ::opus::packet::get_nb_samples(payload, OPUS_SAMPLE_RATE)
            .map_err(|e| OpusError::Malformed { len: payload.len(), reason: e.to_string() })?;
        if n == 0 || n > MAX_PACKET_SAMPLES {
            return Err(OpusError::Malformed { len: payload.len(), reason: format!("{n} samples per channel") });
        }
        let got = self
            .inner
            .decode_float(payload, &mut self.scratch, false)
            .map_err(|e| OpusError::Malformed { len: payload.len(), reason: e.to_string() })?;
        self.last_packet_samples = got;
        self.push_mono(got, out);
        Ok(got)
    }

    /// [`decode_into`](Self::decode_into) returning a new vector.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Vec<f32>, OpusError> {
        let mut out = Vec::with_capacity(FRAME_SAMPLES);
        self.decode_into(payload, &mut out)?;
        Ok(out)
    }

    /// Decode to i16 mono.
    pub fn decode_i16(&mut self, payload: &[u8]) -> Result<Vec<i16>, OpusError> {
        Ok(pcm::f32_to_i16(&self.decode(payload)?))
    }

    /// Conceal one lost packet, appending as many samples as the last packet
    /// had. With `next_payload` (the packet after the lost one, already
    /// received) the loss is recovered from its in-band FEC data when it has
    /// any, otherwise PLC extrapolates. Decode `next_payload` normally
    /// afterwards.
    pub fn conceal_into(&mut self, next_payload: Option<&[u8]>, out: &mut Vec<f32>) -> Result<usize, OpusError> {
        let n = self.last_packet_samples.clamp(120, MAX_PACKET_SAMPLES);
        let buf = &mut self.scratch[..n * 2];
        let got = match next_payload {
            Some(p) if !p.is_empty() => self
                .inner
                .decode_float(p, buf, true)
                .map_err(|e| OpusError::Malformed { len: p.len(), reason: e.to_string() })?,
            _ => self.inner.decode_float(&[], buf, false).map_err(|e| lib_err("packet loss concealment", e))?,
        };
        self.push_mono(got, out);
        Ok(got)
    }

    /// [`conceal_into`](Self::conceal_into) returning a new vector.
    pub fn conceal(&mut self, next_payload: Option<&[u8]>) -> Result<Vec<f32>, OpusError> {
        let mut out = Vec::with_capacity(self.last_packet_samples);
        self.conceal_into(next_payload, &mut out)?;
        Ok(out)
    }

    /// Forget the stream state (new remote track).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        self.last_packet_samples = FRAME_SAMPLES;
        self.inner.reset_state().map_err(|e| lib_err("decoder reset", e))
    }

    fn push_mono(&self, frames: usize, out: &mut Vec<f32>) {
        out.extend(self.scratch[..frames * 2].chunks_exact(2).map(|lr| 0.5 * (lr[0] + lr[1])));
    }
}

/// Longest run of lost packets concealed one by one (10 x 20 ms); a longer
/// gap is a discontinuity: the decoder is reset and nothing is synthesized.
pub const MAX_CONCEALED_PACKETS: u16 = 10;

/// Counters of an incoming Opus RTP stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpusStreamStats {
    pub packets_decoded: u64,
    /// Packets missing from the sequence-number space.
    pub packets_lost: u64,
    /// Lost packets replaced by PLC / FEC audio.
    pub packets_concealed: u64,
    /// Packets that arrived behind the stream or twice (dropped).
    pub packets_late_or_duplicate: u64,
    pub packets_malformed: u64,
    /// Gaps longer than [`MAX_CONCEALED_PACKETS`].
    pub discontinuities: u64,
}

/// Decodes an incoming Opus RTP stream by sequence number: detects loss
/// (concealing up to [`MAX_CONCEALED_PACKETS`], using the next packet's FEC
/// for the last lost one), drops late / duplicate packets (no jitter buffer:
/// packets are expected in order, as a real-time listener wants them), and
/// counts malformed ones.
#[derive(Debug)]
pub struct OpusStreamDecoder {
    decoder: OpusDecoder,
    last_seq: Option<u16>,
    stats: OpusStreamStats,
}

impl OpusStreamDecoder {
    pub fn new() -> Result<Self, OpusError> {
        Ok(Self { decoder: OpusDecoder::new()?, last_seq: None, stats: OpusStreamStats::default() })
    }

    pub fn stats(&self) -> &OpusStreamStats {
        &self.stats
    }

    /// Handle the RTP packet with sequence number `seq`: appends concealment
    /// for lost packets before it, then its own 48 kHz mono samples, to
    /// `out`. Returns the samples appended (0 for a late or duplicate
    /// packet). A malformed payload is an error; the stream stays usable.
    pub fn push(&mut self, seq: u16, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, OpusError> {
        let before = out.len();
        if let Some(last) = self.last_seq {
            let diff = seq.wrapping_sub(last);
            if diff == 0 || diff >= 0x8000 {
                self.stats.packets_late_or_duplicate += 1;
                return Ok(0);
            }
            let lost = diff - 1;
            if lost > 0 {
                self.stats.packets_lost += lost as u64;
                if lost <= MAX_CONCEALED_PACKETS {
                    for i in 0..lost {
                        let fec_source = if i == lost - 1 { Some(payload) } else { None };
                        // A malformed next packet cannot give FEC: fall back to PLC.
                        if self.decoder.conceal_into(fec_source, out).is_err() {
                            self.decoder.conceal_into(None, out)?;
                        }
                        self.stats.packets_concealed += 1;
                    }
                } else {
                    self.stats.discontinuities += 1;
                    self.decoder.reset()?;
                }
            }
        }
        self.last_seq = Some(seq);
        match self.decoder.decode_into(payload, out) {
            Ok(_) => {
                self.stats.packets_decoded += 1;
                Ok(out.len() - before)
            }
            Err(e) => {
                self.stats.packets_malformed += 1;
                Err(e)
            }
        }
    }

    /// Forget the stream (new remote track / SSRC).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        self.last_seq = None;
        self.decoder.reset()
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// Target bitrate in bits per second (6000..=510000).
    pub bitrate_bps: i32,
    /// In-band forward error correction (LBRR).
    pub fec: bool,
    /// Packet loss percentage the encoder provisions FEC for.
    pub expected_loss_percent: i32,
    /// 0 (fastest) ..= 10 (best).
    pub complexity: i32,
}

impl Default for OpusEncoderConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: DEFAULT_BITRATE_BPS,
            fec: true,
            expected_loss_percent: DEFAULT_EXPECTED_LOSS_PERCENT,
            complexity: 8,
        }
    }
}

/// 48 kHz mono Opus encoder for 20 ms frames (VoIP application).
pub struct OpusEncoder {
    inner: ::opus::Encoder,
    config: OpusEncoderConfig,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpusEncoder({:?})", self.config)
    }
}

impl OpusEncoder {
    /// Encoder with the default config (32 kbit/s, FEC on).
    pub fn new() -> Result<Self, OpusError> {
        Self::with_config(OpusEncoderConfig::default())
    }

    pub fn with_config(config: OpusEncoderConfig) -> Result<Self, OpusError> {
        let mut inner = ::opus::Encoder::new(OPUS_SAMPLE_RATE, ::opus::Channels::Mono, ::opus::Application::Voip)
            .map_err(|e| lib_err("encoder create", e))?;
        let mut enc_cfg = config;
        enc_cfg.complexity = enc_cfg.complexity.clamp(0, 10);
        enc_cfg.expected_loss_percent = enc_cfg.expected_loss_percent.clamp(0, 100);
        inner.set_complexity(enc_cfg.complexity).map_err(|e| lib_err("set complexity", e))?;
        inner.set_inband_fec(enc_cfg.fec).map_err(|e| lib_err("set fec", e))?;
        inner.set_packet_loss_perc(enc_cfg.expected_loss_percent).map_err(|e| lib_err("set packet loss", e))?;
        let mut enc = Self { inner, config: enc_cfg, out: vec![0; MAX_PACKET_BYTES] };
        enc.set_bitrate(config.bitrate_bps)?;
        Ok(enc)
    }

    pub fn config(&self) -> OpusEncoderConfig {
        self.config
    }

    /// Change the target bitrate (e.g. from congestion feedback).
    pub fn set_bitrate(&mut self, bitrate_bps: i32) -> Result<(), OpusError> {
        if !(6_000..=510_000).contains(&bitrate_bps) {
            return Err(OpusError::BadBitrate(bitrate_bps));
        }
        self.inner.set_bitrate(::opus::Bitrate::Bits(bitrate_bps)).map_err(|e| lib_err("set bitrate", e))?;
        self.config.bitrate_bps = bitrate_bps;
        Ok(())
    }

    /// Encode exactly one 20 ms frame (960 samples) into one packet.
    pub fn encode_frame(&mut self, frame: &[f32]) -> Result<Vec<u8>, OpusError> {
        if frame.len() != FRAME_SAMPLES {
            return Err(OpusError::BadFrameLength { expected: FRAME_SAMPLES, got: frame.len() });
        }
        let n = self.inner.encode_float(frame, &mut self.out).map_err(|e| lib_err("encode", e))?;
        Ok(self.out[..n].to_vec())
    }

    /// Encode one 20 ms frame of i16 samples.
    pub fn encode_frame_i16(&mut self, frame: &[i16]) -> Result<Vec<u8>, OpusError> {
        self.encode_frame(&pcm::i16_to_f32(frame))
    }

    /// Encoder lookahead in samples (the codec delay a decoder sees).
    pub fn lookahead(&mut self) -> Result<usize, OpusError> {
        let n = self.inner.get_lookahead().map_err(|e| lib_err("get lookahead", e))?;
        Ok(n.max(0) as usize)
    }
}

/// Cuts 48 kHz mono PCM of any block length into 960-sample (20 ms) frames.
/// Holds fewer than 960 samples between calls.
#[derive(Debug, Default, Clone)]
pub struct OpusFrameAccumulator {
    pending: Vec<f32>,
}

impl OpusFrameAccumulator {
    pub fn new() -> Self {
        Self { pending: Vec::with_capacity(FRAME_SAMPLES) }
    }

    /// Add samples; returns the complete frames now available.
    pub fn push(&mut self, samples: &[f32]) -> Vec<[f32; FRAME_SAMPLES]> {
        let mut frames = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (FRAME_SAMPLES - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == FRAME_SAMPLES {
                let mut frame = [0.0; FRAME_SAMPLES];
                frame.copy_from_slice(&self.pending);
                frames.push(frame);
                self.pending.clear();
            }
        }
        frames
    }

    /// Samples waiting for a full frame.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The held partial frame zero-padded to 960 samples, if any.
    pub fn flush(&mut self) -> Option<[f32; FRAME_SAMPLES]> {
        if self.pending.is_empty() {
            return None;
        }
        let mut frame = [0.0; FRAME_SAMPLES];
        frame[..self.pending.len()].copy_from_slice(&self.pending);
        self.pending.clear();
        Some(frame)
    }

    /// Drop the held samples (barge-in).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

/// Accumulator + encoder: PCM of any block length in, 20 ms packets out.
#[derive(Debug)]
pub struct OpusPacketizer {
    pub encoder: OpusEncoder,
    accumulator: OpusFrameAccumulator,
}

impl OpusPacketizer {
    pub fn new(config: OpusEncoderConfig) -> Result<Self, OpusError> {
        Ok(Self { encoder: OpusEncoder::with_config(config)?, accumulator: OpusFrameAccumulator::new() })
    }

    /// Add 48 kHz mono samples; returns the packets of the completed frames.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<Vec<u8>>, OpusError> {
        self.accumulator.push(samples).iter().map(|f| self.encoder.encode_frame(f)).collect()
    }

    /// Encode the held partial frame (zero-padded), if any.
    pub fn flush(&mut self) -> Result<Option<Vec<u8>>, OpusError> {
        match self.accumulator.flush() {
            Some(f) => Ok(Some(self.encoder.encode_frame(&f)?)),
            None => Ok(None),
        }
    }

    pub fn pending(&self) -> usize {
        self.accumulator.pending()
    }

    pub fn clear(&mut self) {
        self.accumulator.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize) -> Vec<f32> {
        (0..n).map(|i| 0.4 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin()).collect()
    }

    /// Best normalized cross-correlation over lags 0..max_lag (decoded lags input).
    fn best_correlation(x: &[f32], y: &[f32], max_lag: usize) -> (f32, usize) {
        let mut best = (f32::MIN, 0);
        for lag in 0..max_lag {
            let n = x.len().min(y.len() - lag);
            let (a, b) = (&x[..n], &y[lag..lag + n]);
            let dot: f32 = a.iter().zip(b).map(|(p, q)| p * q).sum();
            let na: f32 = a.iter().map(|p| p * p).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|q| q * q).sum::<f32>().sqrt();
            let c = dot / (na * nb + 1e-9);
            if c > best.0 {
                best = (c, lag);
            }
        }
        best
    }

    #[test]
    fn tone_round_trip_correlates() {
        let x = tone(48_000 / 2);
        let mut pk = OpusPacketizer::new(OpusEncoderConfig::default()).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut y = Vec::new();
        // Odd block sizes through the accumulator.
        for block in x.chunks(333) {
            for p in pk.push(block).unwrap() {
                assert!(!p.is_empty() && p.len() < 400, "packet {} bytes", p.len());
                assert_eq!(dec.decode_into(&p, &mut y).unwrap(), FRAME_SAMPLES);
            }
        }
        if let Some(p) = pk.flush().unwrap() {
            dec.decode_into(&p, &mut y).unwrap();
        }
        assert_eq!(y.len(), x.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES);
        // Skip the codec's warm-up, then align.
        let (c, lag) = best_correlation(&x[4_800..20_000], &y[4_800..], 960);
        assert!(c > 0.9, "correlation {c} at lag {lag}");
    }

    #[test]
    fn stereo_packets_are_downmixed() {
        let mut enc = ::opus::Encoder::new(48_000, ::opus::Channels::Stereo, ::opus::Application::Voip).unwrap();
        let mono = tone(FRAME_SAMPLES * 10);
        let mut dec = OpusDecoder::new().unwrap();
        let mut y = Vec::new();
        for f in mono.chunks(FRAME_SAMPLES) {
            // Left = tone, right = silence: the mono mix is half the tone.
            let inter: Vec<f32> = f.iter().flat_map(|&s| [s, 0.0]).collect();
            let p = enc.encode_vec_float(&inter, 4000).unwrap();
            assert_eq!(dec.decode_into(&p, &mut y).unwrap(), FRAME_SAMPLES);
        }
        let rms = |v: &[f32]| (v.iter().map(|s| s * s).sum::<f32>() / v.len() as f32).sqrt();
        let ratio = rms(&y[4_800..]) / rms(&mono[4_800..]);
        assert!((ratio - 0.5).abs() < 0.15, "downmix level ratio {ratio}");
    }

    #[test]
    fn loss_is_concealed_and_recovered_from_fec() {
        let x = tone(FRAME_SAMPLES * 20);
        let mut enc = OpusEncoder::new().unwrap();
        let packets: Vec<Vec<u8>> = x.chunks(FRAME_SAMPLES).map(|f| enc.encode_frame(f).unwrap()).collect();
        let mut dec = OpusDecoder::new().unwrap();
        let mut y = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            match i {
                10 => assert_eq!(dec.conceal_into(None, &mut y).unwrap(), FRAME_SAMPLES),
                15 => {
                    assert_eq!(dec.conceal_into(packets.get(16).map(|v| v.as_slice()), &mut y).unwrap(), FRAME_SAMPLES)
                }
                _ => {
                    dec.decode_into(p, &mut y).unwrap();
                }
            }
        }
        assert_eq!(y.len(), x.len());
        // Concealed audio is not silence (PLC continues the tone).
        let energy: f32 = y[10 * FRAME_SAMPLES..11 * FRAME_SAMPLES].iter().map(|s| s * s).sum();
        assert!(energy > 1.0, "PLC energy {energy}");
    }

    #[test]
    fn stream_decoder_conceals_gaps_and_drops_late_packets() {
        let x = tone(FRAME_SAMPLES * 40);
        let mut enc = OpusEncoder::new().unwrap();
        let packets: Vec<Vec<u8>> = x.chunks(FRAME_SAMPLES).map(|f| enc.encode_frame(f).unwrap()).collect();
        let mut dec = OpusStreamDecoder::new().unwrap();
        let mut out = Vec::new();
        let base = 65_530u16; // wraps around during the test
        for (i, p) in packets.iter().enumerate().take(10) {
            if i == 3 || i == 4 {
                continue; // two lost packets
            }
            let n = dec.push(base.wrapping_add(i as u16), p, &mut out).unwrap();
            assert_eq!(n, if i == 5 { 3 * FRAME_SAMPLES } else { FRAME_SAMPLES }, "packet {i}");
        }
        assert_eq!(out.len(), 10 * FRAME_SAMPLES, "the timeline has no holes");
        // Late and duplicate packets are dropped.
        assert_eq!(dec.push(base.wrapping_add(3), &packets[3], &mut out).unwrap(), 0);
        assert_eq!(dec.push(base.wrapping_add(9), &packets[9], &mut out).unwrap(), 0);
        // A long gap is a discontinuity, not 30 packets of synthesized audio.
        let n = dec.push(base.wrapping_add(10 + 20), &packets[30], &mut out).unwrap();
        assert_eq!(n, FRAME_SAMPLES);
        // Malformed payload: error, counted, stream continues.
        assert!(dec.push(base.wrapping_add(31), &[0x03, 0x00], &mut out).is_err());
        assert_eq!(dec.push(base.wrapping_add(32), &packets[32], &mut out).unwrap(), FRAME_SAMPLES);
        let st = *dec.stats();
        assert_eq!(st.packets_lost, 2 + 20);
        assert_eq!(st.packets_concealed, 2);
        assert_eq!(st.packets_late_or_duplicate, 2);
        assert_eq!(st.discontinuities, 1);
        assert_eq!(st.packets_malformed, 1);
        assert_eq!(st.packets_decoded, 8 + 1 + 1);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        let mut dec = OpusDecoder::new().unwrap();
        assert!(matches!(dec.decode(&[]), Err(OpusError::EmptyPacket)));
        // Code 3 packet with a frame count of 0 is invalid.
        assert!(matches!(dec.decode(&[0x03, 0x00]), Err(OpusError::Malformed { .. })));
        // Code 3, 63 frames of 20 ms = 1.26 s > 120 ms.
        assert!(matches!(dec.decode(&[0x0b, 0x3f]), Err(OpusError::Malformed { .. })));
        // Pseudo-random garbage: any outcome but a panic, and the decoder stays usable.
        let mut seed = 0x1234_5678u32;
        for len in 1..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            let _ = dec.decode(&junk);
        }
        let mut enc = OpusEncoder::new().unwrap();
        let p = enc.encode_frame(&tone(FRAME_SAMPLES)).unwrap();
        assert_eq!(dec.decode(&p).unwrap().len(), FRAME_SAMPLES);
    }

    #[test]
    fn encoder_validates_input() {
        let mut enc = OpusEncoder::new().unwrap();
        assert!(matches!(enc.encode_frame(&[0.0; 100]), Err(OpusError::BadFrameLength { .. })));
        assert!(matches!(enc.set_bitrate(1), Err(OpusError::BadBitrate(1))));
        enc.set_bitrate(64_000).unwrap();
        assert_eq!(enc.config().bitrate_bps, 64_000);
        assert!(enc.config().fec);
        assert!(enc.lookahead().unwrap() > 0);
    }

    #[test]
    fn accumulator_yields_exact_frames() {
        let mut acc = OpusFrameAccumulator::new();
        assert!(acc.push(&[0.1; 500]).is_empty());
        let frames = acc.push(&[0.2; 2000]);
        assert_eq!(frames.len(), 2);
        assert_eq!(acc.pending(), 2500 - 1920);
        assert_eq!(frames[0][499], 0.1);
        assert_eq!(frames[0][500], 0.2);
        let last = acc.flush().unwrap();
        assert_eq!(last[579], 0.2);
        assert_eq!(last[580], 0.0);
        assert!(acc.flush().is_none());
    }
}
