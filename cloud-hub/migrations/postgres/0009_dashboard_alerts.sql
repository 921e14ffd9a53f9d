-- Sitepilot cloud hub, PostgreSQL schema 9: the dashboard's alerts, and indexes for its session
-- lists. The SQLite twin is migrations/sqlite/0009_dashboard_alerts.sql; keep the two in step.

-- One row per alert episode, opened and cleared by what the sites report (ingest keeps
-- it in the same transaction as the event's other effects; the site's presence status
-- opens and clears `site_offline`). `kind`:
-- - `site_offline`: the site's presence went offline (its last will); station '' and
--   evse / connector 0;
-- - `charger_offline`: the station's WebSocket to the edge disconnected;
-- - `connector_faulted`: the connector (evse 0 / connector 0: the whole station)
--   reported Faulted; `detail` holds its error code, vendor error code and info.
-- Times are the site's event times. At most one open (`cleared_at` NULL) row per
-- (site, kind, station, evse, connector).
CREATE TABLE dashboard_alerts (
    id                  BIGSERIAL PRIMARY KEY,
    site_id             TEXT NOT NULL REFERENCES sites (id),
    kind                TEXT NOT NULL,
    station             TEXT NOT NULL DEFAULT '',
    evse                BIGINT NOT NULL DEFAULT 0,
    connector           BIGINT NOT NULL DEFAULT 0,
    detail              TEXT,
    opened_at           TIMESTAMPTZ NOT NULL,
    cleared_at          TIMESTAMPTZ
);
CREATE UNIQUE INDEX dashboard_alerts_one_open
    ON dashboard_alerts (site_id, kind, station, evse, connector) WHERE cleared_at IS NULL;
CREATE INDEX dashboard_alerts_site_opened ON dashboard_alerts (site_id, opened_at);
CREATE INDEX dashboard_alerts_cleared ON dashboard_alerts (cleared_at);

-- What is already wrong when this schema arrives.
INSERT INTO dashboard_alerts (site_id, kind, opened_at)
    SELECT id, 'site_offline', COALESCE(status_at, created_at) FROM sites WHERE online = FALSE;
INSERT INTO dashboard_alerts (site_id, kind, station, opened_at)
    SELECT site_id, 'charger_offline', station, COALESCE(connection_changed_at, updated_at)
    FROM chargers WHERE connected = FALSE;
INSERT INTO dashboard_alerts (site_id, kind, station, evse, connector, detail, opened_at)
    SELECT site_id, 'connector_faulted', station, evse, connector,
        COALESCE(error_code, '') || CASE WHEN vendor_error_code IS NULL THEN '' ELSE ' / ' || vendor_error_code END
            || CASE WHEN info IS NULL THEN '' ELSE ' / ' || info END,
        status_at
    FROM connectors WHERE status = 'Faulted';


-- The dashboard's session lists walk sessions by their sort key (the start, else the
-- stop, else the last update), newest first, of every site or of one.
CREATE INDEX sessions_listed ON sessions ((COALESCE(started_at, stopped_at, updated_at)), site_id, transaction_uid);
CREATE INDEX sessions_site_listed ON sessions (site_id, (COALESCE(started_at, stopped_at, updated_at)), transaction_uid);
-- The charts find the sessions that started before their range and stopped in it or later.
CREATE INDEX sessions_stopped ON sessions (stopped_at);
-- Which sites a fleet manager may see: those where one of their customer's id tags
-- charged, one probe per tag and site.
CREATE INDEX sessions_tag_site ON sessions (id_tag, site_id);
CREATE INDEX customer_tokens_customer ON customer_tokens (customer_id);
