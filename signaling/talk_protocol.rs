//! The talk WebSocket protocol without sockets: validates the declared
//! sample rate, turns binary frames (PCM16LE mono) and JSON text frames
//! (`clear`, `end`) into `TalkCommand`s, and says with which close code and
//! reason a bad frame ends the connection.

use serde::Deserialize;

use super::wav_input::{MAX_RATE, MIN_RATE};
use crate::session::TalkCommand;

/// Default PCM rate when `?rate=` is absent.
pub const DEFAULT_RATE: u32 = 24_000;

/// RFC 6455 close codes used by the talk and room sockets.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Why the server ends a socket: an RFC 6455 code and a short reason
/// (at most 123 bytes, the close-frame limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason: String = reason.into();
        if reason.len() > 123 {
            let mut cut = 123;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Self { code, reason }
    }
}

/// Validate `?rate=`.
pub fn check_rate(rate: Option<u32>) -> Result<u32, CloseReason> {
    let rate = rate.unwrap_or(DEFAULT_RATE);
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(CloseReason::new(close_code::POLICY, format!("unsupported sample rate {rate} Hz: use 8000..=48000")))
    }
}

/// JSON control messages from the dialog backend.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Clear,
    End,
}

/// Decoder of one talk connection.
#[derive(Debug, Clone)]
pub struct TalkDecoder {
    pub rate: u32,
    pub max_message_bytes: usize,
}

impl TalkDecoder {
    /// A binary frame: little-endian PCM16 mono at `rate`.
    pub fn binary(&self, data: &[u8]) -> Result<Option<TalkCommand>, CloseReason> {
        if data.len() > self.max_message_bytes {
            return Err(CloseReason::new(
                close_code::TOO_BIG,
                format!("PCM frame of {} bytes exceeds {} bytes", data.len(), self.max_message_bytes),
            ));
        }
        if data.len() % 2 != 0 {
            return Err(CloseReason::new(
                close_code::INVALID_PAYLOAD,
                format!("PCM16 frame has an odd byte count ({})", data.len()),
            ));
        }
        if data.is_empty() {
            return Ok(None);
        }
        let samples = data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        Ok(Some(TalkCommand::Pcm { sample_rate: self.rate, samples }))
    }

    /// A text frame: `{"type":"clear"}` or `{"type":"end"}`.
    pub fn text(&self, text: &str) -> Result<TalkCommand, CloseReason> {
        if text.len() > self.max_message_bytes {
            return Err(CloseReason::new(close_code::TOO_BIG, "control message too large"));
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| CloseReason::new(close_code::INVALID_PAYLOAD, format!("invalid JSON control message: {e}")))?;
        match serde_json::from_value::<Control>(value) {
            Ok(Control::Clear) => Ok(TalkCommand::Clear),
            Ok(Control::End) => Ok(TalkCommand::End),
            Err(e) => Err(CloseReason::new(
                close_code::UNSUPPORTED,
                format!("unsupported control message ({e}); expected type clear or end"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec() -> TalkDecoder {
        TalkDecoder { rate: 24000, max_message_bytes: 1024 }
    }

    #[test]
    fn rates() {
        assert_eq!(check_rate(None), Ok(24000));
        assert_eq!(check_rate(Some(8000)), Ok(8000));
        assert_eq!(check_rate(Some(48000)), Ok(48000));
        let e = check_rate(Some(7999)).unwrap_err();
        assert_eq!(e.code, close_code::POLICY);
        assert!(e.reason.contains("7999"));
        assert!(check_rate(Some(96000)).is_err());
    }

    #[test]
    fn pcm_frames() {
        match dec().binary(&[0x01, 0x00, 0xff, 0xff]).unwrap() {
            Some(TalkCommand::Pcm { sample_rate, samples }) => {
                assert_eq!(sample_rate, 24000);
                assert_eq!(samples, vec![1, -1]);
            }
            other => panic!("{other:?}"),
        }
        assert!(dec().binary(&[]).unwrap().is_none());
        let e = dec().binary(&[1, 2, 3]).unwrap_err();
        assert_eq!(e.code, close_code::INVALID_PAYLOAD);
        assert!(e.reason.contains("odd"));
        assert_eq!(dec().binary(&[0; 2048]).unwrap_err().code, close_code::TOO_BIG);
    }

    #[test]
    fn control_frames() {
        assert!(matches!(dec().text(r#"{"type":"clear"}"#), Ok(TalkCommand::Clear)));
        assert!(matches!(dec().text(r#"{"type":"end"}"#), Ok(TalkCommand::End)));
        assert_eq!(dec().text("{nope").unwrap_err().code, close_code::INVALID_PAYLOAD);
        assert_eq!(dec().text(r#"{"type":"dance"}"#).unwrap_err().code, close_code::UNSUPPORTED);
        assert_eq!(dec().text(r#"[1,2]"#).unwrap_err().code, close_code::UNSUPPORTED);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let r = CloseReason::new(1000, "é".repeat(100));
        assert!(r.reason.len() <= 123);
    }
}
