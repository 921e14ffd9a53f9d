//! The OCPP message log: every frame in and out, with the charger, the direction, the
//! action and the time; queryable by charger, action and time range; pruned by age.

use crate::store::{StoreError, ts};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::Serialize;
use shared_model::ocpp::framing::Frame;

/// Frame direction relative to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One frame to log. `action` is the CALL's action; for a CALLRESULT / CALLERROR it is
/// the action of the CALL it answers, so a query by action finds both halves.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub charger: String,
    pub direction: Direction,
    pub message_type: u8,
    pub unique_id: Option<String>,
    pub action: Option<String>,
    pub payload: String,
}

impl Entry {
    /// A parsed frame.
    pub fn frame(at: DateTime<Utc>, charger: &str, direction: Direction, frame: &Frame, action: Option<&str>) -> Self {
        let (message_type, action) = match frame {
            Frame::Call(c) => (2, Some(c.action.clone())),
            Frame::CallResult(_) => (3, action.map(str::to_owned)),
            Frame::CallError(_) => (4, action.map(str::to_owned)),
        };
        Entry {
            at,
            charger: charger.to_owned(),
            direction,
            message_type,
            unique_id: Some(frame.unique_id().to_owned()),
            action,
            payload: frame.to_text(),
        }
    }

    /// Raw text that did not parse as a frame (kept, truncated to `max` bytes).
    pub fn raw(at: DateTime<Utc>, charger: &str, text: &str, max: usize) -> Self {
        let mut end = text.len().min(max);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Entry {
            at,
            charger: charger.to_owned(),
            direction: Direction::In,
            message_type: 0,
            unique_id: None,
            action: None,
            payload: text[..end].to_owned(),
        }
    }
}

/// Appends entries (inside the caller's store job).
pub fn append(conn: &Connection, entries: &[Entry]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO message_log (ts, charger_id, direction, message_type, unique_id, action, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in entries {
        stmt.execute(params![
            ts(e.at),
            e.charger,
            e.direction.as_str(),
            e.message_type,
            e.unique_id,
            e.action,
            e.payload
        ])?;
    }
    Ok(())
}

/// Deletes entries older than `cutoff`; returns how many.
pub fn prune(conn: &Connection, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM message_log WHERE ts < ?1", [ts(cutoff)])?)
}

/// A query over the log.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Query {
    pub charger: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    /// Return entries with an id below this (for paging backwards).
    pub before_id: Option<i64>,
}

/// One stored entry.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: i64,
    pub ts: String,
    pub charger_id: String,
    pub direction: String,
    pub message_type: u8,
    pub unique_id: Option<String>,
    pub action: Option<String>,
    pub payload: serde_json::Value,
}

/// Newest first.
pub fn query(conn: &Connection, q: &Query) -> Result<Vec<Row>, StoreError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, charger_id, direction, message_type, unique_id, action, payload FROM message_log
         WHERE (?1 IS NULL OR charger_id = ?1) AND (?2 IS NULL OR action = ?2)
           AND (?3 IS NULL OR ts >= ?3) AND (?4 IS NULL OR ts < ?4) AND (?5 IS NULL OR id < ?5)
         ORDER BY id DESC LIMIT ?6",
    )?;
    let rows = stmt.query_map(params![q.charger, q.action, q.from.map(ts), q.to.map(ts), q.before_id, limit], |r| {
        let payload: String = r.get(7)?;
        Ok(Row {
            id: r.get(0)?,
            ts: r.get(1)?,
            charger_id: r.get(2)?,
            direction: r.get(3)?,
            message_type: r.get(4)?,
            unique_id: r.get(5)?,
            action: r.get(6)?,
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_model::ocpp::framing::{Call, CallResult};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("t").with_timezone(&Utc)
    }

    #[test]
    fn query_by_charger_action_and_time_then_prune() {
        let c = Connection::open_in_memory().expect("db");
        for m in crate::store::MIGRATIONS {
            c.execute_batch(m).expect("migrate");
        }
        let call =
            Frame::Call(Call { unique_id: "1".into(), action: "Heartbeat".into(), payload: serde_json::json!({}) });
        let res =
            Frame::CallResult(CallResult { unique_id: "1".into(), payload: serde_json::json!({"currentTime": "x"}) });
        append(
            &c,
            &[
                Entry::frame(t("2026-01-01T00:00:00Z"), "A", Direction::In, &call, None),
                Entry::frame(t("2026-01-01T00:00:01Z"), "A", Direction::Out, &res, Some("Heartbeat")),
                Entry::frame(t("2026-01-02T00:00:00Z"), "B", Direction::In, &call, None),
                Entry::raw(t("2026-01-03T00:00:00Z"), "B", "garbage é", 9),
            ],
        )
        .expect("append");
        let q = |q: Query| query(&c, &q).expect("query");
        assert_eq!(q(Query { charger: Some("A".into()), ..Default::default() }).len(), 2);
        assert_eq!(q(Query { action: Some("Heartbeat".into()), ..Default::default() }).len(), 3);
        let day2 = q(Query {
            from: Some(t("2026-01-02T00:00:00Z")),
            to: Some(t("2026-01-03T00:00:00Z")),
            ..Default::default()
        });
        assert_eq!(day2.len(), 1);
        assert_eq!(day2[0].charger_id, "B");
        let all = q(Query::default());
        assert_eq!(all[0].payload, serde_json::Value::String("garbage ".into()), "truncated at a char boundary");
        assert_eq!(prune(&c, t("2026-01-02T00:00:00Z")).expect("prune"), 2);
        assert_eq!(q(Query::default()).len(), 2);
    }
}
