#!/usr/bin/env bash
# The main job: install kache from this checkout, then show it on a real
# project — examples/showcase, a command-line tool on 60+ crates from
# crates.io (proc-macros, build scripts, C code through the cc crate):
#   1. plain cargo, cold (no kache): the yardstick
#   2. through kache, cold (an empty store)
#   3. through kache, warm (after `cargo clean`)
#   4. a second checkout of the same project, through kache
# and a table of the times next to plain cargo's and the disk each uses.
# With --offline, or when the registry cannot be reached, it shows the
# bundled five-crate fixture (tests/fixtures/fx) instead.
# Usage: bash scripts/demo.sh [--offline]   (KACHE_BIN=path skips the install)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
offline=0
[ "${1:-}" = "--offline" ] && offline=1

# KACHE_BIN: use this kache binary instead of installing one.
if [ -n "${KACHE_BIN:-}" ]; then
    kache=$KACHE_BIN
else
    echo "==> installing kache from $root (a release build, once)"
    install_start=$(date +%s)
    cargo install --quiet --locked --path "$root/crates/kache"
    echo "    installed in $(($(date +%s) - install_start)) s"
    kache="$(command -v kache || echo "${CARGO_HOME:-$HOME/.cargo}/bin/kache")"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
showcase="$root/examples/showcase"
if [ "$offline" = 0 ] && cargo fetch --locked --quiet --manifest-path "$showcase/Cargo.toml" 2>/dev/null; then
    # The crates this platform builds (Cargo.lock also lists other platforms'), less showcase itself.
    crates=$(cargo tree --offline --locked -e normal,build --prefix none --manifest-path "$showcase/Cargo.toml" |
        sed 's/ (.*//' | sort -u | grep -vc '^showcase ')
    echo "==> project: examples/showcase ($crates crates from crates.io)"
    cp -r "$showcase" "$work/checkout-1"
    program=(./target/debug/showcase)
else
    echo "==> offline or no registry: the bundled fixture tests/fixtures/fx instead"
    cp -r "$root/tests/fixtures/fx" "$work/checkout-1"
    program=(./target/debug/fx-app)
fi
rm -rf "$work/checkout-1/target"
cp -r "$work/checkout-1" "$work/checkout-2"
export KACHE_CACHE_DIR="$work/cache" CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
unset RUSTC_WRAPPER

now() { date +%s.%N; }
demo_start=$(now)
log="$KACHE_CACHE_DIR/events.jsonl"
events() { if [ -f "$log" ]; then wc -l <"$log"; else echo 0; fi; }
# "<hits> hits, <misses> misses" among the events after line $1. A compile
# that failed (a build script's feature probe, like anyhow's) is not a unit a
# cache can serve: it is counted apart.
outcomes() {
    python3 - "$log" "$1" <<'PY'
import json, sys
try:
    lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]
except FileNotFoundError:
    lines = []
events = [json.loads(line) for line in lines]
probes = [e for e in events if e.get("reason", "").startswith("rustc exited")]
units = [e for e in events if e not in probes]
hits = sum(e["outcome"] == "hit" for e in units)
misses = sum(e["outcome"] in ("miss", "dup") for e in units)
note = f" ({len(probes)} failed feature probes, never cached)" if probes else ""
print(f"{hits} hits, {misses} misses{note}")
PY
}
# build <label> <dir> [env...]: a cargo build, timed; sets $seconds.
build() {
    local label=$1 dir=$2; shift 2
    echo "==> $label"
    local start; start=$(now)
    local locked=(); [ -f "$dir/Cargo.lock" ] && locked=(--locked)
    (cd "$dir" && env "$@" cargo build --offline "${locked[@]}" --quiet)
    seconds=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
}
size() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { printf "%.0f MiB", s / 1048576 }'; }

build "plain cargo, cold" "$work/checkout-1" CARGO_TARGET_DIR="$work/plain-target"
plain=$seconds
before=$(events)
build "kache, cold (empty store)" "$work/checkout-1" RUSTC_WRAPPER="$kache"
cold=$seconds; cold_outcomes=$(outcomes "$before")
(cd "$work/checkout-1" && cargo clean --quiet)
before=$(events)
build "kache, warm (after cargo clean)" "$work/checkout-1" RUSTC_WRAPPER="$kache"
warm=$seconds; warm_outcomes=$(outcomes "$before")
before=$(events)
build "kache, second checkout" "$work/checkout-2" RUSTC_WRAPPER="$kache"
second=$seconds; second_outcomes=$(outcomes "$before")

echo
echo "==> the program built from the cache runs:"
(cd "$work/checkout-1" && "${program[@]}")
echo
ratio() { awk -v a="$1" -v b="$plain" 'BEGIN { printf "%.2f", a / b }'; }
printf '%-34s %8s %10s   %s\n' "build" "time" "vs plain" "units"
printf '%-34s %7ss %10s   %s\n' "plain cargo, cold" "$plain" "1.00" "-"
printf '%-34s %7ss %10s   %s\n' "kache, cold (empty store)" "$cold" "$(ratio "$cold")" "$cold_outcomes"
printf '%-34s %7ss %10s   %s\n' "kache, warm (after cargo clean)" "$warm" "$(ratio "$warm")" "$warm_outcomes"
printf '%-34s %7ss %10s   %s\n' "kache, second checkout" "$second" "$(ratio "$second")" "$second_outcomes"
echo
echo "disk: plain target/ $(size "$work/plain-target");" \
    "kache store $(size "$KACHE_CACHE_DIR"), checkout 1 target/ $(size "$work/checkout-1/target")," \
    "checkout 2 target/ $(size "$work/checkout-2/target");" \
    "all three together $(size "$KACHE_CACHE_DIR" "$work/checkout-1/target" "$work/checkout-2/target")" \
    "(files hardlinked from the store counted once)"
echo "the four builds and this table took $(awk -v a="$demo_start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s"
