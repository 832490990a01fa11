#!/usr/bin/env bash
# The outbox publisher's on-failure queue, as template.yaml names it for a stack called "corebank".
set -euo pipefail
awslocal sqs create-queue --queue-name "${STACK_NAME:-corebank}-outbox-dlq" >/dev/null
echo "queue ${STACK_NAME:-corebank}-outbox-dlq ready"
