//! The real planner (`kache-service`) for the planner-client tests: the
//! workspace's own binary on an ephemeral loopback port with a temporary
//! database, stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Service {
    child: Child,
    _db: tempfile::TempDir,
    pub url: String,
}

/// `target/<profile>/kache-service`, built if the test run did not build it.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("kache-service");
    if !bin.is_file() {
        let status = Command::new("cargo")
            .args(["build", "-p", "kache-service"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p kache-service");
        assert!(status.success());
    }
    bin
}

impl Service {
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// Starts it with extra flags and environment (a bucket to learn from).
    pub fn start_with(args: &[&str], env: &[(String, String)]) -> Self {
        let db = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(binary());
        for (name, _) in std::env::vars() {
            if name.starts_with("KACHE_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v))).args(args);
        let mut child = cmd
            .args(["--bind", "127.0.0.1:0", "--db-path"])
            .arg(db.path().join("planner.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kache-service");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("kache-service listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("kache-service did not start");
        let service = Self {
            child,
            _db: db,
            url,
        };
        for _ in 0..100 {
            if service.request("GET", "/readyz", "").0 == 200 {
                return service;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("kache-service never became ready");
    }

    /// `(status, body)` of one HTTP/1.1 request.
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let host = self.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(host).expect("connect to the service");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// The value of one line of `/metrics` (`name{labels}`), 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.request("GET", "/metrics", "");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}
