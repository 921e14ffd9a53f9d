-- Sitepilot cloud hub, PostgreSQL schema 13: less for ingest to write. The SQLite twin is
-- migrations/sqlite/0013_ingest_lean.sql; keep the two in step.
--
-- Nothing looks events up by event_id (exactly once is by (site_id, seq)), and the index
-- on a random UUID put every event on a random page of it.
DROP INDEX IF EXISTS events_event_id;

-- Every event's payload as the text that came: the hub never queries inside it, and
-- parsing it into JSONB (and compressing the result) was most of the server's work per
-- event. SQLite has stored it as TEXT from the start. Existing rows keep JSONB's text
-- form of what came (valid JSON either way).
ALTER TABLE events ALTER COLUMN payload TYPE TEXT USING payload::text;
