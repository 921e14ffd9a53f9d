//! Unit tests of the pure parts with injected instants: wiring, draws, readings, energy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveTime;
use shared_model::ocpp::v16::{ChargePointStatus, DiagnosticsStatus, FirmwareStatus};
use tokio::sync::watch;

use super::*;
use crate::chargepoint::{ChargePointState, ConnectorState};

fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn close(actual: [f64; 3], expected: [f64; 3]) -> bool {
    actual.iter().zip(expected).all(|(a, e)| (a - e).abs() < 1e-9)
}

/// A site at a fixed noon with a flat base load of `base` A per phase.
fn flat_site(base: [f64; 3]) -> SiteLoad {
    SiteLoad::new(LoadProfile::constant(base), SimClock::fixed(t(12, 0)))
}

fn approx(actual: Option<f64>, expected: f64, tolerance: f64) {
    match actual {
        Some(a) => assert!((a - expected).abs() <= tolerance, "{a} != {expected} ± {tolerance}"),
        None => panic!("no value, expected {expected}"),
    }
}

#[test]
fn a_single_phase_ev_on_l3_adds_only_to_l3() {
    let site = flat_site([10.0, 11.0, 12.0]);
    let ev = ManualDraw::new();
    site.attach_source(ev.clone(), Wiring::single(Phase::L3));
    ev.set_ev(16.0, 1);
    let now = Instant::now();
    let currents = site.currents(now);
    assert!(close(currents.chargers, [0.0, 0.0, 16.0]));
    assert!(close(currents.total, [10.0, 11.0, 28.0]));
    // A three-phase EV on a single-phase charger can only draw on that one phase.
    ev.set_ev(16.0, 3);
    assert!(close(site.currents(now).chargers, [0.0, 0.0, 16.0]));
}

#[test]
fn a_single_phase_ev_follows_the_rotation_of_a_three_phase_charger() {
    let site = flat_site([0.0; 3]);
    let ev = ManualDraw::new();
    site.attach_source(ev.clone(), Wiring::L2_L3_L1);
    ev.set_ev(10.0, 1);
    // Its phase 1 is the site's L2.
    assert!(close(site.currents(Instant::now()).chargers, [0.0, 10.0, 0.0]));
    // A three-phase EV adds equally, whatever the rotation.
    ev.set_ev(16.0, 3);
    assert!(close(site.currents(Instant::now()).chargers, [16.0; 3]));
    // Unequal phase currents show the rotation: charger phase 1 -> L2, 2 -> L3, 3 -> L1.
    ev.set([1.0, 2.0, 3.0]);
    assert!(close(site.currents(Instant::now()).chargers, [3.0, 1.0, 2.0]));
}

#[test]
fn two_evs_sum_and_detaching_removes_one() {
    let site = flat_site([20.0; 3]);
    let three = ManualDraw::new();
    let single = ManualDraw::new();
    let a = site.attach_source(three.clone(), Wiring::L1_L2_L3);
    let b = site.attach_source(single.clone(), Wiring::L3_L1_L2);
    three.set_ev(16.0, 3);
    single.set_ev(32.0, 1);
    let now = Instant::now();
    assert!(close(site.currents(now).total, [36.0, 36.0, 68.0]));
    // A closure is a draw too.
    let c = site.attach_source(|| [5.0, 0.0, 0.0], Wiring::single(Phase::L1));
    assert!(close(site.currents(now).total, [41.0, 36.0, 68.0]));
    assert!(site.detach(b));
    assert!(!site.detach(b));
    assert!(site.detach(c));
    assert!(close(site.currents(now).total, [36.0; 3]));
    assert!(site.detach(a));
    assert!(close(site.currents(now).total, [20.0; 3]));
}

#[test]
fn wirings_parse_and_reject_a_phase_used_twice() {
    assert_eq!("L2-L3-L1".parse::<Wiring>(), Ok(Wiring::L2_L3_L1));
    assert_eq!("l3,l1,l2".parse::<Wiring>(), Ok(Wiring::L3_L1_L2));
    assert_eq!("L2".parse::<Wiring>(), Ok(Wiring::single(Phase::L2)));
    assert_eq!(Wiring::from([Phase::L1]), Wiring::single(Phase::L1));
    assert_eq!(Wiring::try_from([Phase::L1, Phase::L2, Phase::L3]), Ok(Wiring::L1_L2_L3));
    assert_eq!(Wiring::L2_L3_L1.to_string(), "L2-L3-L1");
    assert_eq!(Wiring::single(Phase::L3).phases(), &[Phase::L3]);
    let twice = Wiring::try_three([Phase::L1, Phase::L2, Phase::L1]).err().map(|e| e.to_string());
    assert_eq!(twice.as_deref(), Some("invalid wiring: lists site phase L1 twice"));
    // Two-phase chargers exist: L1-L2 is a valid wiring with two charger phases.
    assert_eq!("L1-L2".parse::<Wiring>().map(|w| w.phase_count()), Ok(2));
    assert!("L1-L2-L3-L1".parse::<Wiring>().is_err());
    assert!("L4".parse::<Wiring>().is_err());
}

fn connector(id: u32, current_a: f64) -> ConnectorState {
    ConnectorState {
        id,
        status: if current_a > 0.0 { ChargePointStatus::Charging } else { ChargePointStatus::Available },
        operative: true,
        scheduled_operative: None,
        plugged: current_a > 0.0,
        transaction: None,
        profile_limit_a: None,
        offered_a: 32.0,
        current_a,
        power_w: current_a * 230.0,
        meter_wh: 0.0,
        reservation_id: None,
    }
}

fn cp_state(currents: &[f64]) -> ChargePointState {
    ChargePointState {
        id: "CP001".into(),
        connected: true,
        registration: None,
        heartbeat_interval: Duration::from_secs(300),
        meter_interval: Duration::from_secs(60),
        connectors: currents.iter().zip(1..).map(|(a, id)| connector(id, *a)).collect(),
        configuration: BTreeMap::new(),
        profiles: Vec::new(),
        local_list_version: 0,
        local_list: BTreeMap::new(),
        queued_messages: 0,
        firmware_status: FirmwareStatus::Idle,
        diagnostics_status: DiagnosticsStatus::Idle,
    }
}

#[test]
fn a_charge_point_draw_sums_its_connectors_and_stops_with_the_simulator() {
    let site = flat_site([0.0; 3]);
    let (tx, rx) = watch::channel(cp_state(&[0.0, 0.0]));
    site.attach_source(ChargePointDraw::new(rx, 1), Wiring::single(Phase::L2));
    let (tx3, rx3) = watch::channel(cp_state(&[0.0]));
    site.attach_source(ChargePointDraw::new(rx3, 3), Wiring::L3_L1_L2);
    let now = Instant::now();
    assert!(close(site.currents(now).chargers, [0.0; 3]));

    tx.send_replace(cp_state(&[16.0, 6.0]));
    tx3.send_replace(cp_state(&[11.0]));
    assert!(close(site.currents(now).chargers, [11.0, 33.0, 11.0]));

    // The simulator stopped: its EVs no longer draw.
    drop(tx);
    assert!(close(site.currents(now).chargers, [11.0; 3]));
}

#[test]
fn the_reading_is_volts_times_amps_per_phase() {
    let site = flat_site([10.0, 20.0, 30.0]);
    site.set_extra_load([0.0, 0.0, -40.0]);
    let r = site.reading(Instant::now());
    assert_eq!(r.currents_a, [Some(10.0), Some(20.0), Some(10.0)], "magnitudes");
    assert_eq!(r.voltages_v, [Some(230.0); 3]);
    assert_eq!(r.powers_w, [Some(2_300.0), Some(4_600.0), Some(-2_300.0)], "signed");
    approx(r.power_w, 4_600.0, 1e-9);
    approx(r.apparent_power_va, 9_200.0, 1e-9);
    approx(r.reactive_power_var, 0.0, 1e-9);
    approx(r.power_factor, 0.5, 1e-12);
    approx(r.frequency_hz, 50.0, 0.0);
    approx(r.line_voltages_v[0], 230.0 * 3f64.sqrt(), 1e-9);
    assert_eq!((r.energy_import_wh, r.energy_export_wh), (Some(0.0), Some(0.0)));
}

#[test]
fn power_factor_and_voltage_variation_are_deterministic() {
    let site = flat_site([10.0; 3]).with_power_factor(0.8).with_voltage(240.0).with_voltage_variation(3.0);
    let now = Instant::now();
    let r = site.reading(now);
    // At noon the daily sine is at half a turn: L1 sin(π) = 0, L2 sin(π - 2π/3), L3 sin(π - 4π/3).
    let expected = [240.0, 240.0 + 3.0 * (3f64.sqrt() / 2.0), 240.0 - 3.0 * (3f64.sqrt() / 2.0)];
    for (v, e) in r.voltages_v.iter().zip(expected) {
        approx(*v, e, 1e-9);
    }
    approx(r.power_w, 720.0 * 10.0 * 0.8, 1e-6);
    approx(r.apparent_power_va, 7_200.0, 1e-6);
    approx(r.reactive_power_var, 7_200.0 * 0.6, 1e-6);
    approx(r.power_factor, 0.8, 1e-12);
    assert_eq!(site.reading(now).voltages_v, r.voltages_v);
}

#[test]
fn energy_integrates_one_simulated_hour_on_a_fixed_clock() {
    let site = flat_site([10.0; 3]).with_energy(1_000.0, 0.0);
    let t0 = Instant::now();
    assert_eq!(site.reading(t0).energy_import_wh, Some(1_000.0));
    let r = site.reading(t0 + hours(1));
    approx(r.energy_import_wh, 1_000.0 + 6_900.0, 1e-6);
    // A reading with an earlier instant integrates nothing and does not move time back.
    approx(site.reading(t0).energy_import_wh, 7_900.0, 1e-6);
    approx(site.reading(t0 + hours(2)).energy_import_wh, 14_800.0, 1e-6);
    assert_eq!(site.energy_wh().1, 0.0);
}

#[test]
fn energy_integrates_in_simulated_time_on_a_compressed_clock() {
    let t0 = Instant::now();
    let site = SiteLoad::new(LoadProfile::constant([10.0; 3]), SimClock::compressed_at(t0, t(8, 0), 360.0));
    site.reading(t0);
    // 10 real seconds are one simulated hour: 10 A x 230 V x 3 phases x 1 h.
    let r = site.reading(t0 + Duration::from_secs(10));
    approx(r.energy_import_wh, 6_900.0, 1e-6);
}

#[test]
fn energy_follows_the_profile_between_two_readings() {
    // 0 A at midnight up to 120 A at noon, back to 0 at midnight: the morning averages 60 A.
    let profile = match LoadProfile::from_csv("00:00,0,0,0\n12:00,120,120,120\n", "ramp") {
        Ok(p) => p,
        Err(err) => panic!("{err}"),
    };
    let t0 = Instant::now();
    let site = SiteLoad::new(profile, SimClock::compressed_at(t0, t(0, 0), 3600.0));
    site.reading(t0);
    // 12 real seconds = 12 simulated hours, read only at the end.
    let r = site.reading(t0 + Duration::from_secs(12));
    approx(r.energy_import_wh, 60.0 * 230.0 * 3.0 * 12.0, 1e-3);
    approx(r.currents_a[0], 120.0, 1e-9);
}

#[test]
fn draws_count_from_the_reading_that_saw_them_and_export_is_separate() {
    let site = flat_site([0.0; 3]);
    let t0 = Instant::now();
    site.reading(t0);
    site.set_extra_load([10.0; 3]);
    // The meter saw no load at t0: the first hour is empty.
    approx(site.reading(t0 + hours(1)).energy_import_wh, 0.0, 1e-9);
    approx(site.reading(t0 + hours(2)).energy_import_wh, 6_900.0, 1e-6);
    site.set_extra_load([-20.0, 0.0, 0.0]);
    site.reading(t0 + hours(3));
    let r = site.reading(t0 + hours(4));
    approx(r.energy_import_wh, 13_800.0, 1e-6);
    approx(r.energy_export_wh, 4_600.0, 1e-6);
}

#[test]
fn clones_share_the_site() {
    let site = flat_site([1.0; 3]);
    let other = site.clone();
    other.set_extra_load([2.0; 3]);
    assert_eq!(site.extra_load(), [2.0; 3]);
    assert!(close(site.currents(Instant::now()).total, [3.0; 3]));
    assert!(format!("{site:?}").starts_with("SiteLoad"));
}

#[test]
fn every_builtin_map_can_encode_an_importing_and_an_exporting_site() {
    use hardware::meter::{BUILTIN_MAPS, RegisterMap};
    let importing = SiteLoad::new(LoadProfile::office(), SimClock::fixed(t(12, 0))).with_energy(12_345_678.0, 0.0);
    let exporting = flat_site([-30.0, -20.0, -25.0]).with_power_factor(0.95).with_energy(1_000.0, 987_654.0);
    let now = Instant::now();
    for (name, _) in BUILTIN_MAPS {
        let map = match RegisterMap::builtin(name) {
            Ok(map) => map,
            Err(err) => panic!("{err}"),
        };
        for (what, site) in [("importing", &importing), ("exporting", &exporting)] {
            let reading = site.reading(now);
            let image = map.encode(&reading);
            assert!(image.is_ok(), "{name} {what}: {image:?}");
            let Some(decoded) = image.ok().and_then(|i| map.decode(&i).ok()) else { panic!("{name} {what}: decode") };
            for (phase, (got, want)) in decoded.currents_a.iter().zip(reading.currents_a).enumerate() {
                if let (Some(got), Some(want)) = (got, want) {
                    assert!(
                        (got - want).abs() <= want.abs() * 0.01 + 0.05,
                        "{name} {what} L{}: {got} vs {want}",
                        phase + 1
                    );
                }
            }
        }
    }
}
