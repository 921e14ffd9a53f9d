-- Sitepilot cloud hub, PostgreSQL schema 1: sites and what their events build.
-- The SQLite twin is migrations/sqlite/0001_sync.sql; keep the two in step (same
-- tables, columns and meanings; only types differ). All integers are BIGINT so that
-- one Rust type (i64) reads both databases.

-- One row per site. `applied_through` is the highest seq applied (0: none); the ingest
-- transaction locks this row (SELECT ... FOR UPDATE) before it applies a batch, so two
-- hub replicas can never both apply a seq.
CREATE TABLE sites (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    -- argon2id PHC string of the site's MQTT password (username = id).
    mqtt_password_hash  TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    applied_through     BIGINT NOT NULL DEFAULT 0,
    last_event_at       TIMESTAMPTZ,
    -- The last Hello.
    last_hello_at       TIMESTAMPTZ,
    agent_version       TEXT,
    hello_oldest_unacked BIGINT,
    hello_newest        BIGINT,
    -- The last Status (retained presence / last will).
    online              BOOLEAN,
    status_at           TIMESTAMPTZ
);

-- Charging stations as the site reports them.
CREATE TABLE chargers (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    station             TEXT NOT NULL,
    vendor              TEXT,
    model               TEXT,
    serial_number       TEXT,
    firmware_version    TEXT,
    -- The whole StationInfo.
    info                JSONB,
    registration        TEXT,
    last_boot_at        TIMESTAMPTZ,
    connected           BOOLEAN,
    connection_changed_at TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site_id, station)
);

-- The last status of each EVSE / connector (evse 0, connector 0: the whole station).
CREATE TABLE connectors (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    station             TEXT NOT NULL,
    evse                BIGINT NOT NULL,
    connector           BIGINT NOT NULL,
    status              TEXT NOT NULL,
    error_code          TEXT,
    info                TEXT,
    vendor_error_code   TEXT,
    status_at           TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
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
    evse                BIGINT,
    connector           BIGINT,
    id_tag              TEXT,
    origin              TEXT,
    started_at          TIMESTAMPTZ,
    meter_start_wh      BIGINT,
    -- The latest Energy.Active.Import.Register seen for the session, and its time.
    last_energy_wh      BIGINT,
    last_energy_at      TIMESTAMPTZ,
    stopped_at          TIMESTAMPTZ,
    meter_stop_wh       BIGINT,
    stop_reason         TEXT,
    stop_id_tag         TEXT,
    -- The stop was inferred by the edge; a later real stop supersedes it.
    reconciled          BOOLEAN NOT NULL DEFAULT FALSE,
    energy_wh           BIGINT,
    updated_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site_id, transaction_uid)
);
CREATE INDEX sessions_site_started ON sessions (site_id, started_at);

-- Every sampled value, verbatim (value as sent) plus its numeric value in the base unit
-- (Wh, W, A, V) when it has one.
--
-- Partitioned by time from the start: the table is the parent, rows land in the
-- partition whose range holds `ts`, and `meter_samples_default` catches what no
-- partition covers. To keep partitions small and drop old data cheaply, create one per
-- month ahead of time, e.g.
--   CREATE TABLE meter_samples_2026_12 PARTITION OF meter_samples
--       FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
-- and drop (or DETACH and archive) a month when it expires. A partition cannot be
-- created for a range the default partition already holds rows of: create months
-- before they start (a monthly job), or move the rows out of the default first. The
-- index below is created on every partition automatically.
CREATE TABLE meter_samples (
    site_id             TEXT NOT NULL,
    station             TEXT NOT NULL,
    evse                BIGINT NOT NULL,
    connector           BIGINT NOT NULL,
    transaction_uid     TEXT,
    ts                  TIMESTAMPTZ NOT NULL,
    measurand           TEXT NOT NULL,
    phase               TEXT,
    location            TEXT,
    unit                TEXT,
    context             TEXT,
    format              TEXT,
    value               TEXT NOT NULL,
    value_num           DOUBLE PRECISION,
    -- The event that carried it.
    seq                 BIGINT NOT NULL
) PARTITION BY RANGE (ts);
CREATE TABLE meter_samples_default PARTITION OF meter_samples DEFAULT;
-- Time-range queries per station ("the series of CP-1 last week").
CREATE INDEX meter_samples_site_station_ts ON meter_samples (site_id, station, ts);

-- The site's local authorization list as edited at the site.
CREATE TABLE id_tags (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    id_tag              TEXT NOT NULL,
    status              TEXT NOT NULL,
    expiry              TIMESTAMPTZ,
    parent_id_tag       TEXT,
    updated_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site_id, id_tag)
);

-- Every event as it came (also the kinds this hub does not know: effects_applied =
-- false, kept so that a newer hub can apply them later).
CREATE TABLE events (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    seq                 BIGINT NOT NULL,
    event_id            TEXT NOT NULL,
    kind                TEXT NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    payload             JSONB NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL,
    effects_applied     BOOLEAN NOT NULL,
    PRIMARY KEY (site_id, seq)
);
CREATE INDEX events_event_id ON events (event_id);

-- Commands to sites (the command issue fills it): one row per command id, with the
-- site's CommandResult once it came.
CREATE TABLE commands (
    command_id          TEXT PRIMARY KEY,
    site_id             TEXT NOT NULL REFERENCES sites (id),
    payload             JSONB NOT NULL,
    status              TEXT NOT NULL,
    result              JSONB,
    issued_at           TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ,
    result_at           TIMESTAMPTZ
);
CREATE INDEX commands_site_issued ON commands (site_id, issued_at);
