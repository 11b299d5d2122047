#!/usr/bin/env bash
# Installs a real OCI registry for the registry-remote tests, once: Debian's
# `docker-registry` (the CNCF distribution registry) and `apache2-utils`
# (htpasswd, for its bcrypt basic-auth file). Prints the registry binary's
# path. Idempotent: when both are there it returns at once. The tests start
# the server themselves, on loopback, with their own configuration.
set -euo pipefail
bin=/usr/bin/docker-registry
if [ ! -x "$bin" ] || [ ! -x /usr/bin/htpasswd ]; then
    echo "==> installing docker-registry and apache2-utils (once)" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-registry apache2-utils >/dev/null
    # The package starts a system registry where an init system runs; the
    # tests need none.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
        $sudo systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
fi
test -x "$bin" && test -x /usr/bin/htpasswd
echo "$bin"
