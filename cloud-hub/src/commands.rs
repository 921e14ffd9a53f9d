//! Commands to sites (`shared-model/SYNC.md`, "Commands down"): stored, published as a
//! [`CommandEnvelope`] on `sitepilot/v1/{site}/down/commands`, answered once by the
//! site's [`CommandResult`] on `up/results`.
//!
//! - A command is written to the `commands` table (status `sent`) before it is
//!   published, so a result can never arrive for a row that is not there yet, and a
//!   publish that is lost (the hub's or the site's connection was down) is made good:
//! - every time a site says hello, the hub publishes again each of its commands that has
//!   no result and has not expired ([`unanswered`]). Re-sending is safe: the edge runs a
//!   command id at most once and answers a redelivery with the stored result.
//! - The first result per command id is stored; a redelivered identical one is a no-op,
//!   a different one is logged and ignored, and a result for an id the hub does not know
//!   (for this site) is counted and logged.

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, QoS};
use serde_json::Value;
use shared_model::sync::{Command, CommandEnvelope, CommandResult, PROTOCOL_VERSION, Topic};

use crate::db::{DbError, Row, Store, Ty, Val};
use crate::metrics::{Metrics, ReasonLabels};

/// The most commands re-sent to one site per hello (the oldest first; the rest follow
/// at the next hello, and an edge with that many pending commands has other problems).
pub const MAX_RESEND_PER_HELLO: i64 = 500;

/// What became of a [`CommandResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOutcome {
    /// The first result for the command: stored.
    Stored,
    /// The same result again (a redelivery): nothing changed.
    Duplicate,
    /// A different result for a command that has one: the first one stands.
    Conflicting,
    /// No such command for this site.
    UnknownCommand,
}

impl ResultOutcome {
    /// The `command_results{result}` label.
    pub fn label(self) -> &'static str {
        match self {
            ResultOutcome::Stored => "stored",
            ResultOutcome::Duplicate => "duplicate",
            ResultOutcome::Conflicting => "conflicting",
            ResultOutcome::UnknownCommand => "unknown_command",
        }
    }
}

/// A command as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    pub envelope: CommandEnvelope,
    /// `sent` or `answered`.
    pub status: String,
    pub issued_by: Option<String>,
    pub sent_count: i64,
    pub last_sent_at: Option<DateTime<Utc>>,
    /// The site's answer, as it came.
    pub result: Option<CommandResult>,
    pub result_received_at: Option<DateTime<Utc>>,
}

/// A new envelope for `site` (a fresh UUID as its id).
pub fn envelope(
    site: &str,
    command: Command,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> CommandEnvelope {
    CommandEnvelope {
        v: PROTOCOL_VERSION,
        site_id: site.to_owned(),
        command_id: uuid::Uuid::new_v4().to_string(),
        issued_at,
        expires_at,
        command,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, DbError> {
    serde_json::to_value(value).map_err(|e| DbError::Data(format!("cannot serialise a command: {e}")))
}

/// Stores a new command (status `sent`, not yet published).
pub async fn insert(store: &Store, env: &CommandEnvelope, issued_by: Option<&str>) -> Result<(), DbError> {
    store
        .exec(
            "INSERT INTO commands (command_id, site_id, payload, status, issued_at, expires_at, issued_by) \
             VALUES ($1, $2, $3, 'sent', $4, $5, $6)",
            &[
                env.command_id.as_str().into(),
                env.site_id.as_str().into(),
                to_json(env)?.into(),
                env.issued_at.into(),
                env.expires_at.into(),
                issued_by.into(),
            ],
        )
        .await
        .map(|_| ())
}

/// Publishes an envelope on the site's `down/commands` (QoS 1). The client only queues
/// it: `Err` when the queue is full (the hub's MQTT connection is down for long); the
/// command is then sent at the site's next hello.
pub fn publish(client: &AsyncClient, env: &CommandEnvelope) -> Result<(), String> {
    let payload = serde_json::to_vec(env).map_err(|e| format!("cannot serialise the command: {e}"))?;
    client
        .try_publish(Topic::Commands.of(&env.site_id), QoS::AtLeastOnce, false, payload)
        .map_err(|e| format!("cannot queue the command for MQTT: {e}"))
}

/// A command that [`issue`] stored and tried to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub envelope: CommandEnvelope,
    /// Whether it was handed to the MQTT client now (else it goes out at the site's next
    /// hello).
    pub published: bool,
}

/// Who sends a command, and through what.
#[derive(Debug, Clone, Copy)]
pub struct Issuer<'a> {
    /// The `commands_published{reason}` label: `api` or `dashboard`.
    pub via: &'static str,
    /// Stored as `issued_by`: the API key's or the dashboard user's name.
    pub name: &'a str,
}

/// Sends a checked command to `site` the way every sender does (the fleet API, the
/// dashboard): stores it (status `sent`, expiring `lifetime_s` from now), publishes it and
/// counts the publish under `commands_published{reason}`. A publish that cannot be queued
/// is not an error: the command is stored and goes out at the site's next hello.
pub async fn issue(
    store: &Store,
    mqtt: &AsyncClient,
    metrics: &Metrics,
    issuer: Issuer<'_>,
    site: &str,
    command: Command,
    lifetime_s: u64,
) -> Result<Issued, DbError> {
    let Issuer { via, name: issued_by } = issuer;
    let now = Utc::now();
    let expires_at = i64::try_from(lifetime_s).ok().and_then(chrono::Duration::try_seconds).map(|d| now + d);
    let env = envelope(site, command, now, expires_at);
    insert(store, &env, Some(issued_by)).await?;
    let published = match publish(mqtt, &env) {
        Ok(()) => {
            metrics.commands_published.get_or_create(&ReasonLabels { reason: via }).inc();
            if let Err(e) = mark_sent(store, &env.command_id, now).await {
                tracing::warn!(command_id = env.command_id, error = %e, "cannot count the command's send");
            }
            true
        }
        Err(why) => {
            tracing::warn!(
                site,
                command_id = env.command_id,
                reason = why,
                "command stored; it goes out at the site's next hello"
            );
            false
        }
    };
    tracing::info!(site, command_id = env.command_id, by = issued_by, via, published, "command sent");
    Ok(Issued { envelope: env, published })
}

/// Counts a publish of the command.
pub async fn mark_sent(store: &Store, command_id: &str, at: DateTime<Utc>) -> Result<(), DbError> {
    store
        .exec(
            "UPDATE commands SET sent_count = sent_count + 1, last_sent_at = $2 WHERE command_id = $1",
            &[command_id.into(), at.into()],
        )
        .await
        .map(|_| ())
}

/// The site's commands that have no result and have not expired at `now`, oldest first
/// (at most [`MAX_RESEND_PER_HELLO`]). A stored envelope that no longer parses (it
/// cannot happen short of editing the database) is skipped with a warning.
pub async fn unanswered(store: &Store, site: &str, now: DateTime<Utc>) -> Result<Vec<CommandEnvelope>, DbError> {
    let rows = store
        .fetch(
            "SELECT command_id, payload FROM commands \
             WHERE site_id = $1 AND status = 'sent' AND (expires_at IS NULL OR expires_at > $2) \
             ORDER BY issued_at, command_id LIMIT $3",
            &[site.into(), now.into(), MAX_RESEND_PER_HELLO.into()],
            &[Ty::Text, Ty::Json],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| match r.json(1).map(|v| serde_json::from_value::<CommandEnvelope>(v.clone())) {
            Some(Ok(env)) => Some(env),
            other => {
                let error = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "no payload".to_owned(),
                };
                tracing::warn!(site, command_id = r.text(0), error, "stored command does not parse: not re-sent");
                None
            }
        })
        .collect())
}

/// Stores a site's result for one of its commands (see [`ResultOutcome`]).
pub async fn record_result(
    store: &Store,
    result: &CommandResult,
    received_at: DateTime<Utc>,
) -> Result<ResultOutcome, DbError> {
    let json = to_json(result)?;
    let outcome = to_json(&result.outcome)?;
    let outcome = outcome.as_str().unwrap_or_default().to_owned();
    // Atomic: of two replicas storing the same result at once, one updates the row.
    let stored = store
        .exec(
            "UPDATE commands SET status = 'answered', outcome = $3, result = $4, result_at = $5, \
                 result_received_at = $6 \
             WHERE command_id = $1 AND site_id = $2 AND result IS NULL",
            &[
                result.command_id.as_str().into(),
                result.site_id.as_str().into(),
                outcome.into(),
                json.clone().into(),
                result.at.into(),
                received_at.into(),
            ],
        )
        .await?;
    if stored > 0 {
        return Ok(ResultOutcome::Stored);
    }
    let existing = store
        .fetch_opt(
            "SELECT result FROM commands WHERE command_id = $1 AND site_id = $2",
            &[result.command_id.as_str().into(), result.site_id.as_str().into()],
            &[Ty::Json],
        )
        .await?;
    Ok(match existing {
        None => ResultOutcome::UnknownCommand,
        Some(row) if row.json(0) == Some(&json) => ResultOutcome::Duplicate,
        Some(_) => ResultOutcome::Conflicting,
    })
}

const COLUMN_TYPES: [Ty; 7] = [Ty::Json, Ty::Text, Ty::Text, Ty::Int, Ty::Time, Ty::Json, Ty::Time];

fn record(r: &Row) -> Result<CommandRecord, DbError> {
    let bad = |what: &str, e: serde_json::Error| DbError::Data(format!("a stored command {what} does not parse: {e}"));
    let envelope = serde_json::from_value(r.json(0).cloned().unwrap_or(Value::Null)).map_err(|e| bad("payload", e))?;
    let result = match r.json(5) {
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| bad("result", e))?),
        None => None,
    };
    Ok(CommandRecord {
        envelope,
        status: r.text(1).unwrap_or_default().to_owned(),
        issued_by: r.text(2).map(str::to_owned),
        sent_count: r.int(3).unwrap_or(0),
        last_sent_at: r.time(4),
        result,
        result_received_at: r.time(6),
    })
}

/// One command.
pub async fn get(store: &Store, command_id: &str) -> Result<Option<CommandRecord>, DbError> {
    store
        .fetch_opt(
            "SELECT payload, status, issued_by, sent_count, last_sent_at, result, result_received_at \
             FROM commands WHERE command_id = $1",
            &[command_id.into()],
            &COLUMN_TYPES,
        )
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

/// A site's commands, newest first; `status` as the API shows it (`sent`, `answered`,
/// `unanswered`: expired at `now` without a result), all when `None`.
pub async fn list(
    store: &Store,
    site: &str,
    status: Option<&str>,
    now: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<CommandRecord>, DbError> {
    store
        .fetch(
            "SELECT payload, status, issued_by, sent_count, last_sent_at, result, result_received_at \
             FROM commands WHERE site_id = $1 AND ($2 IS NULL \
                 OR ($2 = 'answered' AND status = 'answered') \
                 OR ($2 = 'sent' AND status = 'sent' AND (expires_at IS NULL OR expires_at > $3)) \
                 OR ($2 = 'unanswered' AND status = 'sent' AND expires_at <= $3)) \
             ORDER BY issued_at DESC, command_id LIMIT $4 OFFSET $5",
            &[site.into(), Val::from(status), now.into(), limit.into(), offset.into()],
            &COLUMN_TYPES,
        )
        .await?
        .iter()
        .map(record)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_get_fresh_ids() {
        let cmd = Command::Reset { station: "CP-1".into(), hard: false };
        let a = envelope("s", cmd.clone(), Utc::now(), None);
        let b = envelope("s", cmd, Utc::now(), None);
        assert_ne!(a.command_id, b.command_id);
        assert_eq!((a.v, a.site_id.as_str()), (PROTOCOL_VERSION, "s"));
    }
}
