//! Harness: the real `kache-service` binary on an ephemeral loopback port
//! with a temporary database, spoken to over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_kache-service");

/// A running service.
pub struct Service {
    pub child: Child,
    pub url: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// An HTTP answer.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A command for the service with a clean environment for its settings.
pub fn command(db: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("KACHE_") || name == "POD_NAMESPACE" || name == "KUBECONFIG" {
            cmd.env_remove(name);
        }
    }
    cmd.args(["--bind", "127.0.0.1:0", "--db-path"])
        .arg(db)
        .args(extra);
    cmd.env("KACHE_LOG", "kache_service=debug");
    cmd
}

impl Service {
    /// Starts the service and waits for its listening line.
    pub fn start(db: &Path, extra: &[&str]) -> Self {
        Self::spawn(command(db, extra))
    }

    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kache-service");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("kache-service listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr_text.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "kache-service did not start: {}",
                    stderr_text.lock().unwrap()
                );
            }
        };
        Self {
            child,
            url,
            stderr: stderr_text,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        let mut resp = agent()
            .get(format!("{}{path}", self.url))
            .call()
            .expect("GET");
        Reply {
            status: resp.status().as_u16(),
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    pub fn post(&self, path: &str, body: &str, token: Option<&str>) -> Reply {
        post(&self.url, path, body, token)
    }

    /// The value of the first `/metrics` line starting with `prefix` (a
    /// name with its labels); 0 when there is none.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.get("/metrics")
            .body
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn plan(&self, intent: &Value) -> Value {
        let reply = self.post("/v2/prefetch-plan", &intent.to_string(), None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn stop(mut self) -> i32 {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "kache-service did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `/readyz` answers `status`.
    pub fn wait_ready(&self, status: u16, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.get("/readyz").status == status {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn post(base: &str, path: &str, body: &str, token: Option<&str>) -> Reply {
    let mut request = agent()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut resp = request.send(body).expect("POST");
    Reply {
        status: resp.status().as_u16(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A temp directory and a database path inside it.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("planner.db");
    (dir, db)
}

/// Writes a seed snapshot file and returns its path.
pub fn write_seed(dir: &Path, seed: &Value) -> PathBuf {
    let path = dir.join("seed.json");
    std::fs::write(&path, seed.to_string()).unwrap();
    path
}

/// Candidate keys of a plan, in order.
pub fn keys(plan: &Value) -> Vec<String> {
    plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cache_key"].as_str().unwrap().to_string())
        .collect()
}

/// A 64-hex cache key derived from a label.
pub fn key(label: &str) -> String {
    format!(
        "{:0>64}",
        label
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )[..64]
        .to_string()
}

/// Runs the binary to completion (for startup failures).
pub fn run_to_exit(mut cmd: Command) -> (i32, String) {
    let output = cmd.output().expect("run kache-service");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}
