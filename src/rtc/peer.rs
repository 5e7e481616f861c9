//! The agent's WebRTC peer (webrtc-rs 0.14): one `RTCPeerConnection` with
//! an outgoing H.264 video track (packetization-mode=1, 42e01f) and an
//! outgoing Opus audio track, plus the remote's audio coming in.
//!
//! The peer only moves bytes: it hands incoming Opus payloads to a bounded
//! channel (dropping when the consumer lags, never blocking the RTP read
//! loop), raises a keyframe flag on PLI/FIR from the remote, and publishes
//! its connection state on a `watch`. Decoding, pacing and encoding live in
//! `session`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::goodbye::Goodbye;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_remote::TrackRemote;

use super::ice::IceServer;
use super::sdp::{self, SdpError};

/// H.264 constrained baseline 3.1, packetization mode 1 (what browsers decode).
pub const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// Opus as browsers negotiate it.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
/// How many incoming Opus packets (20 ms each) may wait for the consumer.
pub const REMOTE_AUDIO_QUEUE: usize = 50;

/// Errors of the WebRTC layer.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error("remote description rejected: {0}")]
    RemoteDescription(String),
    #[error("the remote offer has no media section we can answer")]
    NothingToAnswer,
    #[error("ICE gathering did not finish within {0:?}")]
    GatheringTimeout(Duration),
    #[error("peer connection is closed")]
    Closed,
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::Error),
}

/// ICE reports `disconnected` after this long without connectivity checks.
pub const ICE_DISCONNECTED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// ... and `failed` (the call ends) after this much more.
pub const ICE_FAILED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Keep-alive interval of the ICE agent (webrtc-rs default).
const ICE_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Coarse connection state the session reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// Created or negotiating; no media flows yet.
    Connecting,
    /// DTLS up, media can flow.
    Connected,
    /// Failed or closed: the call is over. `disconnected` is not an end:
    /// like browsers, the agent keeps the call while ICE tries to recover
    /// (a consent check lost under load or a network switch); ICE moves to
    /// `failed` after [`ICE_FAILED_TIMEOUT`] without connectivity, which ends it.
    Ended(String),
}

/// What media this peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The avatar: sends H.264 + Opus, receives the remote's audio.
    Agent,
    /// A WHEP subscriber: receives audio (and ignores video), sends nothing.
    Listener,
}

/// Network settings of a peer.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    pub role: PeerRole,
    /// STUN/TURN servers; empty for host candidates only.
    pub ice_servers: Vec<IceServer>,
    /// Offer loopback candidates too (tests on one machine).
    pub include_loopback: bool,
    /// How long to wait for ICE gathering before giving up.
    pub gathering_timeout: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            role: PeerRole::Agent,
            ice_servers: Vec::new(),
            include_loopback: true,
            gathering_timeout: Duration::from_secs(5),
        }
    }
}

/// One incoming Opus packet from the remote peer.
#[derive(Debug, Clone)]
pub struct RemoteAudioPacket {
    pub payload: Bytes,
    pub rtp_timestamp: u32,
    pub sequence: u16,
}

/// The receiving ends a peer hands to its owner.
pub struct PeerHandles {
    pub state: watch::Receiver<PeerState>,
    pub remote_audio: mpsc::Receiver<RemoteAudioPacket>,
}

struct Inner {
    pc: Arc<RTCPeerConnection>,
    /// Our RTP senders (agent role), for the RTCP BYE on hang-up.
    senders: Vec<Arc<RTCRtpSender>>,
    video: Option<Arc<TrackLocalStaticSample>>,
    audio: Option<Arc<TrackLocalStaticSample>>,
    keyframe_requested: Arc<AtomicBool>,
    keyframe_requests: Arc<AtomicU64>,
    gathering_timeout: Duration,
}

/// A WebRTC peer connection with our tracks attached. Cheap to clone.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl Peer {
    /// Build the peer connection, attach the tracks of `opts.role` and the
    /// handlers. Must run inside a tokio runtime.
    pub async fn new(opts: PeerOptions) -> Result<(Peer, PeerHandles), RtcError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let mut settings = SettingEngine::default();
        settings.set_include_loopback_candidate(opts.include_loopback);
        settings.set_ice_timeouts(
            Some(ICE_DISCONNECTED_TIMEOUT),
            Some(ICE_FAILED_TIMEOUT),
            Some(ICE_KEEPALIVE_INTERVAL),
        );
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        let config = RTCConfiguration {
            ice_servers: opts.ice_servers.iter().map(IceServer::to_rtc).collect(),
            ..Default::default()
        };
        let pc = Arc::new(api.new_peer_connection(config).await?);

        let keyframe_requested = Arc::new(AtomicBool::new(false));
        let keyframe_requests = Arc::new(AtomicU64::new(0));
        let mut senders = Vec::new();
        let (video, audio) = match opts.role {
            PeerRole::Agent => {
                let video = Arc::new(TrackLocalStaticSample::new(
                    RTCRtpCodecCapability {
                        mime_type: MIME_TYPE_H264.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: H264_FMTP.to_owned(),
                        rtcp_feedback: vec![],
                    },
                    "avatar-video".to_owned(),
                    "streamavatar".to_owned(),
                ));
                let audio = Arc::new(TrackLocalStaticSample::new(
                    RTCRtpCodecCapability {
                        mime_type: MIME_TYPE_OPUS.to_owned(),
                        clock_rate: 48_000,
                        channels: 2,
                        sdp_fmtp_line: OPUS_FMTP.to_owned(),
                        rtcp_feedback: vec![],
                    },
                    "avatar-audio".to_owned(),
                    "streamavatar".to_owned(),
                ));
                let video_sender = pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal + Send + Sync>).await?;
                let audio_sender = pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal + Send + Sync>).await?;
                senders.push(video_sender.clone());
                senders.push(audio_sender.clone());
                spawn_rtcp_reader(video_sender, Some((keyframe_requested.clone(), keyframe_requests.clone())));
                spawn_rtcp_reader(audio_sender, None);
                (Some(video), Some(audio))
            }
            PeerRole::Listener => {
                let init = |d| Some(RTCRtpTransceiverInit { direction: d, send_encodings: vec![] });
                pc.add_transceiver_from_kind(RTPCodecType::Audio, init(RTCRtpTransceiverDirection::Recvonly)).await?;
                pc.add_transceiver_from_kind(RTPCodecType::Video, init(RTCRtpTransceiverDirection::Recvonly)).await?;
                (None, None)
            }
        };

        let (state_tx, state_rx) = watch::channel(PeerState::Connecting);
        let state_tx = Arc::new(state_tx);
        pc.on_peer_connection_state_change(Box::new(move |s: RTCPeerConnectionState| {
            let next = match s {
                RTCPeerConnectionState::Connected => Some(PeerState::Connected),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    Some(PeerState::Ended(s.to_string()))
                }
                RTCPeerConnectionState::Disconnected => {
                    tracing::warn!("peer connection interrupted; waiting for ICE to recover or fail");
                    None
                }
                _ => None,
            };
            if let Some(next) = next {
                tracing::info!(state = %s, "peer connection state");
                state_tx.send_if_modified(|cur| {
                    // Once ended, stay ended.
                    if matches!(cur, PeerState::Ended(_)) || *cur == next {
                        false
                    } else {
                        *cur = next;
                        true
                    }
                });
            }
            Box::pin(async {})
        }));

        let (audio_tx, audio_rx) = mpsc::channel(REMOTE_AUDIO_QUEUE);
        pc.on_track(Box::new(move |track: Arc<TrackRemote>, _receiver, _transceiver| {
            let audio_tx = audio_tx.clone();
            Box::pin(async move {
                if track.kind() == RTPCodecType::Audio
                    && track.codec().capability.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS)
                {
                    tokio::spawn(read_remote_audio(track, audio_tx));
                } else {
                    // Drain anything else so the interceptors keep working.
                    tokio::spawn(async move { while track.read_rtp().await.is_ok() {} });
                }
            })
        }));

        let peer = Peer {
            inner: Arc::new(Inner {
                pc,
                senders,
                video,
                audio,
                keyframe_requested,
                keyframe_requests,
                gathering_timeout: opts.gathering_timeout,
            }),
        };
        Ok((peer, PeerHandles { state: state_rx, remote_audio: audio_rx }))
    }

    /// Answerer side: apply a remote offer, return our complete answer
    /// (non-trickle: all ICE candidates included).
    pub async fn answer(&self, offer_sdp: &str) -> Result<String, RtcError> {
        let summary = sdp::check(offer_sdp)?;
        if self.inner.video.is_some()
            && !summary.audio.is_some_and(|d| d.receives())
            && !summary.video.is_some_and(|d| d.receives())
        {
            return Err(RtcError::NothingToAnswer);
        }
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| RtcError::RemoteDescription(e.to_string()))?;
        self.inner.pc.set_remote_description(offer).await.map_err(|e| RtcError::RemoteDescription(e.to_string()))?;
        let answer = self.inner.pc.create_answer(None).await?;
        self.set_local_and_gather(answer).await
    }

    /// Offerer side (WHIP/WHEP client): our complete offer.
    pub async fn offer(&self) -> Result<String, RtcError> {
        let offer = self.inner.pc.create_offer(None).await?;
        self.set_local_and_gather(offer).await
    }

    /// Offerer side: apply the remote answer.
    pub async fn accept_answer(&self, answer_sdp: &str) -> Result<(), RtcError> {
        sdp::check_answer(answer_sdp)?;
        let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
            .map_err(|e| RtcError::RemoteDescription(e.to_string()))?;
        self.inner.pc.set_remote_description(answer).await.map_err(|e| RtcError::RemoteDescription(e.to_string()))
    }

    async fn set_local_and_gather(&self, desc: RTCSessionDescription) -> Result<String, RtcError> {
        let mut gathered = self.inner.pc.gathering_complete_promise().await;
        self.inner.pc.set_local_description(desc).await?;
        let timeout = self.inner.gathering_timeout;
        tokio::time::timeout(timeout, gathered.recv()).await.map_err(|_| RtcError::GatheringTimeout(timeout))?;
        let local = self.inner.pc.local_description().await.ok_or(RtcError::Closed)?;
        Ok(local.sdp)
    }

    /// Send one H.264 access unit (Annex-B) lasting `duration`.
    pub async fn write_video(&self, access_unit: Bytes, duration: Duration) -> Result<(), RtcError> {
        let track = self.inner.video.as_ref().ok_or(RtcError::Closed)?;
        track.write_sample(&sample(access_unit, duration)).await?;
        Ok(())
    }

    /// Send one Opus packet lasting `duration` (20 ms).
    pub async fn write_audio(&self, packet: Bytes, duration: Duration) -> Result<(), RtcError> {
        let track = self.inner.audio.as_ref().ok_or(RtcError::Closed)?;
        track.write_sample(&sample(packet, duration)).await?;
        Ok(())
    }

    /// True once since the last call if the remote asked for a keyframe (PLI/FIR).
    pub fn take_keyframe_request(&self) -> bool {
        self.inner.keyframe_requested.swap(false, Ordering::AcqRel)
    }

    /// PLI/FIR packets received so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.inner.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Hang up cleanly: an RTCP BYE (RFC 3550 6.6) for our outgoing streams
    /// with `reason`, so the remote ends the call at once instead of waiting
    /// for a timeout, then [`Peer::close`] (DTLS close_notify).
    pub async fn hang_up(&self, reason: &str) {
        let mut sources = Vec::new();
        for sender in &self.inner.senders {
            sources.extend(sender.get_parameters().await.encodings.iter().map(|e| e.ssrc).filter(|s| *s != 0));
        }
        let connected = self.inner.pc.connection_state() == RTCPeerConnectionState::Connected;
        if connected && !sources.is_empty() {
            let mut reason = reason.as_bytes().to_vec();
            reason.truncate(255);
            let bye = Goodbye { sources, reason: Bytes::from(reason) };
            match self.inner.pc.write_rtcp(&[Box::new(bye)]).await {
                Ok(_) => tracing::debug!("RTCP BYE sent"),
                Err(e) => tracing::debug!("RTCP BYE not sent: {e}"),
            }
        }
        self.close().await;
    }

    /// Tear the connection down (idempotent).
    pub async fn close(&self) {
        if let Err(e) = self.inner.pc.close().await {
            tracing::debug!("peer close: {e}");
        }
    }
}

fn sample(data: Bytes, duration: Duration) -> Sample {
    Sample { data, duration, timestamp: SystemTime::now(), ..Default::default() }
}

/// Drain RTCP of one sender until it stops; flag PLI/FIR when `keyframe` is set.
fn spawn_rtcp_reader(sender: Arc<RTCRtpSender>, keyframe: Option<(Arc<AtomicBool>, Arc<AtomicU64>)>) {
    tokio::spawn(async move {
        while let Ok((packets, _)) = sender.read_rtcp().await {
            let Some((flag, count)) = &keyframe else { continue };
            for p in &packets {
                let any = p.as_any();
                if any.downcast_ref::<PictureLossIndication>().is_some()
                    || any.downcast_ref::<FullIntraRequest>().is_some()
                {
                    count.fetch_add(1, Ordering::Relaxed);
                    flag.store(true, Ordering::Release);
                }
            }
        }
    });
}

async fn read_remote_audio(track: Arc<TrackRemote>, tx: mpsc::Sender<RemoteAudioPacket>) {
    let mut dropped = 0u64;
    while let Ok((pkt, _)) = track.read_rtp().await {
        if pkt.payload.is_empty() {
            continue;
        }
        let item = RemoteAudioPacket {
            payload: pkt.payload,
            rtp_timestamp: pkt.header.timestamp,
            sequence: pkt.header.sequence_number,
        };
        match tx.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "remote audio consumer lags; dropping packets");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
}
