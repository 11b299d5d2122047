#!/usr/bin/env bash
# The kache action's main step (action.yml): install kache, export the
# build's environment through $GITHUB_ENV (RUSTC_WRAPPER, the remote, the
# planner, the namespace), start the daemon, and write the step's outputs.
# Inputs arrive as INPUT_* variables (see action.yml); everything it reads
# from GitHub is an ordinary variable or file, so a test runs it as is.
set -euo pipefail

: "${GITHUB_ENV:?setup.sh runs as a GitHub Actions step (GITHUB_ENV unset)}"
: "${GITHUB_OUTPUT:?setup.sh runs as a GitHub Actions step (GITHUB_OUTPUT unset)}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# One `NAME=value` line for later steps, and for this one.
export_var() {
    local name=$1 value=$2
    case "$value" in
        *$'\n'*) echo "::error::$name must be one line" >&2; exit 1 ;;
    esac
    printf '%s=%s\n' "$name" "$value" >>"$GITHUB_ENV"
    export "$name=$value"
}
secret() {
    [ -n "$1" ] && echo "::add-mask::$1"
    return 0
}

kache=$(bash "$here/install.sh")
kache_dir=$(dirname "$kache")
[ -n "${GITHUB_PATH:-}" ] && echo "$kache_dir" >>"$GITHUB_PATH"
export_var RUSTC_WRAPPER "$kache"
[ -n "${INPUT_CACHE_DIR:-}" ] && export_var KACHE_CACHE_DIR "$INPUT_CACHE_DIR"

# The namespace: the input, else the branch (a pull request's head branch);
# `/` is not allowed in one.
namespace=${INPUT_NAMESPACE:-${GITHUB_HEAD_REF:-${GITHUB_REF_NAME:-}}}
namespace=${namespace//\//-}
[ -n "$namespace" ] && export_var KACHE_NAMESPACE "$namespace"

remote=${INPUT_REMOTE:-oci}
case "$remote" in
    oci)
        registry=${INPUT_REGISTRY:-ghcr.io}
        repository=${INPUT_REPOSITORY:-}
        if [ -z "$repository" ]; then
            : "${GITHUB_REPOSITORY:?no repository input and no GITHUB_REPOSITORY}"
            repository="$GITHUB_REPOSITORY/kache-cache"
        fi
        # OCI repository names are lowercase; GitHub owners often are not.
        repository=$(printf '%s' "$repository" | tr '[:upper:]' '[:lower:]')
        export_var KACHE_OCI_REGISTRY "$registry"
        export_var KACHE_OCI_REPOSITORY "$repository"
        if [ -n "${INPUT_PASSWORD:-}" ]; then
            secret "$INPUT_PASSWORD"
            export_var KACHE_OCI_USERNAME "${INPUT_USERNAME:-${GITHUB_ACTOR:-kache}}"
            export_var KACHE_OCI_PASSWORD "$INPUT_PASSWORD"
        fi
        where="oci://$registry/$repository"
        ;;
    s3)
        : "${INPUT_S3_BUCKET:?remote s3 needs the s3-bucket input}"
        export_var KACHE_S3_BUCKET "$INPUT_S3_BUCKET"
        [ -n "${INPUT_S3_ENDPOINT:-}" ] && export_var KACHE_S3_ENDPOINT "$INPUT_S3_ENDPOINT"
        export_var KACHE_S3_REGION "${INPUT_S3_REGION:-us-east-1}"
        if [ -n "${INPUT_S3_ACCESS_KEY:-}" ]; then
            secret "${INPUT_S3_SECRET_KEY:-}"
            export_var KACHE_S3_ACCESS_KEY "$INPUT_S3_ACCESS_KEY"
            export_var KACHE_S3_SECRET_KEY "${INPUT_S3_SECRET_KEY:-}"
        fi
        where="s3://$INPUT_S3_BUCKET${INPUT_S3_ENDPOINT:+ at $INPUT_S3_ENDPOINT}"
        ;;
    none)
        where="none"
        ;;
    *)
        echo "::error::remote must be oci, s3 or none, not '$remote'" >&2
        exit 1
        ;;
esac
if [ "$remote" != none ]; then
    export_var KACHE_S3_PREFIX "${INPUT_PREFIX:-artifacts}"
    # Read-only for pull requests from forks (their token cannot write, and
    # their builds should not feed the shared cache).
    read_only=${INPUT_READ_ONLY:-auto}
    if [ "$read_only" = auto ]; then
        read_only=false
        if [ "${GITHUB_EVENT_NAME:-}" = pull_request ] &&
            [ -n "${KACHE_ACTION_HEAD_REPOSITORY:-}" ] &&
            [ "${KACHE_ACTION_HEAD_REPOSITORY}" != "${GITHUB_REPOSITORY:-}" ]; then
            read_only=true
        fi
    fi
    [ "$read_only" = true ] && export_var KACHE_REMOTE_READ_ONLY 1
fi
if [ -n "${INPUT_PLANNER_ENDPOINT:-}" ]; then
    export_var KACHE_PLANNER_ENDPOINT "$INPUT_PLANNER_ENDPOINT"
    if [ -n "${INPUT_PLANNER_TOKEN:-}" ]; then
        secret "$INPUT_PLANNER_TOKEN"
        export_var KACHE_PLANNER_TOKEN "$INPUT_PLANNER_TOKEN"
    fi
fi

# The daemon serves the whole job: uploads in the background, remote hits,
# prefetch at the build's start. It outlives this step (runners end a job's
# processes when the job ends).
if [ "$remote" != none ]; then
    "$kache" daemon start >&2 || echo "::warning::kache daemon did not start; builds still run"
fi

{
    echo "kache=$kache"
    echo "remote=$where"
    echo "namespace=$namespace"
} >>"$GITHUB_OUTPUT"
echo "kache: $("$kache" --version 2>/dev/null || echo "$kache"), remote $where${namespace:+, namespace $namespace}"
