-- Sitepilot cloud hub, PostgreSQL schema 6: the dashboard's users and log-in sessions. The
-- SQLite twin is migrations/sqlite/0006_dashboard.sql; keep the two in step.

-- A person who logs in to the dashboard at `/`. `password_hash` is argon2id (PHC
-- string); `role` is admin | cpo_operator | fleet_manager; a fleet manager sees the
-- sessions of the id tags of `customer_id` (billing `customer_tokens`) and nothing else.
CREATE TABLE dashboard_users (
    username            TEXT PRIMARY KEY,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL,
    customer_id         TEXT REFERENCES customers (id),
    created_at          TIMESTAMPTZ NOT NULL
);

-- A logged-in browser. The cookie holds 256 random bits; only their SHA-256 (hex) is kept.
CREATE TABLE dashboard_sessions (
    token_hash          TEXT PRIMARY KEY,
    username            TEXT NOT NULL REFERENCES dashboard_users (username),
    created_at          TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX dashboard_sessions_user ON dashboard_sessions (username);

-- A fleet manager's sessions are found by id tag; the live pages ask for a site's active
-- sessions.
CREATE INDEX sessions_id_tag ON sessions (id_tag);
CREATE INDEX sessions_site_stopped ON sessions (site_id, stopped_at);
-- The latest power sample of a session (live power on the overview and site pages).
CREATE INDEX meter_samples_site_tx ON meter_samples (site_id, transaction_uid, measurand);
