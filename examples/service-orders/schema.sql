-- Tables for examples/service-orders (PostgreSQL): the `service_orders` table of a field-service
-- system, the `notification_outbox` table Estafeta polls, and a trigger that writes one outbox
-- row whenever an order is opened or changes status, and wakes Estafeta with NOTIFY.
--
--   psql "postgres://USER@localhost:5432/fieldservice" -f examples/service-orders/schema.sql

CREATE TABLE IF NOT EXISTS service_orders (
  id          bigserial   PRIMARY KEY,
  customer    text        NOT NULL,
  site        text        NOT NULL,
  description text        NOT NULL,
  status      text        NOT NULL DEFAULT 'open',   -- open, scheduled, in_progress, done, cancelled
  urgent      boolean     NOT NULL DEFAULT false,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notification_outbox (
  id           bigserial   PRIMARY KEY,
  event_type   text        NOT NULL,
  order_id     text        NOT NULL,
  payload      jsonb       NOT NULL,
  status       varchar(12) NOT NULL DEFAULT 'PENDING',
  created_at   timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz,
  error        text,
  attempts     int         NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS notification_outbox_pending
  ON notification_outbox (id) WHERE status = 'PENDING';

CREATE OR REPLACE FUNCTION service_orders_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
    RETURN NEW;   -- only new orders and status changes are notified
  END IF;
  INSERT INTO notification_outbox (event_type, order_id, payload)
  VALUES (CASE TG_OP WHEN 'INSERT' THEN 'service_order.opened' ELSE 'service_order.status_changed' END,
          NEW.id::text,
          jsonb_build_object('id', NEW.id, 'customer', NEW.customer, 'site', NEW.site,
                             'description', NEW.description, 'status', NEW.status,
                             'urgent', NEW.urgent));
  PERFORM pg_notify('notification_outbox', '');
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS service_orders_to_outbox ON service_orders;
CREATE TRIGGER service_orders_to_outbox AFTER INSERT OR UPDATE ON service_orders
  FOR EACH ROW EXECUTE FUNCTION service_orders_to_outbox();

-- Try it:
--   INSERT INTO service_orders (customer, site, description, urgent)
--     VALUES ('ACME', 'Portaria 2', 'Catraca não libera saída', true);
--   UPDATE service_orders SET status = 'in_progress' WHERE id = 1;
--   SELECT id, event_type, status, processed_at, attempts, error FROM notification_outbox ORDER BY id;
