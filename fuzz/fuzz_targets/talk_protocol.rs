//! The talk WebSocket: a byte stream cut into frames (binary PCM16 or JSON
//! text), decoded as the server does, and the resulting commands applied to
//! a session's talk queue (resampling, utterance markers, barge-in, cap).
//! Input layout: [rate selector] then frames of [kind][len lo][len hi][bytes].
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamavatar::session::talk_queue::TalkQueue;
use streamavatar::session::TalkCommand;
use streamavatar::signaling::talk_protocol::{check_rate, TalkDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else { return };
    let requested = [None, Some(8000), Some(16000), Some(22050), Some(24000), Some(44100), Some(48000), Some(7999)];
    let Ok(rate) = check_rate(requested[usize::from(selector) % requested.len()]) else { return };
    let decoder = TalkDecoder { rate, max_message_bytes: 4096 };
    // 2 s cap so that the "queue full" path is reached too.
    let mut queue = TalkQueue::new(2000);
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])) % 6000;
        let end = (3 + len).min(rest.len());
        let frame = &rest[3..end];
        rest = &rest[end..];
        let command = if kind & 1 == 0 {
            match decoder.binary(frame) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(_) => return, // the server closes the socket
            }
        } else {
            let Ok(text) = std::str::from_utf8(frame) else { return };
            match decoder.text(text) {
                Ok(c) => c,
                Err(_) => return,
            }
        };
        match command {
            TalkCommand::Pcm { sample_rate, samples } => {
                let _ = queue.push_pcm(sample_rate, &samples);
            }
            TalkCommand::End => {
                let _ = queue.end();
            }
            TalkCommand::Clear => {
                let _ = queue.clear();
            }
        }
        if kind & 2 != 0 {
            // The pacing task drains 20 ms per tick.
            for _ in 0..(kind >> 2) {
                let _ = queue.pop_tick();
            }
        }
    }
});
