-- Sitepilot cloud hub, SQLite schema 1: sites and what their events build.
-- The PostgreSQL twin is migrations/postgres/0001_sync.sql; keep the two in step
-- (same tables, columns and meanings; only types differ).
-- Times are RFC 3339 text in UTC, JSON is text, booleans are 0/1.

-- One row per site. `applied_through` is the highest seq applied (0: none); it is
-- read and written in the same transaction as the events it covers.
CREATE TABLE sites (
    id                  TEXT PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL,
    -- argon2id PHC string of the site's MQTT password (username = id).
    mqtt_password_hash  TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    applied_through     INTEGER NOT NULL DEFAULT 0,
    last_event_at       TEXT,
    -- The last Hello.
    last_hello_at       TEXT,
    agent_version       TEXT,
    hello_oldest_unacked INTEGER,
    hello_newest        INTEGER,
    -- The last Status (retained presence / last will).
    online              INTEGER,
    status_at           TEXT
);

-- Charging stations as the site reports them.
CREATE TABLE chargers (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    station             TEXT NOT NULL,
    vendor              TEXT,
    model               TEXT,
    serial_number       TEXT,
    firmware_version    TEXT,
    -- The whole StationInfo as JSON.
    info                TEXT,
    registration        TEXT,
    last_boot_at        TEXT,
    connected           INTEGER,
    connection_changed_at TEXT,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (site_id, station)
);

-- The last status of each EVSE / connector (evse 0, connector 0: the whole station).
CREATE TABLE connectors (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    station             TEXT NOT NULL,
    evse                INTEGER NOT NULL,
    connector           INTEGER NOT NULL,
    status              TEXT NOT NULL,
    error_code          TEXT,
    info                TEXT,
    vendor_error_code   TEXT,
    status_at           TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (site_id, station, evse, connector)
);

-- Charging sessions, from transaction_started / meter_values / transaction_stopped.
-- A stop may arrive for a session whose start the hub never saw (start-side columns
-- stay NULL). energy_wh = meter_stop_wh - meter_start_wh when both are known.
CREATE TABLE sessions (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    transaction_uid     TEXT NOT NULL,
    station             TEXT NOT NULL,
    station_transaction_id TEXT,
    evse                INTEGER,
    connector           INTEGER,
    id_tag              TEXT,
    origin              TEXT,
    started_at          TEXT,
    meter_start_wh      INTEGER,
    -- The latest Energy.Active.Import.Register seen for the session, and its time.
    last_energy_wh      INTEGER,
    last_energy_at      TEXT,
    stopped_at          TEXT,
    meter_stop_wh       INTEGER,
    stop_reason         TEXT,
    stop_id_tag         TEXT,
    -- The stop was inferred by the edge; a later real stop supersedes it.
    reconciled          INTEGER NOT NULL DEFAULT 0,
    energy_wh           INTEGER,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (site_id, transaction_uid)
);
CREATE INDEX sessions_site_started ON sessions (site_id, started_at);

-- Every sampled value, verbatim (value as sent) plus its numeric value in the base unit
-- (Wh, W, A, V) when it has one.
CREATE TABLE meter_samples (
    id                  INTEGER PRIMARY KEY,
    site_id             TEXT NOT NULL,
    station             TEXT NOT NULL,
    evse                INTEGER NOT NULL,
    connector           INTEGER NOT NULL,
    transaction_uid     TEXT,
    ts                  TEXT NOT NULL,
    measurand           TEXT NOT NULL,
    phase               TEXT,
    location            TEXT,
    unit                TEXT,
    context             TEXT,
    format              TEXT,
    value               TEXT NOT NULL,
    value_num           REAL,
    -- The event that carried it.
    seq                 INTEGER NOT NULL
);
-- Time-range queries per station ("the series of CP-1 last week").
CREATE INDEX meter_samples_site_station_ts ON meter_samples (site_id, station, ts);

-- The site's local authorization list as edited at the site.
CREATE TABLE id_tags (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    id_tag              TEXT NOT NULL,
    status              TEXT NOT NULL,
    expiry              TEXT,
    parent_id_tag       TEXT,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (site_id, id_tag)
);

-- Every event as it came (also the kinds this hub does not know: effects_applied = 0,
-- kept so that a newer hub can apply them later).
CREATE TABLE events (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    seq                 INTEGER NOT NULL,
    event_id            TEXT NOT NULL,
    kind                TEXT NOT NULL,
    at                  TEXT NOT NULL,
    payload             TEXT NOT NULL,
    received_at         TEXT NOT NULL,
    effects_applied     INTEGER NOT NULL,
    PRIMARY KEY (site_id, seq)
);
CREATE INDEX events_event_id ON events (event_id);

-- Commands to sites (the command issue fills it): one row per command id, with the
-- site's CommandResult once it came.
CREATE TABLE commands (
    command_id          TEXT PRIMARY KEY NOT NULL,
    site_id             TEXT NOT NULL REFERENCES sites (id),
    payload             TEXT NOT NULL,
    status              TEXT NOT NULL,
    result              TEXT,
    issued_at           TEXT NOT NULL,
    expires_at          TEXT,
    result_at           TEXT
);
CREATE INDEX commands_site_issued ON commands (site_id, issued_at);
