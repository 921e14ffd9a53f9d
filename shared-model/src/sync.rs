//! The edge ↔ hub sync protocol over MQTT, version 1. The full description, with the
//! reasoning, is `shared-model/SYNC.md`; this module is its types and topic names.
//!
//! Topics, all under `sitepilot/v1/{site_id}/`:
//!
//! | topic | direction | payload | QoS |
//! |---|---|---|---|
//! | `up/hello` | edge → hub, on every (re)connect | [`Hello`] | 1 |
//! | `up/events` | edge → hub | [`EventBatch`]: the outbox, in `seq` order | 1 |
//! | `down/acks` | hub → edge | [`Ack`]: everything up to `applied_through` is durably applied | 1 |
//! | `down/commands` | hub → edge | [`CommandEnvelope`] | 1 |
//! | `up/results` | edge → hub | [`CommandResult`] | 1 |
//! | `up/status` | edge → hub, retained, and the edge's last will | [`Status`] | 1 |
//! | `up/auth` | edge → hub: may this id tag charge? | [`AuthRequest`] | 1 |
//! | `down/auth` | hub → edge | [`AuthAnswer`] | 1 |
//!
//! Exactly once in effect: the edge numbers its events with a gapless per-site `seq`
//! and deletes them only after an [`Ack`] covers them; the hub applies `(site_id, seq)` at
//! most once, strictly in order (a batch that does not continue where the hub stands is
//! only answered with an [`Ack`] of where it stands, and the edge resends from there).
//! Commands carry an id; the edge executes an id once and answers a redelivery with the
//! stored result.
//!
//! Versions: [`PROTOCOL_VERSION`] is in every payload. A receiver ignores fields it does
//! not know, and the hub stores an event kind it does not know as it came (and acks it),
//! so either side can be upgraded first. An incompatible change gets new topics
//! (`sitepilot/v2/...`).

use crate::events::SiteEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The version of this protocol.
pub const PROTOCOL_VERSION: u32 = 1;

/// The topic prefix of all version-1 topics.
pub const TOPIC_ROOT: &str = "sitepilot/v1";

/// The topic names of one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Hello,
    Events,
    Acks,
    Commands,
    Results,
    Status,
    /// Real-time authorization requests of a site (edge → hub).
    AuthRequests,
    /// Their answers (hub → edge).
    AuthAnswers,
}

impl Topic {
    pub const ALL: [Topic; 8] = [
        Topic::Hello,
        Topic::Events,
        Topic::Acks,
        Topic::Commands,
        Topic::Results,
        Topic::Status,
        Topic::AuthRequests,
        Topic::AuthAnswers,
    ];

    /// The part after `sitepilot/v1/{site_id}/`.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Hello => "up/hello",
            Topic::Events => "up/events",
            Topic::Acks => "down/acks",
            Topic::Commands => "down/commands",
            Topic::Results => "up/results",
            Topic::Status => "up/status",
            Topic::AuthRequests => "up/auth",
            Topic::AuthAnswers => "down/auth",
        }
    }

    /// Whether the edge publishes it (else the hub does).
    pub fn is_up(self) -> bool {
        self.suffix().starts_with("up/")
    }

    /// The full topic of `site_id`.
    pub fn of(self, site_id: &str) -> String {
        format!("{TOPIC_ROOT}/{site_id}/{}", self.suffix())
    }

    /// The hub's subscription filter for this topic over every site.
    pub fn all_sites(self) -> String {
        format!("{TOPIC_ROOT}/+/{}", self.suffix())
    }

    /// Splits a topic into its site id and kind; `None` for anything else.
    pub fn parse(topic: &str) -> Option<(&str, Topic)> {
        let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
        let (site, suffix) = rest.split_once('/')?;
        if !is_valid_site_id(site) {
            return None;
        }
        Topic::ALL.into_iter().find(|t| t.suffix() == suffix).map(|t| (site, t))
    }
}

/// A site id: 1 to 64 letters, digits, `-` or `_` (no MQTT wildcards or separators).
pub fn is_valid_site_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Sent by the edge on every (re)connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub v: u32,
    pub site_id: String,
    /// The edge agent's version.
    pub agent_version: String,
    /// The oldest `seq` still in the outbox (`None`: empty) and the newest assigned.
    pub oldest_unacked: Option<u64>,
    pub newest: Option<u64>,
    pub at: DateTime<Utc>,
}

/// One outbox row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Gapless per site, from 1.
    pub seq: u64,
    /// Unique over all sites and time (a UUID).
    pub event_id: String,
    /// When the edge recorded it.
    pub at: DateTime<Utc>,
    /// [`SiteEvent::kind`].
    pub kind: String,
    /// The [`SiteEvent`] as JSON, kept as the text that came (so that an unknown kind from
    /// a newer edge is stored, not lost, and so that the hub stores what it received
    /// without building and re-serializing a JSON tree of every event).
    pub payload: Box<RawValue>,
}

impl PartialEq for EventEnvelope {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.event_id == other.event_id
            && self.at == other.at
            && self.kind == other.kind
            && self.payload.get() == other.payload.get()
    }
}

impl EventEnvelope {
    /// Wraps a typed event.
    pub fn new(seq: u64, event_id: String, at: DateTime<Utc>, event: &SiteEvent) -> Result<Self, serde_json::Error> {
        Ok(EventEnvelope {
            seq,
            event_id,
            at,
            kind: event.kind().to_owned(),
            payload: serde_json::value::to_raw_value(event)?,
        })
    }

    /// The typed event; `Err` for a kind or shape this version does not know.
    pub fn event(&self) -> Result<SiteEvent, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }

    /// The payload as a JSON tree.
    pub fn payload_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

/// Many consecutive events of one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub v: u32,
    pub site_id: String,
    /// Consecutive `seq`s, ascending.
    pub events: Vec<EventEnvelope>,
}

/// Why a batch is not a well-formed run of events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the batch is empty")]
    Empty,
    #[error("seq {got} follows {previous}: a batch holds consecutive seqs")]
    NotConsecutive { previous: u64, got: u64 },
    #[error("seq 0 is not a valid sequence number (they start at 1)")]
    ZeroSeq,
}

impl EventBatch {
    /// Checks that the events are consecutive and start above 0.
    pub fn check(&self) -> Result<(), BatchError> {
        let first = self.events.first().ok_or(BatchError::Empty)?;
        if first.seq == 0 {
            return Err(BatchError::ZeroSeq);
        }
        for w in self.events.windows(2) {
            if w[1].seq != w[0].seq + 1 {
                return Err(BatchError::NotConsecutive { previous: w[0].seq, got: w[1].seq });
            }
        }
        Ok(())
    }

    /// The seqs it covers.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.events.first()?.seq, self.events.last()?.seq))
    }
}

/// The hub's answer to a batch or a hello: every event up to `applied_through` is durably
/// applied (0: none yet). Cumulative, so a lost ack is made good by the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub v: u32,
    pub site_id: String,
    pub applied_through: u64,
    /// How much the site may have in flight (sent, not yet covered by an ack) from now
    /// on: the hub shares what its broker can hold for it among the sites that are
    /// sending. `None` (an older hub): the site's own limits alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// A flow-control grant: at most `batches` batches and `bytes` bytes of batch payload in
/// flight. A site may always have one batch in flight, however small the grant (its
/// oldest events must be able to move).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub batches: u32,
    pub bytes: u64,
}

/// What the hub asks a site to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub v: u32,
    pub site_id: String,
    /// Unique (a UUID); the edge executes each id at most once.
    pub command_id: String,
    pub issued_at: DateTime<Utc>,
    /// Not to be started after this (a remote start an hour late is worse than none).
    pub expires_at: Option<DateTime<Utc>>,
    pub command: Command,
}

/// The commands a site executes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    RemoteStart {
        station: String,
        connector: Option<u32>,
        id_tag: String,
    },
    RemoteStop {
        station: String,
        transaction_id: i64,
    },
    ChangeAvailability {
        station: String,
        connector: u32,
        operative: bool,
    },
    Reset {
        station: String,
        hard: bool,
    },
    UnlockConnector {
        station: String,
        connector: u32,
    },
    ChangeConfiguration {
        station: String,
        key: String,
        value: String,
    },
    /// Replaces (`full`) or updates the site's local authorization list.
    SetLocalList {
        full: bool,
        entries: Vec<LocalListEntry>,
    },
    /// The tariff the site shows and prices receipts with while offline (OCPI tariff JSON).
    SetTariff {
        tariff_id: String,
        tariff: Value,
    },
    /// Grid-operator or fleet limits for the balancer.
    SetSiteLimits {
        limits: Value,
    },
    /// Reserves a connector for an id tag until `expiry` (OCPP 1.6 ReserveNow). The hub
    /// picks `reservation_id`, unique over all its sites and partners (a roaming
    /// partner's own reservation id never reaches a charger).
    ReserveNow {
        station: String,
        connector: u32,
        expiry: DateTime<Utc>,
        id_tag: String,
        reservation_id: i32,
    },
    /// Ends a reservation made with [`Command::ReserveNow`] (OCPP 1.6 CancelReservation).
    CancelReservation {
        station: String,
        reservation_id: i32,
    },
    /// Caps one running transaction (a roaming partner's charging profile): with the
    /// site's balancer the cap bounds what the balancer offers that session; without one
    /// it goes to the charger as a TxProfile. `limit: None` removes the cap.
    SetSessionLimit {
        station: String,
        connector: u32,
        transaction_id: i64,
        limit: Option<SessionLimit>,
    },
    /// Asks the charger for the schedule it will follow on a connector for the next
    /// `duration_s` seconds (OCPP 1.6 GetCompositeSchedule); the answer is the result's
    /// `detail`.
    GetCompositeSchedule {
        station: String,
        connector: u32,
        duration_s: u32,
    },
}

/// The unit of a [`SessionLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateUnit {
    /// Total power over the phases the charger uses.
    W,
    /// Current per phase.
    A,
}

/// One step of a [`SessionLimit`]: from `start_s` seconds after the limit's start, at
/// most `limit` (in the limit's unit) until the next step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimitPeriod {
    pub start_s: u32,
    pub limit: f64,
}

/// A cap on one session over time (an OCPI ChargingProfile, OCPI 2.2.1 "Charging
/// Profiles module", in the sync protocol's terms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionLimit {
    /// When the periods start; `None`: at the start of the transaction.
    pub start: Option<DateTime<Utc>>,
    /// How long the cap lasts from its start; `None`: the last period lasts until the
    /// transaction ends.
    pub duration_s: Option<u32>,
    pub unit: RateUnit,
    /// The lowest rate the EV charges at efficiently (a hint, in `unit`).
    pub min_rate: Option<f64>,
    /// Ascending `start_s`.
    pub periods: Vec<LimitPeriod>,
}

impl SessionLimit {
    /// The cap in force at `now` for a session that started at `session_start`, in the
    /// limit's unit; `None` before its start, after its duration, or before its first
    /// period.
    pub fn limit_at(&self, session_start: DateTime<Utc>, now: DateTime<Utc>) -> Option<f64> {
        let anchor = self.start.unwrap_or(session_start);
        if now < anchor {
            return None;
        }
        let elapsed = (now - anchor).num_milliseconds();
        if self.duration_s.is_some_and(|d| elapsed >= i64::from(d) * 1000) {
            return None;
        }
        self.periods.iter().take_while(|p| i64::from(p.start_s) * 1000 <= elapsed).last().map(|p| p.limit)
    }
}

impl Command {
    /// The station it is for, if it is for one.
    pub fn station(&self) -> Option<&str> {
        match self {
            Command::RemoteStart { station, .. }
            | Command::RemoteStop { station, .. }
            | Command::ChangeAvailability { station, .. }
            | Command::Reset { station, .. }
            | Command::UnlockConnector { station, .. }
            | Command::ChangeConfiguration { station, .. }
            | Command::ReserveNow { station, .. }
            | Command::CancelReservation { station, .. }
            | Command::SetSessionLimit { station, .. }
            | Command::GetCompositeSchedule { station, .. } => Some(station),
            Command::SetLocalList { .. } | Command::SetTariff { .. } | Command::SetSiteLimits { .. } => None,
        }
    }
}

/// One local authorization list entry; `status` `None` removes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalListEntry {
    pub id_tag: String,
    pub status: Option<String>,
    pub expiry: Option<DateTime<Utc>>,
    pub parent_id_tag: Option<String>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Done; the charger accepted (its answer is in `detail`).
    Accepted,
    /// The charger (or the site) said no.
    Rejected,
    /// It could not be carried out (charger offline, timed out, invalid).
    Failed,
    /// It arrived after `expires_at` and was not started.
    Expired,
}

/// The edge's answer to a command (sent again, unchanged, when the command is redelivered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub v: u32,
    pub site_id: String,
    pub command_id: String,
    pub outcome: CommandOutcome,
    /// The charger's answer, or why it failed.
    pub detail: Value,
    pub at: DateTime<Utc>,
}

/// The edge's presence (retained; its last will says `online: false`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub v: u32,
    pub site_id: String,
    pub online: bool,
    pub at: DateTime<Utc>,
}

/// The edge asks whether an id tag it does not know may charge (a charger sent Authorize
/// or StartTransaction with it). Not stored anywhere on the way: an edge that gets no
/// answer within its timeout (an older hub, or one that cannot tell) applies its own
/// policy, so the request is only worth answering while the edge still waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub v: u32,
    pub site_id: String,
    /// Unique (a UUID); the answer carries it back.
    pub request_id: String,
    pub id_tag: String,
    /// The charger that asks, and its EVSE when known (StartTransaction names a connector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evse: Option<u32>,
    pub at: DateTime<Utc>,
}

/// The hub's verdict on an id tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthVerdict {
    Accepted,
    Blocked,
    Expired,
    Invalid,
    /// The hub cannot tell (no authority knows the tag, or it could not be reached): the
    /// edge applies its own policy and caches nothing.
    Unknown,
}

/// The answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthAnswer {
    pub v: u32,
    pub site_id: String,
    pub request_id: String,
    pub id_tag: String,
    pub verdict: AuthVerdict,
    /// After this the tag is expired (OCPP idTagInfo expiryDate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<DateTime<Utc>>,
    /// Who decided, for logs: e.g. `ocpi:emsp-one:realtime`, `ocpi:emsp-one:whitelist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(seq: u64) -> EventEnvelope {
        let payload = RawValue::from_string("null".into()).expect("JSON");
        EventEnvelope { seq, event_id: format!("e{seq}"), at: Utc::now(), kind: "x".into(), payload }
    }

    #[test]
    fn topics_round_trip() {
        for t in Topic::ALL {
            let topic = t.of("site-1");
            assert_eq!(Topic::parse(&topic), Some(("site-1", t)));
            assert!(topic.starts_with("sitepilot/v1/site-1/"));
        }
        assert_eq!(Topic::Events.all_sites(), "sitepilot/v1/+/up/events");
        assert!(Topic::Events.is_up() && !Topic::Acks.is_up());
        assert!(Topic::AuthRequests.is_up() && !Topic::AuthAnswers.is_up());
        assert_eq!(Topic::AuthAnswers.of("s"), "sitepilot/v1/s/down/auth");
        assert_eq!(Topic::parse("sitepilot/v1/+/up/events"), None);
        assert_eq!(Topic::parse("sitepilot/v1/a/b/up/events"), None);
        assert_eq!(Topic::parse("sitepilot/v2/a/up/events"), None);
        assert_eq!(Topic::parse("sitepilot/v1/a/up/other"), None);
    }

    #[test]
    fn batches_must_be_consecutive() {
        let ok = EventBatch { v: 1, site_id: "s".into(), events: vec![env(3), env(4), env(5)] };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.range(), Some((3, 5)));
        let gap = EventBatch { events: vec![env(3), env(5)], ..ok.clone() };
        assert_eq!(gap.check(), Err(BatchError::NotConsecutive { previous: 3, got: 5 }));
        assert_eq!(EventBatch { events: vec![], ..ok.clone() }.check(), Err(BatchError::Empty));
        assert_eq!(EventBatch { events: vec![env(0)], ..ok }.check(), Err(BatchError::ZeroSeq));
    }

    #[test]
    fn an_unknown_event_kind_survives_as_raw_json() {
        let text = r#"{"seq":7,"event_id":"u","at":"2026-11-21T12:00:00Z","kind":"from_the_future","payload":{"type":"from_the_future","x":1},"extra":true}"#;
        let e: EventEnvelope = serde_json::from_str(text).expect("envelope parses");
        assert!(e.event().is_err());
        assert_eq!(e.payload_value().expect("JSON")["x"], 1);
        // Stored as it came.
        assert_eq!(e.payload.get(), r#"{"type":"from_the_future","x":1}"#);
    }

    #[test]
    fn typed_events_round_trip() {
        let ev = SiteEvent::StationConnection { station: "CP-1".into(), connected: true, at: Utc::now() };
        let e = EventEnvelope::new(1, "id".into(), Utc::now(), &ev).expect("serialises");
        assert_eq!(e.kind, "station_connection");
        assert_eq!(e.event().expect("typed"), ev);
        let cmd = Command::RemoteStop { station: "CP-1".into(), transaction_id: 4 };
        let json = serde_json::to_value(&cmd).expect("serialises");
        assert_eq!(json["type"], "remote_stop");
        assert_eq!(cmd.station(), Some("CP-1"));
        let cmd = Command::ReserveNow {
            station: "CP-2".into(),
            connector: 1,
            expiry: Utc::now(),
            id_tag: "T".into(),
            reservation_id: 7,
        };
        let json = serde_json::to_value(&cmd).expect("serialises");
        assert_eq!(json["type"], "reserve_now");
        assert_eq!(serde_json::from_value::<Command>(json).expect("parses"), cmd);
        assert_eq!(cmd.station(), Some("CP-2"));
    }

    #[test]
    fn session_limit_steps_and_ends() {
        let t0: DateTime<Utc> = "2026-11-21T12:00:00Z".parse().expect("time");
        let s = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let relative = SessionLimit {
            start: None,
            duration_s: Some(600),
            unit: RateUnit::A,
            min_rate: None,
            periods: vec![LimitPeriod { start_s: 0, limit: 16.0 }, LimitPeriod { start_s: 300, limit: 8.0 }],
        };
        assert_eq!(relative.limit_at(t0, s(-1)), None, "before the session");
        assert_eq!(relative.limit_at(t0, t0), Some(16.0));
        assert_eq!(relative.limit_at(t0, s(299)), Some(16.0));
        assert_eq!(relative.limit_at(t0, s(300)), Some(8.0));
        assert_eq!(relative.limit_at(t0, s(600)), None, "after its duration");
        let absolute = SessionLimit {
            start: Some(s(100)),
            duration_s: None,
            periods: vec![LimitPeriod { start_s: 60, limit: 4000.0 }],
            unit: RateUnit::W,
            ..relative
        };
        assert_eq!(absolute.limit_at(t0, s(150)), None, "before the first period");
        assert_eq!(absolute.limit_at(t0, s(160)), Some(4000.0));
        assert_eq!(absolute.limit_at(t0, s(100_000)), Some(4000.0), "the last period lasts");
    }

    #[test]
    fn auth_messages_round_trip_and_ignore_unknown_fields() {
        let text = r#"{"v":1,"site_id":"s","request_id":"r1","id_tag":"T","verdict":"accepted","at":"2026-11-21T12:00:00Z","new":1}"#;
        let a: AuthAnswer = serde_json::from_str(text).expect("answer parses");
        assert_eq!((a.verdict, a.expiry, a.source), (AuthVerdict::Accepted, None, None));
        let r = AuthRequest {
            v: PROTOCOL_VERSION,
            site_id: "s".into(),
            request_id: "r1".into(),
            id_tag: "T".into(),
            station: Some("CP-1".into()),
            evse: None,
            at: Utc::now(),
        };
        let json = serde_json::to_value(&r).expect("json");
        assert!(json.get("evse").is_none());
        assert_eq!(serde_json::from_value::<AuthRequest>(json).expect("parses"), r);
    }
}
