//! The edge agent's configuration: one typed struct, loaded and validated once at start.
//! Every error names the file, the line (when known), the key and the reason, so
//! `edge-agent check-config` tells an installer exactly what to fix.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared_model::ids::ChargePointId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod energy;
pub use energy::{BalancerSection, ChargerModelConfig, CircuitConfig, EnergyPlan, PhaseLimit, PointPlan, Quirk};
pub(crate) use shared_model::config_file::find_key_line;
pub use shared_model::config_file::{ConfigError, ConfigErrors};
use shared_model::config_file::{key_at_offset, line_of_offset};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: SiteConfig,
    #[serde(default)]
    pub ocpp: OcppConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub authorization: AuthorizationConfig,
    #[serde(default)]
    pub chargers: Vec<ChargerConfig>,
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    /// The load balancer's tuning (see [`BalancerSection`]).
    #[serde(default)]
    pub balancer: BalancerSection,
    /// The circuit tree: grid connection, sub-boards, feeders. None: no balancing.
    #[serde(default)]
    pub circuits: Vec<CircuitConfig>,
    /// Quirks per charger model (matched on BootNotification vendor and model).
    #[serde(default)]
    pub charger_models: Vec<ChargerModelConfig>,
    /// The MQTT link to the cloud hub; without it sync is off (see [`crate::sync`]).
    #[serde(default)]
    pub sync: Option<crate::sync::SyncConfig>,
    /// Built from the above by [`Config::parse`]: the balancer's site and the loop's plan.
    #[serde(skip)]
    pub energy: Option<EnergyPlan>,
}

/// `[site]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site id, as provisioned by the cloud hub (letters, digits, `-`, `_`).
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// IANA time zone of the site (kept for tariffs and local-time schedules).
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// What to do with a charge point that connects with an identity we do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownChargerPolicy {
    /// Refuse the WebSocket upgrade (HTTP 404).
    Reject,
    /// Accept the connection, answer BootNotification with `Pending`, and wait for an
    /// installer to approve it through the API.
    Pending,
    /// Register it as accepted (lab and benchmark use only).
    Accept,
}

/// `[ocpp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcppConfig {
    pub listen: SocketAddr,
    /// URL path prefix; the charge point id is the segment after it.
    pub path: String,
    /// 0 = no authentication (lab only), 1 = HTTP Basic auth per charger (OCPP 1.6
    /// security whitepaper, profile 1).
    pub security_profile: u8,
    pub unknown_chargers: UnknownChargerPolicy,
    /// Heartbeat interval sent in BootNotification.conf when Accepted.
    pub heartbeat_interval_s: u32,
    /// Retry interval sent in BootNotification.conf when Pending or Rejected.
    pub boot_retry_interval_s: u32,
    /// How long a central-system CALL waits for its CALLRESULT.
    pub call_timeout_s: u32,
    /// WebSocket ping interval.
    pub ping_interval_s: u32,
    /// A connection with no traffic at all (not even a pong) for this long is dead.
    pub idle_timeout_s: u32,
    /// Largest accepted WebSocket message; larger ones are refused and answered with a
    /// CALLERROR FormationViolation when the frame's id can be read.
    pub max_frame_bytes: usize,
    /// Calls queued behind the outstanding one before new ones are refused.
    pub max_queued_calls: usize,
}

impl Default for OcppConfig {
    fn default() -> Self {
        OcppConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            path: "/ocpp".to_owned(),
            security_profile: 1,
            unknown_chargers: UnknownChargerPolicy::Reject,
            heartbeat_interval_s: 300,
            boot_retry_interval_s: 60,
            call_timeout_s: 30,
            ping_interval_s: 30,
            idle_timeout_s: 90,
            max_frame_bytes: 64 * 1024,
            max_queued_calls: 100,
        }
    }
}

/// SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync at every commit: survives power loss (the default on gateways).
    Full,
    /// fsync at checkpoints only: survives a killed process, may lose the last commits
    /// on power loss.
    Normal,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// OCPP messages older than this are pruned from the message log.
    pub message_log_retention_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("sitepilot-edge.db"),
            synchronous: Synchronous::Full,
            message_log_retention_days: 30,
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: SocketAddr::from(([0, 0, 0, 0], 8081)) }
    }
}

/// What to answer for an id tag that is neither in the local list nor in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownTagPolicy {
    /// `Invalid`.
    Reject,
    /// `Accepted` (free vend while no online authority answers).
    Accept,
}

/// `[authorization]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    pub unknown_id_tags: UnknownTagPolicy,
    /// Whether a tag with a running transaction may start another one (otherwise
    /// Authorize answers `ConcurrentTx`).
    pub allow_concurrent_tx: bool,
    /// The local authorization list seeded from the config.
    pub tags: Vec<IdTagConfig>,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig { unknown_id_tags: UnknownTagPolicy::Reject, allow_concurrent_tx: false, tags: Vec::new() }
    }
}

/// One `[[authorization.tags]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdTagConfig {
    pub id_tag: String,
    #[serde(default = "default_tag_status")]
    pub status: String,
    #[serde(default)]
    pub expiry: Option<DateTime<Utc>>,
    #[serde(default)]
    pub parent_id_tag: Option<String>,
}

fn default_tag_status() -> String {
    "Accepted".to_owned()
}

/// One `[[chargers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargerConfig {
    pub id: ChargePointId,
    /// PHC string from `edge-agent hash-password` (argon2id).
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The circuit it hangs on; without one it is not balanced.
    #[serde(default)]
    pub circuit: Option<String>,
    /// Its phases on the site's: "L1", "L2", "L3" (1-phase) or "L1-L2-L3", "L2-L3-L1",
    /// "L3-L1-L2" (3-phase, rotated). Default "L1-L2-L3".
    #[serde(default)]
    pub wiring: Option<String>,
    /// Highest current per phase and connector (A).
    #[serde(default = "energy::default_max_current")]
    pub max_current_a: f64,
    /// Lowest current a session charges with (A).
    #[serde(default = "energy::default_min_current")]
    pub min_current_a: f64,
    /// The limit it falls back to when the agent's profiles end (A); default: an equal
    /// share of the tightest limit above it (0 when under 6 A).
    #[serde(default)]
    pub safe_current_a: Option<f64>,
    /// Higher is served first with `fairness = "priority"` and paused last.
    #[serde(default)]
    pub priority: u8,
    /// Connectors that can charge at the same time (each is balanced on its own).
    #[serde(default = "energy::default_connectors")]
    pub connectors: u32,
    /// Quirks of this charger (added to those of its model).
    #[serde(default)]
    pub quirks: Vec<Quirk>,
}

/// One `[[meters]]` entry: a Modbus meter the agent polls (see [`crate::meters`]).
///
/// Exactly one of `map` / `map_file` and exactly one of `tcp` / `rtu`. A meter that
/// cannot be reached is only stale (safe limits apply where it measures), never a reason
/// not to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// 1 to 64 letters, digits, `-` or `_`; the name in the API and the metrics.
    pub id: String,
    /// A built-in register map, e.g. `eastron-sdm630` (see `configs/meters/`).
    #[serde(default)]
    pub map: Option<String>,
    /// A register map file (TOML); a relative path is relative to the config file.
    #[serde(default)]
    pub map_file: Option<PathBuf>,
    /// Modbus TCP: `IP:PORT` of the meter or of a TCP-to-RTU gateway (port 502 when left out).
    #[serde(default)]
    pub tcp: Option<String>,
    /// Modbus RTU on a serial line.
    #[serde(default)]
    pub rtu: Option<RtuConfig>,
    /// Modbus unit (slave) id: 1-247 on an RTU line; on TCP what the device expects.
    #[serde(default = "default_meter_unit_id")]
    pub unit_id: u8,
    /// Poll period.
    #[serde(default = "default_meter_period_ms")]
    pub period_ms: u64,
    /// Timeout of one Modbus request (and of connecting).
    #[serde(default = "default_meter_timeout_ms")]
    pub timeout_ms: u64,
    /// Immediate retries within one period after a failed read.
    #[serde(default = "default_meter_retries")]
    pub retries: u32,
    /// After consecutive failed polls the poll interval doubles, up to this; the first
    /// good read brings it back to `period_ms`. Equal to `period_ms`: no backoff.
    #[serde(default = "default_meter_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Stale (safe limits where it measures) after this many periods without a good read.
    #[serde(default = "default_meter_stale_after_periods")]
    pub stale_after_periods: u32,
    /// The circuit the meter measures (all loads below it included); `node` is the old
    /// name of this key.
    #[serde(default, rename = "circuit", alias = "node")]
    pub node: Option<String>,
}

fn default_meter_unit_id() -> u8 {
    1
}
fn default_meter_period_ms() -> u64 {
    1000
}
fn default_meter_timeout_ms() -> u64 {
    500
}
fn default_meter_retries() -> u32 {
    2
}
fn default_meter_max_backoff_ms() -> u64 {
    10_000
}
fn default_meter_stale_after_periods() -> u32 {
    3
}

/// Serial parity of a Modbus RTU line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialParity {
    #[default]
    None,
    Even,
    Odd,
}

/// `rtu = { device = "/dev/ttyUSB0", baud = 9600, parity = "none", stop_bits = 1 }`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuConfig {
    /// Serial device, e.g. `/dev/ttyUSB0`. Meters on the same device share the line.
    pub device: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: SerialParity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

fn default_baud() -> u32 {
    9600
}
fn default_stop_bits() -> u8 {
    1
}

impl MeterConfig {
    /// The Modbus TCP address, when the meter is on TCP: `IP:PORT`, or `IP` for port 502.
    pub fn tcp_addr(&self) -> Option<Result<SocketAddr, String>> {
        self.tcp.as_deref().map(parse_tcp_target)
    }
}

fn parse_tcp_target(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 502));
    }
    Err(format!("{s:?} is not IP:PORT (e.g. \"192.168.1.50:502\"); host names are not resolved"))
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: None,
                key: None,
                reason: format!("cannot read file: {e}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => (Some(line_of_offset(text, span.start)), key_at_offset(text, span.start)),
                None => (None, None),
            };
            ConfigErrors(vec![ConfigError { file: path.to_owned(), line, key, reason: e.message().trim().to_owned() }])
        })?;
        // Register map files sit next to the config file, wherever the agent is started from.
        let base = path.parent().unwrap_or(Path::new(""));
        for m in &mut config.meters {
            if let Some(file) = m.map_file.as_mut().filter(|f| f.is_relative()) {
                *file = base.join(&*file);
            }
        }
        let mut errors = config.validate(path, text);
        match EnergyPlan::build(&config, path, text) {
            Ok(plan) => config.energy = plan,
            Err(e) => errors.extend(e),
        }
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    fn validate(&self, path: &Path, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |table: &str, key: &str, index: Option<usize>, reason: String| {
            let dotted = match index {
                Some(i) => format!("{table}[{i}].{key}"),
                None if table.is_empty() => key.to_owned(),
                None => format!("{table}.{key}"),
            };
            errors.push(ConfigError {
                file: path.to_owned(),
                line: find_key_line(text, table, key, index),
                key: Some(dotted),
                reason,
            });
        };
        if self.site.id.is_empty()
            || self.site.id.len() > 64
            || !self.site.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            err(
                "site",
                "id",
                None,
                format!("{:?} is not a valid site id: use 1 to 64 letters, digits, '-' or '_'", self.site.id),
            );
        }
        if !self.ocpp.path.starts_with('/') {
            err("ocpp", "path", None, format!("{:?} must start with '/'", self.ocpp.path));
        }
        if self.ocpp.security_profile > 1 {
            err(
                "ocpp",
                "security_profile",
                None,
                format!(
                    "security profile {} is not supported yet (0 = none, 1 = HTTP Basic auth)",
                    self.ocpp.security_profile
                ),
            );
        }
        for (key, v) in [
            ("heartbeat_interval_s", self.ocpp.heartbeat_interval_s),
            ("boot_retry_interval_s", self.ocpp.boot_retry_interval_s),
            ("call_timeout_s", self.ocpp.call_timeout_s),
            ("ping_interval_s", self.ocpp.ping_interval_s),
        ] {
            if v == 0 {
                err("ocpp", key, None, "must be at least 1".into());
            }
        }
        if self.ocpp.idle_timeout_s <= self.ocpp.ping_interval_s {
            err(
                "ocpp",
                "idle_timeout_s",
                None,
                format!("must be longer than ping_interval_s ({} s)", self.ocpp.ping_interval_s),
            );
        }
        if self.ocpp.max_frame_bytes < 1024 {
            err("ocpp", "max_frame_bytes", None, "must be at least 1024".into());
        }
        if self.store.message_log_retention_days == 0 {
            err("store", "message_log_retention_days", None, "must be at least 1".into());
        }
        if self.ocpp.listen == self.api.listen && self.api.listen.port() != 0 {
            err("api", "listen", None, format!("{} is also the OCPP listen address", self.api.listen));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.chargers.iter().enumerate() {
            if !seen.insert(c.id.clone()) {
                err("chargers", "id", Some(i), format!("charger {:?} is listed twice", c.id.as_str()));
            }
            match &c.password_hash {
                Some(h) => {
                    if let Err(e) = crate::auth::check_phc(h) {
                        err("chargers", "password_hash", Some(i), e);
                    }
                }
                None if self.ocpp.security_profile >= 1 => err(
                    "chargers",
                    "password_hash",
                    Some(i),
                    "required with security_profile = 1; create one with `edge-agent hash-password`".into(),
                ),
                None => {}
            }
        }
        for (i, t) in self.authorization.tags.iter().enumerate() {
            if t.id_tag.is_empty() || t.id_tag.chars().count() > 20 {
                err("authorization.tags", "id_tag", Some(i), "must be 1 to 20 characters (OCPP idToken)".into());
            }
            if shared_model::model::AuthorizationStatus::parse(&t.status).is_none() {
                err(
                    "authorization.tags",
                    "status",
                    Some(i),
                    format!("{:?} is not one of Accepted, Blocked, Expired, Invalid, ConcurrentTx", t.status),
                );
            }
        }
        errors.extend(self.validate_meters(path, text));
        if let Some(sync) = &self.sync {
            errors.extend(sync.validate(path, text));
        }
        errors
    }

    fn validate_meters(&self, path: &Path, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |i: usize, key: &str, reason: String| {
            // `rtu.baud` sits on the `rtu = { ... }` line.
            let top = key.split('.').next().unwrap_or(key);
            errors.push(ConfigError {
                file: path.to_owned(),
                line: find_key_line(text, "meters", top, Some(i))
                    // `node` is the old name of `circuit`.
                    .or_else(|| (top == "circuit").then(|| find_key_line(text, "meters", "node", Some(i))).flatten())
                    .or_else(|| find_key_line(text, "meters", "id", Some(i))),
                key: Some(format!("meters[{i}].{key}")),
                reason,
            });
        };
        let mut ids = std::collections::HashMap::new();
        let mut nodes = std::collections::HashMap::new();
        // Per device on the line: (index, unit ids, settings that must agree).
        let mut devices: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut units: std::collections::HashMap<(String, u8), usize> = std::collections::HashMap::new();
        for (i, m) in self.meters.iter().enumerate() {
            if m.id.is_empty()
                || m.id.len() > 64
                || !m.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                err(i, "id", format!("{:?} is not a valid meter id: use 1 to 64 letters, digits, '-' or '_'", m.id));
            } else if let Some(first) = ids.insert(m.id.clone(), i) {
                err(i, "id", format!("meter {:?} is already meters[{first}]", m.id));
            }
            match (&m.map, &m.map_file) {
                (Some(_), Some(_)) => {
                    err(i, "map_file", "give either map (a built-in map) or map_file, not both".into())
                }
                (None, None) => err(
                    i,
                    "map",
                    format!(
                        "meter {:?} needs `map` (one of {}) or `map_file` (a register map TOML file)",
                        m.id,
                        builtin_map_names()
                    ),
                ),
                (Some(name), None) => {
                    if !hardware::meter::BUILTIN_MAPS.iter().any(|(n, _)| n == name) {
                        err(
                            i,
                            "map",
                            format!(
                                "unknown meter map {name:?}: use one of {} or map_file for your own",
                                builtin_map_names()
                            ),
                        );
                    }
                }
                (None, Some(file)) => {
                    if let Err(e) = hardware::meter::RegisterMap::load(file) {
                        err(i, "map_file", format!("register map {}: {e}", file.display()));
                    }
                }
            }
            match (m.tcp_addr(), &m.rtu) {
                (Some(_), Some(_)) => err(i, "rtu", "give either tcp or rtu, not both".into()),
                (None, None) => err(
                    i,
                    "tcp",
                    format!("meter {:?} needs `tcp = \"IP:PORT\"` or `rtu = {{ device = \"/dev/ttyUSB0\" }}`", m.id),
                ),
                (Some(Err(e)), None) => err(i, "tcp", e),
                (Some(Ok(addr)), None) => {
                    if addr.port() == 0 {
                        err(i, "tcp", "port 0 is not a Modbus server port".into());
                    }
                    if let Some(first) = units.insert((format!("tcp {addr}"), m.unit_id), i) {
                        err(i, "unit_id", format!("meters[{first}] already polls unit {} at {addr}", m.unit_id));
                    }
                }
                (None, Some(rtu)) => {
                    if rtu.device.trim().is_empty() {
                        err(i, "rtu.device", "must name the serial device, e.g. \"/dev/ttyUSB0\"".into());
                    }
                    if !(300..=4_000_000).contains(&rtu.baud) {
                        err(i, "rtu.baud", format!("{} is not a serial baud rate (300 to 4000000)", rtu.baud));
                    }
                    if !matches!(rtu.stop_bits, 1 | 2) {
                        err(i, "rtu.stop_bits", format!("{} stop bits: use 1 or 2", rtu.stop_bits));
                    }
                    if !(1..=247).contains(&m.unit_id) {
                        err(i, "unit_id", format!("{} is not an RTU unit id (1 to 247)", m.unit_id));
                    }
                    if let Some(first) = units.insert((format!("rtu {}", rtu.device), m.unit_id), i) {
                        err(i, "unit_id", format!("meters[{first}] already has unit {} on {}", m.unit_id, rtu.device));
                    }
                    // One line, one set of serial settings and one request timeout.
                    match devices.get(&rtu.device) {
                        Some(&first) => {
                            let other = &self.meters[first];
                            if other.rtu.as_ref().is_some_and(|o| {
                                (o.baud, o.parity, o.stop_bits) != (rtu.baud, rtu.parity, rtu.stop_bits)
                            }) {
                                err(
                                    i,
                                    "rtu",
                                    format!(
                                        "{} is shared with meters[{first}], which sets other serial settings",
                                        rtu.device
                                    ),
                                );
                            }
                            if other.timeout_ms != m.timeout_ms {
                                err(
                                    i,
                                    "timeout_ms",
                                    format!(
                                        "{} is shared with meters[{first}], whose timeout_ms is {}: meters on one line share the timeout",
                                        rtu.device, other.timeout_ms
                                    ),
                                );
                            }
                        }
                        None => {
                            devices.insert(rtu.device.clone(), i);
                        }
                    }
                }
            }
            if !(10..=3_600_000).contains(&m.period_ms) {
                err(i, "period_ms", format!("{} ms: use 10 to 3600000", m.period_ms));
            }
            if !(10..=60_000).contains(&m.timeout_ms) {
                err(i, "timeout_ms", format!("{} ms: use 10 to 60000", m.timeout_ms));
            }
            if m.retries > 10 {
                err(i, "retries", format!("{} retries: use 0 to 10", m.retries));
            }
            if m.max_backoff_ms < m.period_ms || m.max_backoff_ms > 3_600_000 {
                err(
                    i,
                    "max_backoff_ms",
                    format!("{} ms: use period_ms ({}) to 3600000", m.max_backoff_ms, m.period_ms),
                );
            }
            if !(1..=1000).contains(&m.stale_after_periods) {
                err(i, "stale_after_periods", format!("{}: use 1 to 1000", m.stale_after_periods));
            }
            if let Some(node) = &m.node {
                match node.parse::<crate::balancer::NodeId>() {
                    Err(e) => err(i, "circuit", e.to_string()),
                    Ok(_) => {
                        if let Some(first) = nodes.insert(node.clone(), i) {
                            err(i, "circuit", format!("circuit {node:?} is already measured by meters[{first}]"));
                        }
                    }
                }
            }
        }
        errors
    }
}

fn builtin_map_names() -> String {
    hardware::meter::BUILTIN_MAPS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("edge.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[site]\nid = \"s1\"\n").expect("valid");
        assert_eq!(c.ocpp.listen.port(), 9000);
        assert_eq!(c.api.listen.port(), 8081);
        assert_eq!(c.ocpp.security_profile, 1);
        assert_eq!(c.ocpp.unknown_chargers, UnknownChargerPolicy::Reject);
    }

    #[test]
    fn syntax_errors_name_line_and_key() {
        let e = parse("[site]\nid = \"s1\"\n[ocpp]\nsecurity_profile = \"one\"\n").expect_err("bad type");
        let e = &e.0[0];
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("ocpp.security_profile"));
        assert!(e.to_string().starts_with("edge.toml:4: key `ocpp.security_profile`: "), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("[site]\nid = \"s1\"\n[ocpp]\nlisten_port = 9000\n").expect_err("typo");
        assert_eq!(e.0[0].line, Some(4));
        assert!(e.0[0].reason.contains("unknown field"), "{}", e.0[0].reason);
    }

    #[test]
    fn validation_reports_every_problem_with_its_line() {
        let text = "[site]\nid = \"bad id\"\n[ocpp]\nsecurity_profile = 3\nping_interval_s = 0\n\
                    [[chargers]]\nid = \"CP1\"\n[[chargers]]\nid = \"CP2\"\npassword_hash = \"nope\"\n";
        let e = parse(text).expect_err("invalid");
        let keys: Vec<_> = e.0.iter().map(|e| (e.key.clone().unwrap_or_default(), e.line)).collect();
        assert!(keys.contains(&("site.id".into(), Some(2))), "{keys:?}");
        assert!(keys.contains(&("ocpp.security_profile".into(), Some(4))), "{keys:?}");
        assert!(keys.contains(&("ocpp.ping_interval_s".into(), Some(5))), "{keys:?}");
        assert!(keys.contains(&("chargers[0].password_hash".into(), None)), "{keys:?}");
        assert!(keys.contains(&("chargers[1].password_hash".into(), Some(10))), "{keys:?}");
    }

    #[test]
    fn missing_file_is_reported() {
        let e = Config::load(Path::new("/nonexistent/edge.toml")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/edge.toml: cannot read file"), "{e}");
    }

    const METER: &str =
        "[site]\nid = \"s1\"\n[[meters]]\nid = \"grid\"\nmap = \"eastron-sdm630\"\ntcp = \"192.168.1.50:502\"\n";

    #[test]
    fn meters_get_defaults() {
        let c = parse(METER).expect("valid");
        let m = &c.meters[0];
        assert_eq!((m.unit_id, m.period_ms, m.timeout_ms, m.retries), (1, 1000, 500, 2));
        assert_eq!((m.max_backoff_ms, m.stale_after_periods), (10_000, 3));
        assert_eq!(m.tcp_addr(), Some(Ok("192.168.1.50:502".parse().expect("addr"))));
        let c = parse(
            "[site]\nid = \"s1\"\n[[meters]]\nid = \"m\"\nmap = \"abb-b23\"\ntcp = \"10.0.0.7\"\n\
                       [[meters]]\nid = \"n\"\nmap = \"abb-b23\"\nrtu = { device = \"/dev/ttyUSB0\" }\nunit_id = 2\n",
        )
        .expect("valid");
        assert_eq!(c.meters[0].tcp_addr(), Some(Ok("10.0.0.7:502".parse().expect("addr"))), "port 502 by default");
        let rtu = c.meters[1].rtu.as_ref().expect("rtu");
        assert_eq!((rtu.baud, rtu.parity, rtu.stop_bits), (9600, SerialParity::None, 1));
    }

    #[test]
    fn meter_errors_name_line_key_and_reason() {
        let text = "[site]\nid = \"s1\"\n\
                    [[meters]]\nid = \"grid\"\nmap = \"eastron-sdm631\"\ntcp = \"meter.local:502\"\nperiod_ms = 5\n\
                    [[meters]]\nid = \"grid\"\nmap = \"abb-b23\"\nmap_file = \"x.toml\"\n\
                    rtu = { device = \"/dev/ttyUSB0\", stop_bits = 3 }\nunit_id = 0\nnode = \"main\"\n\
                    [[meters]]\nid = \"bad id\"\nmax_backoff_ms = 10\nstale_after_periods = 0\nnode = \"main\"\n";
        let e = parse(text).expect_err("invalid");
        let found: Vec<(String, Option<usize>)> =
            e.0.iter().map(|e| (e.key.clone().unwrap_or_default(), e.line)).collect();
        for (key, line) in [
            ("meters[0].map", 5),
            ("meters[0].tcp", 6),
            ("meters[0].period_ms", 7),
            ("meters[1].id", 9),
            ("meters[1].map_file", 11),
            ("meters[1].rtu.stop_bits", 12),
            ("meters[1].unit_id", 13),
            ("meters[2].id", 16),
            ("meters[2].map", 16),
            ("meters[2].tcp", 16),
            ("meters[2].max_backoff_ms", 17),
            ("meters[2].stale_after_periods", 18),
            ("meters[2].circuit", 19),
        ] {
            assert!(found.contains(&(key.to_owned(), Some(line))), "{key} at line {line} not in {found:?}");
        }
        let text = e.to_string();
        assert!(
            text.contains(
                "edge.toml:5: key `meters[0].map`: unknown meter map \"eastron-sdm631\": use one of abb-b23,"
            ),
            "{text}"
        );
        assert!(text.contains("eastron-sdm630"), "{text}");
        assert!(text.contains("host names are not resolved"), "{text}");
        assert!(text.contains("not both"), "{text}");
        assert!(text.contains("meter \"grid\" is already meters[0]"), "{text}");
        assert!(text.contains("circuit \"main\" is already measured by meters[1]"), "{text}");
        assert!(text.contains("circuit \"main\" is not among [[circuits]]"), "{text}");
    }

    #[test]
    fn meters_on_one_serial_line_must_agree() {
        let text = "[site]\nid = \"s1\"\n\
                    [[meters]]\nid = \"a\"\nmap = \"abb-b23\"\nrtu = { device = \"/dev/ttyS1\", baud = 19200 }\n\
                    [[meters]]\nid = \"b\"\nmap = \"abb-b23\"\nrtu = { device = \"/dev/ttyS1\" }\nunit_id = 2\ntimeout_ms = 300\n\
                    [[meters]]\nid = \"c\"\nmap = \"abb-b23\"\nrtu = { device = \"/dev/ttyS1\", baud = 19200 }\n";
        let e = parse(text).expect_err("invalid");
        let keys: Vec<_> = e.0.iter().map(|e| e.key.clone().unwrap_or_default()).collect();
        assert_eq!(keys, vec!["meters[1].rtu", "meters[1].timeout_ms", "meters[2].unit_id"], "{e}");
        assert!(e.to_string().contains("meters[0] already has unit 1 on /dev/ttyS1"), "{e}");
    }

    #[test]
    fn map_files_are_relative_to_the_config_file_and_checked() {
        let configs = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/edge.toml"));
        let text = "[site]\nid = \"s1\"\n[[meters]]\nid = \"m\"\nmap_file = \"meters/eastron-sdm630.toml\"\ntcp = \"10.0.0.7:502\"\n";
        let c = Config::parse(configs, text).map_err(|e| e.to_string()).expect("valid");
        assert!(c.meters[0].map_file.as_ref().is_some_and(|f| f.ends_with("configs/meters/eastron-sdm630.toml")));
        let e = Config::parse(configs, &text.replace("eastron-sdm630", "no-such-meter")).expect_err("missing");
        assert_eq!(e.0[0].key.as_deref(), Some("meters[0].map_file"));
        assert_eq!(e.0[0].line, Some(5));
        assert!(e.0[0].reason.contains("no-such-meter.toml: cannot read"), "{e}");
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/edge-agent.example.toml"));
        let c = Config::load(path).map_err(|e| e.to_string()).expect("example config must be valid");
        assert!(!c.chargers.is_empty());
        assert_eq!(c.meters.len(), 1, "the example documents a meter");
    }
}
