#!/usr/bin/env bash
# The fault soak of docs/fault-model.md: mixed load with transfers against the runner in a Kafka mode
# while faults are injected on a schedule, then the books are checked.
#
#   infra/scripts/fault-soak.sh [postgres|dynamodb|all]        (default all)
#
#   postgres  STORE_KIND=postgres PIPELINE=kafka (outbox relay -> tansu -> projector and saga consumers)
#   dynamodb  STORE_KIND=dynamodb PIPELINE=kafka (moto, stream poller -> tansu -> the same consumers)
#
# Faults, in seconds after the load tool's seeding is done (T):
#   T+15   every partition's first 20 records of both topics produced again, newest first (duplicates,
#          reordered); again at T+90
#   T+20   a poison record (bytes that are not an event envelope) on each event topic
#   T+30   the broker stopped (SIGSTOP of the tansu process) for 10 s
#   T+55   the runner killed (SIGKILL) and started again at once
#   T+75   PostgreSQL restarted (pg_ctl restart -m fast; postgres mode only)
#   T+100  the broker stopped for LONG_PAUSE seconds (180; SHORT=1 makes it 30)
# The load runs SOAK_DURATION seconds (default: to 30 s after the long pause ends), 8 workers of the
# load tool's default mix plus transfers (WORKERS, TRANSFER_WEIGHT), then the load tool audits
# (balances against the client's expectations, money conserved, no negative balance, contiguous
# histories, every transfer settled) and fault-soak-check.py checks every transfer is terminal, no
# account holds money, the parked records are exactly the injected poison and health shows no lag.
#
# Binaries: BIN_DIR (default target/release of this checkout, built here with
# `cargo build --release -p corebank-runner -p corebank-loadtest` unless SKIP_BUILD=1). The Kafka
# client is kafka-python (PyPI), installed when missing. Services come from with-services.sh with
# PG_FSYNC=off (default; the restart is a clean one, and the soak measures behaviour, not disk).
# Reports go to OUT (default target/fault-soak)/<mode>/. Exit 0 when every check passes in every mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [ "${1:-}" != "__mode" ]; then
  WHICH=${1:-all}
  case "$WHICH" in postgres|dynamodb|all) ;; *) echo "usage: $0 [postgres|dynamodb|all]" >&2; exit 2 ;; esac
  export BIN_DIR=${BIN_DIR:-$ROOT/target/release}
  if [ "${SKIP_BUILD:-0}" != 1 ]; then cargo build --release -q -p corebank-runner -p corebank-loadtest; fi
  python3 -c 'import kafka' 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "kafka-python==3.0.12"
  rc=0
  for mode in postgres dynamodb; do
    if [ "$WHICH" = all ] || [ "$WHICH" = "$mode" ]; then
      case $mode in postgres) services="postgres kafka" ;; dynamodb) services="dynamodb kafka" ;; esac
      SERVICES=$services PG_FSYNC=${PG_FSYNC:-off} infra/scripts/with-services.sh "$0" __mode "$mode" || rc=1
    fi
  done
  exit "$rc"
fi

# ---- one mode, inside with-services.sh ----------------------------------------------------------------
MODE=$2
OUT=${OUT:-$ROOT/target/fault-soak}/$MODE
PORT=${SOAK_PORT:-3088}
BASE=http://127.0.0.1:$PORT/api
LONG_PAUSE=${LONG_PAUSE:-$([ "${SHORT:-0}" = 1 ] && echo 30 || echo 180)}
SOAK_DURATION=${SOAK_DURATION:-$((100 + LONG_PAUSE + 30))}
WORKERS=${WORKERS:-8}
TRANSFER_WEIGHT=${TRANSFER_WEIGHT:-10}
export ADMIN_TOKEN=${ADMIN_TOKEN:-fault-soak-$RANDOM$RANDOM}
ACCOUNT_TOPIC=${KAFKA_ACCOUNT_EVENTS_TOPIC:-corebank.account-events.v1}
TRANSFER_TOPIC=${KAFKA_TRANSFER_EVENTS_TOPIC:-corebank.transfer-events.v1}
INJECT="$ROOT/infra/scripts/kafka-inject.py"
rm -rf "$OUT"; mkdir -p "$OUT"
: >"$OUT/faults.tsv"; : >"$OUT/poison.jsonl"

log() { printf '[soak %s %s] %s\n' "$MODE" "$(date -u +%T)" "$*" | tee -a "$OUT/soak.log" >&2; }

RUNNER_PID= LOAD_PID= SAMPLER_PID= TANSU_PID= STOPPED=0
cleanup() {
  local rc=$?
  [ "$STOPPED" = 1 ] && kill -CONT "$TANSU_PID" 2>/dev/null
  for p in $SAMPLER_PID $LOAD_PID $RUNNER_PID; do kill "$p" 2>/dev/null || true; done
  for p in $SAMPLER_PID $LOAD_PID $RUNNER_PID; do wait "$p" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT INT TERM

TANSU_PID=$(pgrep -f -- "--listener-url tcp://$KAFKA_BOOTSTRAP " | head -n 1)
[ -n "$TANSU_PID" ] || { log "cannot find the tansu process of $KAFKA_BOOTSTRAP"; exit 1; }

start_runner() {
  local mode_env=(STORE_KIND="$MODE" PIPELINE=kafka)
  [ "$MODE" = dynamodb ] && mode_env+=(TABLE_PREFIX=soak- CREATE_TABLES=true)
  env PORT="$PORT" RUST_LOG=${RUST_LOG:-warn} "${mode_env[@]}" "$BIN_DIR/corebank-runner" >>"$OUT/runner.log" 2>&1 &
  RUNNER_PID=$!
  for _ in $(seq 1 600); do
    if curl -s -o /dev/null "$BASE/health"; then return 0; fi
    kill -0 "$RUNNER_PID" 2>/dev/null || { log "the runner exited; its log:"; tail -n 30 "$OUT/runner.log" >&2; return 1; }
    sleep 0.1
  done
  log "the runner did not answer within 60 s"; return 1
}

health() { curl -s --max-time 5 "$BASE/health" || true; }

# One line a second: epoch, HTTP status of health, pipeline lag, parked count.
sampler() {
  while :; do
    local t body code
    t=$(date +%s.%N)
    body=$(curl -s --max-time 2 -w '\n%{http_code}' "$BASE/health" || true)
    code=${body##*$'\n'}; body=${body%$'\n'*}
    printf '%s\t%s\t%s\t%s\n' "${t%??????}" "$code" \
      "$(jq -r '.checks.pipeline.lag // "-"' <<<"$body" 2>/dev/null || echo -)" \
      "$(jq -r '.checks.parked.count // "-"' <<<"$body" 2>/dev/null || echo -)" >>"$OUT/health.tsv"
    sleep 1
  done
}

fault() { # name start end
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$OUT/faults.tsv"
}

at() { # seconds after T
  local wait=$((T + $1 - $(date +%s)))
  [ "$wait" -gt 0 ] && sleep "$wait"
  return 0
}

replay() {
  local s e
  s=$(date +%s)
  for topic in "$ACCOUNT_TOPIC" "$TRANSFER_TOPIC"; do
    python3 "$INJECT" replay "$topic" 20 | tee -a "$OUT/replayed.jsonl" >/dev/null
  done
  e=$(date +%s); fault replay "$s" "$e"
  log "re-produced: $(jq -s -c 'map({(.topic): .replayed}) | add' "$OUT/replayed.jsonl")"
}

poison() {
  local s before after=0 t0 seen=
  before=$(health | jq -r '.checks.parked.count // 0')
  s=$(date +%s)
  python3 "$INJECT" poison "$ACCOUNT_TOPIC" "$TRANSFER_TOPIC" >>"$OUT/poison.jsonl"
  fault poison "$s" "$(date +%s)"
  log "poison produced: $(jq -s -c 'map("\(.topic)-\(.partition)@\(.offset)")' "$OUT/poison.jsonl")"
  # How long until health shows the parked records (the projector parks both, the saga the transfer one).
  t0=$(date +%s%N)
  for _ in $(seq 1 200); do
    after=$(health | jq -r '.checks.parked.count // 0')
    if [ -z "$seen" ] && [ "$after" -gt "$before" ]; then seen=$((($(date +%s%N) - t0) / 1000000)); fi
    [ "$after" -ge $((before + 3)) ] && break
    sleep 0.05
  done
  echo "first=${seen:-none}ms all=$((($(date +%s%N) - t0) / 1000000))ms count=$after" >"$OUT/parked-seen.txt"
  log "parked in health: $(cat "$OUT/parked-seen.txt")"
}

pause_broker() { # seconds
  local s
  s=$(date +%s); STOPPED=1; kill -STOP "$TANSU_PID"
  log "broker stopped for $1 s"
  sleep "$1"
  kill -CONT "$TANSU_PID"; STOPPED=0
  fault "broker-down-$1s" "$s" "$(date +%s)"
  log "broker resumed"
}

kill_runner() {
  local s
  s=$(date +%s)
  kill -KILL "$RUNNER_PID"; wait "$RUNNER_PID" 2>/dev/null || true
  log "runner killed (SIGKILL); starting it again"
  start_runner
  fault runner-sigkill "$s" "$(date +%s)"
  log "runner back after $(($(date +%s) - s)) s"
}

restart_postgres() {
  local port pid data pg_bin s
  port=${DATABASE_URL##*:}; port=${port%%/*}
  pid=$(pgrep -f -- " -p $port -k " | head -n 1)
  data=$(tr '\0' ' ' <"/proc/$pid/cmdline" | sed -E 's/.* -D ([^ ]+) .*/\1/')
  pg_bin=$(dirname "$(readlink -f "/proc/$pid/exe")")
  s=$(date +%s)
  log "restarting PostgreSQL ($data)"
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$data" -l "$(dirname "$data")/log" -m fast -w restart >/dev/null
  fault postgres-restart "$s" "$(date +%s)"
  log "PostgreSQL back after $(($(date +%s) - s)) s"
}

log "mode $MODE: load ${SOAK_DURATION}s, $WORKERS workers, transfer weight $TRANSFER_WEIGHT, long pause ${LONG_PAUSE}s"
start_runner
"$BIN_DIR/corebank-loadtest" --base-url="$BASE" --workers="$WORKERS" --transfer-weight="$TRANSFER_WEIGHT" \
  --duration="$SOAK_DURATION" --audit-timeout="${AUDIT_TIMEOUT:-600}" --json "$OUT/load.json" \
  --ids "$OUT/ids.json" >"$OUT/load.txt" 2>"$OUT/load.err" &
LOAD_PID=$!
until grep -q "accounts ready" "$OUT/load.err"; do
  kill -0 "$LOAD_PID" 2>/dev/null || { log "the load tool stopped while seeding"; cat "$OUT/load.err" >&2; exit 1; }
  sleep 0.2
done
T=$(date +%s)
echo "$T" >"$OUT/load-start"
sampler & SAMPLER_PID=$!
log "load running"

at 15; replay
at 20; poison
at 30; pause_broker 10
at 55; kill_runner
if [ "$MODE" = postgres ]; then at 75; restart_postgres; fi
at 90; replay
at 100; pause_broker "$LONG_PAUSE"
LAST_FAULT_END=$(date +%s)

log "faults done; waiting for the load tool (load, then its audit)"
# Postgres: once the load is over and the relay's backlog is empty, the events committed during the
# load that the account read side has still not applied (what the reconciler will have to repair),
# with when each was written and published: which fault, if any, lost them on the way.
if [ "$MODE" = postgres ]; then
  until grep -q "load done" "$OUT/load.err"; do sleep 0.5; done
  LOAD_END=$(date +%s)
  for _ in $(seq 1 600); do
    [ "$(health | jq -r '.checks.pipeline.lag // 1')" = 0 ] && break
    sleep 1
  done
  sleep 5
  psql -qAtX -F $'\t' "$DATABASE_URL" >"$OUT/behind.tsv" 2>&1 <<SQL || true
SELECT e.stream_id, e.version, e.position, e.occurred_at, o.published_at, COALESCE(c.version, 0) AS checkpoint
FROM events e
LEFT JOIN projection_checkpoints c ON c.stream_id = e.stream_id
LEFT JOIN outbox_events o ON o.position = e.position
WHERE e.stream_id LIKE 'account-%' AND e.version > COALESCE(c.version, 0)
  AND e.occurred_at < to_timestamp($LOAD_END)
ORDER BY e.position;
SQL
  log "events the read side had not applied $(( $(date +%s) - LOAD_END )) s after the load: $(wc -l <"$OUT/behind.tsv") (behind.tsv)"
fi
LOAD_RC=0; wait "$LOAD_PID" || LOAD_RC=$?; LOAD_PID=
log "load tool exited $LOAD_RC"
CHECK_RC=0
python3 "$ROOT/infra/scripts/fault-soak-check.py" "$BASE" "$OUT/ids.json" "$OUT/poison.jsonl" >"$OUT/check.json" || CHECK_RC=$?
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=

SOAK_RC=0
# ---- summary -----------------------------------------------------------------------------------------
python3 - "$OUT" "$T" "$LAST_FAULT_END" "$LOAD_RC" "$CHECK_RC" "$MODE" >"$OUT/summary.txt" <<'PY' || SOAK_RC=$?
import json, sys
out, t0, last_end, load_rc, check_rc, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
r = json.load(open(out + "/load.json")); c = json.load(open(out + "/check.json"))
faults = [l.rstrip("\n").split("\t") for l in open(out + "/faults.tsv") if l.strip()]
a, load = r["audit"], r["load"]
load_end = t0 + load["elapsedSecs"]
# Failures per second of the load, inside or outside a fault window (a window's end plus 2 s).
windows = [(n, int(s), int(e) + 2) for n, s, e in faults if n.startswith(("runner", "postgres"))]
inside = {n: 0 for n, _, _ in windows}; outside = []
for p in r.get("timeline", []):
    sec = t0 + p["second"]
    if not p["failures"]: continue
    hit = [n for n, s, e in windows if s - 1 <= sec <= e]
    if hit: inside[hit[0]] += p["failures"]
    else: outside.append((p["second"], p["failures"]))
statuses = {}
for op in load["operations"]:
    for k, v in op["statuses"].items():
        if k.startswith("5"): statuses["%s %s" % (op["name"], k)] = v
caught = [x for x in (a.get("convergenceMs"), a["transfers"].get("settledAfterMs"), a.get("serverCaughtUpMs")) if x is not None]
caught_after_fault = round(load_end + max(caught) / 1000 - last_end, 1) if caught else None
lag_after = {}
health = [l.split("\t") for l in open(out + "/health.tsv")]
for n, s, e in faults:
    if n.startswith("broker"):
        after = [h for h in health if float(h[0]) >= int(e)]
        lags = [int(h[2]) for h in after[:3] if h[2].isdigit()]
        zero = next((round(float(h[0]) - int(e), 1) for h in after if h[2] == "0"), None)
        lag_after[n] = {"lagJustAfter": max(lags) if lags else None, "lag0AfterSecs": zero}
goals = {
    "audit clean (balances, money, negatives, histories, transfers settled)": a["clean"],
    "every transfer terminal, no hold left, parked = injected poison, health lag 0": check_rc == 0,
    "no failed request outside the kill/restart windows": not outside,
    "read side caught up <= 60 s after the last fault": caught_after_fault is not None and caught_after_fault <= 60,
}
ok = all(goals.values())
print("=" * 78)
print("FAULT SOAK %s: %s" % (mode, "PASS" if ok else "FAIL"))
for name, held in goals.items():
    print("  [%s] %s" % ("ok" if held else "FAILED", name))
print("load: %s s, %d workers, %d requests, 5xx %d %s, transport errors %d, failures %d"
      % (load["elapsedSecs"], r["config"]["workers"], load["totalRequests"], load["status5xx"],
         json.dumps(statuses), load["transportErrors"], load["failures"]))
print("failures in kill/restart windows: %s; outside (second: count): %s" % (json.dumps(inside), outside[:20] or "none"))
print("faults (s after load start): %s" % ", ".join("%s %d-%d" % (n, int(s) - t0, int(e) - t0) for n, s, e in faults))
print("audit: exit %d (clean=%s; reasons %s), %d accounts, converged=%s, mismatches %d, drifted %d, negative %d"
      % (load_rc, a["clean"], r["verdict"]["reasons"], a["accounts"], a["converged"], a["mismatches"], a["drifted"], a["negativeBalances"]))
print("money: expected %s, observed %s; lost replies replayed: %s; histories %d/%d contiguous, %d problems"
      % (a["expectedTotal"], a["observedTotal"], json.dumps(a["pendingWrites"]), a["history"]["contiguous"], a["history"]["checked"], a["history"]["problems"]))
print("transfers (audit): %s" % json.dumps(a["transfers"]))
print("transfers (GET each): %s, not terminal %d" % (json.dumps(c["transfers"]["byStatus"]), c["transfers"]["notTerminal"]))
print("holds: %d accounts read, %d with a hold (held total %d), %d unreadable"
      % (c["accounts"]["total"], c["accounts"]["withHolds"], c["accounts"]["heldMinorTotal"], c["accounts"]["unreadable"]))
print("parked: %d records %s; injected %s; missing %s; unexpected %d %s"
      % (c["parked"]["records"], json.dumps(c["parked"]["byConsumer"]), c["parked"]["injected"], c["parked"]["missingInjected"],
         c["parked"]["unexpectedCount"], json.dumps(c["parked"]["unexpected"][:3])))
print("parked seen in health: %s" % open(out + "/parked-seen.txt").read().strip())
print("lag after broker outages: %s" % json.dumps(lag_after))
print("read side caught up: %s s after the last fault ended (load end + max(convergence %s, transfers settled %s, health lag 0 %s) ms)"
      % (caught_after_fault, a.get("convergenceMs"), a["transfers"].get("settledAfterMs"), a.get("serverCaughtUpMs")))
print("final health: %s" % json.dumps(c["health"]))
print("=" * 78)
sys.exit(0 if ok else 1)
PY
cat "$OUT/summary.txt"
exit "$SOAK_RC"
