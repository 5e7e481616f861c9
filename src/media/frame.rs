//! Plain RGB video frames as they leave the generator (and enter the H.264
//! encoder through `yuv`).

/// One RGB24 frame, row-major, `data.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbFrame {
    /// A frame filled with one colour.
    pub fn solid(width: usize, height: usize, rgb: [u8; 3]) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&rgb);
        }
        Self { width, height, data }
    }
}

impl std::fmt::Debug for RgbFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbFrame({}x{})", self.width, self.height)
    }
}
