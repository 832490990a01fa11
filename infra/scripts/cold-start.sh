#!/usr/bin/env bash
# Measures each Lambda function's cold start (process start to its first "next invocation" request)
# against the minimal Runtime API emulator in infra/coldstart/coldstart.py, RUNS times (default 20),
# and prints p50/p90/min/max per function and mode. Builds the x86_64 release binaries with cargo lambda
# first (this machine runs x86_64; arm64 binaries cannot run here), unless SKIP_BUILD=1. Starts
# PostgreSQL and the Kafka broker on 127.0.0.1 for the functions that need them.
#
#   infra/scripts/cold-start.sh
#   FUNCTIONS="health deposit" RUNS=50 SKIP_BUILD=1 infra/scripts/cold-start.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -n "${FUNCTIONS:-}" ]; then
  read -r -a names <<<"$FUNCTIONS"
else
  names=()
  for dir in functions/*/; do names+=("$(basename "$dir")"); done
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  ARCH_OVERRIDE=x86_64 FUNCTIONS="${names[*]}" infra/scripts/build-lambdas.sh >&2
fi

cases=()
for name in "${names[@]}"; do
  case "$name" in
    outbox-publisher) cases+=(--case "$name:kafka") ;;
    outbox-relay) cases+=(--case "$name:relay") ;;
    authorizer) cases+=(--case "$name:oidc") ;;
    *) cases+=(--case "$name:memory" --case "$name:dynamodb") ;;
  esac
done

SERVICES="postgres kafka" exec infra/scripts/with-services.sh \
  python3 infra/coldstart/coldstart.py --bin-dir target/x86_64-unknown-linux-gnu/release \
  --runs "${RUNS:-20}" "${cases[@]}"
