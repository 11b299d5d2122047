//! A real OCI registry for the registry-remote tests: Debian's
//! `docker-registry` (the CNCF distribution registry) on a loopback port,
//! with bcrypt htpasswd basic auth and its storage in a temporary
//! directory, stopped when dropped. Its binary comes from
//! `KACHE_REGISTRY_BIN`, else `scripts/install-registry.sh` (which the test
//! runs itself when the variable is unset: a missing server is a failure
//! with one clear line, never a skip).

// Shared by several test crates, each using a part.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub repository: String,
    pub username: String,
    pub password: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `(registry, htpasswd)` binaries, installing them once if needed.
pub fn binaries() -> (PathBuf, PathBuf) {
    let registry = match std::env::var_os("KACHE_REGISTRY_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-registry.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/install-registry.sh");
            assert!(
                out.status.success(),
                "installing the OCI registry failed: run scripts/install-registry.sh \
                 (apt-get install docker-registry apache2-utils)"
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    assert!(
        registry.is_file(),
        "no OCI registry binary at {} (KACHE_REGISTRY_BIN; scripts/install-registry.sh installs it)",
        registry.display()
    );
    let htpasswd = std::env::var_os("KACHE_HTPASSWD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/htpasswd"));
    assert!(
        htpasswd.is_file(),
        "no htpasswd at {} (apache2-utils; scripts/install-registry.sh installs it)",
        htpasswd.display()
    );
    (registry, htpasswd)
}

impl Registry {
    /// Starts a fresh registry with one user (htpasswd basic auth).
    pub fn start() -> Self {
        Self::start_with_auth(None)
    }

    /// Starts a fresh registry whose `auth:` section is `auth` (YAML,
    /// indented two spaces), or the htpasswd file of one user.
    pub fn start_with_auth(auth: Option<&str>) -> Self {
        let (bin, htpasswd) = binaries();
        let dir = tempfile::tempdir().expect("tempdir");
        let (username, password) = ("kache".to_string(), "s3cret-registry-pass".to_string());
        let out = Command::new(&htpasswd)
            .args(["-Bbn", &username, &password])
            .output()
            .expect("run htpasswd");
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
        let port = free_port();
        let config = dir.path().join("registry.yml");
        let auth = match auth {
            Some(auth) => auth.to_string(),
            None => format!(
                "  htpasswd:\n    realm: kache-test\n    path: {}/htpasswd\n",
                dir.path().display()
            ),
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n{auth}",
                d = dir.path().display()
            ),
        )
        .expect("write registry.yml");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the registry");
        let registry = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            repository: "team/project/kache-cache".to_string(),
            username,
            password,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Up when `/v2/` asks for credentials.
        while registry.status("/v2/") != Some(401) {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The HTTP status of an anonymous GET of `path`.
    pub fn status(&self, path: &str) -> Option<u16> {
        let addr = self.url.strip_prefix("http://")?;
        let mut stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    /// The client environment for this repository.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KACHE_OCI_REGISTRY".into(), self.url.clone()),
            ("KACHE_OCI_REPOSITORY".into(), self.repository.clone()),
            ("KACHE_OCI_USERNAME".into(), self.username.clone()),
            ("KACHE_OCI_PASSWORD".into(), self.password.clone()),
        ]
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
