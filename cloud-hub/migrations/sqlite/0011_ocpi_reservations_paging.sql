-- Sitepilot cloud hub, SQLite schema 11: how an OCPI reservation ends; paging locations. The PostgreSQL
-- twin is migrations/postgres/0011_ocpi_reservations_paging.sql; keep the two in step.
--
-- ocpi_reservations.status gains `used` (its driver started a session) and `ended`
-- (over without a session: expired, or cancelled at the site or by the CPO side; a
-- CommandResult CANCELED_RESERVATION was queued for the partner). `reserved_seen_at`:
-- when the hub first saw the charger's connector `Reserved` for it.
ALTER TABLE ocpi_reservations ADD COLUMN reserved_seen_at TEXT;
CREATE INDEX ocpi_reservations_status ON ocpi_reservations (status);

-- GET locations pages by location_id with LIMIT / OFFSET: the count and a page's ids
-- from this index alone (the rows an OFFSET skips are not read), then the bodies by id.
CREATE INDEX ocpi_locations_page ON ocpi_locations (publish, location_id, last_updated_ms) WHERE body IS NOT NULL;
-- The refresh before every GET looks for Locations behind their site's events: from
-- this index and `sites`, without reading the stored bodies.
CREATE INDEX ocpi_locations_source ON ocpi_locations (site_id, source_seq);
