//! The commissioning checklist: what an installer has to see before leaving the site,
//! each item with a state and the reason for it, computed from the live view and the
//! config. Pure: the same view gives the same list.
//!
//! The config loader refuses a file with any error, so a running agent's config always
//! passed validation; what the page adds are the [`notices`]: choices that are valid but
//! that an installer should make on purpose (no charger passwords, unbalanced chargers,
//! circuits without a meter, ...).

use super::view::{ChargerRow, PageView};
use crate::config::{Config, UnknownChargerPolicy, UnknownTagPolicy};
use crate::meters::MeterStatus;
use chrono::{DateTime, Utc};

/// The state of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pass,
    /// Not there yet, nothing wrong seen (a charger that never connected, a meter that has
    /// not answered its first poll).
    Pending,
    Fail,
    /// Not configured, and optional.
    Off,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pass => "pass",
            State::Pending => "pending",
            State::Fail => "fail",
            State::Off => "off",
        }
    }

    /// The badge text (the state is never told by colour alone).
    pub fn label(self) -> &'static str {
        match self {
            State::Pass => "OK",
            State::Pending => "WAIT",
            State::Fail => "FAIL",
            State::Off => "OFF",
        }
    }
}

/// One checklist item.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Stable key for the page and tests: `charger:CP-1`, `meter:grid`, `limits`,
    /// `balancer`, `cloud`, `config`.
    pub key: String,
    pub title: String,
    pub state: State,
    /// Why, in one sentence.
    pub detail: String,
}

fn check(key: impl Into<String>, title: impl Into<String>, state: State, detail: impl Into<String>) -> Check {
    Check { key: key.into(), title: title.into(), state, detail: detail.into() }
}

/// `HH:MM:SS UTC` of a stored or live timestamp.
pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S UTC").to_string()
}

fn stored_clock(s: &str) -> String {
    crate::store::parse_ts(s).map(clock).unwrap_or_else(|| s.to_owned())
}

/// Every item, in the order an installer works through them.
pub fn checklist(config: &Config, view: &PageView) -> Vec<Check> {
    let mut items = Vec::new();
    for ch in &view.chargers {
        if let Some(c) = charger_check(config, ch) {
            items.push(c);
        }
    }
    if view.chargers.is_empty() {
        items.push(check(
            "chargers",
            "Chargers",
            State::Pending,
            "no charger configured or connected yet: add [[chargers]] to the config",
        ));
    }
    for m in &view.meters {
        items.push(meter_check(m));
    }
    items.push(limits_check(config));
    if config.energy.is_some() {
        items.push(balancer_check(view));
    }
    items.push(cloud_check(view));
    let notices = notices(config);
    items.push(check(
        "config",
        "Configuration",
        State::Pass,
        format!(
            "validated at start: {} charger(s), {} meter(s), {} circuit(s), {} id tag(s); {}",
            config.chargers.len(),
            config.meters.len(),
            config.circuits.len(),
            config.authorization.tags.len(),
            match notices.len() {
                0 => "no notices".to_owned(),
                1 => "1 notice below".to_owned(),
                n => format!("{n} notices below"),
            }
        ),
    ));
    items
}

fn charger_check(config: &Config, ch: &ChargerRow) -> Option<Check> {
    let key = format!("charger:{}", ch.id);
    let title = format!("Charger {}", ch.id);
    let configured = config.chargers.iter().any(|c| c.id.as_str() == ch.id);
    let c = match ch.registration.as_str() {
        "rejected" if !configured => return None,
        "rejected" => check(key, title, State::Fail, "rejected: it may not connect"),
        "pending" => check(
            key,
            title,
            State::Pending,
            format!("unknown charger waiting for approval (POST /api/v1/chargers/{}/approve)", ch.id),
        ),
        _ if ch.connected() => {
            let protocol = ch.protocol.unwrap_or_default();
            let since = ch.connected_at.map(clock).unwrap_or_default();
            let boot = match &ch.last_boot {
                Some(b) => format!(", booted {}", stored_clock(b)),
                None => ", no BootNotification yet".to_owned(),
            };
            let state = if ch.last_boot.is_some() { State::Pass } else { State::Pending };
            check(key, title, state, format!("connected over {protocol} since {since}{boot}"))
        }
        _ => match &ch.last_seen {
            Some(seen) => check(key, title, State::Fail, format!("not connected; last seen {}", stored_clock(seen))),
            None => check(
                key,
                title,
                State::Pending,
                format!(
                    "configured, never connected: point the charger at ws://<this gateway>:{}{}/{}",
                    config.ocpp.listen.port(),
                    config.ocpp.path,
                    ch.id
                ),
            ),
        },
    };
    Some(c)
}

fn meter_check(m: &MeterStatus) -> Check {
    let key = format!("meter:{}", m.info.id);
    let title = format!("Meter {}", m.info.id);
    if !m.stale {
        // A clock time, not an age: the item then changes only when the meter is read.
        let at = m.read_at.map(clock).unwrap_or_default();
        let detail = format!("fresh: last read {at} over {}", m.info.transport);
        return check(key, title, State::Pass, detail);
    }
    match (&m.last_error, m.read_at) {
        (Some(e), _) => check(
            key,
            title,
            State::Fail,
            format!("stale: {} ({}) over {}; {} failed reads", e.kind, e.message, m.info.transport, m.reads_failed),
        ),
        (None, Some(at)) => check(key, title, State::Fail, format!("stale: no good reading since {}", clock(at))),
        (None, None) => {
            check(key, title, State::Pending, format!("waiting for the first reading over {}", m.info.transport))
        }
    }
}

fn limits_check(config: &Config) -> Check {
    if config.circuits.is_empty() {
        return check(
            "limits",
            "Circuits and limits",
            State::Off,
            "no [[circuits]] configured: nothing is balanced, chargers run at their own maximum",
        );
    }
    let circuits: Vec<String> = config
        .circuits
        .iter()
        .map(|c| {
            let mut s = c.id.clone();
            if let Some(l) = c.limit_a {
                let a = l.per_phase();
                if a[0] == a[1] && a[1] == a[2] {
                    s.push_str(&format!(" {} A", a[0]));
                } else {
                    s.push_str(&format!(" {}/{}/{} A", a[0], a[1], a[2]));
                }
            }
            if let Some(w) = c.power_limit_w {
                s.push_str(&format!(" {w} W"));
            }
            s
        })
        .collect();
    let balanced = config.energy.as_ref().map_or(0, |e| e.points.len());
    check(
        "limits",
        "Circuits and limits",
        State::Pass,
        format!("{}; {balanced} connector(s) balanced", circuits.join(", ")),
    )
}

fn balancer_check(view: &PageView) -> Check {
    let c = &view.control;
    if let Some(why) = &c.refused {
        return check("balancer", "Balancer", State::Fail, format!("last run refused: {why}"));
    }
    if !c.fail_safe.is_empty() {
        let what: Vec<String> = c.fail_safe.iter().map(|f| super::render::fail_safe_text(&f.fail_safe)).collect();
        return check("balancer", "Balancer", State::Fail, format!("in fail-safe: {}", what.join("; ")));
    }
    if c.runs == 0 {
        return check("balancer", "Balancer", State::Pending, "waiting for its first run");
    }
    check("balancer", "Balancer", State::Pass, format!("running ({} runs), nothing in fail-safe", c.runs))
}

fn cloud_check(view: &PageView) -> Check {
    let s = &view.sync;
    if !s.enabled {
        return check("cloud", "Cloud link", State::Off, "no [sync] section: the site runs on its own");
    }
    let broker = s.broker.clone().unwrap_or_default();
    if s.link.connected {
        let ack = match s.link.last_ack {
            Some(seq) => format!("hub applied up to event {seq}"),
            None => "no acknowledgement yet".to_owned(),
        };
        let state = if s.alarm.is_some() { State::Fail } else { State::Pass };
        let alarm = s.alarm.as_ref().map(|a| format!("; {a}")).unwrap_or_default();
        return check(
            "cloud",
            "Cloud link",
            state,
            format!("connected to {broker}; {ack}; {} event(s) waiting{alarm}", s.outbox.pending),
        );
    }
    match &s.link.last_error {
        Some(e) => check(
            "cloud",
            "Cloud link",
            State::Fail,
            format!("not connected to {broker}: {} (at {})", e.message, clock(e.at)),
        ),
        None => check("cloud", "Cloud link", State::Pending, format!("connecting to {broker}")),
    }
}

/// Valid but noteworthy choices in the config, one sentence each.
pub fn notices(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.ocpp.security_profile == 0 {
        out.push("ocpp.security_profile = 0: chargers connect without a password (lab use only)".to_owned());
    }
    match config.ocpp.unknown_chargers {
        UnknownChargerPolicy::Accept => {
            out.push("ocpp.unknown_chargers = \"accept\": any charger that connects is accepted".to_owned())
        }
        UnknownChargerPolicy::Pending => {
            out.push("ocpp.unknown_chargers = \"pending\": unknown chargers wait for approval on the API".to_owned())
        }
        UnknownChargerPolicy::Reject => {}
    }
    if config.authorization.unknown_id_tags == UnknownTagPolicy::Accept {
        out.push("authorization.unknown_id_tags = \"accept\": any id tag may charge (free vend)".to_owned());
    }
    if !config.circuits.is_empty() {
        for c in config.chargers.iter().filter(|c| c.circuit.is_none()) {
            out.push(format!("charger {} has no circuit: the balancer does not limit it", c.id.as_str()));
        }
        let metered: Vec<&str> = config.meters.iter().filter_map(|m| m.node.as_deref()).collect();
        for c in config.circuits.iter().filter(|c| !metered.contains(&c.id.as_str())) {
            out.push(format!(
                "circuit {} has no meter: its limit is kept by the setpoints alone (other loads are not seen)",
                c.id
            ));
        }
    }
    for m in config.meters.iter().filter(|m| m.node.is_none()) {
        out.push(format!("meter {} measures no circuit: shown here, not used by the balancer", m.id));
    }
    if !config.api.listen.ip().is_loopback() {
        out.push(format!(
            "this page and the API have no login and listen on {}: keep that port on the site LAN",
            config.api.listen
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(tail: &str) -> Config {
        let text = format!(
            "[site]\nid = \"s\"\n[ocpp]\nsecurity_profile = 0\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [[chargers]]\nid = \"CP-1\"\ncircuit = \"grid\"\n[[chargers]]\nid = \"CP-2\"\n{tail}"
        );
        Config::parse(Path::new("t.toml"), &text).expect("config")
    }

    #[test]
    fn notices_name_what_an_installer_should_decide_on_purpose() {
        let c = config("[[circuits]]\nid = \"grid\"\nlimit_a = 32\n");
        let n = notices(&c);
        assert!(n.iter().any(|s| s.contains("security_profile = 0")), "{n:?}");
        assert!(n.iter().any(|s| s.contains("charger CP-2 has no circuit")), "{n:?}");
        assert!(n.iter().any(|s| s.contains("circuit grid has no meter")), "{n:?}");
        assert!(!n.iter().any(|s| s.contains("no login")), "loopback API: {n:?}");
    }

    #[test]
    fn limits_item_is_off_without_circuits_and_lists_them_with() {
        let text = "[site]\nid = \"s\"\n[api]\nlisten = \"127.0.0.1:0\"\n";
        let off = limits_check(&Config::parse(Path::new("t.toml"), text).expect("config"));
        assert_eq!(off.state, State::Off);
        let on = limits_check(&config("[[circuits]]\nid = \"grid\"\nlimit_a = [32, 32, 25]\n"));
        assert_eq!(on.state, State::Pass);
        assert!(on.detail.contains("grid 32/32/25 A"), "{}", on.detail);
    }
}
