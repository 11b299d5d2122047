//! The GitHub Action (`action.yml`, `post/action.yml`): its scripts
//! (`scripts/action/*.sh`) run here exactly as a runner runs them, with
//! GitHub's environment files (`GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_PATH`,
//! `GITHUB_STEP_SUMMARY`) as plain files, against a real OCI registry. The
//! build between the two steps sees only what the setup step exported.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{ENTRIES, EXPECTED_LINE, GEN_RUN, KACHE, World, run_app};
use registry::Registry;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One job's GitHub files and the variables a runner sets.
struct Job {
    dir: tempfile::TempDir,
}

impl Job {
    fn new() -> Self {
        let job = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for name in ["env", "output", "path", "summary.md"] {
            std::fs::write(job.file(name), "").expect("create a GitHub file");
        }
        job
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `bash scripts/action/<script>` with `inputs` as `INPUT_*` and the
    /// variables `GITHUB_ENV` holds so far, as a runner passes them on.
    fn step(&self, script: &str, inputs: &[(&str, &str)], cwd: &Path) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/action").join(script))
            .current_dir(cwd);
        clean_env(&mut cmd);
        cmd.env("GITHUB_ENV", self.file("env"))
            .env("GITHUB_OUTPUT", self.file("output"))
            .env("GITHUB_PATH", self.file("path"))
            .env("GITHUB_STEP_SUMMARY", self.file("summary.md"))
            .env("GITHUB_REPOSITORY", "Team/Project")
            .env("GITHUB_ACTOR", "octocat")
            .env("GITHUB_REF_NAME", "feature/oci-cache")
            .env("GITHUB_EVENT_NAME", "push")
            .env("KACHE_DAEMON_IDLE_TIMEOUT", "30");
        for (name, value) in self.exported() {
            cmd.env(name, value);
        }
        for (name, value) in inputs {
            cmd.env(format!("INPUT_{name}"), value);
        }
        cmd.output().expect("run an action script")
    }

    /// What `GITHUB_ENV` holds: `NAME=value` lines.
    fn exported(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.file("env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn outputs(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.file("output"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A later step of the job: `cargo <args>` with the exported variables.
    fn cargo(&self, project: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("cargo");
        cmd.args(args).arg("--offline").current_dir(project);
        clean_env(&mut cmd);
        cmd.env("CARGO_TERM_COLOR", "never")
            .env("KACHE_PROGRESS", "all")
            .envs(self.exported());
        cmd.output().expect("run cargo")
    }

    fn kache(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(KACHE);
        cmd.args(args);
        clean_env(&mut cmd);
        cmd.envs(self.exported()).output().expect("run kache")
    }
}

/// Nothing inherited that could change a build or point at another cache.
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars() {
        let build_env = name.starts_with("KACHE_")
            || name.starts_with("CARGO_")
            || name.starts_with("RUST")
            || name.starts_with("GITHUB_")
            || name.starts_with("INPUT_");
        let toolchain_env =
            ["RUSTUP_HOME", "CARGO_HOME", "RUSTUP_TOOLCHAIN"].contains(&name.as_str());
        if build_env && !toolchain_env {
            cmd.env_remove(&name);
        }
    }
    cmd.env("CARGO_INCREMENTAL", "0");
}

fn assert_ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the step failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_action_wires_a_build_to_the_registry_and_its_post_step_records_it() {
    let registry = Registry::start();
    let job = Job::new();
    let world = World::new();
    let project = world.project("checkout");
    let cache = job.cache();
    let inputs = [
        ("REMOTE", "oci"),
        ("REGISTRY", registry.url.as_str()),
        ("USERNAME", registry.username.as_str()),
        ("PASSWORD", registry.password.as_str()),
        ("KACHE_BINARY", KACHE),
        ("CACHE_DIR", cache.to_str().unwrap()),
        ("READ_ONLY", "auto"),
    ];
    let stdout = assert_ok(&job.step("setup.sh", &inputs, &project));
    // The password is masked in the log before anything could print it.
    assert!(
        stdout.contains(&format!("::add-mask::{}", registry.password)),
        "{stdout}"
    );
    let env = job.exported();
    assert_eq!(env["RUSTC_WRAPPER"], KACHE);
    assert_eq!(env["KACHE_OCI_REGISTRY"], registry.url);
    // `Team/Project` lowercased: OCI repository names are lowercase.
    assert_eq!(env["KACHE_OCI_REPOSITORY"], "team/project/kache-cache");
    assert_eq!(env["KACHE_OCI_USERNAME"], registry.username);
    assert_eq!(env["KACHE_NAMESPACE"], "feature-oci-cache");
    assert!(!env.contains_key("KACHE_REMOTE_READ_ONLY"), "{env:?}");
    let outputs = job.outputs();
    assert_eq!(outputs["kache"], KACHE);
    assert!(outputs["remote"].starts_with("oci://"), "{outputs:?}");
    let path = std::fs::read_to_string(job.file("path")).unwrap();
    assert_eq!(
        path.trim(),
        Path::new(KACHE).parent().unwrap().to_str().unwrap()
    );
    // The daemon is up before the build starts.
    let status = String::from_utf8_lossy(&job.kache(&["daemon"]).stdout).to_string();
    assert!(status.contains("pid"), "no daemon: {status}");

    // The job's own step: a build through kache, uploads in the background.
    let build = job.cargo(&project, &["build"]);
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    assert_eq!(run_app(&project), EXPECTED_LINE);

    assert_ok(&job.step("post.sh", &[("DRAIN_SECONDS", "60")], &project));
    let summary = std::fs::read_to_string(job.file("summary.md")).unwrap();
    assert!(summary.contains("kache"), "{summary}");
    assert!(summary.contains("miss"), "{summary}");
    // The daemon drained and stopped.
    let status = String::from_utf8_lossy(&job.kache(&["daemon"]).stdout).to_string();
    assert!(status.contains("no kache daemon"), "{status}");

    // What the job left in the registry: every entry (fx-gen's build-script
    // run too), the build manifest and the namespace's shards.
    let mut probe = World::new();
    probe.env = job
        .exported()
        .into_iter()
        .filter(|(k, _)| k.starts_with("KACHE_OCI_"))
        .collect();
    let out = probe.kache_in(
        probe.root.path(),
        &["sync", "--pull", "--all", "--dry-run"],
        &[],
    );
    let listed = assert_ok(&out);
    assert!(
        listed.contains(&format!("would pull {} entries", ENTRIES.len())),
        "{listed}"
    );
    let spec = kache_remote::oci::OciSpec::from_env(None, None);
    assert!(spec.is_none(), "the test process has no KACHE_OCI_* set");
    let spec = kache_remote::oci::OciSpec {
        registry: registry.url.clone(),
        repository: "team/project/kache-cache".into(),
        username: Some(registry.username.clone()),
        password: Some(registry.password.clone()),
        token: None,
    };
    let storage = kache_remote::oci::open(&spec).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let names = runtime
        .block_on(kache_remote::Storage::list(
            &storage,
            "artifacts/_manifests",
        ))
        .unwrap();
    // The `crate_name`s a manifest or shard document lists.
    let crate_names = |object: &str| -> Vec<String> {
        let body = runtime
            .block_on(kache_remote::Storage::get(&storage, object))
            .unwrap()
            .unwrap_or_else(|| panic!("{object} is missing"));
        let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
        document["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("{object}: {document}"))
            .iter()
            .map(|e| e["crate_name"].as_str().unwrap().to_string())
            .collect()
    };
    let manifests: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("artifacts/_manifests/") && n.matches('/').count() == 2)
        .collect();
    assert_eq!(manifests.len(), 1, "one build manifest: {names:?}");
    // It names every entry of the build, fx-gen's build-script run too.
    let mut named = crate_names(manifests[0]);
    named.sort();
    let mut expected: Vec<String> = ENTRIES.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(named, expected, "{}", manifests[0]);
    let shards: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("artifacts/_manifests/v3/feature-oci-cache/shards/"))
        .collect();
    assert!(!shards.is_empty(), "no shards: {names:?}");
    // The run is in its package's shard, as fx-gen's library is.
    let sharded: Vec<String> = shards.iter().flat_map(|s| crate_names(s)).collect();
    for name in ["fx_gen", GEN_RUN] {
        assert!(
            sharded.iter().any(|n| n == name),
            "{name} in no shard: {sharded:?}"
        );
    }
}

#[test]
fn fork_pull_requests_are_read_only_and_s3_inputs_become_the_s3_variables() {
    let job = Job::new();
    let world = World::new();
    let cache = job.cache();
    let mut cmd_inputs = vec![
        ("REMOTE", "s3"),
        ("S3_BUCKET", "rust-cache"),
        ("S3_ENDPOINT", "http://127.0.0.1:9"),
        ("S3_ACCESS_KEY", "GKexample"),
        ("S3_SECRET_KEY", "very-secret-key"),
        ("PLANNER_ENDPOINT", "http://127.0.0.1:9/planner"),
        ("PLANNER_TOKEN", "planner-secret"),
        ("NAMESPACE", "ci-main"),
        ("KACHE_BINARY", KACHE),
    ];
    let cache_dir = cache.to_str().unwrap().to_string();
    cmd_inputs.push(("CACHE_DIR", cache_dir.as_str()));
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/action/setup.sh"))
        .current_dir(world.root.path());
    clean_env(&mut cmd);
    cmd.env("GITHUB_ENV", job.file("env"))
        .env("GITHUB_OUTPUT", job.file("output"))
        .env("GITHUB_REPOSITORY", "team/project")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("KACHE_ACTION_HEAD_REPOSITORY", "someone/project")
        .env("KACHE_DAEMON_IDLE_TIMEOUT", "10");
    for (name, value) in &cmd_inputs {
        cmd.env(format!("INPUT_{name}"), value);
    }
    let stdout = assert_ok(&cmd.output().unwrap());
    for secret in ["very-secret-key", "planner-secret"] {
        assert!(
            stdout.contains(&format!("::add-mask::{secret}")),
            "{stdout}"
        );
    }
    let env = job.exported();
    for (name, value) in [
        ("KACHE_S3_BUCKET", "rust-cache"),
        ("KACHE_S3_ENDPOINT", "http://127.0.0.1:9"),
        ("KACHE_S3_ACCESS_KEY", "GKexample"),
        ("KACHE_S3_SECRET_KEY", "very-secret-key"),
        ("KACHE_PLANNER_ENDPOINT", "http://127.0.0.1:9/planner"),
        ("KACHE_PLANNER_TOKEN", "planner-secret"),
        ("KACHE_NAMESPACE", "ci-main"),
        ("KACHE_REMOTE_READ_ONLY", "1"),
    ] {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert!(!env.contains_key("KACHE_OCI_REGISTRY"));
    let _ = job.kache(&["daemon", "stop", "--drain", "0"]);

    // A post step whose setup never ran warns and never fails the job.
    let lone = Job::new();
    let out = lone.step("post.sh", &[], world.root.path());
    let stdout = assert_ok(&out);
    assert!(stdout.contains("::warning::"), "{stdout}");
}

#[test]
fn the_readme_shows_the_checked_example_workflow() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let example =
        std::fs::read_to_string(repo_root().join("scripts/action/example-workflow.yml")).unwrap();
    // Every step of the example (which scripts/action/lint.sh checks with
    // actionlint) is in the README's copyable workflow, and the reverse.
    let steps = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("- uses:") || l.starts_with("- run:") || l.starts_with("if:"))
            .map(String::from)
            .collect()
    };
    let section = readme
        .split("## GitHub Action")
        .nth(1)
        .and_then(|s| s.split("```yaml").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("a yaml block in the README's GitHub Action section");
    assert_eq!(steps(section), steps(&example));
    assert!(section.contains("packages: write"), "{section}");
}
