-- Sitepilot cloud hub, SQLite schema 8: commands and charging profiles from roaming
-- partners (OCPI 2.2.1 "Commands module" and "Charging Profiles module", CPO =
-- Receiver). The PostgreSQL twin is migrations/postgres/0008_ocpi_commands.sql; keep the
-- two in step.

-- One row per request a partner made. The site command it became is `site_command_id`
-- (table `commands`); its asynchronous result is decided once (`result` / `decided_at`,
-- by the site's answer or by the deadline, whichever comes first: a conditional UPDATE
-- on `decided_at IS NULL`) and POSTed to `response_url` until it is delivered
-- (`posted_at`) or given up (`abandoned_at`). A hub restart finds both where it left them.
CREATE TABLE ocpi_commands (
    id                  TEXT PRIMARY KEY NOT NULL,
    partner_id          TEXT NOT NULL REFERENCES ocpi_partners (id),
    -- `commands` or `chargingprofiles`.
    module              TEXT NOT NULL,
    -- START_SESSION, STOP_SESSION, RESERVE_NOW, CANCEL_RESERVATION, UNLOCK_CONNECTOR;
    -- SET_PROFILE, GET_PROFILE, CLEAR_PROFILE.
    command             TEXT NOT NULL,
    -- The request as received (JSON).
    body                TEXT NOT NULL,
    response_url        TEXT NOT NULL,
    site_id             TEXT,
    station             TEXT,
    connector           INTEGER,
    -- The id tag sent to the charger (START_SESSION, RESERVE_NOW): the token's uid.
    id_tag              TEXT,
    -- Our session (`sessions.transaction_uid`) it is about.
    session_id          TEXT,
    site_command_id     TEXT,
    received_at         TEXT NOT NULL,
    -- A transaction of `id_tag` started from this time on (the clock difference allowed
    -- between site and hub before `received_at`) may be this START_SESSION's.
    match_since         TEXT,
    -- When TIMEOUT is decided if the site has not answered.
    deadline            TEXT NOT NULL,
    -- The result value (ACCEPTED, TIMEOUT, ...) and the JSON body to POST.
    result              TEXT,
    result_body         TEXT,
    decided_at          TEXT,
    -- `site`, `deadline` or `hub` (decided without the site, e.g. an unknown reservation).
    decided_by          TEXT,
    posted_at           TEXT,
    post_tries          INTEGER NOT NULL DEFAULT 0,
    -- Also a lease: the replica posting it moves it ahead first.
    next_post_at        TEXT,
    post_error          TEXT,
    abandoned_at        TEXT,
    -- A START_SESSION that did not succeed whose transaction started anyway: the
    -- session, the remote stop sent for it, and why.
    late_session_uid    TEXT,
    late_stop_command_id TEXT,
    late_note           TEXT
);
CREATE INDEX ocpi_commands_undecided ON ocpi_commands (decided_at, deadline);
CREATE INDEX ocpi_commands_to_post ON ocpi_commands (posted_at, next_post_at);
CREATE INDEX ocpi_commands_site_command ON ocpi_commands (site_command_id);

-- Reservations through RESERVE_NOW. A partner's `reservation_id` (CiString(36)) never
-- reaches a charger (OCPI 2.2.1, ReserveNow): `ocpp_id` is ours, unique over all sites
-- and partners. `status`: `requested`, `active`, `failed`, `canceled`.
CREATE TABLE ocpi_reservations (
    ocpp_id             INTEGER PRIMARY KEY,
    partner_id          TEXT NOT NULL REFERENCES ocpi_partners (id),
    location_id         TEXT NOT NULL,
    reservation_id      TEXT NOT NULL,
    site_id             TEXT NOT NULL,
    station             TEXT NOT NULL,
    connector           INTEGER NOT NULL,
    id_tag              TEXT NOT NULL,
    expiry              TEXT NOT NULL,
    -- The RESERVE_NOW command (ocpi_commands.id) that made or last replaced it.
    command_id          TEXT NOT NULL,
    status              TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (partner_id, location_id, reservation_id)
);
CREATE INDEX ocpi_reservations_partner ON ocpi_reservations (partner_id, reservation_id);
