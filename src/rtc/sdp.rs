//! SDP checks done before an offer or answer reaches the peer connection:
//! parse it, make sure it carries media we can negotiate (Opus audio and/or
//! H.264 video over DTLS-SRTP with ICE credentials) and summarise the
//! directions the remote asked for. Gives a clear error instead of a deep
//! webrtc-rs failure for malformed input.

use std::io::Cursor;

use webrtc::sdp::description::media::MediaDescription;
use webrtc::sdp::description::session::SessionDescription;

/// Why an SDP blob was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("empty SDP")]
    Empty,
    #[error("SDP too large ({0} bytes, limit {MAX_SDP_BYTES})")]
    TooLarge(usize),
    #[error("SDP does not parse: {0}")]
    Parse(String),
    #[error("SDP has no audio or video media section")]
    NoMedia,
    #[error("media section {index} ({kind}) lacks {what}")]
    Missing { index: usize, kind: String, what: &'static str },
    #[error("audio section offers no Opus codec")]
    NoOpus,
    #[error("video section offers no H.264 codec")]
    NoH264,
}

/// Upper bound for an SDP body we accept (browsers send 5-15 kB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Direction of one media section, seen from the side that wrote the SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn of(md: &MediaDescription) -> Self {
        if md.has_attribute("sendonly") {
            Direction::SendOnly
        } else if md.has_attribute("recvonly") {
            Direction::RecvOnly
        } else if md.has_attribute("inactive") {
            Direction::Inactive
        } else {
            Direction::SendRecv
        }
    }
    /// The writer of the SDP sends media in this section.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    /// The writer of the SDP receives media in this section.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// What a checked SDP asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpSummary {
    /// Direction of the first audio section, if any.
    pub audio: Option<Direction>,
    /// Direction of the first video section, if any.
    pub video: Option<Direction>,
}

/// Parse an offer and check that it can be negotiated by our peer
/// (Opus for audio, H.264 for video).
pub fn check(sdp: &str) -> Result<SdpSummary, SdpError> {
    check_with(sdp, true)
}

/// Parse an answer to our own offer: structure and credentials only, since
/// the codecs were chosen from what we offered (a WHEP server may answer
/// with a video codec we then simply ignore).
pub fn check_answer(sdp: &str) -> Result<SdpSummary, SdpError> {
    check_with(sdp, false)
}

fn check_with(sdp: &str, require_codecs: bool) -> Result<SdpSummary, SdpError> {
    if sdp.trim().is_empty() {
        return Err(SdpError::Empty);
    }
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SdpError::TooLarge(sdp.len()));
    }
    let parsed =
        SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())).map_err(|e| SdpError::Parse(e.to_string()))?;
    let session_ufrag = parsed.attribute("ice-ufrag").is_some();
    let session_pwd = parsed.attribute("ice-pwd").is_some();
    let session_fp = parsed.attribute("fingerprint").is_some();

    let mut summary = SdpSummary { audio: None, video: None };
    for (index, md) in parsed.media_descriptions.iter().enumerate() {
        let kind = md.media_name.media.as_str();
        if kind != "audio" && kind != "video" {
            continue; // application (data channel) sections are allowed but unused
        }
        if md.media_name.port.value == 0 {
            continue; // rejected / stopped section
        }
        let missing = |what| SdpError::Missing { index, kind: kind.to_string(), what };
        if !(session_ufrag || md.attribute("ice-ufrag").is_some())
            || !(session_pwd || md.attribute("ice-pwd").is_some())
        {
            return Err(missing("ICE credentials (a=ice-ufrag / a=ice-pwd)"));
        }
        if !(session_fp || md.attribute("fingerprint").is_some()) {
            return Err(missing("a DTLS fingerprint (a=fingerprint)"));
        }
        if md.attribute("mid").flatten().is_none() {
            return Err(missing("a=mid"));
        }
        let codec = |name: &str| {
            md.attributes.iter().any(|a| {
                a.key == "rtpmap"
                    && a.value
                        .as_deref()
                        .and_then(|v| v.split_whitespace().nth(1))
                        .is_some_and(|enc| enc.to_ascii_lowercase().starts_with(name))
            })
        };
        let dir = Direction::of(md);
        if kind == "audio" && summary.audio.is_none() {
            if require_codecs && !codec("opus/") {
                return Err(SdpError::NoOpus);
            }
            summary.audio = Some(dir);
        } else if kind == "video" && summary.video.is_none() {
            if require_codecs && !codec("h264/") {
                return Err(SdpError::NoH264);
            }
            summary.video = Some(dir);
        }
    }
    if summary.audio.is_none() && summary.video.is_none() {
        return Err(SdpError::NoMedia);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=fingerprint:sha-256 AA:BB\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n\
a=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n\
a=mid:1\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn accepts_browser_like_offer_and_reads_directions() {
        let s = check(OFFER).unwrap();
        assert_eq!(s.audio, Some(Direction::SendRecv));
        assert_eq!(s.video, Some(Direction::RecvOnly));
        assert!(s.video.unwrap().receives() && !s.video.unwrap().sends());
    }

    #[test]
    fn rejects_garbage_empty_and_huge() {
        assert_eq!(check("   "), Err(SdpError::Empty));
        assert!(matches!(check("hello world"), Err(SdpError::Parse(_))));
        assert!(matches!(check(&"x".repeat(MAX_SDP_BYTES + 1)), Err(SdpError::TooLarge(_))));
    }

    #[test]
    fn rejects_offer_without_media_or_codec_or_credentials() {
        let no_media = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        assert_eq!(check(no_media), Err(SdpError::NoMedia));
        assert_eq!(check(&OFFER.replace("opus/48000/2", "PCMU/8000")), Err(SdpError::NoOpus));
        assert_eq!(check(&OFFER.replace("H264/90000", "VP8/90000")), Err(SdpError::NoH264));
        assert!(check_answer(&OFFER.replace("H264/90000", "VP8/90000")).is_ok());
        let no_ice = OFFER.replace("a=ice-ufrag:abcd\r\n", "");
        assert!(matches!(check(&no_ice), Err(SdpError::Missing { what, .. }) if what.contains("ICE")));
        let no_fp = OFFER.replace("a=fingerprint:sha-256 AA:BB\r\n", "");
        assert!(matches!(check(&no_fp), Err(SdpError::Missing { what, .. }) if what.contains("fingerprint")));
    }
}
