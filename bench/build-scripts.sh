#!/usr/bin/env bash
# Benchmark (not a test): what caching build-script runs
# (KACHE_CACHE_BUILD_SCRIPTS=1) saves on C-heavy projects, side by side in
# one run. For each project:
#   plain cold:       `cargo build` from an empty target/, no wrapper
#   kache, flag off:  warm after `cargo clean`, KACHE_CACHE_BUILD_SCRIPTS=0
#                     (every compile hits, every build script executes,
#                     its C compiles through `kache cc`)
#   kache, flag on:   warm after `cargo clean`, KACHE_CACHE_BUILD_SCRIPTS=1
#                     (build-script runs replayed)
# each as seconds and over plain cold, plus how many runs were replayed.
#   csys:   rusqlite (bundled sqlite3.c) + zstd (C and assembly) + blake3
#           (tests/fixtures/csys)
#   zlib-ring: libz-sys (`static`: bundled zlib) + ring (C and assembly),
#           both from crates.io
#   bat:    bat 0.25.0 from crates.io with its own Cargo.lock (libgit2 and
#           oniguruma built from C by their -sys crates' build scripts)
#   bindgen: a small crate whose build script runs bindgen (libclang, from
#           Debian's libclang-dev, installed here when missing) on a header
#           and compiles a C file with cc; the program's output must be the
#           same built plain and by kache, and one extra warm build per side
#           under strace counts opens of libclang: none with the flag on
# Usage: bash bench/build-scripts.sh [csys] [zlib-ring] [bat] [bindgen]
#   (default: csys zlib-ring; bat takes minutes per build on 2 cores)
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

# Runs "$@" with its output in a log, shown only when it fails.
quiet() {
    local log="$work/quiet.log"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "failed: $*" >&2
        exit 1
    fi
}

# How many times the strace log $1 shows the shared library $2 opened
# (or tried: a miss counts too), any version of it.
opens() { grep -cE "/$2(-[0-9.]+)?\.so" "$1" || true; }

# bench_project NAME DIR [BIN [LIB]]
#   BIN: a binary of the project whose output, built plain and by kache
#        (flag on, warm), must be the same
#   LIB: a shared library the build scripts load (its name without .so);
#        one more warm build per side runs under strace, and the flag-on one
#        must never open it
bench_project() {
    local name=$1 dir=$2 bin=${3:-} lib=${4:-}
    cd "$dir"
    [ -f Cargo.lock ] || cargo generate-lockfile --offline --quiet 2>/dev/null \
        || cargo generate-lockfile --quiet
    cargo fetch --quiet
    echo "== $name"
    rm -rf "$work/t-plain-$name" "$dir/target"
    local plain; plain=$(CARGO_TARGET_DIR="$work/t-plain-$name" timed cargo build --offline)
    echo "plain cold: ${plain}s"
    local plain_out=""
    [ -z "$bin" ] || plain_out=$("$work/t-plain-$name/debug/$bin")
    export KACHE_CACHE_DIR="$work/cache-$name"
    rm -rf "$KACHE_CACHE_DIR"
    # Fill the store: compiles (flag off), then the runs (flag on).
    RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=0 quiet cargo build --offline
    cargo clean --quiet
    local scripts
    scripts=$(wc -l < "$KACHE_CACHE_DIR/events.jsonl")
    RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=1 quiet cargo build --offline
    scripts=$(run_events "$scripts" miss)
    local off_times="" on_times="" replayed=0 before t
    for round in $(seq 1 "${ROUNDS:-2}"); do
        cargo clean --quiet
        t=$(RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=0 timed cargo build --offline)
        off_times="$off_times $t"
        cargo clean --quiet
        before=$(wc -l < "$KACHE_CACHE_DIR/events.jsonl")
        t=$(RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=1 timed cargo build --offline)
        on_times="$on_times $t"
        replayed=$(run_events "$before" hit)
        echo "round $round: warm flag off ${off_times##* }s, warm flag on ${t}s ($replayed runs replayed)"
    done
    local opens_off="" opens_on=""
    if [ -n "$lib" ]; then
        # Not timed: strace slows every process it follows.
        cargo clean --quiet
        RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=0 quiet strace -f -e trace=openat \
            -o "$work/strace-off-$name.txt" cargo build --offline
        opens_off=$(opens "$work/strace-off-$name.txt" "$lib")
        cargo clean --quiet
        before=$(wc -l < "$KACHE_CACHE_DIR/events.jsonl")
        RUSTC_WRAPPER="$kache" KACHE_CACHE_BUILD_SCRIPTS=1 quiet strace -f -e trace=openat \
            -o "$work/strace-on-$name.txt" cargo build --offline
        opens_on=$(opens "$work/strace-on-$name.txt" "$lib")
        echo "traced warm builds: $lib opened $opens_off times flag off, $opens_on times flag on" \
            "($(run_events "$before" hit) runs replayed)"
        if [ "$opens_off" -eq 0 ]; then
            echo "FAIL: the flag-off warm build never opened $lib: the check proves nothing" >&2
            exit 1
        fi
        if [ "$opens_on" -ne 0 ]; then
            echo "FAIL: the flag-on warm build opened $lib:" >&2
            grep -E "/$lib(-[0-9.]+)?\.so" "$work/strace-on-$name.txt" | head >&2
            exit 1
        fi
    fi
    if [ -n "$bin" ]; then
        local kache_out
        kache_out=$("$dir/target/debug/$bin")
        if [ "$kache_out" != "$plain_out" ]; then
            echo "FAIL: $bin prints differently built by kache (flag on, warm):" >&2
            diff <(echo "$plain_out") <(echo "$kache_out") >&2 || true
            exit 1
        fi
        echo "$bin prints the same built plain and by kache: $plain_out"
    fi
    local off on
    off=$(echo "$off_times" | tr ' ' '\n' | grep . | mean)
    on=$(echo "$on_times" | tr ' ' '\n' | grep . | mean)
    awk -v p="$plain" -v off="$off" -v on="$on" -v n="$name" -v r="$replayed" -v s="$scripts" 'BEGIN {
        printf "\n[%s] (%d build-script runs, %d replayed with the flag on)\n", n, s, r
        printf "%-40s %7.2fs  1.00\n", "plain cold:", p
        printf "%-40s %7.2fs  %4.2f\n", "kache warm after clean, flag off:", off, off / p
        printf "%-40s %7.2fs  %4.2f\n\n", "kache warm after clean, flag on:", on, on / p
    }'
    [ -z "$lib" ] || printf '%-40s %s flag off, %s flag on\n\n' "opens of $lib (warm, traced):" \
        "$opens_off" "$opens_on"
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
        bat)
            # The published crate's sources, copied out of cargo's registry.
            mkdir -p "$work/fetch-bat/src"; touch "$work/fetch-bat/src/lib.rs"
            printf '[workspace]\n[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nbat = "=0.25.0"\n' \
                > "$work/fetch-bat/Cargo.toml"
            (cd "$work/fetch-bat" && cargo fetch --quiet)
            registry=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ | head -1)
            cp -r "$registry/bat-0.25.0" "$work/bat"
            bench_project bat "$work/bat"
            ;;
        bindgen)
            # bindgen loads libclang at run time; Debian's libclang-dev gives
            # it the library's usual name (and clang's builtin headers).
            if ! dpkg -s libclang-dev >/dev/null 2>&1; then
                export DEBIAN_FRONTEND=noninteractive
                apt-get install -y -qq libclang-dev >/dev/null 2>&1 \
                    || { apt-get update -qq && apt-get install -y -qq libclang-dev >/dev/null; }
            fi
            mkdir -p "$work/bindgen/src" "$work/bindgen/c"
            cat > "$work/bindgen/Cargo.toml" <<'EOF'
[package]
name = "bindgen-demo"
version = "0.1.0"
edition = "2021"
publish = false

[build-dependencies]
bindgen = "0.73"
cc = "1"

[workspace]
EOF
            cat > "$work/bindgen/c/shape.h" <<'EOF'
#include <stdint.h>

#define SHAPE_MAX_SIDES 12

enum shape_kind { SHAPE_TRIANGLE = 3, SHAPE_SQUARE = 4, SHAPE_HEXAGON = 6 };

struct shape {
    enum shape_kind kind;
    uint32_t side;
};

uint32_t shape_perimeter(const struct shape *s);
EOF
            cat > "$work/bindgen/c/shape.c" <<'EOF'
#include "shape.h"

uint32_t shape_perimeter(const struct shape *s) {
    return (uint32_t)s->kind * s->side;
}
EOF
            cat > "$work/bindgen/build.rs" <<'EOF'
use std::{env, path::PathBuf};

fn main() {
    cc::Build::new().file("c/shape.c").include("c").compile("shape");
    println!("cargo:rerun-if-changed=c/shape.c");
    let bindings = bindgen::Builder::default()
        .header("c/shape.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_item("shape.*|SHAPE_.*")
        .rustified_enum("shape_kind")
        .generate()
        .expect("bindgen");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings.write_to_file(out.join("shape.rs")).expect("write bindings");
}
EOF
            cat > "$work/bindgen/src/main.rs" <<'EOF'
#![allow(non_camel_case_types, non_upper_case_globals, dead_code)]
include!(concat!(env!("OUT_DIR"), "/shape.rs"));

fn main() {
    let s = shape { kind: shape_kind::SHAPE_HEXAGON, side: 7 };
    let p = unsafe { shape_perimeter(&s) };
    println!("hexagon of side {} has perimeter {p} (max sides {SHAPE_MAX_SIDES})", s.side);
}
EOF
            bench_project bindgen "$work/bindgen" bindgen-demo libclang
            ;;
        *) echo "unknown project $project (csys, zlib-ring, bat, bindgen)" >&2; exit 2 ;;
    esac
done
