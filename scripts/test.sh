#!/usr/bin/env bash
# Every test: formatting, lints, unit and end-to-end tests of the whole
# workspace, the Helm chart with the real Helm engine, and the image's build
# stage command. Installs what it needs once and reuses it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

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
