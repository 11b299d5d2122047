//! The API document against the real binary: schemathesis (a property-based
//! API checker, installed by scripts/install-schemathesis.sh) generates
//! requests for every operation of `GET /openapi.json`, valid and invalid,
//! and checks that no answer is a 5xx and every answer's status, content
//! type and body match the document.

mod common;

use common::{Service, key, temp_db, write_seed};
use serde_json::json;

/// `st` from `KACHE_SCHEMATHESIS_BIN` (scripts/test.sh sets it), else the
/// install script's default location.
fn schemathesis() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("KACHE_SCHEMATHESIS_BIN") {
        return bin.into();
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let bin = std::path::Path::new(&home).join(".cache/kache-ci/schemathesis-4.32.5/bin/st");
    assert!(
        bin.exists(),
        "schemathesis is not installed: run `bash scripts/install-schemathesis.sh`"
    );
    bin
}

#[test]
fn every_operation_answers_as_the_openapi_document_says() {
    let (dir, db) = temp_db();
    let seed = write_seed(
        dir.path(),
        &json!({
            "namespaces": {"ci": {"deps": {
                "serde@1.0.210": [{"cache_key": key("serde"), "crate_name": "serde"}]
            }}},
            "history": {"tokio": [{"cache_key": key("tokio"), "crate_name": "tokio"}]},
            "key_cache": {"anyhow": [key("anyhow")]}
        }),
    );
    let service = Service::start(
        &db,
        &[
            "--token",
            "sekrit",
            "--seed-state-file",
            seed.to_str().unwrap(),
        ],
    );
    let document = service.get("/openapi.json");
    assert_eq!(document.status, 200);
    assert_eq!(document.json()["openapi"], "3.1.0");

    let out = std::process::Command::new(schemathesis())
        .arg("run")
        .arg(format!("{}/openapi.json", service.url))
        .args(["-H", "Authorization: Bearer sekrit"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "25", "--no-color"])
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found a problem:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("9 selected / 9 total"), "{report}");
    assert!(!report.contains("failed"), "{report}");
    assert_eq!(service.stop(), 0);
}
