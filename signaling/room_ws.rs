//! `GET /v1/rooms/{room}/ws`: one WebSocket per room peer. Reads JSON
//! messages (size-capped), hands them to `RoomHub`, writes the peer's queue
//! out, starts avatar agents on `request_avatar` and answers offers sent to
//! them with the agent. When API keys are configured (`api_key.rs`), only a
//! peer that connected with a key may request an avatar; a wrong key is
//! refused (401) before the upgrade, no key joins as a plain peer.

use std::time::Instant;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};

use super::api_key::KeyCheck;
use super::auth::presented_token;
use super::avatar_image::{decode_base64_image, ImageLimits};
use super::error::ApiError;
use super::metrics::Stage;
use super::registry::SessionOrigin;
use super::rooms::{valid_room_name, ClientMessage, RoomError, Routed, ServerMessage};
use super::sdp_check::check_offer;
use super::state::AppState;
use super::talk_protocol::{close_code, CloseReason};
use super::talk_ws::close;
use crate::session::NEGOTIATION_TIMEOUT;

/// Query of the room WebSocket URL.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RoomQuery {
    /// The API key, for browsers (they cannot set `Authorization` on a
    /// WebSocket); the header wins when both are present.
    pub api_key: Option<String>,
}

/// Refused to peers that joined without the API key while one is required.
const AVATAR_NEEDS_KEY: &str =
    "request_avatar needs the API key: open the room socket with Authorization: Bearer <key> or ?api_key=<key>";

pub async fn room_upgrade(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<RoomQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !valid_room_name(&room) {
        return ApiError::BadRequest(RoomError::BadRoomName.to_string()).into_response();
    }
    let may_request_avatar = match state.config.api_keys.check(presented_token(&headers, query.api_key.as_deref())) {
        KeyCheck::Ok => true,
        KeyCheck::Missing => false,
        KeyCheck::Wrong => return ApiError::WrongApiKey.into_response(),
    };
    let max = state.config.max_room_message_bytes;
    ws.max_message_size(max * 2)
        .max_frame_size(max * 2)
        .max_write_buffer_size(1 << 20)
        .on_upgrade(move |socket| run_peer(socket, state, room, may_request_avatar))
}

async fn run_peer(socket: WebSocket, state: AppState, room: String, may_request_avatar: bool) {
    let (mut sink, mut stream) = socket.split();
    let (peer_id, mut queue) = match state.rooms.join(&room, state.config.room_peer_queue) {
        Ok(joined) => joined,
        Err(e) => {
            let reason = CloseReason::new(close_code::TRY_AGAIN_LATER, e.to_string());
            return close(&mut sink, &mut stream, reason).await;
        }
    };
    tracing::info!(room = %room, peer = %peer_id, "room peer joined");
    let max = state.config.max_room_message_bytes;
    let outcome: Option<CloseReason> = loop {
        tokio::select! {
            out = queue.recv() => match out {
                Some(text) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break None;
                    }
                }
                None => break Some(CloseReason::new(close_code::POLICY, "too slow: message queue overflowed")),
            },
            msg = stream.next() => {
                let text = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        break Some(CloseReason::new(close_code::UNSUPPORTED, "room messages are JSON text"))
                    }
                    Some(Ok(Message::Text(t))) => t,
                };
                if text.len() > max {
                    break Some(CloseReason::new(
                        close_code::TOO_BIG,
                        format!("message of {} bytes exceeds {max} bytes", text.len()),
                    ));
                }
                let value: serde_json::Value = match serde_json::from_str(text.as_str()) {
                    Ok(v) => v,
                    Err(e) => break Some(CloseReason::new(close_code::INVALID_PAYLOAD, format!("invalid JSON: {e}"))),
                };
                let msg: ClientMessage = match serde_json::from_value(value) {
                    Ok(m) => m,
                    Err(e) => {
                        state.rooms.notify(&room, &peer_id, &ServerMessage::Error {
                            message: format!("unsupported message: {e}"),
                        });
                        continue;
                    }
                };
                handle(&state, &room, &peer_id, msg, may_request_avatar);
            }
        }
    };
    if let Some(reason) = outcome {
        close(&mut sink, &mut stream, reason).await;
    }
    for session_id in state.rooms.leave(&room, &peer_id) {
        state.end_session(&session_id, "room avatar's requester left").await;
    }
    tracing::info!(room = %room, peer = %peer_id, "room peer left");
}

/// Route one message; slow work (agent start, SDP answer) runs in tasks so
/// the peer's socket keeps flowing.
fn handle(state: &AppState, room: &str, peer_id: &str, msg: ClientMessage, may_request_avatar: bool) {
    let error = |message: String| {
        state.rooms.notify(room, peer_id, &ServerMessage::Error { message });
    };
    if let ClientMessage::RequestAvatar { avatar, seed, decoder } = msg {
        if !may_request_avatar {
            return error(AVATAR_NEEDS_KEY.to_string());
        }
        if let Err(e) = state.rooms.can_add_avatar(room, peer_id) {
            return error(e.to_string());
        }
        let limits = ImageLimits { max_bytes: state.config.max_image_bytes, max_side: state.config.max_image_side };
        let reference = match avatar.as_deref().map(|a| decode_base64_image(a, limits)).transpose() {
            Ok(r) => r,
            Err(e) => return error(format!("bad avatar image: {e}")),
        };
        let (state, room, peer_id) = (state.clone(), room.to_string(), peer_id.to_string());
        tokio::spawn(async move {
            let origin = SessionOrigin::Room { room: room.clone(), peer_id: peer_id.clone() };
            match state.start_session(reference, seed, decoder, origin).await {
                Err(e) => state.rooms.notify(
                    &room,
                    &peer_id,
                    &ServerMessage::Error { message: format!("cannot start avatar: {e}") },
                ),
                Ok(entry) => {
                    if let Err(e) = state.rooms.add_avatar(&room, &peer_id, &entry.id, entry.token.as_str()) {
                        state.end_session(&entry.id, "room avatar no longer wanted").await;
                        state.rooms.notify(
                            &room,
                            &peer_id,
                            &ServerMessage::Error { message: format!("cannot add avatar: {e}") },
                        );
                    }
                }
            }
        });
        return;
    }
    match state.rooms.route(room, peer_id, msg) {
        Err(e) => error(e.to_string()),
        Ok(Routed::Done) => {}
        Ok(Routed::OfferToAvatar { session_id, avatar_peer, sdp }) => {
            if let Err(e) = check_offer(sdp.as_bytes()) {
                return error(e.to_string());
            }
            let Some(entry) = state.sessions.get(&session_id) else {
                return error(format!("avatar {avatar_peer} has ended"));
            };
            let negotiation = match entry.begin_negotiation() {
                Ok(n) => n,
                Err(e) => return error(e.to_string()),
            };
            let (state, room, peer_id) = (state.clone(), room.to_string(), peer_id.to_string());
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = tokio::time::timeout(NEGOTIATION_TIMEOUT, entry.agent.accept_offer(&sdp)).await;
                match answer {
                    Ok(Ok(answer)) => {
                        state.metrics.observe(Stage::Negotiation, started.elapsed());
                        negotiation.succeed(format!("room-{avatar_peer}"));
                        state.rooms.deliver_answer(&room, &avatar_peer, &peer_id, answer);
                    }
                    Ok(Err(e)) => {
                        drop(negotiation);
                        state.rooms.notify(&room, &peer_id, &ServerMessage::Error { message: e.to_string() });
                    }
                    Err(_) => {
                        drop(negotiation);
                        state.rooms.notify(
                            &room,
                            &peer_id,
                            &ServerMessage::Error {
                                message: format!("avatar negotiation took longer than {NEGOTIATION_TIMEOUT:?}"),
                            },
                        );
                    }
                }
            });
        }
    }
}
