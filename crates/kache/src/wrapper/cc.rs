//! C-family mode: `kache <program> <args…>` where `<program>` is not rustc.
//!
//! The `cc` crate prefixes a `RUSTC_WRAPPER` named `kache` to every C/C++
//! compiler command of a build script (`kache cc -c …`, `kache c++ -E …`).
//! Any program is run exactly as asked (same arguments, environment, stdio
//! and exit code: the process is replaced by `exec`), except a gcc- or
//! clang-family single-source `-c` compile, which is cached like a rustc
//! unit:
//!
//! - the pre-key is the compiler (its `-v` banner and binary, by content, and
//!   whether it runs in C++ mode), the normalised cwd, source and flags, and
//!   the environment the preprocessor reads;
//! - a miss runs the compiler with `-MD` (for the complete list of headers)
//!   and `-ffile-prefix-map` for every machine-local root, then records every
//!   header by content, and every path that would have shadowed a local header
//!   as one that must stay absent;
//! - a hit re-hashes those inputs through the stat cache and copies the
//!   object back: no compiler process at all.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kache_core::args::OutputKind;
use kache_core::cc::{self, CcInvocation};
use kache_core::depinfo;
use kache_core::key::{self, Input, KeyBuilder};
use kache_core::meta::{EntryMeta, FileRecord, META_VERSION};
use tracing::{debug, trace, warn};

use super::context::Roots;
use super::lookup::{self, ABSENT, find_entry};
use super::outcome::{Unit, record_passthrough_of, report};
use super::{compile, lock, toolchain};
use crate::config::Config;
use crate::daemon::client::Link;
use crate::events::Outcome;
use crate::store::{self, HashCache, Store};

/// Runs `program` with `args`: cached when it is a cacheable C-family
/// compile, otherwise exactly as asked. Returns the exit code (a
/// passthrough never returns: the process becomes the program).
pub fn run(program: OsString, args: Vec<OsString>) -> i32 {
    let name = Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let Some(resolved) = toolchain::find_program(&program) else {
        eprintln!(
            "kache: cannot run `{}`: no such program",
            program.to_string_lossy()
        );
        return 127;
    };
    if !cc::is_gcc_like_name(&name) {
        return exec(&program, &args);
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(_) => return exec(&program, &args),
    };
    crate::logging::init_for_wrapper();
    // Another user's cache directory is never read nor written.
    if config.disabled
        || crate::owner::private_dir(&config.cache_dir)
            .is_err_and(|e| crate::owner::as_foreign(&e).is_some())
        || cc::PASSTHROUGH_ENV
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    {
        return exec(&program, &args);
    }
    let Some(text_args) = args
        .iter()
        .map(|a| a.to_str().map(String::from))
        .collect::<Option<Vec<_>>>()
    else {
        return exec(&program, &args);
    };
    let started = Instant::now();
    let invocation = match cc::parse(&text_args) {
        Ok(invocation) => invocation,
        Err(reason) => {
            trace!(reason, "not a cacheable C-family compile");
            if text_args.iter().any(|a| a == "-c") {
                record_passthrough_of(&config, &format!("{}:cc", package()), started, &reason);
            }
            return exec(&program, &args);
        }
    };
    let mut session = match CcSession::open(&config, &program, &resolved, &name, &invocation) {
        Ok(session) => session,
        Err(err) => {
            debug!("C compile not cached: {err:#}");
            record_passthrough_of(
                &config,
                &unit_name(&invocation),
                started,
                &format!("{err:#}"),
            );
            return exec(&program, &args);
        }
    };
    session.started = started;
    session.run(&text_args)
}

/// Replaces this process with `program args`; returns only if that fails.
fn exec(program: &OsStr, args: &[OsString]) -> i32 {
    let err = Command::new(program).args(args).exec();
    eprintln!("kache: cannot run `{}`: {err}", program.to_string_lossy());
    127
}

/// The package whose build script runs this compile (`CARGO_PKG_NAME`).
fn package() -> String {
    std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "c".to_string())
}

/// The entry's `crate_name`: `zstd-sys:zstd.c`.
fn unit_name(invocation: &CcInvocation) -> String {
    let file = Path::new(&invocation.source)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    format!("{}:{file}", package())
}

/// One cacheable C-family compile in progress.
struct CcSession<'a> {
    config: &'a Config,
    /// The program as cargo's build script named it (run as given, so a
    /// clang symlink keeps its C++ mode).
    program: &'a OsStr,
    invocation: &'a CcInvocation,
    crate_name: String,
    display: String,
    output: PathBuf,
    dep_file: Option<PathBuf>,
    store: Store,
    roots: Roots,
    hasher: HashCache,
    builder: KeyBuilder,
    started: Instant,
    /// The daemon, when a remote is configured.
    link: Option<Link>,
    hit_source: String,
    /// The assembler writes the list of files it read (GNU as `--MD`, asked
    /// for with [`cc::assembler_dependency_flag`]); otherwise any mention of
    /// `.incbin` or `.include` in what the compile reads keeps it out of
    /// the cache.
    assembler_lists_reads: bool,
}

impl<'a> CcSession<'a> {
    fn open(
        config: &'a Config,
        program: &'a OsStr,
        resolved: &Path,
        name: &str,
        invocation: &'a CcInvocation,
    ) -> Result<Self> {
        let store = Store::open(&config.cache_dir)?;
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let output = cwd.join(&invocation.output);
        let out_dir = output.parent().unwrap_or(&cwd).to_path_buf();
        // A build script's OUT_DIR sits under `[<triple>/]<profile>/build/…`.
        let triple = std::env::var("TARGET").ok();
        let roots = Roots::discover(&cwd, &out_dir, triple.as_deref());
        let dep_file = invocation.dep_file().map(|d| cwd.join(d));
        let crate_name = unit_name(invocation);
        let display = crate_name.replacen(':', ": ", 1);
        let mut session = Self {
            config,
            program,
            invocation,
            crate_name,
            display,
            output,
            dep_file,
            store,
            roots,
            hasher: HashCache::default(),
            builder: KeyBuilder::default(),
            started: Instant::now(),
            link: Link::for_config(config),
            hit_source: "local".to_string(),
            assembler_lists_reads: false,
        };
        session.builder = session.pre_key(resolved, name)?;
        Ok(session)
    }

    /// Everything known before compiling: the compiler, cwd, source, flags
    /// and the environment the preprocessor reads.
    fn pre_key(&mut self, resolved: &Path, name: &str) -> Result<KeyBuilder> {
        let banner = toolchain::identity(&self.store, Path::new(self.program), "-v")?;
        let Some((family, major)) = cc::family_from_banner(&banner) else {
            bail!("{name} is neither gcc nor clang");
        };
        if !cc::supports_file_prefix_map(family, major) {
            bail!("{name} {major} has no -ffile-prefix-map");
        }
        self.assembler_lists_reads = family == cc::Family::Gcc && self.gas_writes_dependencies();
        let canonical = resolved
            .canonicalize()
            .with_context(|| format!("resolving {}", resolved.display()))?;
        let binary = self.hasher.hash(&self.store, &canonical)?.hash;
        let normalize = |text: &str| self.roots.normalizer.normalize(text);
        let mut builder = KeyBuilder::default();
        builder.add("kind", "cc-object");
        builder.add("toolchain", cc::banner_identity(&banner));
        builder.add("compiler", binary);
        let mode = if cc::is_cxx_driver_name(name) {
            "c++"
        } else {
            "c"
        };
        builder.add("driver", mode);
        builder.add("cwd", normalize(&self.roots.cwd.to_string_lossy()));
        builder.add("source", normalize(&self.invocation.source));
        for arg in &self.invocation.keyed {
            builder.add("args", normalize(arg));
        }
        // `-march=native` and friends resolve differently on every machine:
        // key what they resolve to here (the predefined macros name the
        // CPU's features).
        let native: Vec<&str> = self
            .invocation
            .keyed
            .iter()
            .map(String::as_str)
            .filter(|a| a.starts_with("-m") && a.ends_with("=native"))
            .collect();
        if !native.is_empty() {
            let mut probe = native.clone();
            probe.extend(["-E", "-dM", "-x", "c", "/dev/null"]);
            builder.add(
                "native_cpu",
                toolchain::probe_output(&self.store, Path::new(self.program), &probe)?,
            );
        }
        if self.invocation.wants_dep_file {
            // The caller's dep file names the object.
            builder.add("output", normalize(&self.invocation.output));
        }
        for name in cc::KEYED_ENV {
            if let Ok(value) = std::env::var(name) {
                builder.add("env", format!("{name}={}", normalize(&value)));
            }
        }
        if let Some(salt) = &self.config.key_salt {
            builder.add("salt", salt.clone());
        }
        for component in builder.components() {
            trace!(unit = %self.crate_name, component = component.name, value = %component.value, "key component");
        }
        Ok(builder)
    }

    /// Whether this driver's assembler accepts `--MD` (GNU as), asked once
    /// per compiler binary and remembered like its banner.
    fn gas_writes_dependencies(&self) -> bool {
        let flag = cc::assembler_dependency_flag("/dev/null");
        let probe = [
            "-c",
            "-x",
            "assembler",
            "-o",
            "/dev/null",
            flag.as_str(),
            "/dev/null",
        ];
        toolchain::probe_output(&self.store, Path::new(self.program), &probe).is_ok()
    }

    fn run(&mut self, args: &[String]) -> i32 {
        let pre_key = self.builder.pre_key();
        match self.lookup(&pre_key) {
            Ok(Some(meta)) if self.try_restore(&meta) => return 0,
            Ok(_) => {}
            Err(err) => warn!(unit = %self.crate_name, "lookup failed: {err:#}"),
        }
        if let Some(link) = &self.link
            && link.fetch(&self.crate_name, &pre_key) > 0
            && let Ok(Some(meta)) = self.lookup(&pre_key)
            && self.try_restore(&meta)
        {
            return 0;
        }
        let _lock = lock::KeyLock::acquire(&self.config.cache_dir, &pre_key).ok();
        if let Ok(Some(meta)) = self.lookup(&pre_key)
            && self.try_restore(&meta)
        {
            return 0;
        }
        self.compile_and_store(&pre_key, args)
    }

    fn lookup(&mut self, pre_key: &str) -> Result<Option<EntryMeta>> {
        find_entry(
            &mut self.store,
            &mut self.hasher,
            &self.roots,
            pre_key,
            |_| None,
        )
    }

    fn try_restore(&mut self, meta: &EntryMeta) -> bool {
        match self.restore(meta) {
            Ok(bytes) => {
                self.hit_source = lookup::record_hit(
                    &mut self.store,
                    &mut self.hasher,
                    self.link.is_some(),
                    &meta.cache_key,
                );
                self.report(
                    Outcome::Hit,
                    Some(&meta.cache_key),
                    bytes,
                    meta.compile_time_ms,
                    None,
                );
                true
            }
            Err(err) => {
                warn!(unit = %self.crate_name, "restore failed, compiling: {err:#}");
                lookup::forget(&mut self.store, &meta.cache_key);
                false
            }
        }
    }

    fn restore(&mut self, meta: &EntryMeta) -> Result<u64> {
        // The paths come from this command line; an entry may only hold
        // the one object and at most the one dep file it names.
        let count = |kind| meta.files.iter().filter(|f| f.kind == kind).count();
        if count(OutputKind::Copied) != 1
            || count(OutputKind::DepInfo) > 1
            || meta.files.len() != count(OutputKind::Copied) + count(OutputKind::DepInfo)
        {
            bail!("the entry does not hold exactly one object and its dep file");
        }
        lookup::verify_blobs(&self.store, meta)?;
        let mut bytes = 0;
        for file in &meta.files {
            match file.kind {
                OutputKind::DepInfo => {
                    let dest = self
                        .dep_file
                        .as_ref()
                        .context("entry has an unasked dep file")?;
                    let text = String::from_utf8(self.store.read_blob(&file.hash)?)
                        .context("stored dep file is not UTF-8")?;
                    let text = self.roots.normalizer.denormalize(&text);
                    self.store.restore_bytes(text.as_bytes(), dest)?;
                }
                OutputKind::Copied => {
                    self.store
                        .restore_file(&file.hash, &self.output, false, false)?;
                }
                other => bail!("unexpected {other:?} output in a C entry"),
            }
            bytes += file.size;
        }
        let _ =
            std::io::stdout().write_all(self.roots.normalizer.denormalize(&meta.stdout).as_bytes());
        let _ =
            std::io::stderr().write_all(self.roots.normalizer.denormalize(&meta.stderr).as_bytes());
        Ok(bytes)
    }

    /// Runs the compiler (with `-MD` and the prefix maps) and stores the
    /// object. Returns the compiler's exit code.
    fn compile_and_store(&mut self, pre_key: &str, args: &[String]) -> i32 {
        // Our prefix maps first: a caller's own maps come later and win.
        let mut full: Vec<String> = self
            .roots
            .remaps()
            .iter()
            .map(|(from, to)| format!("-ffile-prefix-map={from}={to}"))
            .collect();
        full.extend_from_slice(args);
        let own_dep_file = match &self.dep_file {
            Some(_) => None,
            None => {
                let path = PathBuf::from(format!(
                    "{}.kache-{}.d",
                    self.output.display(),
                    std::process::id()
                ));
                full.extend(["-MD".to_string(), "-MF".to_string()]);
                full.push(path.to_string_lossy().to_string());
                Some(path)
            }
        };
        // `-Wa,` splits its value at commas: the list goes beside the object,
        // else into the temp dir, and without a comma-free path the text
        // rule decides.
        let name = format!(
            "{}.kache-{}.as.d",
            file_name(&self.output),
            std::process::id()
        );
        let gas_dep_file = [
            self.output.with_file_name(&name),
            std::env::temp_dir().join(&name),
        ]
        .into_iter()
        .find(|path| path.to_str().is_some_and(|p| !p.contains(',')))
        .filter(|_| self.assembler_lists_reads);
        self.assembler_lists_reads = gas_dep_file.is_some();
        if let Some(path) = &gas_dep_file {
            full.push(cc::assembler_dependency_flag(&path.to_string_lossy()));
        }
        let compile_start = SystemTime::now();
        let compiled = match compile::run_teed(Path::new(self.program), &full, &[]) {
            Ok(compiled) => compiled,
            Err(err) => {
                warn!("{err:#}");
                let args: Vec<OsString> = args.iter().map(OsString::from).collect();
                return exec(self.program, &args);
            }
        };
        // Only rustc's option refusals are held back; a C compiler's words
        // all reach its caller.
        if !compiled.held.is_empty() {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(&compiled.held);
        }
        let compile_ms = compiled.elapsed.as_millis() as u64;
        let dep_path = own_dep_file.clone().or_else(|| self.dep_file.clone());
        let stored = if compiled.code != 0 {
            Err(anyhow::anyhow!(
                "the compiler exited with {}",
                compiled.code
            ))
        } else {
            let dep_path = dep_path.expect("one dep file is always asked for");
            self.store_outputs(
                pre_key,
                &compiled,
                &dep_path,
                gas_dep_file.as_deref(),
                compile_start,
            )
        };
        for path in own_dep_file.iter().chain(&gas_dep_file) {
            let _ = std::fs::remove_file(path);
        }
        match stored {
            Ok((outcome, meta)) => {
                if let Some(link) = &self.link {
                    link.upload(&self.store, &meta.cache_key);
                }
                self.report(
                    outcome,
                    Some(&meta.cache_key),
                    meta.size(),
                    compile_ms,
                    None,
                );
            }
            Err(err) => {
                debug!(unit = %self.crate_name, "not stored: {err:#}");
                let (outcome, reason) = if err.is::<Uncacheable>() {
                    (Outcome::Passthrough, format!("{err:#}"))
                } else {
                    (Outcome::Miss, format!("not stored: {err:#}"))
                };
                self.report(outcome, None, 0, compile_ms, Some(reason));
            }
        }
        let _ = self.hasher.flush(&mut self.store);
        compiled.code
    }

    fn store_outputs(
        &mut self,
        pre_key: &str,
        compiled: &compile::Compiled,
        dep_path: &Path,
        gas_dep_path: Option<&Path>,
        compile_start: SystemTime,
    ) -> Result<(Outcome, EntryMeta)> {
        let dep_text = std::fs::read_to_string(dep_path)
            .with_context(|| format!("reading the dep file {}", dep_path.display()))?;
        let deps = depinfo::parse_make(&dep_text);
        if deps.is_empty() {
            bail!("the dep file lists no inputs");
        }
        let start_ns = compile_start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let resolved: Vec<PathBuf> = deps.iter().map(|d| self.roots.resolve(d)).collect();
        let mut inputs = Vec::with_capacity(deps.len());
        for (dep, path) in deps.iter().zip(&resolved) {
            if !self.assembler_lists_reads {
                let text = std::fs::read(path).with_context(|| format!("reading {dep}"))?;
                if cc::mentions_assembler_reads(&text) {
                    debug!(unit = %self.crate_name, "{dep} mentions .incbin or .include");
                    return Err(Uncacheable(ASSEMBLER_READS.to_string()).into());
                }
            }
            let hashed = self.hasher.hash(&self.store, path)?;
            if hashed.mtime_ns > start_ns {
                bail!("{dep} changed while the compiler was reading it");
            }
            inputs.push(Input {
                path: self.roots.normalizer.normalize(dep),
                hash: hashed.hash,
            });
        }
        if !self.assembler_lists_reads
            && let Some(arg) = self
                .invocation
                .keyed
                .iter()
                .find(|a| cc::mentions_assembler_reads(a.as_bytes()))
        {
            debug!(unit = %self.crate_name, "{arg} mentions .incbin or .include");
            return Err(Uncacheable(ASSEMBLER_READS.to_string()).into());
        }
        if let Some(gas_dep_path) = gas_dep_path {
            let known: std::collections::BTreeSet<PathBuf> =
                resolved.iter().map(|p| lexical(p)).collect();
            inputs.extend(self.assembler_inputs(gas_dep_path, &known, start_ns)?);
        }
        for absent in self.shadowing_paths(&resolved) {
            inputs.push(Input {
                path: self.roots.normalizer.normalize(&absent.to_string_lossy()),
                hash: ABSENT.to_string(),
            });
        }
        let cache_key = key::full_key(pre_key, &inputs, &[]);
        let stdout =
            std::str::from_utf8(&compiled.stdout).context("compiler stdout is not UTF-8")?;
        let stderr =
            std::str::from_utf8(&compiled.stderr).context("compiler stderr is not UTF-8")?;
        let normalizer = &self.roots.normalizer;

        let object = self.store.put_file(&self.output, false)?;
        let mut all_existed = object.existed;
        let mut files = vec![FileRecord {
            name: file_name(&self.output),
            size: object.size,
            hash: object.hash,
            executable: false,
            kind: OutputKind::Copied,
        }];
        if let Some(user_dep) = &self.dep_file {
            let stored = self
                .store
                .put_bytes(normalizer.normalize(&dep_text).as_bytes())?;
            all_existed &= stored.existed;
            files.push(FileRecord {
                name: file_name(user_dep),
                size: stored.size,
                hash: stored.hash,
                executable: false,
                kind: OutputKind::DepInfo,
            });
        }
        let meta = EntryMeta {
            version: META_VERSION,
            cache_key,
            pre_key: pre_key.to_string(),
            crate_name: self.crate_name.clone(),
            crate_types: vec!["c-object".to_string()],
            target: std::env::var("TARGET").unwrap_or_else(|_| "host".to_string()),
            profile: std::env::var("PROFILE").unwrap_or_else(|_| "debug".to_string()),
            features: Vec::new(),
            files,
            stdout: normalizer.normalize(stdout),
            stderr: normalizer.normalize(stderr),
            compile_time_ms: compiled.elapsed.as_millis() as u64,
            created: store::now(),
            inputs,
            env_deps: Vec::new(),
            components: self.builder.digests(),
            unnormalised: self.roots.unnormalised.clone(),
        };
        self.store.commit_entry(&meta)?;
        let outcome = if all_existed {
            Outcome::Dup
        } else {
            Outcome::Miss
        };
        Ok((outcome, meta))
    }

    /// The files GNU as read (`.incbin`, `.include`), from the list it wrote
    /// to `gas_dep_path`, keyed by content, and every path that would have
    /// been read instead had a file been there, keyed as absent. Inputs the
    /// preprocessor's dep file already gave (`known`) are skipped, and so
    /// are names that exist nowhere and were never read: the driver's
    /// temporary `.s` (gone once it exits) and `.file` names.
    fn assembler_inputs(
        &mut self,
        gas_dep_path: &Path,
        known: &std::collections::BTreeSet<PathBuf>,
        start_ns: i64,
    ) -> Result<Vec<Input>> {
        let text = std::fs::read_to_string(gas_dep_path).with_context(|| {
            format!(
                "the assembler wrote no list of the files it read ({})",
                gas_dep_path.display()
            )
        })?;
        let temp = std::env::temp_dir();
        let is_local = |path: &Path| {
            let text = path.to_string_lossy();
            self.roots.normalizer.normalize(&text) != text
        };
        let mut inputs = Vec::new();
        let mut seen = known.clone();
        let mut absent = std::collections::BTreeSet::new();
        for read in depinfo::parse_make(&text) {
            let path = lexical(&self.roots.resolve(&read));
            if !seen.insert(path.clone()) {
                continue;
            }
            if std::fs::symlink_metadata(&path).is_err() {
                if !path.starts_with(&temp) {
                    absent.insert(path);
                }
                continue;
            }
            let hashed = self.hasher.hash(&self.store, &path)?;
            if hashed.mtime_ns > start_ns {
                bail!("{read} changed while the assembler was reading it");
            }
            inputs.push(Input {
                path: self.roots.normalizer.normalize(&read),
                hash: hashed.hash,
            });
            for shadow in cc::assembler_shadows(&read, &self.invocation.assembler_search) {
                let candidate = lexical(&self.roots.resolve(&shadow));
                if is_local(&candidate) && std::fs::symlink_metadata(&candidate).is_err() {
                    absent.insert(candidate);
                }
            }
        }
        for path in absent {
            inputs.push(Input {
                path: self.roots.normalizer.normalize(&path.to_string_lossy()),
                hash: ABSENT.to_string(),
            });
        }
        Ok(inputs)
    }

    /// Paths that, if a file appeared there, could be found by an `#include`
    /// before a local header this compile used: for every header under a
    /// search directory (an `-I`-style directory or the directory of any
    /// local input, where quoted includes look first), the same relative
    /// path under every other search directory. Only paths under the
    /// machine-local roots (workspace, target dir, `CARGO_HOME`, home) take
    /// part; system headers are keyed by content and the compiler identity.
    fn shadowing_paths(&self, inputs: &[PathBuf]) -> Vec<PathBuf> {
        let is_local = |path: &Path| {
            let text = path.to_string_lossy();
            self.roots.normalizer.normalize(&text) != text
        };
        let mut dirs: Vec<PathBuf> = self
            .invocation
            .include_dirs
            .iter()
            .map(|d| lexical(&self.roots.resolve(d)))
            .chain(
                inputs
                    .iter()
                    .filter_map(|p| lexical(p).parent().map(Path::to_path_buf)),
            )
            .filter(|d| is_local(d))
            .collect();
        dirs.sort();
        dirs.dedup();
        let inputs: std::collections::BTreeSet<PathBuf> =
            inputs.iter().map(|p| lexical(p)).collect();
        let mut out = std::collections::BTreeSet::new();
        for input in inputs.iter().filter(|p| is_local(p)) {
            for dir in &dirs {
                let Ok(rel) = input.strip_prefix(dir) else {
                    continue;
                };
                for other in &dirs {
                    let candidate = other.join(rel);
                    if other != dir
                        && !inputs.contains(&candidate)
                        && std::fs::symlink_metadata(&candidate).is_err()
                    {
                        out.insert(candidate);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    fn report(
        &self,
        outcome: Outcome,
        key: Option<&str>,
        bytes: u64,
        compile_ms: u64,
        reason: Option<String>,
    ) {
        let unit = Unit {
            verified: false,
            crate_name: &self.crate_name,
            display: &self.display,
            terminal_only: true,
            target_dir: self.roots.target_dir.as_deref(),
            hit_source: &self.hit_source,
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

/// Why a compile whose inputs mention `.incbin` or `.include` is not cached
/// when its assembler is not GNU as (clang's integrated assembler lists
/// neither in its dep file and has no `--MD`).
const ASSEMBLER_READS: &str =
    "the assembler may read files (.incbin, .include) and cannot list them (not GNU as)";

/// A compile that ran but must not be cached (as opposed to one that could
/// not be stored): it is recorded as a passthrough with this reason.
#[derive(Debug)]
struct Uncacheable(String);

impl std::fmt::Display for Uncacheable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Uncacheable {}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// `a/./b/../c` → `a/c`, without touching the filesystem (the compiler
/// resolves `..` the same way when it joins include paths).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
