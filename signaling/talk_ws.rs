//! `GET /v1/sessions/{id}/talk?rate=24000`: the dialog backend's WebSocket.
//! Binary frames are PCM16LE mono at `rate`, text frames are JSON controls;
//! the server pushes `TalkEvent`s as JSON. One talk socket per session;
//! messages are size-capped and the write buffer is bounded, so one slow or
//! hostile client cannot grow the server's memory.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::registry::{SessionEntry, TalkClaim};
use super::state::AppState;
use super::talk_protocol::{check_rate, close_code, CloseReason, TalkDecoder};
use crate::session::SessionError;

#[derive(Debug, Deserialize)]
pub struct TalkQuery {
    pub token: Option<String>,
    /// Kept as text so a bad value gets a close reason, not a bare 400.
    pub rate: Option<String>,
}

pub async fn talk_upgrade(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TalkQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let entry = state.authorize(&id, &headers, q.token.as_deref())?;
    let claim = entry.claim_talk().ok_or(ApiError::TalkBusy)?;
    let rate = match q.rate.as_deref().map(str::parse::<u32>) {
        None => check_rate(None),
        Some(Ok(r)) => check_rate(Some(r)),
        Some(Err(_)) => Err(CloseReason::new(
            close_code::POLICY,
            format!("rate {:?} is not an integer sample rate", q.rate.as_deref().unwrap_or("")),
        )),
    };
    let max = state.config.max_talk_message_bytes;
    Ok(ws
        // Twice the protocol limit: the decoder sees oversize frames and
        // closes with a clear 1009 instead of a transport error.
        .max_message_size(max * 2)
        .max_frame_size(max * 2)
        .max_write_buffer_size(1 << 20)
        .on_upgrade(move |socket| run_talk(socket, entry, claim, rate, max)))
}

async fn run_talk(
    socket: WebSocket,
    entry: Arc<SessionEntry>,
    claim: TalkClaim,
    rate: Result<u32, CloseReason>,
    max_message_bytes: usize,
) {
    let (mut sink, mut stream) = socket.split();
    let rate = match rate {
        Ok(r) => r,
        Err(reason) => return close(&mut sink, &mut stream, reason).await,
    };
    tracing::info!(session = %entry.id, rate, "talk socket attached");
    let decoder = TalkDecoder { rate, max_message_bytes };
    let mut events = entry.agent.subscribe_events();
    let mut closed = entry.closed_signal();
    let outcome: Option<CloseReason> = loop {
        tokio::select! {
            msg = stream.next() => {
                let command = match msg {
                    None => break None,
                    Some(Err(e)) => {
                        tracing::debug!(session = %entry.id, "talk socket dropped: {e}");
                        break None;
                    }
                    Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(data))) => match decoder.binary(&data) {
                        Ok(Some(cmd)) => cmd,
                        Ok(None) => continue,
                        Err(reason) => break Some(reason),
                    },
                    Some(Ok(Message::Text(text))) => match decoder.text(text.as_str()) {
                        Ok(cmd) => cmd,
                        Err(reason) => break Some(reason),
                    },
                };
                entry.activity.touch();
                if let Err(e) = entry.agent.talk(command) {
                    break Some(session_close_reason(&e));
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    let json = match serde_json::to_string(&event) {
                        Ok(j) => j,
                        Err(e) => break Some(CloseReason::new(close_code::INTERNAL, e.to_string())),
                    };
                    if sink.send(Message::Text(json.into())).await.is_err() {
                        break None;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(session = %entry.id, skipped = n, "talk client too slow for events");
                }
                Err(RecvError::Closed) => {
                    break Some(CloseReason::new(close_code::GOING_AWAY, "session ended"));
                }
            },
            _ = closed.changed() => {
                break Some(CloseReason::new(close_code::GOING_AWAY, "session ended"));
            }
        }
    };
    if let Some(reason) = outcome {
        tracing::info!(session = %entry.id, code = reason.code, reason = %reason.reason, "closing talk socket");
        close(&mut sink, &mut stream, reason).await;
    } else {
        tracing::info!(session = %entry.id, "talk socket detached");
    }
    drop(claim);
}

fn session_close_reason(e: &SessionError) -> CloseReason {
    match e {
        SessionError::BadAudio(m) => CloseReason::new(close_code::INVALID_PAYLOAD, format!("bad talk audio: {m}")),
        SessionError::Closed => CloseReason::new(close_code::GOING_AWAY, "session ended"),
        other => CloseReason::new(close_code::INTERNAL, other.to_string()),
    }
}

/// Send a close frame and give the client a moment to answer it.
pub(crate) async fn close(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: &mut SplitStream<WebSocket>,
    reason: CloseReason,
) {
    let frame = CloseFrame { code: reason.code, reason: reason.reason.into() };
    if sink.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
