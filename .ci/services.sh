#!/usr/bin/env bash
# Starts the local services the tests use, if they are installed and not running, and
# enables what the database-capture tests need:
#   PostgreSQL: wal_level=logical and replication connections from loopback;
#   MariaDB:    log_bin, binlog_format=ROW, binlog_row_metadata=FULL, server_id.
# A service whose settings had to change is restarted. Idempotent; never stops a service
# it does not have to restart.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_if_down() {
  local name="$1" port="$2"; shift 2
  if port_open "$port"; then
    echo "$name: up on $port"
    return 0
  fi
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "$name: not installed (skipped)"
    return 0
  fi
  echo "$name: starting"
  "$@" || echo "$name: failed to start"
}

wait_port() {
  local port="$1"
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  echo "port $port did not open"
  return 1
}

# --- PostgreSQL ------------------------------------------------------------------------
if command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_version="$(ls /etc/postgresql | sort -V | tail -n1)"
  pg_etc="/etc/postgresql/$pg_version/main"
  pg_restart=0
  conf="$pg_etc/conf.d/95-estafeta-cdc.conf"
  want="wal_level = logical
max_replication_slots = 20
max_wal_senders = 20"
  if [ -d "$pg_etc/conf.d" ] && [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$conf"
    pg_restart=1
  fi
  hba="$pg_etc/pg_hba.conf"
  if [ -f "$hba" ] && ! grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32' "$hba"; then
    # Prepended so they win over any earlier line for the same connections.
    { echo "local replication all trust"; echo "host replication all 127.0.0.1/32 trust"; cat "$hba"; } >"$hba.new"
    mv "$hba.new" "$hba"
    pg_restart=1
  fi
  if port_open 5432 && [ "$pg_restart" = 1 ]; then
    echo "postgresql: restarting to apply replication settings"
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main restart || echo "postgresql: restart failed"
  else
    start_if_down postgresql 5432 pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
  fi
  wait_port 5432
fi

# --- MariaDB ---------------------------------------------------------------------------
if command -v mariadbd >/dev/null 2>&1; then
  my_cnf=/etc/mysql/my.cnf
  my_conf=/etc/mysql/estafeta-cdc.cnf
  want="[mariadbd]
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
server_id = 1
expire_logs_days = 2"
  my_restart=0
  if [ -f "$my_cnf" ]; then
    if [ "$(cat "$my_conf" 2>/dev/null)" != "$want" ]; then
      printf '%s\n' "$want" >"$my_conf"
      my_restart=1
    fi
    if ! grep -qF "!include $my_conf" "$my_cnf"; then
      printf '\n!include %s\n' "$my_conf" >>"$my_cnf"
      my_restart=1
    fi
  fi
  if port_open 3306 && [ "$my_restart" = 1 ]; then
    echo "mariadb: restarting to apply binlog settings"
    mariadb-admin -uroot shutdown || echo "mariadb: shutdown failed"
    for _ in $(seq 1 60); do port_open 3306 || break; sleep 0.5; done
  fi
  start_if_down mariadb 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_port 3306
fi

# --- brokers and caches (started if stopped) -------------------------------------------
start_if_down redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start_if_down nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
start_if_down mosquitto 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf
if command -v rabbitmq-server >/dev/null 2>&1; then
  start_if_down rabbitmq 5672 rabbitmq-server -detached
  wait_port 5672
fi
exit 0
