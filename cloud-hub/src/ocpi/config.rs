//! `[ocpi]`: who we are towards roaming partners, where they reach us, and how pushes
//! and token rotation behave.
//!
//! ```toml
//! [ocpi]
//! enabled = true
//! public_url = "https://hub.example.com"   # versions at {public_url}/ocpi/versions
//! country_code = "DE"
//! party_id = "SPL"
//! business_name = "Sitepilot Charging"
//! push = true
//! rotation_grace_s = 300
//! command_timeout_s = 60
//! raw_token_partners = ["old-emsp"]
//! push_retry_max_ms = 30000
//! realtime_auth_timeout_ms = 1500
//! auth_rate_per_s = 5.0
//! auth_burst = 20
//! [ocpi.token_a]
//! emsp-one = "a-long-random-token-given-to-emsp-one"
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;

/// `[ocpi]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcpiConfig {
    /// Serve `/ocpi/...` and push to registered partners.
    pub enabled: bool,
    /// The base URL partners reach the hub at (no trailing slash), e.g.
    /// `https://hub.example.com`. Default: `http://` and the HTTP listen address the hub
    /// got (fine for tests and a LAN, not behind a proxy).
    pub public_url: Option<String>,
    /// Our ISO 3166-1 alpha-2 country code.
    pub country_code: String,
    /// Our party id (3 characters, ISO 15118 operator id).
    pub party_id: String,
    /// Our business name in the credentials we send.
    pub business_name: String,
    /// Push location changes (PUT) and EVSE status changes (PATCH) to registered eMSPs.
    pub push: bool,
    /// After a partner rotates its credentials, its previous token keeps working this many
    /// seconds (0 to 86400), so that requests already under way do not fail.
    pub rotation_grace_s: u32,
    /// The most objects one page of a list holds (and the default page size), 1 to 10000.
    pub max_page_limit: u32,
    /// How often the generated locations are compared with the live data, milliseconds
    /// (50 to 60000). A change is pushed at most this long after ingest applied it.
    pub refresh_interval_ms: u64,
    /// The `timeout` of commands and charging profile requests (1 to 3600 s): the
    /// asynchronous result is POSTed within it, TIMEOUT when the site has not answered.
    /// Give the site's OCPP call timeout (30 s by default) and the way there and back.
    pub command_timeout_s: u32,
    /// Bootstrap tokens: partner name = token A. At start each partner without a row
    /// yet gets one, waiting for it to register with this token.
    pub token_a: BTreeMap<String, String>,
    /// Partners (by name) whose tokens travel raw, not base64 (OCPI 2.1-era peers).
    pub raw_token_partners: Vec<String>,
    /// A failed push (or CDR POST) is tried again after this many milliseconds, the wait
    /// doubling up to `push_retry_max_ms` (50 to 60000).
    pub push_retry_min_ms: u64,
    /// The longest wait between two tries of a push (`push_retry_min_ms` to 3600000).
    pub push_retry_max_ms: u64,
    /// The currency of a session at a site without a tariff (ISO 4217, three letters).
    pub default_currency: String,
    /// How long a site's real-time authorization waits for an eMSP's answer before the
    /// hub answers without it, milliseconds (100 to 30000). Keep it below the edges'
    /// `sync.auth_timeout_ms`.
    pub realtime_auth_timeout_ms: u64,
    /// An id tag no partner pushed as a token is asked of every registered eMSP with a
    /// tokens Sender endpoint (real-time authorization); false: such a tag is unknown to
    /// the hub and the site applies its own policy.
    pub authorize_unknown_tokens: bool,
    /// Authorization requests (`up/auth`) a site may make per second, on average (0.1 to
    /// 1000). Over it (and its burst) the hub answers Unknown at once, without asking any
    /// eMSP, and the site's offline policy decides; counted in
    /// `sitepilot_hub_ocpi_auth_rate_limited_total`.
    pub auth_rate_per_s: f64,
    /// How many requests a site may make at once above the rate (1 to 10000).
    pub auth_burst: u32,
}

impl Default for OcpiConfig {
    fn default() -> Self {
        OcpiConfig {
            enabled: false,
            public_url: None,
            country_code: "DE".to_owned(),
            party_id: "SPL".to_owned(),
            business_name: "Sitepilot".to_owned(),
            push: true,
            rotation_grace_s: 300,
            max_page_limit: 1000,
            refresh_interval_ms: 1000,
            command_timeout_s: 60,
            token_a: BTreeMap::new(),
            raw_token_partners: Vec::new(),
            push_retry_min_ms: 500,
            push_retry_max_ms: 30_000,
            default_currency: "EUR".to_owned(),
            realtime_auth_timeout_ms: 1500,
            authorize_unknown_tokens: true,
            auth_rate_per_s: 5.0,
            auth_burst: 20,
        }
    }
}

/// Whether `name` may name a partner: 1 to 64 letters, digits, `-`, `_`, `.`.
pub fn is_valid_partner_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks `[ocpi]`; each problem goes to `err(table, key, reason)`.
pub fn validate(c: &OcpiConfig, err: &mut dyn FnMut(&str, &str, String)) {
    if let Some(url) = &c.public_url
        && (!(url.starts_with("http://") || url.starts_with("https://"))
            || url.ends_with('/')
            || url.contains(['?', '#']))
    {
        err("ocpi", "public_url", format!("{url:?}: use http(s)://HOST[:PORT][/PATH] without a trailing '/'"));
    }
    if c.country_code.len() != 2 || !c.country_code.chars().all(|ch| ch.is_ascii_uppercase()) {
        err("ocpi", "country_code", format!("{:?}: use two upper-case letters (ISO 3166-1 alpha-2)", c.country_code));
    }
    if c.party_id.len() != 3 || !c.party_id.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit()) {
        err("ocpi", "party_id", format!("{:?}: use three upper-case letters or digits", c.party_id));
    }
    if c.business_name.trim().is_empty() || c.business_name.chars().count() > 100 {
        err("ocpi", "business_name", "must be 1 to 100 characters".into());
    }
    if c.rotation_grace_s > 86_400 {
        err("ocpi", "rotation_grace_s", format!("{} s: use 0 to 86400", c.rotation_grace_s));
    }
    if !(1..=10_000).contains(&c.max_page_limit) {
        err("ocpi", "max_page_limit", format!("{}: use 1 to 10000", c.max_page_limit));
    }
    if !(50..=60_000).contains(&c.refresh_interval_ms) {
        err("ocpi", "refresh_interval_ms", format!("{} ms: use 50 to 60000", c.refresh_interval_ms));
    }
    if !(1..=3600).contains(&c.command_timeout_s) {
        err("ocpi", "command_timeout_s", format!("{} s: use 1 to 3600", c.command_timeout_s));
    }
    for (name, token) in &c.token_a {
        if !is_valid_partner_name(name) {
            err(
                "ocpi.token_a",
                name,
                format!("{name:?} is not a partner name: 1 to 64 letters, digits, '-', '_', '.'"),
            );
        }
        if token.len() < 16 || token.len() > 255 || !token.chars().all(|ch| ch.is_ascii_graphic()) {
            err("ocpi.token_a", name, "the token must be 16 to 255 printable ASCII characters without spaces".into());
        }
    }
    if !(50..=60_000).contains(&c.push_retry_min_ms) {
        err("ocpi", "push_retry_min_ms", format!("{} ms: use 50 to 60000", c.push_retry_min_ms));
    }
    if c.push_retry_max_ms < c.push_retry_min_ms || c.push_retry_max_ms > 3_600_000 {
        err(
            "ocpi",
            "push_retry_max_ms",
            format!("{} ms: use push_retry_min_ms ({} ms) to 3600000", c.push_retry_max_ms, c.push_retry_min_ms),
        );
    }
    if c.default_currency.len() != 3 || !c.default_currency.chars().all(|ch| ch.is_ascii_uppercase()) {
        err(
            "ocpi",
            "default_currency",
            format!("{:?}: use three upper-case letters (ISO 4217, e.g. \"EUR\")", c.default_currency),
        );
    }
    if !(100..=30_000).contains(&c.realtime_auth_timeout_ms) {
        err("ocpi", "realtime_auth_timeout_ms", format!("{} ms: use 100 to 30000", c.realtime_auth_timeout_ms));
    }
    if !(0.1..=1000.0).contains(&c.auth_rate_per_s) {
        err("ocpi", "auth_rate_per_s", format!("{}: use 0.1 to 1000 requests per second", c.auth_rate_per_s));
    }
    if !(1..=10_000).contains(&c.auth_burst) {
        err("ocpi", "auth_burst", format!("{}: use 1 to 10000", c.auth_burst));
    }
    for name in &c.raw_token_partners {
        if !is_valid_partner_name(name) {
            err("ocpi", "raw_token_partners", format!("{name:?} is not a partner name"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn ocpi_errors_name_key_and_line() {
        let text = "[ocpi]\nenabled = true\ncountry_code = \"de\"\nparty_id = \"TOOLONG\"\nmax_page_limit = 0\n\
                    push_retry_max_ms = 10\ndefault_currency = \"euro\"\n[ocpi.token_a]\nemsp = \"short\"\n";
        let e = Config::parse(Path::new("hub.toml"), text).expect_err("invalid");
        let found: Vec<_> = e.0.iter().map(|e| (e.key.clone().unwrap_or_default(), e.line)).collect();
        for (key, line) in [
            ("ocpi.country_code", 3),
            ("ocpi.party_id", 4),
            ("ocpi.max_page_limit", 5),
            ("ocpi.push_retry_max_ms", 6),
            ("ocpi.default_currency", 7),
            ("ocpi.token_a.emsp", 9),
        ] {
            assert!(found.contains(&(key.to_owned(), Some(line))), "{key} at {line} not in {found:?}");
        }
    }

    #[test]
    fn unknown_ocpi_key_is_refused() {
        let e = Config::parse(Path::new("hub.toml"), "[ocpi]\nenable = true\n").expect_err("invalid");
        assert!(e.to_string().contains("enable"), "{e}");
    }
}
