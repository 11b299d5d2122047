#!/usr/bin/env bash
# The kache post step (post/action.yml), run at the end of the job with
# `if: always()`: drain the daemon's uploads, record the build manifest for
# the planner (`kache save-manifest --namespace <branch>`), and append the
# build report to the job summary. A cache never fails a job: each part
# that fails is a warning annotation, and the step exits 0.
set -uo pipefail

kache=${RUSTC_WRAPPER:-}
if [ -z "$kache" ] || [ ! -x "$kache" ]; then
    echo "::warning::kache post: RUSTC_WRAPPER does not name kache; did the kache action run?"
    exit 0
fi
drain=${INPUT_DRAIN_SECONDS:-300}
workdir=${INPUT_WORKING_DIRECTORY:-.}
remote=""
[ -n "${KACHE_OCI_REGISTRY:-}${KACHE_S3_BUCKET:-}" ] && remote=yes

if [ -n "$remote" ]; then
    # Stopping drains the upload queue first (at most $drain seconds).
    "$kache" daemon stop --drain "$drain" ||
        echo "::warning::kache: the daemon did not stop cleanly; some uploads may be missing"
    if [ "${KACHE_REMOTE_READ_ONLY:-}" != 1 ]; then
        if ! (cd "$workdir" && "$kache" save-manifest ${KACHE_NAMESPACE:+--namespace "$KACHE_NAMESPACE"}); then
            echo "::warning::kache: save-manifest failed; the planner does not learn from this build"
        fi
    fi
fi

if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    "$kache" report --format github --output "$GITHUB_STEP_SUMMARY" ||
        echo "::warning::kache: the report could not be written"
else
    "$kache" report || true
fi
exit 0
