#!/usr/bin/env bash
# Real projects nobody here wrote, built plain and through kache.
#
# For each project (sources copied out of cargo's registry after `cargo
# fetch`, no git): a plain cold build, a cold build through kache, `cargo
# clean`, a warm build through kache. Checks that the kache-built program
# behaves exactly like the plain one (same `--version`, same output on a
# real query) and that the warm build is all hits. Then, on the first
# project: `cargo test` through kache (cold and warm), `cargo build
# --release` (cold and warm) and `cargo doc` (rustdoc passes through).
# Prints a per-project table of cold and warm ratios and warm hit rates.
#
# Usage: bash bench/real-world.sh [ripgrep|fd-find|tokei ...]
#   default: all three; work files in bench/work-real (git-ignored).
# Exits non-zero when a check fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work-real"
rm -rf "$work"; mkdir -p "$work"
cargo build --quiet --release --locked -p kache --manifest-path "$root/Cargo.toml"
kache="$root/target/release/kache"
export CARGO_INCREMENTAL=0

# name version binary "query arguments" (run inside the project's own sources)
declare -A version=([ripgrep]=15.2.0 [fd-find]=10.5.0 [tokei]=13.0.0)
declare -A binary=([ripgrep]=rg [fd-find]=fd [tokei]=tokei)
declare -A query=([ripgrep]="-n --sort path fn crates/core" [fd-find]="-e rs . src" [tokei]="src --sort files")
projects=("$@")
[ ${#projects[@]} -gt 0 ] || projects=(ripgrep fd-find tokei)

now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; return 1; }; awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b-a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a/b }'; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# Fetch every project's exact version into cargo's registry.
mkdir -p "$work/fetch/src"; touch "$work/fetch/src/lib.rs"
{
    printf '[workspace]\n[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n'
    for p in "${projects[@]}"; do printf '%s = "=%s"\n' "$p" "${version[$p]}"; done
} > "$work/fetch/Cargo.toml"
(cd "$work/fetch" && cargo fetch --quiet)
registry=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ | head -1)

# Outcomes of the events logged since line $2 of cache $1: "hits total".
hits_since() {
    python3 - "$1/events.jsonl" "$2" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]
events = [json.loads(l) for l in lines]
# A compile that failed (a build script's feature probe, like anyhow's) is
# never stored, by design: it is not a unit a cache can serve.
cached = [e for e in events if e["outcome"] in ("hit", "miss", "dup")
          and not e.get("reason", "").startswith("rustc exited")]
print(sum(e["outcome"] == "hit" for e in cached), len(cached))
PY
}
lines() { [ -f "$1/events.jsonl" ] && wc -l < "$1/events.jsonl" || echo 0; }

table=()
for p in "${projects[@]}"; do
    src="$work/$p"
    cp -r "$registry/$p-${version[$p]}" "$src"
    # Its own workspace, not ours (the work dir is inside this repository).
    grep -q '^\[workspace\]' "$src/Cargo.toml" || printf '\n[workspace]\n' >> "$src/Cargo.toml"
    locked=(); [ -f "$src/Cargo.lock" ] && locked=(--locked)
    (cd "$src" && cargo fetch --quiet "${locked[@]}")
    bin=${binary[$p]}
    echo "== $p ${version[$p]}"
    plain=$(cd "$src" && CARGO_TARGET_DIR="$work/$p-plain" timed cargo build --offline "${locked[@]}")
    cache="$work/cache-$p"
    export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$cache" KACHE_LOCAL_ONLY=1
    cold=$(cd "$src" && timed cargo build --offline "${locked[@]}")
    (cd "$src" && cargo clean --quiet)
    before=$(lines "$cache")
    warm=$(cd "$src" && timed cargo build --offline "${locked[@]}")
    read -r hits total < <(hits_since "$cache" "$before")
    unset RUSTC_WRAPPER KACHE_CACHE_DIR KACHE_LOCAL_ONLY
    [ "$hits" = "$total" ] || fail "$p: warm build $hits/$total hits"
    a=$("$work/$p-plain/debug/$bin" --version); b=$("$src/target/debug/$bin" --version)
    [ "$a" = "$b" ] || fail "$p: --version differs: '$a' vs '$b'"
    # shellcheck disable=SC2086
    a=$(cd "$src" && "$work/$p-plain/debug/$bin" ${query[$p]} | sort | sha256sum)
    # shellcheck disable=SC2086
    b=$(cd "$src" && "$src/target/debug/$bin" ${query[$p]} | sort | sha256sum)
    [ "$a" = "$b" ] || fail "$p: '$bin ${query[$p]}' prints something else"
    echo "   plain ${plain}s, kache cold ${cold}s, warm ${warm}s; warm $hits/$total hits; same --version and query output"
    table+=("$(printf '%-8s %6ss %6s %6s %9s' "$p" "$plain" "$(ratio "$cold" "$plain")" "$(ratio "$warm" "$plain")" "$hits/$total")")
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
read -r hits total < <(hits_since "$cache" "$before")
[ "$hits" = "$total" ] || fail "$p: warm cargo test $hits/$total hits"
extra+=("cargo test (tests pass): cold ${t1}s, warm ${t2}s, warm $hits/$total hits")
echo "== $p: cargo build --release"
r1=$(cd "$src" && timed cargo build --release --offline "${locked[@]}")
a=$("$src/target/release/${binary[$p]}" --version)
(cd "$src" && cargo clean --quiet)
before=$(lines "$cache")
r2=$(cd "$src" && timed cargo build --release --offline "${locked[@]}")
read -r hits total < <(hits_since "$cache" "$before")
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

printf '\n%-8s %7s %6s %6s %9s\n' project plain cold/p warm/p "warm hits"
printf '%s\n' "${table[@]}"
printf '\n%s:\n' "$p"
printf '  %s\n' "${extra[@]}"
