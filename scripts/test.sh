#!/usr/bin/env bash
# Every test: formatting, lints, unit and end-to-end tests of the whole
# workspace (C and C++ through the cc crate included, the remote against a
# real S3 server), the Helm chart with the real Helm engine, and the image's
# build stage command. Installs what it needs once and reuses it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

# The C-family tests build C and C++ through the cc crate: they need a C and
# a C++ compiler. The interactive commands are tested in a real terminal
# (tmux).
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
# ... and clang, whose assembler cannot list the files `.incbin` reads.
command -v clang >/dev/null 2>&1 || compgen -c clang- | grep -qE '^clang-[0-9]+$' || missing+=(clang)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
# The report's JSON Schema is checked by an independent validator.
python3 -c 'import jsonschema' >/dev/null 2>&1 || missing+=(python3-jsonschema)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The remote tests start a real S3 server (Garage), installed once into a
# cache outside the clone (KACHE_CI_CACHE, default ~/.cache/kache-ci).
echo "==> S3 server for the remote tests"
KACHE_GARAGE_BIN=$(bash scripts/install-garage.sh)
export KACHE_GARAGE_BIN
echo "garage: $KACHE_GARAGE_BIN"

# The registry-remote tests start a real OCI registry (Debian's
# docker-registry, the CNCF distribution registry), installed once.
echo "==> OCI registry for the registry-remote tests"
KACHE_REGISTRY_BIN=$(bash scripts/install-registry.sh)
export KACHE_REGISTRY_BIN
echo "registry: $KACHE_REGISTRY_BIN"

# The GitHub Action (action.yml, post/action.yml, scripts/action/) is
# checked by actionlint and shellcheck, installed once into the same cache.
echo "==> GitHub Action: actionlint and shellcheck"
KACHE_ACTIONLINT_DIR=$(bash scripts/install-actionlint.sh)
export KACHE_ACTIONLINT_DIR
bash scripts/action/lint.sh

# The API test runs schemathesis against the real service, from a
# virtualenv in the same cache.
echo "==> API checker for the planner's OpenAPI document"
KACHE_SCHEMATHESIS_BIN=$(bash scripts/install-schemathesis.sh)
export KACHE_SCHEMATHESIS_BIN
echo "schemathesis: $KACHE_SCHEMATHESIS_BIN"

# The toolchain tests build with an old stable, the newest stable and a dated
# nightly, installed once with rustup into the same cache (in its own
# RUSTUP_HOME); the target tests' cross targets go to the machine's toolchain.
echo "==> extra Rust toolchains and targets"
toolchains=$(bash scripts/install-toolchains.sh)
while IFS= read -r line; do export "${line?}"; done <<<"$toolchains"
echo "$toolchains"

echo "==> fmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked -j 2 --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast -- --test-threads 2
fi

echo "==> Helm chart"
bash scripts/test-chart.sh

# No Docker engine runs in CI: prove the image's build stage by running its
# exact cargo command, read from the Dockerfile.
build_stage=$(sed -n 's/^RUN \(cargo build .*\)$/\1/p' docker/service.Dockerfile)
echo "==> image build stage: $build_stage"
[ -n "$build_stage" ] || { echo "no cargo build command in docker/service.Dockerfile" >&2; exit 1; }
eval "$build_stage"
test -x target/release/kache-service
target/release/kache-service --version
