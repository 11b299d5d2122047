#!/usr/bin/env bash
# Every test: formatting, lints, then unit and end-to-end tests of the whole
# workspace. Installs nothing it finds already present.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked -j 2 --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast -- --test-threads 2
fi
