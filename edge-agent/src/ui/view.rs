//! What the installer page shows, read in one go from the agent's shared state: chargers
//! (store rows plus the live connections), meters, the balancer loop's view, the cloud
//! link and the tail of the message log.

use crate::app::Shared;
use crate::control::ControlView;
use crate::meters::MeterStatus;
use crate::store::StoreError;
use crate::sync::SyncView;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Entries of the message log the page shows.
pub const LOG_TAIL: u32 = 25;

/// One read of everything the page renders.
#[derive(Debug, Clone)]
pub struct PageView {
    pub now: DateTime<Utc>,
    pub chargers: Vec<ChargerRow>,
    pub meters: Vec<MeterStatus>,
    pub control: Arc<ControlView>,
    pub sync: SyncView,
    /// Newest first.
    pub messages: Vec<crate::message_log::Row>,
}

/// A charger as the store knows it, with its live connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerRow {
    pub id: String,
    pub name: Option<String>,
    /// `accepted`, `pending` or `rejected`.
    pub registration: String,
    /// `config` (from the config file) or where else it came from (`ocpp` for unknown
    /// chargers that connected).
    pub source: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub last_boot: Option<String>,
    pub last_seen: Option<String>,
    /// The live connection's protocol, when connected.
    pub protocol: Option<&'static str>,
    pub connected_at: Option<DateTime<Utc>>,
    /// Connector 0 (the charge point as a whole) when it reported one.
    pub main_status: Option<String>,
    /// Connectors 1.. in order.
    pub connectors: Vec<ConnectorRow>,
}

impl ChargerRow {
    pub fn connected(&self) -> bool {
        self.protocol.is_some()
    }
}

/// One connector and its open transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorRow {
    pub connector_id: u32,
    /// The last StatusNotification's status; `None` before the first one.
    pub status: Option<String>,
    pub error_code: Option<String>,
    pub info: Option<String>,
    pub status_at: Option<String>,
    pub transaction: Option<TxRow>,
}

/// An open transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TxRow {
    /// The transactionId the charger uses (what RemoteStopTransaction takes).
    pub station_tx_id: i64,
    pub id_tag: Option<String>,
    pub started_at: Option<String>,
    pub energy_wh: Option<i64>,
}

/// Reads the page's view.
pub async fn gather(s: &Shared) -> Result<PageView, StoreError> {
    let connectors_configured: Vec<(String, u32)> =
        s.config.chargers.iter().map(|c| (c.id.as_str().to_owned(), c.connectors)).collect();
    let (mut chargers, messages) = s
        .store
        .read(move |c| {
            let chargers = load_chargers(c, &connectors_configured)?;
            let messages = crate::message_log::query(
                c,
                &crate::message_log::Query { limit: Some(LOG_TAIL), ..Default::default() },
            )?;
            Ok((chargers, messages))
        })
        .await?;
    for ch in &mut chargers {
        if let Some(live) = s.registry.info(&ch.id) {
            ch.protocol = Some(live.protocol);
            ch.connected_at = Some(live.connected_at);
        }
    }
    let sync = crate::sync::view(s).await?;
    Ok(PageView {
        now: Utc::now(),
        chargers,
        meters: s.meters.snapshot().meters,
        control: s.control.view(),
        sync,
        messages,
    })
}

fn load_chargers(c: &rusqlite::Connection, configured: &[(String, u32)]) -> Result<Vec<ChargerRow>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, name, registration, source, vendor, model, firmware_version, last_boot, last_seen
         FROM chargers ORDER BY id",
    )?;
    let mut chargers: Vec<ChargerRow> = stmt
        .query_map([], |r| {
            Ok(ChargerRow {
                id: r.get(0)?,
                name: r.get(1)?,
                registration: r.get(2)?,
                source: r.get(3)?,
                vendor: r.get(4)?,
                model: r.get(5)?,
                firmware_version: r.get(6)?,
                last_boot: r.get(7)?,
                last_seen: r.get(8)?,
                protocol: None,
                connected_at: None,
                main_status: None,
                connectors: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut conn_stmt = c.prepare_cached(
        "SELECT evse, status, error_code, info, status_at FROM connectors
         WHERE charger_id = ?1 ORDER BY evse, connector",
    )?;
    let mut tx_stmt = c.prepare_cached(
        "SELECT evse, station_tx_id, id_tag, started_at, meter_start_wh, last_meter_wh FROM transactions
         WHERE charger_id = ?1 AND stop_source IS NULL ORDER BY pk",
    )?;
    for ch in &mut chargers {
        let rows = conn_stmt
            .query_map([&ch.id], |r| {
                Ok(ConnectorRow {
                    connector_id: r.get(0)?,
                    status: Some(r.get(1)?),
                    error_code: r.get::<_, Option<String>>(2)?.filter(|e| e != "NoError"),
                    info: r.get(3)?,
                    status_at: r.get(4)?,
                    transaction: None,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for row in rows {
            if row.connector_id == 0 {
                ch.main_status = row.status;
            } else {
                ch.connectors.push(row);
            }
        }
        // Connectors the config announces but that have not reported yet.
        let expected = configured.iter().find(|(id, _)| *id == ch.id).map_or(0, |(_, n)| *n);
        for id in 1..=expected {
            if !ch.connectors.iter().any(|k| k.connector_id == id) {
                ch.connectors.push(ConnectorRow {
                    connector_id: id,
                    status: None,
                    error_code: None,
                    info: None,
                    status_at: None,
                    transaction: None,
                });
            }
        }
        ch.connectors.sort_by_key(|k| k.connector_id);
        let txs = tx_stmt
            .query_map([&ch.id], |r| {
                let start: Option<i64> = r.get(4)?;
                let last: Option<i64> = r.get(5)?;
                Ok((
                    r.get::<_, u32>(0)?,
                    TxRow {
                        station_tx_id: r.get(1)?,
                        id_tag: r.get(2)?,
                        started_at: r.get(3)?,
                        energy_wh: start.and_then(|s| last.map(|l| l - s)),
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        // The latest open transaction of a connector wins (ordered by pk).
        for (evse, tx) in txs {
            match ch.connectors.iter_mut().find(|k| k.connector_id == evse) {
                Some(k) => k.transaction = Some(tx),
                None => ch.connectors.push(ConnectorRow {
                    connector_id: evse,
                    status: None,
                    error_code: None,
                    info: None,
                    status_at: None,
                    transaction: Some(tx),
                }),
            }
        }
        ch.connectors.sort_by_key(|k| k.connector_id);
    }
    Ok(chargers)
}
