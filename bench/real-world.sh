#!/usr/bin/env bash
# Real projects nobody here wrote, built plain and through kache.
#
# For each project (sources copied out of cargo's registry after `cargo
# fetch`, no git; or written by bench/macro-projects.sh): a plain cold
# build, a cold build through kache, `cargo clean`, a warm build through
# kache. Checks that the kache-built program behaves exactly like the plain
# one (same `--version`, same output on a real query) and that the warm
# build is all hits. Then `cargo clean` and a warm build under
# KACHE_VERIFY=1 (every hit also compiles and is compared byte for byte: a
# wrong hit fails the script), and a second checkout (a copy of the sources
# at another path, same cache) whose warm build reports its hits, prints
# what the plain program prints and holds no path of the first checkout.
# For the macro projects (proc-macros reading files and variables): the
# edit sequence — a file added to the embedded folder / a new migration,
# $EMBED_ASSETS flipped and back — each followed by `cargo clean`, a build
# through kache and a plain rebuild of the package: the programs print the
# same. Then, on the first project: `cargo test` through kache (cold and
# warm), `cargo build --release` (cold and warm) and `cargo doc` (rustdoc
# passes through). Prints a per-project table of cold and warm ratios, warm
# hit rates, verified and wrong hits, and the second checkout's hits.
#
# Usage: bash bench/real-world.sh [ripgrep|fd-find|tokei|embed-assets|sqlx-migrate ...]
#   default: all five; work files in $WORK (default bench/work-real,
#   git-ignored; emptied first).
# Exits non-zero when a check fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${WORK:-$root/bench/work-real}"
rm -rf "$work"; mkdir -p "$work"
cargo build --quiet --release --locked -p kache --manifest-path "$root/Cargo.toml"
kache="$root/target/release/kache"
export CARGO_INCREMENTAL=0
# embed-assets' rust-embed folder (read by its macro, declared by its build script).
export EMBED_ASSETS=assets

# name version binary "query arguments" (run inside the project's own sources)
declare -A version=([ripgrep]=15.2.0 [fd-find]=10.5.0 [tokei]=13.0.0 [embed-assets]=local [sqlx-migrate]=local)
declare -A binary=([ripgrep]=rg [fd-find]=fd [tokei]=tokei [embed-assets]=embed-assets [sqlx-migrate]=sqlx-migrate)
declare -A query=([ripgrep]="-n --sort path fn crates/core" [fd-find]="-e rs . src" [tokei]="src --sort files"
                  [embed-assets]="" [sqlx-migrate]="")
projects=("$@")
[ ${#projects[@]} -gt 0 ] || projects=(ripgrep fd-find tokei embed-assets sqlx-migrate)
for p in "${projects[@]}"; do [ -n "${version[$p]:-}" ] || { echo "unknown project $p" >&2; exit 2; }; done
is_local() { [ "${version[$1]}" = local ]; }

now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b-a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a/b }'; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# Fetch every registry project's exact version into cargo's registry.
mkdir -p "$work/fetch/src"; touch "$work/fetch/src/lib.rs"
{
    printf '[workspace]\n[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n'
    for p in "${projects[@]}"; do is_local "$p" || printf '%s = "=%s"\n' "$p" "${version[$p]}"; done
} > "$work/fetch/Cargo.toml"
(cd "$work/fetch" && cargo fetch --quiet)
registry=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ | head -1)

# Outcomes of the events logged since line $2 of cache $1: "hits total
# missed", missed being the crates that did not hit (comma-separated, or -).
hits_since() {
    python3 - "$1/events.jsonl" "$2" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]
events = [json.loads(l) for l in lines]
# A compile that failed (a build script's feature probe, like anyhow's) is
# never stored, by design: it is not a unit a cache can serve.
cached = [e for e in events if e["outcome"] in ("hit", "miss", "dup")
          and not e.get("reason", "").startswith("rustc exited")]
missed = sorted({e["crate_name"] for e in cached if e["outcome"] != "hit"})
print(sum(e["outcome"] == "hit" for e in cached), len(cached), ",".join(missed) or "-")
PY
}
lines() { [ -f "$1/events.jsonl" ] && wc -l < "$1/events.jsonl" || echo 0; }
# `kache report --format json` over the events logged since line $2 of
# cache $1: "hits verified_hits wrong_hits c_hits", c_hits being the hits of
# C-family units (`crate:file.c`), which KACHE_VERIFY does not compile again.
report_since() {
    local only="$work/report"
    rm -rf "$only"; mkdir -p "$only"
    tail -n +"$(($2 + 1))" "$1/events.jsonl" > "$only/events.jsonl"
    local c_hits
    # C units (`<package>:<file>`) are not re-verified; build-script runs
    # (`<package>:build-script-run`) are: they execute and are compared.
    c_hits=$(grep '"outcome":"hit"' "$only/events.jsonl" | grep '"crate_name":"[^"]*:[^"]*"' \
        | grep -vc ':build-script-run"' || true)
    KACHE_CACHE_DIR="$only" "$kache" report --format json \
        | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["hits"], r["verified_hits"], r["wrong_hits"], sys.argv[1])' "$c_hits"
}
# The wrong-hit events logged since line $2 of cache $1, one per line.
wrong_hits_since() {
    tail -n +"$(($2 + 1))" "$1/events.jsonl" | { grep '"outcome":"wrong-hit"' || true; }
}
# What the program $1 prints, run in directory $2: `--version` and the
# project's query (sorted) for a registry project, its whole output for a
# macro project.
prints() {
    # shellcheck disable=SC2086
    if is_local "$p"; then (cd "$2" && "$1"); else "$1" --version; (cd "$2" && "$1" ${query[$p]}) | sort | sha256sum; fi
}
# same LABEL PLAIN_BIN KACHE_BIN DIR: both programs print the same in DIR.
same() {
    local a b
    a=$(prints "$2" "$4") || fail "$p: $1: the plain program failed"
    b=$(prints "$3" "$4") || fail "$p: $1: the kache-built program failed"
    [ "$a" = "$b" ] || { diff <(echo "$a") <(echo "$b") >&2 || true; fail "$p: $1: the kache-built program prints something else (above: < plain, > kache)"; }
}
# kache_build CACHE DIR [ENV...]: a build through kache in DIR; prints the
# seconds it took.
kache_build() {
    local cache=$1 dir=$2; shift 2
    (cd "$dir" && export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$cache" KACHE_LOCAL_ONLY=1 "$@" \
        && timed cargo build --offline "${locked[@]}")
}

table=()
for p in "${projects[@]}"; do
    src="$work/$p"
    if is_local "$p"; then
        bash "$root/bench/macro-projects.sh" write "$p" "$src"
        (cd "$src" && cargo generate-lockfile --quiet)
    else
        cp -r "$registry/$p-${version[$p]}" "$src"
        # Its own workspace, not ours (the work dir may be inside this repository).
        grep -q '^\[workspace\]' "$src/Cargo.toml" || printf '\n[workspace]\n' >> "$src/Cargo.toml"
    fi
    locked=(); [ -f "$src/Cargo.lock" ] && locked=(--locked)
    (cd "$src" && cargo fetch --quiet "${locked[@]}")
    crates=$(cd "$src" && cargo tree --offline --prefix none --edges normal,build | sort -u | wc -l)
    bin=${binary[$p]}
    plain_bin="$work/$p-plain/debug/$bin"
    echo "== $p ${version[$p]}: $crates crates (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    plain=$(cd "$src" && CARGO_TARGET_DIR="$work/$p-plain" timed cargo build --offline "${locked[@]}")
    cache="$work/cache-$p"
    cold=$(kache_build "$cache" "$src")
    (cd "$src" && cargo clean --quiet)
    before=$(lines "$cache")
    warm=$(kache_build "$cache" "$src")
    read -r hits total missed < <(hits_since "$cache" "$before")
    [ "$hits" = "$total" ] || fail "$p: warm build $hits/$total hits (missed: $missed)"
    same "warm build" "$plain_bin" "$src/target/debug/$bin" "$src"
    echo "   plain ${plain}s, kache cold ${cold}s, warm ${warm}s; warm $hits/$total hits; same output"

    # Every hit compiled again and compared byte for byte.
    (cd "$src" && cargo clean --quiet)
    before=$(lines "$cache")
    verify=$(kache_build "$cache" "$src" KACHE_VERIFY=1)
    read -r vhits verified wrong c_hits < <(report_since "$cache" "$before")
    if [ "$wrong" != 0 ]; then
        wrong_hits_since "$cache" "$before" >&2
        fail "$p: KACHE_VERIFY found $wrong wrong hits (events above)"
    fi
    [ "$verified" = "$((vhits - c_hits))" ] || fail "$p: KACHE_VERIFY verified $verified of $vhits hits ($c_hits of C units)"
    same "warm build under KACHE_VERIFY" "$plain_bin" "$src/target/debug/$bin" "$src"
    echo "   KACHE_VERIFY=1 warm build ${verify}s: $verified verified hits, $wrong wrong hits$([ "$c_hits" = 0 ] || echo ", $c_hits C hits not verified (KACHE_VERIFY compiles rustc hits only)")"

    # A second checkout at another path, same cache.
    second="$work/second/$p"
    mkdir -p "$work/second"; cp -r "$src" "$second"; rm -rf "$second/target"
    before=$(lines "$cache")
    t2=$(kache_build "$cache" "$second")
    read -r shits stotal smissed < <(hits_since "$cache" "$before")
    if grep -qaF "$src/" "$second/target/debug/$bin"; then
        fail "$p: the second checkout's program holds the first checkout's path $src/"
    fi
    if is_local "$p"; then
        # Its program must not read the first checkout's files either.
        a=$(prints "$plain_bin" "$second")
        mv "$src" "$src.away"
        b=$(prints "$second/target/debug/$bin" "$second") || true
        mv "$src.away" "$src"
        [ "$a" = "$b" ] || { diff <(echo "$a") <(echo "$b") >&2 || true; fail "$p: the second checkout's program reads the first checkout (above: < plain, > kache)"; }
    fi
    same "second checkout" "$plain_bin" "$second/target/debug/$bin" "$second"
    echo "   second checkout ${t2}s: $shits/$stotal hits (missed: $smissed); same output, no path of the first checkout"

    if is_local "$p"; then
        # The edit sequence: each step, then `cargo clean`, a build through
        # kache and a plain rebuild of the package; both print the same.
        edit_step() {
            local label=$1; shift
            (cd "$src" && cargo clean --quiet)
            before=$(lines "$cache")
            local t; t=$(kache_build "$cache" "$src" "$@")
            read -r ehits etotal emissed < <(hits_since "$cache" "$before")
            (cd "$src" && env CARGO_TARGET_DIR="$work/$p-plain" "$@" cargo clean --quiet -p "$p")
            (cd "$src" && env CARGO_TARGET_DIR="$work/$p-plain" "$@" cargo build --quiet --offline "${locked[@]}")
            (export "$@"; same "$label" "$plain_bin" "$src/target/debug/$bin" "$src")
            echo "   $label: kache ${t}s, $ehits/$etotal hits (missed: $emissed); same output"
        }
        bash "$root/bench/macro-projects.sh" edit "$p" "$src"
        edit_step "a file added" EMBED_ASSETS=assets
        case $p in
            embed-assets)
                (cd "$src" && "$src/target/debug/$bin") | grep -q 'c.txt 12 added later' || fail "$p: the added file is not embedded"
                edit_step "EMBED_ASSETS=assets-alt" EMBED_ASSETS=assets-alt
                (cd "$src" && EMBED_ASSETS=assets-alt "$src/target/debug/$bin") | grep -q '^rust-embed alt.txt' \
                    || fail "$p: EMBED_ASSETS=assets-alt is not embedded"
                edit_step "EMBED_ASSETS back to assets" EMBED_ASSETS=assets
                ;;
            sqlx-migrate)
                (cd "$src" && "$src/target/debug/$bin") | grep -q '^table tags' || fail "$p: the new migration is not applied"
                ;;
        esac
    fi
    table+=("$(printf '%-13s %6s %7ss %6s %6s %9s %8s %5s %9s' "$p" "$crates" "$plain" "$(ratio "$cold" "$plain")" \
        "$(ratio "$warm" "$plain")" "$hits/$total" "$verified$([ "$c_hits" = 0 ] || echo "+${c_hits}C")" "$wrong" "$shits/$stotal")")
done

# More cargo commands on the first project.
p=${projects[0]}; src="$work/$p"; cache="$work/cache-$p"
locked=(); [ -f "$src/Cargo.lock" ] && locked=(--locked)
export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$cache" KACHE_LOCAL_ONLY=1
extra=()
echo "== $p: cargo test"
t1=$(cd "$src" && timed cargo test --offline "${locked[@]}")
(cd "$src" && cargo clean --quiet)
before=$(lines "$cache")
t2=$(cd "$src" && timed cargo test --offline "${locked[@]}")
read -r hits total _ < <(hits_since "$cache" "$before")
[ "$hits" = "$total" ] || fail "$p: warm cargo test $hits/$total hits"
extra+=("cargo test (tests pass): cold ${t1}s, warm ${t2}s, warm $hits/$total hits")
echo "== $p: cargo build --release"
r1=$(cd "$src" && timed cargo build --release --offline "${locked[@]}")
a=$("$src/target/release/${binary[$p]}" --version)
(cd "$src" && cargo clean --quiet)
before=$(lines "$cache")
r2=$(cd "$src" && timed cargo build --release --offline "${locked[@]}")
read -r hits total _ < <(hits_since "$cache" "$before")
[ "$hits" = "$total" ] || fail "$p: warm release build $hits/$total hits"
b=$("$src/target/release/${binary[$p]}" --version)
[ "$a" = "$b" ] || fail "$p: release --version differs after a warm build"
extra+=("cargo build --release: cold ${r1}s, warm ${r2}s, warm $hits/$total hits")
echo "== $p: cargo doc"
before=$(lines "$cache")
d=$(cd "$src" && timed cargo doc --no-deps --offline "${locked[@]}")
[ -n "$(find "$src/target/doc" -name index.html | head -1)" ] || fail "$p: cargo doc wrote no index.html"
extra+=("cargo doc --no-deps: ${d}s, docs written")
unset RUSTC_WRAPPER KACHE_CACHE_DIR KACHE_LOCAL_ONLY

printf '\n%-13s %6s %8s %6s %6s %9s %8s %5s %9s\n' project crates plain cold/p warm/p "warm hits" verified wrong "2nd hits"
printf '%s\n' "${table[@]}"
echo "(verified: rustc hits KACHE_VERIFY compiled again and found equal; +NC: C-family hits it does not compile again)"
printf '\n%s:\n' "$p"
printf '  %s\n' "${extra[@]}"
