//! The phi-accrual failure detector (Hayashibara et al., as in Akka): per monitored
//! member, the history of heartbeat inter-arrival times gives a normal distribution;
//! phi is how unlikely the silence since the last heartbeat is under it. Above the
//! threshold the member is considered unavailable.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Settings (Akka defaults: heartbeat 1 s, threshold 8, acceptable pause 3 s).
#[derive(Clone, Debug)]
pub struct FailureDetectorConfig {
    /// Expected interval between heartbeats.
    pub heartbeat_interval: Duration,
    /// Phi above which a member is unavailable.
    pub threshold: f64,
    /// Silence tolerated on top of the mean interval (GC pauses, hiccups).
    pub acceptable_pause: Duration,
    /// Lower bound of the standard deviation.
    pub min_std_deviation: Duration,
    /// Intervals kept in the history.
    pub max_samples: usize,
}

impl Default for FailureDetectorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            threshold: 8.0,
            acceptable_pause: Duration::from_secs(3),
            min_std_deviation: Duration::from_millis(100),
            max_samples: 1000,
        }
    }
}

/// Detector state for one monitored member.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Instant,
}

impl PhiAccrual {
    /// Starts monitoring as if a heartbeat arrived at `now`, with a history seeded from
    /// the expected interval, so a member that never sends one still becomes unavailable.
    pub fn new(cfg: &FailureDetectorConfig, now: Instant) -> Self {
        let est = cfg.heartbeat_interval.as_secs_f64() * 1000.0;
        let std = est / 4.0;
        let mut d = Self {
            intervals: VecDeque::new(),
            sum: 0.0,
            sum_sq: 0.0,
            last: now,
        };
        d.push(est - std, cfg.max_samples);
        d.push(est + std, cfg.max_samples);
        d
    }

    fn push(&mut self, v: f64, max: usize) {
        if self.intervals.len() >= max
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.intervals.push_back(v);
        self.sum += v;
        self.sum_sq += v * v;
    }

    /// Records a heartbeat that arrived at `now`.
    pub fn heartbeat(&mut self, cfg: &FailureDetectorConfig, now: Instant) {
        let interval = now.saturating_duration_since(self.last).as_secs_f64() * 1000.0;
        self.last = now;
        self.push(interval, cfg.max_samples);
    }

    /// phi at `now`.
    pub fn phi(&self, cfg: &FailureDetectorConfig, now: Instant) -> f64 {
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        let min_std = cfg.min_std_deviation.as_secs_f64() * 1000.0;
        let std = var.sqrt().max(min_std);
        let mean = mean + cfg.acceptable_pause.as_secs_f64() * 1000.0;
        let diff = now.saturating_duration_since(self.last).as_secs_f64() * 1000.0;
        let y = (diff - mean) / std;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if diff > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }

    /// True while phi is below the threshold.
    pub fn is_available(&self, cfg: &FailureDetectorConfig, now: Instant) -> bool {
        self.phi(cfg, now) < cfg.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_heartbeats_stay_available_and_silence_does_not() {
        let cfg = FailureDetectorConfig::default();
        let t0 = Instant::now();
        let mut d = PhiAccrual::new(&cfg, t0);
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_millis(1000);
            d.heartbeat(&cfg, t);
        }
        assert!(d.phi(&cfg, t + Duration::from_millis(1000)) < 1.0);
        assert!(d.is_available(&cfg, t + Duration::from_millis(3500)));
        assert!(!d.is_available(&cfg, t + Duration::from_millis(6000)));
        let p1 = d.phi(&cfg, t + Duration::from_millis(4000));
        let p2 = d.phi(&cfg, t + Duration::from_millis(4500));
        assert!(p2 > p1, "phi grows with silence");
    }

    #[test]
    fn a_member_that_never_heartbeats_becomes_unavailable() {
        let cfg = FailureDetectorConfig {
            heartbeat_interval: Duration::from_millis(100),
            acceptable_pause: Duration::from_millis(300),
            ..FailureDetectorConfig::default()
        };
        let t0 = Instant::now();
        let d = PhiAccrual::new(&cfg, t0);
        assert!(d.is_available(&cfg, t0 + Duration::from_millis(200)));
        assert!(!d.is_available(&cfg, t0 + Duration::from_secs(3)));
    }
}
