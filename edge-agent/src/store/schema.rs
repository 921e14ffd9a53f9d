//! Versioned migrations, tracked in `PRAGMA user_version`. A migration is never edited
//! once released: add a new one.

use super::StoreError;
use rusqlite::Connection;

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the foundation schema.
    r#"
CREATE TABLE chargers (
    id                    TEXT PRIMARY KEY,
    registration          TEXT NOT NULL CHECK (registration IN ('accepted', 'pending', 'rejected')),
    password_hash         TEXT,
    -- Password a pending (unknown) charger presented; adopted when an installer approves it.
    pending_password_hash TEXT,
    source                TEXT NOT NULL,
    name                  TEXT,
    vendor                TEXT,
    model                 TEXT,
    serial_number         TEXT,
    firmware_version      TEXT,
    iccid                 TEXT,
    imsi                  TEXT,
    meter_type            TEXT,
    meter_serial_number   TEXT,
    protocol              TEXT,
    firmware_status       TEXT,
    diagnostics_status    TEXT,
    first_seen            TEXT,
    last_boot             TEXT,
    last_seen             TEXT
);

CREATE TABLE connectors (
    charger_id        TEXT NOT NULL REFERENCES chargers(id) ON DELETE CASCADE,
    evse              INTEGER NOT NULL,
    connector         INTEGER NOT NULL,
    status            TEXT NOT NULL,
    error_code        TEXT,
    info              TEXT,
    vendor_error_code TEXT,
    status_at         TEXT NOT NULL,
    PRIMARY KEY (charger_id, evse, connector)
);

-- pk is also the OCPP 1.6 transactionId we hand out for transactions started online.
CREATE TABLE transactions (
    pk                INTEGER PRIMARY KEY AUTOINCREMENT,
    uid               TEXT NOT NULL UNIQUE,
    charger_id        TEXT NOT NULL REFERENCES chargers(id),
    evse              INTEGER NOT NULL,
    connector         INTEGER NOT NULL,
    station_tx_id     INTEGER NOT NULL,
    origin            TEXT NOT NULL CHECK (origin IN ('online', 'offline')),
    id_tag            TEXT,
    auth_status       TEXT,
    reservation_id    INTEGER,
    meter_start_wh    INTEGER,
    started_at        TEXT,
    -- charger|connector|idTag|meterStart|timestamp of the StartTransaction: a retransmit
    -- finds its transaction by it and gets the same transactionId.
    start_fingerprint TEXT UNIQUE,
    meter_stop_wh     INTEGER,
    stopped_at        TEXT,
    stop_reason       TEXT,
    stop_id_tag       TEXT,
    -- NULL while running; 'station' for a reported stop, 'reconciled' when closed from
    -- later evidence (a real StopTransaction arriving later supersedes it).
    stop_source       TEXT CHECK (stop_source IN ('station', 'reconciled')),
    last_meter_wh     INTEGER,
    last_meter_at     TEXT,
    updated_at        TEXT NOT NULL
);
CREATE INDEX transactions_by_station_id ON transactions (charger_id, station_tx_id);
CREATE INDEX transactions_active ON transactions (charger_id, evse) WHERE stop_source IS NULL;
CREATE INDEX transactions_started ON transactions (started_at);

CREATE TABLE meter_samples (
    id            INTEGER PRIMARY KEY,
    charger_id    TEXT NOT NULL,
    evse          INTEGER NOT NULL,
    connector     INTEGER NOT NULL,
    tx_pk         INTEGER REFERENCES transactions(pk),
    station_tx_id INTEGER,
    ts            TEXT NOT NULL,
    measurand     TEXT NOT NULL,
    phase         TEXT,
    location      TEXT,
    unit          TEXT,
    context       TEXT,
    format        TEXT,
    value         TEXT NOT NULL
);
CREATE INDEX meter_samples_by_tx ON meter_samples (tx_pk, ts);
CREATE INDEX meter_samples_orphans ON meter_samples (charger_id, station_tx_id) WHERE tx_pk IS NULL;

-- The OCPP audit trail: every frame in and out.
CREATE TABLE message_log (
    id           INTEGER PRIMARY KEY,
    ts           TEXT NOT NULL,
    charger_id   TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    message_type INTEGER NOT NULL,
    unique_id    TEXT,
    action       TEXT,
    payload      TEXT NOT NULL
);
CREATE INDEX message_log_by_charger ON message_log (charger_id, ts);
CREATE INDEX message_log_by_action ON message_log (action, ts);
CREATE INDEX message_log_by_ts ON message_log (ts);

-- Every state change's event, written in the same transaction; seq is gapless and never
-- reused (AUTOINCREMENT), drained in order by the sync module.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL
);

-- The local authorization list.
CREATE TABLE id_tags (
    id_tag        TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    expiry        TEXT,
    parent_id_tag TEXT,
    source        TEXT NOT NULL
);

-- Answers from an online authority, kept for offline use.
CREATE TABLE auth_cache (
    id_tag        TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    expiry        TEXT,
    parent_id_tag TEXT,
    updated_at    TEXT NOT NULL
);
"#,
    // 2: sync (commands from the hub, executed at most once; tariffs kept for offline use).
    r#"
-- Every command the hub sent, by id: recorded before it runs ('started'), so a redelivery
-- never runs it twice; `result` is the CommandResult JSON as published (sent again,
-- unchanged, on redelivery).
CREATE TABLE sync_commands (
    command_id  TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    payload     TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('started', 'accepted', 'rejected', 'failed', 'expired')),
    result      TEXT,
    finished_at TEXT,
    -- When the result was last handed to the broker (NULL: not yet, publish on connect).
    reported_at TEXT
);
CREATE INDEX sync_commands_unreported ON sync_commands (finished_at) WHERE reported_at IS NULL;

-- Tariffs from the hub (OCPI tariff JSON), for display and receipts while offline.
CREATE TABLE tariffs (
    tariff_id  TEXT PRIMARY KEY,
    tariff     TEXT NOT NULL,
    command_id TEXT,
    updated_at TEXT NOT NULL
);
"#,
];

/// Brings the database to the newest schema, each migration in its own transaction.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew { found: version, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1)).inspect_err(
            |_| {
                let _ = conn.execute_batch("ROLLBACK");
            },
        )?;
        tracing::info!(version = i + 1, "store: applied migration");
    }
    Ok(())
}
