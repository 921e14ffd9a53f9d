//! A simulated site's outbox as the edge agent would send it: the day's actions as
//! [`SiteEvent`]s (serialized as `edge_agent::chargers::emit` stores them), numbered from
//! seq 1, cut into [`EventBatch`]es by the agent's rules (at most `batch_size` events and
//! about `max_batch_bytes` of event payload, one event at least), and encoded once, before
//! anything is timed.

use super::day::{Action, Day, Measurands, station_name, tag_of};
use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use rumqttc::{Publish, QoS};
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, StopReason, TransactionOrigin};
use shared_model::sync::{EventBatch, EventEnvelope, PROTOCOL_VERSION};
use std::sync::atomic::{AtomicU64, Ordering};

/// One encoded batch. The payload is kept inside a [`Publish`] because rumqttc hands out
/// its `Bytes` that way: cloned per send without copying the megabyte.
#[derive(Clone)]
pub struct Batch {
    pub message: Publish,
    pub last_seq: u64,
    pub events: u64,
}

impl Batch {
    pub fn bytes(&self) -> usize {
        self.message.payload.len()
    }
}

/// How the edge agent cuts its outbox into messages (its `[sync]` keys).
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    pub batch_size: usize,
    pub max_batch_bytes: usize,
}

static IDS: AtomicU64 = AtomicU64::new(0);

/// A unique id in UUID form (the hub only needs it unique; the tests crate has no uuid).
pub fn unique_id() -> String {
    let n = IDS.fetch_add(1, Ordering::Relaxed);
    let run = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        run >> 32,
        (run >> 16) & 0xffff,
        run & 0xfff,
        (n >> 48) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// Turns actions into events, keeping each charger's running transaction.
pub struct Events {
    running: Vec<Option<(String, u64)>>,
    next_tx_id: u64,
}

const CONNECTOR: ConnectorRef = ConnectorRef { evse: 1, connector: 1 };

impl Events {
    pub fn new(chargers: usize) -> Events {
        Events { running: vec![None; chargers], next_tx_id: 1 }
    }

    pub fn event(&mut self, action: Action) -> SiteEvent {
        match action {
            Action::Status { station, status, at } => SiteEvent::ConnectorStatus {
                station: station_name(station),
                connector: CONNECTOR,
                status,
                error_code: Some("NoError".to_owned()),
                info: None,
                vendor_error_code: None,
                at,
            },
            Action::Start { station, meter_wh, at } => {
                let uid = unique_id();
                let tx_id = self.next_tx_id;
                self.next_tx_id += 1;
                if let Some(slot) = self.running.get_mut(station) {
                    *slot = Some((uid.clone(), tx_id));
                }
                SiteEvent::TransactionStarted {
                    station: station_name(station),
                    transaction_uid: uid,
                    station_transaction_id: tx_id.to_string(),
                    connector: CONNECTOR,
                    id_tag: Some(tag_of(station)),
                    meter_start_wh: Some(meter_wh),
                    started_at: Some(at),
                    origin: TransactionOrigin::Online,
                }
            }
            Action::Meter { station, samples, .. } => SiteEvent::MeterValues {
                station: station_name(station),
                connector: CONNECTOR,
                transaction_uid: self.running.get(station).cloned().flatten().map(|(uid, _)| uid),
                samples,
            },
            Action::Stop { station, meter_wh, at } => {
                let uid = self.running.get_mut(station).and_then(Option::take).map(|(uid, _)| uid).unwrap_or_default();
                SiteEvent::TransactionStopped {
                    station: station_name(station),
                    transaction_uid: uid,
                    meter_stop_wh: Some(meter_wh),
                    stopped_at: at,
                    reason: Some(StopReason::EVDisconnected),
                    id_tag: Some(tag_of(station)),
                    reconciled: false,
                }
            }
        }
    }
}

/// What a simulated site sends.
#[derive(Debug, Clone, Copy)]
pub struct SiteSpec {
    pub chargers: usize,
    /// The first this many events of its day.
    pub events: u64,
    pub start: DateTime<Utc>,
    pub seed: u64,
    pub measurands: Measurands,
    pub cut: Cut,
}

/// A site's events as batches of `site_id` on `topic`.
pub fn site_batches(site_id: &str, topic: &str, spec: &SiteSpec) -> Result<Vec<Batch>> {
    let (events, cut) = (spec.events, spec.cut);
    let mut day = Day::new(spec.chargers, spec.start, spec.seed, spec.measurands);
    let mut convert = Events::new(spec.chargers);
    let mut out = Vec::new();
    let mut pending: Vec<EventEnvelope> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut seq = 0u64;
    while seq < events {
        for action in day.next_minute() {
            if seq >= events {
                break;
            }
            seq += 1;
            let at = action.at();
            let event = convert.event(action);
            // The bytes the agent's outbox row holds, which its batch budget counts.
            let len = serde_json::to_string(&event).context("encoding an event")?.len();
            if !pending.is_empty() && (pending.len() >= cut.batch_size || pending_bytes + len > cut.max_batch_bytes) {
                out.push(encode(site_id, topic, std::mem::take(&mut pending))?);
                pending_bytes = 0;
            }
            pending_bytes += len;
            pending.push(EventEnvelope::new(seq, unique_id(), at, &event).context("encoding an event")?);
        }
    }
    if !pending.is_empty() {
        out.push(encode(site_id, topic, pending)?);
    }
    Ok(out)
}

fn encode(site_id: &str, topic: &str, events: Vec<EventEnvelope>) -> Result<Batch> {
    let last_seq = events.last().map_or(0, |e| e.seq);
    let n = events.len() as u64;
    let batch = EventBatch { v: PROTOCOL_VERSION, site_id: site_id.to_owned(), events };
    let payload = serde_json::to_vec(&batch).context("encoding a batch")?;
    Ok(Batch { message: Publish::new(topic, QoS::AtLeastOnce, payload), last_seq, events: n })
}
