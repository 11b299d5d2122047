//! Wrapper mode: `kache <path-to-rustc> <args…>`, called by cargo for every
//! compile.
//!
//! The flow follows the data: parse the arguments → build the pre-key → find a
//! recorded entry whose inputs still match → restore it, or lock the key,
//! compile, and store what rustc wrote. Architecture invariant: the wrapper
//! never fails a build because of the cache. Every error before rustc starts
//! falls back to running rustc unchanged; every error after it only loses
//! the store, never rustc's exit code or output.

mod build_run;
mod cc;
mod compile;
mod context;
mod declared;
mod incremental;
mod linked;
mod lock;
mod lookup;
mod outcome;
mod side_files;
mod toolchain;
mod verify;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kache_core::args::{self, Invocation, Output, OutputKind, Parsed};
use kache_core::depinfo;
use kache_core::key::{self, Input, KeyBuilder};
use kache_core::meta::{EntryMeta, FileRecord, META_VERSION};
use tracing::{debug, trace, warn};

use crate::config::Config;
use crate::daemon::client::Link;
use crate::events::Outcome;
use crate::store::{self, HashCache, Store};
use compile::{Compiled, Compiler};
use context::Roots;
use lookup::find_entry;
use outcome::{Unit, display_name, record_passthrough_of, report};

/// Whether `argv[1]` names a compiler, which puts kache in wrapper mode.
pub fn is_compiler(arg: &OsStr) -> bool {
    let name = Path::new(arg)
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let name = name.strip_suffix(".exe").unwrap_or(&name);
    name == "rustc" || name == "clippy-driver"
}

/// Whether `argv[1]` is a program for [`run_program`]: not an option, not a
/// kache subcommand, and either an existing executable or a compiler-like
/// name (so a missing compiler gets an error naming it, not the CLI's).
pub fn is_other_program(arg: &OsStr, is_command: impl Fn(&str) -> bool) -> bool {
    let text = arg.to_string_lossy();
    if text.is_empty() || text.starts_with('-') || is_command(&text) {
        return false;
    }
    let name = Path::new(arg)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    text.contains('/')
        || kache_core::cc::is_gcc_like_name(&name)
        || toolchain::find_program(arg).is_some()
}

pub use build_run::{
    DECLARED as RUN_DECLARED, SUBCOMMAND as BUILD_SCRIPT_RUN, launch as run_build_script,
};
pub use cc::run as run_program;

fn is_clippy(arg: &OsStr) -> bool {
    Path::new(arg)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("clippy"))
}

/// Runs one compiler call and returns the exit code for the process.
pub fn run(compiler: OsString, args: Vec<OsString>) -> i32 {
    let raw = PathBuf::from(&compiler);
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("kache: {err:#}; compiling without the cache");
            return compile::passthrough(&raw, &args);
        }
    };
    crate::logging::init_for_wrapper();
    if config.disabled {
        return compile::passthrough(&raw, &args);
    }
    // A repository file's setting that was not applied is said once a build.
    for ignored in &config.ignored {
        crate::owner::say_once_per_build(&format!("kache: {ignored}"));
    }
    // Another user's cache directory is never read nor written: compile.
    if let Err(err) = crate::owner::private_dir(&config.cache_dir)
        && let Some(foreign) = crate::owner::as_foreign(&err)
    {
        crate::owner::say_once_per_build(&format!("kache: {foreign}: compiling without the cache"));
        return compile::passthrough(&raw, &args);
    }
    // clippy-driver is called as `clippy-driver <rustc> <args…>`.
    let (tool, args) = if is_clippy(&compiler) {
        match args.split_first() {
            Some((rustc, rest)) if is_compiler(rustc) && !is_clippy(rustc) => (
                Compiler {
                    rustc: PathBuf::from(rustc),
                    driver: Some(raw.clone()),
                },
                rest.to_vec(),
            ),
            _ => return compile::passthrough(&raw, &args),
        }
    } else {
        (
            Compiler {
                rustc: raw.clone(),
                driver: None,
            },
            args,
        )
    };
    let started = Instant::now();
    let Some(text_args) = args
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect::<Option<Vec<_>>>()
    else {
        let lossy: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        if let Some(crate_name) = outcome::compiled_crate(&lossy) {
            record_passthrough_of(&config, crate_name, started, "an argument is not UTF-8");
        }
        return tool.passthrough(&args);
    };
    let invocation = match args::parse(&text_args) {
        Parsed::Cacheable(invocation) => invocation,
        Parsed::Passthrough(reason) => {
            trace!(%reason, "not a cacheable compile");
            // A real compile kache does not cache is an event with its
            // reason; probes and `--print` calls stay silent.
            if let Some(crate_name) = outcome::compiled_crate(&text_args) {
                let reason = outcome::passthrough_reason(&reason, &text_args);
                record_passthrough_of(&config, crate_name, started, &reason);
            }
            return tool.passthrough(&args);
        }
    };
    let plain: Vec<OsString> = invocation.args.iter().map(OsString::from).collect();
    if invocation.is_user_executable() && !config.cache_executables {
        record_passthrough(
            &config,
            &invocation,
            started,
            "executable (KACHE_CACHE_EXECUTABLES)",
        );
        return tool.passthrough(&plain);
    }
    let mut session = match Session::open(&config, &tool, &invocation, started) {
        Ok(session) => session,
        Err(err) => {
            warn!(crate_name = %invocation.crate_name, "cache unavailable: {err:#}");
            store::after_error(&config.cache_dir, None, &err);
            record_passthrough(&config, &invocation, started, &format!("{err:#}"));
            return tool.passthrough(&plain);
        }
    };
    let code = session.run(&plain);
    if code == 0 {
        // A build script's executable becomes a launcher that caches its
        // runs (unless KACHE_CACHE_BUILD_SCRIPTS=0); nothing else changes.
        build_run::install_launchers(&config, &invocation, &session.out_dir, &session.outputs);
    }
    code
}

/// The recorded form of an `env!` variable now (its digest, see
/// [`lookup::env_digest`]). A recorded name that
/// starts with [`linked::BAKED_ROOT`] is not a variable (no variable name
/// holds a `=`): it is a machine-local root an output contained, valued by
/// where that root is here (see `linked::baked_roots`).
fn env_dep_value(roots: &Roots, name: &str) -> Option<String> {
    if let Some(sentinel) = name.strip_prefix(linked::BAKED_ROOT) {
        return linked::root_path(roots, sentinel);
    }
    let value = std::env::var(name).ok()?;
    let value = if context::env_dep_is_path_root(name) {
        roots.normalizer.normalize(&value)
    } else {
        value
    };
    Some(lookup::env_digest(name, &value))
}

fn record_passthrough(config: &Config, invocation: &Invocation, started: Instant, reason: &str) {
    record_passthrough_of(config, &invocation.crate_name, started, reason);
}

/// One cacheable compile in progress.
struct Session<'a> {
    config: &'a Config,
    compiler: &'a Compiler,
    invocation: &'a Invocation,
    outputs: Vec<Output>,
    /// rustc's output names for the target (see `side_files`).
    file_names: kache_core::args::FileNames,
    /// `--out-dir`, resolved against the cwd once.
    out_dir: PathBuf,
    store: Store,
    roots: Roots,
    hasher: HashCache,
    started: Instant,
    /// The daemon, when a remote is configured.
    link: Option<Link>,
    /// Where a hit came from: `local`, `remote` or `prefetch`.
    hit_source: String,
    /// Under `KACHE_VERIFY`: the entry a hit found, to compare with what
    /// the compile writes instead of restoring it.
    verifying: Option<EntryMeta>,
    /// The outcome being recorded is a verified hit.
    verified: bool,
    /// Why a unit that could hit was compiled anyway (recorded with the miss).
    miss_reason: Option<String>,
}

impl<'a> Session<'a> {
    fn open(
        config: &'a Config,
        compiler: &'a Compiler,
        invocation: &'a Invocation,
        started: Instant,
    ) -> Result<Self> {
        let store = Store::open(&config.cache_dir)?;
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let mut roots = Roots::discover(
            &cwd,
            Path::new(&invocation.out_dir),
            invocation.target.as_deref(),
        );
        if invocation.split_debuginfo == Some(args::SplitDebuginfo::Unpacked) {
            // Skeleton units name their `.dwo` files by path: keep it real.
            roots.keep_target_dir_in_outputs();
        }
        let mut hasher = HashCache::default();
        // Output names come from rustc's own table for the target; a custom
        // target specification is asked about by content.
        let target = invocation.target.as_deref();
        let spec_hash = match target.filter(|t| t.ends_with(".json")) {
            Some(spec) => Some(hasher.hash(&store, &roots.resolve(spec))?.hash),
            None => None,
        };
        let names = toolchain::file_names(
            &store,
            &compiler.rustc,
            target,
            spec_hash.as_deref(),
            invocation.has_unstable("unstable-options"),
        )
        .context("learning the target's output names")?;
        let outputs = invocation.outputs(&names).map_err(anyhow::Error::msg)?;
        let out_dir = roots.resolve(&invocation.out_dir);
        Ok(Self {
            config,
            compiler,
            invocation,
            outputs,
            file_names: names,
            out_dir,
            store,
            roots,
            hasher,
            started,
            link: Link::for_config(config),
            hit_source: "local".to_string(),
            verifying: None,
            verified: false,
            miss_reason: None,
        })
    }

    fn run(&mut self, plain: &[OsString]) -> i32 {
        let crate_name = &self.invocation.crate_name;
        let prepared = self.pre_key().and_then(|builder| {
            let pre_key = builder.pre_key();
            let hit = self.lookup(&pre_key)?;
            Ok((builder, pre_key, hit))
        });
        let (builder, pre_key, hit) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                warn!(crate_name, "cannot compute the key: {err:#}");
                store::after_error(&self.config.cache_dir, Some(&mut self.store), &err);
                record_passthrough(
                    self.config,
                    self.invocation,
                    self.started,
                    &format!("{err:#}"),
                );
                return self.compiler.passthrough(plain);
            }
        };
        if let Some(link) = &self.link {
            link.build_start(
                || lockfile(&self.roots),
                || {
                    let banner =
                        toolchain::identity(&self.store, &self.compiler.rustc, "-vV").ok()?;
                    cargo_identity(&banner)
                },
            );
        }
        if let Some(reason) =
            incremental::needs_state(&self.store, &self.roots, self.invocation, &pre_key)
        {
            // Compile this one: rustc gets its incremental state back, so
            // the next edit of a crate under work is incremental again.
            debug!(crate_name, "{reason}");
            self.miss_reason = Some(reason);
            return self.compile_and_store(&builder, &pre_key, plain);
        }
        if let Some(meta) = hit
            && self.try_restore(&meta)
        {
            return 0;
        }
        // The bucket, through the daemon, within its deadline.
        if let Some(link) = &self.link
            && link.fetch(crate_name, &pre_key) > 0
            && let Ok(Some(meta)) = self.lookup(&pre_key)
            && self.try_restore(&meta)
        {
            return 0;
        }
        let _lock = match lock::KeyLock::acquire(&self.config.cache_dir, &pre_key) {
            Ok(lock) => Some(lock),
            Err(err) => {
                warn!(crate_name, "cannot lock the key: {err:#}");
                None
            }
        };
        // Whoever held the lock may have stored this very compile.
        if let Ok(Some(meta)) = self.lookup(&pre_key)
            && self.try_restore(&meta)
        {
            return 0;
        }
        self.compile_and_store(&builder, &pre_key, plain)
    }

    /// Builds the pre-key from everything known before compiling.
    fn pre_key(&mut self) -> Result<KeyBuilder> {
        let inv = self.invocation;
        let mut builder = KeyBuilder::default();
        builder.add(
            "toolchain",
            toolchain::identity(&self.store, &self.compiler.rustc, "-vV")?,
        );
        if let Some(driver) = &self.compiler.driver {
            // A clippy entry never serves a plain check, nor the reverse.
            builder.add(
                "driver",
                toolchain::identity(&self.store, driver, "--version")?,
            );
            for (name, value) in context::clippy_config(&self.roots) {
                builder.add("clippy_config", format!("{name}={value}"));
            }
        }
        key::add_arguments(&mut builder, inv, &self.roots.normalizer);
        // Inputs that mean different things on different machines (see
        // ARCHITECTURE.md, "Portable keys").
        if inv.targets_native_cpu() {
            let mut probe = vec!["--print", "cfg", "-C", "target-cpu=native"];
            if let Some(target) = &inv.target {
                probe.extend(["--target", target]);
            }
            builder.add(
                "native_cpu",
                toolchain::probe_output(&self.store, &self.compiler.rustc, &probe)?,
            );
        }
        if inv.is_linked() {
            let linker = inv.linker().unwrap_or("cc");
            // A bare name is looked up on PATH; a path is relative to the cwd.
            let linker_path = if linker.contains('/') {
                self.roots.resolve(linker)
            } else {
                PathBuf::from(linker)
            };
            let banner = toolchain::identity(&self.store, &linker_path, "-v")?;
            builder.add("linker", kache_core::cc::banner_identity(&banner));
            builder.add("libc", toolchain::libc_identity());
        }
        let mut macros = Vec::new();
        for ext in &inv.externs {
            let value = match &ext.path {
                Some(path) => {
                    let hashed = self.hasher.hash(&self.store, &self.roots.resolve(path))?;
                    if [".so", ".dylib", ".dll"].iter().any(|e| path.ends_with(e)) {
                        macros.push(hashed.hash.clone());
                    }
                    format!("{}={}", ext.name, hashed.hash)
                }
                None => ext.name.clone(),
            };
            builder.add("externs", value);
        }
        declared::add_for_macros(
            &mut builder,
            &self.store,
            &mut self.hasher,
            &self.roots,
            &macros,
        )?;
        // A custom target is a JSON file: key its content, not just its path.
        if let Some(target) = inv.target.as_deref().filter(|t| t.ends_with(".json")) {
            let spec = self.hasher.hash(&self.store, &self.roots.resolve(target))?;
            builder.add("target_spec", spec.hash);
        } else if let (Some(target), Some(paths)) =
            (inv.target.as_deref(), std::env::var_os("RUST_TARGET_PATH"))
        {
            // A target named by its spec's file name is looked up in
            // RUST_TARGET_PATH: key the spec that would be found.
            for dir in std::env::split_paths(&paths) {
                let spec = dir.join(format!("{target}.json"));
                if spec.is_file() {
                    let hashed = self.hasher.hash(&self.store, &spec)?;
                    builder.add("target_spec", hashed.hash);
                    break;
                }
            }
        }
        for lib in &inv.native_libs {
            let found = inv
                .search_paths
                .iter()
                .filter(|(kind, _)| kind == "native" || kind == "all")
                .flat_map(|(_, dir)| {
                    [
                        format!("lib{lib}.a"),
                        format!("lib{lib}.so"),
                        format!("{lib}.lib"),
                    ]
                    .map(|file| self.roots.resolve(dir).join(file))
                })
                .find(|path| path.is_file());
            let value = match found {
                Some(path) => format!("{lib}={}", self.hasher.hash(&self.store, &path)?.hash),
                None => format!("{lib}=system"),
            };
            builder.add("native_libs", value);
        }
        // What the crate's build script declares: files, directories and
        // variables that macros read without rustc's dep-info knowing.
        declared::add(&mut builder, &self.store, &mut self.hasher, &self.roots)?;
        for (name, value) in context::keyed_env() {
            builder.add(
                "env",
                format!("{name}={}", self.roots.normalizer.normalize(&value)),
            );
        }
        if let Some(salt) = &self.config.key_salt {
            builder.add("salt", salt.clone());
        }
        for component in builder.components() {
            trace!(crate_name = %inv.crate_name, component = component.name, value = %component.value.replace('\u{1f}', " "), "key component");
        }
        Ok(builder)
    }

    /// The most recently used entry under `pre_key` whose recorded inputs and
    /// `env!` values all match now. Any doubt is a miss.
    fn lookup(&mut self, pre_key: &str) -> Result<Option<EntryMeta>> {
        let roots = &self.roots;
        find_entry(&mut self.store, &mut self.hasher, roots, pre_key, |name| {
            env_dep_value(roots, name)
        })
    }

    /// Restores `meta` and replays its output; false (after dropping the
    /// entry) if any blob is missing or the restore fails.
    fn try_restore(&mut self, meta: &EntryMeta) -> bool {
        if self.config.verify {
            // Compile instead, and compare (see `compile_and_store`); an
            // entry whose blobs are damaged is an ordinary miss.
            if lookup::verify_blobs(&self.store, meta).is_ok() {
                self.verifying = Some(meta.clone());
            }
            return false;
        }
        match self.restore(meta) {
            Ok(bytes) => {
                self.remember_macro_script(meta);
                self.hit_source = lookup::record_hit(
                    &mut self.store,
                    &mut self.hasher,
                    self.link.is_some(),
                    &meta.cache_key,
                );
                self.finish(
                    Outcome::Hit,
                    Some(&meta.cache_key),
                    bytes,
                    meta.compile_time_ms,
                    None,
                );
                true
            }
            Err(err) => {
                warn!(crate_name = %meta.crate_name, "restore failed, compiling: {err:#}");
                lookup::forget(&mut self.store, &meta.cache_key);
                false
            }
        }
    }

    /// What a restore of `meta` writes: each of its files paired with the
    /// output *this invocation* names so (kind and executable bit from the
    /// invocation, never from the entry). An entry holding a file this
    /// compile would not write (another crate's output, an executable it
    /// was not asked for) or lacking one it would is not this compile's.
    fn restore_plan<'m>(&self, meta: &'m EntryMeta) -> Result<Vec<(&'m FileRecord, Output)>> {
        let mut plan = Vec::with_capacity(meta.files.len());
        for file in &meta.files {
            let output = self
                .invocation
                .restorable(&file.name, &self.outputs)
                .with_context(|| {
                    format!(
                        "the entry holds {:?}, which this compile does not write",
                        file.name
                    )
                })?;
            plan.push((file, output));
        }
        if let Some(missing) = self
            .outputs
            .iter()
            .find(|o| !meta.files.iter().any(|f| f.name == o.name))
        {
            bail!("the entry lacks {}", missing.name);
        }
        Ok(plan)
    }

    fn restore(&mut self, meta: &EntryMeta) -> Result<u64> {
        let plan = self.restore_plan(meta)?;
        lookup::verify_blobs(&self.store, meta)?;
        std::fs::create_dir_all(&self.out_dir)?;
        let mut bytes = 0;
        for (file, output) in plan {
            let dest = self.out_dir.join(&output.name);
            let executable = matches!(
                output.kind,
                OutputKind::Executable | OutputKind::LinkedExecutable
            );
            let method = if output.kind == OutputKind::DepInfo {
                let text = String::from_utf8(self.store.read_blob(&file.hash)?)
                    .context("stored dep-info is not UTF-8")?;
                self.store
                    .restore_bytes(self.roots.normalizer.denormalize(&text).as_bytes(), &dest)?
            } else {
                let hardlink_ok = matches!(
                    output.kind,
                    OutputKind::Immutable | OutputKind::LinkedExecutable
                );
                let method = self
                    .store
                    .restore_file(&file.hash, &dest, hardlink_ok, executable)?;
                self.hasher.remember(&dest, &file.hash);
                method
            };
            trace!(file = %file.name, ?method, "restored");
            bytes += file.size;
        }
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(self.roots.normalizer.denormalize(&meta.stdout).as_bytes());
        let _ = stdout.flush();
        let mut stderr = std::io::stderr();
        let _ = stderr.write_all(self.roots.normalizer.denormalize(&meta.stderr).as_bytes());
        Ok(bytes)
    }

    /// Runs rustc and stores its outputs. Returns rustc's exit code.
    fn compile_and_store(
        &mut self,
        builder: &KeyBuilder,
        pre_key: &str,
        plain: &[OsString],
    ) -> i32 {
        // An output left read-only (by an older store or by hand) would make
        // rustc refuse to write; rustc replaces these files anyway.
        for output in &self.outputs {
            let path = self.out_dir.join(&output.name);
            if std::fs::metadata(&path).is_ok_and(|m| m.permissions().readonly()) {
                let _ = std::fs::remove_file(&path);
            }
        }
        let inv = self.invocation;
        // kache's remaps come first: rustc applies the last matching one, so
        // a user's own `--remap-path-prefix` wins.
        let mut args = self.roots.remap_args();
        let link_line = (inv.is_linked()
            && toolchain::accepts(
                &self.store,
                &self.compiler.rustc,
                "--print=link-args=/dev/null",
            ))
        .then(|| self.store.incoming_file().ok())
        .flatten();
        args.extend(inv.args.iter().cloned());
        if let Some(file) = &link_line {
            args.push(format!("--print=link-args={}", file.path().display()));
        }
        let compile_start = SystemTime::now();
        let compiled = match self.compiler.run_teed(&args, &self.roots.display_paths()) {
            Ok(compiled) => compiled,
            Err(err) => {
                warn!("{err:#}");
                return self.compiler.passthrough(plain);
            }
        };
        if compiled.code != 0 && rejected_our_flags(&compiled.held) {
            // rustc refused a flag kache added: compile exactly as cargo
            // asked, and say why nothing was stored.
            warn!(crate_name = %inv.crate_name, "rustc rejected a flag kache added; compiling as asked");
            record_passthrough(
                self.config,
                inv,
                self.started,
                "rustc rejected a flag kache added",
            );
            return self.compiler.passthrough(plain);
        }
        if !compiled.held.is_empty() {
            // Not about a flag of ours: cargo sees rustc's words as they are.
            let _ = std::io::stderr().write_all(&compiled.held);
        }
        if compiled.code != 0 {
            let reason = format!("rustc exited with {}", compiled.code);
            let outcome = match self.verifying.take() {
                Some(_) => Outcome::WrongHit,
                None => Outcome::Miss,
            };
            self.finish(
                outcome,
                None,
                0,
                compiled.elapsed.as_millis() as u64,
                Some(reason),
            );
            return compiled.code;
        }
        incremental::remember_dir(&self.store, &self.roots, inv, pre_key, compile_start);
        let link_text = link_line
            .as_ref()
            .map(|file| std::fs::read_to_string(file.path()).unwrap_or_default());
        match self.store_outputs(builder, pre_key, &compiled, compile_start, link_text) {
            Ok((outcome, meta)) => {
                self.remember_macro_script(&meta);
                if let Some(link) = &self.link {
                    link.upload(&self.store, &meta.cache_key);
                }
                let compile_ms = compiled.elapsed.as_millis() as u64;
                match self.verifying.take() {
                    Some(expected) => self.finish_verified(builder, &expected, &meta, compile_ms),
                    None => self.finish(
                        outcome,
                        Some(&meta.cache_key),
                        meta.size(),
                        compile_ms,
                        self.miss_reason.clone(),
                    ),
                }
            }
            Err(err) => {
                debug!(crate_name = %self.invocation.crate_name, "not stored: {err:#}");
                store::after_error(&self.config.cache_dir, Some(&mut self.store), &err);
                let compile_ms = compiled.elapsed.as_millis() as u64;
                self.finish(
                    Outcome::Miss,
                    None,
                    0,
                    compile_ms,
                    Some(format!("not stored: {err:#}")),
                );
            }
        }
        let _ = self.hasher.flush(&mut self.store);
        compiled.code
    }

    fn store_outputs(
        &mut self,
        builder: &KeyBuilder,
        pre_key: &str,
        compiled: &Compiled,
        compile_start: SystemTime,
        link_line: Option<String>,
    ) -> Result<(Outcome, EntryMeta)> {
        let inv = self.invocation;
        // Split debuginfo beside the outputs is stored with them; any other
        // file named after the unit would be missing from the entry.
        let side = side_files::find(
            &self.out_dir,
            inv,
            &self.outputs,
            &self.file_names,
            compile_start,
        )?;
        self.outputs.extend(side);
        let normalizer = &self.roots.normalizer;
        let out_dir = &self.out_dir;
        for output in &self.outputs {
            if !out_dir.join(&output.name).is_file() {
                bail!("rustc did not write {}", output.name);
            }
        }
        let dep_info = self
            .outputs
            .iter()
            .find(|o| o.kind == OutputKind::DepInfo)
            .context("no dep-info output")?;
        let dep_text = std::fs::read_to_string(out_dir.join(&dep_info.name))
            .context("reading rustc's dep-info")?;
        let info = depinfo::parse(&dep_text);
        let start_ns = compile_start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut inputs = Vec::with_capacity(info.files.len());
        for file in &info.files {
            let hashed = self.hasher.hash(&self.store, &self.roots.resolve(file))?;
            if hashed.mtime_ns > start_ns {
                bail!("{file} changed while rustc was reading it");
            }
            trace!(crate_name = %inv.crate_name, path = %file, hash = %hashed.hash, "input");
            inputs.push(Input {
                path: normalizer.normalize(file),
                hash: hashed.hash,
            });
        }
        // A directory whose every file was read (a macro embedding a
        // folder) is keyed by its listing too: a new file is a miss.
        for dir in lookup::embedded_dirs(&info.files, &self.roots) {
            if let Some(hash) = lookup::listing(&dir) {
                inputs.push(Input {
                    path: normalizer.normalize(&dir.to_string_lossy()),
                    hash,
                });
            }
        }
        // A linked output is keyed by everything the link read: the whole
        // dependency closure, native libraries, linker scripts.
        if let Some(line) = &link_line {
            if line.trim().is_empty() {
                bail!("rustc wrote no link line");
            }
            let own: Vec<PathBuf> = self.outputs.iter().map(|o| out_dir.join(&o.name)).collect();
            // No "changed while rustc read it" check here: what a link reads
            // was finished before it started (cargo builds dependencies
            // first and replaces their outputs by rename), and a newer
            // mtime on one is another checkout's restore touching a shared
            // blob inode, which changes no byte.
            for path in linked::link_inputs(line, &self.roots, &own) {
                let hashed = self.hasher.hash(&self.store, &path)?;
                let text = path.to_string_lossy();
                if !inputs
                    .iter()
                    .any(|i: &Input| i.path == normalizer.normalize(&text))
                {
                    inputs.push(Input {
                        path: normalizer.normalize(&text),
                        hash: hashed.hash,
                    });
                }
            }
        }
        let mut env_deps: Vec<(String, Option<String>)> = info
            .env
            .iter()
            .map(|(name, value)| {
                // Recorded as a digest (`lookup::env_digest`), never the value.
                let value = value.as_ref().map(|v| {
                    let v = if context::env_dep_is_path_root(name) {
                        normalizer.normalize(v)
                    } else {
                        v.clone()
                    };
                    lookup::env_digest(name, &v)
                });
                (name.clone(), value)
            })
            .collect();
        // An output that holds a machine-local root (a macro that baked
        // `CARGO_MANIFEST_DIR` into a string) is only right where that root
        // is the same: the entry records the root, and the key with it.
        let written: Vec<PathBuf> = self
            .outputs
            .iter()
            .filter(|o| o.kind != OutputKind::DepInfo)
            .map(|o| out_dir.join(&o.name))
            .collect();
        env_deps.extend(linked::baked_roots(&written, &self.roots)?);
        let cache_key = key::full_key(pre_key, &inputs, &env_deps);
        let stdout = std::str::from_utf8(&compiled.stdout).context("rustc stdout is not UTF-8")?;
        let stderr = std::str::from_utf8(&compiled.stderr).context("rustc stderr is not UTF-8")?;

        let mut files = Vec::with_capacity(self.outputs.len());
        let mut all_existed = true;
        for output in &self.outputs {
            let path = out_dir.join(&output.name);
            let stored = match output.kind {
                OutputKind::Immutable | OutputKind::LinkedExecutable => {
                    self.store.put_file(&path, true)?
                }
                OutputKind::Executable | OutputKind::Copied => self.store.put_file(&path, false)?,
                OutputKind::DepInfo => self
                    .store
                    .put_bytes(normalizer.normalize(&dep_text).as_bytes())?,
            };
            if output.kind != OutputKind::DepInfo {
                self.hasher.remember(&path, &stored.hash);
            }
            all_existed &= stored.existed;
            files.push(FileRecord {
                name: output.name.clone(),
                size: stored.size,
                hash: stored.hash,
                executable: matches!(
                    output.kind,
                    OutputKind::Executable | OutputKind::LinkedExecutable
                ),
                kind: output.kind,
            });
        }
        crate::fault::point("after-blobs");
        let meta = EntryMeta {
            version: META_VERSION,
            cache_key,
            pre_key: pre_key.to_string(),
            crate_name: inv.crate_name.clone(),
            crate_types: inv
                .crate_types
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
            target: inv.target.clone().unwrap_or_else(|| "host".to_string()),
            profile: profile(inv),
            features: inv
                .cfgs
                .iter()
                .filter_map(|c| c.strip_prefix("feature="))
                .map(|f| f.trim_matches('"').to_string())
                .collect(),
            files,
            stdout: normalizer.normalize(stdout),
            stderr: normalizer.normalize(stderr),
            compile_time_ms: compiled.elapsed.as_millis() as u64,
            created: store::now(),
            inputs,
            env_deps,
            components: builder.digests(),
            unnormalised: self.roots.unnormalised.clone(),
        };
        self.store.commit_entry(&meta)?;
        Ok((
            if all_existed {
                Outcome::Dup
            } else {
                Outcome::Miss
            },
            meta,
        ))
    }

    /// Under `KACHE_VERIFY`: records the hit the compile just checked, as a
    /// verified hit when rustc wrote exactly the entry's bytes, else as a
    /// `wrong-hit` naming the files that differ and the key components
    /// that were equal. The compiled output stays in `target/` and in the
    /// store (it replaced the entry, or the old entry is dropped).
    fn finish_verified(
        &mut self,
        builder: &KeyBuilder,
        expected: &EntryMeta,
        compiled: &EntryMeta,
        compile_ms: u64,
    ) {
        let incremental = self.invocation.incremental.is_some();
        let Some(reason) =
            verify::divergence(&self.store, builder, expected, compiled, incremental)
        else {
            self.verified = true;
            self.finish(
                Outcome::Hit,
                Some(&expected.cache_key),
                expected.size(),
                expected.compile_time_ms,
                None,
            );
            return;
        };
        if expected.cache_key != compiled.cache_key {
            lookup::forget(&mut self.store, &expected.cache_key);
        }
        warn!(crate_name = %self.invocation.crate_name, "KACHE_VERIFY: wrong hit: {reason}");
        self.finish(
            Outcome::WrongHit,
            Some(&expected.cache_key),
            compiled.size(),
            compile_ms,
            Some(reason),
        );
    }

    /// After a proc-macro library was stored or restored: remembers which
    /// build script stands behind it, for its dependents' keys (see
    /// `declared::add_for_macros`).
    fn remember_macro_script(&self, meta: &EntryMeta) {
        if !self
            .invocation
            .crate_types
            .contains(&args::CrateType::ProcMacro)
        {
            return;
        }
        let Some((out_dir, package)) = declared::this_unit(&self.roots) else {
            return;
        };
        for file in meta
            .files
            .iter()
            .filter(|f| f.kind == OutputKind::LinkedExecutable)
        {
            let target_dir = self
                .roots
                .target_dir
                .as_ref()
                .map(|d| d.to_string_lossy().to_string())
                .unwrap_or_default();
            let _ = self.store.index.remember_macro_script(
                &file.hash,
                &target_dir,
                &out_dir.to_string_lossy(),
                &package.to_string_lossy(),
            );
        }
    }

    /// Records the event and prints the progress line.
    fn finish(
        &self,
        outcome: Outcome,
        key: Option<&str>,
        bytes: u64,
        compile_ms: u64,
        reason: Option<String>,
    ) {
        let crate_name = &self.invocation.crate_name;
        let unit = Unit {
            crate_name,
            display: &display_name(crate_name),
            terminal_only: false,
            target_dir: self.roots.target_dir.as_deref(),
            hit_source: &self.hit_source,
            verified: self.verified,
        };
        report(
            self.config,
            self.started,
            &unit,
            outcome,
            key,
            bytes,
            compile_ms,
            reason,
        );
    }
}

/// Whether rustc's failure was its refusal of an option kache added (an
/// older or newer toolchain than the probe saw), not the user's code.
fn rejected_our_flags(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    text.lines().any(|line| {
        (line.contains("Unrecognized option") || line.contains("unknown print request"))
            && (line.contains("remap-path") || line.contains("link-args") || line.contains("print"))
    })
}

/// The workspace's `Cargo.lock` next to the target directory (cargo's
/// default layout), for prefetch.
fn lockfile(roots: &Roots) -> Option<PathBuf> {
    let lock = roots.target_dir.as_ref()?.parent()?.join("Cargo.lock");
    lock.is_file().then_some(lock)
}

/// The identity of the cargo command that runs this compile (our parent),
/// from its command line: what the planner filters artifacts by.
fn cargo_identity(rustc_vv: &str) -> Option<kache_core::manifest::Identity> {
    // SAFETY: getppid() has no preconditions.
    let cargo = unsafe { libc::getppid() };
    let cmdline = std::fs::read(format!("/proc/{cargo}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    kache_core::manifest::Identity::of_cargo(&args, rustc_vv)
}

/// `debug` when optimisations are off, else `release`.
fn profile(inv: &Invocation) -> String {
    let optimised = inv.args.windows(2).any(|w| {
        (w[0] == "-C" && w[1].starts_with("opt-level=") && w[1] != "opt-level=0")
            || (w[0].starts_with("-Copt-level=") && w[0] != "-Copt-level=0")
    });
    if optimised { "release" } else { "debug" }.to_string()
}
