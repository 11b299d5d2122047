#!/usr/bin/env bash
# The differential tester (crates/kache/tests/difftest.rs) on N more seeds:
# random sequences of edits, reverts, branch switches, env and feature flips,
# builds, checks, clippy, tests, SIGKILLed builds, cleans and a second
# checkout, under plain cargo and under kache, compared after every step.
# The first seed is random (printed), the next N-1 follow it, so any one of
# them replays with KACHE_DIFFTEST_SEEDS=<seed>.
# Usage: bash bench/difftest.sh [N] (default 10)
#   START=<seed>  first seed instead of a random one
#   KACHE_DIFFTEST_STEPS=<n>  steps per seed (default: the test's)
#   KACHE_DIFFTEST_SHRINK=<n> replays spent shrinking a divergence (default 12)
# Exits non-zero when any seed diverged.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-10}"
case "$n" in
  '' | *[!0-9]*) echo "usage: bash bench/difftest.sh [N]" >&2; exit 2 ;;
esac
if [ "$n" -lt 1 ]; then
  echo "N must be at least 1" >&2
  exit 2
fi
start="${START:-$(( (RANDOM << 15 | RANDOM) + 1000 ))}"
end=$(( start + n - 1 ))
echo "difftest: seeds $start-$end"

log="$(mktemp "${TMPDIR:-/tmp}/difftest.XXXXXX.log")"
cd "$root"
cargo build --quiet -p kache
KACHE_DIFFTEST_SEEDS="$start-$end" cargo nextest run -p kache --test difftest \
  -j 1 --no-capture kache_matches_plain_cargo 2>&1 | tee "$log" \
  | grep -E '^(difftest seed|DIVERGENCE|  minimal|  replay:)'
status="${PIPESTATUS[0]}"

summary="$(grep '^difftest summary:' "$log" | tail -n 1)"
if [ -z "$summary" ]; then
  echo "difftest: no summary (the test did not finish); full log: $log" >&2
  exit 1
fi
echo
echo "$summary"
grep '^  replay:' "$log" | sed 's/^  replay: /replay: /'
echo "full log: $log"
exit "$status"
