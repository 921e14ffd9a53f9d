//! The hub's configuration: one typed struct, loaded and validated once at start. Every
//! error names the file, the line (when known), the key and the reason, so
//! `cloud-hub check-config` tells an operator exactly what to fix.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use shared_model::config_file::{ConfigError, ConfigErrors};
use shared_model::config_file::{find_key_line, key_at_offset, line_of_offset};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub billing: BillingConfig,
    /// `[ocpi]`: OCPI 2.2.1, CPO role (see [`crate::ocpi::config`]).
    #[serde(default)]
    pub ocpi: crate::ocpi::config::OcpiConfig,
    /// Resolved from `[mqtt]` by [`Config::parse`].
    #[serde(skip)]
    pub broker: BrokerPlan,
    /// Resolved from `[database] url` by [`Config::parse`] (relative SQLite paths are
    /// relative to the config file).
    #[serde(skip)]
    pub db: DbTarget,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `/health`, `/metrics` and the fleet API (`/api/v1`).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: SocketAddr::from(([0, 0, 0, 0], 8080)) }
    }
}

/// `[mqtt]`: the embedded broker (the default) or an external one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Run the embedded broker. Default: true unless `url` is given.
    pub embedded: Option<bool>,
    /// Embedded broker only: where sites connect (MQTT 3.1.1 over TCP).
    pub listen: Option<SocketAddr>,
    /// External broker only: `mqtt://HOST:PORT` (port 1883 when left out).
    pub url: Option<String>,
    /// The hub's own MQTT user. Embedded: the one user allowed on every topic.
    pub username: String,
    /// The hub's own password. Embedded: a random one per start when absent (only the hub
    /// itself uses it). External: whatever the broker wants (none for anonymous brokers).
    pub password: Option<String>,
    /// The hub's MQTT client id. Default: `sitepilot-hub-` and a random suffix per start
    /// (the session is clean, so nothing is lost by a new id, and replicas never share one).
    pub client_id: Option<String>,
    /// External broker only: the shared-subscription group (`$share/{group}/...`) that
    /// spreads sites over hub replicas.
    pub share_group: String,
    /// The broker address as sites reach it, printed by `cloud-hub site add`.
    pub public_url: Option<String>,
    /// MQTT keep-alive of the hub's client, seconds (5 to 3600).
    pub keep_alive_s: u16,
    /// Largest MQTT message accepted (an event batch), bytes.
    pub max_payload_bytes: usize,
    /// Embedded broker only: most simultaneous connections.
    pub max_connections: usize,
    /// What all sites together may have in flight (sent, not yet acked), bytes: shared
    /// among the sites sending (flow control, `shared-model/SYNC.md`). The embedded
    /// broker keeps twice this for the hub (about 2.5x in memory). With an external
    /// broker, no more than it queues for the hub's client; with several replicas, each
    /// gets its part.
    pub inflight_budget_bytes: u64,
    /// The same in batches (Mosquitto queues 1000 messages per client by default).
    pub inflight_budget_batches: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            embedded: None,
            listen: None,
            url: None,
            username: "sitepilot-hub".to_owned(),
            password: None,
            client_id: None,
            share_group: "hub".to_owned(),
            public_url: None,
            keep_alive_s: 30,
            max_payload_bytes: 1024 * 1024,
            max_connections: 10_000,
            inflight_budget_bytes: 32 * 1024 * 1024,
            inflight_budget_batches: 800,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (relative to the config file) or `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: "sqlite://sitepilot-hub.db".to_owned(), max_connections: 8 }
    }
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Batches are applied by this many workers; one site always goes to the same worker,
    /// so a site's batches are applied in the order they arrived.
    pub workers: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { workers: 4 }
    }
}

/// `[api]`: the fleet REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// How long a command may wait to be started when the request gives no
    /// `expires_in_s`, seconds (1 to 604800). Until then it is re-sent each time its site
    /// reconnects; after it, the site answers `expired` instead of running it.
    pub command_expiry_s: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { command_expiry_s: 3600 }
    }
}

/// `[billing]`: CDRs and invoices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Price finished sessions into CDRs (a replica may leave it to the others).
    pub enabled: bool,
    /// Seconds between the billing worker's passes (1 to 3600); a tariff assignment
    /// wakes it at once.
    pub interval_s: u64,
    /// Who issues the invoices, as printed on them (name and address).
    pub issuer: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig { enabled: true, interval_s: 2, issuer: "Sitepilot charging".to_owned() }
    }
}

/// Where the hub's MQTT traffic goes, resolved from `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerPlan {
    /// Run rumqttd in-process on this address (port 0: a free port is picked at start).
    Embedded { listen: SocketAddr },
    /// Connect to an external broker.
    External { host: String, port: u16 },
}

impl Default for BrokerPlan {
    fn default() -> Self {
        BrokerPlan::Embedded { listen: default_mqtt_listen() }
    }
}

fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
}

/// The database, resolved from `[database] url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file (created with its schema on first start).
    Sqlite(PathBuf),
    /// A PostgreSQL URL, as given.
    Postgres(String),
}

impl Default for DbTarget {
    fn default() -> Self {
        DbTarget::Sqlite(PathBuf::from("sitepilot-hub.db"))
    }
}

impl fmt::Display for DbTarget {
    /// Without credentials: safe for logs and `check-config`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(path) => write!(f, "SQLite {}", path.display()),
            DbTarget::Postgres(url) => {
                let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
                let host_db = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
                let host_db = host_db.split('?').next().unwrap_or(host_db);
                write!(f, "PostgreSQL {host_db}")
            }
        }
    }
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

    /// Parses and validates config text; `path` names the file in errors and anchors
    /// relative SQLite paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => (Some(line_of_offset(text, span.start)), key_at_offset(text, span.start)),
                None => (None, None),
            };
            ConfigErrors(vec![ConfigError { file: path.to_owned(), line, key, reason: e.message().trim().to_owned() }])
        })?;
        let mut errors = Vec::new();
        let mut err = |table: &str, key: &str, reason: String| {
            errors.push(ConfigError {
                file: path.to_owned(),
                line: find_key_line(text, table, key, None),
                key: Some(format!("{table}.{key}")),
                reason,
            });
        };

        // [mqtt]
        let m = &config.mqtt;
        let embedded = m.embedded.unwrap_or(m.url.is_none());
        if embedded {
            if m.url.is_some() {
                err(
                    "mqtt",
                    "url",
                    "is for an external broker, but embedded = true: remove one of them (the hub \
                     connects to its embedded broker by itself)"
                        .into(),
                );
            }
            if m.share_group != MqttConfig::default().share_group {
                err("mqtt", "share_group", "is for an external broker; the embedded broker has one hub".into());
            }
            config.broker = BrokerPlan::Embedded { listen: m.listen.unwrap_or_else(default_mqtt_listen) };
        } else {
            if m.listen.is_some() {
                err(
                    "mqtt",
                    "listen",
                    "is for the embedded broker, but embedded = false (an external url is used)".into(),
                );
            }
            match m.url.as_deref() {
                None => {
                    err("mqtt", "url", "an external broker (embedded = false) needs url = \"mqtt://HOST:PORT\"".into())
                }
                Some(url) => match parse_mqtt_url(url) {
                    Ok((host, port)) => config.broker = BrokerPlan::External { host, port },
                    Err(reason) => err("mqtt", "url", reason),
                },
            }
            if m.share_group.is_empty()
                || !m.share_group.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                err(
                    "mqtt",
                    "share_group",
                    format!("{:?} is not a valid group name: use letters, digits, '-' or '_'", m.share_group),
                );
            }
        }
        if m.username.is_empty() || m.username.contains(['+', '#', '/']) {
            err("mqtt", "username", format!("{:?} is not a valid MQTT user name for the hub", m.username));
        }
        if let Some(p) = &m.password
            && p.is_empty()
        {
            err("mqtt", "password", "is empty: leave it out instead".into());
        }
        if let Some(id) = &m.client_id
            && (id.is_empty() || id.len() > 128)
        {
            err("mqtt", "client_id", "must be 1 to 128 characters".into());
        }
        if let Some(url) = &m.public_url
            && let Err(reason) = parse_mqtt_url(url)
        {
            err("mqtt", "public_url", reason);
        }
        if !(5..=3600).contains(&m.keep_alive_s) {
            err("mqtt", "keep_alive_s", format!("{} s: use 5 to 3600", m.keep_alive_s));
        }
        if !(1024..=256 * 1024 * 1024).contains(&m.max_payload_bytes) {
            err("mqtt", "max_payload_bytes", format!("{}: use 1024 to 268435456", m.max_payload_bytes));
        }
        if !(1..=1_000_000).contains(&m.max_connections) {
            err("mqtt", "max_connections", format!("{}: use 1 to 1000000", m.max_connections));
        }
        if !(1024 * 1024..=16 * 1024 * 1024 * 1024).contains(&m.inflight_budget_bytes) {
            err(
                "mqtt",
                "inflight_budget_bytes",
                format!("{}: use 1048576 (1 MiB) to 17179869184 (16 GiB)", m.inflight_budget_bytes),
            );
        } else if m.inflight_budget_bytes < m.max_payload_bytes as u64 {
            err(
                "mqtt",
                "inflight_budget_bytes",
                format!(
                    "{}: below max_payload_bytes ({}); one batch must fit",
                    m.inflight_budget_bytes, m.max_payload_bytes
                ),
            );
        }
        if !(1..=1_000_000).contains(&m.inflight_budget_batches) {
            err("mqtt", "inflight_budget_batches", format!("{}: use 1 to 1000000", m.inflight_budget_batches));
        }
        if let BrokerPlan::Embedded { listen } = config.broker
            && listen == config.http.listen
            && listen.port() != 0
        {
            err("mqtt", "listen", format!("{listen} is also the HTTP listen address"));
        }

        // [database]
        let base = path.parent().unwrap_or(Path::new(""));
        match parse_database_url(&config.database.url, base) {
            Ok(db) => config.db = db,
            Err(reason) => err("database", "url", reason),
        }
        if !(1..=1000).contains(&config.database.max_connections) {
            err("database", "max_connections", format!("{}: use 1 to 1000", config.database.max_connections));
        }

        // [ingest]
        if !(1..=256).contains(&config.ingest.workers) {
            err("ingest", "workers", format!("{}: use 1 to 256", config.ingest.workers));
        }

        // [api]
        if !(1..=crate::fleet::MAX_COMMAND_EXPIRY_S).contains(&u64::from(config.api.command_expiry_s)) {
            err(
                "api",
                "command_expiry_s",
                format!("{} s: use 1 to {} (7 days)", config.api.command_expiry_s, crate::fleet::MAX_COMMAND_EXPIRY_S),
            );
        }

        // [billing]
        if !(1..=3600).contains(&config.billing.interval_s) {
            err("billing", "interval_s", format!("{} s: use 1 to 3600", config.billing.interval_s));
        }
        if config.billing.issuer.trim().is_empty() {
            err("billing", "issuer", "must not be empty: it is printed on every invoice".into());
        }
        // [ocpi]
        crate::ocpi::config::validate(&config.ocpi, &mut err);

        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    /// A one-line summary without secrets (for `check-config` and the start-up log).
    pub fn summary(&self) -> String {
        let broker = match &self.broker {
            BrokerPlan::Embedded { listen } => format!("embedded MQTT broker on {listen}"),
            BrokerPlan::External { host, port } => {
                format!("external MQTT broker {host}:{port} (group $share/{})", self.mqtt.share_group)
            }
        };
        format!("HTTP on {}, {broker}, database {}, {} ingest workers", self.http.listen, self.db, self.ingest.workers)
    }
}

/// `mqtt://HOST[:PORT]` (or `tcp://`) to host and port.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL: use \"mqtt://HOST:PORT\""));
    };
    match scheme {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" | "tls" => {
            return Err(format!("{scheme}:// (MQTT over TLS) is not supported yet: use mqtt://"));
        }
        other => return Err(format!("unknown scheme {other:?}: use \"mqtt://HOST:PORT\"")),
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        // Not echoed: it holds credentials.
        return Err("give only mqtt://HOST:PORT: credentials go in `username` / `password`".into());
    }
    if authority.contains(['/', '?']) {
        return Err(format!("{url:?}: give only mqtt://HOST:PORT (no path or query)"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("{url:?}: {p:?} is not a port (1 to 65535)")),
            Ok(p) => p,
        },
    };
    Ok((host.to_owned(), port))
}

/// `sqlite://PATH` / `sqlite:PATH` (relative to `base`) or `postgres://...`.
pub fn parse_database_url(url: &str, base: &Path) -> Result<DbTarget, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return match url.parse::<sqlx::postgres::PgConnectOptions>() {
            Ok(_) => Ok(DbTarget::Postgres(url.to_owned())),
            Err(e) => Err(format!("not a valid PostgreSQL URL: {e}")),
        };
    }
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        // The scheme only: the rest may hold a password.
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or(url);
        return Err(format!(
            "unknown database scheme {scheme:?}: use \"sqlite://PATH\" (the default) or \
             \"postgres://USER@HOST:PORT/DATABASE\""
        ));
    };
    if rest.is_empty() {
        return Err("sqlite:// needs a file path, e.g. \"sqlite://sitepilot-hub.db\"".into());
    }
    if rest.contains('?') || rest == ":memory:" {
        return Err(format!(
            "{url:?}: give a plain file path (an in-memory database or URL options are not supported: \
             `cloud-hub site add` and the running hub must share the file)"
        ));
    }
    let path = PathBuf::from(rest);
    Ok(DbTarget::Sqlite(if path.is_relative() { base.join(path) } else { path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("/etc/sitepilot/hub.toml"), text)
    }

    #[test]
    fn an_empty_file_gets_the_single_machine_defaults() {
        let c = parse("").expect("valid");
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.broker, BrokerPlan::Embedded { listen: "0.0.0.0:1883".parse().expect("addr") });
        assert_eq!(c.db, DbTarget::Sqlite(PathBuf::from("/etc/sitepilot/sitepilot-hub.db")), "next to the config");
        assert_eq!(c.ingest.workers, 4);
        assert_eq!(c.api.command_expiry_s, 3600);
    }

    #[test]
    fn command_expiry_is_bounded() {
        let e = parse("[api]\ncommand_expiry_s = 0\n").expect_err("invalid");
        assert_eq!((e.0[0].key.as_deref(), e.0[0].line), (Some("api.command_expiry_s"), Some(2)));
        assert!(parse("[api]\ncommand_expiry_s = 604800\n").is_ok());
        assert!(parse("[api]\ncommand_expiry_s = 604801\n").is_err());
        let e = parse("[billing]\ninterval_s = 0\n").expect_err("invalid");
        assert_eq!((e.0[0].key.as_deref(), e.0[0].line), (Some("billing.interval_s"), Some(2)));
        let e = parse("[billing]\nissuer = \" \"\n").expect_err("invalid");
        assert_eq!(e.0[0].key.as_deref(), Some("billing.issuer"));
    }

    #[test]
    fn an_external_broker_and_postgres() {
        let c = parse(
            "[mqtt]\nurl = \"mqtt://broker.example:1884\"\nusername = \"hub\"\npassword = \"pw\"\n\
             [database]\nurl = \"postgres://hub:secret@db.example:5432/sitepilot\"\n",
        )
        .expect("valid");
        assert_eq!(c.broker, BrokerPlan::External { host: "broker.example".into(), port: 1884 });
        assert_eq!(c.db.to_string(), "PostgreSQL db.example:5432/sitepilot", "no password in the summary");
        assert!(!c.summary().contains("secret"));
    }

    #[test]
    fn syntax_and_type_errors_name_line_and_key() {
        let e = parse("[http]\nlisten = \"0.0.0.0:8080\"\n[mqtt]\nkeep_alive_s = \"thirty\"\n").expect_err("bad type");
        assert_eq!(e.0[0].line, Some(4));
        assert_eq!(e.0[0].key.as_deref(), Some("mqtt.keep_alive_s"));
        assert!(e.to_string().starts_with("/etc/sitepilot/hub.toml:4: key `mqtt.keep_alive_s`: "), "{e}");
        let e = parse("[mqtt]\nembeded = true\n").expect_err("typo");
        assert_eq!((e.0[0].line, e.0[0].key.as_deref()), (Some(2), Some("mqtt.embeded")));
        assert!(e.0[0].reason.contains("unknown field"), "{e}");
    }

    #[test]
    fn validation_reports_every_problem_with_its_line() {
        let text = "[mqtt]\nembedded = true\nurl = \"mqtt://x\"\nkeep_alive_s = 1\npublic_url = \"mqtts://h\"\n\
                    [database]\nurl = \"mysql://x\"\n[ingest]\nworkers = 0\n";
        let e = parse(text).expect_err("invalid");
        let found: Vec<_> = e.0.iter().map(|e| (e.key.clone().unwrap_or_default(), e.line)).collect();
        for (key, line) in [
            ("mqtt.url", 3),
            ("mqtt.keep_alive_s", 4),
            ("mqtt.public_url", 5),
            ("database.url", 7),
            ("ingest.workers", 9),
        ] {
            assert!(found.contains(&(key.to_owned(), Some(line))), "{key} at {line} not in {found:?}");
        }
        assert!(e.to_string().contains("not supported yet"), "{e}");
    }

    #[test]
    fn external_broker_needs_a_url_and_refuses_listen() {
        let e = parse("[mqtt]\nembedded = false\nlisten = \"0.0.0.0:1883\"\n").expect_err("invalid");
        let keys: Vec<_> = e.0.iter().map(|e| e.key.clone().unwrap_or_default()).collect();
        assert_eq!(keys, vec!["mqtt.listen", "mqtt.url"], "{e}");
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(parse_mqtt_url("mqtt://127.0.0.1"), Ok(("127.0.0.1".into(), 1883)));
        assert_eq!(parse_mqtt_url("tcp://[::1]:1884/"), Ok(("::1".into(), 1884)));
        assert!(parse_mqtt_url("mqtt://u:p@host").is_err());
        assert!(parse_mqtt_url("mqtt://host:0").is_err());
        assert!(parse_mqtt_url("host:1883").is_err());
    }

    #[test]
    fn database_urls() {
        let base = Path::new("/srv");
        assert_eq!(parse_database_url("sqlite://hub.db", base), Ok(DbTarget::Sqlite("/srv/hub.db".into())));
        assert_eq!(parse_database_url("sqlite:///var/hub.db", base), Ok(DbTarget::Sqlite("/var/hub.db".into())));
        assert!(parse_database_url("sqlite::memory:", base).is_err());
        assert!(parse_database_url("postgres://u@h/db", base).is_ok());
        assert!(parse_database_url("postgres://u@h:notaport/db", base).is_err());
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/cloud-hub.example.toml"));
        let c = Config::load(path).map_err(|e| e.to_string()).expect("the example config must be valid");
        assert!(matches!(c.broker, BrokerPlan::Embedded { .. }));
    }
}
