#!/usr/bin/env bash
# Starts the local services the tests use, if they are installed and not running.
# Idempotent; never stops anything.
set -uo pipefail

start_if_down() {
  local name="$1" port="$2"; shift 2
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
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

# None of the current tests needs these yet; they are started so that the suites of the
# database and broker sources find them (see docs/development.md).
if command -v pg_ctlcluster >/dev/null 2>&1; then
  start_if_down postgresql 5432 pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
exit 0
