//! A bucket writer must not own every build. A hostile writer (anyone with
//! write access to the bucket, but not the signing key) plants entries in a
//! real S3 server (Garage); readers then build the fixture and must print
//! what plain cargo prints, with every refusal counted.
//!
//! The writer's tools are the crates kache itself uses (`kache-remote`'s
//! storage and pack writer, `kache-core`'s key), so the planted objects are
//! exactly what a real attacker could upload.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::garage::Garage;
use common::{ENTRIES, EXPECTED_LINE, GEN_RUN, World, gen_run_output, run_app};
use kache_core::key::{Input, full_key};
use kache_core::manifest::{EntryManifest, Signature};
use kache_core::meta::{EntryMeta, FileRecord};
use kache_remote::{Layout, Storage, pack};

/// Builds leave the remote to `kache sync`: no daemon.
const LOCAL: &[(&str, &str)] = &[("KACHE_LOCAL_ONLY", "1")];

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The bucket as a writer without the signing key sees it.
struct Bucket {
    storage: Box<dyn Storage>,
    layout: Layout,
    runtime: tokio::runtime::Runtime,
}

/// One entry as found in the bucket, unpacked.
struct Found {
    crate_name: String,
    manifest: EntryManifest,
    meta: EntryMeta,
    /// The entry's files by name.
    files: tempfile::TempDir,
}

impl Bucket {
    fn open(garage: &Garage) -> Self {
        let spec = kache_remote::s3::S3Spec {
            bucket: garage.bucket.clone(),
            endpoint: Some(garage.endpoint.clone()),
            region: "us-east-1".into(),
            access_key: Some(garage.key_id.clone()),
            secret_key: Some(garage.secret.clone()),
            profile: None,
        };
        Self {
            storage: Box::new(kache_remote::s3::open(&spec).expect("open the bucket")),
            layout: Layout::new("artifacts"),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
        }
    }

    fn list(&self, prefix: &str) -> Vec<String> {
        self.runtime
            .block_on(self.storage.list(prefix))
            .expect("list")
    }

    fn get(&self, object: &str) -> Vec<u8> {
        self.runtime
            .block_on(self.storage.get(object))
            .expect("get")
            .unwrap_or_else(|| panic!("{object} is missing"))
            .to_vec()
    }

    fn put(&self, object: &str, body: Vec<u8>) {
        self.runtime
            .block_on(self.storage.put(object, body.into()))
            .expect("put");
    }

    /// The one entry of `crate_name` (the fixture has one per library).
    fn entry(&self, crate_name: &str) -> Found {
        let manifests = self.list(&format!("artifacts/v3/manifests/{crate_name}"));
        assert_eq!(manifests.len(), 1, "{crate_name}: {manifests:?}");
        let manifest: EntryManifest =
            serde_json::from_slice(&self.get(&manifests[0])).expect("a manifest");
        let files = tempfile::tempdir().expect("tempdir");
        let pack = self.get(&manifest.pack_key);
        let meta = pack::unpack(
            &pack[..],
            files.path(),
            (crate_name, &manifest.cache_key),
            1 << 30,
        )
        .expect("an honest pack unpacks");
        Found {
            crate_name: crate_name.to_string(),
            manifest,
            meta,
            files,
        }
    }

    fn entry_manifests(&self, crate_name: &str) -> Vec<String> {
        self.list(&format!("artifacts/v3/manifests/{crate_name}"))
    }

    fn delete(&self, object: &str) {
        self.runtime
            .block_on(self.storage.delete(object))
            .expect("delete");
    }

    fn put_manifest(&self, manifest: &EntryManifest) {
        let object = self
            .layout
            .entry_manifest(&manifest.crate_name, &manifest.cache_key);
        self.put(&object, serde_json::to_vec(manifest).expect("json"));
    }

    /// Uploads `meta` with `files` (name → bytes) as an unsigned entry, the
    /// way a writer without the key can: pack, manifest, pre-key marker.
    fn plant(&self, meta: &EntryMeta, files: &Path) {
        let mut packed = Vec::new();
        pack::write(
            meta,
            |hash| {
                let record = meta.files.iter().find(|f| f.hash == hash).expect("a file");
                std::fs::File::open(files.join(&record.name))
            },
            3,
            &mut packed,
        )
        .expect("pack");
        let pack_key = self.layout.pack(&meta.crate_name, &meta.cache_key);
        self.put(&pack_key, packed.clone());
        self.put_manifest(&EntryManifest {
            version: 3,
            cache_key: meta.cache_key.clone(),
            crate_name: meta.crate_name.clone(),
            pack_key,
            pack_bytes: packed.len() as u64,
            original_bytes: meta.size(),
            file_count: meta.files.len() as u64,
            pack_blake3: Some(blake3::hash(&packed).to_hex().to_string()),
            signature: None,
        });
        let marker = self
            .layout
            .prekey_marker(&meta.crate_name, &meta.pre_key, &meta.cache_key);
        self.put(&marker, Vec::new());
    }
}

/// Adds a file to an unpacked entry and its meta.
fn add_file(found: &mut Found, name: &str, bytes: &[u8], executable: bool) {
    std::fs::write(found.files.path().join(name), bytes).expect("write");
    found.meta.files.push(FileRecord {
        name: name.to_string(),
        size: bytes.len() as u64,
        hash: blake3::hash(bytes).to_hex().to_string(),
        executable,
        kind: kache_core::args::OutputKind::Immutable,
    });
}

/// `kache keygen` into `dir`: the key file and the public key it printed.
fn keygen(world: &World, dir: &Path) -> (PathBuf, String) {
    let file = dir.join("signing.key");
    let out = world.kache(&["keygen", "--out", file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("a public key line")
        .trim()
        .to_string();
    let mode = std::fs::metadata(&file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is private");
    (file, public)
}

/// A writer with the signing key builds the fixture and pushes it signed.
/// Readers build that same checkout after a `cargo clean` (a unit whose
/// output names its checkout, like `fx_app`'s, hits only there).
fn signed_bucket(garage: &Garage) -> (World, String, PathBuf) {
    let mut writer = World::with_env(garage.env());
    let (key, public) = keygen(&writer, writer.root.path());
    let key = key.to_str().expect("utf-8").to_string();
    writer.env.push(("KACHE_SIGNING_KEY".to_string(), key));
    let project = writer.project("p");
    writer.cargo_with(&project, &["build"], LOCAL).ok();
    let out = writer.kache_in(&project, &["sync", "--push"], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    (writer, public, project)
}

/// A reader that trusts `public` (or nothing, when `None`).
fn reader(garage: &Garage, public: Option<&str>) -> World {
    let mut env = garage.env();
    if let Some(public) = public {
        env.push(("KACHE_TRUSTED_KEYS".into(), public.to_string()));
    }
    World::with_env(env)
}

fn stats(world: &World) -> String {
    let out = world.kache(&["stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn an_honest_signed_round_trip_serves_every_unit() {
    let garage = Garage::start();
    let (_writer, public, project) = signed_bucket(&garage);
    let bucket = Bucket::open(&garage);
    // Every library unit and fx-gen's build-script run, each signed.
    for crate_name in ENTRIES {
        let found = bucket.entry(crate_name);
        let signature = found.manifest.signature.as_ref().expect("signed");
        assert_eq!(signature.key, public);
        assert!(found.manifest.pack_blake3.is_some());
    }
    let ran = gen_run_output(&project);

    let b = reader(&garage, Some(&public));
    b.cargo(&project, &["clean"]).ok();
    let out = b.kache_in(&project, &["sync", "--pull", "--all"], &[]);
    assert!(
        stdout(&out).contains(&format!("pulled {} entries", ENTRIES.len())),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let warm = b.cargo_with(&project, &["build"], LOCAL).ok();
    for name in ENTRIES {
        assert_eq!(warm.outcome(name), "hit", "{name}: {:?}", warm.outcomes());
    }
    assert_eq!(gen_run_output(&project), ran);
    assert_eq!(run_app(&project), EXPECTED_LINE);
    assert!(!stats(&b).contains("refused"), "{}", stats(&b));
}

#[test]
fn forged_and_swapped_entries_are_refused_before_unpacking_and_counted() {
    let garage = Garage::start();
    let (_writer, public, project) = signed_bucket(&garage);
    let bucket = Bucket::open(&garage);

    // 1. Unsigned: the signature stripped.
    let mut unsigned = bucket.entry("fx_gen").manifest;
    unsigned.signature = None;
    bucket.put_manifest(&unsigned);
    // 2. Signed by a key nobody trusts, over the honest fields.
    let hostile = World::new();
    let (hostile_key, _) = keygen(&hostile, hostile.root.path());
    let hostile_key =
        kache_remote::sign::SigningKey::parse(&std::fs::read_to_string(hostile_key).unwrap())
            .unwrap();
    let mut untrusted = bucket.entry("fx_macros").manifest;
    untrusted.signature = Some(hostile_key.sign(&untrusted.signed_message()));
    bucket.put_manifest(&untrusted);
    // 3. An honest signature moved onto another entry's manifest.
    let donor = bucket.entry("fx_app").manifest;
    let mut moved = bucket.entry("build_script_build").manifest;
    moved.signature = donor.signature.clone();
    bucket.put_manifest(&moved);
    // 4. A pack swapped under an honest manifest: another valid pack of the
    //    same crate, self-consistent, but not the one signed.
    let mut core = bucket.entry("fx_core");
    add_file(
        &mut core,
        "fx_core-notes.txt",
        b"not the signed pack",
        false,
    );
    let mut swapped = Vec::new();
    pack::write(
        &core.meta,
        |hash| {
            let record = core.meta.files.iter().find(|f| f.hash == hash).unwrap();
            std::fs::File::open(core.files.path().join(&record.name))
        },
        3,
        &mut swapped,
    )
    .unwrap();
    bucket.put(&core.manifest.pack_key, swapped);
    let _ = &core.crate_name;

    let ran = gen_run_output(&project);
    let b = reader(&garage, Some(&public));
    b.cargo(&project, &["clean"]).ok();
    let out = b.kache_in(&project, &["sync", "--pull", "--all"], &[]);
    assert!(
        stdout(&out).contains("pulled 2 entries"),
        "only fx_app and fx-gen's build-script run are intact: {}{}",
        stdout(&out),
        stderr(&out)
    );
    // The store holds nothing of what was refused (the build then compiles
    // and stores the same keys honestly).
    let pulled: Vec<String> = std::fs::read_dir(b.cache.join("store"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    for refused in [&unsigned.cache_key, &untrusted.cache_key, &moved.cache_key] {
        assert!(!pulled.contains(refused), "{refused} was imported");
    }

    let build = b.cargo_with(&project, &["build"], LOCAL).ok();
    assert_eq!(build.outcome("fx_app"), "hit", "{:?}", build.outcomes());
    // The honest run is served though its script's compile entry was
    // refused: the script compiled here is the same binary.
    assert_eq!(build.outcome(GEN_RUN), "hit", "{:?}", build.outcomes());
    assert_eq!(gen_run_output(&project), ran);
    for forged in ["fx_gen", "fx_macros", "fx_core", "build_script_build"] {
        assert_ne!(
            build.outcome(forged),
            "hit",
            "{forged}: {:?}",
            build.outcomes()
        );
    }
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let stats = stats(&b);
    for counted in [
        "unsigned 1",
        "untrusted key 1",
        "bad signature 1",
        "pack mismatch 1",
    ] {
        assert!(stats.contains(counted), "{counted}: {stats}");
    }
    // Without trusted keys the remote is unauthenticated, and doctor says so.
    let open = reader(&garage, None);
    let doctor = stdout(&open.kache(&["doctor"]));
    assert!(doctor.contains("unauthenticated"), "{doctor}");
    let doctor = stdout(&b.kache(&["doctor"]));
    assert!(doctor.contains("only when signed"), "{doctor}");
}

#[test]
fn an_entry_restores_only_what_its_compile_writes_signed_or_not() {
    let garage = Garage::start();
    let (_writer, _public, project) = signed_bucket(&garage);
    let bucket = Bucket::open(&garage);
    let deps = project.join("target/debug/deps");
    let name_like = |prefix: &str| -> String {
        std::fs::read_dir(&deps)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in deps"))
    };
    // fx_core's entry also carries fx_gen's rlib (poisoned) and the app's
    // test executable, both under the names the reader's build uses.
    let mut core = bucket.entry("fx_core");
    let gen_rlib = name_like("libfx_gen-");
    let app_exe = name_like("fx_app-");
    add_file(&mut core, &gen_rlib, b"poisoned rlib", false);
    add_file(&mut core, &app_exe, b"#!/bin/sh\necho pwned\n", true);
    bucket.plant(&core.meta, core.files.path());
    // fx_gen's entry claims its rlib is executable.
    let mut gen_entry = bucket.entry("fx_gen");
    for file in &mut gen_entry.meta.files {
        file.executable = true;
    }
    bucket.plant(&gen_entry.meta, gen_entry.files.path());

    // A reader that trusts everything (no keys): still only what it asked.
    let b = reader(&garage, None);
    b.cargo(&project, &["clean"]).ok();
    let out = b.kache_in(&project, &["sync", "--pull", "--all"], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let build = b.cargo_with(&project, &["build"], LOCAL).ok();
    assert_ne!(build.outcome("fx_core"), "hit", "{:?}", build.outcomes());
    assert_eq!(build.outcome("fx_gen"), "hit", "{:?}", build.outcomes());
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let deps = project.join("target/debug/deps");
    for item in std::fs::read_dir(&deps).unwrap().flatten() {
        let bytes = std::fs::read(item.path()).unwrap_or_default();
        let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            !holds(b"pwned") && !holds(b"poisoned rlib"),
            "{} holds planted bytes",
            item.path().display()
        );
        let name = item.file_name().to_string_lossy().to_string();
        if name.ends_with(".rlib") || name.ends_with(".rmeta") {
            let mode = item.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0, "{name} was restored executable");
        }
    }
}

#[test]
fn impossible_inputs_are_never_read_and_the_entry_is_dropped() {
    let garage = Garage::start();
    let (_writer, _public, project) = signed_bucket(&garage);
    let bucket = Bucket::open(&garage);
    // fx_gen under its real pre-key, recorded as having read /dev/zero.
    let mut zero = bucket.entry("fx_gen");
    zero.meta.inputs.insert(
        0,
        Input {
            path: "/dev/zero".into(),
            hash: "0".repeat(64),
        },
    );
    zero.meta.cache_key = full_key(&zero.meta.pre_key, &zero.meta.inputs, &zero.meta.env_deps);
    bucket.plant(&zero.meta, zero.files.path());
    // fx_core, recorded as having read a file of the workspace that is a
    // FIFO on the reader's machine (reading it would hang the build).
    let mut fifo = bucket.entry("fx_core");
    fifo.meta.inputs.insert(
        0,
        Input {
            path: "{kache:ws}/core/pipe".into(),
            hash: "1".repeat(64),
        },
    );
    fifo.meta.cache_key = full_key(&fifo.meta.pre_key, &fifo.meta.inputs, &fifo.meta.env_deps);
    bucket.plant(&fifo.meta, fifo.files.path());
    // The honest fx_core entry goes, so the lookup must examine the FIFO one.
    let honest = bucket.entry_manifests("fx_core");
    for object in honest.iter().filter(|o| !o.contains(&fifo.meta.cache_key)) {
        bucket.delete(object);
    }

    let b = reader(&garage, None);
    b.cargo(&project, &["clean"]).ok();
    let pipe = project.join("core/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    let out = b.kache_in(&project, &["sync", "--pull", "--all"], &[]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("outside the roots"), "{said}");
    let store = b.cache.join("store");
    assert!(
        !store.join(&zero.meta.cache_key).exists(),
        "/dev/zero entry imported"
    );
    assert!(
        store.join(&fifo.meta.cache_key).exists(),
        "the FIFO entry is confined"
    );

    let build = b.cargo_with(&project, &["build"], LOCAL).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
    assert!(
        !store.join(&fifo.meta.cache_key).exists(),
        "an entry whose input is a FIFO is removed, not tried again"
    );
    let _ = build;
    // The /dev/zero entry is remembered as impossible: not fetched again.
    let again = b.kache_in(&project, &["sync", "--pull", "--all"], &[]);
    let said = format!("{}{}", stdout(&again), stderr(&again));
    assert!(!said.contains("outside the roots"), "{said}");
}

#[test]
fn a_pull_request_from_a_fork_writes_nothing() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"action":"synchronize","number":7,"pull_request":{
            "head":{"ref":"feature","repo":{"full_name":"mallory/fx","fork":true}},
            "base":{"ref":"main","repo":{"full_name":"team/fx","fork":false}}}}"#,
    )
    .unwrap();
    let fork = World::with_env(
        garage
            .env()
            .into_iter()
            .chain([
                ("GITHUB_EVENT_PATH".to_string(), event.display().to_string()),
                ("GITHUB_EVENT_NAME".to_string(), "pull_request".to_string()),
            ])
            .collect(),
    );
    let project = fork.project("p");
    fork.cargo_with(&project, &["build"], LOCAL).ok();
    let out = fork.kache_in(&project, &["sync", "--push"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("read-only for this run"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("mallory/fx"), "{}", stdout(&out));
    let out = fork.kache_in(&project, &["save-manifest", "--namespace", "pr-7"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A build through the daemon queues no upload either, and says so once.
    let build = fork.cargo_with(&project, &["build", "--release"], &[]).ok();
    let said = build.stderr();
    assert_eq!(said.matches("read-only for this run").count(), 1, "{said}");
    let bucket = Bucket::open(&garage);
    assert_eq!(bucket.list("artifacts"), Vec::<String>::new());

    // The explicit setting wins over the detection.
    let out = fork.kache_in(
        &project,
        &["sync", "--push"],
        &[("KACHE_REMOTE_READ_ONLY", "0")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!bucket.list("artifacts/v3/manifests").is_empty());
}

/// A manifest's signature covers the pack hash: a signature made before the
/// pack hash existed (or with it removed) cannot be reused.
#[test]
fn the_signed_message_binds_every_field_a_reader_acts_on() {
    let (key, _) = kache_remote::sign::SigningKey::generate().unwrap();
    let trusted = kache_remote::sign::TrustedKeys::from_keys(vec![key.public()]);
    let honest = EntryManifest {
        version: 3,
        cache_key: "a".repeat(64),
        crate_name: "demo".into(),
        pack_key: "artifacts/v3/packs/demo/x.tar.zst".into(),
        pack_bytes: 10,
        original_bytes: 20,
        file_count: 2,
        pack_blake3: Some("b".repeat(64)),
        signature: None,
    };
    let signature: Signature = key.sign(&honest.signed_message());
    assert!(
        trusted
            .verify(&honest.signed_message(), Some(&signature))
            .is_ok()
    );
    let variants = [
        EntryManifest {
            cache_key: "c".repeat(64),
            ..honest.clone()
        },
        EntryManifest {
            crate_name: "other".into(),
            ..honest.clone()
        },
        EntryManifest {
            pack_key: "artifacts/v3/packs/other/x.tar.zst".into(),
            ..honest.clone()
        },
        EntryManifest {
            pack_bytes: 11,
            ..honest.clone()
        },
        EntryManifest {
            pack_blake3: Some("d".repeat(64)),
            ..honest.clone()
        },
        EntryManifest {
            pack_blake3: None,
            ..honest.clone()
        },
    ];
    for variant in variants {
        assert!(
            trusted
                .verify(&variant.signed_message(), Some(&signature))
                .is_err(),
            "{variant:?}"
        );
    }
}

#[test]
fn the_planner_learns_only_from_signed_manifests_and_shards_where_they_were_signed() {
    let garage = Garage::start();
    let (writer, public, project) = signed_bucket(&garage);
    let out = writer.kache_in(&project, &["save-manifest", "--namespace", "main"], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let bucket = Bucket::open(&garage);
    let shards = bucket.list("artifacts/_manifests/v3/main/shards");
    assert!(!shards.is_empty(), "save-manifest wrote shards");
    let honest_shard: serde_json::Value = serde_json::from_slice(&bucket.get(&shards[0])).unwrap();
    assert!(honest_shard["signature"].is_object(), "{honest_shard}");
    let name = shards[0].rsplit('/').next().unwrap();
    // A signed shard replayed into another namespace, an unsigned copy, and
    // a signed build manifest with an entry changed.
    bucket.put(
        &format!("artifacts/_manifests/v3/pr-7/shards/{name}"),
        bucket.get(&shards[0]),
    );
    let mut unsigned = honest_shard.clone();
    unsigned.as_object_mut().unwrap().remove("signature");
    bucket.put(
        &format!("artifacts/_manifests/v3/pr-8/shards/{name}"),
        serde_json::to_vec(&unsigned).unwrap(),
    );
    let manifests: Vec<String> = bucket
        .list("artifacts/_manifests")
        .into_iter()
        .filter(|o| !o.contains("/v3/"))
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let mut tampered: serde_json::Value =
        serde_json::from_slice(&bucket.get(&manifests[0])).unwrap();
    tampered["entries"][0]["cache_key"] = serde_json::Value::String("e".repeat(64));
    bucket.put(
        &manifests[0].replace(".json", "-copy.json"),
        serde_json::to_vec(&tampered).unwrap(),
    );

    let mut env = garage.env();
    env.push(("KACHE_PLANNER_TRUSTED_KEYS".into(), public.clone()));
    let service = common::service::Service::start_with(&["--scan-interval", "1"], &env);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let refused = |reason: &str| {
        service.metric(&format!(
            "kache_planner_refused_documents_total{{kind=\"{reason}\"}}"
        ))
    };
    while refused("bad signature") + refused("unsigned") < 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the scan never refused them"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(refused("unsigned"), 1.0);
    assert_eq!(
        refused("bad signature"),
        2.0,
        "the moved shard and the tampered manifest"
    );
    assert_eq!(
        service.metric("kache_planner_ingested_documents_total{kind=\"bucket_manifest\"}"),
        1.0
    );
    assert_eq!(
        service.metric("kache_planner_ingested_documents_total{kind=\"bucket_shard\"}"),
        shards.len() as f64
    );
    // Over HTTP too: an unsigned manifest is 403 and teaches nothing.
    let (status, body) = service.request(
        "POST",
        "/v2/manifests",
        &serde_json::to_string(&unsigned_manifest()).unwrap(),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("unsigned"), "{body}");
}

fn unsigned_manifest() -> serde_json::Value {
    serde_json::json!({"version": 3, "created": "2026-12-01T00:00:00Z",
        "manifest_key": "x86_64-unknown-linux-gnu",
        "entries": [{"cache_key": "f".repeat(64), "crate_name": "serde"}]})
}
