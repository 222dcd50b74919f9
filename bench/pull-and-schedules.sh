#!/usr/bin/env bash
# The scheduled-work measurements of the performance targets, in release builds:
#   * a paginated pull of 100,000 records by the HTTP provider into CSV files
#     (target: >= 20,000 records/s; docs/sources/providers.md);
#   * firing accuracy of 1,000 schedules, all on one tick and spread over 5 s
#     (target: p99 within 50 ms of the tick; docs/sources/schedule.md).
# Both are ignored tests that print their figures; run them on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== provider pull: 100,000 records into CSV" >&2
cargo test --release -p estafeta --test it provider_pull_throughput -- --ignored --nocapture

echo "== schedule firing accuracy: 1,000 schedules" >&2
cargo test --release -p estafeta-sources --test it schedule_accuracy -- --ignored --nocapture
