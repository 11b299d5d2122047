//! The files a link reads, from the command line rustc prints with
//! `--print link-args=<file>`.
//!
//! A linked output (an executable, a dylib, a cdylib, a proc-macro) holds
//! code from every rlib of its dependency closure, the native libraries
//! those rlibs bundle or name, and files passed with `-C link-arg` (linker
//! scripts such as `memory.x`). Cargo names only the direct dependencies
//! with `--extern`; the rest rustc finds on `-L dependency=…`. The link
//! line is the one place that names them all, so the wrapper asks rustc to
//! write it and keys every file on it.

/// What a link line names, as written (paths relative to rustc's cwd
/// unless absolute). The caller keeps only those that exist after the link
/// (temporary objects are gone by then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInputs {
    /// Objects, archives and libraries given by path.
    pub files: Vec<String>,
    /// Linker scripts (`-T x`, `-Tx`, `-Wl,-T,x`, `--script=x`): a path, or
    /// a name the linker looks up in the `-L` directories.
    pub scripts: Vec<String>,
    /// `-l<name>` libraries, looked up in the `-L` directories.
    pub libs: Vec<String>,
    /// `-L` directories, in order.
    pub search_dirs: Vec<String>,
    /// The `-o` output.
    pub output: Option<String>,
}

/// Splits rustc's printed command (`VAR="…" "cc" "arg" …`, each word in
/// Rust's debug quoting) into words, dropping the leading environment
/// assignments and the linker itself.
pub fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !quoted {
                break;
            }
            chars.next();
            match c {
                '"' => quoted = !quoted,
                '\\' if quoted => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some(other) => word.push(other),
                    None => {}
                },
                _ => word.push(c),
            }
        }
        words.push(word);
    }
    // Leading `NAME=value` words are the environment; then the linker.
    let first = words
        .iter()
        .position(|w| !is_assignment(w))
        .unwrap_or(words.len());
    words.into_iter().skip(first + 1).collect()
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Reads the link words (after [`words`]).
pub fn parse(words: &[String]) -> LinkInputs {
    let mut inputs = LinkInputs::default();
    let mut i = 0;
    let next = |i: &mut usize| -> Option<String> {
        *i += 1;
        words.get(*i).cloned()
    };
    while i < words.len() {
        let word = words[i].as_str();
        if let Some(linker_args) = word.strip_prefix("-Wl,") {
            let parts: Vec<&str> = linker_args.split(',').collect();
            let mut j = 0;
            while j < parts.len() {
                let part = parts[j];
                if part == "-T" || part == "--script" {
                    if let Some(script) = parts.get(j + 1) {
                        inputs.scripts.push(script.to_string());
                    }
                    j += 1;
                } else if let Some(script) = part
                    .strip_prefix("--script=")
                    .or_else(|| part.strip_prefix("-T").filter(|s| !s.is_empty()))
                {
                    inputs.scripts.push(script.to_string());
                } else if let Some(dir) = part.strip_prefix("-L").filter(|d| !d.is_empty()) {
                    inputs.search_dirs.push(dir.to_string());
                } else if !part.starts_with('-') && !part.is_empty() && looks_like_file(part) {
                    inputs.files.push(part.to_string());
                }
                j += 1;
            }
        } else if word == "-o" {
            inputs.output = next(&mut i);
        } else if word == "-L" {
            if let Some(dir) = next(&mut i) {
                inputs.search_dirs.push(dir);
            }
        } else if word == "-T" {
            if let Some(script) = next(&mut i) {
                inputs.scripts.push(script);
            }
        } else if let Some(dir) = word.strip_prefix("-L") {
            inputs.search_dirs.push(dir.to_string());
        } else if let Some(script) = word.strip_prefix("-T") {
            inputs.scripts.push(script.to_string());
        } else if let Some(lib) = word.strip_prefix("-l") {
            let lib = lib.strip_prefix(':').unwrap_or(lib);
            if !lib.is_empty() {
                inputs.libs.push(lib.to_string());
            }
        } else if !word.starts_with('-') && !word.is_empty() {
            inputs.files.push(word.to_string());
        }
        i += 1;
    }
    inputs
}

/// Inside `-Wl,` only words with a path separator or an object/library
/// suffix are files; the rest are linker option values (`-z`, `noexecstack`).
fn looks_like_file(part: &str) -> bool {
    part.contains('/')
        || [".o", ".a", ".so", ".rlib", ".ld", ".x", ".lds"]
            .iter()
            .any(|ext| part.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"LC_ALL="C" PATH="/r/bin:/usr/bin" VSLANG="1033" "cc" "-m64" "/tmp/rustcX/symbols.o" "o/m.m.cgu.0.rcgu.o" "-Wl,--as-needed" "-Wl,-Bstatic" "/w/o/libb-2.rlib" "o/libc-1.rlib" "-Wl,-Bdynamic" "-lgcc_s" "-l:libz.a" "-L" "/tmp/rustcX/raw-dylibs" "-B/r/gcc-ld" "-fuse-ld=lld" "-Wl,-z,noexecstack" "-L" "/r/lib" "-Wl,-Tlink.x" "-T" "memory.x" "-Wl,-T,other.ld" "-o" "o/m" "-Wl,--gc-sections" "a \"quoted\" path.o""#;

    #[test]
    fn a_printed_link_line_is_read_into_files_scripts_libs_and_dirs() {
        let words = words(LINE);
        assert_eq!(words[0], "-m64");
        let inputs = parse(&words);
        assert_eq!(
            inputs.files,
            [
                "/tmp/rustcX/symbols.o",
                "o/m.m.cgu.0.rcgu.o",
                "/w/o/libb-2.rlib",
                "o/libc-1.rlib",
                "a \"quoted\" path.o"
            ]
        );
        assert_eq!(inputs.scripts, ["link.x", "memory.x", "other.ld"]);
        assert_eq!(inputs.libs, ["gcc_s", "libz.a"]);
        assert_eq!(inputs.search_dirs, ["/tmp/rustcX/raw-dylibs", "/r/lib"]);
        assert_eq!(inputs.output.as_deref(), Some("o/m"));
    }

    #[test]
    fn an_empty_line_names_nothing() {
        assert_eq!(parse(&words("")), LinkInputs::default());
    }
}
