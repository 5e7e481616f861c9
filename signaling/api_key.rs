//! The API key that guards the creation of call agents (`serve --api-key`,
//! env `STREAMAVATAR_API_KEY`). When keys are configured, every request that
//! starts an agent must present one of them: `POST /v1/sessions` as
//! `Authorization: Bearer <key>`, a room peer's `request_avatar` on a room
//! WebSocket opened with that header or, for browsers that cannot set
//! headers on WebSockets, `?api_key=<key>`. Session-scoped requests keep
//! using their session token; `/healthz`, `/readyz` and `/metrics` need no
//! key (see docs/API.md, "Authentication").
//!
//! Several keys may be active at once so that a key can be rotated without
//! downtime (add the new one, move the clients, drop the old one). Keys are
//! compared in constant time ([`auth::secrets_match`]) against every
//! configured key, and never logged: `Debug` prints only how many there are.
//! With no key configured, agent creation is open as before.

use super::auth::{self, secrets_match};
use super::error::ApiError;

/// Shortest accepted key; `openssl rand -hex 32` gives 64 characters.
pub const MIN_KEY_LEN: usize = 16;

/// The configured keys (empty = no key required).
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<String>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.0.len())
    }
}

/// A configured key that cannot be used. Names the key by position only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("API key #{index} is empty (keys are separated by commas)")]
    Empty { index: usize },
    #[error("API key #{index} has {len} characters; use at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)")]
    TooShort { index: usize, len: usize },
    #[error("API key #{index} has characters other than visible ASCII (it must fit an Authorization header)")]
    BadCharacters { index: usize },
}

/// Outcome of checking a request against the configured keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No key is configured, or the presented key is one of them.
    Ok,
    /// Keys are configured and the request presented none.
    Missing,
    /// The presented key is not one of the configured keys.
    Wrong,
}

impl KeyCheck {
    /// The refusal of a request that failed the check (401 either way).
    pub fn into_result(self) -> Result<(), ApiError> {
        match self {
            KeyCheck::Ok => Ok(()),
            KeyCheck::Missing => Err(ApiError::MissingApiKey),
            KeyCheck::Wrong => Err(ApiError::WrongApiKey),
        }
    }
}

impl ApiKeys {
    /// Keys from `--api-key` values (each may hold several, comma-separated;
    /// spaces around a key are ignored). No values = no key required.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, ApiKeyError> {
        let mut keys = Vec::new();
        for piece in values.iter().flat_map(|v| v.as_ref().split(',')) {
            let index = keys.len() + 1;
            let key = piece.trim();
            if key.is_empty() {
                return Err(ApiKeyError::Empty { index });
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiKeyError::BadCharacters { index });
            }
            if key.len() < MIN_KEY_LEN {
                return Err(ApiKeyError::TooShort { index, len: key.len() });
            }
            keys.push(key.to_string());
        }
        Ok(Self(keys))
    }

    /// Whether agent creation needs a key.
    pub fn is_required(&self) -> bool {
        !self.0.is_empty()
    }

    /// How many keys are active.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Check a presented key. Every configured key is compared (no early
    /// exit), so the time taken does not tell which key came close.
    pub fn check(&self, presented: Option<&str>) -> KeyCheck {
        if self.0.is_empty() {
            return KeyCheck::Ok;
        }
        let Some(presented) = presented else { return KeyCheck::Missing };
        let matched = self.0.iter().fold(false, |any, key| any | secrets_match(key, presented));
        if matched {
            KeyCheck::Ok
        } else {
            KeyCheck::Wrong
        }
    }

    /// Check a plain HTTP request: the key is its `Authorization: Bearer`.
    pub fn check_headers(&self, headers: &axum::http::HeaderMap) -> KeyCheck {
        self.check(auth::presented_token(headers, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    const A: &str = "key-a-0123456789abcdef";
    const B: &str = "key-b-fedcba9876543210";

    #[test]
    fn no_keys_means_open() {
        let keys = ApiKeys::parse::<&str>(&[]).unwrap();
        assert!(!keys.is_required());
        assert_eq!(keys.check(None), KeyCheck::Ok);
        assert_eq!(keys.check(Some("anything")), KeyCheck::Ok);
    }

    #[test]
    fn repeated_and_comma_separated_keys_all_work() {
        let keys = ApiKeys::parse(&[format!("{A}, {B}"), "key-c-aaaaaaaaaaaaaaaa".to_string()]).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.check(Some(A)), KeyCheck::Ok);
        assert_eq!(keys.check(Some(B)), KeyCheck::Ok);
        assert_eq!(keys.check(Some("key-c-aaaaaaaaaaaaaaaa")), KeyCheck::Ok);
        assert_eq!(keys.check(None), KeyCheck::Missing);
        assert_eq!(keys.check(Some("")), KeyCheck::Wrong);
        assert_eq!(keys.check(Some(&A[..A.len() - 1])), KeyCheck::Wrong);
        assert_eq!(keys.check(Some(&format!("{A},{B}"))), KeyCheck::Wrong);
    }

    #[test]
    fn unusable_keys_are_refused_by_position_without_echoing_them() {
        assert_eq!(ApiKeys::parse(&[format!("{A},,{B}")]).unwrap_err(), ApiKeyError::Empty { index: 2 });
        assert_eq!(ApiKeys::parse(&["short"]).unwrap_err(), ApiKeyError::TooShort { index: 1, len: 5 });
        let err = ApiKeys::parse(&[format!("{A},with space 0123456789")]).unwrap_err();
        assert_eq!(err, ApiKeyError::BadCharacters { index: 2 });
        assert!(!err.to_string().contains("0123456789"));
        assert!(ApiKeys::parse(&["ключ-0123456789abcdef"]).is_err());
    }

    #[test]
    fn debug_never_prints_a_key() {
        let keys = ApiKeys::parse(&[A, B]).unwrap();
        let shown = format!("{keys:?}");
        assert_eq!(shown, "ApiKeys(2 configured)");
    }

    #[test]
    fn keys_come_from_the_bearer_header_only() {
        let keys = ApiKeys::parse(&[A]).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(keys.check_headers(&h), KeyCheck::Missing);
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {A}")).unwrap());
        assert_eq!(keys.check_headers(&h), KeyCheck::Ok);
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {A}")).unwrap());
        assert_eq!(keys.check_headers(&h), KeyCheck::Missing);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert_eq!(keys.check_headers(&h), KeyCheck::Wrong);
    }
}
