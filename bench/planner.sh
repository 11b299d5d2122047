#!/usr/bin/env bash
# Benchmark (not a test): the planner under load.
# State: 100,000 artifacts over 5,000 crates and 50 namespaces (a seed
# snapshot); intent: 300 crates with their Cargo.lock deps, most of them at
# versions the namespace never built (they resolve from history). Prints the time
# to import the snapshot, then wrk's throughput and latency at 32
# connections on this machine.
# Needs wrk (Debian package `wrk`). Usage: bash bench/planner.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work/planner"
rm -rf "$work"; mkdir -p "$work"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build --quiet --release --locked -p kache-service --manifest-path "$root/Cargo.toml"
bin="$root/target/release/kache-service"

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
crates, per_crate, namespaces = 5000, 20, 50
key = lambda c, i: f"{c:05d}{i:03d}".rjust(64, "a")
history = {f"crate{c}": [{"cache_key": key(c, i), "crate_name": f"crate{c}"} for i in range(10)] for c in range(crates)}
key_cache = {f"crate{c}": [key(c, i) for i in range(per_crate)] for c in range(crates)}
ns = {}
for n in range(namespaces):
    deps = {}
    for c in range(n * 100, n * 100 + 1000):
        c %= crates
        deps[f"crate{c}@1.0.{n % 7}"] = [{"cache_key": key(c, 10 + n % 10), "crate_name": f"crate{c}"}]
    ns[f"ns{n}"] = {"deps": deps}
json.dump({"namespaces": ns, "history": history, "key_cache": key_cache}, open(f"{work}/seed.json", "w"))
intent = {
    "crate_names": [f"crate{c}" for c in range(300)],
    "namespace": "ns0",
    # 50 crates at the versions ns0 built, 250 at versions nobody built:
    # most resolve only from history (three guesses each).
    "cargo_lock_deps": [[f"crate{c}", "1.0.0" if c < 50 else "2.0.0"] for c in range(300)],
}
body = json.dumps(intent)
open(f"{work}/intent.json", "w").write(body)
open(f"{work}/post.lua", "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f'wrk.body = {json.dumps(body)}\n'
)
PY

"$bin" --bind 127.0.0.1:0 --db-path "$work/db" --seed-state-file "$work/seed.json" \
    >"$work/out.log" 2>"$work/err.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
start=$(date +%s.%N)
until grep -q 'listening on' "$work/out.log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err.log"; exit 1; }
    sleep 0.1
done
ready=$(date +%s.%N)
url=$(sed -n 's/.*listening on //p' "$work/out.log")
import_ms=$(sed -n 's/.*imported seed snapshot.*elapsed_ms=\([0-9]*\).*/\1/p' "$work/err.log")
candidates=$(curl -s -XPOST "$url/v2/prefetch-plan" -d @"$work/intent.json" | python3 -c 'import json,sys; raw=sys.stdin.buffer.read(); p=json.loads(raw); print(p["disposition"], len(p["candidates"]), "candidates,", len(raw), "bytes")')

echo "seed import (100,000 artifacts):   ${import_ms} ms (goal <= 30000); start to ready $(awk -v a="$start" -v b="$ready" 'BEGIN{printf "%.1f", b-a}') s"
echo "plan for 300 crates:               $candidates"
wrk -t2 -c32 -d15s --latency -s "$work/post.lua" "$url/v2/prefetch-plan" | tee "$work/wrk.txt"
awk '/Requests\/sec/ { printf "\nthroughput: %s plans/s (goal >= 2000)\n", $2 }
     /^ +50%/ { printf "p50: %s\n", $2 }
     /^ +99%/ { printf "p99: %s (goal <= 20ms)\n", $2 }' "$work/wrk.txt"
