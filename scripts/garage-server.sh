#!/usr/bin/env bash
# Starts a single-node Garage S3 server on loopback for benchmarks and manual
# tries, with bucket `kache` and a read-write key, and prints the client
# environment to eval:
#   eval "$(bash scripts/garage-server.sh /tmp/garage-work)"
# The server runs until killed (its pid is in <dir>/garage.pid).
set -euo pipefail
dir=${1:?usage: garage-server.sh <work dir>}
bin=$(bash "$(dirname "$0")/install-garage.sh")
mkdir -p "$dir"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rpc=$(port); s3=$(port)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
TOML
g() { "$bin" -c "$dir/garage.toml" "$@"; }
"$bin" -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
echo $! > "$dir/garage.pid"
for _ in $(seq 1 300); do g node id -q >/dev/null 2>&1 && break; sleep 0.1; done
node=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 1G "$node" >/dev/null
g layout apply --version 1 >/dev/null
info=$(g key create kache-bench)
g bucket create kache >/dev/null
g bucket allow --read --write --owner kache --key kache-bench >/dev/null
key=$(echo "$info" | sed -n 's/^Key ID: *//p')
sec=$(echo "$info" | sed -n 's/^Secret key: *//p')
echo "export KACHE_S3_BUCKET=kache KACHE_S3_ENDPOINT=http://127.0.0.1:$s3 KACHE_S3_ACCESS_KEY=$key KACHE_S3_SECRET_KEY=$sec"
