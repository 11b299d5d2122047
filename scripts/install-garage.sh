#!/usr/bin/env bash
# Installs Garage (a real S3-compatible server that checks SigV4) once into a
# cache outside the clone, and prints the binary's path. Idempotent: a later
# run finds it and returns at once. The remote tests start it themselves.
#   KACHE_CI_CACHE   where tools are cached (default ~/.cache/kache-ci)
set -euo pipefail
version=2.5.0
root="${KACHE_CI_CACHE:-$HOME/.cache/kache-ci}/garage-$version"
bin="$root/bin/garage"
if [ ! -x "$bin" ]; then
    echo "==> installing garage $version into $root (once; about 7 minutes on 2 cores)" >&2
    cargo install garage --version "$version" --locked --no-default-features \
        --features bundled-libs,sqlite --root "$root" >&2
fi
"$bin" --version >/dev/null
echo "$bin"
