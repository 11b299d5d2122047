#!/usr/bin/env bash
# Benchmark (not a test): what signed entries cost a fresh runner.
#
# A real S3 server (Garage) on loopback. Runner A builds the ~90-crate
# project once and pushes it twice: unsigned under one prefix, signed (a key
# from `kache keygen`) under another. Fresh runners B then build the same
# project against each, alternating, in two modes:
#   remote    remote hits on demand only (KACHE_PREFETCH=0): each unit's
#             fetch pays the manifest check and the pack hash on its path
#   prefetch  prefetch by Cargo.lock at build start, then remote hits
# "signed" runners set KACHE_TRUSTED_KEYS, so every entry's signature and
# pack blake3 are checked before it is unpacked. Printed per run: wall time
# over plain cold, units served, and the median wall time of a remote hit
# (the compile's wait on the bucket, download and verification included).
# Usage: bash bench/signing.sh [rounds]   (work files in bench/work-signing)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work-signing"
rounds=${1:-2}
rm -rf "$work"; mkdir -p "$work"

cargo build --quiet --release --locked -p kache --manifest-path "$root/Cargo.toml"
kache="$root/target/release/kache"
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b-a }'; }

eval "$(bash "$root/scripts/garage-server.sh" "$work/garage")"
cleanup() {
    kill "$(cat "$work/garage/garage.pid")" 2>/dev/null || true
    for cache in "$work"/cache-*; do KACHE_CACHE_DIR="$cache" "$kache" daemon stop >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

bash "$root/bench/rust-project.sh" "$work/a"
(cd "$work/a" && cargo generate-lockfile --quiet && cargo fetch --quiet)
export CARGO_INCREMENTAL=0

t0=$(now)
(cd "$work/a" && CARGO_TARGET_DIR="$work/t-plain" cargo build --offline --quiet)
plain=$(elapsed "$t0")
echo "plain cold: ${plain}s"

public=$("$kache" keygen --out "$work/signing.key" | sed -n 's/^public key: //p')
(
    cd "$work/a"
    export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$work/cache-a" KACHE_LOCAL_ONLY=1
    cargo build --offline --quiet
    unset KACHE_LOCAL_ONLY
    KACHE_S3_PREFIX=unsigned "$kache" sync --push | tail -1
    KACHE_S3_PREFIX=signed KACHE_SIGNING_KEY="$work/signing.key" "$kache" sync --push | tail -1
)

# run_b SIGNING MODE ROUND
run_b() {
    local signing=$1 mode=$2 round=$3
    local dir="$work/b-$signing-$mode-$round" cache="$work/cache-$signing-$mode-$round"
    cp -r "$work/a" "$dir"; rm -rf "$dir/target"
    (
        export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$cache" KACHE_REMOTE_READ_ONLY=1
        export KACHE_S3_PREFIX=$signing
        [ "$signing" = signed ] && export KACHE_TRUSTED_KEYS="$public"
        [ "$mode" = remote ] && export KACHE_PREFETCH=0
        "$kache" daemon start >/dev/null
        t0=$(now)
        (cd "$dir" && cargo build --offline --quiet 2>/dev/null)
        wall=$(elapsed "$t0")
        "$kache" daemon stop --drain 0 >/dev/null
        python3 - "$cache" "$signing" "$mode" "$wall" "$plain" <<'PY'
import json, statistics, sys
cache, signing, mode, wall, plain = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
events = [json.loads(l) for l in open(f"{cache}/events.jsonl")]
cacheable = [e for e in events if e["outcome"] in ("hit", "miss", "dup")]
served = sum(1 for e in cacheable if e["outcome"] == "hit")
remote = sorted(e["elapsed_ms"] for e in cacheable if e.get("source") == "remote")
refused = sum(1 for e in events if e["outcome"] == "refused")
median = f"{statistics.median(remote):5.0f} ms" if remote else "    -   "
print(f"{signing:<8} {mode:<8} served {served:>3}/{len(cacheable):<3} refused {refused}  "
      f"remote hits {len(remote):>3}, median {median}  wall {wall:6.2f}s = {wall / plain:.3f} x plain cold")
PY
    )
}

for round in $(seq 1 "$rounds"); do
    for mode in remote prefetch; do
        # Alternate the order each round: neither side always runs second.
        if [ $((round % 2)) = 1 ]; then order="unsigned signed"; else order="signed unsigned"; fi
        for signing in $order; do run_b "$signing" "$mode" "$round"; done
    done
done
