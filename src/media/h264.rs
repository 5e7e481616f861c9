//! H.264 for the outgoing video track (OpenH264 built from Cisco's source,
//! `OpenH264API::from_source()`).
//!
//! [`H264Encoder`] encodes RGB or I420 frames to Annex-B access units in the
//! constrained-baseline profile browsers accept for WebRTC
//! (`packetization-mode=1`, `profile-level-id=42e01f` at up to 1280x720),
//! single slice, no B-frames, keyframes on demand (PLI / FIR) and
//! periodically. webrtc-rs' `TrackLocalStaticSample` takes whole Annex-B
//! access units and packetizes them itself (FU-A / STAP-A); for other
//! packetizers [`split_annex_b`] yields the NAL units. [`H264Decoder`] turns
//! access units back into RGB frames (tests, `bench call`).

use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};

use crate::media::frame::RgbFrame;
use crate::media::yuv::{self, I420Frame, YuvError};

/// The `a=fmtp` parameters of the video track for resolutions up to level
/// 3.1 (1280x720 at 30 fps). Use [`H264Encoder::sdp_fmtp`] for the exact line.
pub const SDP_FMTP_LEVEL_3_1: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// H.264 NAL unit types used here.
pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

/// Errors of the H.264 wrappers.
#[derive(Debug, thiserror::Error)]
pub enum H264Error {
    #[error("invalid video size {width}x{height}: must be even, >= 16 and <= 3840x2160")]
    BadSize { width: usize, height: usize },
    #[error("invalid frame rate {0} (1..=120)")]
    BadFps(u32),
    #[error("frame is {got_w}x{got_h}, encoder is configured for {want_w}x{want_h}")]
    SizeMismatch { got_w: usize, got_h: usize, want_w: usize, want_h: usize },
    #[error(transparent)]
    Yuv(#[from] YuvError),
    #[error("openh264 encoder: {0}")]
    Encoder(String),
    #[error("openh264 decoder (corrupt or unsupported bitstream): {0}")]
    Decoder(String),
}

/// Encoder settings. [`H264Config::new`] derives the bitrate from the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Config {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// Target bitrate (bits per second).
    pub bitrate_bps: u32,
    /// An IDR every this many frames besides the requested ones (0 = only on
    /// request). A safety net for a lost PLI.
    pub keyframe_interval: u32,
}

impl H264Config {
    /// Config with the default bitrate and a keyframe every 10 s.
    pub fn new(width: usize, height: usize, fps: u32) -> Self {
        Self {
            width,
            height,
            fps,
            bitrate_bps: default_bitrate_bps(width, height, fps),
            keyframe_interval: fps.saturating_mul(10),
        }
    }
}

/// Default bitrate: 0.1 bit per pixel per frame, clamped to 150 kbit/s ..=
/// 4 Mbit/s (1280x704 at 24 fps -> 2.16 Mbit/s).
pub fn default_bitrate_bps(width: usize, height: usize, fps: u32) -> u32 {
    let bps = width as f64 * height as f64 * fps as f64 * 0.1;
    bps.clamp(150_000.0, 4_000_000.0) as u32
}

/// The lowest level (and its `level_idc`) that fits the size and rate
/// (max macroblocks per frame / per second, H.264 Table A-1).
fn level_for(width: usize, height: usize, fps: u32) -> (Level, u8) {
    let mbs = width.div_ceil(16) * height.div_ceil(16);
    let rate = mbs * fps as usize;
    if mbs <= 1_620 && rate <= 40_500 {
        (Level::Level_3_0, 30)
    } else if mbs <= 3_600 && rate <= 108_000 {
        (Level::Level_3_1, 31)
    } else if mbs <= 8_192 && rate <= 245_760 {
        (Level::Level_4_0, 40)
    } else {
        (Level::Level_5_1, 51)
    }
}

/// One encoded access unit.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// Annex-B bytes (start codes included); SPS and PPS precede every IDR.
    pub data: Vec<u8>,
    /// True for an IDR access unit.
    pub keyframe: bool,
    /// 0-based count of frames given to the encoder.
    pub frame_index: u64,
    /// Presentation time in milliseconds (`frame_index / fps`).
    pub pts_ms: u64,
}

/// OpenH264 encoder producing browser-compatible constrained-baseline H.264.
pub struct H264Encoder {
    inner: Encoder,
    config: H264Config,
    level_idc: u8,
    keyframe_requested: bool,
    frames: u64,
    yuv: I420Frame,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H264Encoder({:?})", self.config)
    }
}

impl H264Encoder {
    /// Encoder for `width`x`height` at `fps`; `bitrate_bps: None` uses
    /// [`default_bitrate_bps`].
    pub fn new(width: usize, height: usize, fps: u32, bitrate_bps: Option<u32>) -> Result<Self, H264Error> {
        let mut config = H264Config::new(width, height, fps);
        if let Some(b) = bitrate_bps {
            config.bitrate_bps = b;
        }
        Self::with_config(config)
    }

    /// Encoder from a full config. Rate control runs in bitrate mode with
    /// frame skipping off, so every input frame yields an access unit; the
    /// bitrate is a target that QP adaptation tracks, not a hard cap.
    pub fn with_config(config: H264Config) -> Result<Self, H264Error> {
        let (w, h) = (config.width, config.height);
        if w < 16 || h < 16 || w % 2 != 0 || h % 2 != 0 || w.max(h) > 3840 || w.min(h) > 2160 {
            return Err(H264Error::BadSize { width: w, height: h });
        }
        if !(1..=120).contains(&config.fps) {
            return Err(H264Error::BadFps(config.fps));
        }
        let (level, level_idc) = level_for(w, h, config.fps);
        let enc_config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(config.bitrate_bps.max(10_000)))
            .max_frame_rate(FrameRate::from_hz(config.fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false)
            .profile(Profile::Baseline)
            .level(level)
            .complexity(Complexity::Medium)
            .intra_frame_period(IntraFramePeriod::from_num_frames(config.keyframe_interval))
            .num_threads(1);
        let inner = Encoder::with_api_config(OpenH264API::from_source(), enc_config)
            .map_err(|e| H264Error::Encoder(e.to_string()))?;
        Ok(Self { inner, config, level_idc, keyframe_requested: true, frames: 0, yuv: I420Frame::black(w, h)? })
    }

    pub fn config(&self) -> H264Config {
        self.config
    }

    /// `profile-level-id` of the stream (constrained baseline + level).
    pub fn profile_level_id(&self) -> String {
        format!("42e0{:02x}", self.level_idc)
    }

    /// The `a=fmtp` parameter string for this encoder's stream.
    pub fn sdp_fmtp(&self) -> String {
        format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}", self.profile_level_id())
    }

    /// Make the next encoded frame an IDR (on PLI / FIR from the receiver).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Encode an RGB frame. `force_keyframe` makes this frame an IDR.
    pub fn encode_rgb(&mut self, frame: &RgbFrame, force_keyframe: bool) -> Result<EncodedFrame, H264Error> {
        self.check_size(frame.width, frame.height)?;
        let mut yuv =
            std::mem::replace(&mut self.yuv, I420Frame { width: 0, height: 0, y: vec![], u: vec![], v: vec![] });
        let result = yuv::rgb_to_i420_into(frame, &mut yuv)
            .map_err(H264Error::from)
            .and_then(|()| self.encode_i420(&yuv, force_keyframe));
        self.yuv = yuv;
        result
    }

    /// Encode an I420 picture. `force_keyframe` makes this frame an IDR.
    pub fn encode_i420(&mut self, frame: &I420Frame, force_keyframe: bool) -> Result<EncodedFrame, H264Error> {
        self.check_size(frame.width, frame.height)?;
        frame.validate()?;
        if force_keyframe || self.keyframe_requested {
            // The first frame is an IDR anyway; forcing before the encoder
            // initializes (on its first encode) has no effect, so only force
            // after that.
            if self.frames > 0 {
                self.inner.force_intra_frame();
            }
            self.keyframe_requested = false;
        }
        let pts_ms = self.frames * 1000 / self.config.fps as u64;
        let bs = self
            .inner
            .encode_at(frame, Timestamp::from_millis(pts_ms))
            .map_err(|e| H264Error::Encoder(e.to_string()))?;
        let keyframe = bs.frame_type() == FrameType::IDR;
        let data = if bs.frame_type() == FrameType::Skip { Vec::new() } else { bs.to_vec() };
        let out = EncodedFrame { data, keyframe, frame_index: self.frames, pts_ms };
        self.frames += 1;
        Ok(out)
    }

    fn check_size(&self, w: usize, h: usize) -> Result<(), H264Error> {
        if (w, h) != (self.config.width, self.config.height) {
            return Err(H264Error::SizeMismatch {
                got_w: w,
                got_h: h,
                want_w: self.config.width,
                want_h: self.config.height,
            });
        }
        Ok(())
    }
}

/// Split an Annex-B byte stream into NAL units (start codes removed, empty
/// units skipped). Bytes before the first start code are ignored.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // (start code position, payload position)
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let sc = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
            starts.push((sc, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &(_, payload)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&(sc, _)| sc);
        if end > payload {
            nals.push(&data[payload..end]);
        }
    }
    nals
}

/// The `nal_unit_type` of a NAL unit (without start code).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// True when the access unit contains an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    split_annex_b(access_unit).iter().any(|n| nal_type(n) == Some(NAL_IDR))
}

/// OpenH264 decoder: Annex-B access units in, RGB frames out.
pub struct H264Decoder {
    inner: Decoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H264Decoder")
    }
}

impl H264Decoder {
    pub fn new() -> Result<Self, H264Error> {
        let inner = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| H264Error::Decoder(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Decode one access unit to I420; `None` when no picture is complete yet.
    pub fn decode_i420(&mut self, access_unit: &[u8]) -> Result<Option<I420Frame>, H264Error> {
        if access_unit.is_empty() {
            return Ok(None);
        }
        let decoded = self.inner.decode(access_unit).map_err(|e| H264Error::Decoder(e.to_string()))?;
        match decoded {
            None => Ok(None),
            Some(pic) => {
                let (w, h) = pic.dimensions();
                let (sy, su, sv) = pic.strides();
                Ok(Some(I420Frame::from_strided(w, h, (pic.y(), pic.u(), pic.v()), (sy, su, sv))?))
            }
        }
    }

    /// Decode one access unit to RGB (BT.601 limited range).
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<RgbFrame>, H264Error> {
        match self.decode_i420(access_unit)? {
            Some(yuv) => Ok(Some(yuv::i420_to_rgb(&yuv)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A diagonal gradient with a 24x24 square moving 4 px per frame.
    fn scene(i: usize) -> RgbFrame {
        let (w, h) = (128, 128);
        let mut data = Vec::with_capacity(w * h * 3);
        let (sx, sy) = (8 + 4 * i, 20 + 2 * i);
        for y in 0..h {
            for x in 0..w {
                if (sx..sx + 24).contains(&x) && (sy..sy + 24).contains(&y) {
                    data.extend_from_slice(&[230, 40, 40]);
                } else {
                    data.extend_from_slice(&[(x * 2) as u8, (y * 2) as u8, ((x + y) / 2) as u8 + 40]);
                }
            }
        }
        RgbFrame { width: w, height: h, data }
    }

    #[test]
    fn encode_decode_round_trip_and_keyframe_on_request() {
        let mut enc = H264Encoder::new(128, 128, 24, Some(600_000)).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let mut psnrs = Vec::new();
        for i in 0..12 {
            let frame = scene(i);
            let force = i == 7;
            let au = enc.encode_rgb(&frame, force).unwrap();
            assert!(!au.data.is_empty(), "frame {i} skipped");
            assert_eq!(au.frame_index, i as u64);
            let idr = is_keyframe(&au.data);
            assert_eq!(au.keyframe, idr, "frame {i}");
            match i {
                0 | 7 => assert!(au.keyframe, "frame {i} must be an IDR"),
                _ => assert!(!au.keyframe, "frame {i} must be a P frame"),
            }
            if au.keyframe {
                let types: Vec<u8> = split_annex_b(&au.data).iter().filter_map(|n| nal_type(n)).collect();
                assert!(types.contains(&NAL_SPS) && types.contains(&NAL_PPS), "{types:?}");
            }
            let out = dec.decode(&au.data).unwrap().expect("a picture per access unit");
            assert_eq!((out.width, out.height), (128, 128));
            psnrs.push(yuv::psnr_rgb(&frame, &out).unwrap());
        }
        let min = psnrs.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(min > 30.0, "PSNR per frame {psnrs:?}");
        // request_keyframe (PLI) also works.
        enc.request_keyframe();
        assert!(enc.encode_rgb(&scene(12), false).unwrap().keyframe);
        assert!(!enc.encode_rgb(&scene(13), false).unwrap().keyframe);
    }

    #[test]
    fn stream_is_constrained_baseline() {
        let mut enc = H264Encoder::new(128, 128, 24, None).unwrap();
        assert_eq!(enc.config().bitrate_bps, 150_000);
        let au = enc.encode_rgb(&scene(0), false).unwrap();
        let sps = split_annex_b(&au.data).into_iter().find(|n| nal_type(n) == Some(NAL_SPS)).expect("SPS");
        assert_eq!(sps[1], 66, "profile_idc baseline");
        // constraint_set1_flag set: constrained baseline (OpenH264 writes
        // 0xc0, browsers offer 0xe0; both parse as Constrained Baseline).
        assert_eq!(sps[2] & 0x40, 0x40, "constraint flags {:#04x}", sps[2]);
        assert_eq!(sps[3], 30, "level_idc 3.0 for 128x128");
        assert_eq!(enc.profile_level_id(), "42e01e");
        let big = H264Encoder::new(1280, 704, 24, None).unwrap();
        assert_eq!(big.profile_level_id(), "42e01f");
        assert_eq!(big.sdp_fmtp(), SDP_FMTP_LEVEL_3_1);
        assert_eq!(big.config().bitrate_bps, 2_162_688);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(H264Encoder::new(127, 128, 24, None), Err(H264Error::BadSize { .. })));
        assert!(matches!(H264Encoder::new(128, 128, 0, None), Err(H264Error::BadFps(0))));
        let mut enc = H264Encoder::new(64, 64, 24, None).unwrap();
        assert!(matches!(enc.encode_rgb(&scene(0), false), Err(H264Error::SizeMismatch { .. })));
        let mut dec = H264Decoder::new().unwrap();
        let mut seed = 7u32;
        for len in [1usize, 5, 50, 500] {
            let mut junk: Vec<u8> = vec![0, 0, 0, 1, 0x65];
            junk.extend((0..len).map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            }));
            let _ = dec.decode(&junk); // error or no picture, never a panic
        }
        assert!(dec.decode(&[]).unwrap().is_none());
    }

    #[test]
    fn sizes_off_the_macroblock_grid_are_cropped_back() {
        let (w, h) = (120, 90);
        let mut enc = H264Encoder::new(w, h, 24, None).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let frame = RgbFrame::solid(w, h, [40, 160, 90]);
        let au = enc.encode_rgb(&frame, false).unwrap();
        let out = dec.decode(&au.data).unwrap().unwrap();
        assert_eq!((out.width, out.height), (w, h));
        assert!(yuv::psnr_rgb(&frame, &out).unwrap() > 35.0);
    }

    #[test]
    fn codec_types_can_move_between_tasks() {
        fn is_send<T: Send>() {}
        is_send::<H264Encoder>();
        is_send::<H264Decoder>();
    }

    #[test]
    fn annex_b_splitting() {
        let data = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0, 0, 1];
        let nals = split_annex_b(&data);
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
        assert_eq!(nals.iter().map(|n| nal_type(n).unwrap()).collect::<Vec<_>>(), vec![7, 8, 5]);
        assert!(is_keyframe(&data));
        assert!(split_annex_b(&[1, 2, 3]).is_empty());
    }
}
