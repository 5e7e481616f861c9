//! Signaling JSON from clients: the `POST /v1/sessions` body (including its
//! base64 avatar, decoded within small limits) and room messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamavatar::signaling::avatar_image::{decode_base64_image, ImageLimits};
use streamavatar::signaling::rooms::{valid_room_name, ClientMessage};
use streamavatar::signaling::sessions::CreateSessionJson;

const LIMITS: ImageLimits = ImageLimits { max_bytes: 64 * 1024, max_side: 256 };

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<CreateSessionJson>(data) {
        if let Some(avatar) = body.avatar.as_deref() {
            let _ = decode_base64_image(avatar, LIMITS);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = valid_room_name(text);
        if let Ok(ClientMessage::RequestAvatar { avatar: Some(a), .. }) = serde_json::from_str::<ClientMessage>(text) {
            let _ = decode_base64_image(&a, LIMITS);
        }
    }
});
