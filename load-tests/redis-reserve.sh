#!/usr/bin/env bash
# Reservations/s through the Redis ledger adapter against redis-benchmark running the same
# reserve script by EVALSHA, alternating in one run on one redis-server of its own.
# Usage: load-tests/redis-reserve.sh [RESERVATIONS=200000] [CLIENTS=50] [ROUNDS=3]
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in redis-server redis-benchmark; do
  command -v "$tool" > /dev/null || { echo "$tool is not installed (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
echo "==> building release"
cargo build --release --example redis_reserve_bench
echo "==> running"
./target/release/examples/redis_reserve_bench "$@"
