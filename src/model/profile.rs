//! Opt-in section timer behind `bench generator --profile`: where a chunk's
//! time goes (DiT self-attention, cross-attention, audio attention,
//! feed-forward; VAE convolutions).
//!
//! Off by default, and then a section is one relaxed atomic load. When on,
//! each section synchronises its device before and after (GPU work is
//! asynchronous), so profiled runs are slower than plain ones: read the
//! shares, take absolute times from a run without `--profile`. Sections may
//! nest (a nested one is also counted in its parent).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{Device, Result};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// (section, total ms, calls), in first-seen order.
static TOTALS: Mutex<Vec<(&'static str, f64, u64)>> = Mutex::new(Vec::new());

/// Turn timing on or off (process-wide).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Run `f`; when profiling is on, add its synchronised wall time to `name`.
pub fn section<T>(name: &'static str, device: &Device, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !enabled() {
        return f();
    }
    device.synchronize()?;
    let start = Instant::now();
    let out = f()?;
    device.synchronize()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if let Ok(mut totals) = TOTALS.lock() {
        match totals.iter_mut().find(|e| e.0 == name) {
            Some(e) => {
                e.1 += ms;
                e.2 += 1;
            }
            None => totals.push((name, ms, 1)),
        }
    }
    Ok(out)
}

/// The totals so far, emptied: (section, total ms, calls).
pub fn take() -> Vec<(&'static str, f64, u64)> {
    TOTALS.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_enabled() {
        let dev = Device::Cpu;
        // Other tests never enable profiling; names here are unique.
        section("test.off", &dev, || Ok(())).unwrap();
        set_enabled(true);
        let v = section("test.on", &dev, || Ok(41 + 1)).unwrap();
        section("test.on", &dev, || Ok(())).unwrap();
        set_enabled(false);
        assert_eq!(v, 42);
        let totals = take();
        assert!(!totals.iter().any(|e| e.0 == "test.off"));
        let on = totals.iter().find(|e| e.0 == "test.on").unwrap();
        assert_eq!(on.2, 2);
        assert!(on.1 >= 0.0);
    }
}
