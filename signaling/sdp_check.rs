//! A syntactic check of SDP offers (RFC 8866 line grammar) before they reach
//! the WebRTC stack, so garbage is refused with a precise 400 instead of a
//! vague negotiation failure. Semantics (codecs, ICE, DTLS) stay with the
//! agent, which reports `SessionError::BadSdp` for what it cannot use.

/// Why an offer is not SDP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP is empty")]
    Empty,
    #[error("SDP must start with `v=0`")]
    NoVersion,
    #[error("SDP line {line}: expected `<letter>=<value>`, got {got:?}")]
    BadLine { line: usize, got: String },
    #[error("SDP has no `{0}=` line")]
    Missing(char),
    #[error("SDP line {line}: malformed media description {got:?} (want `m=<media> <port> <proto> <fmt> ...`)")]
    BadMedia { line: usize, got: String },
}

/// Check the line grammar of an SDP body and return it as text.
pub fn check_offer(body: &[u8]) -> Result<&str, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate().peekable();
    // allow trailing empty line(s) only at the end
    let first = lines.peek().map(|(_, l)| *l).unwrap_or("");
    if text.trim().is_empty() {
        return Err(SdpError::Empty);
    }
    if first != "v=0" {
        return Err(SdpError::NoVersion);
    }
    let (mut has_o, mut has_s, mut has_m) = (false, false, false);
    let all: Vec<(usize, &str)> = lines.collect();
    let last_content = all.iter().rposition(|(_, l)| !l.is_empty()).unwrap_or(0);
    for &(i, line) in &all[..=last_content] {
        let n = i + 1;
        let bytes = line.as_bytes();
        if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
            return Err(SdpError::BadLine { line: n, got: truncate(line) });
        }
        match bytes[0] {
            b'o' => has_o = true,
            b's' => has_s = true,
            b'm' => {
                has_m = true;
                let fields: Vec<&str> = line[2..].split(' ').collect();
                let port_ok = fields.get(1).map(|p| p.split('/').all(|x| x.parse::<u16>().is_ok())).unwrap_or(false);
                if fields.len() < 4 || fields[0].is_empty() || !port_ok || fields[2].is_empty() {
                    return Err(SdpError::BadMedia { line: n, got: truncate(line) });
                }
            }
            _ => {}
        }
    }
    if !has_o {
        return Err(SdpError::Missing('o'));
    }
    if !has_s {
        return Err(SdpError::Missing('s'));
    }
    if !has_m {
        return Err(SdpError::Missing('m'));
    }
    Ok(text)
}

fn truncate(line: &str) -> String {
    line.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn accepts_browser_shaped_offer() {
        assert!(check_offer(OFFER.as_bytes()).is_ok());
        assert!(check_offer(OFFER.replace("\r\n", "\n").as_bytes()).is_ok());
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(check_offer(b""), Err(SdpError::Empty));
        assert_eq!(check_offer(b"hello"), Err(SdpError::NoVersion));
        assert_eq!(check_offer(&[0xff, 0xfe]), Err(SdpError::NotUtf8));
        let e = check_offer(b"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nnot a line\r\n").unwrap_err();
        assert!(matches!(e, SdpError::BadLine { line: 3, .. }), "{e}");
        assert_eq!(check_offer(b"v=0\r\no=x\r\ns=-\r\n"), Err(SdpError::Missing('m')));
        let e = check_offer(b"v=0\r\no=x\r\ns=-\r\nm=audio nine RTP 0\r\n").unwrap_err();
        assert!(matches!(e, SdpError::BadMedia { line: 4, .. }));
    }
}
