-- Tables for examples/outbox-webhook.yaml (PostgreSQL): an `orders` table, the `outbox` table
-- Estafeta polls, and a trigger that writes one outbox row per new or changed order and wakes
-- Estafeta with NOTIFY.
--
--   psql "postgres://USER@localhost:5432/shop" -f examples/outbox-webhook.sql

CREATE TABLE IF NOT EXISTS orders (
  id         bigserial     PRIMARY KEY,
  customer   text          NOT NULL,
  total      numeric(12,2) NOT NULL,
  status     text          NOT NULL DEFAULT 'new',
  created_at timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbox (
  id           bigserial    PRIMARY KEY,
  event_type   text         NOT NULL,
  aggregate_id text,
  payload      jsonb        NOT NULL,
  status       varchar(12)  NOT NULL DEFAULT 'PENDING',
  created_at   timestamptz  NOT NULL DEFAULT now(),
  processed_at timestamptz,
  error        text,
  attempts     int          NOT NULL DEFAULT 0
);

-- Keeps finding pending rows fast however many processed rows the table holds.
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE status = 'PENDING';

CREATE OR REPLACE FUNCTION orders_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO outbox (event_type, aggregate_id, payload)
  VALUES (CASE TG_OP WHEN 'INSERT' THEN 'order.created' ELSE 'order.updated' END,
          NEW.id::text,
          jsonb_build_object('id', NEW.id, 'customer', NEW.customer,
                             'total', NEW.total, 'status', NEW.status));
  -- Optional: wakes Estafeta at once (listen_channel: outbox) instead of at its next poll.
  PERFORM pg_notify('outbox', '');
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS orders_to_outbox ON orders;
CREATE TRIGGER orders_to_outbox AFTER INSERT OR UPDATE ON orders
  FOR EACH ROW EXECUTE FUNCTION orders_to_outbox();

-- Try it:
--   INSERT INTO orders (customer, total) VALUES ('Ana', 120.50);
--   SELECT id, event_type, status, processed_at, attempts, error FROM outbox ORDER BY id;
