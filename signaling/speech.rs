//! One-shot speech: `POST /v1/sessions/{id}/say` plays a WAV body,
//! `POST /v1/sessions/{id}/speak` synthesizes `{"text": ...}` with espeak-ng
//! and plays it. Both queue the audio as talk PCM followed by `End`, and
//! answer 202 with the duration queued.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::sessions::read_bytes;
use super::state::AppState;
use super::tts::synthesize;
use super::wav_input::{parse_wav, MonoPcm};
use super::TokenQuery;
use crate::session::TalkCommand;

/// `POST /speak` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakRequest {
    pub text: String,
}

/// 202 body of `/say` and `/speak`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Queued {
    pub duration_ms: u64,
    pub sample_rate: u32,
}

/// Queue `pcm` as one utterance, in pieces of at most one second.
fn play(agent: &dyn super::agent::CallAgent, pcm: &MonoPcm) -> Result<(), ApiError> {
    let piece = pcm.sample_rate as usize;
    for samples in pcm.samples.chunks(piece.max(1)) {
        agent.talk(TalkCommand::Pcm { sample_rate: pcm.sample_rate, samples: samples.to_vec() })?;
    }
    agent.talk(TalkCommand::End)?;
    Ok(())
}

fn queued(pcm: &MonoPcm) -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(Queued { duration_ms: pcm.duration_ms(), sample_rate: pcm.sample_rate }))
}

const WAV_TYPES: [&str; 4] = ["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"];

pub async fn say(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<super::TokenQuery>,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let entry = state.authorize(&id, req.headers(), q.token.as_deref())?;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !WAV_TYPES.contains(&ctype.as_str()) {
        return Err(ApiError::UnsupportedMediaType { got: ctype, expected: "audio/wav" });
    }
    let body = read_bytes(req).await?;
    let pcm = parse_wav(&body)?;
    play(entry.agent.as_ref(), &pcm)?;
    Ok(queued(&pcm))
}

pub async fn speak(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let entry = state.authorize(&id, req.headers(), q.token.as_deref())?;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType {
            got: req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
            expected: "application/json",
        });
    }
    let body = read_bytes(req).await?;
    let request: SpeakRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let text = request.text.trim();
    if text.is_empty() {
        return Err(ApiError::BadRequest("`text` is empty".into()));
    }
    let chars = text.chars().count();
    if chars > state.config.max_speak_chars {
        return Err(ApiError::BadRequest(format!(
            "`text` has {chars} characters, the limit is {}",
            state.config.max_speak_chars
        )));
    }
    let pcm = synthesize(&state.config.espeak_binary, text, state.config.tts_timeout).await?;
    play(entry.agent.as_ref(), &pcm)?;
    Ok(queued(&pcm))
}
