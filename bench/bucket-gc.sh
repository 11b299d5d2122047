#!/usr/bin/env bash
# Benchmark (not a test): 30 simulated days of CI against a bucket, with and
# without the planner's collection (`kache-service gc`), side by side.
#
# How it is simulated: no cargo runs. A workspace of WS (default 12) crates
# on DEPS (default 40) third-party crates is "built" by computing each
# crate's cache key from what it depends on (a third-party crate: its
# version; a workspace crate: its source revision and every dependency's
# version), so a dependency bump changes that crate's key and every
# workspace crate's. Every day `main` builds 4 times (each commit edits 1-2
# workspace crates) and a feature branch builds twice (its own edits, and
# its own dependency bumps). A dependency is bumped on main every 3-4 days
# (the branch takes main's versions when it rebases, weekly). A build hits a
# key whose entry (manifest and pack) is in the bucket; each miss uploads
# the entry exactly as kache does (pack, entry manifest, pre-key marker,
# sizes 20-400 KiB, scaled down 1:10 from real packs), then the build writes
# its build manifest (`_manifests/{branch}.json`, overwritten) and its
# Cargo.lock shard (`_manifests/v3/{branch}/shards/{lock hash}.json`, one per
# lock). Every file is dated at its simulated time (mtime and `created`), in
# a shared directory (the clients' `type = "fs"` remote: the same listing
# and deletion code as S3); at the end of each simulated day the planner
# collects with its clock at that time (`KACHE_PLANNER_GC_NOW_MS`), keep
# window KEEP_DAYS (default 14), grace 6 h, and optionally MAX_BYTES.
#
# Printed: per day, bucket bytes without and with collection, and main's
# hit rate on each side (the collection must not lower it), then totals and
# both branches' mean hit rates.
#
# Usage: bash bench/bucket-gc.sh   (DAYS=30 KEEP_DAYS=14 MAX_BYTES= SEED=7)
# Work files go to bench/work/bucket-gc (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/work/bucket-gc"
rm -rf "$work"
mkdir -p "$work"
cargo build -q -p kache-service --release --manifest-path "$root/Cargo.toml"
bin="$root/target/release/kache-service"

DAYS="${DAYS:-30}" KEEP_DAYS="${KEEP_DAYS:-14}" MAX_BYTES="${MAX_BYTES:-}" \
SEED="${SEED:-7}" WS="${WS:-12}" DEPS="${DEPS:-40}" \
python3 - "$bin" "$work" <<'PY'
import hashlib, json, os, random, subprocess, sys, time

bin_, work = sys.argv[1], sys.argv[2]
DAYS, KEEP = int(os.environ["DAYS"]), int(os.environ["KEEP_DAYS"])
MAX_BYTES = os.environ["MAX_BYTES"]
WS, DEPS = int(os.environ["WS"]), int(os.environ["DEPS"])
DAY = 86_400
START = int(time.time()) - (DAYS + 1) * DAY  # simulated day 0, in the past

def key(*parts):
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()

def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

class Bucket:
    def __init__(self, name, collect):
        self.dir = os.path.join(work, name)
        self.db = os.path.join(work, name + ".db")
        self.collect = collect
        os.makedirs(self.dir)
    def path(self, obj):
        return os.path.join(self.dir, "artifacts", obj)
    def put(self, obj, body, t):
        p = self.path(obj)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(body)
        os.utime(p, (t, t))
    def exists(self, obj):
        return os.path.exists(self.path(obj))
    def bytes(self):
        total = 0
        for d, _, files in os.walk(self.dir):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
        return total
    def gc(self, t):
        if not self.collect:
            return ""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KACHE_")}
        env["KACHE_PLANNER_GC_NOW_MS"] = str(t * 1000)
        args = [bin_, "--db-path", self.db, "--remote-dir", self.dir,
                "--gc-keep-days", str(KEEP), "--gc-grace", str(6 * 3600)]
        if MAX_BYTES:
            args += ["--gc-max-bytes", MAX_BYTES]
        out = subprocess.run(args + ["gc"], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit("gc failed: " + out.stderr.strip().splitlines()[-1])
        return out.stdout

class Branch:
    def __init__(self, name, rng):
        self.name, self.rng = name, rng
        self.versions = {f"dep{i}": 1 for i in range(DEPS)}
        self.revisions = {f"ws{i}": 0 for i in range(WS)}
    def keys(self):
        lock = tuple(sorted(self.versions.items()))
        out = [(c, key(c, v), 10_000 + int(key(c, v)[:8], 16) % 50_000) for c, v in lock]
        for c, r in self.revisions.items():
            out.append((c, key(c, r, self.name if r else "", lock), 30_000))
        return out, key(lock)
    def commit(self):
        for c in self.rng.sample(sorted(self.revisions), self.rng.randint(1, 2)):
            self.revisions[c] += 1

def build(bucket, branch, t, rng):
    keys, lock = branch.keys()
    hits = 0
    for crate, k, compile_ms in keys:
        if bucket.exists(f"v3/manifests/{crate}/{k}.json") and bucket.exists(
                f"v3/packs/{crate}/{k}.tar.zst"):
            hits += 1
            continue
        size = rng.randint(20, 400) * 1024 // 10
        bucket.put(f"v3/packs/{crate}/{k}.tar.zst", b"\0" * size, t)
        bucket.put(f"v3/manifests/{crate}/{k}.json",
                   json.dumps({"version": 3, "cache_key": k, "crate_name": crate}).encode(), t + 1)
        bucket.put(f"v3/prekeys/{crate}/{key('pre', crate, k)}/{k}", b"", t + 1)
    entries = [{"cache_key": k, "crate_name": c, "compile_time_ms": ms, "artifact_size": 0}
               for c, k, ms in keys]
    manifest = {"version": 3, "created": rfc3339(t + 60), "manifest_key": branch.name,
                "entries": entries}
    bucket.put(f"_manifests/{branch.name}.json", json.dumps(manifest).encode(), t + 60)
    shard = {"version": 3, "entries": [e for e in entries if e["crate_name"].startswith("dep")]}
    bucket.put(f"_manifests/v3/{branch.name}/shards/{lock}.json", json.dumps(shard).encode(), t + 60)
    return hits, len(keys)

def simulate(bucket):
    rng = random.Random(int(os.environ["SEED"]))
    main, feature = Branch("main", random.Random(1)), Branch("feature", random.Random(2))
    next_bump = 3
    days = []
    for day in range(1, DAYS + 1):
        t0 = START + day * DAY
        if day >= next_bump:
            main.versions[f"dep{rng.randrange(DEPS)}"] += 1
            next_bump = day + rng.choice([3, 4])
        if day % 7 == 0:  # the branch rebases on main
            feature.versions = dict(main.versions)
        if day % 10 == 5:  # and bumps one dependency of its own
            feature.versions[f"dep{rng.randrange(DEPS)}"] += 1
        main_hits = main_total = 0
        for i in range(4):
            main.commit()
            h, n = build(bucket, main, t0 + 9 * 3600 + i * 7200, rng)
            main_hits, main_total = main_hits + h, main_total + n
        feature_hits = feature_total = 0
        for i in range(2):
            feature.commit()
            h, n = build(bucket, feature, t0 + 10 * 3600 + i * 14400, rng)
            feature_hits, feature_total = feature_hits + h, feature_total + n
        bucket.gc(t0 + 23 * 3600)
        days.append((bucket.bytes(), main_hits / main_total, feature_hits / feature_total))
    return days

plain = simulate(Bucket("plain", False))
started = time.time()
collected = simulate(Bucket("collected", True))
elapsed = time.time() - started
print(f"{DAYS} days, keep {KEEP} days, max bytes {MAX_BYTES or 'unset'}, "
      f"{WS} workspace crates on {DEPS} dependencies")
print(f"{'day':>4} {'bytes (no gc)':>14} {'bytes (gc)':>12} {'main hits (no gc)':>18} {'main hits (gc)':>15}")
for day, ((b0, h0, _), (b1, h1, _)) in enumerate(zip(plain, collected), 1):
    print(f"{day:>4} {b0:>14,} {b1:>12,} {h0:>17.1%} {h1:>14.1%}")
mean = lambda xs: sum(xs) / len(xs)
print(f"final bytes: {plain[-1][0]:,} without, {collected[-1][0]:,} with collection "
      f"({collected[-1][0] / plain[-1][0]:.0%})")
for name, i in [("main", 1), ("feature", 2)]:
    print(f"{name}'s mean hit rate: {mean([d[i] for d in plain]):.2%} without, "
          f"{mean([d[i] for d in collected]):.2%} with")
print(f"the collected side's 30 days took {elapsed:.1f} s (builds and {DAYS} collections)")
PY
