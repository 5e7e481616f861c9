//! Resident memory of the bench process: one reading of VmRSS, and a
//! periodic sampler (`--rss-every`) whose series soaks report, so flat memory
//! is shown over the whole run rather than by two points.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most samples a series keeps (a week at one per minute); later ones are
/// counted but not stored, so a sampler never grows without bound.
pub const MAX_SAMPLES: usize = 10_080;

/// Resident set size of this process (VmRSS in /proc/self/status), KiB.
pub fn process_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss_kib(&status)
}

/// The `VmRSS:` value of a /proc/<pid>/status text, KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// RSS readings over a run: (seconds since the sampler started, KiB).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RssSeries {
    pub every_s: f64,
    pub samples: Vec<(f64, u64)>,
    /// Readings beyond [`MAX_SAMPLES`] (not stored).
    pub not_stored: usize,
}

impl RssSeries {
    fn record(&mut self, at_s: f64, kib: u64) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push((at_s, kib));
        } else {
            self.not_stored += 1;
        }
    }

    pub fn start_kib(&self) -> Option<u64> {
        self.samples.first().map(|s| s.1)
    }

    pub fn end_kib(&self) -> Option<u64> {
        self.samples.last().map(|s| s.1)
    }

    pub fn max_kib(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.1).max()
    }

    /// Two lines: start/end/max, then the series in MiB.
    pub fn render(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        let (Some(start), Some(end), Some(max)) = (self.start_kib(), self.end_kib(), self.max_kib()) else {
            return "process RSS series: no readings (no /proc/self/status?)\n".into();
        };
        let series: Vec<String> = self.samples.iter().map(|(t, k)| format!("{t:.0}s {:.1}", mib(*k))).collect();
        format!(
            "process RSS every {:.0} s: start {:.1} MiB, end {:.1} MiB ({:+.1} MiB), max {:.1} MiB, {} samples{}\n  \
             series (s MiB): {}\n",
            self.every_s,
            mib(start),
            mib(end),
            mib(end) - mib(start),
            mib(max),
            self.samples.len(),
            if self.not_stored > 0 { format!(" (+{} not stored)", self.not_stored) } else { String::new() },
            series.join(", ")
        )
    }
}

/// A background task reading RSS every `every` until [`RssSampler::finish`].
pub struct RssSampler {
    series: Arc<Mutex<RssSeries>>,
    started: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Start sampling now (the first reading is immediate).
    pub fn start(every: Duration) -> Self {
        let series = Arc::new(Mutex::new(RssSeries { every_s: every.as_secs_f64(), ..Default::default() }));
        let started = Instant::now();
        let shared = series.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let (Some(kib), Ok(mut s)) = (process_rss_kib(), shared.lock()) {
                    s.record(started.elapsed().as_secs_f64(), kib);
                }
            }
        });
        Self { series, started, task }
    }

    /// Stop, take a last reading, and return the series.
    pub fn finish(self) -> RssSeries {
        self.task.abort();
        let mut series = self.series.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(kib) = process_rss_kib() {
            series.record(self.started.elapsed().as_secs_f64(), kib);
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed_from_status() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t   51234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(51234));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert!(process_rss_kib().is_some_and(|k| k > 0));
    }

    #[test]
    fn series_summary_and_bound() {
        let mut s = RssSeries { every_s: 60.0, ..Default::default() };
        assert!(s.render().contains("no readings"));
        s.record(0.0, 40 * 1024);
        s.record(60.0, 50 * 1024);
        s.record(120.0, 45 * 1024);
        assert_eq!((s.start_kib(), s.end_kib(), s.max_kib()), (Some(40 * 1024), Some(45 * 1024), Some(50 * 1024)));
        let text = s.render();
        assert!(text.contains("start 40.0 MiB, end 45.0 MiB (+5.0 MiB), max 50.0 MiB, 3 samples"), "{text}");
        assert!(text.contains("0s 40.0, 60s 50.0, 120s 45.0"), "{text}");
        for i in 0..MAX_SAMPLES {
            s.record(i as f64, 1);
        }
        assert_eq!((s.samples.len(), s.not_stored), (MAX_SAMPLES, 3));
    }

    #[tokio::test]
    async fn sampler_reads_immediately_and_at_the_end() {
        let sampler = RssSampler::start(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let series = sampler.finish();
        assert_eq!(series.samples.len(), 2, "{series:?}");
        assert!(series.samples[1].0 >= series.samples[0].0);
    }
}
