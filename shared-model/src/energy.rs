//! Site energy telemetry: what the edge's balancer sees and obeys, reported to the hub
//! as [`SiteEvent::SiteEnergy`](crate::events::SiteEvent::SiteEnergy) on a fixed cadence
//! and at once when the fail-safe state changes (see `shared-model/SYNC.md`).
//!
//! Per-phase values are `[L1, L2, L3]`. It is telemetry: a later report supersedes an
//! earlier one, and an edge may coalesce reports that wait in its outbox.
//!
//! ```
//! use shared_model::energy::{LimitSource, SiteEnergyReport};
//! let report: SiteEnergyReport = serde_json::from_str(r#"{
//!     "at": "2026-01-01T12:00:00Z",
//!     "circuits": [{"circuit": "main", "meter": "grid", "state": "fresh",
//!                   "current_a": [10.0, 11.0, 12.0], "power_w": [2300.0, null, null],
//!                   "limits": [{"source": "fuse", "current_a": [32.0, 32.0, 32.0]}]}],
//!     "allocated_a": [6.0, 6.0, 6.0],
//!     "fail_safe": {"active": false}
//! }"#).unwrap();
//! assert_eq!(report.circuits[0].limits[0].source, LimitSource::Fuse);
//! assert_eq!(report.circuits[0].tightest_a(2), Some((0, 32.0)));
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One report of a site's power against its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEnergyReport {
    /// When the edge took it.
    pub at: DateTime<Utc>,
    /// Every circuit of the site's circuit tree, the grid connection (root) first.
    #[serde(default)]
    pub circuits: Vec<CircuitEnergy>,
    /// The sum of the charging limits the balancer allocated, per site phase (A).
    #[serde(default)]
    pub allocated_a: [f64; 3],
    /// Whether the balancer runs on safe values, and why.
    #[serde(default)]
    pub fail_safe: FailSafeState,
}

/// A circuit (a node of the circuit tree): its meter reading and every limit on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitEnergy {
    pub circuit: String,
    /// The circuit above it (`None`: the grid connection).
    #[serde(default)]
    pub parent: Option<String>,
    /// The meter that measures it, if any.
    #[serde(default)]
    pub meter: Option<String>,
    /// `unmetered`, `fresh`, `stale`, `missing` (never read) or `invalid`.
    pub state: String,
    /// The meter's last good reading is stale (kept for display: the balancer does not
    /// use it).
    #[serde(default)]
    pub stale: bool,
    /// When the meter's last good reading was taken.
    #[serde(default)]
    pub read_at: Option<DateTime<Utc>>,
    /// Measured current per phase (A); `null` where the meter gives none.
    #[serde(default)]
    pub current_a: [Option<f64>; 3],
    /// Measured active power per phase (W).
    #[serde(default)]
    pub power_w: [Option<f64>; 3],
    /// Measured total active power (W).
    #[serde(default)]
    pub total_power_w: Option<f64>,
    /// What the balancer allocated to chargers below it (setpoints and reservations), per
    /// phase (A).
    #[serde(default)]
    pub allocated_a: [f64; 3],
    /// Every limit that applies here.
    #[serde(default)]
    pub limits: Vec<EnergyLimit>,
}

impl CircuitEnergy {
    /// The tightest per-phase current limit on `phase` (0..3): its index in `limits` and value.
    pub fn tightest_a(&self, phase: usize) -> Option<(usize, f64)> {
        self.limits
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.current_a.and_then(|a| a.get(phase).copied()).map(|v| (i, v)))
            .filter(|(_, v)| v.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The tightest power limit: its index in `limits` and value (W).
    pub fn tightest_w(&self) -> Option<(usize, f64)> {
        self.limits
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.power_w.map(|v| (i, v)))
            .filter(|(_, v)| v.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Where a limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// The circuit's fuse / rating (configuration).
    Fuse,
    /// The circuit's configured power limit.
    PowerLimit,
    /// The grid operator's cap (OpenADR or another external input), in force.
    GridOperator,
    /// The grid operator's safe values, applied because its limits expired.
    GridOperatorSafe,
    /// A planned or local schedule period active now.
    Schedule,
    /// Anything a newer edge reports that this version does not know.
    #[serde(other)]
    Other,
}

impl LimitSource {
    pub fn label(self) -> &'static str {
        match self {
            LimitSource::Fuse => "Fuse",
            LimitSource::PowerLimit => "Power limit",
            LimitSource::GridOperator => "Grid operator",
            LimitSource::GridOperatorSafe => "Grid operator (safe)",
            LimitSource::Schedule => "Schedule",
            LimitSource::Other => "Limit",
        }
    }
}

/// One limit: per phase (A), total power (W), or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyLimit {
    pub source: LimitSource,
    #[serde(default)]
    pub current_a: Option<[f64; 3]>,
    #[serde(default)]
    pub power_w: Option<f64>,
    /// When it ends, if it does (a schedule period, the grid operator's validity).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// The balancer's fail-safe state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailSafeState {
    pub active: bool,
    #[serde(default)]
    pub reasons: Vec<FailSafeReason>,
}

impl FailSafeState {
    /// What identifies the state for change detection (times left out).
    pub fn key(&self) -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = self.reasons.iter().map(|r| (r.subject.clone(), r.kind.clone())).collect();
        k.sort();
        k
    }

    /// One line for people: `meter_stale at main; charger_not_answering at CP-1`.
    pub fn summary(&self) -> String {
        self.reasons.iter().map(|r| format!("{} at {}", r.kind, r.subject)).collect::<Vec<_>>().join("; ")
    }
}

/// One thing in fail-safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailSafeReason {
    /// The circuit, charger or `grid-operator`.
    pub subject: String,
    /// `meter_stale`, `meter_missing`, `meter_invalid`, `charger_not_answering`,
    /// `external_limits_expired`.
    pub kind: String,
    pub since: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightest_limits_and_unknown_sources() {
        let c: CircuitEnergy = serde_json::from_value(serde_json::json!({
            "circuit": "main", "state": "fresh",
            "limits": [
                {"source": "fuse", "current_a": [63.0, 63.0, 63.0]},
                {"source": "grid_operator", "current_a": [40.0, 25.0, 40.0], "power_w": 20000.0},
                {"source": "something_new", "power_w": 15000.0}
            ]
        }))
        .expect("parses");
        assert_eq!(c.tightest_a(0), Some((1, 40.0)));
        assert_eq!(c.tightest_a(1), Some((1, 25.0)));
        assert_eq!(c.tightest_w(), Some((2, 15000.0)));
        assert_eq!(c.limits[2].source, LimitSource::Other);
        let f = FailSafeState {
            active: true,
            reasons: vec![
                FailSafeReason { subject: "main".into(), kind: "meter_stale".into(), since: None },
                FailSafeReason { subject: "CP-1".into(), kind: "charger_not_answering".into(), since: None },
            ],
        };
        assert_eq!(f.key()[0].0, "CP-1");
        assert_eq!(f.summary(), "meter_stale at main; charger_not_answering at CP-1");
    }
}
