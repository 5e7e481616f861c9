//! `POST /v1/sessions` (JSON, multipart or raw image body; the API key when
//! one is configured),
//! `GET /v1/sessions/{id}` (state and live stats), `DELETE /v1/sessions/{id}`.

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::avatar_image::{decode_base64_image, decode_image, ImageLimits};
use super::error::ApiError;
use super::registry::{SessionOrigin, WhipState};
use super::state::AppState;
use super::TokenQuery;
use crate::generator::DecoderKind;
use crate::media::frame::RgbFrame;
use crate::session::SessionStats;

/// JSON body of `POST /v1/sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionJson {
    /// Avatar image: base64 PNG/JPEG or a `data:image/...;base64,` URL.
    pub avatar: Option<String>,
    /// Noise seed (random when absent).
    pub seed: Option<u64>,
    /// `"full"` or `"light"` decoder (default: the server's `--decoder`).
    pub decoder: Option<DecoderKind>,
}

/// What a create request asks for, whichever body shape carried it.
#[derive(Debug, Default)]
struct CreateRequest {
    avatar: Option<RgbFrame>,
    seed: Option<u64>,
    decoder: Option<DecoderKind>,
}

/// 201 body of `POST /v1/sessions`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedSession {
    pub id: String,
    pub token: String,
    pub whip_url: String,
    pub talk_url: String,
}

/// `GET /v1/sessions/{id}` body.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    pub id: String,
    /// "idle" | "negotiating" | "connected".
    pub whip: &'static str,
    pub closed: bool,
    pub age_s: f64,
    pub stats: SessionStats,
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Read the avatar, seed and decoder from whichever body shape the client chose.
async fn read_create_body(state: &AppState, req: Request) -> Result<CreateRequest, ApiError> {
    let limits = ImageLimits { max_bytes: state.config.max_image_bytes, max_side: state.config.max_image_side };
    let ctype = content_type(req.headers());
    match ctype.as_str() {
        "application/json" => {
            let body = read_bytes(req).await?;
            if body.is_empty() {
                return Ok(CreateRequest::default());
            }
            let json: CreateSessionJson =
                serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
            let avatar = match json.avatar.as_deref() {
                Some(text) => Some(decode_base64_image(text, limits)?),
                None => None,
            };
            Ok(CreateRequest { avatar, seed: json.seed, decoder: json.decoder })
        }
        "multipart/form-data" => {
            let mut multipart = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
            let mut avatar = None;
            let mut seed = None;
            let mut decoder = None;
            while let Some(field) =
                multipart.next_field().await.map_err(|e| multipart_error(e.status(), e.body_text()))?
            {
                match field.name() {
                    Some("image") => {
                        let bytes = field.bytes().await.map_err(|e| multipart_error(e.status(), e.body_text()))?;
                        avatar = Some(decode_image(&bytes, limits)?);
                    }
                    Some("seed") => {
                        let text = field.text().await.map_err(|e| multipart_error(e.status(), e.body_text()))?;
                        seed = Some(
                            text.trim()
                                .parse()
                                .map_err(|_| ApiError::BadRequest(format!("seed {text:?} is not an integer")))?,
                        );
                    }
                    Some("decoder") => {
                        let text = field.text().await.map_err(|e| multipart_error(e.status(), e.body_text()))?;
                        decoder = Some(text.parse::<DecoderKind>().map_err(ApiError::BadRequest)?);
                    }
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "unexpected multipart part {:?} (expected `image`, `seed`, `decoder`)",
                            other.unwrap_or("")
                        )))
                    }
                }
            }
            Ok(CreateRequest { avatar, seed, decoder })
        }
        "image/png" | "image/jpeg" => {
            let body = read_bytes(req).await?;
            Ok(CreateRequest { avatar: Some(decode_image(&body, limits)?), ..Default::default() })
        }
        "" => {
            let body = read_bytes(req).await?;
            if body.is_empty() {
                Ok(CreateRequest::default())
            } else {
                Err(ApiError::UnsupportedMediaType {
                    got: String::new(),
                    expected: "application/json, multipart/form-data, image/png or image/jpeg",
                })
            }
        }
        other => Err(ApiError::UnsupportedMediaType {
            got: other.to_string(),
            expected: "application/json, multipart/form-data, image/png or image/jpeg",
        }),
    }
}

fn multipart_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge
    } else {
        ApiError::BadRequest(format!("invalid multipart body: {text}"))
    }
}

/// Collect a body; a body-limit failure maps to 413.
pub(crate) async fn read_bytes(req: Request) -> Result<bytes::Bytes, ApiError> {
    bytes::Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge
        } else {
            ApiError::BadRequest(format!("cannot read body: {}", rejection.body_text()))
        }
    })
}

pub async fn create_session(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    // Before the body is read: an unauthenticated upload costs nothing.
    state.config.api_keys.check_headers(req.headers()).into_result()?;
    let request = read_create_body(&state, req).await?;
    let entry = state.start_session(request.avatar, request.seed, request.decoder, SessionOrigin::Api).await?;
    let id = entry.id.clone();
    let body = CreatedSession {
        id: id.clone(),
        token: entry.token.as_str().to_string(),
        whip_url: format!("/v1/sessions/{id}/whip"),
        talk_url: format!("/v1/sessions/{id}/talk"),
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/sessions/{id}"))], Json(body)).into_response())
}

pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Json<SessionInfo>, ApiError> {
    let entry = state.authorize(&id, &headers, q.token.as_deref())?;
    let whip = match entry.whip_state() {
        WhipState::Idle => "idle",
        WhipState::Negotiating => "negotiating",
        WhipState::Connected { .. } => "connected",
    };
    Ok(Json(SessionInfo {
        id: entry.id.clone(),
        whip,
        closed: entry.agent.is_closed(),
        age_s: entry.created.elapsed().as_secs_f64(),
        stats: entry.agent.stats(),
    }))
}

pub async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let entry = state.authorize(&id, &headers, q.token.as_deref())?;
    state.end_session(&entry.id, "deleted by client").await;
    Ok(StatusCode::NO_CONTENT)
}
