#!/usr/bin/env bash
# Benchmark (not a test): the planner under load.
# State: 100,000 artifacts over 5,000 crates and 50 namespaces (a seed
# snapshot); intent: 300 crates with their Cargo.lock deps, most of them at
# versions the namespace never built (they resolve from history). Prints the time
# to import the snapshot, then wrk's throughput and latency at 32
# connections on this machine: first idle, then while large build manifests
# (about 8 MiB, 50,000 new artifacts each) are ingested back to back. The
# bound is raised for this run (--max-artifacts 1000000) so that every plan
# does the same work throughout; bench/planner-flood.sh measures the
# default bound under a flood. Prints the p99 of both runs side by side (a
# light probe's and wrk's) and the peak resident memory (VmRSS).
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
# The flood: manifests of 50,000 artifacts each, numbered on from 10**9 so
# every one is new (about 8 MiB of JSON apiece, just under the body limit).
open(f"{work}/flood.py", "w").write(r'''
import json, os, sys, time, urllib.request
url, stop, log = sys.argv[1], sys.argv[2], sys.argv[3]
per, n = 50_000, 0
with open(log, "w") as out:
    while not os.path.exists(stop):
        first = 10**9 + n * per
        entries = [{"cache_key": format(first + i, "064x"), "crate_name": f"flood{(first + i) % 3000}",
                    "compile_time_ms": 1000 + i % 5000, "artifact_size": 40_000 + i}
                   for i in range(per)]
        body = json.dumps({"version": 3, "created": "2026-12-01T00:00:00Z",
                           "manifest_key": "x86_64-unknown-linux-gnu", "entries": entries}).encode()
        started = time.time()
        request = urllib.request.Request(url + "/v2/manifests", data=body,
                                         headers={"content-type": "application/json"})
        summary = json.loads(urllib.request.urlopen(request, timeout=600).read())["summary"]
        print(f"{len(body)} bytes in {time.time() - started:.2f}s: {summary}", file=out, flush=True)
        n += 1
''')
# The probe: one keep-alive connection asking for the plan every 20 ms (not
# a saturating load, so its tail shows waits, not queueing behind other
# clients); prints p50/p99/max in milliseconds.
open(f"{work}/probe.py", "w").write(r'''
import http.client, sys, time, urllib.parse
url, seconds, body = sys.argv[1], float(sys.argv[2]), open(sys.argv[3], "rb").read()
parts = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
samples, end = [], time.time() + seconds
while time.time() < end:
    started = time.perf_counter()
    conn.request("POST", "/v2/prefetch-plan", body, {"content-type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    samples.append((time.perf_counter() - started) * 1000)
    assert reply.status == 200, reply.status
    time.sleep(max(0.0, 0.02 - (time.perf_counter() - started)))
samples.sort()
pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
print(f"{len(samples)} plans, p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {samples[-1]:.1f} ms")
''')
open(f"{work}/post.lua", "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f'wrk.body = {json.dumps(body)}\n'
)
PY

"$bin" --bind 127.0.0.1:0 --db-path "$work/db" --seed-state-file "$work/seed.json" --max-artifacts 1000000 \
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

# Plans during a large ingest (and the evictions it causes): the probe alone,
# idle and then during the flood; then wrk's saturating load during it.
probe_idle=$(python3 "$work/probe.py" "$url" 15 "$work/intent.json")
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
rss_before=$(rss_kib)
rm -f "$work/stop"
python3 "$work/flood.py" "$url" "$work/stop" "$work/flood.log" &
flood=$!
trap 'touch "$work/stop"; kill $flood 2>/dev/null || true; kill $pid 2>/dev/null || true' EXIT
peak=$rss_before
( while [ ! -e "$work/stop" ]; do rss_kib; sleep 0.2; done ) >"$work/rss.txt" &
sampler=$!
sleep 2
probe_busy=$(python3 "$work/probe.py" "$url" 25 "$work/intent.json")
wrk -t2 -c32 -d20s --latency -s "$work/post.lua" "$url/v2/prefetch-plan" >"$work/wrk-ingest.txt"
touch "$work/stop"
wait $flood || true
wait $sampler || true
peak=$(sort -n "$work/rss.txt" | tail -1)
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
echo
echo "during the flood: $(wc -l <"$work/flood.log") manifests of 50,000 new artifacts ingested:"
cat "$work/flood.log"
echo "state after the flood: $(metric kache_planner_state_artifacts) artifacts (max $(metric kache_planner_state_max_artifacts)), $(metric kache_planner_evicted_artifacts_total) evicted"
echo "VmRSS: $((rss_before / 1024)) MiB before the flood, peak $((peak / 1024)) MiB during it"
idle_p99=$(awk '/^ +99%/ { print $2 }' "$work/wrk.txt")
busy_p99=$(awk '/^ +99%/ { print $2 }' "$work/wrk-ingest.txt")
busy_rps=$(awk '/Requests\/sec/ { print $2 }' "$work/wrk-ingest.txt")
errors=$(awk '/Non-2xx|Socket errors/' "$work/wrk-ingest.txt")
echo "probe (one plan every 20 ms): idle: $probe_idle"
echo "                                 during the ingest: $probe_busy"
echo "wrk p99 (32 connections): idle $idle_p99, during the ingest $busy_p99 ($busy_rps plans/s)${errors:+; $errors}"
