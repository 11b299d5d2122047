//! Build-script runs as cache entries (on unless `KACHE_CACHE_BUILD_SCRIPTS=0`).
//!
//! Cargo runs a build script by executing `build/<pkg>-<h>/build-script-build`,
//! a hard link of the executable rustc wrote beside it
//! (`build_script_build-<h>`). kache cannot see that run otherwise, so with
//! the switch on (the default), after the wrapper compiled or restored that executable it
//! moves it to `build_script_build-<h>.kache-real` and writes a small
//! `#!/bin/sh` launcher in its place ([`install_launchers`]); cargo then
//! links the launcher. The launcher runs `kache build-script-run <real>
//! <blake3 of real> -- <args>` ([`launch`]), which:
//!
//! 1. refuses a real binary whose content is not the recorded hash (a
//!    launcher can never run a stale script);
//! 2. with the switch off (or kache disabled) becomes the real script, exactly
//!    as cargo would have run it;
//! 3. otherwise builds the run's pre-key from what cargo passes the script
//!    (see [`keyed_env`]), the script's hash, every file of its package
//!    (declared or not: `cargo clean` would rerun it) and the compilers it
//!    may call, and looks for a stored run whose declarations
//!    (`rerun-if-changed` files and directories by content,
//!    `rerun-if-env-changed` variables by value) still hold now; a hit
//!    restores `OUT_DIR` (reflink, else a copy: never a hard link, scripts
//!    rewrite their files in place) and replays the run's stdout and
//!    stderr without executing the script;
//! 4. on a miss runs the real script, tees its output, and stores the run:
//!    every file of `OUT_DIR` as a blob, with a manifest (`manifest`) that
//!    maps the flat entry names (`out.<n>`) back to relative paths.
//!
//! Anything kache cannot key or store (a symlink in `OUT_DIR`, output that
//! is not UTF-8, a declared file changed while the script ran, a script
//! that wrote into its own package) runs the script and stores nothing.
//! With the switch off nothing here runs: the compile entries and their
//! keys are the same either way, because the launcher is written only into
//! `target/`, never into the store.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kache_core::args::{Output, OutputKind};
use kache_core::buildscript;
use kache_core::key::{self, KeyBuilder};
use kache_core::meta::{EntryMeta, FileRecord, META_VERSION};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::context::Roots;
use super::outcome::{Unit, report};
use super::{declared, linked, lock, lookup, toolchain};
use crate::config::Config;
use crate::daemon::client::Link;
use crate::events::Outcome;
use crate::store::{HashCache, Store};

/// The switch (`0` turns it off; on by default, see
/// [`Config::cache_build_scripts`]).
pub const FLAG: &str = "KACHE_CACHE_BUILD_SCRIPTS";

/// The subcommand the launcher calls (`argv[1]`).
pub const SUBCOMMAND: &str = "build-script-run";

/// Appended to the real script's file name.
const REAL_SUFFIX: &str = ".kache-real";

/// The launcher's second line, which marks a file as ours.
const LAUNCHER_MARK: &str = "# kache build-script launcher";

/// The `crate_types` of a run entry: runs are their own kind.
pub const RUN_KIND: &str = "build-script-run";

/// The entry file holding the `OUT_DIR` manifest.
const MANIFEST: &str = "manifest";

/// `env_deps` names of the declarations a run entry was keyed by.
pub const DECLARED: &str = "build-script declared #";

/// Most files an `OUT_DIR` may hold and still be stored.
const MAX_FILES: usize = 20_000;

/// After the wrapper wrote (compiled or restored) a build script's
/// executable into `out_dir`: replaces each linked executable among
/// `outputs` with a launcher, the real binary beside it. Does nothing with
/// the switch off or for any other crate. A failure leaves the real binary
/// where it was (the script then runs uncached) and never fails the build.
pub fn install_launchers(config: &Config, crate_name: &str, out_dir: &Path, outputs: &[Output]) {
    // Cargo compiles a build script into `<profile>/build/<pkg>-<hash>/`;
    // any other place (another layout, a user's crate of that name) is
    // left alone.
    let in_build_dir = out_dir
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|name| name == "build");
    if !config.cache_build_scripts || !crate_name.starts_with("build_script_") || !in_build_dir {
        return;
    }
    for output in outputs
        .iter()
        .filter(|o| o.kind == OutputKind::LinkedExecutable)
    {
        let path = out_dir.join(&output.name);
        if let Err(err) = install_launcher(&path) {
            warn!(path = %path.display(), "build-script launcher not installed: {err:#}");
        }
    }
}

fn install_launcher(path: &Path) -> Result<()> {
    let real = real_path(path);
    let kache = std::env::current_exe().context("finding the kache binary")?;
    // Rename keeps the inode: a real binary restored as a link to its blob
    // stays one, and nothing is written through it.
    std::fs::rename(path, &real).with_context(|| format!("moving {} aside", path.display()))?;
    let written = (|| -> Result<()> {
        let hash = hash_file(&real)?;
        let name = real
            .file_name()
            .context("the script has no file name")?
            .to_string_lossy()
            .to_string();
        let text = launcher_text(&kache, &real, &name, &hash);
        let temp = path.with_file_name(format!("{name}.kache-tmp"));
        std::fs::write(&temp, text)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&temp, path)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::rename(&real, path);
    }
    written
}

/// How an entry records one declaration line of [`declared::describe`]:
/// as it is, but a declared variable's value (`env NAME=value`) as its
/// digest, like an `env!` value ([`lookup::env_digest`]): a script may
/// declare a token, and the entry sits in the index and the bucket. The
/// digest proves a replay as well as the value would, and `why-miss` can
/// still name the variable.
pub fn recorded_form(line: &str) -> String {
    if let Some(rest) = line.strip_prefix("env ")
        && let Some((name, value)) = rest.split_once('=')
    {
        return format!("env {name}={}", lookup::env_digest(name, value));
    }
    line.to_string()
}

/// `<path>.kache-real`.
fn real_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(REAL_SUFFIX);
    PathBuf::from(name)
}

/// The launcher: finds the real script beside itself (cargo runs it through
/// a hard link in the same directory), else at the path it was written
/// for, and hands it to kache; without kache it runs the script directly.
fn launcher_text(kache: &Path, real: &Path, real_name: &str, hash: &str) -> String {
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    format!(
        "#!/bin/sh\n{LAUNCHER_MARK} ({FLAG}); see ARCHITECTURE.md.\n\
         r=\"$(dirname -- \"$0\")\"/{name}\n\
         [ -f \"$r\" ] || r={real}\n\
         k={kache}\n\
         [ -x \"$k\" ] && exec \"$k\" {SUBCOMMAND} \"$r\" {hash} -- \"$@\"\n\
         exec \"$r\" \"$@\"\n",
        name = shell_quote(real_name),
        real = q(real),
        kache = q(kache),
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// blake3 hex of a file's content.
fn hash_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// `kache build-script-run <real> <hash> -- <args…>`: runs, or replays, one
/// build-script run (see the module documentation). Returns the exit code.
pub fn launch(args: Vec<OsString>) -> i32 {
    let (real, hash, script_args) = match args.as_slice() {
        [real, hash, sep, rest @ ..] if sep == "--" => {
            (PathBuf::from(real), hash.to_string_lossy(), rest.to_vec())
        }
        _ => {
            eprintln!("kache: usage: kache {SUBCOMMAND} <script> <blake3> -- <args…>");
            return 2;
        }
    };
    match hash_file(&real) {
        Ok(actual) if actual == hash => {}
        Ok(_) => {
            eprintln!(
                "kache: {} is not the build script its launcher was written for; \
                 run `cargo clean` for this package",
                real.display()
            );
            return 101;
        }
        Err(err) => {
            eprintln!("kache: {err:#}");
            return 101;
        }
    }
    let config = match Config::load() {
        Ok(config) if !config.disabled && config.cache_build_scripts => config,
        // An OUT_DIR restored while the flag was on shares inodes with
        // the store; the script must not write through them.
        _ => return exec_unshared(&real, &script_args),
    };
    crate::logging::init_for_wrapper();
    let started = Instant::now();
    let mut run = match RunSession::open(&config, &real, &hash, &script_args) {
        Ok(run) => run,
        Err(err) => {
            debug!("build-script run not cached: {err:#}");
            return exec_unshared(&real, &script_args);
        }
    };
    run.started = started;
    run.run()
}

/// Becomes the real script once no file of `OUT_DIR` shares its inode
/// with a blob (an earlier run stored or restored them as links: a script
/// rewriting one in place would change the blob, and every other checkout
/// linked to it). A file that can be neither copied nor removed is left
/// (the cache never fails a build; a restore re-hashes every blob). Returns
/// only if the exec fails.
fn exec_unshared(real: &Path, args: &[OsString]) -> i32 {
    if let Some(out_dir) = std::env::var_os("OUT_DIR")
        && let Err(err) = break_links(Path::new(&out_dir))
    {
        warn!(out_dir = %Path::new(&out_dir).display(), "cannot unshare OUT_DIR: {err:#}");
    }
    exec(real, args)
}

/// Becomes the real script; returns only if that fails.
fn exec(real: &Path, args: &[OsString]) -> i32 {
    let err = Command::new(real).args(args).exec();
    eprintln!("kache: cannot run {}: {err}", real.display());
    101
}

/// Where each `OUT_DIR` file of a run entry goes.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    /// Directories to create, relative to `OUT_DIR`, parents first.
    dirs: Vec<String>,
    /// `(relative path, entry file name)`.
    files: Vec<(String, String)>,
}

/// One build-script run in progress.
struct RunSession<'a> {
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
    fn open(config: &'a Config, real: &Path, hash: &str, args: &[OsString]) -> Result<Self> {
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
            started: Instant::now(),
            link: Link::for_config(config),
            hit_source: "local".to_string(),
            package_before: String::new(),
        })
    }

    fn run(&mut self) -> i32 {
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

/// What cargo passes a build script that can change what it produces, by
/// name, sorted: every `CARGO_*` variable (features, `CARGO_CFG_*`,
/// `CARGO_ENCODED_RUSTFLAGS`, the package's metadata and paths) but the
/// jobserver's `CARGO_MAKEFLAGS` and cargo's terminal, network, registry
/// and parallelism settings, and `TARGET`, `HOST`, `PROFILE`,
/// `OPT_LEVEL`, `DEBUG`, `OUT_DIR`, `RUSTC`, `RUSTDOC`, `RUSTC_LINKER`,
/// `RUSTC_WORKSPACE_WRAPPER`, `RUSTC_BOOTSTRAP`. Not keyed: `NUM_JOBS`
/// (parallelism, not content) and `RUSTC_WRAPPER` (kache itself). Paths
/// are normalised by the caller.
pub fn keyed_env() -> Vec<(String, String)> {
    keyed_env_of(std::env::vars())
}

/// [`keyed_env`] of the variables `vars`.
fn keyed_env_of(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "OUT_DIR",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_LINKER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_BOOTSTRAP",
    ];
    // cargo's own settings that cannot change what a script produces: the
    // jobserver, parallelism, the terminal, the network and registries
    // (whose tokens have no business in a key).
    const NOT_KEYED: &[&str] = &[
        "CARGO_MAKEFLAGS",
        "CARGO_BUILD_JOBS",
        "CARGO_TERM_",
        "CARGO_HTTP_",
        "CARGO_NET_",
        "CARGO_REGISTRY_",
        "CARGO_REGISTRIES_",
    ];
    let mut vars: Vec<(String, String)> = vars
        .filter(|(name, _)| {
            (name.starts_with("CARGO_") && !NOT_KEYED.iter().any(|p| name.starts_with(p)))
                || NAMES.contains(&name.as_str())
        })
        .collect();
    vars.sort();
    vars
}

/// The compiler variable the `cc` crate would read first for `name`
/// (`CC_<target>`, `CC_<target_with_underscores>`, `TARGET_CC`, `CC`).
fn compiler_var(name: &str, target: &str) -> Option<String> {
    [
        format!("{name}_{target}"),
        format!("{name}_{}", target.replace('-', "_")),
        format!("TARGET_{name}"),
        name.to_string(),
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

/// A manifest path as a relative path that stays inside `OUT_DIR`.
fn confined(rel: &str) -> Result<PathBuf> {
    let path = Path::new(rel);
    if rel.is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!("{rel:?} is not a path inside OUT_DIR");
    }
    Ok(path.to_path_buf())
}

/// Every regular file below `dir` by relative path, and every directory.
/// A symlink or special file makes the run unstorable.
fn walk_out_dir(
    dir: &Path,
    rel: &Path,
    files: &mut Vec<String>,
    dirs: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    anyhow::ensure!(depth < 64, "{} is nested too deeply", dir.display());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && depth == 0 => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = rel.join(entry.file_name());
        let text = name
            .to_str()
            .with_context(|| format!("{} is not UTF-8", name.display()))?
            .to_string();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            dirs.push(text);
            walk_out_dir(&entry.path(), &name, files, dirs, depth + 1)?;
        } else if kind.is_file() {
            files.push(text);
            anyhow::ensure!(files.len() <= MAX_FILES, "OUT_DIR holds too many files");
        } else {
            bail!("OUT_DIR holds {text}, which is not a regular file or directory");
        }
    }
    Ok(())
}

/// Replaces every file below `dir` that shares its inode (a hard link to a
/// blob, from a store or restore of a kache that still linked them) with a private copy, or removes
/// it when no copy can be made. An error means a shared file is left.
fn break_links(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            break_links(&path)?;
        } else if kind.is_file() && entry.metadata()?.nlink() > 1 {
            let mut temp = path.as_os_str().to_owned();
            temp.push(".kache-unshare");
            let temp = PathBuf::from(temp);
            let copied = (|| -> std::io::Result<()> {
                std::fs::copy(&path, &temp)?;
                let mode = std::fs::metadata(&temp)?.mode() & 0o777;
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode | 0o600))?;
                std::fs::rename(&temp, &path)
            })();
            if copied.is_err() {
                // No room for a copy (a full disk): the file goes, as after
                // `cargo clean`, rather than stay writable through to a blob.
                let _ = std::fs::remove_file(&temp);
                std::fs::remove_file(&path)
                    .with_context(|| format!("unsharing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// A finished run of the real script.
struct Ran {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed_ms: u64,
}

/// Runs `real`, passing its stdout and stderr through as they come and
/// keeping a copy of each.
fn tee_run(real: &Path, args: &[OsString]) -> Result<Ran> {
    let started = Instant::now();
    let mut child = Command::new(real)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", real.display()))?;
    let out = child.stdout.take().context("no stdout pipe")?;
    let err = child.stderr.take().context("no stderr pipe")?;
    let out_thread = std::thread::spawn(move || tee(out, std::io::stdout()));
    let err_thread = std::thread::spawn(move || tee(err, std::io::stderr()));
    let status = child.wait().context("waiting for the build script")?;
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let code = status.code().unwrap_or(101);
    Ok(Ran {
        code,
        stdout,
        stderr,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

fn tee(mut from: impl Read, mut to: impl Write) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                let _ = to.write_all(&buf[..n]);
                let _ = to.flush();
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_must_stay_inside_out_dir() {
        assert!(confined("gen/a.rs").is_ok());
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "./a"] {
            assert!(confined(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_launcher_quotes_paths_and_names_the_hash() {
        let text = launcher_text(
            Path::new("/opt/k'ache/kache"),
            Path::new("/t/build/x-1/build_script_build-1.kache-real"),
            "build_script_build-1.kache-real",
            "abc",
        );
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(text.contains("k='/opt/k'\\''ache/kache'"));
        assert!(text.contains("build-script-run \"$r\" abc --"));
    }

    #[test]
    fn a_run_is_keyed_by_what_cargo_passes_but_not_the_jobserver() {
        let vars = [
            ("CARGO_MAKEFLAGS", "-j --jobserver-fds=3,4"),
            ("CARGO_TERM_COLOR", "always"),
            ("CARGO_REGISTRY_TOKEN", "secret"),
            ("CARGO_FEATURE_EXTRA", "1"),
            ("CARGO_CFG_TARGET_OS", "linux"),
            ("CARGO_ENCODED_RUSTFLAGS", ""),
            ("NUM_JOBS", "2"),
            ("RUSTC_WRAPPER", "/usr/bin/kache"),
            ("TARGET", "x86_64-unknown-linux-gnu"),
            ("PROFILE", "debug"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()));
        let names: Vec<String> = keyed_env_of(vars.into_iter())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "CARGO_CFG_TARGET_OS",
                "CARGO_ENCODED_RUSTFLAGS",
                "CARGO_FEATURE_EXTRA",
                "PROFILE",
                "TARGET"
            ]
        );
    }
}
