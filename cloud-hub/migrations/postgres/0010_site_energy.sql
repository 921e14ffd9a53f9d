-- Sitepilot cloud hub, PostgreSQL schema 10: the sites' power per phase against their limits
-- (the `site_energy` event, see shared-model/SYNC.md). The SQLite twin is
-- migrations/sqlite/0010_site_energy.sql; keep the two in step.

-- The newest report per site: `report` is the event's payload as the site sent it
-- (shared_model::energy::SiteEnergyReport), `at` its time, `fail_safe` its flag.
CREATE TABLE site_energy (
    site_id             TEXT PRIMARY KEY REFERENCES sites (id),
    seq                 BIGINT NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    fail_safe           BOOLEAN NOT NULL,
    report              JSONB NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL
);

-- The site totals of the last hour of reports (ingest deletes older rows of the site it
-- writes), for the site page's chart: the grid connection's current per phase (A), its
-- total power (W) and what the balancer allocated (sum over phases, A).
CREATE TABLE site_energy_series (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    at                  TIMESTAMPTZ NOT NULL,
    l1_a                DOUBLE PRECISION,
    l2_a                DOUBLE PRECISION,
    l3_a                DOUBLE PRECISION,
    power_w             DOUBLE PRECISION,
    allocated_a         DOUBLE PRECISION,
    PRIMARY KEY (site_id, at)
);
