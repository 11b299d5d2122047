#!/usr/bin/env bash
# The main job: install kache from this checkout, build the bundled example
# workspace cold through it, `cargo clean`, build it warm, and show what hit.
# The store is a fresh directory, so "cold" is really cold.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

echo "==> installing kache from $root"
cargo install --quiet --locked --path "$root/crates/kache"
kache="$(command -v kache || echo "${CARGO_HOME:-$HOME/.cargo}/bin/kache")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$root/tests/fixtures/fx" "$work/example"
export KACHE_CACHE_DIR="$work/cache" RUSTC_WRAPPER="$kache" KACHE_PROGRESS=all
cd "$work/example"

now() { date +%s.%N; }
echo "==> cold build (empty cache)"
t0=$(now); cargo build --offline 2>&1 | grep -E '^\[kache\]|Finished'; t1=$(now)
cargo clean --quiet
echo "==> warm build (after cargo clean)"
t2=$(now); cargo build --offline 2>&1 | grep -E '^\[kache\]|Finished'; t3=$(now)
./target/debug/fx-app

echo
"$kache" stats
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
    'BEGIN { printf "\ncold build: %.2fs   warm build: %.2fs   (warm/cold = %.2f)\n", b-a, d-c, (d-c)/(b-a) }' 
