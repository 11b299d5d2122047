//! The planner collects the bucket (a real S3 server, Garage) without
//! deleting what builds use: entries referenced by young build manifests or
//! shards, used by a plan lately, or still being uploaded survive; the rest
//! goes, manifest first; a dry run deletes nothing; a read-only key fails
//! the run in one line.

mod common;
#[path = "../../kache/tests/common/garage.rs"]
#[allow(dead_code)]
mod garage;

use std::process::Command;
use std::time::Duration;

use common::{Service, command, key, temp_db};
use garage::Garage;
use kache_remote::{Layout, Storage};
use serde_json::json;

const PREFIX: &str = "artifacts";

/// The bucket, written to as clients do.
struct Bucket {
    garage: Garage,
    storage: Box<dyn Storage>,
    runtime: tokio::runtime::Runtime,
    layout: Layout,
}

impl Bucket {
    fn start() -> Self {
        let garage = Garage::start();
        let storage = open(&garage, &garage.key_id, &garage.secret);
        Self {
            garage,
            storage,
            runtime: tokio::runtime::Runtime::new().unwrap(),
            layout: Layout::new(PREFIX),
        }
    }

    fn put(&self, name: &str, body: Vec<u8>) {
        self.runtime
            .block_on(self.storage.put(name, body.into()))
            .unwrap();
    }

    fn exists(&self, name: &str) -> bool {
        self.runtime.block_on(self.storage.exists(name)).unwrap()
    }

    /// The pack of an entry (written first, as clients do).
    fn pack(&self, crate_name: &str, label: &str) -> String {
        let name = self.layout.pack(crate_name, &key(label));
        self.put(&name, vec![7; 1000]);
        name
    }

    /// The rest of an entry after its pack: manifest, then marker.
    fn commit(&self, crate_name: &str, label: &str) -> Vec<String> {
        let manifest = self.layout.entry_manifest(crate_name, &key(label));
        self.put(&manifest, br#"{"version":3}"#.to_vec());
        let marker =
            self.layout
                .prekey_marker(crate_name, &key(&format!("pre-{label}")), &key(label));
        self.put(&marker, Vec::new());
        vec![manifest, marker]
    }

    /// A whole entry: every object name, manifest first.
    fn entry(&self, crate_name: &str, label: &str) -> Vec<String> {
        let pack = self.pack(crate_name, label);
        let mut names = self.commit(crate_name, label);
        names.insert(1, pack);
        names
    }

    /// A build manifest created `days_ago`, referencing `labels` (of `serde`).
    fn build_manifest(&self, name: &str, days_ago: u64, labels: &[&str]) -> String {
        let object = self.layout.build_manifest(name);
        self.put(
            &object,
            serde_json::to_vec(&manifest(name, days_ago, labels)).unwrap(),
        );
        object
    }

    /// The service's settings for this bucket, with `key` credentials.
    fn args(&self, key_id: &str, secret: &str) -> Vec<String> {
        [
            "--s3-bucket",
            &self.garage.bucket,
            "--s3-endpoint",
            &self.garage.endpoint,
            "--s3-access-key",
            key_id,
            "--s3-secret-key",
            secret,
            "--s3-prefix",
            PREFIX,
        ]
        .map(String::from)
        .to_vec()
    }
}

fn open(garage: &Garage, key_id: &str, secret: &str) -> Box<dyn Storage> {
    kache_remote::open(&kache_remote::Backend::S3(kache_remote::s3::S3Spec {
        bucket: garage.bucket.clone(),
        endpoint: Some(garage.endpoint.clone()),
        region: "us-east-1".into(),
        access_key: Some(key_id.into()),
        secret_key: Some(secret.into()),
        profile: None,
    }))
    .unwrap()
}

fn manifest(name: &str, days_ago: u64, labels: &[&str]) -> kache_core::manifest::BuildManifest {
    let created = std::time::SystemTime::now() - Duration::from_secs(days_ago * 86_400);
    let secs = created
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    serde_json::from_value(json!({
        "version": 3,
        "created": rfc3339(secs),
        "manifest_key": name,
        "entries": labels.iter().map(|l| json!({"cache_key": key(l), "crate_name": "serde",
                                                 "compile_time_ms": 500, "artifact_size": 1000}))
                          .collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// `secs` since the epoch in RFC 3339 (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Runs `kache-service … gc [extra]`: (exit code, stdout, stderr).
fn gc(
    bucket: &Bucket,
    db: &std::path::Path,
    settings: &[&str],
    extra: &[&str],
) -> (i32, String, String) {
    let args = bucket.args(&bucket.garage.key_id, &bucket.garage.secret);
    gc_with(db, &args, settings, extra)
}

fn gc_with(
    db: &std::path::Path,
    args: &[String],
    settings: &[&str],
    extra: &[&str],
) -> (i32, String, String) {
    let mut cmd: Command = command(db, &[]);
    cmd.args(args).args(settings).arg("gc").args(extra);
    let out = cmd.output().expect("run kache-service gc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Objects written before this are past a zero grace period.
fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn what_the_newest_manifests_reference_survives_and_the_rest_goes_after_a_dry_run_that_deletes_nothing()
 {
    let bucket = Bucket::start();
    let a = bucket.entry("serde", "a");
    let b = bucket.entry("serde", "b");
    let c = bucket.entry("serde", "c");
    let d = bucket.entry("serde", "d");
    // A shard references one more, in another crate.
    let s = bucket.entry("anyhow", "s");
    let shard = bucket.layout.shard("ci", &"0".repeat(64));
    bucket.put(
        &shard,
        json!({"version": 3, "entries": [{"cache_key": key("s"), "crate_name": "anyhow"}]})
            .to_string()
            .into_bytes(),
    );
    // Interrupted uploads: a pack without its manifest, a lone marker.
    let orphan = bucket.pack("serde", "orphan");
    let marker = bucket
        .layout
        .prekey_marker("serde", &key("pre-x"), &key("lone"));
    bucket.put(&marker, Vec::new());
    // Three generations: the oldest (outside the 14-day window) references
    // `a` and `b`; `b`, old as it is, is referenced again by the next.
    bucket.build_manifest("gen1", 30, &["a", "b"]);
    bucket.build_manifest("gen2", 2, &["b", "c"]);
    bucket.build_manifest("gen3", 1, &["c", "d"]);
    settle();

    let (_dir, db) = temp_db();
    let grace = ["--gc-grace", "0"];
    let (code, out, err) = gc(&bucket, &db, &grace, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("would delete unreferenced {}", a[0])),
        "{out}"
    );
    assert!(
        out.contains(&format!("would delete orphan_pack {orphan}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("would delete orphan_marker {marker}")),
        "{out}"
    );
    assert!(out.contains("kept referenced: 4"), "{out}");
    for name in a.iter().chain([&orphan, &marker]) {
        assert!(bucket.exists(name), "the dry run deleted {name}");
    }

    let (code, out, err) = gc(&bucket, &db, &grace, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("deleted unreferenced {}", a[0])),
        "{out}"
    );
    for name in a.iter().chain([&orphan, &marker]) {
        assert!(!bucket.exists(name), "{name} survived");
    }
    for name in b.iter().chain(&c).chain(&d).chain(&s) {
        assert!(bucket.exists(name), "{name} was deleted");
    }
    // Nothing is left to collect.
    let (code, out, _) = gc(&bucket, &db, &grace, &[]);
    assert_eq!(code, 0);
    assert!(!out.contains("deleted unreferenced"), "{out}");
}

#[test]
fn an_upload_racing_the_collection_survives_whole() {
    let bucket = Bucket::start();
    // A build is uploading: packs before and while the collection runs,
    // their manifests and the build manifest after it.
    bucket.pack("serde", "early");
    let (_dir, db) = temp_db();
    let args = bucket.args(&bucket.garage.key_id, &bucket.garage.secret);
    let racing = std::thread::scope(|scope| {
        let collection = scope.spawn(|| gc_with(&db, &args, &["--gc-grace", "3600"], &[]));
        let mut written = vec!["early".to_string()];
        for i in 0..20 {
            let label = format!("racing-{i}");
            bucket.pack("serde", &label);
            written.push(label);
        }
        let (code, out, err) = collection.join().unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("deleted"), "{out}");
        written
    });
    let mut names = Vec::new();
    for label in &racing {
        names.extend(bucket.commit("serde", label));
        names.push(bucket.layout.pack("serde", &key(label)));
    }
    let labels: Vec<&str> = racing.iter().map(String::as_str).collect();
    bucket.build_manifest("racing", 0, &labels);
    // A later collection with a zero grace period: the build manifest now
    // protects every entry of the build.
    settle();
    let (code, out, err) = gc(&bucket, &db, &["--gc-grace", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("kept referenced: {}", racing.len())),
        "{out}"
    );
    for name in &names {
        assert!(bucket.exists(name), "{name} was lost");
    }
}

#[test]
fn with_trusted_keys_only_signed_manifests_protect_and_a_read_only_key_fails_in_one_line() {
    let bucket = Bucket::start();
    let signed_entry = bucket.entry("serde", "signed");
    let unsigned_entry = bucket.entry("serde", "unsigned");
    let (signing, _) = kache_remote::sign::SigningKey::generate().unwrap();
    let object = bucket.layout.build_manifest("main");
    let mut signed = manifest("main", 0, &["signed"]);
    signed.signature = Some(signing.sign(&signed.signed_message(&object)));
    bucket.put(&object, serde_json::to_vec(&signed).unwrap());
    // A hostile writer's unsigned manifest pins nothing.
    bucket.build_manifest("hostile", 0, &["unsigned"]);
    settle();

    let (_dir, db) = temp_db();
    let trusted = signing.public().to_string();
    let settings = ["--gc-grace", "0", "--trusted-keys", trusted.as_str()];
    // A key that may only read: a dry run works, a collection fails in one
    // line, and nothing is deleted.
    let (ro_id, ro_secret) = bucket.garage.read_only_key("kache-ro");
    let read_only = bucket.args(&ro_id, &ro_secret);
    let (code, out, err) = gc_with(&db, &read_only, &settings, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("would delete unreferenced {}", unsigned_entry[0])),
        "{out}"
    );
    let (code, _, err) = gc_with(&db, &read_only, &settings, &[]);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kache-service: ") && last.contains("access denied"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(bucket.exists(&unsigned_entry[0]));

    let (code, _, err) = gc(&bucket, &db, &settings, &[]);
    assert_eq!(code, 0, "{err}");
    for name in &unsigned_entry {
        assert!(!bucket.exists(name), "{name} survived");
    }
    for name in &signed_entry {
        assert!(bucket.exists(name), "{name} was deleted");
    }
}

#[test]
fn the_route_needs_the_ingest_scope_and_keeps_what_plans_used() {
    let bucket = Bucket::start();
    // Referenced only by an old manifest, but a build used it lately.
    let used = bucket.entry("serde", "used");
    let unused = bucket.entry("serde", "unused");
    bucket.build_manifest("old", 30, &["used", "unused"]);
    settle();

    let (_dir, db) = temp_db();
    let mut args = bucket.args(&bucket.garage.key_id, &bucket.garage.secret);
    args.extend(
        [
            "--gc-grace",
            "0",
            "--scan-interval",
            "1",
            "--token",
            "plan-token",
            "--ingest-token",
            "ingest-token",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let service = Service::start(&db, &args);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while service.metric("kache_planner_ingested_documents_total{kind=\"bucket_manifest\"}") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no scan");
        std::thread::sleep(Duration::from_millis(200));
    }
    let plan = common::post(
        &service.url,
        "/v2/prefetch-plan",
        &json!({"crate_names": ["serde"]}).to_string(),
        Some("plan-token"),
    )
    .json();
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    let feedback = json!({"plan_id": plan_id, "used": [key("used")]}).to_string();
    let reply = service.post("/v2/plan-feedback", &feedback, Some("ingest-token"));
    assert_eq!(reply.status, 200, "{}", reply.body);

    assert_eq!(service.post("/v2/gc", "", None).status, 401);
    assert_eq!(service.post("/v2/gc", "", Some("plan-token")).status, 403);
    let reply = service.post("/v2/gc?dry_run=true", "", Some("ingest-token"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let report = reply.json();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["kept"]["used"], 1, "{report}");
    assert_eq!(report["deleted"]["unreferenced"]["entries"], 1, "{report}");
    assert!(bucket.exists(&unused[0]));

    let reply = service.post("/v2/gc", "", Some("ingest-token"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    for name in &unused {
        assert!(!bucket.exists(name), "{name} survived");
    }
    for name in &used {
        assert!(bucket.exists(name), "{name} was deleted");
    }
    assert_eq!(
        service.metric("kache_planner_gc_deleted_entries_total{reason=\"unreferenced\"}"),
        1.0
    );
    assert_eq!(
        service.metric("kache_planner_gc_kept_entries{reason=\"used\"}"),
        1.0
    );
    assert_eq!(
        service.metric("kache_planner_gc_runs_total{outcome=\"dry_run\"}"),
        1.0
    );
    assert!(service.metric("kache_planner_gc_bucket_bytes{when=\"before\"}") > 0.0);
}
