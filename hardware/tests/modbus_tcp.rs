//! Real Modbus TCP round trips: a tokio-modbus server on 127.0.0.1:0 serving register
//! images, read through `TcpBus` and `ModbusMeter` end to end.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Device, Proxy, Registers, assert_close, realistic_reading, serve_tcp};
use hardware::bus::{ErrorKind, RegisterBus, TcpBus};
use hardware::meter::{MeterPower, ModbusMeter, PhaseCurrents, Quantity, RegisterMap};
use tokio::net::TcpListener;

async fn round_trip(map_name: &str) {
    let map = RegisterMap::builtin(map_name).unwrap();
    let expected = realistic_reading(&map);
    let device = Device::new(3, Registers::for_map(&map, &expected));
    let (addr, server) = serve_tcp(device.clone()).await;

    let mut meter = ModbusMeter::new(TcpBus::tcp(addr), 3, map.clone());
    let reading = meter.read_all().await.unwrap();
    for quantity in Quantity::ALL {
        let want = if map.provides(quantity) { expected.get(quantity) } else { None };
        let tolerance = want.map_or(0.0, |w| w.abs() * 1e-3 + 1e-6);
        assert_close(map_name, quantity, reading.get(quantity), want, tolerance);
    }
    // The server saw exactly the grouped read plan.
    let plan: Vec<(u8, u16, u16)> = map.read_plan().iter().map(|r| (r.function.code(), r.address, r.count)).collect();
    assert_eq!(device.requests(), plan, "{map_name}");
    server.abort();
}

#[tokio::test]
async fn sdm630_over_modbus_tcp_input_registers() {
    round_trip("eastron-sdm630").await;
}

#[tokio::test]
async fn sunspec_meter_over_modbus_tcp_holding_registers_with_scale_factors() {
    round_trip("sunspec-203").await;
}

#[tokio::test]
async fn em24_little_word_order_over_modbus_tcp() {
    round_trip("carlo-gavazzi-em24").await;
}

#[tokio::test]
async fn capability_reads_go_over_the_wire() {
    let map = RegisterMap::builtin("janitza-umg96rm").unwrap();
    let expected = realistic_reading(&map);
    let (addr, server) = serve_tcp(Device::new(1, Registers::for_map(&map, &expected))).await;
    let mut meter = ModbusMeter::new(TcpBus::tcp(addr), 1, map);
    let power = meter.power_w().await.unwrap();
    assert!((power - 11_021.0).abs() < 0.01, "{power}");
    let currents = meter.currents_a().await.unwrap();
    assert!(currents.iter().zip(expected.currents_a).all(|(a, e)| (a.unwrap() - e.unwrap()).abs() < 1e-4));
    server.abort();
}

#[tokio::test]
async fn modbus_exception_is_reported_and_keeps_the_connection() {
    let mut registers = Registers::default();
    registers.holding.insert(100, &[1, 2, 3]);
    let (addr, server) = serve_tcp(Device::new(1, registers)).await;
    let mut bus = TcpBus::tcp(addr);

    let err = bus.read_holding_registers(1, 5000, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exception(0x02));
    assert!(!err.kind().is_offline(), "a bad register is not an offline meter");
    assert!(bus.is_connected());
    assert_eq!(bus.read_holding_registers(1, 100, 3).await.unwrap(), vec![1, 2, 3]);
    // Input registers are a separate table.
    assert_eq!(bus.read_input_registers(1, 100, 3).await.unwrap_err().kind(), ErrorKind::Exception(0x02));
    server.abort();
}

#[tokio::test]
async fn gateway_without_the_unit_reports_it_offline() {
    let mut registers = Registers::default();
    registers.holding.insert(0, &[42]);
    let (addr, server) = serve_tcp(Device::new(1, registers)).await;
    let mut bus = TcpBus::tcp(addr);
    let err = bus.read_holding_registers(7, 0, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exception(0x0B));
    assert!(err.kind().is_offline());
    server.abort();
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts the connection and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut bus = TcpBus::tcp(addr).with_timeout(Duration::from_millis(100));
    let err = bus.read_input_registers(1, 0, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.kind().is_offline());
    // A late answer must not be taken for the next request's: the connection is dropped.
    assert!(!bus.is_connected());
    silent.abort();
}

#[tokio::test]
async fn refused_connection_is_disconnected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut bus = TcpBus::tcp(addr).with_timeout(Duration::from_millis(500));
    let err = bus.read_holding_registers(1, 0, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
}

#[tokio::test]
async fn reconnects_after_the_connection_is_lost() {
    let mut registers = Registers::default();
    registers.input.insert(0, &[0x4366, 0x8000]);
    let (upstream, server) = serve_tcp(Device::new(1, registers)).await;
    let proxy = Proxy::start(upstream).await;
    let mut bus = TcpBus::tcp(proxy.addr).with_timeout(Duration::from_millis(500));

    assert_eq!(bus.read_input_registers(1, 0, 2).await.unwrap(), vec![0x4366, 0x8000]);
    assert_eq!(proxy.open_connections(), 1);
    proxy.cut();
    let err = bus.read_input_registers(1, 0, 2).await.unwrap_err();
    assert!(err.kind().is_offline(), "{err}");
    assert!(!bus.is_connected());
    // The next request connects again by itself.
    assert_eq!(bus.read_input_registers(1, 0, 2).await.unwrap(), vec![0x4366, 0x8000]);
    assert_eq!(proxy.open_connections(), 1);
    server.abort();
}
