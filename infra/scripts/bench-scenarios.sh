#!/usr/bin/env bash
# Runs the load scenarios of docs/performance.md against the runner and keeps their reports.
#
#   infra/scripts/bench-scenarios.sh [sqlite|embedded|postgres|jwt|all]
#
#   sqlite    the durable store (one SQLite file, a fresh one under $OUT/sqlite-data)
#   embedded  the memory store (nothing kept)
#   jwt       the memory store's seed scenario twice in one run: AUTH_MODE=open, then AUTH_MODE=jwt
#             with a fresh P-256 key and a token the load tool signs (operator scope)
#
#   seed      the original runner's published scenario: 120 s, 50 workers, 250 accounts,
#             --seed-concurrency=25 --initial-deposit=25000, 5% hot accounts, 90% hot selection
#   hot       one account, 50 workers, deposits and withdrawals only
#
# DURATION (default 120) shortens the runs; OUT (default target/bench) is where the text, JSON and
# SVG reports go. Postgres runs with fsync on (the server's defaults), via with-services.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHICH=${1:-all}
DURATION=${DURATION:-120}
OUT=${OUT:-target/bench}
PORT=${BENCH_PORT:-3077}
mkdir -p "$OUT"
cargo build --release -q -p corebank-runner -p corebank-loadtest

wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "runner did not open port $1" >&2
  return 1
}

load() { # name, extra flags...
  local name=$1; shift
  # shellcheck disable=SC2086 # LOAD_FLAGS is a list of flags
  target/release/corebank-loadtest --base-url="http://127.0.0.1:$PORT/api" --duration="$DURATION" \
    --json "$OUT/$name.json" --plot "$OUT/$name.svg" ${LOAD_FLAGS:-} "$@" | tee "$OUT/$name.txt"
}

seed_only() { # prefix
  load "$1-seed" --workers=50 --accounts=250 --seed-concurrency=25 --initial-deposit=25000 \
    --hot-account-ratio=0.05 --hot-selection-rate=0.9
}

scenarios() { # prefix
  load "$1-seed" --workers=50 --accounts=250 --seed-concurrency=25 --initial-deposit=25000 \
    --hot-account-ratio=0.05 --hot-selection-rate=0.9
  load "$1-hot" --workers=50 --accounts=1 --initial-deposit=25000 --hot-account-ratio=1 \
    --hot-selection-rate=1 --deposit-weight=50 --withdraw-weight=50 --balance-weight=0 \
    --history-weight=0 --create-weight=0
}

with_runner() { # prefix, env assignments...
  local prefix=$1; shift
  env PORT="$PORT" RUST_LOG=warn "$@" target/release/corebank-runner >"$OUT/$prefix-runner.log" 2>&1 &
  local pid=$!
  wait_port "$PORT"
  local rc=0
  ${SCENARIOS:-scenarios} "$prefix" || rc=$?
  kill -INT "$pid"; wait "$pid" || true
  return "$rc"
}

case "$WHICH" in
  sqlite|all)
    rm -rf "$OUT/sqlite-data"
    with_runner sqlite STORE_KIND=sqlite DATA_DIR="$OUT/sqlite-data"
    du -b "$OUT/sqlite-data" | tail -n 1 | tee "$OUT/sqlite-data-bytes.txt" ;;
esac
case "$WHICH" in
  embedded|all) with_runner embedded STORE_KIND=memory ;;
esac
case "$WHICH" in
  jwt|all)
    keys="$OUT/jwt-keys"
    target/release/corebank-runner auth dev-keys "$keys" >/dev/null
    issuer=http://127.0.0.1/dev-issuer audience=corebank
    SCENARIOS=seed_only with_runner embedded-open STORE_KIND=memory AUTH_MODE=open
    SCENARIOS=seed_only LOAD_FLAGS="--mint-key=$keys/signing-key.pem --mint-kid=dev-1 --mint-issuer=$issuer --mint-audience=$audience" \
      with_runner embedded-jwt STORE_KIND=memory AUTH_MODE=jwt AUTH_JWKS_FILE="$keys/jwks.json" \
      AUTH_ISSUER="$issuer" AUTH_AUDIENCE="$audience" ;;
esac
case "$WHICH" in
  postgres|all)
    export -f with_runner scenarios load wait_port
    export PORT OUT DURATION
    SERVICES=postgres PG_FSYNC=on infra/scripts/with-services.sh \
      bash -c 'with_runner postgres STORE_KIND=postgres PIPELINE=embedded RUN_MIGRATIONS=true DATABASE_URL="$DATABASE_URL"' ;;
esac
echo "reports in $OUT/"
