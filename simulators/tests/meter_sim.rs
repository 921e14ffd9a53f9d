//! The meter simulator over a real socket on 127.0.0.1:0, read with `hardware`'s Modbus TCP
//! bus and `ModbusMeter` driver as the edge agent reads it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::NaiveTime;
use hardware::bus::{ErrorKind, RegisterBus, TcpBus};
use hardware::meter::{MeterEnergy, MeterReading, ModbusMeter, PhaseCurrents, RegisterMap};
use simulators::meter::{LoadProfile, ManualDraw, MeterServer, Phase, SimClock, SiteLoad, Wiring};

/// Short, so the offline test is quick; generous enough for a loaded CI machine.
const TIMEOUT: Duration = Duration::from_millis(300);

fn noon() -> NaiveTime {
    NaiveTime::from_hms_opt(12, 0, 0).unwrap()
}

/// The office profile frozen at noon: a known base load.
fn office_at_noon() -> (SiteLoad, [f64; 3]) {
    let base = LoadProfile::office().at(noon());
    (SiteLoad::new(LoadProfile::office(), SimClock::fixed(noon())), base)
}

async fn start(site: &SiteLoad) -> MeterServer {
    MeterServer::bind("127.0.0.1:0".parse().unwrap(), site.clone()).await.unwrap()
}

fn sdm630(server: &MeterServer) -> ModbusMeter<TcpBus> {
    let bus = TcpBus::tcp(server.local_addr()).with_timeout(TIMEOUT);
    ModbusMeter::new(bus, 1, RegisterMap::builtin("eastron-sdm630").unwrap())
}

/// Within float32 precision of the SDM630 registers.
fn assert_currents(reading: &MeterReading, expected: [f64; 3]) {
    for (phase, (actual, want)) in reading.currents_a.iter().zip(expected).enumerate() {
        let actual = actual.unwrap();
        assert!((actual - want).abs() < 1e-4, "L{}: read {actual} A, expected {want} A", phase + 1);
    }
}

#[tokio::test]
async fn the_meter_reads_base_load_plus_ev_draws_and_follows_a_load_step() {
    let (site, base) = office_at_noon();
    let single = ManualDraw::new();
    let three = ManualDraw::new();
    site.attach_source(single.clone(), Wiring::single(Phase::L3));
    site.attach_source(three.clone(), Wiring::L2_L3_L1);
    single.set_ev(16.0, 1);
    three.set_ev(10.0, 3);
    let server = start(&site).await;
    assert_eq!(server.local_addr().ip().to_string(), "127.0.0.1");
    assert_ne!(server.local_addr().port(), 0);
    let mut meter = sdm630(&server);

    let reading = meter.read_all().await.unwrap();
    let expected = [base[0] + 10.0, base[1] + 10.0, base[2] + 26.0];
    assert_currents(&reading, expected);
    let power: f64 = expected.iter().map(|a| a * 230.0).sum();
    assert!((reading.power_w.unwrap() - power).abs() < 1.0, "{:?}", reading.power_w);
    assert_eq!(reading.voltages_v, [Some(230.0); 3]);
    assert_eq!(reading.frequency_hz, Some(50.0));

    // "+40 A load step": the very next read follows.
    site.set_extra_load([40.0; 3]);
    let currents = meter.currents_a().await.unwrap();
    for (actual, want) in currents.iter().zip(expected) {
        assert!((actual.unwrap() - (want + 40.0)).abs() < 1e-4);
    }

    // The balancer limits the EVs: the meter sees it.
    site.set_extra_load([0.0; 3]);
    three.set_ev(6.0, 3);
    single.set_ev(0.0, 1);
    assert_currents(&meter.read_all().await.unwrap(), [base[0] + 6.0, base[1] + 6.0, base[2] + 6.0]);
}

#[tokio::test]
async fn an_offline_meter_times_out_and_recovers() {
    let (site, base) = office_at_noon();
    let server = start(&site).await;
    let mut meter = sdm630(&server);
    assert_currents(&meter.read_all().await.unwrap(), base);

    server.set_offline(true);
    assert!(server.is_offline());
    let err = meter.read_all().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.kind().is_offline());
    // Still offline for a new connection.
    assert_eq!(meter.read_all().await.unwrap_err().kind(), ErrorKind::Timeout);

    server.set_offline(false);
    assert_currents(&meter.read_all().await.unwrap(), base);
}

#[tokio::test]
async fn a_frozen_meter_keeps_serving_the_last_image() {
    let (site, base) = office_at_noon();
    let server = start(&site).await;
    let mut meter = sdm630(&server);
    assert_currents(&meter.read_all().await.unwrap(), base);

    server.set_frozen(true);
    site.set_extra_load([40.0; 3]);
    assert_currents(&meter.read_all().await.unwrap(), base);

    server.set_frozen(false);
    assert_currents(&meter.read_all().await.unwrap(), base.map(|a| a + 40.0));
}

#[tokio::test]
async fn energy_registers_count_up_over_the_wire() {
    let site = SiteLoad::new(LoadProfile::constant([10.0; 3]), SimClock::compressed(noon(), 3600.0))
        .with_energy(5_000_000.0, 0.0);
    let server = start(&site).await;
    let mut meter = sdm630(&server);
    let first = meter.import_wh().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = meter.import_wh().await.unwrap();
    // 50 ms at 3600x is at least 3 simulated minutes of 6.9 kW: >= 345 Wh. The register is
    // a float32 in kWh, good to about 0.5 Wh at 5 MWh.
    assert!(first >= 5_000_000.0 - 1.0, "{first}");
    assert!(second - first >= 300.0, "{first} -> {second}");
    assert_eq!(meter.export_wh().await.unwrap(), 0.0);
}

#[tokio::test]
async fn exceptions_for_bad_addresses_functions_units_and_counts() {
    let (site, _) = office_at_noon();
    let server = start(&site).await;
    let mut bus = TcpBus::tcp(server.local_addr()).with_timeout(TIMEOUT);

    // Reserved registers inside the map's span read as zeros (SDM630: 0x0012..0x0034).
    assert_eq!(bus.read_input_registers(1, 0x0012, 4).await.unwrap(), vec![0; 4]);
    // The whole map in one read, as the edge agent polls it.
    assert_eq!(bus.read_input_registers(1, 0x0000, 0x004C).await.unwrap().len(), 0x4C);
    // Beyond the map: illegal data address (0x02), which is not "offline".
    let err = bus.read_input_registers(1, 0x004A, 4).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exception(0x02));
    assert!(!err.kind().is_offline());
    assert_eq!(bus.read_input_registers(1, 0x1000, 2).await.unwrap_err().kind(), ErrorKind::Exception(0x02));
    // The SDM630 map reads input registers: holding reads are an illegal function (0x01).
    assert_eq!(bus.read_holding_registers(1, 0, 2).await.unwrap_err().kind(), ErrorKind::Exception(0x01));
    // More than 125 registers: illegal data value (0x03).
    assert_eq!(bus.read_input_registers(1, 0, 126).await.unwrap_err().kind(), ErrorKind::Exception(0x03));
    // Another unit: gateway target device failed to respond (0x0B), which counts as offline.
    let err = bus.read_input_registers(7, 0, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exception(0x0B));
    assert!(err.kind().is_offline());
    // The connection survived all of it.
    assert!(bus.is_connected());
    assert_eq!(server.requests_answered(), 7);
}

#[tokio::test]
async fn any_builtin_map_and_unit_id_can_be_served() {
    let (site, base) = office_at_noon();
    site.set_extra_load([1.5, 2.5, 3.5]);
    // SunSpec: holding registers (0x03), 16-bit integers with scale factor registers.
    let server = MeterServer::builder(site.clone())
        .with_builtin_map("sunspec-203")
        .unwrap()
        .with_unit_id(42)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(server.unit_id(), 42);
    let map = server.map().clone();
    let bus = TcpBus::tcp(server.local_addr()).with_timeout(TIMEOUT);
    let mut meter = ModbusMeter::new(bus, 42, map);
    let reading = meter.read_all().await.unwrap();
    for (actual, want) in reading.currents_a.iter().zip([base[0] + 1.5, base[1] + 2.5, base[2] + 3.5]) {
        // The scale factor the encoder picks for the largest current sets the precision.
        assert!((actual.unwrap() - want).abs() <= 0.05, "{actual:?} vs {want}");
    }
    assert!(reading.power_w.is_some_and(|w| w > 20_000.0), "{:?}", reading.power_w);
}

#[tokio::test]
async fn a_taken_port_is_a_bind_error() {
    let (site, _) = office_at_noon();
    let first = start(&site).await;
    let err = MeterServer::bind(first.local_addr(), site.clone()).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!("cannot listen on {}", first.local_addr())), "{err}");
}
