//! A real S3 server for the remote tests: a single-node Garage process on
//! loopback ports, with one bucket and one key, stopped when dropped.
//! Garage checks SigV4 signatures like AWS does. Its binary comes from
//! `KACHE_GARAGE_BIN`, else the cache `scripts/install-garage.sh` fills
//! (which the test runs itself when the binary is missing: never skipped).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Garage {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The garage binary, installing it once if needed.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KACHE_GARAGE_BIN") {
        return PathBuf::from(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-garage.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-garage.sh");
    assert!(out.status.success(), "installing garage failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Garage {
    /// Starts a fresh server with bucket `kache` and a read-write key.
    pub fn start() -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let (rpc, s3) = (free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                d = dir.path().display()
            ),
        )
        .expect("write garage.toml");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("log");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start garage");
        // Killed even if a set-up step below panics.
        let mut child = KillOnDrop(Some(child));
        let cli = |args: &[&str]| -> Option<String> {
            let out = Command::new(&bin)
                .arg("-c")
                .arg(&config)
                .args(args)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).to_string())
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = loop {
            if let Some(id) = cli(&["node", "id", "-q"]) {
                break id.trim().split('@').next().unwrap_or_default().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // A node that answers `node id` may still be starting: retry each
        // set-up step until the deadline.
        let step = |args: &[&str]| -> String {
            loop {
                if let Some(out) = cli(args) {
                    return out;
                }
                assert!(Instant::now() < deadline, "garage {args:?} kept failing");
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        step(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        step(&["layout", "apply", "--version", "1"]);
        let info = step(&["key", "create", "kache-test"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in {info}"))
        };
        let (key_id, secret_key) = (field("Key ID:"), field("Secret key:"));
        step(&["bucket", "create", "kache"]);
        step(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "kache",
            "--key",
            "kache-test",
        ]);
        Self {
            child: child.0.take().expect("the server"),
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "kache".to_string(),
            key_id,
            secret: secret_key,
        }
    }

    /// A new key that may only read the bucket: `(key id, secret)`.
    #[allow(dead_code)]
    pub fn read_only_key(&self, name: &str) -> (String, String) {
        let config = self._dir.path().join("garage.toml");
        let cli = |args: &[&str]| -> String {
            let out = Command::new(binary())
                .arg("-c")
                .arg(&config)
                .args(args)
                .output()
                .expect("run garage");
            assert!(out.status.success(), "garage {args:?} failed");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let info = cli(&["key", "create", name]);
        let field = |label: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {label} in {info}"))
        };
        cli(&["bucket", "allow", "--read", &self.bucket, "--key", name]);
        (field("Key ID:"), field("Secret key:"))
    }

    /// The client environment for this bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KACHE_S3_BUCKET".into(), self.bucket.clone()),
            ("KACHE_S3_ENDPOINT".into(), self.endpoint.clone()),
            ("KACHE_S3_ACCESS_KEY".into(), self.key_id.clone()),
            ("KACHE_S3_SECRET_KEY".into(), self.secret.clone()),
        ]
    }
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
