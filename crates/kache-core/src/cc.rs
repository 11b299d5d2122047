//! C-family compiler command lines: which calls of a gcc- or clang-family
//! driver are a cacheable single-source object compile, and what in them
//! goes into the key.
//!
//! The `cc` crate runs every C/C++ compile of a build script as
//! `kache <compiler> <args…>` when `RUSTC_WRAPPER` is named `kache`. Only a
//! `-c` compile of exactly one source whose every flag is known here is
//! cached; anything else (the family probe `-E`, link mode, response files,
//! unknown flags) passes through untouched. Flags are accepted by an allow
//! list, never a deny list: an unknown flag might read a file or write a
//! second output the cache would not know about.

/// The compiler families kache caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gcc,
    Clang,
}

/// Whether a program's file name looks like a gcc- or clang-family driver:
/// `cc`, `c++`, `gcc`, `g++`, `clang`, `clang++`, optionally with a target
/// prefix (`x86_64-linux-gnu-gcc`), a version suffix (`clang-18`, `gcc-12`)
/// and `.exe`. `nvcc`, `cl`, `icc` and other names are not.
pub fn is_gcc_like_name(file_name: &str) -> bool {
    let name = file_name.strip_suffix(".exe").unwrap_or(file_name);
    // Strip a version suffix: `-18`, `-12.2`.
    let name = match name.rsplit_once('-') {
        Some((stem, version))
            if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            stem
        }
        _ => name,
    };
    // Strip a target prefix: everything up to the last `-`.
    let base = name.rsplit('-').next().unwrap_or(name);
    matches!(base, "cc" | "c++" | "gcc" | "g++" | "clang" | "clang++")
}

/// Whether the driver was invoked in C++ mode (`c++`, `g++`, `clang++`):
/// clang picks its mode from the name it is called by.
pub fn is_cxx_driver_name(file_name: &str) -> bool {
    file_name.contains("++")
}

/// The family and major version read from `<compiler> -v` output.
pub fn family_from_banner(banner: &str) -> Option<(Family, u32)> {
    for line in banner.lines() {
        if let Some(rest) = line.strip_prefix("gcc version ") {
            return major(rest).map(|m| (Family::Gcc, m));
        }
        if let Some(at) = line.find("clang version ") {
            return major(&line[at + "clang version ".len()..]).map(|m| (Family::Clang, m));
        }
    }
    None
}

fn major(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
}

/// Whether the compiler understands `-ffile-prefix-map` (gcc 8, clang 10),
/// which kache needs to make objects portable across checkouts.
pub fn supports_file_prefix_map(family: Family, major: u32) -> bool {
    match family {
        Family::Gcc => major >= 8,
        Family::Clang => major >= 10,
    }
}

/// The part of a `-v` banner that identifies the compiler. The
/// `COLLECT_GCC=` line names how it was invoked (`cc`, `/usr/bin/gcc`),
/// which says nothing about what it produces.
pub fn banner_identity(banner: &str) -> String {
    banner
        .lines()
        .filter(|line| !line.starts_with("COLLECT_GCC="))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Environment variables that change what a C-family compile produces.
pub const KEYED_ENV: &[&str] = &[
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "OBJCPLUS_INCLUDE_PATH",
    "GCC_EXEC_PREFIX",
    "COMPILER_PATH",
    "SOURCE_DATE_EPOCH",
    "CCC_OVERRIDE_OPTIONS",
    "GCC_COMPARE_DEBUG",
    "SDKROOT",
    "MACOSX_DEPLOYMENT_TARGET",
    "IPHONEOS_DEPLOYMENT_TARGET",
];

/// Environment variables that make the compiler write extra files: a call
/// with one set passes through.
pub const PASSTHROUGH_ENV: &[&str] = &["DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES"];

/// A cacheable object compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcInvocation {
    /// The one source file, as given (relative to the cwd or absolute).
    pub source: String,
    /// The `-o` object path, as given.
    pub output: String,
    /// Every argument that reaches the key, in order: everything except
    /// `-c`, `-o <path>`, `-MF <path>` and the source.
    pub keyed: Vec<String>,
    /// Include search directories (`-I`, `-iquote`, `-isystem`,
    /// `-idirafter`) as given, in command-line order.
    pub include_dirs: Vec<String>,
    /// The caller asked for a dep file (`-MD`); its path is [`Self::dep_file`].
    pub wants_dep_file: bool,
    /// `-MF <path>`, when given.
    pub dep_file_flag: Option<String>,
    /// The source is assembly (`.s`, `.S`, `.sx`, or `-x assembler…`).
    pub assembly: bool,
    /// Where the GNU assembler looks for an `.incbin` or `.include` name
    /// that is not found from the current directory: every `-I` (the gcc
    /// driver hands them to `as`), then every `-Wa,-I`, in order.
    pub assembler_search: Vec<String>,
}

impl CcInvocation {
    /// Where the caller's dep file goes: `-MF`, else the object path with
    /// its extension replaced by `.d` (gcc's and clang's rule for `-MD`).
    pub fn dep_file(&self) -> Option<String> {
        if !self.wants_dep_file {
            return None;
        }
        Some(
            self.dep_file_flag
                .clone()
                .unwrap_or_else(|| match self.output.rsplit_once('.') {
                    Some((stem, ext)) if !ext.contains('/') => format!("{stem}.d"),
                    _ => format!("{}.d", self.output),
                }),
        )
    }
}

/// Source extensions the drivers compile (anything else needs `-x`).
const SOURCE_EXTENSIONS: &[&str] = &[
    "c", "cc", "cp", "cpp", "cxx", "c++", "C", "CPP", "i", "ii", "m", "mm", "M", "s", "S", "sx",
];

/// Flags followed by a separate value that goes into the key.
const WITH_VALUE: &[&str] = &[
    "-D",
    "-U",
    "-I",
    "-iquote",
    "-isystem",
    "-idirafter",
    "-include",
    "-imacros",
    "-isysroot",
    "-iprefix",
    "-iwithprefix",
    "-iwithprefixbefore",
    "--sysroot",
    "-target",
    "-arch",
    "--param",
    "-x",
    "-MT",
    "-MQ",
    "-L",
    "-l",
];

/// Single flags (no value) that go into the key.
const PLAIN: &[&str] = &[
    "-ansi",
    "-w",
    "-pipe",
    "-pthread",
    "-nostdinc",
    "-nostdinc++",
    "-static",
    "-shared",
    "-nostdlib",
    "-nostartfiles",
    "-nodefaultlibs",
    "-rdynamic",
    "-pie",
    "-no-pie",
    "-MP",
    "-undef",
    "-trigraphs",
];

/// Joined prefixes (`-DNAME=1`, `-Iinclude`, `-std=c99`) that go into the key.
const JOINED: &[&str] = &[
    "-D",
    "-U",
    "-I",
    "-iquote",
    "-isystem",
    "-idirafter",
    "-isysroot",
    "--sysroot=",
    "--target=",
    "--param=",
    "-std=",
    "-stdlib=",
    "-O",
    "-m",
    "-W",
    "-pedantic",
    "-L",
    "-l",
    "-x",
];

/// `-f` options that read or write files the cache would not see.
const DENIED_F: &[&str] = &[
    "-fprofile",
    "-fauto-profile",
    "-fsanitize-blacklist",
    "-fsanitize-ignorelist",
    "-fplugin",
    "-fdump-",
    "-fstack-usage",
    "-fcallgraph-info",
    "-ftest-coverage",
    "-fcoverage",
    "-fmodules",
    "-fmodule-",
    "-fimplicit-modules",
    "-fsave-optimization-record",
    "-foptimization-record",
    "-fopt-info",
    "-ftime-trace",
    "-ftime-report",
    "-fcrash-diagnostics",
    "-fsyntax-only",
    "-fcreate-profile",
    "-fpch",
    "-fbuild-session",
    "-fembed-offload",
];

/// Reads a gcc/clang command line (without the program). Returns the
/// cacheable compile, or why the call must pass through.
pub fn parse(args: &[String]) -> Result<CcInvocation, String> {
    let mut compile = false;
    let mut output = None;
    let mut sources = Vec::new();
    let mut keyed = Vec::new();
    let mut include_dirs = Vec::new();
    let mut wants_dep_file = false;
    let mut dep_file_flag = None;
    let mut language: Option<String> = None;
    let mut assembler_search = Vec::new();
    let mut wa_search = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let value = |i: usize| {
            args.get(i + 1)
                .cloned()
                .ok_or_else(|| format!("{arg} without a value"))
        };
        match arg {
            "-c" => compile = true,
            "-o" => {
                output = Some(value(i)?);
                i += 1;
            }
            "-MD" => {
                wants_dep_file = true;
                keyed.push(arg.to_string());
            }
            "-MF" => {
                dep_file_flag = Some(value(i)?);
                i += 1;
            }
            "-MMD" => return Err("-MMD leaves system headers out of the dep file".into()),
            "-E" | "-S" | "-M" | "-MM" | "-MG" | "-v" | "-###" | "--version" | "-fsyntax-only"
            | "-save-temps" | "--coverage" | "-gsplit-dwarf" | "-" => {
                return Err(format!("{arg} is not an object compile kache caches"));
            }
            _ if WITH_VALUE.contains(&arg) => {
                let v = value(i)?;
                if matches!(arg, "-I" | "-iquote" | "-isystem" | "-idirafter") {
                    include_dirs.push(v.clone());
                }
                if arg == "-I" {
                    assembler_search.push(v.clone());
                }
                if arg == "-x" {
                    language = Some(v.clone());
                }
                keyed.push(arg.to_string());
                keyed.push(v);
                i += 1;
            }
            _ if PLAIN.contains(&arg) => keyed.push(arg.to_string()),
            _ if arg.starts_with('@') => return Err("response files pass through".into()),
            _ if arg.starts_with("-o") => output = Some(arg[2..].to_string()),
            _ if arg.starts_with("-MF") => dep_file_flag = Some(arg[3..].to_string()),
            _ if arg.starts_with("-Wp,") || arg.starts_with("-X") => {
                return Err(format!("{arg} passes options kache cannot check"));
            }
            _ if arg.starts_with("-Wa,") => {
                wa_search.extend(assembler_options(arg)?);
                keyed.push(arg.to_string());
            }
            _ if arg.starts_with("-f") => {
                if DENIED_F.iter().any(|d| arg.starts_with(d)) {
                    return Err(format!("{arg} reads or writes files kache does not track"));
                }
                keyed.push(arg.to_string());
            }
            _ if arg.starts_with("-g") => keyed.push(arg.to_string()),
            _ if JOINED.iter().any(|p| arg.starts_with(p)) => {
                for flag in ["-I", "-iquote", "-isystem", "-idirafter"] {
                    if let Some(dir) = arg.strip_prefix(flag)
                        && !dir.is_empty()
                    {
                        include_dirs.push(dir.to_string());
                        if flag == "-I" {
                            assembler_search.push(dir.to_string());
                        }
                        break;
                    }
                }
                if let Some(lang) = arg.strip_prefix("-x") {
                    language = Some(lang.to_string());
                }
                keyed.push(arg.to_string());
            }
            _ if arg.starts_with('-') => return Err(format!("unknown flag {arg}")),
            _ => sources.push(arg.to_string()),
        }
        i += 1;
    }
    if !compile {
        return Err("not a -c compile".into());
    }
    let output = output.ok_or("no -o output")?;
    let source = match sources.as_slice() {
        [one] => one.clone(),
        [] => return Err("no source file".into()),
        _ => return Err("several source files".into()),
    };
    let extension = source.rsplit_once('.').map_or("", |(_, ext)| ext);
    if language.is_none() && !SOURCE_EXTENSIONS.contains(&extension) {
        return Err(format!("unknown source type {source}"));
    }
    if dep_file_flag.is_some() && !wants_dep_file {
        return Err("-MF without -MD".into());
    }
    let assembly = match &language {
        Some(lang) => lang.starts_with("assembler"),
        None => matches!(extension, "s" | "S" | "sx"),
    };
    assembler_search.extend(wa_search);
    Ok(CcInvocation {
        source,
        output,
        keyed,
        include_dirs,
        wants_dep_file,
        dep_file_flag,
        assembly,
        assembler_search,
    })
}

/// Checks the options of one `-Wa,opt,opt…` argument and returns the
/// directories it adds to the assembler's search (`-I<dir>`, `-I,<dir>`).
/// Options that make the assembler write a file of its own (a listing
/// `-a…=file`, a dependency list `--MD`, the object `-o`) or read options
/// from a file (`@file`) pass the call through.
fn assembler_options(arg: &str) -> Result<Vec<String>, String> {
    let mut dirs = Vec::new();
    let mut options = arg["-Wa,".len()..].split(',');
    while let Some(option) = options.next() {
        if option == "-I" {
            let dir = options
                .next()
                .ok_or_else(|| format!("{arg}: -I without a directory"))?;
            dirs.push(dir.to_string());
        } else if let Some(dir) = option.strip_prefix("-I") {
            dirs.push(dir.to_string());
        } else if option.starts_with("--MD")
            || option.starts_with("-MD")
            || option.starts_with('@')
            || option.starts_with("-o")
            || (option.starts_with("-a") && option.contains('='))
        {
            return Err(format!(
                "{arg} makes the assembler read or write files kache does not track"
            ));
        }
    }
    Ok(dirs)
}

/// Whether text the compile reads may make an assembler other than GNU as
/// (clang's integrated one) read a file: it mentions `incbin` or `.include`
/// anywhere, in any case (gas directives are case-insensitive). This is the
/// fallback where the assembler cannot list what it read (see
/// [`assembler_dependency_flag`]); a compile it finds is not cached. It is a
/// text rule and not complete: a directive spelled with C escapes
/// (`"\x2eincbin"`) or built by an assembler macro is not seen.
pub fn mentions_assembler_reads(text: &[u8]) -> bool {
    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    }
    contains(text, b"incbin") || contains(text, b".include")
}

/// The argument that makes the GNU assembler write the make-style list of
/// every file it read (`.include`, `.incbin`, whatever built the name:
/// string pasting, preprocessor or assembler macros) to `path`. The gcc
/// driver passes it to `as` for every `-c` compile, C and assembly alike.
/// The list also names the assembler's input (the driver's temporary `.s`)
/// and every `.file` name, which need not exist.
pub fn assembler_dependency_flag(path: &str) -> String {
    format!("-Wa,--MD,{path}")
}

/// Paths where a file, if one appeared, would be read instead of `read`,
/// a file the GNU assembler opened for an `.incbin` or `.include` (as its
/// dependency list names it: relative to the current directory, or
/// absolute). Gas tries the name as given from the current directory, then
/// under each of `search` in order (gas 2.40, tried with real `gcc -c`: not
/// the source's own directory, since gcc assembles a temporary file). `read`
/// may be the name as written or `<search dir>/<name>`; for every search
/// directory it starts with, the name is looked for in the current
/// directory and every earlier search directory. Absolute names have no
/// alternatives.
pub fn assembler_shadows(read: &str, search: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if read.starts_with('/') {
        return out;
    }
    for (k, dir) in search.iter().enumerate() {
        let dir = dir.trim_end_matches('/');
        let Some(name) = read
            .strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            continue;
        };
        if name.is_empty() || dir.is_empty() {
            continue;
        }
        out.push(name.to_string());
        for earlier in &search[..k] {
            let candidate = format!("{}/{name}", earlier.trim_end_matches('/'));
            if candidate != read {
                out.push(candidate);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn compiler_names_with_prefixes_and_versions_are_recognised() {
        for name in [
            "cc",
            "c++",
            "gcc",
            "g++",
            "clang",
            "clang++",
            "clang-18",
            "gcc-12",
            "x86_64-linux-gnu-gcc",
            "aarch64-linux-gnu-g++-12",
            "clang++-18.1",
            "gcc.exe",
        ] {
            assert!(is_gcc_like_name(name), "{name}");
        }
        for name in [
            "nvcc",
            "cl",
            "icc",
            "tcc",
            "rustc",
            "ls",
            "cc1",
            "clang-tidy",
            "ccache",
        ] {
            assert!(!is_gcc_like_name(name), "{name}");
        }
    }

    #[test]
    fn banners_give_family_and_major() {
        let gcc = "Using built-in specs.\nCOLLECT_GCC=cc\nTarget: x86_64-linux-gnu\n\
                   gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(family_from_banner(gcc), Some((Family::Gcc, 12)));
        assert!(!banner_identity(gcc).contains("COLLECT_GCC"));
        let clang = "Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu\n";
        assert_eq!(family_from_banner(clang), Some((Family::Clang, 14)));
        let apple = "Apple clang version 15.0.0 (clang-1500.3.9.4)\n";
        assert_eq!(family_from_banner(apple), Some((Family::Clang, 15)));
        assert_eq!(family_from_banner("nvcc: NVIDIA (R) Cuda compiler"), None);
        assert!(!supports_file_prefix_map(Family::Gcc, 7));
        assert!(supports_file_prefix_map(Family::Clang, 10));
    }

    #[test]
    fn a_cc_crate_compile_is_cacheable() {
        let inv = parse(&args(
            "-O0 -ffunction-sections -fdata-sections -fPIC -g -gdwarf-4 -fno-omit-frame-pointer \
             -m64 -I zstd/lib -Izstd/lib/common -isystem /opt/inc -Wall -Wextra -DXXH_NAMESPACE=ZSTD_ \
             -D ZSTD_MULTITHREAD -std=c99 -o /t/out/abc-zstd.o -c zstd/lib/zstd.c",
        ))
        .unwrap();
        assert_eq!(inv.source, "zstd/lib/zstd.c");
        assert_eq!(inv.output, "/t/out/abc-zstd.o");
        assert_eq!(
            inv.include_dirs,
            ["zstd/lib", "zstd/lib/common", "/opt/inc"]
        );
        assert!(!inv.keyed.iter().any(|a| a.contains("/t/out")));
        assert!(inv.keyed.contains(&"-DXXH_NAMESPACE=ZSTD_".to_string()));
        assert!(!inv.assembly);
        assert_eq!(inv.dep_file(), None);
    }

    #[test]
    fn assembly_and_dep_files_are_understood() {
        let inv = parse(&args("-c -o /t/o/x.o -MD -MT x.o c/blake3_sse2.S")).unwrap();
        assert!(inv.assembly);
        assert_eq!(inv.dep_file().as_deref(), Some("/t/o/x.d"));
        let inv = parse(&args("-c -o x.o -MD -MF deps/x.dep x.c")).unwrap();
        assert_eq!(inv.dep_file().as_deref(), Some("deps/x.dep"));
        let inv = parse(&args("-x assembler-with-cpp -c -o x.o x.asm")).unwrap();
        assert!(inv.assembly);
    }

    #[test]
    fn the_assembler_search_is_every_dash_i_then_every_wa_dash_i() {
        let inv = parse(&args(
            "-c -o x.o -Iinc1 -iquote q -isystem s -Wa,-Iwa -I inc2 -Wa,--noexecstack,-I,wa2 x.c",
        ))
        .unwrap();
        assert_eq!(inv.assembler_search, ["inc1", "inc2", "wa", "wa2"]);
        for line in [
            "-c -o x.o -Wa,--MD,x.d x.c",
            "-c -o x.o -Wa,-adhln=x.lst x.c",
            "-c -o x.o -Wa,@opts x.c",
            "-c -o x.o -Wa,-I x.c",
        ] {
            assert!(parse(&args(line)).is_err(), "{line}");
        }
    }

    #[test]
    fn text_that_may_make_an_assembler_read_files_is_found_anywhere() {
        for text in [
            "  .incbin \"blob\"\n",
            "label: .incbin \"x\"",
            "__asm__(\".section .rodata; .INCBIN \\\"f\\\", 2, 4\");",
            "#define INCBIN_MACRO \".incbin\"",
            ".include \"more.s\"",
        ] {
            assert!(mentions_assembler_reads(text.as_bytes()), "{text}");
        }
        assert!(!mentions_assembler_reads(
            b"mov %eax, %ebx\n#include <stdio.h>\n"
        ));
    }

    #[test]
    fn a_file_found_under_a_search_dir_is_shadowed_by_the_cwd_and_earlier_dirs() {
        let search = vec!["inc1".to_string(), "inc2/".to_string(), "wa".to_string()];
        assert_eq!(
            assembler_shadows("inc2/blob.bin", &search),
            ["blob.bin", "inc1/blob.bin"]
        );
        assert_eq!(
            assembler_shadows("wa/d/b.bin", &search),
            ["d/b.bin", "inc1/d/b.bin", "inc2/d/b.bin"]
        );
        assert!(assembler_shadows("blob.bin", &search).is_empty());
        assert!(assembler_shadows("/abs/inc1/blob.bin", &search).is_empty());
        assert_eq!(
            assembler_dependency_flag("/t/x.o.as.d"),
            "-Wa,--MD,/t/x.o.as.d"
        );
    }

    #[test]
    fn everything_else_passes_through() {
        for line in [
            "-E /tmp/detect.c",
            "-o app main.o util.o",
            "-c a.c b.c -o x.o",
            "-c x.c",
            "-c -o x.o -MMD x.c",
            "-c -o x.o @args",
            "-c -o x.o -fprofile-use=p.profdata x.c",
            "-c -o x.o -Xclang -load x.c",
            "-c -o x.o -Wp,-MD,x.d x.c",
            "-c -o x.o --weird-flag x.c",
            "-c -o x.o x.unknown",
            "-c -o x.o -save-temps x.c",
            "-c -o x.o -gsplit-dwarf x.c",
            "-c -o x.o -",
            "-c -o x.o -MF x.d x.c",
            "-c -o x.o -I",
        ] {
            assert!(parse(&args(line)).is_err(), "{line}");
        }
    }
}
