//! `POST /v1/sessions/{id}/say` bodies and `render --talk/--listen` files:
//! both WAV parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pcm) = streamavatar::signaling::wav_input::parse_wav(data) {
        let _ = pcm.duration_ms();
    }
    let _ = streamavatar::media::wav::parse_wav(data, 1 << 20);
});
