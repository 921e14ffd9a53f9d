//! Runs every numbered scenario in `tests/balancer_scenarios/` (a new file is picked up
//! automatically): a site, then steps in time, each with what changed (building load,
//! meters, cars, chargers, external limits) and the expected setpoints, paused sessions,
//! fail-safe subjects and overload warnings. Every allocation must also pass `verify`.
//!
//! The runner simulates the physics between steps, so scenarios stay short: an EV draws
//! `min(its last setpoint, its demand)` on the phases it uses; a charger that does not
//! answer keeps its last limit until that expires, then its own safe current; a meter reads
//! the load attached to its node and every node below it plus the EV draws below it.
//!
//! File format (TOML):
//! ```toml
//! description = "..."
//! tolerance_a = 0.05            # optional
//! [config]                      # optional BalancerConfig fields
//! [[node]]                      # balancer::Node fields
//! [[charger]]                   # balancer::ChargerPoint fields
//! [[step]]
//! name = "..."
//! at_s = 0.0
//! load = { grid = [10, 0, 0] }  # non-EV load attached at a node (A per phase), kept
//! meter_down = ["grid"]         # these meters stop reporting (none reported yet: start-up)
//! meter_up = ["grid"]
//! plug = { cp1 = { demand_a = 16, ev_phases = 1 } }   # a session starts now
//! demand = { cp1 = 10 }         # the EV now takes at most this
//! unplug = ["cp1"]
//! lost = { cp1 = { valid_for_s = 30, safe_current_a = 6 } }   # stops answering
//! back = ["cp1"]
//! external = { import_limit_w = 11000 }   # balancer::ExternalLimits (times in ms), kept
//! expect = { cp1 = 16.0 }       # setpoint (A) of the listed chargers
//! paused = ["cp2"]              # exactly these are paused (default: none)
//! fail_safe = ["grid", "cp1"]   # exactly these subjects are in fail-safe (default: none)
//! overloaded = ["grid"]         # exactly these nodes have overload warnings (default: none)
//! ```
#![allow(clippy::unwrap_used)]

use edge_agent::balancer::{
    Allocation, BalancerConfig, BalancerInput, ChargerPoint, ChargerState, ExternalLimits, Link, Measurements,
    MeterReading, Node, Session, Site, Warning, balance, verify,
};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    #[serde(default)]
    config: BalancerConfig,
    #[serde(default = "default_tolerance")]
    tolerance_a: f64,
    node: Vec<Node>,
    charger: Vec<ChargerPoint>,
    step: Vec<Step>,
}

fn default_tolerance() -> f64 {
    0.05
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    name: String,
    at_s: f64,
    #[serde(default)]
    load: BTreeMap<String, [f64; 3]>,
    #[serde(default)]
    meter_down: Vec<String>,
    #[serde(default)]
    meter_up: Vec<String>,
    #[serde(default)]
    plug: BTreeMap<String, Plug>,
    #[serde(default)]
    demand: BTreeMap<String, f64>,
    #[serde(default)]
    unplug: Vec<String>,
    #[serde(default)]
    lost: BTreeMap<String, Lost>,
    #[serde(default)]
    back: Vec<String>,
    #[serde(default)]
    external: Option<ExternalLimits>,
    #[serde(default)]
    expect: BTreeMap<String, f64>,
    #[serde(default)]
    paused: Vec<String>,
    #[serde(default)]
    fail_safe: Vec<String>,
    #[serde(default)]
    overloaded: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Plug {
    #[serde(default)]
    demand_a: Option<f64>,
    #[serde(default)]
    ev_phases: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lost {
    valid_for_s: f64,
    safe_current_a: f64,
}

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/balancer_scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    files
}

fn ms(s: f64) -> u64 {
    (s * 1000.0).round() as u64
}

/// Runs one scenario; returns the failures (empty: passed).
fn run(path: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let sc: Scenario = match toml::from_str(&text) {
        Ok(s) => s,
        Err(e) => return vec![format!("{name}: does not parse: {e}")],
    };
    assert!(!sc.description.is_empty(), "{name}: empty description");
    let site = match Site::try_from_parts(sc.node.clone(), sc.charger.clone()) {
        Ok(s) => s,
        Err(e) => return vec![format!("{name}: invalid site: {e}")],
    };
    let chargers = site.chargers();
    let charger_pos = |id: &str| chargers.iter().position(|c| c.id.as_str() == id);
    let nodes = site.tree().nodes();
    let node_pos = |id: &str| nodes.iter().position(|n| n.id.as_str() == id);

    let mut failures = Vec::new();
    let mut fail = |step: &str, msg: String| failures.push(format!("{name} / {step}: {msg}"));
    let mut states = vec![ChargerState::default(); chargers.len()];
    let mut demand: Vec<Option<f64>> = vec![None; chargers.len()];
    let mut load = vec![[0.0f64; 3]; nodes.len()];
    let mut meter_up = vec![true; nodes.len()];
    let mut measurements = Measurements::default();
    let mut external = ExternalLimits::default();
    let mut previous: Option<Allocation> = None;

    for step in &sc.step {
        let now = ms(step.at_s);
        let s = step.name.as_str();
        // What changed.
        for (id, l) in &step.load {
            match node_pos(id) {
                Some(i) => load[i] = *l,
                None => fail(s, format!("load on unknown node {id}")),
            }
        }
        for (list, up) in [(&step.meter_down, false), (&step.meter_up, true)] {
            for id in list {
                match node_pos(id) {
                    Some(i) => meter_up[i] = up,
                    None => fail(s, format!("unknown meter {id}")),
                }
            }
        }
        for (id, plug) in &step.plug {
            let Some(i) = charger_pos(id) else {
                fail(s, format!("unknown charger {id}"));
                continue;
            };
            states[i].session = Some(Session { started_ms: now, demand_a: plug.demand_a, ev_phases: plug.ev_phases });
            demand[i] = plug.demand_a;
        }
        for (id, d) in &step.demand {
            let Some(i) = charger_pos(id) else {
                fail(s, format!("unknown charger {id}"));
                continue;
            };
            demand[i] = Some(*d);
            if let Some(sess) = &mut states[i].session {
                sess.demand_a = Some(*d);
            }
        }
        for id in &step.unplug {
            let Some(i) = charger_pos(id) else {
                fail(s, format!("unknown charger {id}"));
                continue;
            };
            states[i].session = None;
            demand[i] = None;
        }
        for (id, lost) in &step.lost {
            let Some(i) = charger_pos(id) else {
                fail(s, format!("unknown charger {id}"));
                continue;
            };
            states[i].link = Link::NotAnswering {
                since_ms: now,
                last_limit_a: None,
                limit_valid_until_ms: now + ms(lost.valid_for_s),
                safe_current_a: lost.safe_current_a,
            };
        }
        for id in &step.back {
            let Some(i) = charger_pos(id) else {
                fail(s, format!("unknown charger {id}"));
                continue;
            };
            states[i].link = Link::Answering;
        }
        if let Some(e) = &step.external {
            external = e.clone();
        }

        // Physics since the last step: EV draws, then meter readings.
        let mut site_draw = vec![[0.0f64; 3]; nodes.len()];
        for (i, c) in chargers.iter().enumerate() {
            let Some(sess) = states[i].session else {
                states[i].measured_a = [0.0; 3];
                continue;
            };
            let last = previous.as_ref().map_or(0.0, |p| p.setpoints[i].current_a);
            let limit = match states[i].link {
                Link::NotAnswering { limit_valid_until_ms, safe_current_a, .. } if now >= limit_valid_until_ms => {
                    safe_current_a
                }
                _ => last,
            };
            let draw = limit.min(demand[i].unwrap_or(f64::INFINITY));
            let used = usize::from(sess.ev_phases.unwrap_or(3).clamp(1, 3));
            let mut per_charger_phase = [0.0; 3];
            for (cp, d) in per_charger_phase.iter_mut().enumerate().take(used) {
                if let Some(p) = c.wiring.site_phase(cp) {
                    *d = draw;
                    let mut n = Some(site.charger_node(i));
                    while let Some(at) = n {
                        site_draw[at][p.index()] += draw;
                        n = site.tree().parent(at);
                    }
                }
            }
            // A charger that does not answer reports nothing: its last measurement stays.
            if states[i].link == Link::Answering {
                states[i].measured_a = per_charger_phase;
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            if !node.metered || !meter_up[i] {
                continue;
            }
            let mut reading = site_draw[i];
            for l in &load[i..site.tree().subtree_end(i)] {
                for (r, x) in reading.iter_mut().zip(l) {
                    *r += x;
                }
            }
            measurements.meters.insert(node.id.clone(), MeterReading { current_a: reading, at_ms: now, stale: false });
        }

        let input = BalancerInput {
            site: &site,
            states: &states,
            measurements: &measurements,
            external: &external,
            previous: previous.as_ref(),
            now_ms: now,
            config: &sc.config,
        };
        let out = match balance(&input) {
            Ok(o) => o,
            Err(e) => {
                fail(s, format!("balance failed: {e}"));
                break;
            }
        };
        if let Err(v) = verify(&out, &input) {
            fail(s, format!("verify refused the allocation: {v:?}"));
        }
        let again = balance(&input).unwrap();
        if again != out {
            fail(s, "not deterministic".into());
        }

        let show = || {
            out.setpoints
                .iter()
                .map(|sp| format!("{}={:.2}{}", sp.charger, sp.current_a, if sp.paused { "(paused)" } else { "" }))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for (id, want) in &step.expect {
            match out.setpoints.iter().find(|sp| sp.charger.as_str() == id) {
                Some(sp) if (sp.current_a - want).abs() <= sc.tolerance_a => {}
                Some(sp) => {
                    fail(s, format!("{id}: {} A, expected {want} A ({:?}); all: {}", sp.current_a, sp.reason, show()))
                }
                None => fail(s, format!("expected unknown charger {id}")),
            }
        }
        let paused: BTreeSet<&str> =
            out.setpoints.iter().filter(|sp| sp.paused).map(|sp| sp.charger.as_str()).collect();
        let want: BTreeSet<&str> = step.paused.iter().map(String::as_str).collect();
        if paused != want {
            fail(s, format!("paused {paused:?}, expected {want:?}; all: {}", show()));
        }
        let fs: BTreeSet<&str> = out.fail_safe.iter().map(|f| f.subject.id()).collect();
        let want: BTreeSet<&str> = step.fail_safe.iter().map(String::as_str).collect();
        if fs != want {
            fail(s, format!("fail-safe {:?}, expected {want:?}", out.fail_safe));
        }
        let ov: BTreeSet<&str> = out
            .warnings
            .iter()
            .map(|w| match w {
                Warning::Overload { node, .. } => node.as_str(),
            })
            .collect();
        let want: BTreeSet<&str> = step.overloaded.iter().map(String::as_str).collect();
        if ov != want {
            fail(s, format!("overloads {:?}, expected {want:?}", out.warnings));
        }
        previous = Some(out);
    }
    failures
}

#[test]
fn balancer_scenarios() {
    let files = scenario_files();
    let mut failures = Vec::new();
    for f in &files {
        failures.extend(run(f));
    }
    assert!(failures.is_empty(), "{} scenario failure(s):\n{}", failures.len(), failures.join("\n"));
    println!("{} balancer scenarios passed", files.len());
}
