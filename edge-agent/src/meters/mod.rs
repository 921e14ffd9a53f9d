//! Polling loops over the site's Modbus meters, and their staleness.
//!
//! One task per `[[meters]]` entry owns a [`hardware::meter::ModbusMeter`] over a TCP bus,
//! or over an RTU line shared (one request at a time) with the other meters on the same
//! serial device. Each task runs a [`PollSchedule`] (sans-IO: period, immediate retries,
//! exponential backoff, staleness after `stale_after_periods` periods without a good read)
//! and reports every read and every staleness change to the [`MeterHub`].
//!
//! The hub is what the rest of the agent reads: the API (`GET /api/v1/meters`), `/metrics`
//! (`meter_reads_total`, `meter_stale`, ...) and the balancer loop, which subscribes to its
//! [`watch`] channel and takes [`MeterSnapshot::measurements`]: the readings of the fresh
//! meters only, so a stale meter's node falls back to its safe current (invariant 2). A
//! meter starts stale: safe limits until it reports. A meter that cannot be reached is only
//! stale, never a reason for the agent not to start.

mod hub;
mod poll;
mod schedule;

pub use hub::{LastError, MeterHub, MeterInfo, MeterSnapshot, MeterStatus, MeterView, Reading};
pub use poll::{ReadError, check_reading, error_label, run};
pub use schedule::{Action, AfterFailure, PollPolicy, PollSchedule, Transition};

use crate::config::{MeterConfig, SerialParity};
use anyhow::Context;
use hardware::bus::{Parity, RtuBus, SerialConfig, SharedBus, StopBits, TcpBus};
use hardware::meter::{ModbusMeter, Quantity, RegisterMap};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

enum Driver {
    Tcp(ModbusMeter<TcpBus>),
    Rtu(ModbusMeter<SharedBus<RtuBus>>),
}

/// The configured meters, with their maps loaded and buses built, not started. Nothing
/// here touches the network or a serial port: connections are made by the first read.
pub struct Pollers {
    infos: Vec<MeterInfo>,
    drivers: Vec<(Driver, PollPolicy)>,
}

impl Pollers {
    /// Loads the maps and builds the buses. Fails only on what `check-config` also
    /// refuses (an unknown map, an unreadable map file, an invalid address).
    pub fn from_config(meters: &[MeterConfig]) -> anyhow::Result<Pollers> {
        let mut lines: HashMap<String, SharedBus<RtuBus>> = HashMap::new();
        let mut infos = Vec::with_capacity(meters.len());
        let mut drivers = Vec::with_capacity(meters.len());
        for m in meters {
            let (map, map_name) = match (&m.map, &m.map_file) {
                (Some(name), _) => (RegisterMap::builtin(name)?, name.clone()),
                (None, Some(file)) => (RegisterMap::load(file)?, file.display().to_string()),
                (None, None) => anyhow::bail!("meter {}: no map", m.id),
            };
            let timeout = Duration::from_millis(m.timeout_ms);
            let (driver, transport) = match (m.tcp_addr(), &m.rtu) {
                (Some(addr), _) => {
                    let addr = addr.map_err(anyhow::Error::msg).with_context(|| format!("meter {}: tcp", m.id))?;
                    let bus = TcpBus::tcp(addr).with_timeout(timeout);
                    (Driver::Tcp(ModbusMeter::new(bus, m.unit_id, map.clone())), format!("tcp {addr}"))
                }
                (None, Some(rtu)) => {
                    let parity = match rtu.parity {
                        SerialParity::None => Parity::None,
                        SerialParity::Even => Parity::Even,
                        SerialParity::Odd => Parity::Odd,
                    };
                    let stop_bits = if rtu.stop_bits == 2 { StopBits::Two } else { StopBits::One };
                    let bus = lines
                        .entry(rtu.device.clone())
                        .or_insert_with(|| {
                            let serial = SerialConfig::new(rtu.device.clone(), rtu.baud)
                                .with_parity(parity)
                                .with_stop_bits(stop_bits);
                            SharedBus::new(RtuBus::rtu(serial).with_timeout(timeout))
                        })
                        .clone();
                    let parity_letter = match rtu.parity {
                        SerialParity::None => 'N',
                        SerialParity::Even => 'E',
                        SerialParity::Odd => 'O',
                    };
                    let transport = format!("rtu {} {} 8{parity_letter}{}", rtu.device, rtu.baud, rtu.stop_bits);
                    (Driver::Rtu(ModbusMeter::new(bus, m.unit_id, map.clone())), transport)
                }
                (None, None) => anyhow::bail!("meter {}: no transport", m.id),
            };
            let phases_mapped =
                [Quantity::CurrentL1, Quantity::CurrentL2, Quantity::CurrentL3].map(|q| map.provides(q));
            let node =
                m.node.as_deref().map(str::parse).transpose().with_context(|| format!("meter {}: node", m.id))?;
            infos.push(MeterInfo {
                id: m.id.clone(),
                map: map_name,
                transport,
                unit_id: m.unit_id,
                node,
                period_ms: m.period_ms,
                stale_after_periods: m.stale_after_periods,
                phases_mapped,
            });
            let policy = PollPolicy {
                period: Duration::from_millis(m.period_ms),
                retries: m.retries,
                max_backoff: Duration::from_millis(m.max_backoff_ms),
                stale_after_periods: m.stale_after_periods,
            };
            drivers.push((driver, policy));
        }
        Ok(Pollers { infos, drivers })
    }

    /// What the hub is created with.
    pub fn infos(&self) -> Vec<MeterInfo> {
        self.infos.clone()
    }

    /// Starts one polling task per meter, reporting to `hub` (created from [`infos`](Self::infos)).
    pub fn spawn(self, hub: &MeterHub, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.drivers
            .into_iter()
            .enumerate()
            .map(|(index, (driver, policy))| {
                let hub = hub.clone();
                let shutdown = shutdown.clone();
                match driver {
                    Driver::Tcp(meter) => tokio::spawn(async move {
                        run(meter, hub, index, policy, shutdown).await;
                    }),
                    Driver::Rtu(meter) => tokio::spawn(async move {
                        run(meter, hub, index, policy, shutdown).await;
                    }),
                }
            })
            .collect()
    }
}
