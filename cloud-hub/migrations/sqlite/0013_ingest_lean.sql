-- Sitepilot cloud hub, SQLite schema 13: less for ingest to write. The PostgreSQL twin is
-- migrations/postgres/0013_ingest_lean.sql; keep the two in step.
--
-- Nothing looks events up by event_id (exactly once is by (site_id, seq)), and the index
-- on a random UUID put every event on a random page of it: each batch's commit wrote
-- about one index page per event to the WAL.
DROP INDEX IF EXISTS events_event_id;
