-- Sitepilot cloud hub, SQLite schema 7: OCPI 2.2.1 sessions and CDRs (CPO = Sender), the
-- real-time authorizations that tie a site's session to a roaming partner, and the durable
-- outbox of every push to partners. The PostgreSQL twin is
-- migrations/postgres/0007_ocpi_sessions.sql; keep the two in step. Objects holding money
-- are JSON text (exact decimals, never through a float).

-- A site asked the hub whether an id tag may charge and a partner (or its pushed token)
-- answered. `auth_method` is AUTH_REQUEST (the eMSP's real-time authorization) or
-- WHITELIST (the token it pushed, no call). A session belongs to the partner of the latest
-- ALLOWED answer for its id tag at its start (see ocpi::sessions), else to the partner
-- whose pushed token has the id tag as uid.
CREATE TABLE ocpi_authorizations (
    id                  TEXT PRIMARY KEY NOT NULL,
    id_tag              TEXT NOT NULL,
    partner_id          TEXT NOT NULL REFERENCES ocpi_partners (id),
    site_id             TEXT,
    station             TEXT,
    -- ALLOWED, BLOCKED, EXPIRED, NO_CREDIT, NOT_ALLOWED.
    allowed             TEXT NOT NULL,
    auth_method         TEXT NOT NULL,
    authorization_reference TEXT,
    location_id         TEXT,
    -- The Token the partner answered with (or the pushed one), JSON.
    token               TEXT NOT NULL,
    at                  TEXT NOT NULL
);
CREATE INDEX ocpi_authorizations_tag ON ocpi_authorizations (id_tag, at);

-- The OCPI Session of each roaming session, as served and pushed to its partner.
-- `body` is the Session JSON; `last_updated_ms` its last_updated (ms since 1970, UTC),
-- which moves only when the content does.
CREATE TABLE ocpi_sessions (
    site_id             TEXT NOT NULL,
    transaction_uid     TEXT NOT NULL,
    partner_id          TEXT NOT NULL REFERENCES ocpi_partners (id),
    body                TEXT NOT NULL,
    last_updated_ms     INTEGER NOT NULL,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (site_id, transaction_uid)
);
CREATE INDEX ocpi_sessions_partner ON ocpi_sessions (partner_id, last_updated_ms);
CREATE INDEX ocpi_sessions_uid ON ocpi_sessions (transaction_uid);

-- The OCPI CDR of each billing CDR (debit or credit) of a roaming session. Like the CDR
-- it is never changed, except for what the partner answered to our POST.
CREATE TABLE ocpi_cdrs (
    cdr_id              TEXT PRIMARY KEY NOT NULL REFERENCES cdrs (id),
    partner_id          TEXT NOT NULL REFERENCES ocpi_partners (id),
    body                TEXT NOT NULL,
    last_updated_ms     INTEGER NOT NULL,
    -- The partner's URL of its copy (the Location header of its answer to the POST).
    partner_location    TEXT,
    delivered_at        TEXT,
    created_at          TEXT NOT NULL
);
CREATE INDEX ocpi_cdrs_partner ON ocpi_cdrs (partner_id, last_updated_ms);

-- Pushes to partners' Receiver endpoints, in order per partner and module, kept until
-- delivered so that a restart loses none. `path` is below the partner's endpoint of
-- `module` ('' for a CDR POST). `state`: pending, or parked (a CDR the partner kept
-- refusing: kept for an operator, still served by GET cdrs). Times are ms since 1970.
CREATE TABLE ocpi_outbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    partner_id          TEXT NOT NULL,
    module              TEXT NOT NULL,
    method              TEXT NOT NULL,
    path                TEXT NOT NULL,
    body                TEXT NOT NULL,
    cdr_id              TEXT,
    state               TEXT NOT NULL DEFAULT 'pending',
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms     INTEGER NOT NULL,
    lease_until_ms      INTEGER,
    -- The hub process that holds the lease (it gives its leases back when it stops).
    leased_by           TEXT,
    last_error          TEXT,
    created_at          TEXT NOT NULL
);
CREATE INDEX ocpi_outbox_queue ON ocpi_outbox (partner_id, module, state, id);

-- Sessions and CDRs find their partner's tokens by uid (the id tag).
CREATE INDEX ocpi_tokens_uid ON ocpi_tokens (uid);
