//! One build-script run: its key, the lookup of a stored run and its
//! replay, or the real run and its storing.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kache_core::args::OutputKind;
use kache_core::buildscript;
use kache_core::key::{self, KeyBuilder};
use kache_core::meta::{EntryMeta, FileRecord, META_VERSION};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::super::context::Roots;
use super::super::outcome::{Unit, report};
use super::super::{declared, linked, lock, lookup, toolchain};
use super::env::{cargo_config_env_names, compiler_var, keyed_env};
use super::out_dir::{break_links, confined, walk_out_dir};
use super::process::{Ran, tee_run};
use super::{DECLARED, MANIFEST, RUN_KIND, exec, exec_unshared, recorded_form};
use crate::config::Config;
use crate::daemon::client::Link;
use crate::events::Outcome;
use crate::store::{HashCache, Store};

/// Where each `OUT_DIR` file of a run entry goes.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Manifest {
    /// Directories to create, relative to `OUT_DIR`, parents first.
    dirs: Vec<String>,
    /// `(relative path, entry file name)`.
    files: Vec<(String, String)>,
}

/// One build-script run in progress.
pub(super) struct RunSession<'a> {
    config: &'a Config,
    real: PathBuf,
    script_hash: String,
    args: Vec<OsString>,
    out_dir: PathBuf,
    package: PathBuf,
    /// `<package>:build-script-run`, the events' name.
    unit_name: String,
    store: Store,
    roots: Roots,
    hasher: HashCache,
    started: Instant,
    /// The daemon, when a remote is configured.
    link: Option<Link>,
    /// Where a hit came from: `local`, `remote` or `prefetch`.
    hit_source: String,
    /// The package's state before the script ran (keyed in the pre-key).
    package_before: String,
}

impl<'a> RunSession<'a> {
    /// A session for the run cargo asked for (`OUT_DIR` and the package
    /// from its environment), timed from `started`.
    pub(super) fn open(
        config: &'a Config,
        real: &Path,
        hash: &str,
        args: &[OsString],
        started: Instant,
    ) -> Result<Self> {
        let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
        anyhow::ensure!(out_dir.is_absolute(), "OUT_DIR is not absolute");
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let package = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cwd.clone());
        let target = std::env::var("TARGET").ok();
        let roots = Roots::discover(&cwd, &out_dir, target.as_deref());
        let store = Store::open(&config.cache_dir)?;
        let unit_name = format!(
            "{}:{RUN_KIND}",
            std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "build-script".to_string())
        );
        Ok(Self {
            config,
            real: real.to_path_buf(),
            script_hash: hash.to_string(),
            args: args.to_vec(),
            out_dir,
            package,
            unit_name,
            store,
            roots,
            hasher: HashCache::default(),
            started,
            link: Link::for_config(config),
            hit_source: "local".to_string(),
            package_before: String::new(),
        })
    }

    /// Replays a stored run, or runs the script and stores it; the exit
    /// code for cargo.
    pub(super) fn run(&mut self) -> i32 {
        let builder = match self.pre_key() {
            Ok(builder) => builder,
            Err(err) => {
                debug!(unit = %self.unit_name, "cannot key the run: {err:#}");
                return exec_unshared(&self.real, &self.args);
            }
        };
        let pre_key = builder.pre_key();
        if self.config.verify {
            // Execute instead, and compare (see `run_and_store`).
            let found = self.lookup(&pre_key).ok().flatten();
            return self.run_and_store(&builder, &pre_key, found);
        }
        if self.try_hit(&pre_key) {
            return 0;
        }
        // The bucket, through the daemon, within its deadline.
        if let Some(link) = &self.link
            && link.fetch(&self.unit_name, &pre_key) > 0
            && self.try_hit(&pre_key)
        {
            return 0;
        }
        let _lock = lock::KeyLock::acquire(&self.config.cache_dir, &pre_key).ok();
        // Whoever held the lock may have stored this very run.
        if self.try_hit(&pre_key) {
            return 0;
        }
        self.run_and_store(&builder, &pre_key, None)
    }

    /// Restores the run a lookup under `pre_key` finds, and records the
    /// hit; false (after dropping an entry that failed) otherwise.
    fn try_hit(&mut self, pre_key: &str) -> bool {
        let Ok(Some(meta)) = self.lookup(pre_key) else {
            return false;
        };
        match self.restore(&meta) {
            Ok(bytes) => {
                let source = lookup::record_hit(
                    &mut self.store,
                    &mut self.hasher,
                    self.link.is_some(),
                    &meta.cache_key,
                );
                self.hit_source = source;
                self.finish(
                    Outcome::Hit,
                    Some(&meta.cache_key),
                    bytes,
                    meta.compile_time_ms,
                    None,
                    false,
                );
                true
            }
            Err(err) => {
                warn!(unit = %self.unit_name, "restore failed, running the script: {err:#}");
                lookup::forget(&mut self.store, &meta.cache_key);
                false
            }
        }
    }

    /// Everything known before the script runs.
    fn pre_key(&mut self) -> Result<KeyBuilder> {
        let normalize = |text: &str| self.roots.normalizer.normalize(text);
        let mut builder = KeyBuilder::default();
        builder.add("kind", "build-script-run v1");
        builder.add("script", self.script_hash.clone());
        for arg in &self.args {
            builder.add("args", normalize(&arg.to_string_lossy()));
        }
        builder.add("cwd", normalize(&self.roots.cwd.to_string_lossy()));
        // Every file of the package, whatever the script declares: cargo
        // does not rerun a script for an undeclared file, but `cargo clean`
        // does, and a replayed run must never be staler than that.
        self.package_before =
            declared::package_state(&self.package, &self.store, &mut self.hasher)?;
        builder.add("package", self.package_before.clone());
        for (name, value) in keyed_env() {
            builder.add("env", format!("{name}={}", normalize(&value)));
        }
        // What cargo's configuration sets in `[env]`, by digest (a value
        // may be a secret), or unset.
        for name in cargo_config_env_names(&[&self.package, &self.out_dir]) {
            let value = match std::env::var(&name) {
                Ok(value) => lookup::env_digest(&name, &normalize(&value)),
                Err(_) => "unset".to_string(),
            };
            builder.add("config_env", format!("{name}={value}"));
        }
        if let Some(rustc) = std::env::var_os("RUSTC") {
            builder.add(
                "rustc",
                toolchain::identity(&self.store, Path::new(&rustc), "-vV")?,
            );
        }
        if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
            builder.add("linker", self.compiler_identity(&linker.to_string_lossy()));
        }
        // The C and C++ compilers the `cc` crate would pick: a compiler
        // upgrade changes what a script that builds C produces, and cargo
        // would not rerun it (the variables naming them are declared, the
        // binaries are not).
        let target = std::env::var("TARGET").unwrap_or_default();
        for (name, default) in [("CC", "cc"), ("CXX", "c++")] {
            let program = compiler_var(name, &target).unwrap_or_else(|| default.to_string());
            builder.add(
                "compiler",
                format!("{name}: {}", self.compiler_identity(&program)),
            );
        }
        // `DEP_<links>_<key>`: what a `links` dependency's last run printed
        // (`cargo:<key>=<value>`). Cargo reruns this script whenever that
        // run changed, so every value is keyed (a version, a flag: what
        // the script branches on), and each absolute path in it (a
        // dependency's include directory) by content too; a system folder
        // (`DEP_OPENSSL_INCLUDE=/usr/include`: thousands of files the
        // package manager writes) by each file's name, size and mtime.
        let mut deps: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("DEP_"))
            .collect();
        deps.sort();
        for (name, value) in deps {
            builder.add("dep", format!("{name}={}", normalize(&value)));
            for path in std::env::split_paths(&value) {
                if path.is_absolute() && path.exists() {
                    let state = if declared::is_system(&path) {
                        declared::system_state(&path)?
                    } else {
                        declared::state_of(&path, &self.store, &mut self.hasher)?
                    };
                    builder.add("dep_paths", format!("{name}={state}"));
                }
            }
        }
        if let Some(salt) = &self.config.key_salt {
            builder.add("salt", salt.clone());
        }
        Ok(builder)
    }

    /// `cc -v`'s banner (cached per binary), or why there is none.
    fn compiler_identity(&self, program: &str) -> String {
        let first = program.split_whitespace().next().unwrap_or_default();
        match toolchain::find_program(std::ffi::OsStr::new(first)) {
            Some(path) => match toolchain::identity(&self.store, &path, "-v") {
                Ok(banner) => kache_core::cc::banner_identity(&banner),
                Err(_) => format!("{first}: no banner"),
            },
            None => format!("{first}: absent"),
        }
    }

    /// What the script declared in `stdout`, evaluated now: one line each.
    /// (An entry records them in [`recorded_form`].)
    fn declared_now(&mut self, stdout: &str) -> Result<Vec<String>> {
        let parsed = buildscript::parse_output(stdout);
        declared::describe(
            &parsed,
            &self.package,
            &self.store,
            &mut self.hasher,
            &self.roots,
        )
    }

    /// The most recently used run under `pre_key` whose declarations and
    /// baked roots all hold now. Any doubt is a miss.
    fn lookup(&mut self, pre_key: &str) -> Result<Option<EntryMeta>> {
        'candidates: for meta in self.store.index.candidates(pre_key)? {
            if meta.crate_types != [RUN_KIND] {
                continue;
            }
            let mut recorded = Vec::new();
            for (name, value) in &meta.env_deps {
                if name.starts_with(DECLARED) {
                    recorded.push(value.clone().unwrap_or_default());
                } else if let Some(sentinel) = name.strip_prefix(linked::BAKED_ROOT) {
                    if linked::root_path(&self.roots, sentinel) != *value {
                        continue 'candidates;
                    }
                } else {
                    continue 'candidates;
                }
            }
            let stdout = self.roots.normalizer.denormalize(&meta.stdout);
            // An entry stored before these rules (or by another kache).
            if unreplayable(&buildscript::parse_output(&stdout), &self.package).is_some() {
                continue;
            }
            match self.declared_now(&stdout) {
                Ok(now) if now.iter().map(|line| recorded_form(line)).eq(recorded) => {}
                _ => continue,
            }
            if key::full_key(pre_key, &meta.inputs, &meta.env_deps) == meta.cache_key
                && lookup::verify_blobs(&self.store, &meta).is_ok()
            {
                return Ok(Some(meta));
            }
        }
        Ok(None)
    }

    /// Puts the run's `OUT_DIR` back and replays its output.
    fn restore(&mut self, meta: &EntryMeta) -> Result<u64> {
        let manifest_file = meta
            .files
            .iter()
            .find(|f| f.name == MANIFEST)
            .context("the entry has no manifest")?;
        let manifest: Manifest =
            serde_json::from_slice(&self.store.read_blob(&manifest_file.hash)?)
                .context("reading the OUT_DIR manifest")?;
        for dir in &manifest.dirs {
            std::fs::create_dir_all(self.out_dir.join(confined(dir)?))?;
        }
        std::fs::create_dir_all(&self.out_dir)?;
        let mut bytes = 0;
        for (rel, name) in &manifest.files {
            let file = meta
                .files
                .iter()
                .find(|f| f.name == *name)
                .with_context(|| format!("the entry lacks {name}"))?;
            let dest = self.out_dir.join(confined(rel)?);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // A reflink or a copy, for the reason `store_run` copies.
            self.store
                .restore_file(&file.hash, &dest, false, file.executable)?;
            bytes += file.size;
        }
        let mut stdout = std::io::stdout();
        stdout.write_all(self.roots.normalizer.denormalize(&meta.stdout).as_bytes())?;
        stdout.flush()?;
        let _ =
            std::io::stderr().write_all(self.roots.normalizer.denormalize(&meta.stderr).as_bytes());
        Ok(bytes)
    }

    /// Runs the real script, teeing its output, and stores the run when it
    /// succeeded. Under `KACHE_VERIFY`, `verifying` is the run a lookup
    /// found: the fresh run is compared with it.
    fn run_and_store(
        &mut self,
        builder: &KeyBuilder,
        pre_key: &str,
        verifying: Option<EntryMeta>,
    ) -> i32 {
        // A file restored as a link to its blob must not be written through.
        if let Err(err) = break_links(&self.out_dir) {
            warn!(unit = %self.unit_name, "cannot unshare OUT_DIR: {err:#}");
            return exec(&self.real, &self.args);
        }
        let start = SystemTime::now();
        let ran = match tee_run(&self.real, &self.args) {
            Ok(ran) => ran,
            Err(err) => {
                eprintln!("kache: cannot run {}: {err:#}", self.real.display());
                return 101;
            }
        };
        let run_ms = ran.elapsed_ms;
        if ran.code != 0 {
            self.finish(
                Outcome::Miss,
                None,
                0,
                run_ms,
                Some(format!("the build script exited with {}", ran.code)),
                false,
            );
            return ran.code;
        }
        match self.store_run(builder, pre_key, &ran, start) {
            Ok(meta) => match verifying {
                Some(expected) => {
                    let same = expected
                        .files
                        .iter()
                        .map(|f| (&f.name, &f.hash))
                        .eq(meta.files.iter().map(|f| (&f.name, &f.hash)))
                        && expected.stdout == meta.stdout;
                    if same {
                        self.finish(
                            Outcome::Hit,
                            Some(&expected.cache_key),
                            expected.size(),
                            expected.compile_time_ms,
                            None,
                            true,
                        );
                    } else {
                        if expected.cache_key != meta.cache_key {
                            lookup::forget(&mut self.store, &expected.cache_key);
                        }
                        warn!(unit = %self.unit_name, "KACHE_VERIFY: wrong hit: the run's OUT_DIR or stdout differ");
                        self.finish(
                            Outcome::WrongHit,
                            Some(&expected.cache_key),
                            meta.size(),
                            run_ms,
                            Some("the run's OUT_DIR or stdout differ".to_string()),
                            false,
                        );
                    }
                }
                None => {
                    if let Some(link) = &self.link {
                        link.upload(&self.store, &meta.cache_key);
                    }
                    self.finish(
                        Outcome::Miss,
                        Some(&meta.cache_key),
                        meta.size(),
                        run_ms,
                        None,
                        false,
                    )
                }
            },
            Err(err) => {
                debug!(unit = %self.unit_name, "run not stored: {err:#}");
                self.finish(
                    Outcome::Miss,
                    None,
                    0,
                    run_ms,
                    Some(format!("not stored: {err:#}")),
                    false,
                );
            }
        }
        let _ = self.hasher.flush(&mut self.store);
        0
    }

    fn store_run(
        &mut self,
        builder: &KeyBuilder,
        pre_key: &str,
        ran: &Ran,
        start: SystemTime,
    ) -> Result<EntryMeta> {
        let stdout =
            std::str::from_utf8(&ran.stdout).context("the script's stdout is not UTF-8")?;
        let stderr =
            std::str::from_utf8(&ran.stderr).context("the script's stderr is not UTF-8")?;
        let parsed = buildscript::parse_output(stdout);
        // A declared file that changed while the script ran may not be what
        // it read: cargo reruns such a script next time, so kache stores
        // nothing.
        let start_ns = start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        if let Some(why) = unreplayable(&parsed, &self.package) {
            bail!("{why}");
        }
        for path in &parsed.changed {
            if let Ok(meta) = std::fs::metadata(self.package.join(path))
                && meta.is_file()
                && (meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128) > start_ns
            {
                bail!("{path} changed while the build script ran");
            }
        }
        // A script that wrote into its own package (generated sources in
        // `src/`) did something a replay cannot: only `OUT_DIR` is stored.
        // Another checkout without those files would get a run that never
        // writes them.
        let package_after = declared::package_state(&self.package, &self.store, &mut self.hasher)?;
        anyhow::ensure!(
            package_after == self.package_before,
            "the build script changed files of its package ({}), which a replay would not",
            self.package.display()
        );
        let declared = self.declared_now(stdout)?;
        let mut listing = Vec::new();
        let mut dirs = Vec::new();
        walk_out_dir(&self.out_dir, Path::new(""), &mut listing, &mut dirs, 0)?;
        listing.sort();
        dirs.sort();
        let mut files = Vec::with_capacity(listing.len() + 1);
        let mut manifest = Manifest {
            dirs,
            files: Vec::new(),
        };
        let mut written = Vec::new();
        for (n, rel) in listing.iter().enumerate() {
            let path = self.out_dir.join(rel);
            let executable = std::fs::metadata(&path)?.mode() & 0o111 != 0;
            // Copied, never linked: scripts and the tools they run rewrite
            // `OUT_DIR` files in place, and not always through kache (the
            // flag off, a build without the wrapper, a script recompiled
            // without a launcher); a shared inode would carry such a write
            // into the blob and every checkout restored from it.
            let stored = self.store.put_file(&path, false)?;
            let name = format!("out.{n}");
            manifest.files.push((rel.clone(), name.clone()));
            files.push(FileRecord {
                name,
                size: stored.size,
                hash: stored.hash,
                executable,
                kind: OutputKind::Immutable,
            });
            written.push(path);
        }
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let stored = self.store.put_bytes(&manifest_bytes)?;
        files.push(FileRecord {
            name: MANIFEST.to_string(),
            size: stored.size,
            hash: stored.hash,
            executable: false,
            kind: OutputKind::Copied,
        });
        let mut env_deps: Vec<(String, Option<String>)> = declared
            .into_iter()
            .enumerate()
            .map(|(n, line)| (format!("{DECLARED}{n:05}"), Some(recorded_form(&line))))
            .collect();
        // A generated file holding a machine-local root (an absolute path
        // into the workspace or target directory) is only right there.
        env_deps.extend(linked::baked_roots(&written, &self.roots)?);
        let cache_key = key::full_key(pre_key, &[], &env_deps);
        let normalizer = &self.roots.normalizer;
        let mut features: Vec<String> = std::env::vars()
            .filter_map(|(name, _)| {
                name.strip_prefix("CARGO_FEATURE_")
                    .map(|f| f.to_lowercase().replace('_', "-"))
            })
            .collect();
        features.sort();
        let meta = EntryMeta {
            version: META_VERSION,
            cache_key,
            pre_key: pre_key.to_string(),
            crate_name: self.unit_name.clone(),
            crate_types: vec![RUN_KIND.to_string()],
            target: std::env::var("TARGET").unwrap_or_else(|_| "host".to_string()),
            profile: std::env::var("PROFILE").unwrap_or_else(|_| "debug".to_string()),
            features,
            files,
            stdout: normalizer.normalize(stdout),
            stderr: normalizer.normalize(stderr),
            compile_time_ms: ran.elapsed_ms,
            created: crate::store::now(),
            inputs: Vec::new(),
            env_deps,
            components: builder.digests(),
            unnormalised: self.roots.unnormalised.clone(),
        };
        self.store.commit_entry(&meta)?;
        Ok(meta)
    }

    fn finish(
        &self,
        outcome: Outcome,
        key: Option<&str>,
        bytes: u64,
        run_ms: u64,
        reason: Option<String>,
        verified: bool,
    ) {
        let unit = Unit {
            crate_name: &self.unit_name,
            display: &self.unit_name,
            terminal_only: false,
            target_dir: self.roots.target_dir.as_deref(),
            hit_source: &self.hit_source,
            verified,
        };
        report(
            self.config,
            self.started,
            &unit,
            outcome,
            key,
            bytes,
            run_ms,
            reason,
        );
    }
}

/// Why a run that declared `parsed` must execute every time, if it must:
/// - it declares a path inside `.git` (vergen declares `.git/HEAD` and the
///   branch's ref): it reads the repository, and a tag, a packed ref or a
///   dirty tree changes what it prints without any declaration saying so;
/// - it declares a path that does not exist (`rerun-if-changed=NULL`, the
///   "always rerun" idiom): cargo reruns such a script on every build, so
///   a replay would be staler than cargo.
pub(super) fn unreplayable(parsed: &buildscript::Declared, package: &Path) -> Option<String> {
    parsed.changed.iter().find_map(|path| {
        if Path::new(path)
            .components()
            .any(|c| c.as_os_str() == ".git")
        {
            Some(format!(
                "it declares {path}: it reads the repository, which a replay cannot follow"
            ))
        } else if std::fs::symlink_metadata(package.join(path)).is_err() {
            Some(format!(
                "it declares {path}, which does not exist: cargo reruns it on every build"
            ))
        } else {
            None
        }
    })
}
