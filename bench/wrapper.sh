#!/usr/bin/env bash
# Benchmark (not a test): real projects from crates.io, each measured side by
# side in one run: cold-with-kache / cold-plain, warm-after-clean /
# cold-plain, median wrapper time per hit; for the first, the extra disk a
# second checkout's warm build costs relative to its target/.
#   rust:   a 60+ crate project (axum + tokio + serde + clap + tracing)
#   c-heavy: rusqlite (bundled sqlite3.c) + zstd (C and assembly) + blake3
#            (tests/fixtures/csys), whose C goes through `kache cc …`
#   install: `cargo install --locked ripgrep` (INSTALL_TOOL) plain, then
#            through kache into two roots: second / first
#   fresh-runner: the rust project built into cache A and pushed to a real
#            S3 server (Garage on loopback); cache B empty: `kache sync
#            --pull` + build, over plain cold, with bytes moved
#            (needs the rust project first; run `rust fresh-runner`)
#   daemon:  the same warm bucket, a fresh cache, no sync: the build goes
#            straight through the daemon (remote and prefetch hits), over
#            plain cold; then the median local hit with the daemon running
#            (needs the rust project first)
# Usage: bash bench/wrapper.sh [rust] [c-heavy] [install] [fresh-runner] [daemon]
# (default: all;
# work files go to bench/work, git-ignored)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work"
rm -rf "$work"; mkdir -p "$work"

cargo build --quiet --release --locked -p kache --manifest-path "$root/Cargo.toml"
kache="$root/target/release/kache"

bash "$root/bench/rust-project.sh" "$work/app"
now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>&1; awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b-a }'; }
# The median of the numbers on stdin, or n/a.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'; }
# elapsed_ms of the hit events after line $1 of the event log matching $2.
hit_times() {
    tail -n +"$(($1 + 1))" "$KACHE_CACHE_DIR/events.jsonl" | { grep '"outcome":"hit"' || true; } \
        | { grep -E "$2" || true; } | sed 's/.*"elapsed_ms":\([0-9]*\).*/\1/'
}

export CARGO_INCREMENTAL=0
# bench_project NAME DIR: cold builds alternate plain and kache for ROUNDS
# rounds (default 2), each from an empty target/ and, for kache, an empty
# store; the ratio uses the mean of each side, so one noisy build does not
# decide it. Then `cargo clean` and a warm build from the store.
bench_project() {
    local name=$1 dir=$2
    cd "$dir"
    [ -f Cargo.lock ] || cargo generate-lockfile --quiet
    cargo fetch --quiet
    local crates; crates=$(cargo tree --prefix none --edges normal,build | sort -u | wc -l)
    echo "== $name: $crates crates"
    local rounds=${ROUNDS:-2} plain_total=0 cold_total=0 plain cold
    for round in $(seq 1 "$rounds"); do
        rm -rf "$work/t-plain-$name" "$work/cache-$name" "$dir/target"
        plain=$(CARGO_TARGET_DIR="$work/t-plain-$name" timed cargo build --offline)
        cold=$(KACHE_CACHE_DIR="$work/cache-$name" RUSTC_WRAPPER="$kache" timed cargo build --offline)
        echo "round $round: cold plain ${plain}s, cold with kache ${cold}s"
        plain_total=$(awk -v a="$plain_total" -v b="$plain" 'BEGIN { print a + b }')
        cold_total=$(awk -v a="$cold_total" -v b="$cold" 'BEGIN { print a + b }')
    done
    plain=$(awk -v t="$plain_total" -v n="$rounds" 'BEGIN { printf "%.2f", t / n }')
    cold=$(awk -v t="$cold_total" -v n="$rounds" 'BEGIN { printf "%.2f", t / n }')
    export KACHE_CACHE_DIR="$work/cache-$name" RUSTC_WRAPPER="$kache"
    cargo clean --quiet
    local before warm
    before=$(wc -l < "$KACHE_CACHE_DIR/events.jsonl")
    warm=$(timed cargo build --offline)
    echo "warm after cargo clean:  ${warm}s"
    local rust_median c_median hits c_hits run_median runs
    # C units are `<package>:<file>`; build-script runs `<package>:build-script-run`.
    local c_unit='"crate_name":"[^"]*:([^b"][^"]*|b[^u][^"]*)",' run_unit='"crate_name":"[^"]*:build-script-run",'
    rust_median=$(hit_times "$before" '"crate_name":"[^":]*",' | median)
    c_median=$(hit_times "$before" "$c_unit" | median)
    run_median=$(hit_times "$before" "$run_unit" | median)
    hits=$(hit_times "$before" '"crate_name":"[^":]*",' | wc -l)
    c_hits=$(hit_times "$before" "$c_unit" | wc -l)
    runs=$(hit_times "$before" "$run_unit" | wc -l)
    awk -v plain="$plain" -v cold="$cold" -v warm="$warm" -v rm="$rust_median" -v hits="$hits" \
        -v cm="$c_median" -v chits="$c_hits" -v bm="$run_median" -v runs="$runs" -v name="$name" 'BEGIN {
        printf "\n[%s]\n", name
        printf "%-44s %6.2f  (goal <= 1.05; means of the rounds)\n", "cold-with-kache / cold-plain:", cold / plain
        printf "%-44s %6.2f  (goal <= 0.10 C-heavy, 0.25 Rust)\n", "warm-after-clean / cold-plain:", warm / plain
        printf "%-44s %6s ms over %d hits (goal <= 10)\n", "median wrapper time per rustc hit:", rm, hits
        if (chits > 0) printf "%-44s %6s ms over %d hits (goal <= 5)\n", "median wrapper time per C hit:", cm, chits
        if (runs > 0) printf "%-44s %6s ms over %d runs\n", "median time per replayed build-script run:", bm, runs
    }'
    unset KACHE_CACHE_DIR RUSTC_WRAPPER
    eval "plain_${name//-/_}=$plain"
}

# The extra disk a second checkout of the rust project costs.
bench_disk() {
    export KACHE_CACHE_DIR="$work/cache-rust" RUSTC_WRAPPER="$kache"
    local before after second one
    before=$(du -sbc "$KACHE_CACHE_DIR" "$work/app/target" | tail -1 | cut -f1)
    (cd "$work/app2" && cargo build --offline >/dev/null 2>&1)
    after=$(du -sbc "$KACHE_CACHE_DIR" "$work/app/target" "$work/app2/target" | tail -1 | cut -f1)
    second=$(du -sb "$work/app2/target" | cut -f1)
    one=$(du -sb "$work/t-plain-rust" | cut -f1)
    awk -v extra="$((after - before))" -v second="$second" -v total="$after" -v one="$one" 'BEGIN {
        printf "%-44s %6.1f%% (goal <= 10%%)\n", "second checkout extra disk / its target/:", 100 * extra / second
        printf "%-44s %6.2fx (goal <= 1.25)\n", "store + two targets / one plain target/:", total / one
    }'
    unset KACHE_CACHE_DIR RUSTC_WRAPPER
}

# `cargo install` of a real tool twice into two roots, as CI jobs do on a
# fresh runner: cargo builds in a new temporary directory each time.
bench_install() {
    local tool=${INSTALL_TOOL:-ripgrep} plain first second
    echo "== install: cargo install --locked $tool"
    plain=$(timed cargo install --locked --root "$work/r-plain" "$tool")
    export KACHE_CACHE_DIR="$work/cache-install" RUSTC_WRAPPER="$kache"
    first=$(timed cargo install --locked --root "$work/r1" "$tool")
    second=$(timed cargo install --locked --root "$work/r2" "$tool")
    echo "plain ${plain}s, first through kache ${first}s, second ${second}s"
    awk -v plain="$plain" -v first="$first" -v second="$second" 'BEGIN {
        printf "\n[install]\n"
        printf "%-44s %6.2f\n", "first install with kache / plain:", first / plain
        printf "%-44s %6.2f  (goal <= 0.35)\n", "second install / first install:", second / first
    }'
    unset KACHE_CACHE_DIR RUSTC_WRAPPER
}

# A fresh runner: the bucket is warm (pushed from cache A), cache B is empty.
bench_fresh_runner() {
    [ -d "$work/cache-rust" ] || { echo "fresh-runner needs the rust project first" >&2; exit 2; }
    echo "== fresh-runner: sync --pull + build from a warm bucket"
    eval "$(bash "$root/scripts/garage-server.sh" "$work/garage")"
    trap 'kill "$(cat "$work/garage/garage.pid")" 2>/dev/null || true' EXIT
    (cd "$work/app" && KACHE_CACHE_DIR="$work/cache-rust" "$kache" sync --push --all | tail -2)
    export KACHE_CACHE_DIR="$work/cache-fresh" RUSTC_WRAPPER="$kache"
    rm -rf "$KACHE_CACHE_DIR"
    cd "$work/app" && cargo clean --quiet
    local t0 pull_out build total plain
    t0=$(now)
    pull_out=$("$kache" sync --pull)
    awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "sync --pull: %.2fs\n", b-a }'
    echo "$pull_out" | tail -2
    build=$(timed cargo build --offline)
    total=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b-a }')
    plain=$(awk -v t="$plain_rust" 'BEGIN { print t }')
    echo "build after pull: ${build}s; pull + build: ${total}s"
    "$kache" daemon stop >/dev/null 2>&1 || true
    awk -v total="$total" -v plain="$plain" 'BEGIN {
        printf "\n[fresh-runner]\n"
        printf "%-44s %6.2f  (goal <= 0.15)\n", "sync --pull + build / plain cold:", total / plain
    }'
    unset KACHE_CACHE_DIR RUSTC_WRAPPER
}

# A fresh cache with a warm bucket, through the daemon only.
bench_daemon() {
    [ -d "$work/cache-rust" ] || { echo "daemon needs the rust project first" >&2; exit 2; }
    echo "== daemon: a fresh cache builds from a warm bucket through the daemon"
    if [ ! -f "$work/garage/garage.pid" ] || ! kill -0 "$(cat "$work/garage/garage.pid")" 2>/dev/null; then
        eval "$(bash "$root/scripts/garage-server.sh" "$work/garage")"
        trap 'kill "$(cat "$work/garage/garage.pid")" 2>/dev/null || true' EXIT
        (cd "$work/app" && KACHE_CACHE_DIR="$work/cache-rust" "$kache" sync --push --all | tail -2)
    fi
    export KACHE_CACHE_DIR="$work/cache-daemon" RUSTC_WRAPPER="$kache"
    rm -rf "$KACHE_CACHE_DIR"
    "$kache" daemon start >/dev/null
    cd "$work/app" && cargo clean --quiet
    local before build sources warm median
    before=0
    build=$(timed cargo build --offline)
    sources=$(grep '"outcome":"hit"' "$KACHE_CACHE_DIR/events.jsonl" | sed 's/.*"source":"\([a-z]*\)".*/\1/' | sort | uniq -c | tr '\n' ' ')
    echo "build through the daemon: ${build}s; hits by source: $sources"
    cargo clean --quiet
    before=$(wc -l < "$KACHE_CACHE_DIR/events.jsonl")
    warm=$(timed cargo build --offline)
    median=$(hit_times "$before" '"crate_name":"[^":]*",' | median)
    "$kache" daemon stop >/dev/null
    awk -v build="$build" -v plain="$plain_rust" -v median="$median" -v warm="$warm" 'BEGIN {
        printf "\n[daemon]\n"
        printf "%-44s %6.2f  (goal <= 0.20)\n", "fresh cache through the daemon / plain cold:", build / plain
        printf "%-44s %6s ms (goal <= 5; warm build %ss)\n", "median local hit with the daemon running:", median, warm
    }'
    unset KACHE_CACHE_DIR RUSTC_WRAPPER
}

selected=${*:-rust c-heavy install fresh-runner daemon}
for project in $selected; do
    case $project in
        rust)
            (cd "$work/app" && cargo generate-lockfile --quiet)
            cp -r "$work/app" "$work/app2"
            bench_project rust "$work/app"
            bench_disk
            ;;
        c-heavy)
            mkdir -p "$work/csys"
            cp -r "$root/tests/fixtures/csys/." "$work/csys/"
            bench_project c-heavy "$work/csys"
            ;;
        install) bench_install ;;
        fresh-runner) bench_fresh_runner ;;
        daemon) bench_daemon ;;
        *) echo "unknown project $project (rust, c-heavy, install, fresh-runner, daemon)" >&2; exit 2 ;;
    esac
done
