#!/usr/bin/env bash
# Builds estafeta in release mode and runs `estafeta bench` scenarios, writing a Markdown
# report (machine, command, tables) and the JSON results under target/bench/.
#
#   bench/run.sh                 # all scenarios: idle, single, batch100, batch100-batched, steady2k
#   bench/run.sh single          # one scenario
#   bench/run.sh cdc             # PostgreSQL capture (also: outbox); needs ESTAFETA_BENCH_PG_URL or the local default
#   bench/run.sh enrich          # a route with an enrich step against a look-up API answering in 50 ms
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

status=0
"$bin" bench --scenario "$scenario" --markdown --json-out "$json" \
  --quiet-wait "${BENCH_QUIET_WAIT:-180s}" "$@" >> "$md" || status=$?

cat "$md"
echo >&2
echo "report: $md" >&2
echo "json:   $json" >&2
exit "$status"
