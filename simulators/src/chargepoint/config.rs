//! Configuration of one simulated charge point and of the EV plugged into its connectors.

use std::time::Duration;

/// The electric vehicle the simulator plugs into a connector when a session starts.
///
/// The EV draws `min(max_current_a, offered limit)` on each of its `phases`; it follows a
/// new limit after `response_delay` and ramps to it in `ramp_time` (from 0 A to
/// `max_current_a`; smaller steps take proportionally less time). A limit below
/// [`MIN_CHARGING_CURRENT_A`](super::ev::MIN_CHARGING_CURRENT_A) makes it pause.
#[derive(Debug, Clone, PartialEq)]
pub struct EvModel {
    /// Highest current the EV's on-board charger takes, per phase (A).
    pub max_current_a: f64,
    /// Phases the EV charges on: 1 or 3.
    pub phases: u8,
    /// Phase-to-neutral voltage (V).
    pub voltage_v: f64,
    /// Time between a limit change at the connector and the EV starting to follow it.
    pub response_delay: Duration,
    /// Time for a full ramp from 0 A to `max_current_a`; zero means a step.
    pub ramp_time: Duration,
    /// Usable battery capacity (Wh).
    pub battery_capacity_wh: f64,
    /// State of charge when the session starts (0..=100 %).
    pub start_soc_percent: f64,
}

impl Default for EvModel {
    /// An 11 kW three-phase car with a 60 kWh battery at 30 %, which follows limit changes
    /// after 1.5 s and ramps in 2 s.
    fn default() -> Self {
        EvModel {
            max_current_a: 16.0,
            phases: 3,
            voltage_v: 230.0,
            response_delay: Duration::from_millis(1500),
            ramp_time: Duration::from_secs(2),
            battery_capacity_wh: 60_000.0,
            start_soc_percent: 30.0,
        }
    }
}

impl EvModel {
    /// An EV that follows every limit at once (no delay, no ramp): for fast tests.
    pub fn instant() -> Self {
        EvModel { response_delay: Duration::ZERO, ramp_time: Duration::ZERO, ..EvModel::default() }
    }

    /// Sets the per-phase maximum current.
    pub fn with_max_current(mut self, amps: f64) -> Self {
        self.max_current_a = amps;
        self
    }

    /// Sets the number of phases (values other than 1 are taken as 3).
    pub fn with_phases(mut self, phases: u8) -> Self {
        self.phases = if phases == 1 { 1 } else { 3 };
        self
    }

    /// Sets the response delay and ramp time.
    pub fn with_dynamics(mut self, response_delay: Duration, ramp_time: Duration) -> Self {
        self.response_delay = response_delay;
        self.ramp_time = ramp_time;
        self
    }

    /// Sets the battery capacity (Wh) and the state of charge at plug-in (%).
    pub fn with_battery(mut self, capacity_wh: f64, start_soc_percent: f64) -> Self {
        self.battery_capacity_wh = capacity_wh;
        self.start_soc_percent = start_soc_percent;
        self
    }

    /// The number of phases as a float, 1.0 or 3.0.
    pub fn phase_count(&self) -> f64 {
        if self.phases == 1 { 1.0 } else { 3.0 }
    }

    /// Converts a power limit (W) into a per-phase current limit (A) for this EV.
    pub fn watts_to_amps(&self, watts: f64) -> f64 {
        let volts = self.voltage_v * self.phase_count();
        if volts <= 0.0 { 0.0 } else { watts / volts }
    }

    /// Converts a per-phase current (A) into power (W) for this EV.
    pub fn amps_to_watts(&self, amps: f64) -> f64 {
        amps * self.voltage_v * self.phase_count()
    }
}

/// Configuration of one simulated OCPP 1.6J charge point.
///
/// Build it with [`ChargePointConfig::new`] and adjust with the `with_*` methods or by
/// setting the public fields.
#[derive(Debug, Clone)]
pub struct ChargePointConfig {
    /// Charge point identity: the last path segment of the URL and the Basic-auth user.
    pub id: String,
    /// Base URL of the central system, without the identity, e.g. `ws://127.0.0.1:9000/ocpp`.
    pub base_url: String,
    /// Basic-auth password (security profile 1); `None` sends no `Authorization` header.
    pub password: Option<String>,
    /// WebSocket subprotocol to offer; `None` offers none (to test the server's refusal).
    pub subprotocol: Option<String>,
    /// Number of connectors (1..).
    pub connectors: u32,
    /// BootNotification `chargePointVendor`.
    pub vendor: String,
    /// BootNotification `chargePointModel`.
    pub model: String,
    /// BootNotification `chargePointSerialNumber`.
    pub serial: String,
    /// BootNotification `firmwareVersion`.
    pub firmware: String,
    /// Id tags the charger's users present (used by the `chargepoint-sim` binary).
    pub id_tags: Vec<String>,
    /// MeterValues interval during a transaction (`MeterValueSampleInterval`); zero disables.
    pub meter_interval: Duration,
    /// Heartbeat interval that overrides the one the BootNotification answer gives.
    pub heartbeat_interval: Option<Duration>,
    /// How long to wait for the answer to one of our CALLs.
    pub call_timeout: Duration,
    /// Hardware limit of each connector, per phase (A).
    pub connector_max_current_a: f64,
    /// The EV plugged into every connector.
    pub ev: EvModel,
    /// Send a StatusNotification for every connector after an accepted BootNotification.
    pub status_on_boot: bool,
    /// Reconnect by itself after the server closed the connection (not after
    /// [`ChargePoint::power_loss`](super::ChargePoint::power_loss) or
    /// [`ChargePoint::disconnect`](super::ChargePoint::disconnect)).
    pub auto_reconnect: bool,
    /// Time a Reset or an automatic reconnect waits before reconnecting.
    pub reconnect_delay: Duration,
    /// Time between two steps of the firmware and diagnostics status notifications.
    pub status_step_delay: Duration,
    /// Period of the physics tick that re-evaluates charging schedules while charging.
    pub tick: Duration,
}

impl ChargePointConfig {
    /// A one-connector charger with an [`EvModel::default`] EV, 10 s meter values and a
    /// 10 s call timeout.
    pub fn new(id: impl Into<String>, base_url: impl Into<String>) -> Self {
        let id = id.into();
        ChargePointConfig {
            serial: format!("SIM-{id}"),
            id,
            base_url: base_url.into(),
            password: None,
            subprotocol: Some("ocpp1.6".to_string()),
            connectors: 1,
            vendor: "Sitepilot".to_string(),
            model: "SimCharger".to_string(),
            firmware: "1.0.0".to_string(),
            id_tags: vec!["TAG0001".to_string(), "TAG0002".to_string(), "TAG0003".to_string()],
            meter_interval: Duration::from_secs(10),
            heartbeat_interval: None,
            call_timeout: Duration::from_secs(10),
            connector_max_current_a: 32.0,
            ev: EvModel::default(),
            status_on_boot: true,
            auto_reconnect: false,
            reconnect_delay: Duration::from_secs(1),
            status_step_delay: Duration::from_millis(500),
            tick: Duration::from_secs(1),
        }
    }

    /// Sets the Basic-auth password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets the number of connectors.
    pub fn with_connectors(mut self, connectors: u32) -> Self {
        self.connectors = connectors.max(1);
        self
    }

    /// Sets the EV model.
    pub fn with_ev(mut self, ev: EvModel) -> Self {
        self.ev = ev;
        self
    }

    /// Sets the MeterValues interval.
    pub fn with_meter_interval(mut self, interval: Duration) -> Self {
        self.meter_interval = interval;
        self
    }

    /// Overrides the heartbeat interval from the BootNotification answer.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// Sets the call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Offers another subprotocol, or none with `None`.
    pub fn with_subprotocol(mut self, subprotocol: Option<&str>) -> Self {
        self.subprotocol = subprotocol.map(str::to_string);
        self
    }

    /// Makes every delay short: instant EV, 50 ms status steps and reconnect delay, 100 ms
    /// tick. For fast end-to-end tests.
    pub fn fast(mut self) -> Self {
        self.ev = EvModel { response_delay: Duration::ZERO, ramp_time: Duration::ZERO, ..self.ev };
        self.reconnect_delay = Duration::from_millis(50);
        self.status_step_delay = Duration::from_millis(50);
        self.tick = Duration::from_millis(100);
        self
    }

    /// The full WebSocket URL: `base_url/id`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.base_url.trim_end_matches('/'), self.id)
    }
}
