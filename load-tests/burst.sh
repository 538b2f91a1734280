#!/usr/bin/env bash
# Burst measurement: builds release, starts `orderflow serve` on a fresh embedded data directory
# (the hot path on Redis when REDIS is set, the log on Kafka when LOG is set), sends ORDERS checkouts (default 10,000) and reports
# how long they take to reach terminal states. The scenarios with baselines are in run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS=${1:-10000}
CONCURRENCY=${2:-128}
PORT=${PORT:-18181}
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT

echo "==> building release"
cargo build --release --bin orderflow --example checkout_burst
echo "==> starting orderflow on 127.0.0.1:$PORT (data in $DATA)"
# REDIS=redis://HOST:PORT puts the hot path on that Redis (use an empty one: stock is seeded
# only where a SKU has none).
EXTRA=()
if [ -n "${REDIS:-}" ]; then EXTRA=(--redis "$REDIS"); echo "==> hot path on $REDIS"; fi
# LOG=kafka://HOST:PORT runs the log on that broker (use a fresh one: topics are created once).
if [ -n "${LOG:-}" ]; then EXTRA+=(--log "$LOG"); echo "==> log on $LOG"; fi
RUST_LOG=warn ./target/release/orderflow serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" "${EXTRA[@]}" > "$DATA/stdout" 2> "$DATA/stderr" &
PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null 2>&1 && break
  sleep 0.1
done
TOKEN=$(./target/release/orderflow token --sub loadtest --scope "checkout orders:read" 2>/dev/null)
echo "==> sending $ORDERS checkouts, $CONCURRENCY in flight"
./target/release/examples/checkout_burst "http://127.0.0.1:$PORT" "$TOKEN" "$ORDERS" "$CONCURRENCY"
echo "==> peak RSS of orderflow: $(awk '/VmHWM/ {print $2, $3}' /proc/$PID/status)"
