-- Sitepilot cloud hub, SQLite schema 10: the sites' power per phase against their limits
-- (the `site_energy` event, see shared-model/SYNC.md). The PostgreSQL twin is
-- migrations/postgres/0010_site_energy.sql; keep the two in step.

-- The newest report per site: `report` is the event's payload as the site sent it
-- (shared_model::energy::SiteEnergyReport), `at` its time, `fail_safe` its flag.
CREATE TABLE site_energy (
    site_id             TEXT PRIMARY KEY REFERENCES sites (id),
    seq                 INTEGER NOT NULL,
    at                  TEXT NOT NULL,
    fail_safe           INTEGER NOT NULL,
    report              TEXT NOT NULL,
    received_at         TEXT NOT NULL
);

-- The site totals of the last hour of reports (ingest deletes older rows of the site it
-- writes), for the site page's chart: the grid connection's current per phase (A), its
-- total power (W) and what the balancer allocated (sum over phases, A).
CREATE TABLE site_energy_series (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    at                  TEXT NOT NULL,
    l1_a                REAL,
    l2_a                REAL,
    l3_a                REAL,
    power_w             REAL,
    allocated_a         REAL,
    PRIMARY KEY (site_id, at)
);
