//! The site-energy part of the configuration: `[balancer]`, `[[circuits]]`, where each
//! charger hangs and how it is wired (keys on `[[chargers]]`), and `[[charger_models]]`
//! quirks. [`EnergyPlan::build`] turns it into the balancer's [`Site`] plus what the
//! control loop needs per charger (safe current, hard cap, quirks).

use super::{ChargerConfig, Config, ConfigError, find_key_line};
use crate::balancer::{BalancerConfig, ChargerId, ChargerPoint, Fairness, Node, NodeId, Site, Wiring};
// The balancer's own defaults, so the two never disagree.
pub(super) use crate::balancer::model_defaults::{
    default_hysteresis, default_min_current, default_pause_below, default_resolution, default_voltage,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// `[balancer]`: the control loop's tuning. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerSection {
    /// The loop re-runs at least this often (it also runs on every meter reading, status
    /// change, transaction start or stop and limit change).
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    #[serde(default)]
    pub fairness: Fairness,
    /// No session gets less than this (A per phase); below it, it is paused.
    #[serde(default = "default_pause_below")]
    pub pause_below_a: f64,
    /// A paused session resumes only when its floor plus this fits.
    #[serde(default = "default_hysteresis")]
    pub resume_hysteresis_a: f64,
    /// A paused session stays paused at least this long.
    #[serde(default = "default_min_s")]
    pub min_pause_s: u64,
    /// A running session is not paused for others before this (a limit still pauses it).
    #[serde(default = "default_min_s")]
    pub min_run_s: u64,
    /// Setpoints are rounded down to a multiple of this (A).
    #[serde(default = "default_resolution")]
    pub resolution_a: f64,
    /// A new profile goes out only when a setpoint moves by at least this (A); a pause, a
    /// resume and a lower limit needed for safety always go out.
    #[serde(default = "default_threshold")]
    pub change_threshold_a: f64,
    /// The loop's profiles end this long after they are sent (then the charger falls back
    /// to its safe current); the loop renews them at half this.
    #[serde(default = "default_validity")]
    pub profile_validity_s: u64,
    /// Time an EV gets to follow a new limit before its measured draw is trusted again.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
}

impl Default for BalancerSection {
    fn default() -> Self {
        BalancerSection {
            tick_ms: default_tick_ms(),
            fairness: Fairness::default(),
            pause_below_a: default_pause_below(),
            resume_hysteresis_a: default_hysteresis(),
            min_pause_s: default_min_s(),
            min_run_s: default_min_s(),
            resolution_a: default_resolution(),
            change_threshold_a: default_threshold(),
            profile_validity_s: default_validity(),
            settle_ms: default_settle(),
        }
    }
}

fn default_tick_ms() -> u64 {
    1000
}
fn default_min_s() -> u64 {
    60
}
fn default_threshold() -> f64 {
    0.5
}
fn default_validity() -> u64 {
    120
}
fn default_settle() -> u64 {
    4000
}
pub(super) fn default_max_current() -> f64 {
    32.0
}
pub(super) fn default_connectors() -> u32 {
    1
}

/// A per-phase limit: one number for all three phases or `[L1, L2, L3]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PhaseLimit {
    All(f64),
    Each([f64; 3]),
}

impl PhaseLimit {
    pub fn per_phase(self) -> [f64; 3] {
        match self {
            PhaseLimit::All(a) => [a; 3],
            PhaseLimit::Each(a) => a,
        }
    }
}

/// One `[[circuits]]` entry: the grid connection (no parent), a sub-board or a feeder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    pub id: String,
    #[serde(default)]
    pub parent: Option<String>,
    /// Fuse or breaker rating (A per phase).
    #[serde(default)]
    pub limit_a: Option<PhaseLimit>,
    /// Power limit (W) over all phases.
    #[serde(default)]
    pub power_limit_w: Option<f64>,
    /// What the EVs below may draw in total (A per phase) while this circuit's meter is
    /// stale or has not reported yet.
    #[serde(default)]
    pub safe_current_a: f64,
    #[serde(default = "default_voltage")]
    pub voltage_v: f64,
}

/// A charger-model quirk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quirk {
    /// Ignores TxProfile: setpoints go out as TxDefaultProfile on the connector.
    TxDefaultProfile,
    /// Takes only stack level 0.
    StackLevelZero,
    /// Takes limits in W, not A.
    Watts,
    /// Takes no charging profile at all: the last resort is ChangeAvailability
    /// (Inoperative to pause, Operative to resume), and the balancer treats it as on/off.
    NoProfiles,
    /// Rejects ChargePointMaxProfile: none is sent at boot.
    NoMaxProfile,
}

impl Quirk {
    pub const ALL: [Quirk; 5] =
        [Quirk::TxDefaultProfile, Quirk::StackLevelZero, Quirk::Watts, Quirk::NoProfiles, Quirk::NoMaxProfile];

    pub fn as_str(self) -> &'static str {
        match self {
            Quirk::TxDefaultProfile => "tx_default_profile",
            Quirk::StackLevelZero => "stack_level_zero",
            Quirk::Watts => "watts",
            Quirk::NoProfiles => "no_profiles",
            Quirk::NoMaxProfile => "no_max_profile",
        }
    }
}

/// One `[[charger_models]]` entry: quirks for every charger whose BootNotification names
/// this vendor and model (case-insensitive; a trailing `*` in `model` matches a prefix).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargerModelConfig {
    pub vendor: String,
    pub model: String,
    #[serde(default)]
    pub quirks: Vec<Quirk>,
}

impl ChargerModelConfig {
    pub fn matches(&self, vendor: &str, model: &str) -> bool {
        if !self.vendor.eq_ignore_ascii_case(vendor) {
            return false;
        }
        match self.model.strip_suffix('*') {
            Some(prefix) => model.len() >= prefix.len() && model[..prefix.len()].eq_ignore_ascii_case(prefix),
            None => self.model.eq_ignore_ascii_case(model),
        }
    }
}

/// One balanced connector and what the loop needs to drive it.
#[derive(Debug, Clone, PartialEq)]
pub struct PointPlan {
    /// The balancer's id: `STATION:CONNECTOR`.
    pub id: ChargerId,
    pub station: String,
    pub connector: u32,
    /// The TxDefaultProfile limit the charger falls back to when the agent's profiles end.
    pub safe_current_a: f64,
    /// The ChargePointMaxProfile limit sent at boot: the tightest limit on its path, at most
    /// its max current per connector times its connectors.
    pub hard_cap_a: f64,
    pub phases: usize,
    pub voltage_v: f64,
    /// Quirks from its `[[chargers]]` entry; model quirks are added once it boots.
    pub quirks: Vec<Quirk>,
}

/// The configured site as the loop runs it.
#[derive(Debug, Clone)]
pub struct EnergyPlan {
    pub site: Site,
    /// Per balancer charger, in [`Site::chargers`] order.
    pub points: Vec<PointPlan>,
    pub balancer: BalancerConfig,
    pub section: BalancerSection,
    pub models: Vec<ChargerModelConfig>,
    /// Meter id → circuit.
    pub meter_nodes: BTreeMap<String, NodeId>,
}

impl EnergyPlan {
    /// The plan, or `None` when no circuit is configured (no balancing). Errors are
    /// config errors with file, line and key.
    pub fn build(config: &Config, path: &Path, text: &str) -> Result<Option<EnergyPlan>, Vec<ConfigError>> {
        let mut errs = Errs { path, text, list: Vec::new() };
        let s = &config.balancer;
        let positive = |v: f64| v.is_finite() && v >= 0.0;
        if !(50..=60_000).contains(&s.tick_ms) {
            errs.add("balancer", "tick_ms", None, format!("{} ms: use 50 to 60000", s.tick_ms));
        }
        for (key, v, max) in [
            ("pause_below_a", s.pause_below_a, 100.0),
            ("resume_hysteresis_a", s.resume_hysteresis_a, 100.0),
            ("resolution_a", s.resolution_a, 10.0),
            ("change_threshold_a", s.change_threshold_a, 100.0),
        ] {
            if !positive(v) || v > max {
                errs.add("balancer", key, None, format!("{v}: use 0 to {max}"));
            }
        }
        if !(10..=86_400).contains(&s.profile_validity_s) {
            errs.add("balancer", "profile_validity_s", None, format!("{} s: use 10 to 86400", s.profile_validity_s));
        }
        if s.settle_ms > 600_000 {
            errs.add("balancer", "settle_ms", None, format!("{} ms: use 0 to 600000", s.settle_ms));
        }

        if config.circuits.is_empty() {
            for (i, c) in config.chargers.iter().enumerate() {
                if c.circuit.is_some() {
                    errs.add("chargers", "circuit", Some(i), "no [[circuits]] are configured".into());
                }
            }
            for (i, m) in config.meters.iter().enumerate() {
                if let Some(node) = &m.node {
                    errs.add(
                        "meters",
                        "circuit",
                        Some(i),
                        format!("circuit {node:?} is not among [[circuits]] (none is)"),
                    );
                }
            }
            return if errs.list.is_empty() { Ok(None) } else { Err(errs.list) };
        }

        let mut meter_nodes = BTreeMap::new();
        let mut metered: HashMap<String, usize> = HashMap::new();
        for (i, m) in config.meters.iter().enumerate() {
            if let Some(node) = &m.node {
                if !config.circuits.iter().any(|c| &c.id == node) {
                    errs.add("meters", "circuit", Some(i), format!("circuit {node:?} is not among [[circuits]]"));
                } else if let Ok(id) = node.parse::<NodeId>() {
                    meter_nodes.insert(m.id.clone(), id);
                    metered.insert(node.clone(), i);
                }
            }
        }

        let mut nodes = Vec::new();
        for (i, c) in config.circuits.iter().enumerate() {
            let id = match c.id.parse::<NodeId>() {
                Ok(id) => id,
                Err(e) => {
                    errs.add("circuits", "id", Some(i), e.to_string());
                    continue;
                }
            };
            let parent = match c.parent.as_deref().map(str::parse::<NodeId>).transpose() {
                Ok(p) => p,
                Err(e) => {
                    errs.add("circuits", "parent", Some(i), e.to_string());
                    continue;
                }
            };
            let limit_a = c.limit_a.map(PhaseLimit::per_phase);
            if let Some(l) = limit_a
                && l.iter().any(|v| !positive(*v) || *v > crate::balancer::MAX_CONFIG_VALUE)
            {
                errs.add("circuits", "limit_a", Some(i), format!("{l:?}: every phase limit must be 0 to 100000 A"));
            }
            if let Some(w) = c.power_limit_w
                && (!positive(w) || w > crate::balancer::MAX_CONFIG_POWER_W)
            {
                errs.add("circuits", "power_limit_w", Some(i), format!("{w}: use 0 to 1e9 W"));
            }
            if !positive(c.safe_current_a) {
                errs.add("circuits", "safe_current_a", Some(i), format!("{}: must be 0 or more", c.safe_current_a));
            }
            if let Some(l) = limit_a
                && l.iter().any(|v| c.safe_current_a > *v)
            {
                errs.add(
                    "circuits",
                    "safe_current_a",
                    Some(i),
                    format!("{} A is above the circuit's limit {l:?}", c.safe_current_a),
                );
            }
            if !(c.voltage_v.is_finite() && (50.0..=1000.0).contains(&c.voltage_v)) {
                errs.add("circuits", "voltage_v", Some(i), format!("{}: use 50 to 1000 V", c.voltage_v));
            }
            nodes.push(Node {
                id,
                parent,
                limit_a,
                power_limit_w: c.power_limit_w,
                metered: metered.contains_key(&c.id),
                safe_current_a: c.safe_current_a,
                voltage_v: c.voltage_v,
            });
        }
        if !errs.list.is_empty() {
            return Err(errs.list);
        }
        let tree = match crate::balancer::CircuitTree::try_new(nodes) {
            Ok(t) => t,
            Err(e) => {
                errs.add("circuits", "parent", None, format!("the circuits do not form one tree: {e}"));
                return Err(errs.list);
            }
        };

        let mut points = Vec::new();
        let mut chargers = Vec::new();
        for (i, c) in config.chargers.iter().enumerate() {
            let Some(circuit) = &c.circuit else { continue };
            let Ok(node) = circuit.parse::<NodeId>() else {
                errs.add("chargers", "circuit", Some(i), format!("{circuit:?} is not a circuit id"));
                continue;
            };
            let Some(pos) = tree.position(&node) else {
                errs.add("chargers", "circuit", Some(i), format!("circuit {circuit:?} is not among [[circuits]]"));
                continue;
            };
            let wiring = match c.wiring.as_deref().map(str::parse::<Wiring>).transpose() {
                Ok(w) => w.unwrap_or_default(),
                Err(e) => {
                    errs.add(
                        "chargers",
                        "wiring",
                        Some(i),
                        format!("{e}: use \"L1\", \"L2\", \"L3\", \"L1-L2-L3\", \"L2-L3-L1\" or \"L3-L1-L2\""),
                    );
                    continue;
                }
            };
            if !(c.max_current_a.is_finite() && c.max_current_a > 0.0 && c.max_current_a <= 1000.0) {
                errs.add("chargers", "max_current_a", Some(i), format!("{}: use above 0 to 1000 A", c.max_current_a));
                continue;
            }
            if !positive(c.min_current_a) || c.min_current_a > c.max_current_a {
                errs.add(
                    "chargers",
                    "min_current_a",
                    Some(i),
                    format!("{}: use 0 to max_current_a ({})", c.min_current_a, c.max_current_a),
                );
                continue;
            }
            if !(1..=16).contains(&c.connectors) {
                errs.add("chargers", "connectors", Some(i), format!("{}: use 1 to 16", c.connectors));
                continue;
            }
            // The tightest per-phase limit on its path.
            let path_limit = tree
                .path(pos)
                .filter_map(|p| tree.nodes()[p].limit_a)
                .flat_map(|l| l.into_iter())
                .fold(f64::INFINITY, f64::min);
            let hard_cap = (c.max_current_a * f64::from(c.connectors)).min(path_limit);
            let safe = match c.safe_current_a {
                Some(v) if !positive(v) || v > c.max_current_a => {
                    errs.add("chargers", "safe_current_a", Some(i), format!("{v}: use 0 to max_current_a"));
                    continue;
                }
                Some(v) => v,
                None => derived_safe_current(config, &tree, pos, c),
            };
            for connector in 1..=c.connectors {
                let id = match ChargerId::try_new(format!("{}:{connector}", c.id.as_str())) {
                    Ok(id) => id,
                    Err(e) => {
                        errs.add("chargers", "id", Some(i), e.to_string());
                        break;
                    }
                };
                let mut point = ChargerPoint::new(id.clone(), node.clone(), wiring, c.max_current_a);
                point.min_current_a = c.min_current_a;
                point.priority = c.priority;
                point.voltage_v = tree.nodes()[pos].voltage_v;
                if c.quirks.contains(&Quirk::NoProfiles) {
                    // On/off only: the balancer gives it all or nothing.
                    point.min_current_a = point.max_current_a;
                }
                points.push(PointPlan {
                    id,
                    station: c.id.as_str().to_owned(),
                    connector,
                    safe_current_a: safe,
                    hard_cap_a: hard_cap,
                    phases: wiring.phase_count(),
                    voltage_v: point.voltage_v,
                    quirks: c.quirks.clone(),
                });
                chargers.push(point);
            }
        }
        // The safe currents must fit every limit on their own: they are what the chargers
        // draw when the agent is gone.
        for (pos, n) in tree.nodes().iter().enumerate() {
            let Some(limit) = n.limit_a else { continue };
            let end = tree.subtree_end(pos);
            let mut sum = [0.0f64; 3];
            for (p, point) in points.iter().zip(&chargers) {
                let Some(at) = tree.position(&point.node) else { continue };
                if (pos..end).contains(&at) {
                    for (k, used) in point.wiring.site_phases(None).iter().enumerate() {
                        if *used {
                            sum[k] += p.safe_current_a;
                        }
                    }
                }
            }
            if (0..3).any(|k| sum[k] > limit[k] + 1e-9) {
                let idx = config.circuits.iter().position(|c| c.id == n.id.as_str());
                errs.add(
                    "circuits",
                    "limit_a",
                    idx,
                    format!(
                        "the chargers' safe currents below {:?} add up to {:?} A per phase, above its limit {:?}: \
                         lower safe_current_a on its chargers (0 is allowed: they then pause while the agent is away)",
                        n.id.as_str(),
                        sum,
                        limit
                    ),
                );
            }
        }
        let site = match Site::try_new(tree, chargers) {
            Ok(s) => s,
            Err(e) => {
                errs.add("chargers", "circuit", None, e.to_string());
                return Err(errs.list);
            }
        };
        for (i, m) in config.charger_models.iter().enumerate() {
            if m.vendor.trim().is_empty() {
                errs.add("charger_models", "vendor", Some(i), "must name the vendor of BootNotification".into());
            }
            if m.model.trim().is_empty() {
                errs.add(
                    "charger_models",
                    "model",
                    Some(i),
                    "must name the model (a trailing * matches a prefix)".into(),
                );
            }
        }
        if !errs.list.is_empty() {
            return Err(errs.list);
        }
        let stale_after_ms = config
            .meters
            .iter()
            .filter(|m| m.node.is_some())
            .map(|m| m.period_ms.saturating_mul(u64::from(m.stale_after_periods)))
            .max()
            .unwrap_or(10_000);
        let balancer = BalancerConfig {
            fairness: s.fairness,
            pause_below_a: s.pause_below_a,
            resume_hysteresis_a: s.resume_hysteresis_a,
            min_pause_ms: s.min_pause_s.saturating_mul(1000),
            min_run_ms: s.min_run_s.saturating_mul(1000),
            // The meter tasks mark a meter stale themselves (the balancer then gets no
            // reading); this is the backstop for a reading that stops changing.
            stale_after_ms: stale_after_ms.max(1000),
            resolution_a: s.resolution_a,
        };
        Ok(Some(EnergyPlan {
            site,
            points,
            balancer,
            section: s.clone(),
            models: config.charger_models.clone(),
            meter_nodes,
        }))
    }
}

/// The default safe current of a charger: an equal share of the tightest limit on its
/// path among all connectors below that limit, or 0 when that share is under 6 A.
fn derived_safe_current(config: &Config, tree: &crate::balancer::CircuitTree, pos: usize, c: &ChargerConfig) -> f64 {
    let mut share = c.max_current_a;
    for p in tree.path(pos) {
        let node = &tree.nodes()[p];
        let Some(limit) = node.limit_a else { continue };
        let end = tree.subtree_end(p);
        let below: u32 = config
            .chargers
            .iter()
            .filter(|o| {
                o.circuit
                    .as_deref()
                    .and_then(|id| id.parse::<NodeId>().ok())
                    .and_then(|id| tree.position(&id))
                    .is_some_and(|at| (p..end).contains(&at))
            })
            .map(|o| o.connectors.max(1))
            .sum();
        let min_limit = limit.into_iter().fold(f64::INFINITY, f64::min);
        share = share.min(min_limit / f64::from(below.max(1)));
    }
    let share = (share * 10.0).floor() / 10.0;
    if share < 6.0 { 0.0 } else { share }
}

/// Collects config errors with their file, line and dotted key.
struct Errs<'a> {
    path: &'a Path,
    text: &'a str,
    list: Vec<ConfigError>,
}

impl Errs<'_> {
    fn add(&mut self, table: &str, key: &str, index: Option<usize>, reason: String) {
        let dotted = match index {
            Some(i) => format!("{table}[{i}].{key}"),
            None => format!("{table}.{key}"),
        };
        let line = find_key_line(self.text, table, key, index)
            .or_else(|| {
                (table == "meters" && key == "circuit")
                    .then(|| find_key_line(self.text, table, "node", index))
                    .flatten()
            })
            .or_else(|| index.and_then(|i| find_key_line(self.text, table, "id", Some(i))));
        self.list.push(ConfigError { file: self.path.to_owned(), line, key: Some(dotted), reason });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigErrors};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("edge.toml"), text)
    }

    fn errors(text: &str) -> String {
        parse(text).err().map(|e| e.to_string()).unwrap_or_else(|| "no error".into())
    }

    const SITE: &str = "[site]\nid = \"s1\"\n\n[ocpp]\nsecurity_profile = 0\n\n";
    const BASE: &str =
        "[site]\nid = \"s1\"\n\n[ocpp]\nsecurity_profile = 0\n\n[[circuits]]\nid = \"grid\"\nlimit_a = 32\n\n";

    #[test]
    fn a_site_becomes_a_plan_with_one_point_per_connector() {
        let c = parse(&format!(
            "{BASE}[[circuits]]\nid = \"garage\"\nparent = \"grid\"\nlimit_a = [16, 16, 20]\n\n\
             [[chargers]]\nid = \"CP-1\"\ncircuit = \"garage\"\nconnectors = 2\nwiring = \"L2-L3-L1\"\n\n\
             [[chargers]]\nid = \"CP-2\"\ncircuit = \"grid\"\nwiring = \"L3\"\nsafe_current_a = 6\nquirks = [\"watts\"]\n"
        ))
        .expect("valid");
        let plan = c.energy.expect("a plan");
        let ids: Vec<&str> = plan.points.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["CP-1:1", "CP-1:2", "CP-2:1"]);
        // Equal share of the garage's 16 A between its two connectors: 8 A each.
        assert_eq!(plan.points[0].safe_current_a, 8.0);
        // Hard cap: the tightest limit on the path.
        assert_eq!(plan.points[0].hard_cap_a, 16.0);
        assert_eq!(plan.points[2].hard_cap_a, 32.0);
        assert_eq!(plan.points[2].phases, 1);
        assert_eq!(plan.points[2].quirks, vec![super::Quirk::Watts]);
        assert_eq!(plan.site.chargers()[0].wiring.to_string(), "L2-L3-L1");
    }

    #[test]
    fn no_circuits_no_plan() {
        assert!(parse("[site]\nid = \"s1\"\n").expect("valid").energy.is_none());
    }

    #[test]
    fn energy_errors_name_file_line_key_and_reason() {
        let e = errors(&format!("{BASE}[[chargers]]\nid = \"CP-1\"\ncircuit = \"attic\"\n"));
        assert!(
            e.contains("edge.toml:13: key `chargers[0].circuit`: circuit \"attic\" is not among [[circuits]]"),
            "{e}"
        );
        let e = errors(&format!("{BASE}[[chargers]]\nid = \"CP-1\"\ncircuit = \"grid\"\nwiring = \"L4\"\n"));
        assert!(e.contains("key `chargers[0].wiring`"), "{e}");
        let e = errors(&format!(
            "{BASE}[[chargers]]\nid = \"CP-1\"\ncircuit = \"grid\"\nsafe_current_a = 20\n\n\
             [[chargers]]\nid = \"CP-2\"\ncircuit = \"grid\"\nsafe_current_a = 20\n"
        ));
        assert!(e.contains("safe currents below \"grid\" add up to [40.0, 40.0, 40.0] A"), "{e}");
        let e = errors(&format!(
            "{SITE}[[circuits]]\nid = \"a\"\nparent = \"b\"\n\n[[circuits]]\nid = \"b\"\nparent = \"a\"\n"
        ));
        assert!(e.contains("do not form one tree"), "{e}");
        let e = errors(&format!("{BASE}[[chargers]]\nid = \"CP-1\"\ncircuit = \"grid\"\nquirks = [\"fast\"]\n"));
        assert!(e.contains("edge.toml:14") && e.contains("unknown variant `fast`"), "{e}");
        let e = errors(&format!("{BASE}[balancer]\ntick_ms = 5\n"));
        assert!(e.contains("key `balancer.tick_ms`: 5 ms: use 50 to 60000"), "{e}");
        let e = errors(&format!("{SITE}[[circuits]]\nid = \"grid\"\nlimit_a = -3\n"));
        assert!(e.contains("key `circuits[0].limit_a`"), "{e}");
        let e = errors(&format!("{SITE}[[chargers]]\nid = \"CP-1\"\ncircuit = \"grid\"\n"));
        assert!(e.contains("no [[circuits]] are configured"), "{e}");
    }

    #[test]
    fn model_quirks_match_vendor_and_model_prefix() {
        let m = super::ChargerModelConfig { vendor: "ACME".into(), model: "Wall*".into(), quirks: vec![] };
        assert!(m.matches("acme", "Wallbox Pro"));
        assert!(!m.matches("acme", "Pillar"));
        assert!(!m.matches("Other", "Wallbox"));
        let exact = super::ChargerModelConfig { model: "W1".into(), ..m };
        assert!(exact.matches("ACME", "w1") && !exact.matches("ACME", "W10"));
    }
}
