//! Room signaling state: named rooms of peers that relay `offer` / `answer`
//! / `candidate` messages to each other, plus avatar peers that the server
//! adds on `request_avatar`. Synchronous and socket-free: each human peer
//! is a bounded queue of outgoing JSON (a peer that lets it fill is dropped
//! as too slow); `room_ws` moves bytes between sockets and these queues, and
//! answers offers addressed to avatars with the avatar's agent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Messages a peer sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Offer {
        to: String,
        sdp: String,
    },
    Answer {
        to: String,
        sdp: String,
    },
    Candidate {
        to: String,
        candidate: serde_json::Value,
    },
    /// Ask the server to add an avatar agent to the room.
    RequestAvatar {
        /// Avatar image, base64 PNG/JPEG or data URL (optional).
        #[serde(default)]
        avatar: Option<String>,
        #[serde(default)]
        seed: Option<u64>,
        /// `"full"` or `"light"` (default: the server's `--decoder`).
        #[serde(default)]
        decoder: Option<crate::generator::DecoderKind>,
    },
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message after joining: your id and who is already here.
    Welcome {
        peer_id: String,
        peers: Vec<PeerInfo>,
    },
    PeerJoined {
        peer_id: String,
        avatar: bool,
    },
    PeerLeft {
        peer_id: String,
    },
    Offer {
        from: String,
        sdp: String,
    },
    Answer {
        from: String,
        sdp: String,
    },
    Candidate {
        from: String,
        candidate: serde_json::Value,
    },
    /// To the requester only: the avatar peer to send an offer to, and the
    /// session credentials to drive it (talk socket, /say, /speak).
    AvatarReady {
        peer_id: String,
        session_id: String,
        token: String,
    },
    /// A non-fatal problem with the last message.
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub avatar: bool,
}

/// Refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room name must be 1..=64 characters of A-Z a-z 0-9 _ - .")]
    BadRoomName,
    #[error("room is full ({0} peers)")]
    RoomFull(usize),
    #[error("server is at its limit of {0} room peers (all rooms)")]
    ServerFull(usize),
    #[error("no peer `{0}` in this room")]
    UnknownPeer(String),
    #[error("you are not in this room")]
    NotJoined,
    #[error("the avatar only answers offers; it does not take `{0}`")]
    AvatarIsAnswerer(&'static str),
    #[error("you already have an avatar in this room")]
    AvatarAlreadyRequested,
}

/// What the shell must do after `route`.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// Delivered (or deliberately ignored); nothing else to do.
    Done,
    /// An offer for an avatar: answer it with that session's agent and
    /// deliver the answer with [`RoomHub::deliver_answer`].
    OfferToAvatar { session_id: String, avatar_peer: String, sdp: String },
}

enum Peer {
    Human { tx: mpsc::Sender<String> },
    Avatar { session_id: String, requested_by: String },
}

#[derive(Default)]
struct Room {
    peers: BTreeMap<String, Peer>,
}

/// All rooms.
pub struct RoomHub {
    rooms: Mutex<HashMap<String, Room>>,
    max_peers: usize,
    /// Room sockets across all rooms: bounds the server's room state.
    max_total_peers: usize,
    next_peer: AtomicU64,
}

/// Room names: 1..=64 characters of `A-Z a-z 0-9 _ - .`.
pub fn valid_room_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn json(msg: &ServerMessage) -> String {
    // ServerMessage holds only strings and JSON values: serializing cannot fail.
    serde_json::to_string(msg).unwrap_or_else(|_| r#"{"type":"error","message":"internal"}"#.into())
}

impl RoomHub {
    pub fn new(max_peers: usize) -> Self {
        Self::with_total_limit(max_peers, usize::MAX)
    }

    /// At most `max_peers` per room and `max_total_peers` in all rooms.
    pub fn with_total_limit(max_peers: usize, max_total_peers: usize) -> Self {
        Self { rooms: Mutex::new(HashMap::new()), max_peers, max_total_peers, next_peer: AtomicU64::new(1) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_peer_id(&self) -> String {
        format!("peer-{}", self.next_peer.fetch_add(1, Ordering::Relaxed))
    }

    /// Join `room` with an outgoing queue of `queue` messages. The new
    /// peer's first queued message is `welcome`; the others get `peer_joined`.
    pub fn join(&self, room: &str, queue: usize) -> Result<(String, mpsc::Receiver<String>), RoomError> {
        if !valid_room_name(room) {
            return Err(RoomError::BadRoomName);
        }
        let mut rooms = self.lock();
        if rooms.values().map(|r| r.peers.len()).sum::<usize>() >= self.max_total_peers {
            return Err(RoomError::ServerFull(self.max_total_peers));
        }
        let r = rooms.entry(room.to_string()).or_default();
        if r.peers.len() >= self.max_peers {
            return Err(RoomError::RoomFull(self.max_peers));
        }
        let peer_id = self.new_peer_id();
        let (tx, rx) = mpsc::channel(queue.max(2));
        let peers = r
            .peers
            .iter()
            .map(|(id, p)| PeerInfo { peer_id: id.clone(), avatar: matches!(p, Peer::Avatar { .. }) })
            .collect();
        // A fresh queue has room for the welcome.
        let _ = tx.try_send(json(&ServerMessage::Welcome { peer_id: peer_id.clone(), peers }));
        let joined = ServerMessage::PeerJoined { peer_id: peer_id.clone(), avatar: false };
        r.peers.insert(peer_id.clone(), Peer::Human { tx });
        broadcast(r, &peer_id, &joined);
        Ok((peer_id, rx))
    }

    /// Route one message from `from`.
    pub fn route(&self, room: &str, from: &str, msg: ClientMessage) -> Result<Routed, RoomError> {
        let mut rooms = self.lock();
        let r = rooms.get_mut(room).ok_or(RoomError::NotJoined)?;
        if !r.peers.contains_key(from) {
            return Err(RoomError::NotJoined);
        }
        let (to, out, kind) = match msg {
            ClientMessage::Offer { to, sdp } => {
                let out = ServerMessage::Offer { from: from.into(), sdp: sdp.clone() };
                if let Some(Peer::Avatar { session_id, .. }) = r.peers.get(&to) {
                    return Ok(Routed::OfferToAvatar { session_id: session_id.clone(), avatar_peer: to, sdp });
                }
                (to, out, "offer")
            }
            ClientMessage::Answer { to, sdp } => (to, ServerMessage::Answer { from: from.into(), sdp }, "answer"),
            ClientMessage::Candidate { to, candidate } => {
                (to, ServerMessage::Candidate { from: from.into(), candidate }, "candidate")
            }
            ClientMessage::RequestAvatar { .. } => return Ok(Routed::Done),
        };
        match r.peers.get(&to) {
            None => Err(RoomError::UnknownPeer(to.chars().take(64).collect())),
            // Avatars gather ICE before answering (no trickle): their
            // candidates are in the answer, and incoming ones must be in the
            // offer. Late candidates are dropped on purpose.
            Some(Peer::Avatar { .. }) if kind == "candidate" => Ok(Routed::Done),
            Some(Peer::Avatar { .. }) => Err(RoomError::AvatarIsAnswerer(kind)),
            Some(Peer::Human { tx }) => {
                if tx.try_send(json(&out)).is_err() {
                    drop_slow_peer(r, &to);
                }
                Ok(Routed::Done)
            }
        }
    }

    /// Whether `requester` may add an avatar now (room space, one each).
    pub fn can_add_avatar(&self, room: &str, requester: &str) -> Result<(), RoomError> {
        let rooms = self.lock();
        let r = rooms.get(room).ok_or(RoomError::NotJoined)?;
        if !r.peers.contains_key(requester) {
            return Err(RoomError::NotJoined);
        }
        if r.peers.values().any(|p| matches!(p, Peer::Avatar { requested_by, .. } if requested_by == requester)) {
            return Err(RoomError::AvatarAlreadyRequested);
        }
        if r.peers.len() >= self.max_peers {
            return Err(RoomError::RoomFull(self.max_peers));
        }
        Ok(())
    }

    /// Add a started avatar session as a peer. On error the caller ends
    /// the session (the requester left or the room filled meanwhile).
    pub fn add_avatar(&self, room: &str, requester: &str, session_id: &str, token: &str) -> Result<String, RoomError> {
        self.can_add_avatar(room, requester)?;
        let mut rooms = self.lock();
        let r = rooms.get_mut(room).ok_or(RoomError::NotJoined)?;
        let peer_id = self.new_peer_id();
        r.peers.insert(
            peer_id.clone(),
            Peer::Avatar { session_id: session_id.to_string(), requested_by: requester.to_string() },
        );
        broadcast(r, &peer_id, &ServerMessage::PeerJoined { peer_id: peer_id.clone(), avatar: true });
        let ready = ServerMessage::AvatarReady {
            peer_id: peer_id.clone(),
            session_id: session_id.to_string(),
            token: token.to_string(),
        };
        send(r, requester, &ready);
        Ok(peer_id)
    }

    /// Deliver an avatar's SDP answer to the peer that offered.
    pub fn deliver_answer(&self, room: &str, avatar_peer: &str, to: &str, sdp: String) {
        let mut rooms = self.lock();
        if let Some(r) = rooms.get_mut(room) {
            send(r, to, &ServerMessage::Answer { from: avatar_peer.to_string(), sdp });
        }
    }

    /// Queue a message to one peer (errors, notices).
    pub fn notify(&self, room: &str, to: &str, msg: &ServerMessage) {
        let mut rooms = self.lock();
        if let Some(r) = rooms.get_mut(room) {
            send(r, to, msg);
        }
    }

    /// A peer leaves (socket closed). Returns the avatar sessions that must
    /// end: those it requested, and every avatar once no human is left.
    pub fn leave(&self, room: &str, peer: &str) -> Vec<String> {
        let mut rooms = self.lock();
        let Some(r) = rooms.get_mut(room) else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        if r.peers.remove(peer).is_some() {
            broadcast(r, peer, &ServerMessage::PeerLeft { peer_id: peer.to_string() });
        }
        let no_humans = !r.peers.values().any(|p| matches!(p, Peer::Human { .. }));
        let avatars: Vec<String> = r
            .peers
            .iter()
            .filter(|(_, p)| matches!(p, Peer::Avatar { requested_by, .. } if no_humans || requested_by == peer))
            .map(|(id, _)| id.clone())
            .collect();
        for id in avatars {
            if let Some(Peer::Avatar { session_id, .. }) = r.peers.remove(&id) {
                ended.push(session_id);
                broadcast(r, &id, &ServerMessage::PeerLeft { peer_id: id.clone() });
            }
        }
        if r.peers.is_empty() {
            rooms.remove(room);
        }
        ended
    }

    /// An avatar's session ended on its own: remove its peer.
    pub fn remove_avatar_session(&self, session_id: &str) {
        let mut rooms = self.lock();
        for r in rooms.values_mut() {
            let ids: Vec<String> = r
                .peers
                .iter()
                .filter(|(_, p)| matches!(p, Peer::Avatar { session_id: s, .. } if s == session_id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                r.peers.remove(&id);
                broadcast(r, &id, &ServerMessage::PeerLeft { peer_id: id.clone() });
            }
        }
        rooms.retain(|_, r| !r.peers.is_empty());
    }

    /// Peers in a room (for tests and diagnostics).
    pub fn peer_count(&self, room: &str) -> usize {
        self.lock().get(room).map(|r| r.peers.len()).unwrap_or(0)
    }
}

fn send(r: &mut Room, to: &str, msg: &ServerMessage) {
    if let Some(Peer::Human { tx }) = r.peers.get(to) {
        if tx.try_send(json(msg)).is_err() {
            drop_slow_peer(r, to);
        }
    }
}

/// Queue `msg` to every human except `except`; drop those whose queue is full.
fn broadcast(r: &mut Room, except: &str, msg: &ServerMessage) {
    let text = json(msg);
    let mut slow = Vec::new();
    for (id, p) in &r.peers {
        if let Peer::Human { tx } = p {
            if id != except && tx.try_send(text.clone()).is_err() {
                slow.push(id.clone());
            }
        }
    }
    for id in slow {
        drop_slow_peer(r, &id);
    }
}

/// Removing the peer drops its queue sender: its socket task sees the end
/// of the queue and closes the socket ("too slow"), then calls `leave`.
fn drop_slow_peer(r: &mut Room, id: &str) {
    r.peers.remove(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(rx: &mut mpsc::Receiver<String>) -> ServerMessage {
        serde_json::from_str(&rx.try_recv().expect("a queued message")).unwrap()
    }

    #[test]
    fn join_welcome_and_relay() {
        let hub = RoomHub::new(3);
        let (a, mut ra) = hub.join("r1", 8).unwrap();
        assert_eq!(recv(&mut ra), ServerMessage::Welcome { peer_id: a.clone(), peers: vec![] });
        let (b, mut rb) = hub.join("r1", 8).unwrap();
        match recv(&mut rb) {
            ServerMessage::Welcome { peers, .. } => assert_eq!(peers[0].peer_id, a),
            m => panic!("{m:?}"),
        }
        assert_eq!(recv(&mut ra), ServerMessage::PeerJoined { peer_id: b.clone(), avatar: false });
        let r = hub.route("r1", &a, ClientMessage::Offer { to: b.clone(), sdp: "v=0".into() }).unwrap();
        assert_eq!(r, Routed::Done);
        assert_eq!(recv(&mut rb), ServerMessage::Offer { from: a.clone(), sdp: "v=0".into() });
        let e = hub.route("r1", &a, ClientMessage::Answer { to: "peer-999".into(), sdp: String::new() });
        assert_eq!(e, Err(RoomError::UnknownPeer("peer-999".into())));
        hub.leave("r1", &b);
        assert_eq!(recv(&mut ra), ServerMessage::PeerLeft { peer_id: b });
    }

    #[test]
    fn limits_and_names() {
        let hub = RoomHub::new(1);
        assert_eq!(hub.join("bad name!", 4).err(), Some(RoomError::BadRoomName));
        assert_eq!(hub.join("", 4).err(), Some(RoomError::BadRoomName));
        let (_a, _ra) = hub.join("x", 4).unwrap();
        assert_eq!(hub.join("x", 4).err(), Some(RoomError::RoomFull(1)));
    }

    #[test]
    fn avatar_answers_offers_and_leaves_with_requester() {
        let hub = RoomHub::new(4);
        let (a, mut ra) = hub.join("r", 8).unwrap();
        let _ = recv(&mut ra);
        hub.can_add_avatar("r", &a).unwrap();
        let av = hub.add_avatar("r", &a, "sess1", "tok").unwrap();
        assert_eq!(recv(&mut ra), ServerMessage::PeerJoined { peer_id: av.clone(), avatar: true });
        assert_eq!(
            recv(&mut ra),
            ServerMessage::AvatarReady { peer_id: av.clone(), session_id: "sess1".into(), token: "tok".into() }
        );
        assert_eq!(hub.can_add_avatar("r", &a), Err(RoomError::AvatarAlreadyRequested));
        let routed = hub.route("r", &a, ClientMessage::Offer { to: av.clone(), sdp: "o".into() }).unwrap();
        assert_eq!(
            routed,
            Routed::OfferToAvatar { session_id: "sess1".into(), avatar_peer: av.clone(), sdp: "o".into() }
        );
        let cand = ClientMessage::Candidate { to: av.clone(), candidate: serde_json::json!({}) };
        assert_eq!(hub.route("r", &a, cand), Ok(Routed::Done));
        let ans = ClientMessage::Answer { to: av.clone(), sdp: String::new() };
        assert_eq!(hub.route("r", &a, ans), Err(RoomError::AvatarIsAnswerer("answer")));
        hub.deliver_answer("r", &av, &a, "ans".into());
        assert_eq!(recv(&mut ra), ServerMessage::Answer { from: av, sdp: "ans".into() });
        assert_eq!(hub.leave("r", &a), vec!["sess1".to_string()]);
        assert_eq!(hub.peer_count("r"), 0);
    }

    #[test]
    fn slow_peer_is_dropped_not_buffered() {
        let hub = RoomHub::new(4);
        let (a, _ra) = hub.join("r", 2).unwrap(); // never read
        let (b, _rb) = hub.join("r", 8).unwrap();
        for _ in 0..4 {
            let _ = hub.route("r", &b, ClientMessage::Candidate { to: a.clone(), candidate: serde_json::json!(1) });
        }
        assert_eq!(hub.peer_count("r"), 1);
    }

    #[test]
    fn total_room_peers_are_bounded_across_rooms() {
        let hub = RoomHub::with_total_limit(4, 3);
        let _a = hub.join("a", 4).unwrap();
        let _b = hub.join("b", 4).unwrap();
        let (c, _rc) = hub.join("c", 4).unwrap();
        assert_eq!(hub.join("d", 4).err(), Some(RoomError::ServerFull(3)));
        assert_eq!(hub.peer_count("d"), 0, "a refused join leaves no room behind");
        hub.leave("c", &c);
        assert!(hub.join("d", 4).is_ok());
    }
}
