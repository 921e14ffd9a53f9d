-- Sitepilot cloud hub, PostgreSQL schema 5: billing. Tariffs (OCPI 2.2.1 Tariff objects),
-- which tariff applies at each site from when, customers and the id tags that bill to
-- them, CDRs (immutable: a correction is a credit CDR), invoices. The SQLite twin is
-- migrations/sqlite/0005_billing.sql; keep the two in step. Money and volumes are exact
-- decimals stored as text, and so is JSON holding money (never through a float).

-- `body` is the Tariff JSON as served (its `last_updated` included); `content_hash` is the
-- SHA-256 of the body without `last_updated`, so that a PUT of the same content does not
-- move `last_updated` (an eMSP's incremental sync would otherwise fetch it again).
CREATE TABLE tariffs (
    id                  TEXT PRIMARY KEY NOT NULL,
    currency            TEXT NOT NULL,
    body                TEXT NOT NULL,
    content_hash        TEXT NOT NULL,
    last_updated        TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL
);

-- The tariff of a site from `valid_from` on (the newest `valid_from` at or before a
-- session's start prices it), and the site's time zone for the tariff's restrictions.
CREATE TABLE site_tariffs (
    site_id             TEXT NOT NULL REFERENCES sites (id),
    valid_from          TIMESTAMPTZ NOT NULL,
    tariff_id           TEXT NOT NULL REFERENCES tariffs (id),
    time_zone           TEXT NOT NULL,
    assigned_at         TIMESTAMPTZ NOT NULL,
    assigned_by         TEXT,
    PRIMARY KEY (site_id, valid_from)
);

CREATE TABLE customers (
    id                  TEXT PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL,
    email               TEXT,
    address             TEXT,
    vat_id              TEXT,
    created_at          TIMESTAMPTZ NOT NULL
);

-- The id tags (RFID cards, app tokens) whose sessions are billed to a customer.
CREATE TABLE customer_tokens (
    id_tag              TEXT PRIMARY KEY NOT NULL,
    customer_id         TEXT NOT NULL REFERENCES customers (id),
    created_at          TIMESTAMPTZ NOT NULL
);

-- One row per CDR. `kind` debit: a finished session priced (revision 1, 2, ... when a
-- later stop corrected the session); credit: cancels the debit `credits` (same amounts,
-- negated). Never updated or deleted (the triggers below refuse it).
CREATE TABLE cdrs (
    id                  TEXT PRIMARY KEY NOT NULL,
    site_id             TEXT NOT NULL REFERENCES sites (id),
    transaction_uid     TEXT NOT NULL,
    kind                TEXT NOT NULL,
    revision            BIGINT NOT NULL,
    credits             TEXT REFERENCES cdrs (id),
    reason              TEXT,
    customer_id         TEXT REFERENCES customers (id),
    id_tag              TEXT,
    station             TEXT NOT NULL,
    evse                BIGINT,
    connector           BIGINT,
    tariff_id           TEXT NOT NULL,
    time_zone           TEXT NOT NULL,
    currency            TEXT NOT NULL,
    start_date_time     TIMESTAMPTZ NOT NULL,
    end_date_time       TIMESTAMPTZ NOT NULL,
    -- The session's stop as priced (a different stop later means a correction).
    meter_start_wh      BIGINT NOT NULL,
    meter_stop_wh       BIGINT NOT NULL,
    total_energy_kwh    TEXT NOT NULL,
    total_time_h        TEXT NOT NULL,
    total_parking_time_h TEXT NOT NULL,
    total_cost_excl_vat TEXT NOT NULL,
    total_cost_incl_vat TEXT,
    -- Everything else: the totals per dimension, the charging periods, the VAT lines and
    -- the tariff as it was.
    detail              TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (site_id, transaction_uid, kind, revision),
    UNIQUE (credits)
);
CREATE INDEX cdrs_customer_end ON cdrs (customer_id, end_date_time);
CREATE INDEX cdrs_site_end ON cdrs (site_id, end_date_time);
CREATE INDEX cdrs_end ON cdrs (end_date_time);

CREATE FUNCTION cdrs_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'CDRs are immutable: issue a credit CDR instead';
END;
$$;
CREATE TRIGGER cdrs_no_update BEFORE UPDATE OR DELETE ON cdrs
    FOR EACH ROW EXECUTE FUNCTION cdrs_immutable();

-- A session the billing worker could not price, and why (tried again when the session
-- changes).
CREATE TABLE cdr_failures (
    site_id             TEXT NOT NULL,
    transaction_uid     TEXT NOT NULL,
    stopped_at          TIMESTAMPTZ NOT NULL,
    reason              TEXT NOT NULL,
    at                  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site_id, transaction_uid, stopped_at)
);

CREATE TABLE invoices (
    id                  TEXT PRIMARY KEY NOT NULL,
    -- Gapless per hub, in order of issue.
    number              BIGINT NOT NULL UNIQUE,
    customer_id         TEXT NOT NULL REFERENCES customers (id),
    currency            TEXT NOT NULL,
    period_from         TIMESTAMPTZ NOT NULL,
    period_to           TIMESTAMPTZ NOT NULL,
    issued_at           TIMESTAMPTZ NOT NULL,
    total_excl_vat      TEXT NOT NULL,
    total_vat           TEXT NOT NULL,
    total_incl_vat      TEXT NOT NULL,
    -- The invoice as JSON (customer, lines, tax lines, totals).
    body                TEXT NOT NULL
);
CREATE INDEX invoices_customer ON invoices (customer_id, period_from);

-- Each CDR is on at most one invoice.
CREATE TABLE invoice_cdrs (
    cdr_id              TEXT PRIMARY KEY NOT NULL REFERENCES cdrs (id),
    invoice_id          TEXT NOT NULL REFERENCES invoices (id)
);
CREATE INDEX invoice_cdrs_invoice ON invoice_cdrs (invoice_id);

-- The billing worker looks at sessions that changed since its previous pass.
CREATE INDEX sessions_updated ON sessions (updated_at);
