//! ICE servers (STUN and TURN) handed to every peer connection, built from
//! `--ice-server` URLs plus one TURN username/credential pair. URLs are
//! checked with the ICE stack's own parser at startup, so a typo fails the
//! command instead of the first call.

use webrtc::ice::url::{SchemeType, Url};
use webrtc::ice_transport::ice_server::RTCIceServer;

/// One entry of `RTCConfiguration.iceServers`. `Debug` hides the credential.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &if self.credential.is_empty() { "" } else { "<hidden>" })
            .finish()
    }
}

impl IceServer {
    /// The webrtc-rs form.
    pub fn to_rtc(&self) -> RTCIceServer {
        RTCIceServer { urls: self.urls.clone(), username: self.username.clone(), credential: self.credential.clone() }
    }
}

/// Why the ICE server flags were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceConfigError {
    #[error("--ice-server {url:?} is not a STUN/TURN URL ({why}); expected e.g. stun:stun.example.com:3478 or turn:turn.example.com:3478?transport=udp")]
    BadUrl { url: String, why: String },
    #[error("--ice-server {0:?} is a TURN URL: give --ice-username and --ice-credential")]
    TurnWithoutCredentials(String),
    #[error("--ice-username/--ice-credential were given but no turn:/turns: --ice-server uses them")]
    CredentialsWithoutTurn,
}

/// Group `urls` into ICE servers: STUN URLs in one entry without
/// credentials, TURN URLs in one entry with `username`/`credential`.
pub fn ice_servers_from_flags(
    urls: &[String],
    username: Option<&str>,
    credential: Option<&str>,
) -> Result<Vec<IceServer>, IceConfigError> {
    let username = username.unwrap_or("").trim();
    let credential = credential.unwrap_or("");
    let mut stun = IceServer::default();
    let mut turn =
        IceServer { username: username.to_string(), credential: credential.to_string(), ..Default::default() };
    for url in urls.iter().flat_map(|u| u.split(',')).map(str::trim).filter(|u| !u.is_empty()) {
        let parsed =
            Url::parse_url(url).map_err(|e| IceConfigError::BadUrl { url: url.to_string(), why: e.to_string() })?;
        match parsed.scheme {
            SchemeType::Turn | SchemeType::Turns => {
                if username.is_empty() || credential.is_empty() {
                    return Err(IceConfigError::TurnWithoutCredentials(url.to_string()));
                }
                turn.urls.push(url.to_string());
            }
            SchemeType::Stun | SchemeType::Stuns => stun.urls.push(url.to_string()),
            SchemeType::Unknown => {
                return Err(IceConfigError::BadUrl { url: url.to_string(), why: "unknown scheme".into() })
            }
        }
    }
    if turn.urls.is_empty() && (!username.is_empty() || !credential.is_empty()) {
        return Err(IceConfigError::CredentialsWithoutTurn);
    }
    Ok([stun, turn].into_iter().filter(|s| !s.urls.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn stun_and_turn_are_grouped_with_credentials_on_turn_only() {
        let servers = ice_servers_from_flags(
            &s(&["stun:stun.example.com:3478", "turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349"]),
            Some("1700000000:agent"),
            Some("c2VjcmV0"),
        )
        .unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, s(&["stun:stun.example.com:3478"]));
        assert!(servers[0].username.is_empty() && servers[0].credential.is_empty());
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].username, "1700000000:agent");
        assert_eq!(servers[1].to_rtc().credential, "c2VjcmV0");
        assert!(!format!("{:?}", servers[1]).contains("c2VjcmV0"), "credential must not be printed");
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        assert!(ice_servers_from_flags(&[], None, None).unwrap().is_empty());
        assert!(matches!(ice_servers_from_flags(&s(&["http://x"]), None, None), Err(IceConfigError::BadUrl { .. })));
        assert!(matches!(ice_servers_from_flags(&s(&["stun:"]), None, None), Err(IceConfigError::BadUrl { .. })));
        assert_eq!(
            ice_servers_from_flags(&s(&["turn:t.example.com"]), Some("u"), None),
            Err(IceConfigError::TurnWithoutCredentials("turn:t.example.com".into()))
        );
        assert_eq!(
            ice_servers_from_flags(&s(&["stun:s.example.com"]), Some("u"), Some("p")),
            Err(IceConfigError::CredentialsWithoutTurn)
        );
    }
}
