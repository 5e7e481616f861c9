//! streamavatar: a real-time AI video-call agent.
//!
//! Layout (see DESIGN.md): `model/` is pure candle math, `generator` drives
//! it chunk by chunk, `media/` and `rtc/` move audio and video, `session`
//! wires one call, `signaling` (in the top-level `signaling/` folder) is the
//! HTTP/WebSocket front that serves `web/`.

pub mod bench;
pub mod bench_call;
pub mod config;
pub mod eval;
pub mod generator;
pub mod media;
pub mod model;
pub mod render;
pub mod rtc;
pub mod session;
#[path = "../signaling/mod.rs"]
pub mod signaling;
pub mod synth;
#[path = "../train/mod.rs"]
pub mod train;
