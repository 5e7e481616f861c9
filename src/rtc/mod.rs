//! WebRTC transport of the agent: the peer connection with its tracks
//! (`peer`), its STUN/TURN servers (`ice`), SDP checks (`sdp`) and the WHIP/WHEP client used by
//! `streamavatar join` (`whip_client`).

pub mod ice;
pub mod peer;
pub mod sdp;
pub mod whip_client;

pub use ice::{ice_servers_from_flags, IceConfigError, IceServer};
pub use peer::{Peer, PeerHandles, PeerOptions, PeerRole, PeerState, RemoteAudioPacket, RtcError};
