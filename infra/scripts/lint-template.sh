#!/usr/bin/env bash
# Lints the SAM template with cfn-lint (which runs the SAM transform first): template.yaml as it is, and
# template.yaml with infra/sam/pending.yaml merged in (the resources of function crates still being
# written), so both stay deployable. Any error fails; warnings are printed and fail too.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cfn-lint >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "cfn-lint>=1.51,<2"
cfn-lint --version >&2
cfn-lint template.yaml
if [ -s infra/sam/pending.yaml ]; then
  merged=$(mktemp -t corebank-template.XXXXXX.json)
  trap 'rm -f "$merged"' EXIT
  python3 - "$merged" <<'PY'
import json, sys
from cfnlint.decode import decode
template, errors = decode("template.yaml")
pending, more = decode("infra/sam/pending.yaml")
if errors or more:
    sys.exit(f"could not parse: {errors or more}")
for name in pending.get("Resources", {}):
    if name in template["Resources"]:
        sys.exit(f"infra/sam/pending.yaml: {name} is already in template.yaml")
template["Resources"].update(pending.get("Resources", {}))
with open(sys.argv[1], "w") as out:
    json.dump(template, out)
PY
  cfn-lint "$merged"
fi
echo "cfn-lint: template.yaml and template.yaml + infra/sam/pending.yaml: no errors, no warnings" >&2
