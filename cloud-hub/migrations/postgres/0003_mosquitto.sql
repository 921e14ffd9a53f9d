-- Sitepilot cloud hub, PostgreSQL schema 3: the sites' passwords hashed for Mosquitto's
-- password file. The SQLite twin is migrations/sqlite/0003_mosquitto.sql; keep the
-- two in step.

-- `$7$101$SALT$HASH` (PBKDF2-HMAC-SHA512, what `mosquitto_passwd` writes), made from the
-- same password as `mqtt_password_hash` by `site add` and `site rotate-password`, and
-- written out by `cloud-hub mosquitto-files`. NULL for sites added before this schema:
-- the password itself was never stored, so only a new one (rotate-password) fills it.
ALTER TABLE sites ADD COLUMN mosquitto_password_hash TEXT;
