//! The per-frame measurements of one stream, taken in one pass as frames
//! arrive (a 5-minute stream is never held in memory): tracked face shift,
//! mouth openness, head motion energy and identity PSNR.

use serde::Serialize;

use super::face_layout::FaceLayout;
use super::face_tracker::{check_frame, FaceTracker};
use super::identity_drift::identity_psnr;
use super::lip_sync::mouth_openness;
use super::listening::motion_energy;
use super::EvalError;
use crate::media::frame::RgbFrame;

/// What is measured on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrameMeasure {
    /// Face translation against the reference, pixels.
    pub shift: (i32, i32),
    pub mouth_openness: f32,
    /// Head motion energy against the previous frame (0 for frame 0).
    pub motion: f32,
    pub identity_psnr: f32,
}

/// Measures a stream of frames of one identity.
#[derive(Debug, Clone)]
pub struct StreamProbe {
    layout: FaceLayout,
    tracker: FaceTracker,
    reference: RgbFrame,
    previous: Option<RgbFrame>,
    measures: Vec<FrameMeasure>,
}

impl StreamProbe {
    pub fn new(layout: FaceLayout, reference: RgbFrame) -> Result<Self, EvalError> {
        let tracker = FaceTracker::new(&layout, &reference)?;
        Ok(Self { layout, tracker, reference, previous: None, measures: Vec::new() })
    }

    /// Measure the next frame.
    pub fn push(&mut self, frame: &RgbFrame) -> Result<(), EvalError> {
        check_frame(frame, self.layout.size)?;
        let shift = self.tracker.track(frame)?;
        let motion = self.previous.as_ref().map_or(0.0, |p| motion_energy(p, frame, &self.layout));
        self.measures.push(FrameMeasure {
            shift,
            mouth_openness: mouth_openness(frame, &self.reference, &self.layout, shift),
            motion,
            identity_psnr: identity_psnr(frame, &self.reference, &self.layout, shift),
        });
        match &mut self.previous {
            Some(p) => p.data.copy_from_slice(&frame.data),
            None => self.previous = Some(frame.clone()),
        }
        Ok(())
    }

    pub fn measures(&self) -> &[FrameMeasure] {
        &self.measures
    }

    pub fn openness(&self) -> Vec<f32> {
        self.measures.iter().map(|m| m.mouth_openness).collect()
    }

    pub fn motion(&self) -> Vec<f32> {
        self.measures.iter().map(|m| m.motion).collect()
    }

    pub fn identity_psnr(&self) -> Vec<f32> {
        self.measures.iter().map(|m| m.identity_psnr).collect()
    }
}
