//! `[sync]`: the MQTT link to the cloud hub. Without the section sync is off and the
//! outbox only grows (everything local keeps working).

use crate::config::{ConfigError, find_key_line};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// `[sync]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// `mqtt://HOST[:PORT]` (port 1883 when left out). Plain TCP only: TLS (`mqtts://`)
    /// is not supported yet.
    pub broker: String,
    /// MQTT user name; default: the site id (what `cloud-hub site add` provisions).
    #[serde(default)]
    pub username: Option<String>,
    /// MQTT password from `cloud-hub site add`.
    #[serde(default)]
    pub password: Option<String>,
    /// Most events in one `EventBatch` message.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A batch stops growing at this many bytes of event payload (one larger event still
    /// goes alone).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Batches sent and not yet acknowledged by the hub before the agent waits.
    #[serde(default = "default_max_inflight_batches")]
    pub max_inflight_batches: usize,
    /// MQTT keep-alive.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// Sent batches without an ack for this long are sent again (from the last ack); the
    /// wait doubles while the hub stays silent, up to 10 times this. Also how long the
    /// agent waits for the hub's answer to its hello before it starts sending.
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u64,
    /// The outbox is checked for new rows at least this often (the agent also wakes at
    /// once on every station change).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// First wait before reconnecting to an unreachable broker; doubles up to
    /// `reconnect_max_s`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_s")]
    pub reconnect_max_s: u64,
    /// Alarm when the oldest unacknowledged event is older than this (rows are never
    /// deleted before the hub acknowledged them).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Alarm when more events than this wait in the outbox.
    #[serde(default = "default_max_outbox_rows")]
    pub max_outbox_rows: u64,
    /// An id tag in neither the local list nor the authorization cache is asked of the hub
    /// (real-time authorization, e.g. a roaming partner's card) while connected; the
    /// charger's answer waits at most this long for the hub, then the
    /// `[authorization] unknown_id_tags` policy decides (an older hub never answers).
    /// 0: never ask.
    #[serde(default = "default_auth_timeout_ms")]
    pub auth_timeout_ms: u64,
    /// A cached answer of the hub older than this is asked again while connected (and
    /// still used when the hub does not answer).
    #[serde(default = "default_auth_refresh_s")]
    pub auth_refresh_s: u64,
    /// With circuits configured: how often the site's power per phase against its limits
    /// and the balancer's fail-safe state are reported to the hub (also at once on every
    /// fail-safe change). 0: never. Reports that wait in the outbox are coalesced.
    #[serde(default = "default_site_energy_interval_ms")]
    pub site_energy_interval_ms: u64,
}

fn default_batch_size() -> usize {
    500
}
fn default_max_batch_bytes() -> usize {
    1024 * 1024
}
fn default_max_inflight_batches() -> usize {
    4
}
fn default_keepalive_s() -> u64 {
    30
}
fn default_ack_timeout_s() -> u64 {
    30
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_s() -> u64 {
    60
}
fn default_retention_days() -> u32 {
    7
}
fn default_max_outbox_rows() -> u64 {
    1_000_000
}
fn default_auth_timeout_ms() -> u64 {
    2000
}
fn default_auth_refresh_s() -> u64 {
    3600
}
fn default_site_energy_interval_ms() -> u64 {
    15_000
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `mqtt://HOST[:PORT]`.
pub fn parse_broker(url: &str) -> Result<BrokerAddr, String> {
    let example = "e.g. \"mqtt://hub.example.com:1883\"";
    let rest = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => rest,
        Some(("mqtts" | "ssl" | "tls" | "wss" | "ws", _)) => {
            return Err(format!(
                "{url:?}: TLS and WebSocket transports are not supported yet; use mqtt:// (plain TCP, over a \
                 trusted network or a VPN)"
            ));
        }
        Some((scheme, _)) => {
            return Err(format!("{url:?}: unknown scheme {scheme:?}; use mqtt://HOST:PORT ({example})"));
        }
        None => return Err(format!("{url:?} is not a broker URL; use mqtt://HOST:PORT ({example})")),
    };
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(format!(
            "{url:?}: give only mqtt://HOST:PORT (credentials go in `username` / `password`, no path) ({example})"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed '[' in an IPv6 address"))?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(|| format!("{url:?}: expected ':PORT' after ']'"))?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: the host is missing ({example})"));
    }
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("{url:?}: {p:?} is not a TCP port (1 to 65535)")),
            Ok(p) => p,
        },
    };
    Ok(BrokerAddr { host: host.to_owned(), port })
}

impl SyncConfig {
    /// The broker address (checked by validation, so only `Err` for an unvalidated config).
    pub fn broker_addr(&self) -> Result<BrokerAddr, String> {
        parse_broker(&self.broker)
    }

    pub fn ack_timeout(&self) -> Duration {
        Duration::from_secs(self.ack_timeout_s)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// How long to wait for the hub's authorization answer (`None`: never ask).
    pub fn auth_timeout(&self) -> Option<Duration> {
        (self.auth_timeout_ms > 0).then(|| Duration::from_millis(self.auth_timeout_ms))
    }

    /// Checks every key; errors name the file, line and key.
    pub fn validate(&self, path: &Path, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |key: &str, reason: String| {
            errors.push(ConfigError {
                file: path.to_owned(),
                line: find_key_line(text, "sync", key, None),
                key: Some(format!("sync.{key}")),
                reason,
            });
        };
        if let Err(e) = parse_broker(&self.broker) {
            err("broker", e);
        }
        if let Some(u) = &self.username
            && (u.is_empty() || u.len() > 256)
        {
            err("username", "must be 1 to 256 bytes (leave it out to use the site id)".into());
        }
        if self.password.as_ref().is_some_and(|p| p.len() > 1024) {
            err("password", "must be at most 1024 bytes".into());
        }
        let mut range = |key: &str, v: u64, lo: u64, hi: u64, unit: &str| {
            if !(lo..=hi).contains(&v) {
                err(key, format!("{v}{unit}: use {lo} to {hi}"));
            }
        };
        range("batch_size", self.batch_size as u64, 1, 10_000, "");
        range("max_batch_bytes", self.max_batch_bytes as u64, 1024, 64 * 1024 * 1024, " bytes");
        range("max_inflight_batches", self.max_inflight_batches as u64, 1, 64, "");
        range("keepalive_s", self.keepalive_s, 1, 65_535, " s");
        range("ack_timeout_s", self.ack_timeout_s, 1, 3600, " s");
        range("poll_interval_ms", self.poll_interval_ms, 10, 60_000, " ms");
        range("reconnect_min_ms", self.reconnect_min_ms, 10, 60_000, " ms");
        range("reconnect_max_s", self.reconnect_max_s, 1, 3600, " s");
        range("retention_days", u64::from(self.retention_days), 1, 3650, " days");
        range("max_outbox_rows", self.max_outbox_rows, 1, 1_000_000_000, "");
        if self.auth_timeout_ms != 0 {
            range("auth_timeout_ms", self.auth_timeout_ms, 100, 30_000, " ms (or 0: never ask the hub)");
        }
        range("auth_refresh_s", self.auth_refresh_s, 0, 31_536_000, " s");
        if self.site_energy_interval_ms != 0 {
            range("site_energy_interval_ms", self.site_energy_interval_ms, 100, 3_600_000, " ms (or 0: never report)");
        }
        if self.reconnect_max_s.saturating_mul(1000) < self.reconnect_min_ms {
            err("reconnect_max_s", format!("must be at least reconnect_min_ms ({} ms)", self.reconnect_min_ms));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(sync: &str) -> Result<Config, crate::config::ConfigErrors> {
        Config::parse(Path::new("edge.toml"), &format!("[site]\nid = \"s1\"\n\n[sync]\n{sync}"))
    }

    #[test]
    fn without_a_section_sync_is_off() {
        let c = Config::parse(Path::new("edge.toml"), "[site]\nid = \"s1\"\n").expect("valid");
        assert!(c.sync.is_none());
    }

    #[test]
    fn defaults() {
        let c = parse("broker = \"mqtt://127.0.0.1:1883\"\n").expect("valid");
        let s = c.sync.expect("sync on");
        assert_eq!(s.broker_addr(), Ok(BrokerAddr { host: "127.0.0.1".into(), port: 1883 }));
        assert_eq!((s.batch_size, s.max_inflight_batches, s.keepalive_s), (500, 4, 30));
        assert_eq!((s.retention_days, s.max_outbox_rows), (7, 1_000_000));
        assert_eq!(s.username, None);
        assert_eq!((s.auth_timeout(), s.auth_refresh_s), (Some(Duration::from_secs(2)), 3600));
        let off = parse("broker = \"mqtt://127.0.0.1:1883\"\nauth_timeout_ms = 0\n").expect("valid");
        assert_eq!(off.sync.expect("sync on").auth_timeout(), None);
        let e = parse("broker = \"mqtt://127.0.0.1:1883\"\nauth_timeout_ms = 50\n").expect_err("too short");
        assert!(e.to_string().contains("sync.auth_timeout_ms"), "{e}");
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://hub.example.com"),
            Ok(BrokerAddr { host: "hub.example.com".into(), port: 1883 })
        );
        assert_eq!(parse_broker("mqtt://[::1]:1884"), Ok(BrokerAddr { host: "::1".into(), port: 1884 }));
        assert_eq!(parse_broker("mqtt://[::1]:1884").map(|b| b.to_string()), Ok("mqtt://[::1]:1884".into()));
        for (bad, why) in [
            ("mqtts://hub:8883", "not supported yet"),
            ("hub:1883", "not a broker URL"),
            ("http://hub", "unknown scheme"),
            ("mqtt://:1883", "host is missing"),
            ("mqtt://hub:0", "not a TCP port"),
            ("mqtt://hub:99999", "not a TCP port"),
            ("mqtt://user:pw@hub:1883", "username"),
            ("mqtt://hub:1883/x", "no path"),
        ] {
            let e = parse_broker(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_line_key_and_reason() {
        let e = parse(
            "broker = \"mqtts://hub:8883\"\nbatch_size = 0\nmax_inflight_batches = 100\nkeepalive_s = 0\n\
             retention_days = 0\nusername = \"\"\n",
        )
        .expect_err("invalid");
        let found: Vec<(String, Option<usize>)> =
            e.0.iter().map(|e| (e.key.clone().unwrap_or_default(), e.line)).collect();
        for (key, line) in [
            ("sync.broker", 5),
            ("sync.batch_size", 6),
            ("sync.max_inflight_batches", 7),
            ("sync.keepalive_s", 8),
            ("sync.retention_days", 9),
            ("sync.username", 10),
        ] {
            assert!(found.contains(&(key.to_owned(), Some(line))), "{key} at line {line} not in {found:?}");
        }
        assert!(e.to_string().contains("edge.toml:5: key `sync.broker`: \"mqtts://hub:8883\": TLS"), "{e}");
        assert!(e.to_string().contains("edge.toml:7: key `sync.max_inflight_batches`: 100: use 1 to 64"), "{e}");
    }

    #[test]
    fn unknown_keys_and_a_missing_broker_are_refused() {
        let e = parse("broker = \"mqtt://h\"\nbatchsize = 5\n").expect_err("typo");
        assert_eq!(e.0[0].line, Some(6), "{e}");
        assert!(e.0[0].reason.contains("unknown field `batchsize`"), "{e}");
        let e = parse("batch_size = 5\n").expect_err("no broker");
        assert!(e.to_string().contains("missing field `broker`"), "{e}");
    }
}
