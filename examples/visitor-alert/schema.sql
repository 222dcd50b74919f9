-- Table for examples/visitor-alert (PostgreSQL): the visitors registered at the front desk of
-- an office building. Estafeta captures each new row by change data capture (logical
-- replication), so the desk application needs no change at all.
--
--   psql "$PG_URL" -f examples/visitor-alert/schema.sql
--
-- The PostgreSQL user in PG_URL needs the REPLICATION attribute (ALTER ROLE … WITH
-- REPLICATION) and must own the table, so that Estafeta can create the publication; the
-- server needs wal_level = logical. See docs/sources/postgres.md.

CREATE TABLE IF NOT EXISTS visitors (
  id          bigserial   PRIMARY KEY,
  name        text        NOT NULL,
  document    text        NOT NULL,              -- CPF as typed at the desk: 123.456.789-00
  building    text        NOT NULL,              -- where they came in: 'Torre Norte'
  floor       text,                              -- where they are going
  host_name   text,                              -- who they visit
  badge       text,                              -- the visitor badge handed out
  visited_at  timestamptz NOT NULL DEFAULT now()
);

-- Updates and deletes then carry the whole old row (data.before), so a later route can react
-- to a corrected document or a cancelled visit, not only to new visitors.
ALTER TABLE visitors REPLICA IDENTITY FULL;

-- Try it (with the look-up API answering records for the first document only):
--   INSERT INTO visitors (name, document, building, floor, host_name)
--     VALUES ('João da Silva', '123.456.789-00', 'Torre Norte', '12', 'Marina Costa');
--   INSERT INTO visitors (name, document, building)
--     VALUES ('Maria Oliveira', '987.654.321-00', 'Torre Sul');
-- Only João's visit reaches the Telegram chat; Maria's delivery ends `filtered`:
--   estafeta deliveries list --status filtered
