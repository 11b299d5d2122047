//! The OCI backend against a real registry (Debian's `docker-registry`,
//! the CNCF distribution registry, on loopback with htpasswd auth): the
//! `Storage` contract object by object, listings of every shape the callers
//! use, names too long for a tag, chunked uploads, and a registry that
//! serves bytes other than the ones its manifest names.

#[path = "../../kache/tests/common/registry.rs"]
mod registry;

use bytes::Bytes;
use kache_remote::oci::{self, OciSpec};
use kache_remote::{Layout, RemoteError, Storage};
use registry::Registry;

fn spec(registry: &Registry) -> OciSpec {
    OciSpec {
        registry: registry.url.clone(),
        repository: registry.repository.clone(),
        username: Some(registry.username.clone()),
        password: Some(registry.password.clone()),
        token: None,
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn objects_round_trip_and_every_listing_shape_works() {
    let registry = Registry::start();
    let storage = oci::open(&spec(&registry)).unwrap();
    let layout = Layout::new("artifacts");
    let long_crate = "a_b".repeat(40);
    block_on(async {
        // Nothing pushed yet: the repository is unknown to the registry.
        assert_eq!(
            storage.list("artifacts").await.unwrap(),
            Vec::<String>::new()
        );
        assert!(storage.get("artifacts/none").await.unwrap().is_none());
        assert!(!storage.exists("artifacts/none").await.unwrap());

        let mut names = Vec::new();
        for (i, crate_name) in ["serde_json", "zstd-sys:zstd.c", &long_crate]
            .iter()
            .enumerate()
        {
            let key = format!("{i}{}", &KEY[1..]);
            let manifest = layout.entry_manifest(crate_name, &key);
            storage
                .put(&manifest, Bytes::from(format!("{{\"n\":{i}}}")))
                .await
                .unwrap();
            let marker = layout.prekey_marker(crate_name, KEY, &key);
            storage.put(&marker, Bytes::new()).await.unwrap();
            names.push((crate_name.to_string(), key, manifest, marker));
        }
        let mut crates = storage.list_dirs(&layout.manifests_root()).await.unwrap();
        crates.sort();
        let mut expected: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
        expected.sort();
        assert_eq!(crates, expected, "one directory per crate, long names too");
        for (crate_name, key, manifest, marker) in &names {
            assert_eq!(
                storage
                    .list(&layout.crate_manifests(crate_name))
                    .await
                    .unwrap(),
                std::slice::from_ref(manifest)
            );
            assert_eq!(
                storage
                    .list(&layout.prekey_dir(crate_name, KEY))
                    .await
                    .unwrap(),
                std::slice::from_ref(marker)
            );
            assert!(storage.exists(manifest).await.unwrap());
            assert_eq!(storage.get(marker).await.unwrap().unwrap(), Bytes::new());
            assert!(layout.parse_entry_manifest(manifest).is_some(), "{key}");
        }
        // A recursive listing with sizes and times, as the planner scans.
        storage
            .put(
                &layout.build_manifest("x86_64-unknown-linux-gnu"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        storage
            .put(
                &layout.shard("ci-main", KEY),
                Bytes::from_static(b"[1,2,3]"),
            )
            .await
            .unwrap();
        let infos = storage.list_info("artifacts/_manifests").await.unwrap();
        let got: Vec<(String, u64)> = infos.iter().map(|o| (o.name.clone(), o.size)).collect();
        assert_eq!(
            got,
            [
                (
                    "artifacts/_manifests/v3/ci-main/shards/".to_string() + KEY + ".json",
                    7
                ),
                (
                    "artifacts/_manifests/x86_64-unknown-linux-gnu.json".to_string(),
                    2
                ),
            ]
        );
        assert!(infos.iter().all(|o| o.modified_ms > 0));
        // Overwrite, bounded reads, delete.
        let doc = layout.build_manifest("x86_64-unknown-linux-gnu");
        storage
            .put(&doc, Bytes::from_static(b"{\"v\":2}"))
            .await
            .unwrap();
        assert_eq!(
            storage.get(&doc).await.unwrap().unwrap(),
            Bytes::from_static(b"{\"v\":2}")
        );
        assert!(storage.get_bounded(&doc, 3).await.is_err());
        storage.delete(&doc).await.unwrap();
        storage.delete(&doc).await.unwrap();
        assert!(storage.get(&doc).await.unwrap().is_none());
        assert_eq!(storage.list("artifacts/_manifests").await.unwrap().len(), 1);
    });
}

#[test]
fn large_files_upload_in_chunks_and_download_within_their_bound() {
    let registry = Registry::start();
    let storage = oci::open(&spec(&registry)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("pack");
    // Past the single-request size: sent in chunks.
    let body: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &body).unwrap();
    block_on(async {
        let name = "artifacts/v3/packs/big/k.tar.zst";
        storage.put_file(name, &source).await.unwrap();
        let dest = dir.path().join("back");
        let size = storage
            .get_to_file(name, &dest, 64 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(size, body.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == body);
        // Under its bound: refused before a byte is written.
        let small = dir.path().join("small");
        assert!(storage.get_to_file(name, &small, 1 << 20).await.is_err());
        // A missing object creates no file.
        let none = dir.path().join("none");
        assert!(
            storage
                .get_to_file("artifacts/missing", &none, 1 << 20)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!none.exists());
    });
}

#[test]
fn bytes_that_do_not_match_their_digest_are_refused() {
    let registry = Registry::start();
    let storage = oci::open(&spec(&registry)).unwrap();
    let name = "artifacts/v3/manifests/serde/k.json";
    block_on(storage.put(name, Bytes::from_static(b"{\"honest\":true}"))).unwrap();
    // The registry's own files: flip a byte of every blob of that size.
    let mut flipped = 0;
    let mut stack = vec![registry.dir.path().join("data")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "data")
                && std::fs::read(&path).unwrap() == b"{\"honest\":true}"
            {
                std::fs::write(&path, b"{\"honest\":fals}").unwrap();
                flipped += 1;
            }
        }
    }
    assert_eq!(flipped, 1);
    let err = block_on(storage.get(name)).unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
}

#[test]
fn a_wrong_password_is_denied_in_one_line() {
    let registry = Registry::start();
    let mut wrong = spec(&registry);
    wrong.password = Some("nope".into());
    let storage = oci::open(&wrong).unwrap();
    let err = block_on(storage.put("artifacts/x", Bytes::from_static(b"x"))).unwrap_err();
    assert!(matches!(err, RemoteError::Denied { .. }), "{err}");
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&registry.repository) && text.contains("KACHE_OCI_PASSWORD"),
        "{text}"
    );
    // No credentials at all: the same, saying none were given.
    let mut anonymous = spec(&registry);
    anonymous.username = None;
    anonymous.password = None;
    let storage = oci::open(&anonymous).unwrap();
    let err = block_on(storage.list("artifacts")).unwrap_err();
    assert!(err.to_string().contains("no credentials"), "{err}");
}

/// A loopback stand-in for a registry that follows the spec's tag listing
/// (lexical order, `last` honoured, pages of two with a `Link` to the
/// next), which the distribution registry 2.8 above does not: it answers
/// only `GET /v2/` and the tag listing, and records each `last` asked.
fn paging_registry(tags: Vec<String>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let mut tags = tags;
    tags.sort();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
            let last = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("last="))
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap().push(last.clone());
            let page: Vec<&String> = tags.iter().filter(|t| **t > last).take(2).collect();
            let link = match (page.len(), page.last()) {
                (2, Some(end)) => {
                    format!("Link: </v2/team/cache/tags/list?n=2&last={end}>; rel=\"next\"\r\n")
                }
                _ => String::new(),
            };
            let body = format!(
                "{{\"name\":\"team/cache\",\"tags\":[{}]}}",
                page.iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, asked)
}

#[test]
fn a_registry_that_lists_ranges_is_read_one_directory_at_a_time() {
    let layout = Layout::new("artifacts");
    let key = |i: usize| format!("{i:02}{}", &KEY[2..]);
    let wanted: Vec<String> = (0..5)
        .map(|i| layout.prekey_marker("serde", KEY, &key(i)))
        .collect();
    let mut tags: Vec<String> = wanted.iter().map(|n| oci::object_tag(n)).collect();
    // Many tags of other directories, before and after the one listed.
    for i in 0..40 {
        tags.push(oci::object_tag(&layout.prekey_marker(
            "tokio",
            KEY,
            &key(i),
        )));
        tags.push(oci::object_tag(&layout.entry_manifest("serde", &key(i))));
    }
    let (url, asked) = paging_registry(tags);
    let storage = oci::open(&OciSpec {
        registry: url,
        repository: "team/cache".into(),
        ..OciSpec::default()
    })
    .unwrap();
    let mut got = block_on(storage.list(&layout.prekey_dir("serde", KEY))).unwrap();
    got.sort();
    assert_eq!(got, wanted);
    let asked = asked.lock().unwrap().clone();
    // The first page starts at the directory, and the walk stops at its
    // end: 3 pages of the directory's 5 tags (and its lack of subdirectory
    // tags), never the other 80.
    let first = asked.first().cloned().unwrap_or_default();
    assert!(first.ends_with('.') && first.len() == 17, "{asked:?}");
    assert!(asked.len() <= 4, "read {} pages: {asked:?}", asked.len());
}

/// A token server of the registry token flow (`WWW-Authenticate: Bearer
/// realm=…,service=…,scope=…`), the way ghcr.io, Docker Hub and Harbor log
/// clients in: it checks basic credentials and issues the ES256 JWT that
/// the real registry above verifies against its `rootcertbundle`. It
/// stands in for ghcr.io's `/token`, which this machine cannot reach.
struct TokenServer {
    url: String,
    dir: tempfile::TempDir,
    scopes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?}");
}

fn token_server(username: &str, password: &str) -> TokenServer {
    use base64::Engine as _;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "key.pem",
        ],
        dir.path(),
    );
    openssl(
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.p8",
        ],
        dir.path(),
    );
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=kache-token",
            "-days",
            "2",
            "-out",
            "cert.pem",
        ],
        dir.path(),
    );
    openssl(
        &[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ],
        dir.path(),
    );
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = std::fs::read(dir.path().join("key.p8")).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
    let cert = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(dir.path().join("cert.der")).unwrap());
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let scopes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = scopes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut authorized = false;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorized = value.trim() == expected;
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let param = |name: &str| {
                target
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(|v| {
                        v.replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",")
                    })
                    .unwrap_or_default()
            };
            let (scope, service) = (param("scope"), param("service"));
            seen.lock().unwrap().push(scope.clone());
            let mut stream = stream;
            if !authorized {
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [cert]});
            let claims = serde_json::json!({
                "iss": "kache-test-issuer", "sub": "kache", "aud": service,
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scope.len()),
                "access": [{"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}],
            });
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let signature = key.sign(&rng, input.as_bytes()).unwrap();
            let token = format!("{input}.{}", b64(signature.as_ref()));
            let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    TokenServer { url, dir, scopes }
}

#[test]
fn the_bearer_token_flow_logs_in_for_reads_and_writes() {
    let tokens = token_server("kache", "s3cret-registry-pass");
    let auth = format!(
        "  token:\n    realm: {}/token\n    service: kache-test\n    issuer: kache-test-issuer\n    \
         rootcertbundle: {}/cert.pem\n",
        tokens.url,
        tokens.dir.path().display()
    );
    let registry = Registry::start_with_auth(Some(&auth));
    let storage = oci::open(&spec(&registry)).unwrap();
    let name = "artifacts/v3/manifests/serde/k.json";
    block_on(async {
        storage
            .put(name, Bytes::from_static(b"{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(
            storage.get(name).await.unwrap().unwrap(),
            Bytes::from_static(b"{\"a\":1}")
        );
        assert_eq!(
            storage.list("artifacts/v3/manifests/serde").await.unwrap(),
            [name]
        );
    });
    let scopes = tokens.scopes.lock().unwrap().clone();
    let repository = format!("repository:{}:", registry.repository);
    assert!(
        scopes
            .iter()
            .any(|s| s.starts_with(&repository) && s.contains("push")),
        "{scopes:?}"
    );
    // A token per scope, reused: a handful of logins, not one per request.
    assert!(scopes.len() <= 4, "{scopes:?}");

    // The token server refuses a wrong password: one line, denied.
    let mut wrong = spec(&registry);
    wrong.password = Some("nope".into());
    let storage = oci::open(&wrong).unwrap();
    let err = block_on(storage.get(name)).unwrap_err();
    assert!(matches!(err, RemoteError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("bad credentials"), "{err}");
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
}
