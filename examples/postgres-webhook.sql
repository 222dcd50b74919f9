-- Tables for examples/postgres-webhook.yaml: an access-control system's visitors and the
-- service orders of a maintenance team. Run it in the database the example captures:
--   psql "$PG_URL" -f examples/postgres-webhook.sql
-- The PostgreSQL user in PG_URL needs the REPLICATION attribute (ALTER ROLE … WITH
-- REPLICATION) and must own these tables, so that Estafeta can create the publication.

CREATE TABLE IF NOT EXISTS visitors (
    id          bigserial PRIMARY KEY,
    name        text        NOT NULL,
    document    text        NOT NULL,
    gate        text        NOT NULL,
    entered_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS service_orders (
    id          bigserial PRIMARY KEY,
    customer    text        NOT NULL,
    status      text        NOT NULL DEFAULT 'open',
    total       numeric(12, 2),
    details     jsonb       NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Updates then carry the old row too (data.before), so a route can react to status changes.
ALTER TABLE service_orders REPLICA IDENTITY FULL;
