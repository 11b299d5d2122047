#!/usr/bin/env bash
# Finds or installs kache for the action and prints the binary's path.
# First match wins:
#   1. INPUT_KACHE_BINARY: that file (a test, a cached or self-built binary);
#   2. a release binary: the tag INPUT_VERSION, else the action's own ref
#      when it is a tag (`uses: …/kache@v0.1.0`), downloaded from the
#      action's repository as kache-<target>.tar.gz for this runner;
#   3. built from the action's own checkout (`cargo install --locked
#      --path`), which every `uses:` of this action has on disk;
#   4. `cargo install --locked --git` of the action's repository at its ref.
# Installs go below RUNNER_TOOL_CACHE (else ~/.cache/kache-action), one
# folder per version, so a self-hosted runner installs once.
set -euo pipefail

if [ -n "${INPUT_KACHE_BINARY:-}" ]; then
    [ -x "$INPUT_KACHE_BINARY" ] || { echo "::error::kache-binary $INPUT_KACHE_BINARY is not an executable" >&2; exit 1; }
    echo "$INPUT_KACHE_BINARY"
    exit 0
fi

action_path=${GITHUB_ACTION_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
repo=${GITHUB_ACTION_REPOSITORY:-}
ref=${GITHUB_ACTION_REF:-}
tag=${INPUT_VERSION:-}
case "$ref" in v[0-9]*) tag=${tag:-$ref} ;; esac
tools=${RUNNER_TOOL_CACHE:-$HOME/.cache/kache-action}

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) target=x86_64-unknown-linux-gnu ;;
    Linux-aarch64) target=aarch64-unknown-linux-gnu ;;
    Darwin-arm64) target=aarch64-apple-darwin ;;
    Darwin-x86_64) target=x86_64-apple-darwin ;;
    *) target="" ;;
esac

if [ -n "$tag" ] && [ -n "$repo" ] && [ -n "$target" ]; then
    root="$tools/kache/$tag"
    if [ ! -x "$root/kache" ]; then
        url="${GITHUB_SERVER_URL:-https://github.com}/$repo/releases/download/$tag/kache-$target.tar.gz"
        tmp=$(mktemp -d)
        if curl -fsSL --retry 2 -o "$tmp/kache.tar.gz" "$url" 2>/dev/null &&
            tar -xzf "$tmp/kache.tar.gz" -C "$tmp" && [ -x "$tmp/kache" ]; then
            mkdir -p "$root"
            mv "$tmp/kache" "$root/kache"
            echo "kache: installed the release binary $tag ($target)" >&2
        else
            echo "kache: no release binary at $url; building from source" >&2
        fi
        rm -rf "$tmp"
    fi
    if [ -x "$root/kache" ]; then
        echo "$root/kache"
        exit 0
    fi
fi

# From source. RUSTC_WRAPPER may already point at an older kache (a second
# use of the action): build without it.
version=${tag:-${ref:-local}}
root="$tools/kache/source-${version//\//-}"
if [ ! -x "$root/bin/kache" ]; then
    if [ -f "$action_path/crates/kache/Cargo.toml" ]; then
        echo "kache: building from $action_path (once per runner tool cache)" >&2
        RUSTC_WRAPPER="" cargo install --locked --quiet --path "$action_path/crates/kache" --root "$root" >&2
    elif [ -n "$repo" ]; then
        echo "kache: building $repo@${ref:-HEAD} with cargo install --git" >&2
        RUSTC_WRAPPER="" cargo install --locked --quiet \
            --git "${GITHUB_SERVER_URL:-https://github.com}/$repo" ${ref:+--rev "$ref"} \
            --root "$root" kache >&2
    else
        echo "::error::cannot find kache: set the kache-binary input" >&2
        exit 1
    fi
fi
echo "$root/bin/kache"
