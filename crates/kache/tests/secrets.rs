//! Secrets stay with their owner: real builds through a real daemon, a real
//! S3 server (Garage) and the real planner (`kache-service --token`), then
//! every file kache wrote, its log and the socket traffic are searched for
//! the secrets the test set. Also: a socket or cache directory of another
//! user is refused (the build goes on), the modes of what kache creates,
//! and which config file may set what.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::garage::Garage;
use common::{LIBS, Run, World, edit};

/// The uid the tests hand files to (`nobody`).
const OTHER_UID: u32 = 65534;

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kache failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kache-service --token <token>` on a loopback port, stopped when dropped.
struct Planner {
    child: Child,
    _db: tempfile::TempDir,
    url: String,
}

impl Planner {
    fn start(token: &str) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let bin = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .join("kache-service");
        if !bin.is_file() {
            let built = Command::new("cargo")
                .args(["build", "-p", "kache-service"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build -p kache-service");
            assert!(built.success());
        }
        let db = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(bin);
        for (name, _) in std::env::vars() {
            if name.starts_with("KACHE_") {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd
            .args(["--bind", "127.0.0.1:0", "--token", token, "--db-path"])
            .arg(db.path().join("planner.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kache-service");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut byte = [0u8; 1];
            while stdout.read(&mut byte).is_ok_and(|n| n == 1) {
                text.push(byte[0] as char);
                if byte[0] == b'\n' {
                    if let Some(url) = text.trim().strip_prefix("kache-service listening on ") {
                        let _ = tx.send(url.to_string());
                    }
                    text.clear();
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("kache-service did not start");
        Self {
            child,
            _db: db,
            url,
        }
    }
}

impl Drop for Planner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of the daemon's socket: what clients send is recorded.
/// It moves `daemon.sock` aside, listens in its place, and forwards every
/// connection to the real socket.
struct Tap {
    sent: Arc<Mutex<Vec<u8>>>,
    socket: PathBuf,
    real: PathBuf,
}

impl Tap {
    fn install(cache: &Path) -> Self {
        let socket = cache.join("daemon.sock");
        let real = cache.join("daemon.real.sock");
        std::fs::rename(&socket, &real).expect("move the daemon socket aside");
        let listener = UnixListener::bind(&socket).expect("bind the tap");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (record, to) = (sent.clone(), real.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { break };
                let Ok(mut daemon) = UnixStream::connect(&to) else {
                    continue;
                };
                let record = record.clone();
                let mut back_client = client.try_clone().expect("clone");
                let mut back_daemon = daemon.try_clone().expect("clone");
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut back_daemon, &mut back_client);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = client.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if daemon.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = daemon.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { sent, socket, real }
    }

    /// Puts the real socket back; what clients sent.
    fn remove(self) -> String {
        std::fs::remove_file(&self.socket).expect("remove the tap");
        std::fs::rename(&self.real, &self.socket).expect("put the daemon socket back");
        String::from_utf8_lossy(&self.sent.lock().unwrap()).to_string()
    }
}

/// Every regular file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = item.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                found.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A `kache keygen` pair: (the inline secret, the public key).
fn keypair(world: &World) -> (String, String) {
    let out_path = world.root.path().join("signing.key");
    let out = ok(world.kache(&["keygen", "--out", &out_path.display().to_string()]));
    let public = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("a public key line")
        .trim()
        .to_string();
    let secret = std::fs::read_to_string(&out_path)
        .unwrap()
        .trim()
        .to_string();
    std::fs::remove_file(&out_path).unwrap();
    assert!(secret.starts_with("kache-secret-"), "{secret}");
    (secret, public)
}

fn hit_sources(run: &Run, crate_name: &str) -> Vec<String> {
    run.events
        .iter()
        .filter(|e| e["crate_name"] == crate_name && e["outcome"] == "hit")
        .map(|e| e["source"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn no_secret_travels_on_the_socket_nor_lands_in_any_file_kache_writes() {
    let garage = Garage::start();
    let token = format!("planner-token-{}", std::process::id());
    let planner = Planner::start(&token);
    let fx_secret = format!("fx-env-secret-{}", std::process::id());

    // The daemon starts without any secret in its own environment: only
    // where the bucket and the planner are.
    let mut a = World::new();
    let (signing, public) = keypair(&a);
    a.env = vec![
        ("KACHE_S3_BUCKET".into(), garage.bucket.clone()),
        ("KACHE_S3_ENDPOINT".into(), garage.endpoint.clone()),
        ("KACHE_TRUSTED_KEYS".into(), public.clone()),
        ("KACHE_PLANNER_ENDPOINT".into(), planner.url.clone()),
    ];
    ok(a.kache(&["daemon", "start"]));
    let secrets: Vec<(&str, String)> = vec![
        ("KACHE_S3_ACCESS_KEY", garage.key_id.clone()),
        ("KACHE_S3_SECRET_KEY", garage.secret.clone()),
        ("KACHE_PLANNER_TOKEN", token.clone()),
        ("KACHE_SIGNING_KEY", signing.clone()),
        ("FX_SUFFIX", fx_secret.clone()),
    ];
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let project = a.project("p");

    // The builds' own credentials reach the bucket and the planner: the
    // daemon read them from the callers.
    a.cargo_with(&project, &["build"], &env).ok();
    let prefetch = a.kache_in(&project, &["prefetch", "--wait"], &env);
    ok(prefetch);
    let wrong: Vec<(&str, &str)> = env
        .iter()
        .map(|&(k, v)| {
            if k == "KACHE_PLANNER_TOKEN" {
                (k, "wrong")
            } else {
                (k, v)
            }
        })
        .collect();
    ok(a.kache_in(&project, &["prefetch", "--wait"], &wrong));
    let log = std::fs::read_to_string(a.cache.join("daemon.log")).unwrap();
    assert_eq!(
        log.matches("answered 401").count(),
        1,
        "only the prefetch with the wrong token was refused by the planner:\n{log}"
    );

    // Then the same through a tap on the socket.
    let tap = Tap::install(&a.cache);
    edit(
        &project,
        "core/src/lib.rs",
        "unused_on_purpose = 1",
        "unused_on_purpose = 2",
    );
    let tapped = a.cargo_with(&project, &["build"], &env).ok();
    assert_eq!(tapped.outcome("fx_core"), "miss");
    ok(a.kache_in(&project, &["prefetch", "--wait"], &env));
    let wire = tap.remove();
    ok(a.kache(&["daemon", "stop", "--drain", "60"]));

    assert!(
        wire.contains("\"op\":\"upload\"") && wire.contains("\"op\":\"build_start\""),
        "the tap saw the requests: {wire}"
    );
    assert!(wire.contains(&garage.endpoint), "{wire}");

    let secret_texts = [
        ("the S3 secret key", garage.secret.as_str()),
        ("the S3 access key", garage.key_id.as_str()),
        ("the planner token", token.as_str()),
        ("the signing key", signing.as_str()),
        (
            "the signing key's secret part",
            signing.rsplit(':').next().unwrap(),
        ),
    ];
    for (what, secret) in secret_texts {
        assert!(!wire.contains(secret), "{what} went over the socket");
    }
    let files = files_under(&a.cache);
    assert!(files.iter().any(|(p, _)| p.ends_with("meta.json")));
    for (path, bytes) in &files {
        for (what, secret) in secret_texts {
            assert!(!contains(bytes, secret), "{what} is in {}", path.display());
        }
        // An `env!` value is in the compiled code (the user's own doing),
        // never in kache's own records.
        let blob = path.components().any(|c| c.as_os_str() == "blobs");
        assert!(
            blob || !contains(bytes, &fx_secret),
            "the env! value is in {}",
            path.display()
        );
    }
    assert!(
        !wire.contains(&fx_secret),
        "the env! value went over the socket"
    );

    // The uploads were signed with the key the daemon read from the
    // callers: a reader that trusts only that key takes them.
    let mut b = World::with_env(garage.env());
    b.env.push(("KACHE_TRUSTED_KEYS".into(), public.clone()));
    a.cargo(&project, &["clean"]).ok();
    let run = b
        .cargo_with(&project, &["build"], &[("FX_SUFFIX", &fx_secret)])
        .ok();
    for lib in LIBS {
        let sources = hit_sources(&run, lib);
        assert!(
            sources == ["remote"] || sources == ["prefetch"],
            "{lib}: {:?}",
            run.outcomes()
        );
    }
    ok(b.kache(&["daemon", "stop", "--drain", "60"]));
}

/// The refusal lines a run printed.
fn refusals(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.contains("kache: refusing"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_socket_or_cache_directory_of_another_user_is_refused_and_the_build_goes_on() {
    let shared = tempfile::tempdir().unwrap();
    let mut world = World::new();
    world.env = vec![world.fs_remote(shared.path())];
    let project = world.project("p");
    // A daemon that knows no remote until a client names it: only the
    // client could make it upload.
    let started = world
        .command(common::KACHE, world.root.path())
        .env_remove("KACHE_CONFIG")
        .args(["daemon", "start"])
        .output()
        .unwrap();
    ok(started);
    let socket = world.cache.join("daemon.sock");
    std::os::unix::fs::lchown(&socket, Some(OTHER_UID), None).unwrap();

    let run = world.cargo(&project, &["build"]).ok();
    let lines = refusals(&run);
    assert_eq!(lines.len(), 1, "one line:\n{}", run.stderr());
    assert!(
        lines[0].contains("daemon socket") && lines[0].contains(&format!("uid {OTHER_UID}")),
        "{}",
        lines[0]
    );
    assert_eq!(
        run.outcome("fx_core"),
        "miss",
        "the local cache still works"
    );
    assert!(
        !shared.path().join("artifacts").exists(),
        "nothing reached the remote through the other user's daemon"
    );
    // `kache daemon stop` refuses it too.
    let stop = world.kache(&["daemon", "stop", "--drain", "1"]);
    let said =
        String::from_utf8_lossy(&stop.stderr).to_string() + &String::from_utf8_lossy(&stop.stdout);
    assert!(said.contains("refusing the daemon socket"), "{said}");
    std::os::unix::fs::lchown(&socket, Some(0), None).unwrap();
    ok(world.kache(&["daemon", "stop", "--drain", "60"]));

    // A cache directory of another user: compiled without the cache.
    std::os::unix::fs::chown(&world.cache, Some(OTHER_UID), None).unwrap();
    let events_before = std::fs::read(world.cache.join("events.jsonl")).ok();
    world.cargo(&project, &["clean"]).ok();
    let run = world.cargo(&project, &["build"]).ok();
    let lines = refusals(&run);
    assert_eq!(lines.len(), 1, "one line:\n{}", run.stderr());
    assert!(lines[0].contains("cache directory"), "{}", lines[0]);
    assert_eq!(common::run_app(&project), common::EXPECTED_LINE);
    assert_eq!(
        std::fs::read(world.cache.join("events.jsonl")).ok(),
        events_before,
        "nothing was written into the other user's directory"
    );
    assert!(
        !world.cache.join("daemon.sock").exists(),
        "no daemon started there"
    );
    std::os::unix::fs::chown(&world.cache, Some(0), None).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

#[test]
fn what_kache_creates_is_the_users_alone_and_blobs_keep_the_compiles_modes() {
    let shared = tempfile::tempdir().unwrap();
    let mut world = World::new();
    world.env = vec![world.fs_remote(shared.path())];
    let project = world.project("p");
    // A private compile (umask 077): no stored copy may be readable by others.
    let built = world
        .command("sh", &project)
        .args(["-c", "umask 077 && exec cargo build"])
        .status()
        .unwrap();
    assert!(built.success());
    ok(world.kache(&["daemon", "start"]));
    assert_eq!(mode(&world.cache.join("daemon.sock")) & 0o077, 0);
    ok(world.kache(&["daemon", "stop", "--drain", "60"]));

    assert_eq!(mode(&world.cache), 0o700, "the cache directory");
    for name in ["index.db", "events.jsonl", "daemon.log"] {
        assert_eq!(mode(&world.cache.join(name)), 0o600, "{name}");
    }
    let files = files_under(&world.cache);
    let metas: Vec<&PathBuf> = files
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with("meta.json"))
        .collect();
    assert!(!metas.is_empty());
    for meta in metas {
        assert_eq!(mode(meta), 0o600, "{}", meta.display());
    }
    let blobs = world.blobs();
    assert!(!blobs.is_empty());
    for blob in &blobs {
        assert_eq!(
            mode(blob) & 0o077,
            0,
            "{} is readable by others although the compile's output was not",
            blob.display()
        );
    }

    // Without HOME and XDG_CACHE_HOME: a directory named for the user,
    // 0700; one another user made first is refused.
    let tmp = tempfile::tempdir().unwrap();
    let out = world
        .command(common::KACHE, world.root.path())
        .env_remove("KACHE_CACHE_DIR")
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("TMPDIR", tmp.path())
        .args(["gc"])
        .output()
        .unwrap();
    ok(out);
    let fallback = tmp.path().join("kache-0");
    assert_eq!(mode(&fallback), 0o700);
    std::os::unix::fs::chown(&fallback, Some(OTHER_UID), None).unwrap();
    let out = world
        .command(common::KACHE, world.root.path())
        .env_remove("KACHE_CACHE_DIR")
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("TMPDIR", tmp.path())
        .args(["gc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refusing the cache directory"), "{said}");
}

#[test]
fn the_repository_file_merges_over_the_users_but_may_not_move_the_remote() {
    let mut world = World::new();
    world.env.clear();
    let project = world.project("p");
    let user_dir = world.root.path().join("xdg/kache");
    std::fs::create_dir_all(&user_dir).unwrap();
    let user = user_dir.join("config.toml");
    let user_text = "[cache]\nmax_size = \"3G\"\n[cache.remote]\ntype = \"fs\"\n\
                     path = \"/srv/user-remote\"\n[cache.planner]\nendpoint = \"http://planner.user\"\n";
    std::fs::write(&user, user_text).unwrap();
    std::fs::write(
        project.join(".kache.toml"),
        "[cache]\nmax_size = \"5G\"\n[cache.remote]\npath = \"/srv/evil\"\nprefix = \"team\"\n\
         [cache.planner]\nendpoint = \"http://planner.evil\"\n",
    )
    .unwrap();
    let doctor = |extra: &[(&str, &str)]| {
        let out = world.kache_in(&project, &["doctor"], extra);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = doctor(&[]);
    assert!(said.contains("fs:/srv/user-remote"), "{said}");
    assert!(said.contains("(prefix team)"), "{said}");
    assert!(said.contains("planner http://planner.user"), "{said}");
    assert!(
        said.contains(&format!(
            "config max_size set by {}",
            project.join(".kache.toml").display()
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("config remote.path set by {}", user.display())),
        "{said}"
    );
    assert!(
        said.contains("warn config remote.path in") && said.contains("planner.endpoint in"),
        "{said}"
    );
    // A build says it once (local only: no daemon for a remote that is not there).
    let run = world
        .cargo_with(&project, &["build"], &[("KACHE_LOCAL_ONLY", "1")])
        .ok();
    let ignored = run
        .stderr()
        .lines()
        .filter(|l| l.contains("remote.path in"))
        .count();
    assert_eq!(ignored, 1, "{}", run.stderr());
    // The environment is last.
    let said = doctor(&[("KACHE_PLANNER_ENDPOINT", "http://planner.env")]);
    assert!(said.contains("planner http://planner.env"), "{said}");
    assert!(
        said.contains("planner.endpoint set by")
            && said.contains("(KACHE_PLANNER_ENDPOINT in the environment wins)"),
        "{said}"
    );

    // The user trusts the repository's file.
    std::fs::write(
        &user,
        user_text.replace("[cache]\n", "[cache]\ntrust_repo_config = true\n"),
    )
    .unwrap();
    let said = doctor(&[]);
    assert!(said.contains("fs:/srv/evil"), "{said}");
    assert!(said.contains("planner http://planner.evil"), "{said}");
    assert!(!said.contains("warn config"), "{said}");

    // A repository file anyone may write is not read at all.
    std::fs::set_permissions(
        project.join(".kache.toml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let said = doctor(&[]);
    assert!(said.contains("fs:/srv/user-remote"), "{said}");
    assert!(said.contains("other users may write to it"), "{said}");
}
