//! WHIP (RFC 9725) / WHEP client: POST our complete SDP offer to the
//! endpoint (`Content-Type: application/sdp`, optional Bearer token), read
//! the `201 Created` answer and its `Location`, and DELETE that resource
//! when the call ends. Non-trickle: the offer already carries all ICE
//! candidates, so no PATCH is needed.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

/// Errors talking to a WHIP/WHEP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("bad endpoint URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("HTTP request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("endpoint {url} answered {status}: {body}")]
    Status { url: String, status: StatusCode, body: String },
    #[error("endpoint {url} answered without a usable Location header")]
    NoLocation { url: String },
    #[error("endpoint {url} answered with Content-Type `{content_type}` instead of application/sdp")]
    NotSdp { url: String, content_type: String },
}

/// A created WHIP/WHEP session resource.
#[derive(Debug, Clone)]
pub struct WhipResource {
    /// Absolute URL of the session resource (from `Location`).
    pub location: Url,
    /// The endpoint's SDP answer.
    pub answer_sdp: String,
}

/// HTTP client for one WHIP or WHEP endpoint.
#[derive(Debug, Clone)]
pub struct WhipClient {
    http: reqwest::Client,
    endpoint: Url,
    token: Option<String>,
}

impl WhipClient {
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Self, WhipError> {
        let bad = |reason: String| WhipError::BadUrl { url: endpoint.to_string(), reason };
        let endpoint = Url::parse(endpoint).map_err(|e| bad(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(bad(format!("scheme `{}` is not http(s)", endpoint.scheme())));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| WhipError::Http { url: endpoint.to_string(), source: e })?;
        Ok(Self { http, endpoint, token })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// POST the offer; returns the answer and the resource to DELETE later.
    pub async fn publish(&self, offer_sdp: &str) -> Result<WhipResource, WhipError> {
        let url = self.endpoint.to_string();
        let mut req =
            self.http.post(self.endpoint.clone()).header(CONTENT_TYPE, "application/sdp").body(offer_sdp.to_owned());
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = req.send().await.map_err(|source| WhipError::Http { url: url.clone(), source })?;
        let status = resp.status();
        if status != StatusCode::CREATED && status != StatusCode::OK {
            let body = resp.text().await.unwrap_or_default();
            return Err(WhipError::Status { url, status, body: truncate(&body, 300) });
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| self.endpoint.join(loc).ok())
            .ok_or_else(|| WhipError::NoLocation { url: url.clone() })?;
        let content_type =
            resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        if !content_type.starts_with("application/sdp") {
            return Err(WhipError::NotSdp { url, content_type });
        }
        let answer_sdp = resp.text().await.map_err(|source| WhipError::Http { url, source })?;
        Ok(WhipResource { location, answer_sdp })
    }

    /// DELETE the session resource (ends the call on the server side).
    pub async fn delete(&self, resource: &WhipResource) -> Result<(), WhipError> {
        let url = resource.location.to_string();
        let mut req = self.http.delete(resource.location.clone());
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = req.send().await.map_err(|source| WhipError::Http { url: url.clone(), source })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(WhipError::Status { url, status, body: truncate(&body, 300) });
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn rejects_non_http_urls() {
        assert!(matches!(WhipClient::new("ftp://x/whip", None), Err(WhipError::BadUrl { .. })));
        assert!(matches!(WhipClient::new("not a url", None), Err(WhipError::BadUrl { .. })));
    }

    /// A one-shot HTTP/1.1 server on loopback that records each request
    /// and answers with the given raw responses, in order.
    async fn fake_server(responses: Vec<String>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let mut seen = Vec::new();
            for resp in responses {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let n = sock.read(&mut tmp).await.unwrap();
                    buf.extend_from_slice(&tmp[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                seen.push(String::from_utf8_lossy(&buf).to_string());
                sock.write_all(resp.as_bytes()).await.unwrap();
                sock.shutdown().await.ok();
            }
            seen
        });
        (format!("http://{addr}/whip/endpoint"), handle)
    }

    #[tokio::test]
    async fn publish_posts_sdp_with_token_and_deletes_location() {
        let answer = "v=0\r\n";
        let created = format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\nLocation: /whip/resource/42\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let deleted = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string();
        let (url, server) = fake_server(vec![created, deleted]).await;
        let client = WhipClient::new(&url, Some("s3cret".into())).unwrap();
        let res = client.publish("v=0\r\no=offer\r\n").await.unwrap();
        assert_eq!(res.answer_sdp, answer);
        assert_eq!(res.location.path(), "/whip/resource/42");
        client.delete(&res).await.unwrap();
        let seen = server.await.unwrap();
        let post = seen[0].to_ascii_lowercase();
        assert!(post.starts_with("post /whip/endpoint http/1.1"));
        assert!(post.contains("content-type: application/sdp"));
        assert!(post.contains("authorization: bearer s3cret"));
        assert!(post.ends_with("v=0\r\no=offer\r\n"));
        assert!(seen[1].to_ascii_lowercase().starts_with("delete /whip/resource/42 http/1.1"));
    }

    #[tokio::test]
    async fn publish_reports_status_and_missing_location() {
        let unauthorized = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno!".to_string();
        let no_loc =
            "HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string();
        let (url, server) = fake_server(vec![unauthorized, no_loc]).await;
        let client = WhipClient::new(&url, None).unwrap();
        let e = client.publish("v=0\r\n").await.unwrap_err();
        assert!(matches!(e, WhipError::Status { status, .. } if status == StatusCode::UNAUTHORIZED));
        let e = client.publish("v=0\r\n").await.unwrap_err();
        assert!(matches!(e, WhipError::NoLocation { .. }));
        server.await.unwrap();
    }
}
