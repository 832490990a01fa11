#!/usr/bin/env bash
# Builds every Lambda function with cargo lambda, for the architecture template.yaml gives it (arm64 for
# pure-Rust functions, x86_64 for those that link rdkafka), zips each `bootstrap`, and prints a table of
# function, architecture, binary size and zip size (goal: zip <= 5 MB). `sam build` does the same build
# per function; this script is the quick way to check sizes and that everything cross-compiles.
#
#   infra/scripts/build-lambdas.sh                 # every crate under functions/
#   FUNCTIONS="deposit health" infra/scripts/build-lambdas.sh
#   ARCH_OVERRIDE=x86_64 infra/scripts/build-lambdas.sh   # everything for x86_64 (e.g. to run locally)
#
# Installs what it needs: cargo-lambda 1.9.2 from PyPI (it brings zig) and the aarch64 Rust target.
# If the target cannot be added (no network to the Rust toolchain server), arm64 functions are built for
# x86_64 instead and the table says so. Output: target/lambda/<function>/bootstrap.zip.
# Not part of the test command (it is a release build of every function: see docs/deploy.md for times).
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '[build-lambdas] %s\n' "$*" >&2; }

if ! cargo lambda --version 2>/dev/null | grep -q '^cargo-lambda 1\.9\.2'; then
  log "installing cargo-lambda 1.9.2 from PyPI"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "cargo-lambda==1.9.2"
fi

ARM_OK=1
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  log "adding the aarch64-unknown-linux-gnu target"
  if ! rustup target add aarch64-unknown-linux-gnu >&2; then
    ARM_OK=0
    log "could not add the aarch64 target: arm64 functions are built for x86_64 instead"
  fi
fi

# The architecture template.yaml gives functions/<name> (the Architectures line after its CodeUri).
arch_of() {
  awk -v uri="CodeUri: functions/$1" '
    index($0, uri) { found = 1 }
    found && /Architectures:/ { gsub(/.*\[|\].*/, ""); print; exit }
  ' template.yaml
}

if [ -n "${FUNCTIONS:-}" ]; then
  read -r -a names <<<"$FUNCTIONS"
else
  names=()
  for dir in functions/*/; do names+=("$(basename "$dir")"); done
fi

arm=()
x86=()
declare -A built_arch
for name in "${names[@]}"; do
  arch=${ARCH_OVERRIDE:-$(arch_of "$name")}
  if [ -z "$arch" ]; then
    log "functions/$name has no function resource in template.yaml; building it for x86_64"
    arch=x86_64
  fi
  if [ "$arch" = arm64 ] && [ "$ARM_OK" = 1 ]; then
    arm+=(-p "$name"); built_arch[$name]=arm64
  else
    x86+=(-p "$name"); built_arch[$name]=$([ "$arch" = arm64 ] && echo "x86_64 (arm64 target unavailable)" || echo x86_64)
  fi
done

# One cargo invocation per function, as `sam build` does: Cargo unifies the features of every package
# one invocation builds, so building the producers together with a DynamoDB function would link the
# AWS SDK's rustls HTTPS client (which only the DynamoDB functions use) into them as well. cargo lambda
# zips every workspace binary it finds under target/<triple>/release, not only the one asked for: each
# build zips into a scratch directory and only that function's zip is kept.
build_one() {
  local arch=$1 name=$2 flag
  flag=$([ "$arch" = arm64 ] && echo --arm64 || echo --x86-64)
  log "cargo lambda build --release $flag -p $name"
  rm -rf "target/lambda-$arch"
  cargo lambda build --release "$flag" --output-format zip --lambda-dir "target/lambda-$arch" -p "$name" >&2
  mkdir -p "target/lambda/$name"
  cp "target/lambda-$arch/$name/bootstrap.zip" "target/lambda/$name/bootstrap.zip"
}

start=$(date +%s)
for ((i = 1; i < ${#arm[@]}; i += 2)); do build_one arm64 "${arm[$i]}"; done
arm_done=$(date +%s)
for ((i = 1; i < ${#x86[@]}; i += 2)); do build_one x86_64 "${x86[$i]}"; done
end=$(date +%s)

mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1000000 }'; }
printf '\n| function | arch | binary | zip | zip <= 5 MB |\n| --- | --- | --- | --- | --- |\n'
status=0
for name in "${names[@]}"; do
  arch=${built_arch[$name]}
  triple=$([ "${arch%% *}" = arm64 ] && echo aarch64-unknown-linux-gnu || echo x86_64-unknown-linux-gnu)
  bin="target/$triple/release/$name"
  zip="target/lambda/$name/bootstrap.zip"
  if [ ! -f "$bin" ] || [ ! -f "$zip" ]; then
    printf '| %s | %s | missing | missing | no |\n' "$name" "$arch"; status=1; continue
  fi
  bin_bytes=$(stat -c %s "$bin"); zip_bytes=$(stat -c %s "$zip")
  ok=$([ "$zip_bytes" -le 5000000 ] && echo yes || echo no)
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$arch" "$(mb "$bin_bytes")" "$(mb "$zip_bytes")" "$ok"
done
printf '\nbuild time: arm64 %ss, x86_64 %ss, total %ss\n' "$((arm_done - start))" "$((end - arm_done))" "$((end - start))"
exit "$status"
