//! Media plumbing between the network and the generator, all sans-IO:
//!
//! * [`pcm`] — PCM16LE parsing, i16 <-> f32, mono mixdown.
//! * [`wav`] — WAV bodies of any common format to mono f32.
//! * [`resample`] — streaming 8..48 kHz -> 16 kHz (generator) / 48 kHz (Opus).
//! * [`opus`] — Opus decode (RTP payload -> 48 kHz mono, PLC / FEC) and
//!   encode (48 kHz mono -> 20 ms packets).
//! * [`yuv`] — RGB24 <-> I420 (BT.601 limited range).
//! * [`h264`] — OpenH264 encoder (constrained baseline, Annex-B, keyframe on
//!   demand) and decoder.
//! * [`frame`] — the RGB frame type shared with the generator.
//!
//! The A/V media clock and fall-behind policy of a call live with the call,
//! in `session::pacer`.

pub mod frame;
pub mod h264;
pub mod opus;
pub mod pcm;
pub mod resample;
pub mod wav;
pub mod yuv;

#[cfg(test)]
mod tests {
    /// The session moves these into tokio tasks.
    #[test]
    fn pipeline_types_are_send() {
        fn is_send<T: Send>() {}
        is_send::<super::opus::OpusDecoder>();
        is_send::<super::opus::OpusEncoder>();
        is_send::<super::opus::OpusPacketizer>();
        is_send::<super::resample::StreamResampler>();
        is_send::<super::h264::H264Encoder>();
        is_send::<super::h264::H264Decoder>();
    }
}
