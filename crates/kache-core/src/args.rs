//! The rustc command line as kache understands it.
//!
//! [`parse`] splits an argument list into the parts a cache key and a restore
//! need. Anything kache does not fully understand (argument files, `-o`, extra
//! emit kinds, several source files, the unstable options of
//! [`UNSTABLE_DENIED`]) makes the call a [`Parsed::Passthrough`]: rustc runs
//! as if kache were absent. What a compile writes is named from rustc's own
//! table ([`FileNames`], its `--print=file-names` answer for the target), so
//! every target follows the same rules.

use std::borrow::Cow;

/// The outcome of reading a rustc argument list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A primary compilation kache can cache.
    Cacheable(Box<Invocation>),
    /// A call kache does not cache, with the reason (for the log and the
    /// passthrough events), e.g. `unstable option -Zself-profile`.
    Passthrough(Cow<'static, str>),
}

/// A cacheable rustc compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The arguments rustc will receive, exactly as cargo gave them
    /// (`-C incremental` included: the incremental directory is rustc's).
    pub args: Vec<String>,
    pub crate_name: String,
    pub crate_types: Vec<CrateType>,
    /// The root source file as written on the command line.
    pub source: String,
    pub edition: Option<String>,
    /// Emit kinds, sorted and de-duplicated.
    pub emit: Vec<Emit>,
    pub out_dir: String,
    /// `-C extra-filename`, empty when absent.
    pub extra_filename: String,
    pub target: Option<String>,
    pub externs: Vec<Extern>,
    /// `-L` entries as `(kind, path)`; kind is `all` when not given.
    pub search_paths: Vec<(String, String)>,
    /// Library names from `-l`, without kind or modifiers.
    pub native_libs: Vec<String>,
    /// `--cfg` values in command-line order.
    pub cfgs: Vec<String>,
    /// `--test` was given: the output is a test harness executable.
    pub is_test: bool,
    /// A `--remap-path-scope` was given by the user.
    pub has_remap_scope: bool,
    /// A `--remap-path-prefix` was given by the user: theirs must win over
    /// kache's, and kache must not narrow their scope.
    pub has_user_remap: bool,
    /// `-C incremental=<dir>` was given: rustc keeps its own state there,
    /// and the outputs are those of an incremental compile (keyed).
    pub incremental: Option<String>,
    /// The names of the `-Z` options given (`embed-metadata` for
    /// `-Zembed-metadata=no`), in command-line order. None of them is in
    /// [`UNSTABLE_DENIED`].
    pub unstable: Vec<String>,
    /// `-C split-debuginfo` (the last one), unless it is `off`.
    pub split_debuginfo: Option<SplitDebuginfo>,
}

/// `-C split-debuginfo=packed|unpacked`: debug info rustc keeps out of the
/// linked output. On ELF targets `unpacked` leaves one `.dwo` file per
/// codegen unit in the output directory (`<stem>.<cgu>.rcgu.dwo`, names not
/// known before the compile) and `packed` writes one `.dwp` beside each
/// linked output (rlibs carry their `.dwo` files inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitDebuginfo {
    Packed,
    Unpacked,
}

/// A `--crate-type` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrateType {
    Bin,
    Lib,
    Rlib,
    Dylib,
    Cdylib,
    Staticlib,
    ProcMacro,
}

/// An `--emit` kind kache can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Emit {
    DepInfo,
    Metadata,
    Link,
}

/// An `--extern name[=path]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extern {
    /// The name with any `priv:`/`noprelude:` options kept, as it affects resolution.
    pub name: String,
    pub path: Option<String>,
}

/// What an output file is, which decides how it may be restored. Written
/// into `meta.json` as `immutable`, `dep-info`, `executable` or `copied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// Never rewritten in place (`.rlib`, `.rmeta`): may be hardlinked.
    Immutable,
    /// Dep-info: holds absolute paths, rewritten for the current checkout.
    DepInfo,
    /// Executables a user runs or ships (binaries, test harnesses, dylibs,
    /// cdylibs): copied (or reflinked), never linked.
    Executable,
    /// Executables only cargo and rustc use (build-script executables,
    /// proc-macro libraries): may be hardlinked like `Immutable` outputs.
    /// Every linker in use (GNU ld, gold, lld, mold) and cargo replace them
    /// by unlink or rename, never by writing in place, and a blob is
    /// verified before each restore, so a write that did reach one is a miss.
    LinkedExecutable,
    /// Files other tools may rewrite in place (C objects: the assembler
    /// truncates and rewrites its output): copied (or reflinked), never
    /// linked, and not executable.
    Copied,
}

/// One file a compilation leaves in `out_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// File name inside `out_dir`.
    pub name: String,
    pub kind: OutputKind,
}

impl CrateType {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "bin" => Self::Bin,
            "lib" => Self::Lib,
            "rlib" => Self::Rlib,
            "dylib" => Self::Dylib,
            "cdylib" => Self::Cdylib,
            "staticlib" => Self::Staticlib,
            "proc-macro" => Self::ProcMacro,
            _ => return None,
        })
    }

    /// Whether rustc links this crate type itself (with the system linker
    /// or rust-lld): executables, dylibs, cdylibs, proc-macros.
    pub fn is_linked(self) -> bool {
        matches!(
            self,
            Self::Bin | Self::Dylib | Self::Cdylib | Self::ProcMacro
        )
    }

    /// The name rustc uses on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bin => "bin",
            Self::Lib => "lib",
            Self::Rlib => "rlib",
            Self::Dylib => "dylib",
            Self::Cdylib => "cdylib",
            Self::Staticlib => "staticlib",
            Self::ProcMacro => "proc-macro",
        }
    }
}

impl Emit {
    /// The name rustc uses on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DepInfo => "dep-info",
            Self::Metadata => "metadata",
            Self::Link => "link",
        }
    }
}

pub use crate::file_names::FileNames;
pub use crate::unstable::{UNSTABLE_DENIED, unstable_denied};

/// Flags whose value may be the next argument.
const TAKES_VALUE: &[&str] = &[
    "-C",
    "--codegen",
    "-L",
    "-l",
    "-o",
    "-A",
    "-W",
    "-D",
    "-F",
    "--allow",
    "--warn",
    "--deny",
    "--forbid",
    "--force-warn",
    "--cap-lints",
    "--cfg",
    "--check-cfg",
    "--crate-name",
    "--crate-type",
    "--edition",
    "--emit",
    "--out-dir",
    "--extern",
    "--target",
    "--error-format",
    "--json",
    "--print",
    "--explain",
    "-Z",
    "--sysroot",
    "--remap-path-prefix",
    "--remap-path-scope",
    "--diagnostic-width",
    "--color",
    "--env-set",
];

/// One flag with its value, however it was spelled.
pub(crate) struct Flag<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: Option<&'a str>,
}

/// Splits `args` into flags; `--x=v`, `--x v`, `-Cv` and `-C v` all give `(x, v)`.
pub(crate) fn flags(args: &[String]) -> Result<Vec<Flag<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if arg.starts_with('@') {
            return Err("argument file");
        }
        if let Some(long) = arg.strip_prefix("--").filter(|_| arg.len() > 2) {
            let _ = long;
            if let Some((name, value)) = arg.split_once('=') {
                out.push(Flag {
                    name,
                    value: Some(value),
                });
            } else if TAKES_VALUE.contains(&arg) {
                let value = args.get(i).ok_or("flag without value")?;
                i += 1;
                out.push(Flag {
                    name: arg,
                    value: Some(value),
                });
            } else {
                out.push(Flag {
                    name: arg,
                    value: None,
                });
            }
        } else if arg.starts_with('-') && arg.len() > 1 {
            let name = &arg[..2];
            if TAKES_VALUE.contains(&name) {
                if arg.len() > 2 {
                    out.push(Flag {
                        name,
                        value: Some(&arg[2..]),
                    });
                } else {
                    let value = args.get(i).ok_or("flag without value")?;
                    i += 1;
                    out.push(Flag {
                        name,
                        value: Some(value),
                    });
                }
            } else {
                out.push(Flag {
                    name: arg,
                    value: None,
                });
            }
        } else {
            out.push(Flag {
                name: "",
                value: Some(arg),
            });
        }
    }
    Ok(out)
}

/// Reads a rustc argument list (without the rustc path itself).
pub fn parse(args: &[String]) -> Parsed {
    match parse_inner(args) {
        Ok(invocation) => Parsed::Cacheable(Box::new(invocation)),
        Err(reason) => Parsed::Passthrough(reason),
    }
}

fn parse_inner(args: &[String]) -> Result<Invocation, Cow<'static, str>> {
    let parsed = flags(args)?;
    let mut crate_name = None;
    let mut crate_types = Vec::new();
    let mut source = None;
    let mut edition = None;
    let mut emit = None;
    let mut out_dir = None;
    let mut extra_filename = String::new();
    let mut target = None;
    let mut externs = Vec::new();
    let mut search_paths = Vec::new();
    let mut native_libs = Vec::new();
    let mut cfgs = Vec::new();
    let mut is_test = false;
    let mut has_remap_scope = false;
    let mut has_user_remap = false;
    let mut incremental = None;
    let mut unstable = Vec::new();
    let mut split_debuginfo = None;

    for flag in &parsed {
        let value = flag.value.unwrap_or_default();
        match flag.name {
            "" => {
                if value == "-" {
                    return Err("source from stdin".into());
                }
                if source.replace(value.to_string()).is_some() {
                    return Err("more than one source file".into());
                }
            }
            "-V" | "--version" | "-vV" | "-h" | "--help" => {
                return Err("information request".into());
            }
            "--print" | "--explain" => return Err("information request".into()),
            "-o" => return Err("explicit output path".into()),
            "--crate-name" => crate_name = Some(value.to_string()),
            "--crate-type" => {
                for kind in value.split(',') {
                    crate_types.push(CrateType::parse(kind).ok_or("unknown crate type")?);
                }
            }
            "--edition" => edition = Some(value.to_string()),
            "--emit" => {
                let mut kinds = Vec::new();
                for kind in value.split(',') {
                    kinds.push(match kind {
                        "dep-info" => Emit::DepInfo,
                        "metadata" => Emit::Metadata,
                        "link" => Emit::Link,
                        _ => return Err("unsupported emit kind".into()),
                    });
                }
                emit = Some(kinds);
            }
            "--out-dir" => out_dir = Some(value.to_string()),
            "--target" => target = Some(value.to_string()),
            "--test" => is_test = true,
            "--cfg" => cfgs.push(value.to_string()),
            "--remap-path-scope" => has_remap_scope = true,
            "--remap-path-prefix" => has_user_remap = true,
            "--extern" => {
                let (name, path) = match value.split_once('=') {
                    Some((name, path)) => (name, Some(path.to_string())),
                    None => (value, None),
                };
                externs.push(Extern {
                    name: name.to_string(),
                    path,
                });
            }
            "-L" => {
                let (kind, path) = match value.split_once('=') {
                    Some((kind, path))
                        if matches!(
                            kind,
                            "dependency" | "crate" | "native" | "framework" | "all"
                        ) =>
                    {
                        (kind, path)
                    }
                    _ => ("all", value),
                };
                search_paths.push((kind.to_string(), path.to_string()));
            }
            "-l" => {
                let spec = value.rsplit_once('=').map_or(value, |(_, name)| name);
                let name = spec.split_once(':').map_or(spec, |(name, _)| name);
                native_libs.push(name.to_string());
            }
            "-C" | "--codegen" => {
                let (name, setting) = value.split_once('=').unwrap_or((value, ""));
                match name {
                    "extra-filename" => extra_filename = setting.to_string(),
                    "incremental" => incremental = Some(setting.to_string()),
                    "save-temps" | "profile-generate" | "profile-use" => {
                        return Err("codegen option with side outputs".into());
                    }
                    "split-debuginfo" => {
                        split_debuginfo = match setting {
                            "off" => None,
                            "packed" => Some(SplitDebuginfo::Packed),
                            "unpacked" => Some(SplitDebuginfo::Unpacked),
                            _ => return Err("unknown split debuginfo kind".into()),
                        }
                    }
                    _ => {}
                }
            }
            "-Z" => {
                let name = value.split_once('=').map_or(value, |(name, _)| name);
                if unstable_denied(name).is_some() {
                    return Err(format!("unstable option -Z{name}").into());
                }
                unstable.push(name.to_string());
            }
            _ => {}
        }
    }

    let source = source.ok_or("no source file")?;
    let crate_name = crate_name.ok_or("no crate name")?;
    if crate_types.is_empty() && !is_test {
        return Err("no crate type".into());
    }
    let out_dir = out_dir.ok_or("no output directory")?;
    let mut emit = emit.ok_or("no emit set")?;
    emit.sort();
    emit.dedup();
    if !emit.contains(&Emit::DepInfo) {
        return Err("no dep-info emitted".into());
    }
    crate_types.sort();
    crate_types.dedup();
    let linked =
        emit.contains(&Emit::Link) && (is_test || crate_types.iter().any(|t| t.is_linked()));
    if split_debuginfo.is_some() && linked && is_apple(target.as_deref()) {
        // See ARCHITECTURE.md ("Split debuginfo"): the debug map names
        // objects by absolute path, `packed` writes a `.dSYM` directory.
        return Err("split debuginfo of a linked output on an Apple target".into());
    }

    Ok(Invocation {
        args: args.to_vec(),
        crate_name,
        crate_types,
        source,
        edition,
        emit,
        out_dir,
        extra_filename,
        target,
        externs,
        search_paths,
        native_libs,
        cfgs,
        is_test,
        has_remap_scope,
        has_user_remap,
        incremental,
        unstable,
        split_debuginfo,
    })
}

/// Whether `target` (the host when `None`) is an Apple one, whose split
/// debuginfo kache does not store.
fn is_apple(target: Option<&str>) -> bool {
    match target {
        Some(target) => target.contains("apple"),
        None => cfg!(target_vendor = "apple"),
    }
}

impl Invocation {
    /// True for outputs a user runs directly: binaries and test harnesses.
    /// Build scripts are executables too, but cargo runs them, and caching
    /// them is safe and worthwhile.
    pub fn is_user_executable(&self) -> bool {
        let is_build_script = self.crate_name.starts_with("build_script_");
        !is_build_script && (self.is_test || self.crate_types.contains(&CrateType::Bin))
    }

    /// Whether rustc links this output itself (an executable, a dylib, a
    /// proc-macro): then the linker and the C library it links against are
    /// part of what the output is.
    pub fn is_linked(&self) -> bool {
        self.emit.contains(&Emit::Link)
            && (self.is_test || self.crate_types.iter().any(|t| t.is_linked()))
    }

    /// `-C linker=<path>`, when given.
    pub fn linker(&self) -> Option<&str> {
        self.codegen_value("linker")
    }

    /// Whether the compile targets the CPU it runs on (`-C target-cpu=native`),
    /// which means something different on every machine.
    pub fn targets_native_cpu(&self) -> bool {
        self.codegen_value("target-cpu") == Some("native")
    }

    /// The last value of `-C <name>=…` / `-C<name>=…`.
    fn codegen_value(&self, name: &str) -> Option<&str> {
        let mut found = None;
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            let option = if arg == "-C" || arg == "--codegen" {
                args.next().map(String::as_str)
            } else {
                arg.strip_prefix("-C")
                    .or_else(|| arg.strip_prefix("--codegen="))
            };
            if let Some(value) = option
                .and_then(|o| o.strip_prefix(name))
                .and_then(|o| o.strip_prefix('='))
            {
                found = Some(value);
            }
        }
        found
    }

    /// `<crate name><extra-filename>`: what every file of this compile is
    /// named after.
    pub fn stem(&self) -> String {
        format!("{}{}", self.crate_name, self.extra_filename)
    }

    /// Whether `-Z <name>` was given.
    pub fn has_unstable(&self, name: &str) -> bool {
        self.unstable.iter().any(|n| n == name)
    }

    /// The files rustc writes into `out_dir` for this call, named from the
    /// target's table `names`; `Err` (a passthrough reason) when the target
    /// does not support a requested crate type. Files that only some
    /// compiles write (split debuginfo) are found afterwards by
    /// [`Invocation::side_outputs`].
    pub fn outputs(&self, names: &FileNames) -> Result<Vec<Output>, String> {
        let stem = self.stem();
        let mut outputs = Vec::new();
        let mut push = |name: String, kind| {
            if !outputs.iter().any(|o: &Output| o.name == name) {
                outputs.push(Output { name, kind });
            }
        };
        if self.emit.contains(&Emit::DepInfo) {
            push(format!("{stem}.d"), OutputKind::DepInfo);
        }
        if self.emit.contains(&Emit::Metadata) {
            push(format!("lib{stem}.rmeta"), OutputKind::Immutable);
        }
        if self.emit.contains(&Emit::Link) {
            let named = |kind: CrateType| {
                names.name(kind, &stem).ok_or_else(|| {
                    format!(
                        "crate type {} is not supported for this target",
                        kind.as_str()
                    )
                })
            };
            let build_script = self.crate_name.starts_with("build_script_");
            if self.is_test {
                push(named(CrateType::Bin)?, OutputKind::Executable);
            }
            for &kind in &self.crate_types {
                let output = match kind {
                    CrateType::Bin if self.is_test => continue,
                    CrateType::Bin if build_script => OutputKind::LinkedExecutable,
                    CrateType::Bin => OutputKind::Executable,
                    CrateType::Lib | CrateType::Rlib | CrateType::Staticlib => {
                        OutputKind::Immutable
                    }
                    CrateType::ProcMacro => OutputKind::LinkedExecutable,
                    CrateType::Dylib | CrateType::Cdylib => OutputKind::Executable,
                };
                push(named(kind)?, output);
            }
        }
        Ok(outputs)
    }

    /// Which files in `out_dir` named after this unit belong to the
    /// compile besides `outputs` and are stored with it: the `.dwo` files
    /// of `-C split-debuginfo=unpacked` (`<stem>.<cgu>.rcgu.dwo`) and the
    /// `.dwp` of `packed` beside a linked output. They are
    /// [`OutputKind::Copied`]: LLVM and thorin write them in place.
    ///
    /// `listed` is every file of `out_dir` named after the unit;
    /// `rlib_members` the member names of the compile's rlib, if it wrote
    /// one: with `unpacked` the rlib carries exactly the `.dwo` files its
    /// objects reference, so those (and no stale ones of an earlier compile
    /// of the same unit) are taken, and each must be there. Without an rlib
    /// the `.dwo` files changed during the compile are taken.
    ///
    /// Any other file changed during the compile and named after the unit
    /// (a Windows import library or `.pdb`, a wasm side file, a `.dSYM`
    /// directory, a long-type note, a kept object) is one kache does not
    /// know, and `Err` says which: an entry without it would restore an
    /// incomplete set. Files named after other units are ignored.
    pub fn side_outputs(
        &self,
        outputs: &[Output],
        listed: &[ListedFile],
        names: &FileNames,
        rlib_members: Option<&[String]>,
    ) -> Result<Vec<Output>, String> {
        let stem = self.stem();
        let unpacked = self.split_debuginfo == Some(SplitDebuginfo::Unpacked);
        let is_dwo =
            |name: &str| name.ends_with(".rcgu.dwo") && name.starts_with(&format!("{stem}."));
        let referenced: Option<Vec<&str>> = rlib_members.filter(|_| unpacked).map(|members| {
            members
                .iter()
                .map(String::as_str)
                .filter(|name| is_dwo(name))
                .collect()
        });
        let mut found = Vec::new();
        for file in listed {
            let name = file.name.as_str();
            if outputs.iter().any(|o| o.name == name) {
                continue;
            }
            let ours = names.prefixes().chain(["", "lib"]).any(|prefix| {
                name.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix(stem.as_str()))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            });
            if !ours {
                continue;
            }
            let known = match &referenced {
                // An earlier compile's `.dwo` is not this one's.
                Some(referenced) if is_dwo(name) => {
                    if !referenced.contains(&name) {
                        continue;
                    }
                    file.regular
                }
                _ if !file.changed => continue,
                _ => {
                    file.regular
                        && match self.split_debuginfo {
                            Some(SplitDebuginfo::Unpacked) => is_dwo(name),
                            Some(SplitDebuginfo::Packed) => outputs.iter().any(|o| {
                                o.kind != OutputKind::DepInfo
                                    && !o.name.ends_with(".rlib")
                                    && !o.name.ends_with(".rmeta")
                                    && name.strip_suffix(".dwp").is_some_and(|base| {
                                        base == o.name || base == without_extension(&o.name)
                                    })
                            }),
                            None => false,
                        }
                }
            };
            if !known {
                return Err(format!(
                    "rustc also wrote {name}, which kache does not know"
                ));
            }
            found.push(Output {
                name: name.to_string(),
                kind: OutputKind::Copied,
            });
        }
        for name in referenced.iter().flatten() {
            if !found.iter().any(|o| o.name == *name) {
                return Err(format!("the rlib names {name}, which rustc did not leave"));
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup();
        Ok(found)
    }

    /// The output a restore may write under `name`: one of `outputs`
    /// (named and kinded by this invocation), or split debuginfo that
    /// [`Invocation::side_outputs`] would have stored with them (copied,
    /// never executable). `None` for anything else: an entry naming
    /// another crate's output, or a file this compile would not write,
    /// restores nothing.
    pub fn restorable(&self, name: &str, outputs: &[Output]) -> Option<Output> {
        if let Some(output) = outputs.iter().find(|o| o.name == name) {
            return Some(output.clone());
        }
        let stem = self.stem();
        let side = match self.split_debuginfo {
            Some(SplitDebuginfo::Unpacked) => {
                name.ends_with(".rcgu.dwo")
                    && name.starts_with(&format!("{stem}."))
                    && !name[stem.len() + 1..].contains(['/', '\\'])
            }
            Some(SplitDebuginfo::Packed) => outputs.iter().any(|o| {
                o.kind != OutputKind::DepInfo
                    && !o.name.ends_with(".rlib")
                    && !o.name.ends_with(".rmeta")
                    && name
                        .strip_suffix(".dwp")
                        .is_some_and(|base| base == o.name || base == without_extension(&o.name))
            }),
            None => false,
        };
        side.then(|| Output {
            name: name.to_string(),
            kind: OutputKind::Copied,
        })
    }
}

/// A file in a compile's output directory, as [`Invocation::side_outputs`]
/// sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    /// A regular file (not a directory or a link).
    pub regular: bool,
    /// Written or linked since the compile started.
    pub changed: bool,
}

/// `libfoo.so` → `libfoo`, `app` → `app`. rustc 1.95 names the `.dwp` of
/// `libfoo.so` `libfoo.so.dwp`; `libfoo.dwp` (`Path::with_extension`) is
/// accepted too.
fn without_extension(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((base, _)) if !base.is_empty() => base,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    const LIB: &str = "--crate-name foo --edition=2021 src/lib.rs --error-format=json \
        --json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type lib \
        --emit=dep-info,metadata,link -C embed-bitcode=no -C debuginfo=2 \
        --cfg feature=\"std\" -C metadata=abc -C extra-filename=-0123 \
        --out-dir /w/target/debug/deps -C incremental=/w/target/debug/incremental \
        -L dependency=/w/target/debug/deps --extern bar=/w/target/debug/deps/libbar-9.rmeta";

    /// rustc 1.95's `--print=file-names` answers (stdout, stderr).
    const LINUX: (&str, &str) = (
        "___\nlib___.rlib\nlib___.so\nlib___.so\nlib___.a\nlib___.so\n",
        "",
    );
    const WASM: (&str, &str) = (
        "___.wasm\nlib___.rlib\n___.wasm\nlib___.a\n",
        "warning: dropping unsupported crate type `dylib` for target `wasm32-unknown-unknown`\n\n\
         warning: dropping unsupported crate type `proc-macro` for target `wasm32-unknown-unknown`\n\n\
         warning: 2 warnings emitted\n",
    );
    const THUMB: (&str, &str) = (
        "___\nlib___.rlib\nlib___.a\n",
        "warning: dropping unsupported crate type `dylib` for target `thumbv7em-none-eabihf`\n\
         warning: dropping unsupported crate type `cdylib` for target `thumbv7em-none-eabihf`\n\
         warning: dropping unsupported crate type `proc-macro` for target `thumbv7em-none-eabihf`\n",
    );
    const WINDOWS_GNU: (&str, &str) = (
        "___.exe\nlib___.rlib\n___.dll\n___.dll\nlib___.a\n___.dll\n",
        "",
    );
    const WINDOWS_MSVC: (&str, &str) = (
        "___.exe\nlib___.rlib\n___.dll\n___.dll\n___.lib\n___.dll\n",
        "",
    );

    fn table((stdout, stderr): (&str, &str)) -> FileNames {
        FileNames::parse(stdout, stderr).expect("a file-names answer")
    }

    fn linux() -> FileNames {
        table(LINUX)
    }

    fn named(text: &str, names: &FileNames) -> Vec<(String, OutputKind)> {
        cacheable(text)
            .outputs(names)
            .expect("named")
            .into_iter()
            .map(|o| (o.name, o.kind))
            .collect()
    }

    fn cacheable(text: &str) -> Invocation {
        match parse(&argv(text)) {
            Parsed::Cacheable(inv) => *inv,
            Parsed::Passthrough(why) => panic!("passthrough: {why}"),
        }
    }

    #[test]
    fn linked_outputs_native_cpus_and_linkers_are_recognised() {
        let lib = cacheable(LIB);
        assert!(!lib.is_linked());
        assert!(!lib.targets_native_cpu());
        assert_eq!(lib.linker(), None);
        let native = cacheable(&format!("{LIB} -C target-cpu=native -Clinker=/opt/cc"));
        assert!(native.targets_native_cpu());
        assert_eq!(native.linker(), Some("/opt/cc"));
        let macro_crate = cacheable(&LIB.replace("--crate-type lib", "--crate-type proc-macro"));
        assert!(macro_crate.is_linked());
        let generic = cacheable(&format!(
            "{LIB} -C target-cpu=native -C target-cpu=x86-64-v2"
        ));
        assert!(!generic.targets_native_cpu(), "the last -C target-cpu wins");
    }

    #[test]
    fn reads_a_cargo_library_call() {
        let Parsed::Cacheable(inv) = parse(&argv(LIB)) else {
            panic!("not cacheable")
        };
        assert_eq!(inv.crate_name, "foo");
        assert_eq!(inv.source, "src/lib.rs");
        assert_eq!(inv.crate_types, vec![CrateType::Lib]);
        assert_eq!(inv.emit, vec![Emit::DepInfo, Emit::Metadata, Emit::Link]);
        assert_eq!(inv.extra_filename, "-0123");
        assert_eq!(inv.cfgs, vec!["feature=\"std\""]);
        assert_eq!(inv.externs[0].name, "bar");
        assert_eq!(
            inv.incremental.as_deref(),
            Some("/w/target/debug/incremental")
        );
        assert!(
            inv.args.iter().any(|a| a.contains("incremental")),
            "kept for rustc"
        );
        let names: Vec<_> = inv
            .outputs(&linux())
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(
            names,
            ["foo-0123.d", "libfoo-0123.rmeta", "libfoo-0123.rlib"]
        );
    }

    #[test]
    fn probes_and_odd_calls_pass_through() {
        for text in [
            "-vV",
            "- --crate-name ___ --print=file-names --crate-type bin",
            "--crate-name a a.rs b.rs --crate-type lib --emit=link --out-dir o",
            "--crate-name a a.rs --crate-type lib --emit=dep-info,link -o out",
            "@args.txt",
            "--crate-name a a.rs --crate-type lib --emit=dep-info,asm --out-dir o",
            "--crate-name a a.rs --crate-type lib --emit=link --out-dir o",
        ] {
            assert!(
                matches!(parse(&argv(text)), Parsed::Passthrough(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn output_kinds_keep_their_meta_json_spelling() {
        let spelled: Vec<String> = [
            OutputKind::Immutable,
            OutputKind::DepInfo,
            OutputKind::Executable,
            OutputKind::LinkedExecutable,
        ]
        .iter()
        .map(|k| serde_json::to_string(k).unwrap())
        .collect();
        assert_eq!(
            spelled,
            [
                "\"immutable\"",
                "\"dep-info\"",
                "\"executable\"",
                "\"linked-executable\""
            ]
        );
    }

    #[test]
    fn build_scripts_are_not_user_executables_but_tests_are() {
        let build = "--crate-name build_script_build build.rs --crate-type bin \
            --emit=dep-info,link --out-dir /o";
        let Parsed::Cacheable(inv) = parse(&argv(build)) else {
            panic!()
        };
        assert!(!inv.is_user_executable());
        assert_eq!(
            inv.outputs(&linux()).unwrap()[1].kind,
            OutputKind::LinkedExecutable
        );
        let test = "--crate-name foo src/lib.rs --test --emit=dep-info,link --out-dir /o";
        let Parsed::Cacheable(inv) = parse(&argv(test)) else {
            panic!()
        };
        assert!(inv.is_user_executable());
        assert_eq!(
            inv.outputs(&linux()).unwrap()[1].kind,
            OutputKind::Executable
        );
    }

    #[test]
    fn the_file_names_table_is_read_as_cargo_reads_it() {
        let wasm = table(WASM);
        assert_eq!(
            wasm.name(CrateType::Cdylib, "a-1").as_deref(),
            Some("a-1.wasm")
        );
        assert_eq!(
            wasm.name(CrateType::Bin, "a-1").as_deref(),
            Some("a-1.wasm")
        );
        assert_eq!(
            wasm.name(CrateType::Lib, "a-1").as_deref(),
            Some("liba-1.rlib")
        );
        assert_eq!(
            wasm.name(CrateType::Staticlib, "a-1").as_deref(),
            Some("liba-1.a")
        );
        assert_eq!(wasm.name(CrateType::Dylib, "a-1"), None, "dropped by rustc");
        assert_eq!(wasm.name(CrateType::ProcMacro, "a-1"), None);
        let thumb = table(THUMB);
        assert_eq!(
            thumb.name(CrateType::Staticlib, "a").as_deref(),
            Some("liba.a")
        );
        assert_eq!(thumb.name(CrateType::Cdylib, "a"), None);
        let windows = table(WINDOWS_MSVC);
        assert_eq!(windows.name(CrateType::Bin, "a").as_deref(), Some("a.exe"));
        assert_eq!(
            windows.name(CrateType::Staticlib, "a").as_deref(),
            Some("a.lib")
        );
        for answer in [LINUX, WASM, THUMB, WINDOWS_GNU, WINDOWS_MSVC] {
            let names = table(answer);
            assert_eq!(FileNames::from_text(&names.to_text()), Some(names));
        }
        assert!(FileNames::parse("___\n", "").is_err(), "too few lines");
        assert!(
            FileNames::parse("a\nb\nc\nd\ne\nf\n", "").is_err(),
            "no ___"
        );
        assert_eq!(FileNames::from_text("bin\tonly-two-fields\n"), None);
        let probe = FileNames::probe_args(Some("x.json"), true).join(" ");
        assert_eq!(
            probe,
            "- --crate-name ___ --print=file-names --crate-type bin --crate-type rlib \
             --crate-type dylib --crate-type cdylib --crate-type staticlib \
             --crate-type proc-macro --target x.json -Z unstable-options"
        );
    }

    const CALL: &str = "--crate-name w src/lib.rs --emit=dep-info,metadata,link \
        -C extra-filename=-7 --out-dir /t/deps";

    #[test]
    fn outputs_are_named_from_the_targets_table_with_the_same_kinds() {
        let lib = format!("{CALL} --crate-type lib");
        let cdylib = format!("{CALL} --crate-type cdylib --crate-type rlib");
        let bin = format!("{CALL} --crate-type bin");
        let build = bin.replace("--crate-name w", "--crate-name build_script_build");
        let test = format!("{CALL} --test");
        let proc = format!("{CALL} --crate-type proc-macro");
        let rmeta = ("libw-7.rmeta".to_string(), OutputKind::Immutable);
        let dep = ("w-7.d".to_string(), OutputKind::DepInfo);
        let wasm = table(WASM);
        assert_eq!(
            named(&cdylib, &wasm),
            [
                dep.clone(),
                rmeta.clone(),
                ("libw-7.rlib".into(), OutputKind::Immutable),
                ("w-7.wasm".into(), OutputKind::Executable),
            ]
        );
        let windows = table(WINDOWS_GNU);
        assert_eq!(
            named(&lib, &windows)[2],
            ("libw-7.rlib".into(), OutputKind::Immutable)
        );
        assert_eq!(
            named(&bin, &windows)[2],
            ("w-7.exe".into(), OutputKind::Executable)
        );
        assert_eq!(
            named(&test, &windows)[2],
            ("w-7.exe".into(), OutputKind::Executable)
        );
        assert_eq!(
            named(&build, &windows)[2],
            (
                "build_script_build-7.exe".into(),
                OutputKind::LinkedExecutable
            )
        );
        assert_eq!(
            named(&proc, &windows)[2],
            ("w-7.dll".into(), OutputKind::LinkedExecutable)
        );
        let linux = linux();
        assert_eq!(
            named(&proc, &linux)[2],
            ("libw-7.so".into(), OutputKind::LinkedExecutable)
        );
        assert_eq!(
            named(&cdylib, &linux)[3],
            ("libw-7.so".into(), OutputKind::Executable)
        );
        assert_eq!(
            named(&bin, &linux)[2],
            ("w-7".into(), OutputKind::Executable)
        );
        let thumb = table(THUMB);
        assert_eq!(
            named(&format!("{CALL} --crate-type staticlib"), &thumb)[2],
            ("libw-7.a".into(), OutputKind::Immutable)
        );
        let unsupported = cacheable(&proc).outputs(&wasm).unwrap_err();
        assert!(unsupported.contains("proc-macro"), "{unsupported}");
        let check = "--crate-name w src/lib.rs --emit=dep-info,metadata --crate-type lib \
            --out-dir /t";
        assert_eq!(
            named(check, &thumb),
            [
                ("w.d".into(), OutputKind::DepInfo),
                ("libw.rmeta".into(), OutputKind::Immutable)
            ]
        );
    }

    fn reason(text: &str) -> String {
        match parse(&argv(text)) {
            Parsed::Passthrough(why) => why.into_owned(),
            Parsed::Cacheable(_) => panic!("cacheable: {text}"),
        }
    }

    #[test]
    fn unstable_options_are_keyed_unless_denied_in_every_spelling() {
        let lib = format!("{CALL} --crate-type lib");
        for spelling in ["-Zembed-metadata=no", "-Z embed-metadata=no"] {
            let inv = cacheable(&format!("{lib} {spelling} -Z unstable-options -Zthreads=8"));
            assert_eq!(
                inv.unstable,
                ["embed-metadata", "unstable-options", "threads"]
            );
            assert!(inv.has_unstable("unstable-options"));
            let names: Vec<_> = inv
                .outputs(&linux())
                .unwrap()
                .into_iter()
                .map(|o| o.name)
                .collect();
            assert_eq!(
                names,
                ["w-7.d", "libw-7.rmeta", "libw-7.rlib"],
                "both halves"
            );
        }
        for (flag, name) in [
            ("-Zself-profile", "self-profile"),
            ("-Z self-profile=/tmp/p", "self-profile"),
            ("-Zself-profile-events=all", "self-profile-events"),
            ("-Zdump-mir=all", "dump-mir"),
            ("-Z dump-dep-graph", "dump-dep-graph"),
            ("-Zprofile-sample-use=x.prof", "profile-sample-use"),
            ("-Zinstrument-mcount", "instrument-mcount"),
            ("-Zprint-type-sizes", "print-type-sizes"),
            ("-Zls=root", "ls"),
            ("-Zunpretty=expanded", "unpretty"),
            ("-Zincremental-info", "incremental-info"),
            ("-Ztime-passes", "time-passes"),
            ("-Z time-llvm-passes", "time-llvm-passes"),
            ("-Zllvm-time-trace", "llvm-time-trace"),
            ("-Ztemps-dir=/tmp/x", "temps-dir"),
            ("-Zcodegen-backend=cranelift", "codegen-backend"),
            ("-Zsplit-dwarf-out-dir=/d", "split-dwarf-out-dir"),
            ("-Zpre-link-args=-Tx.ld", "pre-link-args"),
            ("-Zno-link", "no-link"),
        ] {
            assert_eq!(
                reason(&format!("{lib} {flag}")),
                format!("unstable option -Z{name}"),
                "{flag}"
            );
        }
        assert_eq!(unstable_denied("threads"), None);
        assert_eq!(unstable_denied("timex"), None, "a prefix ends at the dash");
        assert!(unstable_denied("time-passes-format").is_some());
    }

    #[test]
    fn unstable_options_have_their_own_key_component() {
        let digests = |text: &str| {
            let mut builder = crate::key::KeyBuilder::default();
            let normalizer = crate::normalize::PathNormalizer::default();
            crate::key::add_arguments(&mut builder, &cacheable(text), &normalizer);
            builder.digests()
        };
        let lib = format!("{CALL} --crate-type lib");
        let plain = digests(&lib);
        let split = digests(&format!("{lib} -Zembed-metadata=no"));
        let changed: Vec<_> = split
            .keys()
            .filter(|k| plain.get(*k) != split.get(*k))
            .collect();
        assert_eq!(changed, ["unstable"]);
        assert_ne!(split, digests(&format!("{lib} -Zembed-metadata=yes")));
    }

    #[test]
    fn every_denied_unstable_option_is_documented() {
        let doc = include_str!("../../../ARCHITECTURE.md");
        for (pattern, _) in UNSTABLE_DENIED {
            assert!(
                doc.contains(&format!("`-Z{pattern}`")),
                "ARCHITECTURE.md does not list -Z{pattern}"
            );
        }
    }

    #[test]
    fn split_debuginfo_is_cacheable_except_linked_apple_outputs() {
        let lib = format!("{CALL} --crate-type lib");
        let bin = format!("{CALL} --crate-type bin");
        for kind in ["packed", "unpacked"] {
            let flag = format!("-C split-debuginfo={kind}");
            assert!(
                cacheable(&format!("{lib} {flag}"))
                    .split_debuginfo
                    .is_some()
            );
            assert!(
                cacheable(&format!("{bin} {flag}"))
                    .split_debuginfo
                    .is_some()
            );
            let apple_lib = format!("{lib} {flag} --target aarch64-apple-darwin");
            assert!(cacheable(&apple_lib).split_debuginfo.is_some());
            assert_eq!(
                reason(&format!("{bin} {flag} --target aarch64-apple-darwin")),
                "split debuginfo of a linked output on an Apple target"
            );
        }
        let off = cacheable(&format!(
            "{bin} -Csplit-debuginfo=unpacked -Csplit-debuginfo=off"
        ));
        assert_eq!(off.split_debuginfo, None, "the last one wins");
        assert_eq!(
            reason(&format!("{lib} -Csplit-debuginfo=sideways")),
            "unknown split debuginfo kind"
        );
    }

    /// Side outputs of `text` among `listed` names: a trailing `/` marks a
    /// directory, a leading `~` a file older than the compile.
    fn side_with(
        text: &str,
        names: &FileNames,
        listed: &[&str],
        rlib: Option<&[&str]>,
    ) -> Result<Vec<String>, String> {
        let inv = cacheable(text);
        let outputs = inv.outputs(names).unwrap();
        let listed: Vec<ListedFile> = listed
            .iter()
            .map(|w| {
                let (old, w) = match w.strip_prefix('~') {
                    Some(rest) => (true, rest),
                    None => (false, *w),
                };
                let (name, regular) = match w.strip_suffix('/') {
                    Some(dir) => (dir, false),
                    None => (w, true),
                };
                ListedFile {
                    name: name.to_string(),
                    regular,
                    changed: !old,
                }
            })
            .collect();
        let members: Option<Vec<String>> = rlib.map(|m| m.iter().map(|n| n.to_string()).collect());
        inv.side_outputs(&outputs, &listed, names, members.as_deref())
            .map(|found| {
                assert!(found.iter().all(|o| o.kind == OutputKind::Copied));
                found.into_iter().map(|o| o.name).collect()
            })
    }

    fn side(text: &str, names: &FileNames, listed: &[&str]) -> Result<Vec<String>, String> {
        side_with(text, names, listed, None)
    }

    #[test]
    fn an_unpacked_rlib_takes_exactly_the_dwo_files_it_names() {
        let unpacked = format!("{CALL} --crate-type lib -C split-debuginfo=unpacked");
        let linux = linux();
        let members = ["lib.rmeta", "w-7.w.a.s2.rcgu.o", "w-7.w.a.s2.rcgu.dwo"];
        let listed = [
            "libw-7.rlib",
            "~w-7.w.a.s2.rcgu.dwo", // relinked from the incremental directory
            "w-7.w.a.s1.rcgu.dwo",  // an earlier session's, written just before
            "~w-7.w.b.s1.rcgu.dwo",
        ];
        assert_eq!(
            side_with(&unpacked, &linux, &listed, Some(&members)).unwrap(),
            ["w-7.w.a.s2.rcgu.dwo"]
        );
        let err = side_with(&unpacked, &linux, &listed[..1], Some(&members)).unwrap_err();
        assert!(err.contains("w-7.w.a.s2.rcgu.dwo"), "{err}");
        // Still refused: an unknown file written during the compile.
        assert!(
            side_with(
                &unpacked,
                &linux,
                &["w-7.w.a.s2.rcgu.dwo", "w-7.w.a.s2.rcgu.o"],
                Some(&members)
            )
            .is_err()
        );
        // Old unknown files are an earlier compile's business.
        assert_eq!(
            side(&format!("{CALL} --crate-type lib"), &linux, &["~w-7.pdb"]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn side_files_are_stored_when_known_and_refuse_the_entry_when_not() {
        let lib = format!("{CALL} --crate-type lib");
        let bin = format!("{CALL} --crate-type bin");
        let linux = linux();
        let written = [
            "w-7.d",
            "libw-7.rlib",
            "libw-7.rmeta",
            "w-7.w.2a1b-cgu.0.rcgu.dwo",
            "w-7.w.2a1b-cgu.1.rcgu.dwo",
            "other-9.other.3c-cgu.0.rcgu.dwo",
            "w-70.d",
            "libw_x-7.rlib",
        ];
        let unpacked = format!("{lib} -C split-debuginfo=unpacked");
        assert_eq!(
            side(&unpacked, &linux, &written).unwrap(),
            ["w-7.w.2a1b-cgu.0.rcgu.dwo", "w-7.w.2a1b-cgu.1.rcgu.dwo"]
        );
        // Without split debuginfo the same file is one kache does not know.
        let err = side(&lib, &linux, &written).unwrap_err();
        assert!(err.contains("w-7.w.2a1b-cgu.0.rcgu.dwo"), "{err}");
        assert_eq!(
            side(&lib, &linux, &written[..3]).unwrap(),
            Vec::<String>::new()
        );
        let packed = format!("{bin} -C split-debuginfo=packed");
        assert_eq!(
            side(&packed, &linux, &["w-7", "w-7.dwp"]).unwrap(),
            ["w-7.dwp"]
        );
        let cdylib = format!("{CALL} --crate-type cdylib -C split-debuginfo=packed");
        assert_eq!(
            side(&cdylib, &linux, &["libw-7.so", "libw-7.so.dwp"]).unwrap(),
            ["libw-7.so.dwp"]
        );
        assert!(side(&cdylib, &linux, &["libw-7.so.x.dwp"]).is_err());
        assert!(
            side(
                &format!("{lib} -C split-debuginfo=packed"),
                &linux,
                &["libw-7.dwp"]
            )
            .is_err()
        );
        // What rustc's table does not name: import libraries, `.pdb`, a
        // `.dSYM` directory.
        let windows = table(WINDOWS_GNU);
        let dll = format!("{CALL} --crate-type cdylib");
        assert!(side(&dll, &windows, &["w-7.dll", "libw-7.dll.a"]).is_err());
        assert!(
            side(
                &dll,
                &table(WINDOWS_MSVC),
                &["w-7.dll", "w-7.dll.lib", "w-7.pdb"]
            )
            .is_err()
        );
        assert!(side(&packed, &linux, &["w-7.dSYM/"]).is_err());
        assert!(
            side(&unpacked, &linux, &["w-7.x-cgu.0.rcgu.dwo/"]).is_err(),
            "a directory"
        );
    }
}
