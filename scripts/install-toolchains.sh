#!/usr/bin/env bash
# Installs the extra Rust toolchains the toolchain tests build with, once, into
# a cache outside the clone, and prints one `NAME=<dir>` line per toolchain on
# stdout (the directory holds that toolchain's `cargo` and `rustc`):
#   KACHE_TOOLCHAIN_OLD      an old stable (edition 2024's first: 1.85.0)
#   KACHE_TOOLCHAIN_NEWEST   the newest stable rustup offered when this was pinned
#   KACHE_TOOLCHAIN_NIGHTLY  a dated nightly
# The same lines are written to $cache/toolchains.env. Idempotent: a later run
# finds everything in place and returns at once, without the network.
#
# The toolchains live in their own RUSTUP_HOME inside the cache (installed
# with the machine's rustup, minimal profile, no self-update), so ~/.rustup
# and the machine's default toolchain stay as they are. The one exception is
# asked for: the cross targets the target tests build for are added to the
# machine's own toolchain (the one the tests use by default) and to the
# newest stable.
#   KACHE_CI_CACHE   where tools are cached (default ~/.cache/kache-ci)
set -euo pipefail
cd "$(dirname "$0")/.."

old=1.85.0
# The newest stable rustup offered here on 2026-12-01: channel-rust-stable
# is 1.99.1, and 1.100.0, 1.100.1 and 1.101.0 have no channel manifest (404).
# Pinned so CI is reproducible.
newest=1.99.1
nightly=nightly-2026-10-30
# Cross targets for the target tests: WebAssembly, a `no_std` embedded target
# and a Windows target. The distribution server carries no thumbv7em-none-eabihf
# standard library for 1.99.1 (its manifest says `available = false`; only 15
# targets are published for it), so the newest stable gets x86_64-unknown-none
# as its `no_std` target instead.
machine_targets=(wasm32-unknown-unknown thumbv7em-none-eabihf x86_64-pc-windows-gnu)
newest_targets=(wasm32-unknown-unknown x86_64-unknown-none x86_64-pc-windows-gnu)

cache="${KACHE_CI_CACHE:-$HOME/.cache/kache-ci}"
rustup_bin=$(command -v rustup) || {
    echo "install-toolchains: rustup is not on PATH" >&2
    exit 1
}
host=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$host" ] || { echo "install-toolchains: no host triple from rustc -vV" >&2; exit 1; }
mkdir -p "$cache"

# One installer at a time (two test runs sharing a cache).
exec 9>"$cache/toolchains.lock"
flock 9

# Seconds since `start`, for the install log.
elapsed() { echo "$(($(date +%s) - $1))s"; }

# Runs the machine's rustup against the cache's own RUSTUP_HOME.
cache_rustup() {
    env -u RUSTUP_TOOLCHAIN RUSTUP_HOME="$cache/rustup" CARGO_HOME="$cache/rustup-cargo" \
        "$rustup_bin" "$@"
}

# Installs toolchain $1 into the cache unless it is there; prints its bin dir.
install_toolchain() {
    local name=$1 dir="$cache/rustup/toolchains/$1-$host"
    if [ ! -x "$dir/bin/rustc" ] || [ ! -x "$dir/bin/cargo" ]; then
        local start; start=$(date +%s)
        echo "==> installing toolchain $name into $cache/rustup (once)" >&2
        cache_rustup toolchain install "$name" --profile minimal --no-self-update >&2
        echo "==> toolchain $name installed in $(elapsed "$start")" >&2
    fi
    "$dir/bin/rustc" -vV >/dev/null
    "$dir/bin/cargo" -V >/dev/null
    echo "$dir/bin"
}

# Adds the targets named by the array variable `$2` that are missing from the
# sysroot of rustc `$1`; `$3...` is the rustup command that adds targets to
# that toolchain.
add_targets() {
    local rustc=$1 list="$2[@]"; shift 2
    local sysroot missing=() t
    sysroot=$("$rustc" --print sysroot)
    for t in "${!list}"; do
        [ -d "$sysroot/lib/rustlib/$t/lib" ] || missing+=("$t")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        local start; start=$(date +%s)
        echo "==> adding targets ${missing[*]} to $sysroot (once)" >&2
        "$@" "${missing[@]}" >&2
        echo "==> targets added to $sysroot in $(elapsed "$start")" >&2
    fi
}

old_bin=$(install_toolchain "$old")
newest_bin=$(install_toolchain "$newest")
nightly_bin=$(install_toolchain "$nightly")

add_targets "$newest_bin/rustc" newest_targets cache_rustup target add --toolchain "$newest"
# The machine's own toolchain: whatever `rustc` resolves to here, which is the
# one the tests build with by default.
machine_rustc=$(rustup which rustc)
add_targets "$machine_rustc" machine_targets rustup target add

{
    echo "KACHE_TOOLCHAIN_OLD=$old_bin"
    echo "KACHE_TOOLCHAIN_NEWEST=$newest_bin"
    echo "KACHE_TOOLCHAIN_NIGHTLY=$nightly_bin"
} | tee "$cache/toolchains.env"
