#!/usr/bin/env bash
# Chart tests: the real Helm engine (helm-python-sdk) and kubernetes-validate,
# in a virtualenv under target/ that is created once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-venv
req=tests/chart/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/requirements.txt"
fi
"$venv/bin/python" -m pytest -q tests/chart "$@"
