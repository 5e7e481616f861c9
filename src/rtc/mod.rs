//! WebRTC transport of the agent: the peer connection with its tracks
//! (`peer`), SDP checks (`sdp`) and the WHIP/WHEP client used by
//! `streamavatar join` (`whip_client`).

pub mod peer;
pub mod sdp;
pub mod whip_client;

pub use peer::{Peer, PeerHandles, PeerOptions, PeerRole, PeerState, RemoteAudioPacket, RtcError};
