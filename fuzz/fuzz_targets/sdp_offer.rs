//! SDP from a WHIP body or a room `offer`: the signaling grammar check, then
//! the WebRTC layer's offer/answer summaries. Any input: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamavatar::rtc::sdp;
use streamavatar::signaling::sdp_check::check_offer;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = check_offer(data) {
        let _ = sdp::check(text);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sdp::check(text);
        let _ = sdp::check_answer(text);
    }
});
