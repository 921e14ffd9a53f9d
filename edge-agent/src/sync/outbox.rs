//! Queries on the `outbox` table (written by [`crate::chargers::emit`] in the same
//! transaction as each state change; drained here).

use crate::store::{StoreError, parse_ts};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::value::RawValue;
use shared_model::sync::EventEnvelope;

/// Consecutive rows from `from` on (the oldest row when `from` is below it): at most
/// `limit` rows and about `max_bytes` of payload (at least one row), stopping at a gap.
pub fn read_from(
    conn: &Connection,
    from: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, event_id, created_at, kind, payload FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(rusqlite::params![sql_seq(from), limit as i64])?;
    let mut out: Vec<EventEnvelope> = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        let seq = seq_of(r.get(0)?);
        if out.last().is_some_and(|prev| prev.seq + 1 != seq) {
            break;
        }
        let created_at: String = r.get(2)?;
        let payload: String = r.get(4)?;
        if !out.is_empty() && bytes + payload.len() > max_bytes {
            break;
        }
        bytes += payload.len();
        let at = parse_ts(&created_at).unwrap_or_else(|| {
            tracing::warn!(
                seq,
                created_at,
                "sync: outbox row with an unreadable time; sending it with the current time"
            );
            Utc::now()
        });
        let payload = match serde_json::from_str::<Box<RawValue>>(&payload) {
            Ok(raw) => raw,
            Err(e) => {
                // Never stall the stream on one row: the hub stores what it cannot read as it came.
                tracing::warn!(seq, error = %e, "sync: outbox row whose payload is not JSON; sending it as a string");
                serde_json::value::to_raw_value(&payload)?
            }
        };
        out.push(EventEnvelope { seq, event_id: r.get(1)?, at, kind: r.get(3)?, payload });
    }
    Ok(out)
}

/// Seqs are SQLite integers from 1 on.
fn seq_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Deletes every row the hub acknowledged; returns how many.
pub fn delete_through(conn: &Connection, seq: u64) -> Result<usize, StoreError> {
    Ok(conn.prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?.execute([sql_seq(seq)])?)
}

/// What waits in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutboxStats {
    /// The oldest row not yet acknowledged (`None`: the outbox is empty).
    pub oldest_seq: Option<u64>,
    /// The newest seq ever assigned (kept when its row is deleted).
    pub newest_seq: Option<u64>,
    /// Rows waiting (seqs are gapless, so newest row - oldest row + 1).
    pub pending: u64,
    /// When the oldest waiting row was written.
    pub oldest_at: Option<DateTime<Utc>>,
}

/// Reads the outbox's bounds (index lookups only, whatever its size).
pub fn stats(conn: &Connection) -> Result<OutboxStats, StoreError> {
    let oldest: Option<(u64, String)> = conn
        .prepare_cached("SELECT seq, created_at FROM outbox ORDER BY seq LIMIT 1")?
        .query_row([], |r| Ok((seq_of(r.get(0)?), r.get(1)?)))
        .optional()?;
    let newest_row: Option<u64> = conn
        .prepare_cached("SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| r.get(0).map(seq_of))
        .optional()?;
    let assigned: Option<u64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")?
        .query_row([], |r| r.get(0).map(seq_of))
        .optional()?;
    let pending = match (&oldest, newest_row) {
        (Some((o, _)), Some(n)) => n.saturating_sub(*o) + 1,
        _ => 0,
    };
    Ok(OutboxStats {
        oldest_seq: oldest.as_ref().map(|(s, _)| *s),
        newest_seq: assigned.max(newest_row),
        pending,
        oldest_at: oldest.and_then(|(_, t)| parse_ts(&t)),
    })
}

/// Why the outbox needs attention: more rows than allowed, or rows older than the
/// retention. The rows are kept either way.
pub fn alarm(stats: &OutboxStats, max_rows: u64, retention_days: u32, now: DateTime<Utc>) -> Option<String> {
    let mut reasons = Vec::new();
    if stats.pending > max_rows {
        reasons.push(format!("{} events wait in the outbox (more than max_outbox_rows = {max_rows})", stats.pending));
    }
    if let Some(at) = stats.oldest_at {
        let age = now - at;
        if age > chrono::Duration::days(i64::from(retention_days)) {
            reasons.push(format!(
                "the oldest unacknowledged event (seq {}) is {} h old (more than retention_days = {retention_days})",
                stats.oldest_seq.unwrap_or_default(),
                age.num_hours()
            ));
        }
    }
    (!reasons.is_empty()).then(|| format!("{}; nothing is deleted before the hub acknowledges it", reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chargers::emit;
    use crate::config::StoreConfig;
    use crate::store::Store;
    use shared_model::events::SiteEvent;
    use std::sync::Arc;

    struct NoObs;
    impl crate::store::WriteObserver for NoObs {
        fn commit(&self, _: f64, _: usize) {}
    }

    fn event(i: usize) -> SiteEvent {
        SiteEvent::StationConnection { station: format!("CP-{i}"), connected: true, at: Utc::now() }
    }

    #[tokio::test]
    async fn reads_in_order_within_limits_and_deletes_what_was_acked() {
        let dir = tempfile::tempdir().expect("tmp");
        let store =
            Store::open(&StoreConfig { path: dir.path().join("o.db"), ..StoreConfig::default() }, Arc::new(NoObs))
                .expect("open");
        let empty = store.read(stats).await.expect("stats");
        assert_eq!(empty, OutboxStats::default());
        store
            .write(|c| {
                for i in 0..10 {
                    emit(c, &event(i), Utc::now())?;
                }
                Ok(())
            })
            .await
            .expect("emit");
        let rows = store.read(|c| read_from(c, 0, 4, 1 << 20)).await.expect("read");
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(rows[0].kind, "station_connection");
        assert_eq!(rows[0].event().expect("typed"), rows[0].event().expect("typed"));
        let one = rows[0].payload.to_string().len();
        let rows = store.read(move |c| read_from(c, 3, 100, one * 2 + 1)).await.expect("read");
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4], "byte budget");
        let rows = store.read(|c| read_from(c, 3, 100, 1)).await.expect("read");
        assert_eq!(rows.len(), 1, "one row always goes, whatever its size");

        assert_eq!(store.write(|c| delete_through(c, 6)).await.expect("delete"), 6);
        let s = store.read(stats).await.expect("stats");
        assert_eq!((s.oldest_seq, s.newest_seq, s.pending), (Some(7), Some(10), 4));
        assert!(s.oldest_at.is_some());
        store.write(|c| delete_through(c, 10)).await.expect("delete");
        let s = store.read(stats).await.expect("stats");
        assert_eq!((s.oldest_seq, s.newest_seq, s.pending), (None, Some(10), 0), "the newest seq is remembered");

        let now = Utc::now();
        let old = OutboxStats {
            oldest_seq: Some(3),
            newest_seq: Some(12),
            pending: 10,
            oldest_at: Some(now - chrono::Duration::days(8)),
        };
        assert_eq!(alarm(&old, 100, 30, now), None);
        let a = alarm(&old, 5, 7, now).expect("alarm");
        assert!(a.contains("10 events wait") && a.contains("seq 3") && a.contains("retention_days = 7"), "{a}");
    }
}
