#!/usr/bin/env bash
# Benchmark (not a test): what caching build-script runs
# (KACHE_CACHE_BUILD_SCRIPTS=1) saves on C-heavy projects, side by side in
# one run. For each project:
#   plain cold:       `cargo build` from an empty target/, no wrapper
#   kache, flag off:  warm after `cargo clean` (every compile hits, every
#                     build script executes, its C compiles through `kache cc`)
#   kache, flag on:   warm after `cargo clean` (build-script runs replayed)
# each as seconds and over plain cold, plus how many runs were replayed.
#   csys:   rusqlite (bundled sqlite3.c) + zstd (C and assembly) + blake3
#           (tests/fixtures/csys)
#   zlib-ring: libz-sys (`static`: bundled zlib) + ring (C and assembly),
#           both from crates.io
# Usage: bash bench/build-scripts.sh [csys] [zlib-ring]   (default: both)
#   ROUNDS=<n>  warm builds per side, alternating, means reported (default 2)
#   WORK=<dir>  scratch directory (default ${TMPDIR:-/tmp}/kache-bench-build-scripts)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${WORK:-${TMPDIR:-/tmp}/kache-bench-build-scripts}"
rm -rf "$work"; mkdir -p "$work"

cargo build --quiet --release --locked -p kache --manifest-path "$root/Cargo.toml"
# A copy: others rebuilding target/release while this runs change nothing.
cp "$root/target/release/kache" "$work/kache"
kache="$work/kache"

now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>&1; awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b-a }'; }
mean() { awk '{ t += $1 } END { if (NR) printf "%.2f", t / NR; else print "n/a" }'; }
# Build-script run events with outcome $2 logged after line $1 of the event log.
run_events() {
    tail -n +"$(($1 + 1))" "$KACHE_CACHE_DIR/events.jsonl" \
        | grep ':build-script-run"' | { grep -c "\"outcome\":\"$2\"" || true; }
}

export CARGO_INCREMENTAL=0
unset RUSTC_WRAPPER KACHE_CACHE_BUILD_SCRIPTS

# bench_project NAME DIR
bench_project() {
    local name=$1 dir=$2
    cd "$dir"
    [ -f Cargo.lock ] || cargo generate-lockfile --offline --quiet 2>/dev/null \
        || cargo generate-lockfile --quiet
    cargo fetch --quiet
    echo "== $name"
    rm -rf "$work/t-plain-$name" "$dir/target"
    local plain; plain=$(CARGO_TARGET_DIR="$work/t-plain-$name" timed cargo build --offline)
    echo "plain cold: ${plain}s"
    export KACHE_CACHE_DIR="$work/cache-$name"
    rm -rf "$KACHE_CACHE_DIR"
    # Fill the store: compiles (flag off), then the runs (flag on).
    RUSTC_WRAPPER="$kache" cargo build --offline --quiet
    cargo clean --quiet
    local scripts
    scripts=$(wc -l < "$KACHE_CACHE_DIR/events.jsonl")
    RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=1 cargo build --offline --quiet
    scripts=$(run_events "$scripts" miss)
    local off_times="" on_times="" replayed=0 before t
    for round in $(seq 1 "${ROUNDS:-2}"); do
        cargo clean --quiet
        t=$(RUSTC_WRAPPER="$kache" timed cargo build --offline)
        off_times="$off_times $t"
        cargo clean --quiet
        before=$(wc -l < "$KACHE_CACHE_DIR/events.jsonl")
        t=$(RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=1 timed cargo build --offline)
        on_times="$on_times $t"
        replayed=$(run_events "$before" hit)
        echo "round $round: warm flag off ${off_times##* }s, warm flag on ${t}s ($replayed runs replayed)"
    done
    local off on
    off=$(echo "$off_times" | tr ' ' '\n' | grep . | mean)
    on=$(echo "$on_times" | tr ' ' '\n' | grep . | mean)
    awk -v p="$plain" -v off="$off" -v on="$on" -v n="$name" -v r="$replayed" -v s="$scripts" 'BEGIN {
        printf "\n[%s] (%d build-script runs, %d replayed with the flag on)\n", n, s, r
        printf "%-40s %7.2fs  1.00\n", "plain cold:", p
        printf "%-40s %7.2fs  %4.2f\n", "kache warm after clean, flag off:", off, off / p
        printf "%-40s %7.2fs  %4.2f\n\n", "kache warm after clean, flag on:", on, on / p
    }'
    cd "$root"
}

selected=${*:-csys zlib-ring}
for project in $selected; do
    case "$project" in
        csys)
            mkdir -p "$work/csys"
            cp -r "$root/tests/fixtures/csys/." "$work/csys/"
            bench_project csys "$work/csys"
            ;;
        zlib-ring)
            mkdir -p "$work/zlib-ring/src"
            cat > "$work/zlib-ring/Cargo.toml" <<'EOF'
[package]
name = "zlib-ring"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
libz-sys = { version = "1.1", features = ["static"] }
ring = "0.17"

[workspace]
EOF
            cat > "$work/zlib-ring/src/main.rs" <<'EOF'
fn main() {
    let data = b"hello hello hello hello";
    let crc = unsafe { libz_sys::crc32(0, data.as_ptr(), data.len() as _) };
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    println!("crc32={crc:08x} sha256={:?}", digest);
}
EOF
            bench_project zlib-ring "$work/zlib-ring"
            ;;
        *) echo "unknown project $project (csys, zlib-ring)" >&2; exit 2 ;;
    esac
done
