//! Avatar uploads (raw PNG/JPEG bodies and multipart parts), decoded within
//! small limits so that a decompression bomb is refused, not allocated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamavatar::signaling::avatar_image::{decode_image, ImageLimits};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_image(data, ImageLimits { max_bytes: 256 * 1024, max_side: 512 }) {
        assert!(frame.width > 0 && frame.height > 0);
    }
});
