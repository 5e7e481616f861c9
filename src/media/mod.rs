//! Media plumbing between the network and the generator: Opus, resampling,
//! H.264, RGB<->I420 and the A/V media clock.

pub mod frame;
