#!/usr/bin/env bash
# Benchmark (not a test): does a plan help a fresh CI runner?
#
# A real S3 server (Garage) and the real planner (kache-service, learning
# from the bucket) on loopback. Runner A builds the ~90-crate project, pushes
# (`kache sync --push`) and saves its manifest with a namespace. Then a fresh
# runner B (empty cache, another path) builds the same project, and a second
# time a variant with one dependency bumped (a new branch), in three modes side
# by side:
#   none      remote hits on demand only (KACHE_PREFETCH=0)
#   fallback  + prefetch by Cargo.lock at build start
#   planner   + the planner's plan at build start (fallback if it cannot help)
# For each it prints: share of cacheable units served without compiling (and
# of the units whose key the bucket holds: a bumped dependency changes the keys
# of everything that depends on it, which no cache can serve),
# bytes downloaded but never used, seconds compiles waited on the bucket, and
# wall time over plain cold.
# Each backend gets its own bucket and planner: `s3` (Garage) and `oci` (a
# CNCF distribution registry, Debian's docker-registry, with htpasswd auth;
# the planner scans it through KACHE_OCI_*), one after the other, against the
# same plain cold build. KACHE_BENCH_BACKENDS picks them (default "s3 oci").
# KACHE_BENCH_RUNS="off on" runs every runner B build twice, side by side:
# with build-script runs cached (`on`, the default; runner A stores them)
# and with KACHE_CACHE_BUILD_SCRIPTS=0 (`off`: every script executes, as
# before they were cached). Default "on".
# Usage: bash bench/cold-runner.sh   (work files in bench/work-cold, git-ignored)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work-cold"
rm -rf "$work"; mkdir -p "$work"

cargo build --quiet --release --locked -p kache --manifest-path "$root/Cargo.toml"
cargo build --quiet --locked -p kache-service --manifest-path "$root/Cargo.toml"
kache="$root/target/release/kache"
service="$root/target/debug/kache-service"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b-a }'; }

service_pid=""
registry_pid=""
stop_backend() {
    [ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null || true
    [ -f "$work/garage/garage.pid" ] && kill "$(cat "$work/garage/garage.pid")" 2>/dev/null || true
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
    for cache in "$work"/cache-*; do
        [ -d "$cache" ] && KACHE_CACHE_DIR="$cache" "$kache" daemon stop >/dev/null 2>&1 || true
    done
    service_pid="" registry_pid=""
    rm -f "$work/garage/garage.pid"
}
trap stop_backend EXIT

# start_backend s3|oci: a fresh bucket (or registry repository) and a
# planner learning from it; exports the clients' environment.
start_backend() {
    unset KACHE_S3_BUCKET KACHE_S3_ENDPOINT KACHE_S3_ACCESS_KEY KACHE_S3_SECRET_KEY KACHE_S3_REGION
    unset KACHE_OCI_REGISTRY KACHE_OCI_REPOSITORY KACHE_OCI_USERNAME KACHE_OCI_PASSWORD
    case $1 in
        s3)
            rm -rf "$work/garage"
            eval "$(bash "$root/scripts/garage-server.sh" "$work/garage")"
            where="bucket at $KACHE_S3_ENDPOINT"
            ;;
        oci)
            local bin dir="$work/registry" port
            bin=$(bash "$root/scripts/install-registry.sh")
            rm -rf "$dir"; mkdir -p "$dir"
            port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
            htpasswd -Bbn kache bench-pass > "$dir/htpasswd"
            cat > "$dir/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
auth:
  htpasswd:
    realm: kache-bench
    path: $dir/htpasswd
YML
            "$bin" serve "$dir/registry.yml" > "$dir/registry.log" 2>&1 &
            registry_pid=$!
            for _ in $(seq 1 100); do
                [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 401 ] && break
                sleep 0.1
            done
            export KACHE_OCI_REGISTRY="http://127.0.0.1:$port" KACHE_OCI_REPOSITORY=bench/kache-cache
            export KACHE_OCI_USERNAME=kache KACHE_OCI_PASSWORD=bench-pass
            where="registry at $KACHE_OCI_REGISTRY/$KACHE_OCI_REPOSITORY"
            ;;
    esac
    rm -rf "$work/planner-$1.db"
    "$service" --bind 127.0.0.1:0 --db-path "$work/planner-$1.db" --scan-interval 1 \
        > "$work/service-$1.out" 2> "$work/service-$1.log" &
    service_pid=$!
    for _ in $(seq 1 100); do grep -q "listening on" "$work/service-$1.out" 2>/dev/null && break; sleep 0.1; done
    planner=$(sed -n 's/^kache-service listening on //p' "$work/service-$1.out")
    echo "== backend $1: planner at $planner, $where"
}

bash "$root/bench/rust-project.sh" "$work/a"
(cd "$work/a" && cargo generate-lockfile --quiet && cargo fetch --quiet)
export CARGO_INCREMENTAL=0

echo "== plain cold (reference)"
t0=$(now)
(cd "$work/a" && CARGO_TARGET_DIR="$work/t-plain" cargo build --offline --quiet)
plain=$(elapsed "$t0")
echo "plain cold: ${plain}s"

# run_b VARIANT MODE BACKEND RUNS: a fresh runner builds the variant's copy.
run_b() {
    local variant=$1 mode=$2 backend=$3 runs=$4
    local dir="$work/b-$variant-$mode-$runs" cache="$work/cache-$backend-$variant-$mode-$runs"
    rm -rf "$dir" "$cache"
    cp -r "$work/src-$variant" "$dir"
    # Read-only: every mode sees the bucket runner A left, not the uploads
    # of the runs before it.
    export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$cache" KACHE_NAMESPACE=main KACHE_REMOTE_READ_ONLY=1
    export KACHE_CACHE_BUILD_SCRIPTS=$([ "$runs" = on ] && echo 1 || echo 0)
    unset KACHE_PLANNER_ENDPOINT KACHE_PREFETCH
    case $mode in
        none) export KACHE_PREFETCH=0 ;;
        planner) export KACHE_PLANNER_ENDPOINT="$planner" ;;
    esac
    "$kache" daemon start >/dev/null
    local t0 wall
    t0=$(now)
    (cd "$dir" && cargo build --offline --quiet 2>/dev/null)
    wall=$(elapsed "$t0")
    sleep 1 # let in-flight prefetches land, so waste is counted whole
    "$kache" daemon stop --drain 0 >/dev/null # reports the plan's feedback
    python3 - "$cache" "$variant" "$mode" "$wall" "$plain" "$work/cache-a" "$backend" "$runs" <<'PY'
import json, sqlite3, sys
cache, variant, mode, wall, plain = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
runs = sys.argv[8]
in_bucket = {k for (k,) in sqlite3.connect(f"{sys.argv[6]}/index.db").execute("SELECT cache_key FROM entries")}
events = [json.loads(l) for l in open(f"{cache}/events.jsonl")]
cacheable = [e for e in events if e["outcome"] in ("hit", "miss", "dup")]
served = sum(1 for e in cacheable if e["outcome"] == "hit")
# Units whose very key runner A pushed: the most any prefetch can serve.
servable = [e for e in cacheable if e.get("cache_key") in in_bucket]
served_of_servable = sum(1 for e in servable if e["outcome"] == "hit")
used = sum(e.get("bytes", 0) for e in cacheable
           if e["outcome"] == "hit" and e.get("source") in ("remote", "prefetch"))
waited = sum(e["elapsed_ms"] for e in cacheable if e.get("source") == "remote") / 1000
db = sqlite3.connect(f"{cache}/index.db")
wasted = db.execute("SELECT COALESCE(SUM(size), 0) FROM entries WHERE cache_key IN "
                    "(SELECT cache_key FROM origins)").fetchone()[0]
downloaded = used + wasted
share = 100 * served / max(1, len(cacheable))
waste = 100 * wasted / max(1, downloaded)
print(f"{sys.argv[7]:<4} runs {runs:<3} {variant:<8} {mode:<9} served {served:>3}/{len(cacheable):<3} ({share:5.1f}%, "
      f"{served_of_servable}/{len(servable)} in the bucket)  "
      f"downloaded {downloaded / 2**20:7.1f} MiB, unused {wasted / 2**20:6.1f} MiB ({waste:4.1f}%)  "
      f"waited {waited:5.2f}s  wall {wall:6.2f}s = {wall / plain:.2f} x plain cold")
PY
    unset RUSTC_WRAPPER KACHE_CACHE_DIR KACHE_NAMESPACE KACHE_PLANNER_ENDPOINT KACHE_PREFETCH KACHE_REMOTE_READ_ONLY
    unset KACHE_CACHE_BUILD_SCRIPTS
}

# What the planner heard back from the daemons (cumulative): candidates
# used, downloaded and never used, and fetched by a compile before the
# prefetch had them.
feedback() {
    curl -s "$planner/metrics" | python3 -c '
import sys, collections
total = collections.Counter()
for line in sys.stdin:
    if line.startswith("kache_planner_feedback_candidates_total{"):
        result = line.split("result=\"")[1].split("\"")[0]
        total[result] += float(line.rsplit(" ", 1)[1])
used, unused, late = total["used"], total["unused"], total["late"]
print(f"{used:.0f} {unused:.0f} {late:.0f}")'
}

# The variant: the same lockfile with one dependency moved (a new branch).
cp -r "$work/a" "$work/src-same"; rm -rf "$work/src-same/target"
cp -r "$work/src-same" "$work/src-bumped"
bumped=""
for spec in "itoa 1.0.14" "ryu 1.0.19" "memchr 2.7.4" "bytes 1.9.0"; do
    set -- $spec
    if (cd "$work/src-bumped" && cargo update --quiet -p "$1" --precise "$2" 2>/dev/null); then
        if ! cmp -s "$work/src-same/Cargo.lock" "$work/src-bumped/Cargo.lock"; then
            bumped="$1 → $2"; break
        fi
    fi
done
(cd "$work/src-bumped" && cargo fetch --quiet)
echo "== runner A: build once (local only; each backend gets its push)"
(
    cd "$work/a"
    export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$work/cache-a" KACHE_LOCAL_ONLY=1
    # The runs are stored too (the default), for the runners that use them.
    export KACHE_CACHE_BUILD_SCRIPTS=1
    cargo build --offline --quiet
)
for backend in ${KACHE_BENCH_BACKENDS:-s3 oci}; do
    start_backend "$backend"
    echo "== runner A: push, save the manifest (namespace main)"
    (
        cd "$work/a"
        export RUSTC_WRAPPER="$kache" KACHE_CACHE_DIR="$work/cache-a"
        t0=$(now)
        "$kache" sync --push | tail -2
        "$kache" save-manifest --namespace main | tail -1
        echo "push and save-manifest: $(elapsed "$t0")s"
    )
    # Wait until the planner has scanned the manifest and every shard.
    shards=$(KACHE_CACHE_DIR="$work/cache-a" "$kache" save-manifest --namespace main --dry-run --manifest-path "$work/a/Cargo.toml" | grep -c "/shards/" || true)
    for _ in $(seq 1 600); do
        metrics=$(curl -s "$planner/metrics")
        manifests=$(echo "$metrics" | sed -n 's/.*ingested_documents_total{kind="bucket_manifest"} \([0-9]*\).*/\1/p')
        seen=$(echo "$metrics" | sed -n 's/.*ingested_documents_total{kind="bucket_shard"} \([0-9]*\).*/\1/p')
        [ "${manifests:-0}" -ge 1 ] && [ "${seen:-0}" -ge "$shards" ] && break
        sleep 0.5
    done
    echo "the planner learned: $(curl -s "$planner/metrics" | grep 'ingested_documents_total{kind="bucket' | tr '\n' ' ')"
    echo "== fresh runner B (bumped variant: ${bumped:-none found, same lockfile})"
    for variant in same bumped; do
        for mode in none fallback planner; do
            for runs in ${KACHE_BENCH_RUNS:-on}; do
                read -r u0 n0 l0 < <(feedback)
                run_b "$variant" "$mode" "$backend" "$runs"
                if [ "$mode" = planner ]; then
                    read -r u1 n1 l1 < <(feedback)
                    awk -v u=$((u1 - u0)) -v n=$((n1 - n0)) -v l=$((l1 - l0)) 'BEGIN {
                        printf "         planner feedback: %d used, %d unused, %d late (precision %.2f)\n",
                            u, n, l, (u + n) ? u / (u + n) : 1 }'
                fi
            done
        done
    done
    stop_backend
done
