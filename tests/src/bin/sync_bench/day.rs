//! A site's day, minute by minute: every charger reports meter values every 60 s (in a
//! session `Sample.Periodic` with the transaction, between sessions `Sample.Clock`), and
//! runs sessions (plug in, start, charge, maybe suspend when the car is full, stop,
//! unplug) separated by idle gaps. Deterministic for a seed, so a run can be repeated.
//!
//! The measurands are those the charge-point simulator sends (its default
//! `MeterValuesSampledData`): energy register, power, current and voltage per phase, the
//! offered current and, in a session, the state of charge.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use shared_model::model::{ConnectorStatus, MeterSample};

/// What a charger does at one moment, in the order it reported it.
#[derive(Debug, Clone)]
pub enum Action {
    /// StatusNotification.
    Status { station: usize, status: ConnectorStatus, at: DateTime<Utc> },
    /// StartTransaction.
    Start { station: usize, meter_wh: i64, at: DateTime<Utc> },
    /// MeterValues (of the running transaction, if any).
    Meter { station: usize, samples: Vec<MeterSample>, at: DateTime<Utc> },
    /// StopTransaction.
    Stop { station: usize, meter_wh: i64, at: DateTime<Utc> },
}

impl Action {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Action::Status { at, .. }
            | Action::Start { at, .. }
            | Action::Meter { at, .. }
            | Action::Stop { at, .. } => *at,
        }
    }
}

/// Which samples a MeterValues carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Measurands {
    /// The simulator's set: 9 samples between sessions, 10 in a session.
    Sim,
    /// The energy register only.
    Energy,
}

/// The charge point id of charger `i` (0-based).
pub fn station_name(i: usize) -> String {
    format!("CP-{:03}", i + 1)
}

/// The id tag charger `i`'s sessions use.
pub fn tag_of(i: usize) -> String {
    format!("FLEET-{:04}", i + 1)
}

/// xorshift64*: deterministic and dependency free.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).unwrap_or(1).max(1);
        lo + i64::try_from(self.next() % span).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No car; the next one plugs in at this minute.
    Idle { plug_at: i64 },
    /// A session runs until `stop_at`; the car is full at `full_at`.
    Session { stop_at: i64, full_at: i64, suspended: bool },
    /// Stopped, the car is still plugged in until `unplug_at`.
    Leaving { unplug_at: i64 },
}

struct Charger {
    meter_wh: f64,
    soc: f64,
    amps: f64,
    phase: Phase,
}

/// The chargers of one site, stepped a minute at a time.
pub struct Day {
    start: DateTime<Utc>,
    minute: i64,
    chargers: Vec<Charger>,
    rng: Rng,
    measurands: Measurands,
}

impl Day {
    pub fn new(chargers: usize, start: DateTime<Utc>, seed: u64, measurands: Measurands) -> Day {
        let mut rng = Rng::new(seed);
        let chargers = (0..chargers)
            .map(|_| Charger {
                meter_wh: rng.range(100_000, 5_000_000) as f64,
                soc: 0.0,
                amps: [16.0, 16.0, 32.0, 10.0][usize::try_from(rng.next() % 4).unwrap_or(0)],
                phase: Phase::Idle { plug_at: rng.range(0, 120) },
            })
            .collect();
        Day { start, minute: 0, chargers, rng, measurands }
    }

    /// Everything the chargers report in the next minute, in time order.
    pub fn next_minute(&mut self) -> Vec<Action> {
        let m = self.minute;
        self.minute += 1;
        let base = self.start + ChronoDuration::minutes(m);
        let at = |s: i64| base + ChronoDuration::seconds(s);
        let mut out = Vec::with_capacity(self.chargers.len() + 4);
        for (i, c) in self.chargers.iter_mut().enumerate() {
            // Clock-aligned meter values, a little spread over the first seconds.
            let in_tx = matches!(c.phase, Phase::Session { .. });
            let power_w = match c.phase {
                Phase::Session { suspended: false, .. } => c.amps * 230.0 * 3.0,
                _ => 0.0,
            };
            c.meter_wh += power_w / 60.0;
            if in_tx && power_w > 0.0 {
                c.soc = (c.soc + power_w / 60.0 / 600.0).min(100.0);
            }
            let mv_at = at(i64::try_from(i % 5).unwrap_or(0));
            out.push(Action::Meter {
                station: i,
                samples: samples(self.measurands, c, power_w, in_tx, mv_at),
                at: mv_at,
            });
            match c.phase {
                Phase::Idle { plug_at } if m >= plug_at => {
                    out.push(Action::Status { station: i, status: ConnectorStatus::Preparing, at: at(10) });
                    out.push(Action::Start { station: i, meter_wh: c.meter_wh.round() as i64, at: at(20) });
                    out.push(Action::Status { station: i, status: ConnectorStatus::Charging, at: at(21) });
                    let stop_at = m + self.rng.range(30, 240);
                    let full_at = m + self.rng.range(20, stop_at - m + 30);
                    c.soc = self.rng.range(10, 60) as f64;
                    c.phase = Phase::Session { stop_at, full_at, suspended: false };
                }
                Phase::Session { stop_at, .. } if m >= stop_at => {
                    out.push(Action::Stop { station: i, meter_wh: c.meter_wh.round() as i64, at: at(40) });
                    out.push(Action::Status { station: i, status: ConnectorStatus::Finishing, at: at(41) });
                    c.phase = Phase::Leaving { unplug_at: m + self.rng.range(1, 10) };
                }
                Phase::Session { stop_at, full_at, suspended: false } if m >= full_at => {
                    out.push(Action::Status { station: i, status: ConnectorStatus::SuspendedEV, at: at(30) });
                    c.phase = Phase::Session { stop_at, full_at, suspended: true };
                }
                Phase::Leaving { unplug_at } if m >= unplug_at => {
                    out.push(Action::Status { station: i, status: ConnectorStatus::Available, at: at(50) });
                    c.phase = Phase::Idle { plug_at: m + self.rng.range(20, 180) };
                }
                _ => {}
            }
        }
        // Stable: a charger's own actions keep their order.
        out.sort_by_key(Action::at);
        out
    }
}

fn samples(measurands: Measurands, c: &Charger, power_w: f64, in_tx: bool, at: DateTime<Utc>) -> Vec<MeterSample> {
    let context = if in_tx { "Sample.Periodic" } else { "Sample.Clock" };
    let sample = |value: String, measurand: &str, unit: &str, phase: Option<&str>| MeterSample {
        timestamp: at,
        value,
        measurand: measurand.to_owned(),
        phase: phase.map(str::to_owned),
        location: Some("Outlet".to_owned()),
        unit: Some(unit.to_owned()),
        context: Some(context.to_owned()),
        format: Some("Raw".to_owned()),
    };
    let mut out = vec![sample(format!("{}", c.meter_wh.round() as i64), "Energy.Active.Import.Register", "Wh", None)];
    if measurands == Measurands::Energy {
        return out;
    }
    let amps = if power_w > 0.0 { c.amps } else { 0.0 };
    out.push(sample(format!("{power_w:.1}"), "Power.Active.Import", "W", None));
    for p in ["L1", "L2", "L3"] {
        out.push(sample(format!("{amps:.2}"), "Current.Import", "A", Some(p)));
    }
    for p in ["L1-N", "L2-N", "L3-N"] {
        out.push(sample("230.0".to_owned(), "Voltage", "V", Some(p)));
    }
    out.push(sample(format!("{:.1}", c.amps), "Current.Offered", "A", None));
    if in_tx {
        let mut soc = sample(format!("{:.0}", c.soc), "SoC", "Percent", None);
        soc.location = Some("EV".to_owned());
        out.push(soc);
    }
    out
}
