-- Sitepilot cloud hub, SQLite schema 12: a change counter for GET locations. The PostgreSQL
-- twin is migrations/postgres/0012_ocpi_locations_text.sql; keep the two in step.
--
-- ocpi_locations.body is TEXT here already (PostgreSQL turns its JSONB into TEXT in 12).

-- Whether any Location may be out of date, in one cheap read: every change to what a
-- Location is built from bumps this counter in its own transaction, so it moves (only up)
-- exactly when such a change is committed. SQLite has one writer at a time: one row.
CREATE TABLE ocpi_location_changes (
    slot                INTEGER PRIMARY KEY NOT NULL,
    n                   INTEGER NOT NULL
);
INSERT INTO ocpi_location_changes (slot, n) VALUES (0, 0);

-- What a Location is built from: the site's applied events (ingest raises applied_through
-- in the transaction that applies them, connectors and chargers included) and the OCPI
-- metadata and build state in ocpi_locations.
CREATE TRIGGER sites_insert_ocpi_location_changed AFTER INSERT ON sites
BEGIN
    UPDATE ocpi_location_changes SET n = n + 1;
END;
CREATE TRIGGER sites_delete_ocpi_location_changed AFTER DELETE ON sites
BEGIN
    UPDATE ocpi_location_changes SET n = n + 1;
END;
CREATE TRIGGER sites_applied_ocpi_location_changed AFTER UPDATE OF applied_through ON sites
BEGIN
    UPDATE ocpi_location_changes SET n = n + 1;
END;
CREATE TRIGGER ocpi_locations_insert_changed AFTER INSERT ON ocpi_locations
BEGIN
    UPDATE ocpi_location_changes SET n = n + 1;
END;
CREATE TRIGGER ocpi_locations_delete_changed AFTER DELETE ON ocpi_locations
BEGIN
    UPDATE ocpi_location_changes SET n = n + 1;
END;
CREATE TRIGGER ocpi_locations_update_changed AFTER UPDATE ON ocpi_locations
BEGIN
    UPDATE ocpi_location_changes SET n = n + 1;
END;
