#!/usr/bin/env bash
# Benchmark (not a test): the planner's memory under a flood of new
# artifacts, at a bound (KACHE_PLANNER_MAX_ARTIFACTS, default the service's
# own, 100,000). Ingests DOCUMENTS (default 12) build manifests of 50,000
# new artifacts each (about 8 MiB of JSON apiece, just under the body limit)
# back to back, while a probe asks for a plan every 20 ms. Prints each
# ingest's time and evictions, the state and the peak and final resident
# memory (VmRSS), the database's size on disk, and the probe's latency.
# Usage: bash bench/planner-flood.sh [MAX_ARTIFACTS] [DOCUMENTS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work/planner-flood"
max="${1:-}"; documents="${2:-12}"
rm -rf "$work"; mkdir -p "$work"
cargo build --quiet --release --locked -p kache-service --manifest-path "$root/Cargo.toml"
bin="$root/target/release/kache-service"

"$bin" --bind 127.0.0.1:0 --db-path "$work/db" ${max:+--max-artifacts "$max"} \
    >"$work/out.log" 2>"$work/err.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until grep -q 'listening on' "$work/out.log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/err.log"; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/.*listening on //p' "$work/out.log")
( while kill -0 $pid 2>/dev/null; do awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; sleep 0.2; done ) \
    >"$work/rss.txt" 2>/dev/null &

# The probe is its own process: in the flooding one, building each 8 MiB
# body holds Python's interpreter lock for seconds.
cat >"$work/probe.py" <<'PY'
import http.client, json, os, sys, time, urllib.parse
url, stop = sys.argv[1], sys.argv[2]
intent = json.dumps({"crate_names": [f"flood{c}" for c in range(300)]}).encode()
parts = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
samples = []
while not os.path.exists(stop):
    started = time.perf_counter()
    conn.request("POST", "/v2/prefetch-plan", intent, {"content-type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    assert reply.status == 200, reply.status
    samples.append((time.perf_counter() - started) * 1000)
    time.sleep(max(0.0, 0.02 - (time.perf_counter() - started)))
samples.sort()
pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
print(f"probe during the flood: {len(samples)} plans, p50 {pick(0.5):.1f} ms, "
      f"p99 {pick(0.99):.1f} ms, max {samples[-1]:.1f} ms")
PY
python3 "$work/probe.py" "$url" "$work/stop" >"$work/probe.txt" &
probe=$!
python3 - "$url" "$documents" <<'PY'
import json, sys, time, urllib.request
url, documents = sys.argv[1], int(sys.argv[2])
per = 50_000
for d in range(documents):
    first = 10**9 + d * per
    entries = [{"cache_key": format(first + i, "064x"), "crate_name": f"flood{(first + i) % 3000}",
                "compile_time_ms": 1000 + i % 5000, "artifact_size": 40_000 + i} for i in range(per)]
    body = json.dumps({"version": 3, "created": "2026-12-01T00:00:00Z",
                       "manifest_key": "x86_64-unknown-linux-gnu", "entries": entries}).encode()
    started = time.time()
    request = urllib.request.Request(url + "/v2/manifests", data=body, headers={"content-type": "application/json"})
    summary = json.loads(urllib.request.urlopen(request, timeout=600).read())["summary"]
    print(f"manifest {d + 1}/{documents}: {len(body)} bytes in {time.time() - started:.1f}s, "
          f"{summary['evicted_artifacts']} artifacts evicted", flush=True)
PY
touch "$work/stop"
wait $probe
cat "$work/probe.txt"
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
echo "state: $(metric kache_planner_state_artifacts) artifacts (max $(metric kache_planner_state_max_artifacts)), $(metric kache_planner_evicted_artifacts_total) evicted"
echo "VmRSS: final $(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$pid/status") MiB, peak $(sort -n "$work/rss.txt" | tail -1 | awk '{ print int($1 / 1024) }') MiB; database on disk $(du -sh "$work/db" | cut -f1)"
# The service's own view (handler start to response, lock waits included):
# plans slower than 0.1 s by its histogram, against the probe's count above.
curl -s "$url/metrics" | awk '/^kache_planner_plan_duration_seconds_(bucket\{le="0.1|bucket\{le="\+Inf|count)/'
