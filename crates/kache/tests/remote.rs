//! The shared cache: `kache sync` against a real S3 server (Garage, a
//! separate process on loopback that checks SigV4) and the shared-directory
//! backend, with real cargo builds on both sides.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Output;

use common::garage::Garage;
use common::{ENTRIES, EXPECTED_LINE, GEN_RUN, World, gen_run_output, run_app};

/// Builds in these tests leave the remote to `kache sync`: no daemon.
const LOCAL: &[(&str, &str)] = &[("KACHE_LOCAL_ONLY", "1")];

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn assert_ok(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "kache failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn a_fresh_cache_pulls_what_another_pushed_and_every_library_unit_hits() {
    let garage = Garage::start();
    let a = World::with_env(garage.env());
    let project = a.project("p");
    let cold = a.cargo_with(&project, &["build"], LOCAL).ok();
    assert_eq!(cold.outcome(GEN_RUN), "miss", "{:?}", cold.outcomes());
    let ran = gen_run_output(&project);
    // Every library unit and fx-gen's build-script run.
    let pushed = assert_ok(&a.kache_in(&project, &["sync", "--push"], &[]));
    assert!(
        pushed.contains(&format!("pushed {} entries", ENTRIES.len())),
        "{pushed}"
    );
    // A second push finds everything there.
    let again = assert_ok(&a.kache_in(&project, &["sync", "--push"], &[]));
    assert!(again.contains("pushed 0 entries"), "{again}");
    assert!(
        again.contains(&format!("{} already there", ENTRIES.len())),
        "{again}"
    );

    a.cargo(&project, &["clean"]).ok();
    let b = World::with_env(garage.env());
    let pulled = assert_ok(&b.kache_in(&project, &["sync", "--pull"], &[]));
    assert!(
        pulled.contains(&format!("pulled {} entries", ENTRIES.len())),
        "{pulled}"
    );
    let warm = b.cargo_with(&project, &["build"], LOCAL).ok();
    for name in ENTRIES {
        assert_eq!(warm.outcome(name), "hit", "{name}: {:?}", warm.outcomes());
    }
    // The pulled run replayed what the script printed and wrote on A.
    assert_eq!(gen_run_output(&project), ran);
    assert_eq!(run_app(&project), EXPECTED_LINE);
}

#[test]
fn dry_runs_move_nothing() {
    let garage = Garage::start();
    let a = World::with_env(garage.env());
    let project = a.project("p");
    a.cargo_with(&project, &["build"], LOCAL).ok();
    let out = assert_ok(&a.kache_in(&project, &["sync", "--push", "--dry-run"], &[]));
    assert!(
        out.contains(&format!("would push up to {} entries", ENTRIES.len())),
        "{out}"
    );
    let b = World::with_env(garage.env());
    let out = assert_ok(&b.kache_in(&project, &["sync", "--pull", "--all", "--dry-run"], &[]));
    assert!(
        out.contains("would pull 0 entries"),
        "the bucket stayed empty: {out}"
    );

    // Once pushed, a pull dry run lists them and imports none.
    assert_ok(&a.kache_in(&project, &["sync", "--push"], &[]));
    let out = assert_ok(&b.kache_in(&project, &["sync", "--pull", "--dry-run"], &[]));
    assert!(
        out.contains(&format!("would pull {} entries", ENTRIES.len())),
        "{out}"
    );
    let list = b.kache(&["list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("fx_core"),
        "a dry run imported something"
    );
}

#[test]
fn a_wrong_secret_is_one_clear_line_and_a_failure() {
    let garage = Garage::start();
    let world = World::with_env(garage.env());
    let project = world.project("p");
    world.cargo_with(&project, &["build"], LOCAL).ok();
    let out = world.kache_in(
        &project,
        &["sync", "--push"],
        &[(
            "KACHE_S3_SECRET_KEY",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("access denied"), "{stderr}");
    assert!(
        stderr.contains(&garage.endpoint) && stderr.contains("kache"),
        "{stderr}"
    );
}

/// A loopback HTTP server that answers every request with `status`.
fn answering_server(status: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 65536];
                let _ = stream.read(&mut buf);
                let body = "<Error><Code>InternalError</Code></Error>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_bucket_that_is_down_or_failing_fails_sync_clearly_and_never_a_build() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for endpoint in [closed, answering_server("500 Internal Server Error")] {
        let mut world = World::new();
        world.env = vec![
            ("KACHE_S3_BUCKET".into(), "kache".into()),
            ("KACHE_S3_ENDPOINT".into(), endpoint.clone()),
            ("KACHE_S3_ACCESS_KEY".into(), "GKtest".into()),
            ("KACHE_S3_SECRET_KEY".into(), "secret".into()),
        ];
        let project = world.project("p");
        // (Builds with a failing bucket and the daemon: tests/daemon.rs.)
        world.cargo_with(&project, &["build"], LOCAL).ok();
        world.cargo(&project, &["clean"]).ok();
        let warm = world.cargo_with(&project, &["build"], LOCAL).ok();
        assert_eq!(warm.outcome("fx_core"), "hit");
        let out = world.kache_in(&project, &["sync"], &[]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{endpoint}: {stdout}");
        assert!(stderr.contains(&endpoint), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn the_shared_directory_backend_round_trips_with_the_exact_layout() {
    let shared_root = tempfile::tempdir().unwrap();
    let shared = shared_root.path().join("mnt");
    let mut a = World::new();
    a.env = vec![a.fs_remote(&shared)];
    let project = a.project("p");
    a.cargo_with(&project, &["build"], LOCAL).ok();
    assert_ok(&a.kache_in(&project, &["sync", "--push"], &[]));

    let core_dir = shared.join("artifacts/v3/manifests/fx_core");
    let manifests: Vec<_> = std::fs::read_dir(&core_dir).unwrap().flatten().collect();
    assert_eq!(manifests.len(), 1);
    let name = manifests[0].file_name().to_string_lossy().to_string();
    let key = name.strip_suffix(".json").unwrap().to_string();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifests[0].path()).unwrap()).unwrap();
    let mut fields: Vec<&String> = json.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "cache_key",
            "crate_name",
            "file_count",
            "original_bytes",
            "pack_blake3",
            "pack_bytes",
            "pack_key",
            "version"
        ],
        "DESIGN.md's fields, plus the pack hash a signature binds (no signing key here: no signature)"
    );
    assert_eq!(json["version"], 3);
    assert_eq!(json["cache_key"], key.as_str());
    assert_eq!(json["crate_name"], "fx_core");
    let pack_key = format!("artifacts/v3/packs/fx_core/{key}.tar.zst");
    assert_eq!(json["pack_key"], pack_key.as_str());
    let pack = shared.join(&pack_key);
    assert_eq!(json["pack_bytes"], std::fs::metadata(&pack).unwrap().len());
    let pack_hash = blake3::hash(&std::fs::read(&pack).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(json["pack_blake3"], pack_hash.as_str());
    assert!(json["file_count"].as_u64().unwrap() >= 2);

    // The pack: a zstd tar whose first member is meta.json.
    let tar_bytes = zstd::decode_all(std::fs::File::open(&pack).unwrap()).unwrap();
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let first = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str(), Some("meta.json"));

    // fx-gen's build-script run is an entry of the same layout, named by
    // its unit.
    let run_dir = shared.join(format!("artifacts/v3/manifests/{GEN_RUN}"));
    let runs: Vec<_> = std::fs::read_dir(&run_dir).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1, "{}", run_dir.display());
    let run_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].path()).unwrap()).unwrap();
    assert_eq!(run_json["crate_name"], GEN_RUN);
    let run_key = run_json["cache_key"].as_str().unwrap();
    let run_pack = format!("artifacts/v3/packs/{GEN_RUN}/{run_key}.tar.zst");
    assert_eq!(run_json["pack_key"], run_pack.as_str());
    assert!(shared.join(&run_pack).is_file());
    let ran = gen_run_output(&project);

    a.cargo(&project, &["clean"]).ok();
    let mut b = World::new();
    b.env = vec![b.fs_remote(&shared)];
    assert_ok(&b.kache_in(&project, &["sync", "--pull"], &[]));
    let warm = b.cargo_with(&project, &["build"], LOCAL).ok();
    for name in ENTRIES {
        assert_eq!(warm.outcome(name), "hit", "{name}: {:?}", warm.outcomes());
    }
    assert_eq!(gen_run_output(&project), ran);
    assert_eq!(run_app(&project), EXPECTED_LINE);

    // A flipped byte in one pack: that entry is refused, the rest import,
    // the exit code says something failed, nothing lands outside the store.
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();
    let mut c = World::new();
    c.env = vec![c.fs_remote(&shared)];
    let out = c.kache_in(&project, &["sync", "--pull"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("pulled {} entries", ENTRIES.len() - 1)),
        "{stdout}"
    );
    assert!(stderr.contains("fx_core"), "{stderr}");
    let list = String::from_utf8_lossy(&c.kache(&["list", "fx_core"]).stdout).to_string();
    assert!(
        !list.contains(&key[..16]),
        "the corrupt entry was imported: {list}"
    );
    let incoming = c.cache.join("store/incoming");
    let leftovers: Vec<_> = std::fs::read_dir(&incoming)
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert!(
        leftovers.iter().all(|n| *n == 0),
        "temporary files left in {}",
        incoming.display()
    );
    let mut names: Vec<String> = std::fs::read_dir(c.root.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["cache", "kache-fs.toml"],
        "nothing written beside the store"
    );
}

#[test]
fn save_manifest_writes_the_build_manifest_and_lock_shards_exactly() {
    let shared_root = tempfile::tempdir().unwrap();
    let shared = shared_root.path().join("mnt");
    let mut world = World::new();
    world.env = vec![world.fs_remote(&shared)];
    let project = world.project("p");
    world.cargo_with(&project, &["build"], LOCAL).ok();
    let dry = assert_ok(&world.kache_in(
        &project,
        &["save-manifest", "--namespace", "ci-main", "--dry-run"],
        &[],
    ));
    assert!(dry.contains("would write"), "{dry}");
    assert!(
        !shared.join("artifacts/_manifests").exists(),
        "a dry run wrote"
    );

    let out =
        assert_ok(&world.kache_in(&project, &["save-manifest", "--namespace", "ci-main"], &[]));
    assert!(
        out.contains(&format!("wrote {} entries", ENTRIES.len())),
        "{out}"
    );
    assert!(
        out.contains(&format!("({} entries pushed first)", ENTRIES.len())),
        "{out}"
    );
    let host = String::from_utf8_lossy(
        &std::process::Command::new("rustc")
            .arg("-vV")
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .find_map(|l| l.strip_prefix("host: ").map(String::from))
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shared.join(format!("artifacts/_manifests/{host}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["version"], 3);
    assert_eq!(manifest["manifest_key"], host.as_str());
    assert!(humantime::parse_rfc3339(manifest["created"].as_str().unwrap()).is_ok());
    let entries = manifest["entries"].as_array().unwrap();
    // Every library unit and fx-gen's build-script run, once each.
    let mut named: Vec<&str> = entries
        .iter()
        .map(|e| e["crate_name"].as_str().unwrap())
        .collect();
    named.sort_unstable();
    let mut expected_names = ENTRIES.to_vec();
    expected_names.sort_unstable();
    assert_eq!(named, expected_names);
    for entry in entries {
        let key = entry["cache_key"].as_str().unwrap();
        let crate_name = entry["crate_name"].as_str().unwrap();
        assert!(entry["artifact_size"].as_u64().unwrap() > 0);
        assert!(entry["compile_time_ms"].is_u64());
        // Only keys the bucket holds.
        assert!(
            shared
                .join(format!("artifacts/v3/manifests/{crate_name}/{key}.json"))
                .is_file()
        );
    }

    // Shards: one per non-empty bucket of Cargo.lock, named by the hash of
    // its sorted name@version list, holding that bucket's packages' entries.
    let lock: toml::Table =
        toml::from_str(&std::fs::read_to_string(project.join("Cargo.lock")).unwrap()).unwrap();
    let mut buckets: std::collections::BTreeMap<u64, Vec<(String, String)>> = Default::default();
    for package in lock["package"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_string();
        let version = package["version"].as_str().unwrap().to_string();
        buckets
            .entry(kache_core::manifest::shard_bucket(&name))
            .or_default()
            .push((name, version));
    }
    let shard_dir = shared.join("artifacts/_manifests/v3/ci-main/shards");
    let mut written: Vec<String> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    written.sort();
    let mut expected: Vec<String> = buckets
        .values()
        .map(|packages| format!("{}.json", kache_core::manifest::shard_hash(packages)))
        .collect();
    expected.sort();
    assert_eq!(written, expected, "one shard per bucket with entries");
    let gen_shard = format!(
        "{}.json",
        kache_core::manifest::shard_hash(&buckets[&kache_core::manifest::shard_bucket("fx-gen")])
    );
    let mut shard_entries = Vec::new();
    for name in &written {
        let shard: serde_json::Value =
            serde_json::from_slice(&std::fs::read(shard_dir.join(name)).unwrap()).unwrap();
        assert_eq!(shard["version"], 3);
        for entry in shard["entries"].as_array().unwrap() {
            let crate_name = entry["crate_name"].as_str().unwrap().to_string();
            if crate_name == GEN_RUN {
                assert_eq!(name, &gen_shard, "fx-gen's run is in fx-gen's shard");
            }
            shard_entries.push(crate_name);
        }
    }
    // Every library unit and fx-gen's run land in their package's shard;
    // build scripts' compiles belong to no single package.
    shard_entries.sort();
    let mut expected_names: Vec<String> = ENTRIES
        .iter()
        .filter(|name| **name != "build_script_build")
        .map(|name| name.to_string())
        .collect();
    expected_names.sort();
    assert_eq!(shard_entries, expected_names);
}
