-- Sitepilot cloud hub, PostgreSQL schema 12: the served Location as text; a change counter for
-- GET locations. The SQLite twin is migrations/sqlite/0012_ocpi_locations_text.sql; keep the two
-- in step.
--
-- ocpi_locations.body is only ever spliced into responses as it is (and parsed back by a
-- rebuild): as JSONB every page converted ~100 bodies (10 EVSEs each) back to text, the
-- largest part of a page's time in the database. Stored as the hub wrote it, it is read as is.
ALTER TABLE ocpi_locations ALTER COLUMN body TYPE TEXT USING CAST(body AS TEXT);

-- Whether any Location may be out of date, in one cheap read: every statement that changes
-- what a Location is built from bumps one of these counters in its own transaction, so their
-- sum moves (only up) exactly when such a change is committed, whichever replica made it.
-- The sum replaces sums over every site and Location (two scans of 10 000 rows per GET).
-- 64 rows, one picked by the transaction id: concurrent ingest transactions rarely wait for
-- each other's commit on one row, and a transaction only ever locks one of them.
CREATE TABLE ocpi_location_changes (
    slot                INTEGER PRIMARY KEY NOT NULL,
    n                   BIGINT NOT NULL
);
INSERT INTO ocpi_location_changes (slot, n) SELECT g, 0 FROM generate_series(0, 63) AS g;

CREATE FUNCTION ocpi_location_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ocpi_location_changes SET n = n + 1 WHERE slot = CAST(txid_current() % 64 AS INTEGER);
    RETURN NULL;
END;
$$;
-- What a Location is built from: the site's applied events (ingest raises applied_through
-- in the transaction that applies them, connectors and chargers included) and the OCPI
-- metadata and build state in ocpi_locations.
CREATE TRIGGER sites_ocpi_location_changed AFTER INSERT OR DELETE OR UPDATE OF applied_through ON sites
    FOR EACH STATEMENT EXECUTE FUNCTION ocpi_location_changed();
CREATE TRIGGER ocpi_locations_changed AFTER INSERT OR DELETE OR UPDATE ON ocpi_locations
    FOR EACH STATEMENT EXECUTE FUNCTION ocpi_location_changed();
