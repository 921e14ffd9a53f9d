-- Sitepilot cloud hub, PostgreSQL schema 2: API keys for the fleet REST API, and what
-- the hub tracks about each command it sends. The SQLite twin is
-- migrations/sqlite/0002_fleet_api.sql; keep the two in step.

-- Bearer tokens for /api/v1. The token itself is shown once by `cloud-hub apikey add`
-- and never stored: `token_hash` is its SHA-256 (hex). A token is 256 random bits, so a
-- fast hash is enough (a slow one like argon2 guards guessable passwords, and would cost
-- tens of milliseconds on every request).
CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    -- admin | fleet_manager | viewer
    role                TEXT NOT NULL,
    token_hash          TEXT NOT NULL UNIQUE,
    created_at          TIMESTAMPTZ NOT NULL,
    -- Updated at most once a minute per key.
    last_used_at        TIMESTAMPTZ,
    -- A revoked key is kept (for the audit trail of commands) but no longer accepted.
    revoked_at          TIMESTAMPTZ
);

-- `status` is `sent` until the site's CommandResult arrives, then `answered`; `payload`
-- is the CommandEnvelope exactly as published (re-sent unchanged after a hello);
-- `result` the CommandResult as it came (the first one: a site answers once per id).
ALTER TABLE commands ADD COLUMN issued_by TEXT;
ALTER TABLE commands ADD COLUMN outcome TEXT;
ALTER TABLE commands ADD COLUMN sent_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN last_sent_at TIMESTAMPTZ;
ALTER TABLE commands ADD COLUMN result_received_at TIMESTAMPTZ;
-- The unanswered commands of a site, re-sent when it says hello.
CREATE INDEX commands_site_status ON commands (site_id, status, issued_at);

-- Sessions across sites by start time (the per-site index is in schema 1).
CREATE INDEX sessions_started ON sessions (started_at);
