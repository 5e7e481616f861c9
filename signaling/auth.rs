//! Session bearer tokens: 256 random bits, hex encoded, compared in
//! constant time. Tokens come from `Authorization: Bearer <token>` or, for
//! browser WebSockets that cannot set headers, a `token` query parameter.
//! Tokens are never logged (the trace layer logs paths without queries).

use axum::http::{header, HeaderMap};
use rand::RngCore;
use subtle::ConstantTimeEq;

/// A session's secret. `Debug` never prints it.
#[derive(Clone)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

impl SessionToken {
    /// 32 bytes from the OS-seeded CSPRNG, as 64 hex characters.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let mut s = String::with_capacity(64);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        // Length is not secret (always 64); ct_eq handles unequal lengths.
        secrets_match(&self.0, presented)
    }
}

/// Constant-time equality of a secret and a presented value (session tokens,
/// API keys): the time taken does not depend on where they differ. Only a
/// length mismatch returns early, and lengths are not secret here.
pub fn secrets_match(secret: &str, presented: &str) -> bool {
    secret.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// Outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCheck {
    Ok,
    /// No token presented (401).
    Missing,
    /// A token was presented but is not this session's (403).
    Wrong,
}

/// The bearer token of a request: header first, then `?token=`.
pub fn presented_token<'a>(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Option<&'a str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, rest) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim());
        }
        return None;
    }
    query_token
}

/// Check a presented token against the session's.
pub fn check(expected: &SessionToken, presented: Option<&str>) -> AuthCheck {
    match presented {
        None => AuthCheck::Missing,
        Some(t) if expected.matches(t) => AuthCheck::Ok,
        Some(_) => AuthCheck::Wrong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_256_bit_hex_and_distinct() {
        let a = SessionToken::generate();
        let b = SessionToken::generate();
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn matching_is_exact() {
        let t = SessionToken::generate();
        assert!(t.matches(t.as_str()));
        assert!(!t.matches(&t.as_str()[..63]));
        assert!(!t.matches(""));
        let mut other = t.as_str().to_string();
        other.replace_range(0..1, if other.starts_with('0') { "1" } else { "0" });
        assert!(!t.matches(&other));
    }

    #[test]
    fn header_wins_over_query_and_scheme_is_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h, Some("q")), Some("q"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented_token(&h, Some("q")), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_token(&h, Some("q")), None);
        let t = SessionToken::generate();
        assert_eq!(check(&t, None), AuthCheck::Missing);
        assert_eq!(check(&t, Some("nope")), AuthCheck::Wrong);
        assert_eq!(check(&t, Some(t.as_str())), AuthCheck::Ok);
    }
}
