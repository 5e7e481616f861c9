//! WHIP endpoint (RFC 9725 shape) of a session: `POST` an SDP offer, get
//! `201 Created` with the SDP answer and a `Location` resource; `DELETE` the
//! resource to hang up; `OPTIONS` advertises what is accepted. Trickle ICE
//! (`PATCH`) is not supported (405): offers must carry their candidates.

use std::time::Instant;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::metrics::Stage;
use super::sdp_check::check_offer;
use super::sessions::read_bytes;
use super::state::AppState;
use super::TokenQuery;
use crate::session::{SessionError, NEGOTIATION_TIMEOUT};

const SDP: &str = "application/sdp";

pub async fn post_offer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let entry = state.authorize(&id, req.headers(), q.token.as_deref())?;
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let essence = ctype.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(SDP) {
        return Err(ApiError::UnsupportedMediaType { got: ctype, expected: SDP });
    }
    let body = read_bytes(req).await?;
    let offer = check_offer(&body)?;
    // Dropping `negotiation` on any early return (or if the client goes
    // away and this future is cancelled) puts the session back to idle.
    let negotiation = entry.begin_negotiation()?;
    let started = Instant::now();
    let answer = tokio::time::timeout(NEGOTIATION_TIMEOUT, entry.agent.accept_offer(offer))
        .await
        .map_err(|_| SessionError::Rtc(format!("negotiation took longer than {NEGOTIATION_TIMEOUT:?}")))??;
    state.metrics.observe(Stage::Negotiation, started.elapsed());
    let resource = uuid::Uuid::new_v4().simple().to_string();
    negotiation.succeed(resource.clone());
    tracing::info!(session = %entry.id, ms = started.elapsed().as_millis() as u64, "WHIP offer answered");
    let location = format!("/v1/sessions/{}/whip/{resource}", entry.id);
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(SDP)),
            (header::LOCATION, HeaderValue::try_from(location).map_err(|e| ApiError::BadRequest(e.to_string()))?),
        ],
        answer,
    )
        .into_response())
}

/// `OPTIONS` on the endpoint (non-preflight): what a WHIP client may POST.
pub async fn options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, HeaderValue::from_static("OPTIONS, POST")),
            (header::HeaderName::from_static("accept-post"), HeaderValue::from_static(SDP)),
        ],
    )
        .into_response()
}

/// `DELETE` on the resource: hang up. The session (and its agent) ends.
pub async fn delete_resource(
    State(state): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let entry = state.authorize(&id, &headers, q.token.as_deref())?;
    if !entry.owns_resource(&resource) {
        return Err(ApiError::UnknownResource(resource.chars().take(64).collect()));
    }
    state.end_session(&entry.id, "WHIP resource deleted").await;
    Ok(StatusCode::OK)
}
