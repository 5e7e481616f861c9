//! HTTP error responses: every refusal is a status code plus a JSON body
//! `{"error": "<machine code>", "message": "<what was wrong>"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::agent::AgentStartError;
use super::avatar_image::ImageError;
use super::registry::WhipConflict;
use super::sdp_check::SdpError;
use super::tts::TtsError;
use super::wav_input::WavError;
use crate::session::SessionError;

/// An API failure with its HTTP mapping.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    MissingToken,
    #[error("token does not grant access to this session")]
    WrongToken,
    #[error("creating a session needs an API key (Authorization: Bearer <key>)")]
    MissingApiKey,
    #[error("the API key is not valid")]
    WrongApiKey,
    #[error("unknown session `{0}`")]
    UnknownSession(String),
    #[error("unknown WHIP resource `{0}`")]
    UnknownResource(String),
    #[error("unsupported content type {got:?}: expected {expected}")]
    UnsupportedMediaType { got: String, expected: &'static str },
    #[error("request body is larger than this endpoint accepts")]
    BodyTooLarge,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error("bad avatar image: {0}")]
    Image(#[from] ImageError),
    #[error("bad WAV body: {0}")]
    Wav(#[from] WavError),
    #[error(transparent)]
    Conflict(#[from] WhipConflict),
    #[error("session already has a talk connection")]
    TalkBusy,
    #[error("server is full ({max} sessions); retry in {retry_after_s} s")]
    Full { max: usize, retry_after_s: u64 },
    #[error(
        "server is draining (shutting down): no new sessions; retry in {retry_after_s} s, another instance will answer"
    )]
    Draining { retry_after_s: u64 },
    #[error("too many requests for this session token; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error(transparent)]
    Tts(#[from] TtsError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    AgentStart(#[from] AgentStartError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MissingToken | MissingApiKey | WrongApiKey => StatusCode::UNAUTHORIZED,
            WrongToken => StatusCode::FORBIDDEN,
            UnknownSession(_) | UnknownResource(_) => StatusCode::NOT_FOUND,
            UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BadRequest(_) | Sdp(_) | Wav(_) => StatusCode::BAD_REQUEST,
            Image(ImageError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Image(ImageError::NotAnImage) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Image(_) => StatusCode::BAD_REQUEST,
            Conflict(_) | TalkBusy => StatusCode::CONFLICT,
            Full { .. } | Draining { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Tts(TtsError::NotInstalled(_)) => StatusCode::NOT_IMPLEMENTED,
            Tts(TtsError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            Tts(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Session(SessionError::BadSdp(_)) | Session(SessionError::BadAudio(_)) => StatusCode::BAD_REQUEST,
            Session(SessionError::AlreadyConnected) => StatusCode::CONFLICT,
            Session(SessionError::Closed) => StatusCode::GONE,
            Session(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AgentStart(AgentStartError::Unsupported(_)) => StatusCode::NOT_IMPLEMENTED,
            AgentStart(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            MissingToken => "missing_token",
            WrongToken => "wrong_token",
            MissingApiKey => "missing_api_key",
            WrongApiKey => "wrong_api_key",
            UnknownSession(_) => "unknown_session",
            UnknownResource(_) => "unknown_resource",
            UnsupportedMediaType { .. } => "unsupported_media_type",
            BodyTooLarge => "body_too_large",
            BadRequest(_) => "bad_request",
            Sdp(_) | Session(SessionError::BadSdp(_)) => "malformed_sdp",
            Image(_) => "bad_image",
            Wav(_) => "bad_wav",
            Conflict(_) | Session(SessionError::AlreadyConnected) => "already_connected",
            TalkBusy => "talk_busy",
            Full { .. } => "server_full",
            Draining { .. } => "draining",
            RateLimited { .. } => "rate_limited",
            Tts(TtsError::NotInstalled(_)) => "tts_not_installed",
            Tts(_) => "tts_failed",
            Session(SessionError::Closed) => "session_closed",
            Session(SessionError::BadAudio(_)) => "bad_audio",
            Session(_) => "session_failed",
            AgentStart(AgentStartError::Unsupported(_)) => "agent_unsupported",
            AgentStart(_) => "agent_start_failed",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), "request failed: {self}");
        } else {
            tracing::debug!(code = self.code(), "request refused: {self}");
        }
        let body = Json(serde_json::json!({ "error": self.code(), "message": self.to_string() }));
        let mut resp = (status, body).into_response();
        match &self {
            ApiError::MissingToken | ApiError::MissingApiKey => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::WrongToken | ApiError::WrongApiKey => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            ApiError::Full { retry_after_s, .. }
            | ApiError::Draining { retry_after_s }
            | ApiError::RateLimited { retry_after_s } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            _ => {}
        }
        resp
    }
}
