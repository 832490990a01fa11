#!/usr/bin/env bash
# Measures how fast the Postgres + Kafka pipeline drains a backlog: seeds STREAMS account streams of
# PER events each (interleaved, as concurrent appends publish them) straight into `events` and
# `outbox_events` of a fresh database on a throw-away fsync-on cluster, starts the runner in
# `STORE_KIND=postgres PIPELINE=kafka` mode with no load, and prints when the relay's backlog reached 0
# (GET /api/health) and when every account's summary reached version PER (polled every 0.5 s).
#
#   infra/scripts/drain-bench.sh [STREAMS (1000)] [PER (100)]
#
# Uses target/release/corebank-runner (RUNNER overrides); the trace goes to OUT (target/bench)/drain.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" != --inside ]; then
  export STREAMS=${1:-1000} PER=${2:-100}
  export RUNNER=${RUNNER:-target/release/corebank-runner} OUT=${OUT:-target/bench} PORT=${BENCH_PORT:-3088}
  mkdir -p "$OUT"
  [ -x "$RUNNER" ] || cargo build --release -q -p corebank-runner
  exec env SERVICES="postgres kafka" PG_FSYNC=on infra/scripts/with-services.sh "$0" --inside
fi

PSQL=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/psql
"$PSQL" "$DATABASE_URL" -qc "CREATE DATABASE drain"
export DATABASE_URL=${DATABASE_URL%/*}/drain
"$RUNNER" migrate >/dev/null
"$PSQL" "$DATABASE_URL" -q -v streams="$STREAMS" -v per="$PER" <<'SQL'
INSERT INTO streams (stream_id, version)
SELECT 'account-seed-' || a, :per FROM generate_series(1, :streams) a;
WITH appended AS (
  INSERT INTO events (stream_id, version, event_id, event_type, schema_version, occurred_at, payload, metadata)
  SELECT 'account-seed-' || a, v, gen_random_uuid(),
         CASE WHEN v = 1 THEN 'AccountCreated' ELSE 'MoneyDeposited' END, 1, now(),
         CASE WHEN v = 1 THEN jsonb_build_object('accountId', 'seed-' || a, 'ownerId', 'owner-bench', 'currency', 'USD')
              ELSE jsonb_build_object('accountId', 'seed-' || a, 'amountMinorUnits', '100', 'currency', 'USD',
                                      'transactionId', 't-seed-' || a || '-' || v,
                                      'balanceAfterMinorUnits', ((v - 1) * 100)::text) END,
         '{"actor":"seed"}'::jsonb
  FROM generate_series(1, :per) v, generate_series(1, :streams) a ORDER BY v, a
  RETURNING position, stream_id, version)
INSERT INTO outbox_events (position, stream_id, version) SELECT position, stream_id, version FROM appended;
ANALYZE;
SQL
echo "seeded $((STREAMS * PER)) events in $STREAMS streams"

PORT=$PORT STORE_KIND=postgres PIPELINE=kafka RUST_LOG=warn "$RUNNER" >"$OUT/drain-runner.log" 2>&1 &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
: >"$OUT/drain.tsv"
start=$(date +%s%N) relay_done=
while :; do
  elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  lag=$(curl -s --max-time 2 "http://127.0.0.1:$PORT/api/health" | jq -r '.checks.pipeline.lag // "-"' 2>/dev/null || echo -)
  projected=$("$PSQL" "$DATABASE_URL" -Atc "SELECT count(*) FROM account_summary WHERE version = $PER")
  printf '%s\t%s\t%s\n' "$elapsed_ms" "$lag" "$projected" >>"$OUT/drain.tsv"
  if [ -z "$relay_done" ] && [ "$lag" = 0 ]; then relay_done=$elapsed_ms; echo "relay backlog 0 after $relay_done ms"; fi
  if [ "$projected" = "$STREAMS" ]; then echo "every account projected after $elapsed_ms ms"; break; fi
  if [ "$elapsed_ms" -gt 600000 ]; then echo "not drained after 600 s" >&2; exit 1; fi
  sleep 0.5
done
