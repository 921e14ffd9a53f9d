//! Site events: every state change the edge agent records is also written, in the same
//! database transaction, as one of these into its outbox, which the sync issue drains to
//! the cloud hub in order. The envelope (site id, gapless sequence number, event id,
//! time) is added by the outbox; this is the typed payload.

use crate::energy::SiteEnergyReport;
use crate::model::{ConnectorRef, ConnectorStatus, MeterSample, StationInfo, StopReason, TransactionOrigin};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SiteEvent {
    /// A charging station booted (BootNotification) and how we answered.
    StationBooted { station: String, info: StationInfo, registration: String, at: DateTime<Utc> },
    /// A station's registration changed: first seen (unknown-charger policy), approved or
    /// rejected by an installer.
    StationRegistration { station: String, registration: String, at: DateTime<Utc> },
    /// An entry of the site's local authorization list was set (`status` present) or
    /// removed (`status` absent) through the local API.
    IdTagChanged {
        id_tag: String,
        status: Option<String>,
        expiry: Option<DateTime<Utc>>,
        parent_id_tag: Option<String>,
        at: DateTime<Utc>,
    },
    /// A station's WebSocket connected or disconnected.
    StationConnection { station: String, connected: bool, at: DateTime<Utc> },
    /// A connector's status changed (or was re-reported).
    ConnectorStatus {
        station: String,
        connector: ConnectorRef,
        status: ConnectorStatus,
        error_code: Option<String>,
        info: Option<String>,
        vendor_error_code: Option<String>,
        at: DateTime<Utc>,
    },
    /// A transaction started (online, or first learned of after the fact).
    TransactionStarted {
        station: String,
        transaction_uid: String,
        /// The id the station uses on the wire (OCPP 1.6 integer transactionId as text).
        station_transaction_id: String,
        connector: ConnectorRef,
        id_tag: Option<String>,
        meter_start_wh: Option<i64>,
        started_at: Option<DateTime<Utc>>,
        origin: TransactionOrigin,
    },
    /// Meter values, with the transaction they belong to when known.
    MeterValues { station: String, connector: ConnectorRef, transaction_uid: Option<String>, samples: Vec<MeterSample> },
    /// A transaction ended. `reconciled` is true when the station never reported the
    /// stop and the agent closed it from later evidence (a new transaction on the same
    /// connector); a later real StopTransaction supersedes it.
    TransactionStopped {
        station: String,
        transaction_uid: String,
        meter_stop_wh: Option<i64>,
        stopped_at: DateTime<Utc>,
        reason: Option<StopReason>,
        id_tag: Option<String>,
        reconciled: bool,
    },
    /// Telemetry: the site's metered power per phase against every limit, what the
    /// balancer allocated, and its fail-safe state. Sent on a cadence and at once when
    /// the fail-safe state changes; a later one supersedes an earlier one (an edge may
    /// coalesce those that wait in its outbox). An older hub stores it raw.
    SiteEnergy(SiteEnergyReport),
}

impl SiteEvent {
    /// The event's kind, as stored beside the payload.
    pub fn kind(&self) -> &'static str {
        match self {
            SiteEvent::StationBooted { .. } => "station_booted",
            SiteEvent::StationRegistration { .. } => "station_registration",
            SiteEvent::IdTagChanged { .. } => "id_tag_changed",
            SiteEvent::StationConnection { .. } => "station_connection",
            SiteEvent::ConnectorStatus { .. } => "connector_status",
            SiteEvent::TransactionStarted { .. } => "transaction_started",
            SiteEvent::MeterValues { .. } => "meter_values",
            SiteEvent::TransactionStopped { .. } => "transaction_stopped",
            SiteEvent::SiteEnergy(_) => "site_energy",
        }
    }
}
