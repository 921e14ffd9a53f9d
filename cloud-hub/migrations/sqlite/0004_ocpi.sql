-- Sitepilot cloud hub, SQLite schema 4: OCPI 2.2.1 (CPO role). The PostgreSQL twin is
-- migrations/postgres/0004_ocpi.sql; keep the two in step.

-- Roaming partners (eMSPs, hubs). `state`: `pending` (we issued a token A and wait for
-- the partner to register), `registering` (we are registering with it), `registered`,
-- `unregistered`.
CREATE TABLE ocpi_partners (
    id                  TEXT PRIMARY KEY NOT NULL,
    state               TEXT NOT NULL,
    -- From the partner's credentials (its first role): NULL until registered.
    role                TEXT,
    country_code        TEXT,
    party_id            TEXT,
    business_name       TEXT,
    -- Every role of its credentials, as JSON.
    roles               TEXT,
    versions_url        TEXT,
    version             TEXT,
    -- The endpoints of its version details, as JSON.
    endpoints           TEXT,
    -- The token the partner calls us with (token A, then C): SHA-256 hex, never the token.
    incoming_token_hash TEXT,
    -- The token it used before the last rotation, accepted until `incoming_prev_until`.
    incoming_prev_hash  TEXT,
    incoming_prev_until TEXT,
    -- The token we call the partner with (its token B / C): kept as is, we must send it.
    outgoing_token      TEXT,
    -- Accept the token as sent (not base64) and send ours as is: OCPI 2.1-era peers.
    raw_tokens          INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX ocpi_partners_incoming ON ocpi_partners (incoming_token_hash);
CREATE INDEX ocpi_partners_incoming_prev ON ocpi_partners (incoming_prev_hash);

-- A site published as an OCPI Location: the metadata OCPI needs that the site does not
-- report, and the generated Location object. `body` is the Location as served (with the
-- `last_updated` of it, its EVSEs and connectors), `content_hash` a SHA-256 of it without
-- any `last_updated`, so `last_updated` moves only when the content does.
-- `source_seq` is the site's `applied_through` the body was built from (-1: rebuild).
CREATE TABLE ocpi_locations (
    site_id             TEXT PRIMARY KEY NOT NULL REFERENCES sites (id),
    location_id         TEXT NOT NULL UNIQUE,
    name                TEXT,
    address             TEXT NOT NULL,
    city                TEXT NOT NULL,
    postal_code         TEXT,
    country             TEXT NOT NULL,
    latitude            TEXT NOT NULL,
    longitude           TEXT NOT NULL,
    time_zone           TEXT NOT NULL,
    publish             INTEGER NOT NULL DEFAULT 1,
    connector_standard  TEXT NOT NULL,
    connector_format    TEXT NOT NULL,
    power_type          TEXT NOT NULL,
    max_voltage         INTEGER NOT NULL,
    max_amperage        INTEGER NOT NULL,
    source_seq          INTEGER NOT NULL DEFAULT -1,
    content_hash        TEXT,
    body                TEXT,
    -- Milliseconds since 1970 (UTC) of the body's last_updated, for date_from / date_to.
    last_updated_ms     INTEGER,
    updated_at          TEXT NOT NULL
);
CREATE INDEX ocpi_locations_last_updated ON ocpi_locations (last_updated_ms);

-- Tokens pushed to us by eMSPs (Tokens module, CPO = Receiver), as they sent them.
CREATE TABLE ocpi_tokens (
    country_code        TEXT NOT NULL,
    party_id            TEXT NOT NULL,
    uid                 TEXT NOT NULL,
    token_type          TEXT NOT NULL,
    partner_id          TEXT NOT NULL REFERENCES ocpi_partners (id),
    valid               INTEGER NOT NULL,
    whitelist           TEXT NOT NULL,
    body                TEXT NOT NULL,
    last_updated        TEXT NOT NULL,
    received_at         TEXT NOT NULL,
    PRIMARY KEY (country_code, party_id, uid, token_type)
);
