//! `timing.json` and `timing.dat`: the boot's milestones by the host's
//! uptime, and the intervals between them that took the time.

use super::SCHEMA_VERSION;
use serde::{Deserialize, Serialize};

/// One milestone of `timing.json`'s `phases`, by the host's uptime
/// (CLOCK_BOOTTIME, so comparable across the whole boot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Milestone {
    /// `kernel_start`, `session_created`, ... `session_finalized`.
    pub phase: String,
    pub uptime_s: f64,
    pub timestamp_utc: String,
    /// Seconds since the previous milestone; `null` for the first.
    pub delta_s: Option<f64>,
}

/// One interval of `timing.json`'s `intervals`; times are ms since boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// `timing.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub schema: u32,
    /// From the first milestone to the last.
    pub total_duration_s: f64,
    pub phases: Vec<Milestone>,
    /// What took the time between them (config, host inventory, guest...).
    #[serde(default)]
    pub intervals: Vec<Interval>,
}

/// Seconds rounded to the millisecond (what the uptimes are measured in).
fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

impl Timing {
    pub fn new() -> Timing {
        Timing {
            schema: SCHEMA_VERSION,
            total_duration_s: 0.0,
            phases: Vec::new(),
            intervals: Vec::new(),
        }
    }

    /// The milestone `phase` at `uptime_ms`, which was `timestamp_utc`.
    pub fn mark(&mut self, phase: &str, uptime_ms: u64, timestamp_utc: String) {
        let uptime_s = uptime_ms as f64 / 1000.0;
        let delta_s = self.phases.last().map(|p| round_ms(uptime_s - p.uptime_s));
        let first = self.phases.first().map_or(uptime_s, |p| p.uptime_s);
        self.total_duration_s = round_ms(uptime_s - first);
        self.phases.push(Milestone {
            phase: phase.to_string(),
            uptime_s,
            timestamp_utc,
            delta_s,
        });
    }

    /// `timing.dat`: `phase<TAB>uptime_s<TAB>timestamp_utc`, one milestone
    /// per line.
    pub fn to_dat(&self) -> String {
        self.phases
            .iter()
            .map(|p| format!("{}\t{:.3}\t{}\n", p.phase, p.uptime_s, p.timestamp_utc))
            .collect()
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_milestones_and_dat() {
        let mut timing = Timing::new();
        timing.mark("kernel_start", 512, "2026-06-29T10:15:28.000Z".into());
        timing.mark("session_created", 2341, "2026-06-29T10:15:29.829Z".into());
        timing.mark("env_written", 2520, "2026-06-29T10:15:30.008Z".into());
        assert_eq!(timing.phases[0].delta_s, None);
        assert_eq!(timing.phases[1].delta_s, Some(1.829));
        assert_eq!(timing.phases[2].delta_s, Some(0.179));
        assert_eq!(timing.total_duration_s, 2.008);
        assert_eq!(
            timing.to_dat(),
            "kernel_start\t0.512\t2026-06-29T10:15:28.000Z\n\
             session_created\t2.341\t2026-06-29T10:15:29.829Z\n\
             env_written\t2.520\t2026-06-29T10:15:30.008Z\n"
        );
        let value = serde_json::to_value(&timing).unwrap();
        assert_eq!(value["phases"][1]["phase"], "session_created");
        assert_eq!(value["phases"][0]["delta_s"], serde_json::Value::Null);
    }
}
