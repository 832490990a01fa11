#!/usr/bin/env bash
# Runs every test of the workspace against real servers: starts PostgreSQL, the DynamoDB-API server
# (moto) and the Kafka broker (tansu) on 127.0.0.1, runs the tests with --all-features so every
# adapter's contract suite runs, and stops the servers again. Extra arguments go to `cargo test`.
#
# First, the SAM template is linted (cfn-lint, no errors or warnings); infra/template-check's tests then
# hold it to the code inside `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
infra/scripts/lint-template.sh
exec infra/scripts/with-services.sh cargo test --workspace --all-features --locked "$@"
