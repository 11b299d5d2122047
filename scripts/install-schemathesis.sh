#!/usr/bin/env bash
# Installs schemathesis (a property-based checker of an API against its
# OpenAPI document) once into a virtualenv in a cache outside the clone, and
# prints the `st` binary's path. Idempotent: a later run returns at once.
#   KACHE_CI_CACHE   where tools are cached (default ~/.cache/kache-ci)
set -euo pipefail
version=4.32.5
root="${KACHE_CI_CACHE:-$HOME/.cache/kache-ci}/schemathesis-$version"
bin="$root/bin/st"
# A venv records its own path, so it is built in place; `.complete` marks
# an install that finished (an interrupted one is started over).
if [ ! -f "$root/.complete" ]; then
    echo "==> installing schemathesis $version into $root (once; under a minute)" >&2
    rm -rf "$root"
    if ! python3 -m venv "$root" >/dev/null 2>&1; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq >&2
        $sudo apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$root"
        python3 -m venv "$root"
    fi
    "$root/bin/pip" install --quiet "schemathesis==$version" >&2
    touch "$root/.complete"
fi
"$bin" --version >/dev/null
echo "$bin"
