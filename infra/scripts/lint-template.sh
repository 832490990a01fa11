#!/usr/bin/env bash
# Lints the SAM template with cfn-lint (which runs the SAM transform first). Any error fails; warnings
# are printed and fail too.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cfn-lint >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "cfn-lint>=1.51,<2"
cfn-lint --version >&2
cfn-lint template.yaml
echo "cfn-lint: template.yaml: no errors, no warnings" >&2
