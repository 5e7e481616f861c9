//! The generator's VAE stage: decodes each chunk's latents into frames,
//! either inline (on the caller's thread, right after the DiT) or on its own
//! worker thread, so the VAE of chunk k runs while the DiT makes chunk k+1
//! (the paper's DiT / VAE pipeline on a GPU pair).
//!
//! The worker owns the decoder and its streaming state; jobs go in order
//! through a queue of at most one waiting job (the DiT blocks when the VAE
//! falls two chunks behind), results come back in order. At most one chunk
//! waits while another decodes, so memory stays bounded.
//!
//! CUDA: candle's devices use the per-thread default stream, so the
//! worker's kernels go to its own stream and overlap the DiT's. A job's
//! latents must be complete when they are handed over: the DiT stage
//! synchronises its device after every step.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::frame_decoder::FrameDecoder;
use super::GeneratorError;
use crate::media::frame::RgbFrame;

/// A decoded chunk.
pub struct Decoded {
    pub index: u64,
    pub frames: Result<Vec<RgbFrame>, GeneratorError>,
    /// Wall time of the decode and the conversion to RGB, in ms.
    pub vae_ms: f64,
}

enum Job {
    /// Reset the stream and decode the reference latent (output dropped).
    Prime(Tensor),
    Decode {
        index: u64,
        z: Tensor,
    },
}

enum Reply {
    Primed(Result<(), GeneratorError>),
    Decoded(Decoded),
}

fn run_job(decoder: &mut FrameDecoder, device: &Device, job: Job) -> Reply {
    match job {
        Job::Prime(z) => {
            decoder.reset();
            Reply::Primed(decoder.decode_video(&z, device).map(|_| ()))
        }
        Job::Decode { index, z } => {
            let t0 = Instant::now();
            let frames = decoder.decode_frames(&z, device);
            Reply::Decoded(Decoded { index, frames, vae_ms: t0.elapsed().as_secs_f64() * 1e3 })
        }
    }
}

enum Mode {
    Inline { decoder: FrameDecoder, done: VecDeque<Decoded> },
    Worker { jobs: Option<SyncSender<Job>>, replies: Receiver<Reply>, thread: Option<JoinHandle<()>> },
}

/// See module docs.
pub struct VaeStage {
    mode: Mode,
    device: Device,
    in_flight: usize,
}

fn worker_gone() -> GeneratorError {
    GeneratorError::Model("the VAE worker thread stopped".into())
}

impl VaeStage {
    /// Decode on the caller's thread.
    pub fn inline(decoder: FrameDecoder, device: Device) -> Self {
        Self { mode: Mode::Inline { decoder, done: VecDeque::new() }, device, in_flight: 0 }
    }

    /// Decode on a worker thread.
    pub fn worker(mut decoder: FrameDecoder, device: Device) -> Result<Self, GeneratorError> {
        // Weights uploaded by this thread must be complete before another
        // thread's stream reads them.
        device.synchronize().map_err(|e| GeneratorError::Model(format!("VAE device: {e}")))?;
        let (jobs, job_rx) = sync_channel::<Job>(1);
        let (reply_tx, replies) = sync_channel::<Reply>(2);
        let worker_device = device.clone();
        let thread = std::thread::Builder::new()
            .name("vae-stage".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    if reply_tx.send(run_job(&mut decoder, &worker_device, job)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| GeneratorError::Model(format!("cannot start the VAE worker thread: {e}")))?;
        Ok(Self { mode: Mode::Worker { jobs: Some(jobs), replies, thread: Some(thread) }, device, in_flight: 0 })
    }

    pub fn is_pipelined(&self) -> bool {
        matches!(self.mode, Mode::Worker { .. })
    }

    /// Chunks submitted and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Drop every chunk in flight, reset the stream and decode the reference
    /// latent `z` (normalized) to prime the decoder's caches.
    pub fn prime(&mut self, z: &Tensor) -> Result<(), GeneratorError> {
        while self.in_flight > 0 {
            self.collect()?;
        }
        match &mut self.mode {
            Mode::Inline { decoder, done } => {
                done.clear();
                match run_job(decoder, &self.device, Job::Prime(z.clone())) {
                    Reply::Primed(r) => r,
                    Reply::Decoded(_) => unreachable!("a prime job replies Primed"),
                }
            }
            Mode::Worker { jobs, replies, .. } => {
                jobs.as_ref().ok_or_else(worker_gone)?.send(Job::Prime(z.clone())).map_err(|_| worker_gone())?;
                match replies.recv().map_err(|_| worker_gone())? {
                    Reply::Primed(r) => r,
                    Reply::Decoded(_) => Err(GeneratorError::Model("VAE worker replied out of order".into())),
                }
            }
        }
    }

    /// Queue chunk `index`'s normalized latents (complete on their device).
    /// Inline, this decodes now; pipelined, it blocks only while another
    /// chunk already waits for the worker.
    pub fn submit(&mut self, index: u64, z: Tensor) -> Result<(), GeneratorError> {
        match &mut self.mode {
            Mode::Inline { decoder, done } => match run_job(decoder, &self.device, Job::Decode { index, z }) {
                Reply::Decoded(d) => done.push_back(d),
                Reply::Primed(_) => unreachable!("a decode job replies Decoded"),
            },
            Mode::Worker { jobs, .. } => {
                jobs.as_ref().ok_or_else(worker_gone)?.send(Job::Decode { index, z }).map_err(|_| worker_gone())?
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// The oldest submitted chunk, waiting for it.
    pub fn collect(&mut self) -> Result<Decoded, GeneratorError> {
        if self.in_flight == 0 {
            return Err(GeneratorError::Model("no chunk is being decoded".into()));
        }
        let decoded = match &mut self.mode {
            Mode::Inline { done, .. } => done.pop_front().ok_or_else(worker_gone)?,
            Mode::Worker { replies, .. } => match replies.recv().map_err(|_| worker_gone())? {
                Reply::Decoded(d) => d,
                Reply::Primed(_) => return Err(GeneratorError::Model("VAE worker replied out of order".into())),
            },
        };
        self.in_flight -= 1;
        Ok(decoded)
    }

    /// The oldest submitted chunk if it is decoded already.
    pub fn try_collect(&mut self) -> Option<Result<Decoded, GeneratorError>> {
        if self.in_flight == 0 {
            return None;
        }
        let decoded = match &mut self.mode {
            Mode::Inline { done, .. } => done.pop_front()?,
            Mode::Worker { replies, .. } => match replies.try_recv() {
                Ok(Reply::Decoded(d)) => d,
                Ok(Reply::Primed(_)) => {
                    return Some(Err(GeneratorError::Model("VAE worker replied out of order".into())))
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => return Some(Err(worker_gone())),
            },
        };
        self.in_flight -= 1;
        Some(Ok(decoded))
    }
}

impl Drop for VaeStage {
    fn drop(&mut self) {
        if let Mode::Worker { jobs, replies, thread } = &mut self.mode {
            // Closing the job queue ends the worker after its current job;
            // draining replies unblocks it if it waits to send one.
            jobs.take();
            while replies.recv().is_ok() {}
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}
