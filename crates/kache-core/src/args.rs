//! The rustc command line as kache understands it.
//!
//! [`parse`] splits an argument list into the parts a cache key and a restore
//! need. Anything kache does not fully understand (argument files, `-o`, extra
//! emit kinds, several source files, split debuginfo) makes the call a
//! [`Parsed::Passthrough`]: rustc runs as if kache were absent.

/// The outcome of reading a rustc argument list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A primary compilation kache can cache.
    Cacheable(Box<Invocation>),
    /// A call kache does not cache, with the reason (for the log).
    Passthrough(&'static str),
}

/// A cacheable rustc compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The arguments rustc will receive, with incremental flags removed.
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
    fn parse(text: &str) -> Option<Self> {
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

fn parse_inner(args: &[String]) -> Result<Invocation, &'static str> {
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

    for flag in &parsed {
        let value = flag.value.unwrap_or_default();
        match flag.name {
            "" => {
                if value == "-" {
                    return Err("source from stdin");
                }
                if source.replace(value.to_string()).is_some() {
                    return Err("more than one source file");
                }
            }
            "-V" | "--version" | "-vV" | "-h" | "--help" => return Err("information request"),
            "--print" | "--explain" => return Err("information request"),
            "-o" => return Err("explicit output path"),
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
                        _ => return Err("unsupported emit kind"),
                    });
                }
                emit = Some(kinds);
            }
            "--out-dir" => out_dir = Some(value.to_string()),
            "--target" => target = Some(value.to_string()),
            "--test" => is_test = true,
            "--cfg" => cfgs.push(value.to_string()),
            "--remap-path-scope" => has_remap_scope = true,
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
                    "save-temps" | "profile-generate" | "profile-use" => {
                        return Err("codegen option with side outputs");
                    }
                    "split-debuginfo" if setting != "off" => {
                        return Err("split debuginfo");
                    }
                    _ => {}
                }
            }
            "-Z" => return Err("unstable option"),
            _ => {}
        }
    }

    let source = source.ok_or("no source file")?;
    let crate_name = crate_name.ok_or("no crate name")?;
    if crate_types.is_empty() && !is_test {
        return Err("no crate type");
    }
    let out_dir = out_dir.ok_or("no output directory")?;
    let mut emit = emit.ok_or("no emit set")?;
    emit.sort();
    emit.dedup();
    if !emit.contains(&Emit::DepInfo) {
        return Err("no dep-info emitted");
    }
    crate_types.sort();
    crate_types.dedup();

    Ok(Invocation {
        args: strip_incremental(args),
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
    })
}

/// Removes `-C incremental=…` in any spelling: kache stores whole outputs and
/// incremental state would only cost disk and time.
pub fn strip_incremental(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if (arg == "-C" || arg == "--codegen")
            && args
                .get(i + 1)
                .is_some_and(|v| v.starts_with("incremental="))
        {
            i += 2;
            continue;
        }
        let joined = arg
            .strip_prefix("-C")
            .or_else(|| arg.strip_prefix("--codegen="))
            .is_some_and(|v| v.starts_with("incremental="));
        if !joined {
            out.push(arg.clone());
        }
        i += 1;
    }
    out
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
            && (self.is_test
                || self.crate_types.iter().any(|t| {
                    matches!(
                        t,
                        CrateType::Bin
                            | CrateType::Dylib
                            | CrateType::Cdylib
                            | CrateType::ProcMacro
                    )
                }))
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

    /// The files rustc writes into `out_dir` for this call, or `None` for a
    /// target whose naming kache does not know (it then passes through).
    pub fn outputs(&self) -> Option<Vec<Output>> {
        let target = self.target.as_deref().unwrap_or("");
        if target.contains("windows") || target.contains("wasm") {
            return None;
        }
        let dylib_ext =
            if target.contains("apple") || (target.is_empty() && cfg!(target_os = "macos")) {
                "dylib"
            } else {
                "so"
            };
        let stem = format!("{}{}", self.crate_name, self.extra_filename);
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
            let build_script = self.crate_name.starts_with("build_script_");
            if self.is_test {
                push(stem.clone(), OutputKind::Executable);
            }
            for kind in &self.crate_types {
                match kind {
                    CrateType::Bin if build_script && !self.is_test => {
                        push(stem.clone(), OutputKind::LinkedExecutable)
                    }
                    CrateType::Bin if !self.is_test => push(stem.clone(), OutputKind::Executable),
                    CrateType::Bin => {}
                    CrateType::Lib | CrateType::Rlib => {
                        push(format!("lib{stem}.rlib"), OutputKind::Immutable)
                    }
                    CrateType::Staticlib => push(format!("lib{stem}.a"), OutputKind::Immutable),
                    CrateType::ProcMacro => push(
                        format!("lib{stem}.{dylib_ext}"),
                        OutputKind::LinkedExecutable,
                    ),
                    CrateType::Dylib | CrateType::Cdylib => {
                        push(format!("lib{stem}.{dylib_ext}"), OutputKind::Executable)
                    }
                }
            }
        }
        Some(outputs)
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
        assert!(!inv.args.iter().any(|a| a.contains("incremental")));
        let names: Vec<_> = inv.outputs().unwrap().into_iter().map(|o| o.name).collect();
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
    fn incremental_is_removed_in_every_spelling() {
        let args =
            argv("-C incremental=/x -Cincremental=/y --codegen=incremental=/z -C opt-level=3");
        assert_eq!(strip_incremental(&args), argv("-C opt-level=3"));
    }

    #[test]
    fn build_scripts_are_not_user_executables_but_tests_are() {
        let build = "--crate-name build_script_build build.rs --crate-type bin \
            --emit=dep-info,link --out-dir /o";
        let Parsed::Cacheable(inv) = parse(&argv(build)) else {
            panic!()
        };
        assert!(!inv.is_user_executable());
        assert_eq!(inv.outputs().unwrap()[1].kind, OutputKind::LinkedExecutable);
        let test = "--crate-name foo src/lib.rs --test --emit=dep-info,link --out-dir /o";
        let Parsed::Cacheable(inv) = parse(&argv(test)) else {
            panic!()
        };
        assert!(inv.is_user_executable());
        assert_eq!(inv.outputs().unwrap()[1].kind, OutputKind::Executable);
    }
}
