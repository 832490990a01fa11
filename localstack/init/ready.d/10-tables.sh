#!/usr/bin/env bash
# Creates the DynamoDB tables from infra/dynamodb/tables/*.json (mounted at /opt/corebank/tables), named
# with TABLE_PREFIX (default "corebank-", the wiring's default), then enables TTL where a definition asks
# for it: the same definitions as the SAM template and the Rust `create_tables`. Idempotent.
set -euo pipefail
PREFIX=${TABLE_PREFIX:-corebank-}
for def in /opt/corebank/tables/*.json; do
  name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["TableName"])' "$def")
  table="$PREFIX$name"
  if awslocal dynamodb describe-table --table-name "$table" >/dev/null 2>&1; then
    echo "table $table exists"
    continue
  fi
  # CreateTable takes everything but TimeToLiveSpecification, which is applied afterwards.
  python3 - "$def" "$table" >/tmp/create-"$name".json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d.pop("TimeToLiveSpecification", None)
d["TableName"] = sys.argv[2]
print(json.dumps(d))
PY
  awslocal dynamodb create-table --cli-input-json "file:///tmp/create-$name.json" >/dev/null
  awslocal dynamodb wait table-exists --table-name "$table"
  ttl=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1])).get("TimeToLiveSpecification"); print(t["AttributeName"] if t and t.get("Enabled") else "")' "$def")
  if [ -n "$ttl" ]; then
    awslocal dynamodb update-time-to-live --table-name "$table" \
      --time-to-live-specification "Enabled=true,AttributeName=$ttl" >/dev/null
  fi
  echo "table $table created${ttl:+ (TTL on $ttl)}"
done
