//! Modbus RTU round trip over a pseudo terminal pair: the tokio-modbus RTU server on one
//! end, `ModbusBus` (the RTU client with timeout and reconnection) on the other.

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::time::Duration;

use common::{Device, Registers, realistic_reading};
use hardware::bus::{Connect, ErrorKind, ModbusBus, RegisterBus};
use hardware::meter::{ModbusMeter, RegisterMap};
use tokio_modbus::Slave;
use tokio_modbus::client::Context;
use tokio_serial::SerialStream;

/// Hands out one end of the pty once; a reconnect after that fails like an unplugged adapter.
struct PtyConnector(Option<SerialStream>);

impl Connect for PtyConnector {
    async fn connect(&mut self) -> io::Result<Context> {
        let port = self.0.take().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)))
    }

    fn peer(&self) -> String {
        "rtu pty".into()
    }
}

#[tokio::test]
async fn abb_meter_over_modbus_rtu() {
    let Ok((device_end, client_end)) = SerialStream::pair() else {
        eprintln!("no pseudo terminals here: skipping the RTU round trip");
        return;
    };
    let map = RegisterMap::builtin("abb-b23").unwrap();
    let expected = realistic_reading(&map);
    let device = Device::new(5, Registers::for_map(&map, &expected));
    let server = tokio::spawn(tokio_modbus::server::rtu::Server::new(device_end).serve_forever(device.clone()));

    let bus = ModbusBus::new(PtyConnector(Some(client_end))).with_timeout(Duration::from_millis(500));
    let mut meter = ModbusMeter::new(bus, 5, map.clone());
    let reading = meter.read_all().await.unwrap();
    assert_eq!(reading.currents_a, expected.currents_a);
    assert_eq!(reading.power_w, expected.power_w);
    assert_eq!(reading.energy_import_wh, Some(1_234_570.0)); // 0.01 kWh resolution
    assert_eq!(device.requests().len(), map.read_plan().len());

    // Nobody answers unit 9 on an RTU line (the test device rejects it with 0x0B; a real
    // line stays silent and times out): either way it is offline.
    let err = meter.bus_mut().read_holding_registers(9, 0x5B00, 2).await.unwrap_err();
    assert!(err.kind().is_offline(), "{err}");
    assert!(matches!(err.kind(), ErrorKind::Exception(0x0B) | ErrorKind::Timeout));
    server.abort();
}
