#!/usr/bin/env bash
# Benchmark (not a test): the edit → rebuild loop of a laptop, plain cargo
# against cargo through kache, side by side in one run, on real projects from
# crates.io whose biggest crate is their own:
#   just     1.59.0  (library crate `just`, ~28k lines; src/lexer.rs is edited)
#   tokei    15.0.0  (library crate `tokei` with its generated language table;
#                     src/language/syntax.rs is edited)
#   ripgrep  15.2.0  (the `rg` binary crate, ~19k lines; crates/core/flags/defs.rs
#                     is edited: a binary, so through kache it passes through)
# Dev profile, incremental on as cargo ships it (CARGO_INCREMENTAL unset), `-j`
# at cargo's default. Each side has its own target directory over one source
# tree; the kache side has its own empty store.
#
# Per project: a warm-up `cargo build` and `cargo check` on both sides, then
# ROUNDS rounds (default 5): add one new function to the edited module, then
# `cargo build` plain and through kache (the order alternates every round),
# then `cargo check` the same way. Printed: each round's times with kache's
# own time in it (a miss's time beyond rustc's, a hit's whole time, from its
# event log), the medians and kache's median / plain's median for build and
# for check. Then, through kache only, `cargo clean` and a warm rebuild (and
# check) with its hit counts, and one more edit on both sides: `cargo clean`
# deleted kache's side's incremental state, so either the warm build compiled
# the crate under work to give rustc its state back (outside CI) or the first
# edit compiles it from scratch, while plain cargo's state is intact.
#
# Usage: bash bench/inner-loop.sh [just] [tokei] [ripgrep]   (default: all)
# ROUNDS=<n> sets the rounds. Work files go to bench/work/inner-loop
# (git-ignored); sources are fetched through crates.io as TESTING.md says.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work/inner-loop"
rounds=${ROUNDS:-5}
rm -rf "$work"; mkdir -p "$work"

cargo build --quiet --release --locked -p kache --manifest-path "$root/Cargo.toml"
# A copy: a release build by someone else mid-run must not swap the binary.
cp "$root/target/release/kache" "$work/kache"
kache="$work/kache"

# Cargo's defaults: incremental as the profile says, no wrapper unless asked.
unset CARGO_INCREMENTAL CARGO_BUILD_INCREMENTAL CARGO_PROFILE_DEV_INCREMENTAL \
    CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER \
    KACHE_CACHE_DIR KACHE_DISABLED RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
export CARGO_TERM_COLOR=never
cargo_home=${CARGO_HOME:-$HOME/.cargo}

now() { date +%s.%N; }
# timed CMD…: runs CMD quietly and prints its wall time in seconds; on
# failure shows the end of its output and stops the benchmark.
timed() {
    local t0 t1 log="$work/last-command.log"
    t0=$(now)
    if ! "$@" >"$log" 2>&1; then
        echo "failed: $*" >&2
        tail -40 "$log" >&2
        exit 1
    fi
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
# The median of the numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# fetch NAME VERSION: the published source of NAME@VERSION, copied to
# $work/NAME as a workspace of its own; prints the copy's path.
fetch() {
    local name=$1 version=$2 probe="$work/fetch-$1" dest="$work/$1" src
    mkdir -p "$probe/src"
    printf '[package]\nname = "fetch-%s"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = "=%s"\n\n[workspace]\n' \
        "$name" "$name" "$version" >"$probe/Cargo.toml"
    : >"$probe/src/lib.rs"
    (cd "$probe" && cargo fetch --quiet 2>/dev/null)
    src=$(find "$cargo_home"/registry/src -mindepth 2 -maxdepth 2 -type d -name "$name-$version" | head -1)
    [ -n "$src" ] || { echo "cannot find $name-$version under $cargo_home/registry/src" >&2; exit 1; }
    cp -r "$src" "$dest"
    grep -q '^\[workspace\]' "$dest/Cargo.toml" || printf '\n[workspace]\n' >>"$dest/Cargo.toml"
    echo "$dest"
}

# add_function FILE N: appends function N (new code every round) to FILE.
add_function() {
    printf '\n#[allow(dead_code)]\nfn kache_inner_loop_%d(x: u64) -> u64 {\n    x.wrapping_mul(%d).rotate_left(%d) ^ %d\n}\n' \
        "$2" "$((2 * $2 + 1))" "$(($2 % 63 + 1))" "$((1000 + $2))" >>"$1"
}

# outcomes FROM: "N hit, M miss, …" of the kache events after line FROM. A
# compile rustc failed is a build script's probe (proc-macro2, thiserror,
# …, compiling a test program to see what the toolchain supports), counted
# apart.
outcomes() {
    tail -n +"$(($1 + 1))" "$cache/events.jsonl" 2>/dev/null \
        | awk 'match($0, /"outcome":"[a-z]*"/) {
                o = substr($0, RSTART + 11, RLENGTH - 12)
                if (o == "miss" && $0 ~ /"reason":"rustc exited/) o = "failed probe"
                n[o]++
            }
            END {
                sep = ""
                for (o in n) { printf "%s%d %s", sep, n[o], o; sep = ", " }
                if (!length(n)) printf "none"
            }'
}
# own_ms FROM: kache's own milliseconds in the calls logged after line FROM:
# a miss's time beyond rustc's, a hit's whole time (summed per build).
own_ms() {
    tail -n +"$(($1 + 1))" "$cache/events.jsonl" 2>/dev/null \
        | sed -n 's/.*"outcome":"\(hit\|miss\)".*"elapsed_ms":\([0-9]*\).*"compile_ms":\([0-9]*\).*/\1 \2 \3/p' \
        | awk '{ t += ($1 == "hit") ? $2 : $2 - $3 } END { print t + 0 }'
}
events_now() { if [ -f "$cache/events.jsonl" ]; then wc -l <"$cache/events.jsonl"; else echo 0; fi; }

plain() { RUSTC_WRAPPER='' CARGO_TARGET_DIR="$t_plain" cargo "$@" --offline $locked; }
cached() {
    RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$cache" CARGO_TARGET_DIR="$t_kache" \
        cargo "$@" --offline $locked
}

summary="$work/summary.txt"
: >"$summary"

# bench NAME VERSION FILE: the whole sequence for one project.
bench() {
    local name=$1 version=$2 file=$3 dir
    dir=$(fetch "$name" "$version")
    cd "$dir"
    locked=""
    [ -f Cargo.lock ] && locked="--locked"
    cargo fetch --quiet $locked
    t_plain="$work/$name-target-plain" t_kache="$work/$name-target-kache" cache="$work/$name-cache"
    echo "== $name $version: editing $file (rounds: $rounds; load average $(cut -d' ' -f1-3 /proc/loadavg))"

    local p k before
    p=$(timed plain build)
    k=$(timed cached build)
    echo "warm-up build: plain ${p}s, kache ${k}s (cold, empty store)"
    p=$(timed plain check)
    k=$(timed cached check)
    echo "warm-up check: plain ${p}s, kache ${k}s"

    local -a build_plain=() build_kache=() check_plain=() check_kache=() build_own=() check_own=()
    local r cmd order own
    for r in $(seq 1 "$rounds"); do
        add_function "$file" "$r"
        for cmd in build check; do
            before=$(events_now)
            if ((r % 2)); then
                order="plain first"
                p=$(timed plain "$cmd")
                k=$(timed cached "$cmd")
            else
                order="kache first"
                k=$(timed cached "$cmd")
                p=$(timed plain "$cmd")
            fi
            own=$(own_ms "$before")
            printf 'round %d %-5s plain %6.2fs  kache %6.2fs  (%s; kache: %s; its own %d ms)\n' "$r" "$cmd" \
                "$p" "$k" "$order" "$(outcomes "$before")" "$own"
            if [ "$cmd" = build ]; then
                build_plain+=("$p") build_kache+=("$k") build_own+=("$own")
            else
                check_plain+=("$p") check_kache+=("$k") check_own+=("$own")
            fi
        done
    done

    local bp bk cp ck bo co
    bp=$(printf '%s\n' "${build_plain[@]}" | median) bk=$(printf '%s\n' "${build_kache[@]}" | median)
    cp=$(printf '%s\n' "${check_plain[@]}" | median) ck=$(printf '%s\n' "${check_kache[@]}" | median)
    bo=$(printf '%s\n' "${build_own[@]}" | median) co=$(printf '%s\n' "${check_own[@]}" | median)

    # What the cache is for: a `cargo clean` and a warm rebuild through kache.
    local wb wc hb hc
    cached clean --quiet
    before=$(events_now)
    wb=$(timed cached build)
    hb=$(outcomes "$before")
    before=$(events_now)
    wc=$(timed cached check)
    hc=$(outcomes "$before")
    echo "after cargo clean (kache): build ${wb}s ($hb), check ${wc}s ($hc)"

    # The first edit after that clean: no incremental state on kache's side.
    local fbp fbk fcp fck
    add_function "$file" "$((rounds + 1))"
    fbp=$(timed plain build)
    fbk=$(timed cached build)
    fcp=$(timed plain check)
    fck=$(timed cached check)
    echo "first edit after cargo clean: build plain ${fbp}s, kache ${fbk}s; check plain ${fcp}s, kache ${fck}s"

    {
        printf '%-8s %-6s %9s %9s %6s %8s\n' "$name" build "$bp" "$bk" "$(ratio "$bk" "$bp")" "$bo"
        printf '%-8s %-6s %9s %9s %6s %8s\n' "$name" check "$cp" "$ck" "$(ratio "$ck" "$cp")" "$co"
        printf '%-8s   after cargo clean, through kache: build %ss (%s); check %ss (%s)\n' \
            "$name" "$wb" "$hb" "$wc" "$hc"
        printf '%-8s   first edit after that clean: build %ss vs plain %ss (%s); check %ss vs plain %ss (%s)\n' \
            "$name" "$fbk" "$fbp" "$(ratio "$fbk" "$fbp")" "$fck" "$fcp" "$(ratio "$fck" "$fcp")"
    } >>"$summary"
    echo
    cd "$root"
}

selected=${*:-just tokei ripgrep}
for project in $selected; do
    case $project in
        just) bench just 1.59.0 src/lexer.rs ;;
        tokei) bench tokei 15.0.0 src/language/syntax.rs ;;
        ripgrep) bench ripgrep 15.2.0 crates/core/flags/defs.rs ;;
        *) echo "unknown project $project (just, tokei, ripgrep)" >&2; exit 2 ;;
    esac
done

echo "== the edit → rebuild loop: medians of $rounds rounds (goal: kache / plain <= 1.05; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-8s %-6s %9s %9s %6s %8s\n' project loop "plain s" "kache s" ratio "own ms"
cat "$summary"
