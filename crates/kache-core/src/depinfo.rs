//! rustc's dep-info (`.d`) files: the source files and environment variables
//! a compilation read.

/// What one compilation depended on, as rustc reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepInfo {
    /// Every file the first rule depends on, in order, without duplicates.
    pub files: Vec<String>,
    /// `# env-dep:NAME[=value]` lines: the variable and its value when set.
    pub env: Vec<(String, Option<String>)>,
}

/// Parses the text of a dep-info file. Unknown lines are ignored; escaped
/// spaces (`\ `) in paths are unescaped.
pub fn parse(text: &str) -> DepInfo {
    let mut info = DepInfo::default();
    let mut seen_rule = false;
    for line in text.lines() {
        if let Some(env) = line.strip_prefix("# env-dep:") {
            let (name, value) = match env.split_once('=') {
                Some((name, value)) => (name, Some(unescape_env(value))),
                None => (env, None),
            };
            info.env.push((name.to_string(), value));
            continue;
        }
        if seen_rule || line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some(deps) = split_rule(line) else {
            continue;
        };
        seen_rule = true;
        for path in split_paths(deps) {
            if !info.files.contains(&path) {
                info.files.push(path);
            }
        }
    }
    info
}

/// Parses a make-style dependency file as gcc and clang write it (`-MD`):
/// the first rule's prerequisites, with `\` line continuations joined.
pub fn parse_make(text: &str) -> Vec<String> {
    parse(&text.replace("\\\r\n", " ").replace("\\\n", " ")).files
}

/// Returns the prerequisites of a `target: deps` line, honouring escaped
/// colons and spaces in the target.
fn split_rule(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b':' if bytes.get(i + 1).is_none_or(|b| *b == b' ') => return Some(&line[i + 1..]),
            _ => i += 1,
        }
    }
    None
}

fn split_paths(deps: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => current.push('\\'),
            },
            ' ' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn unescape_env(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_env_deps() {
        let text = "/t/deps/foo-1.d: src/lib.rs src/a\\ b.rs /t/out/gen.rs\n\n\
            /t/deps/libfoo-1.rlib: src/lib.rs src/a\\ b.rs /t/out/gen.rs\n\n\
            src/lib.rs:\nsrc/a\\ b.rs:\n/t/out/gen.rs:\n\n\
            # env-dep:CARGO_PKG_NAME=foo\n# env-dep:GREETING=hi\\nthere\n# env-dep:UNSET\n";
        let info = parse(text);
        assert_eq!(info.files, ["src/lib.rs", "src/a b.rs", "/t/out/gen.rs"]);
        assert_eq!(
            info.env,
            [
                ("CARGO_PKG_NAME".to_string(), Some("foo".to_string())),
                ("GREETING".to_string(), Some("hi\nthere".to_string())),
                ("UNSET".to_string(), None),
            ]
        );
    }

    #[test]
    fn make_rules_with_continuations_are_joined() {
        let text = "/t/out/x.o: src/x.c /usr/include/stdio.h \\\n include/a\\ b.h \\\n /usr/include/features.h\n\ninclude/a\\ b.h:\n";
        assert_eq!(
            parse_make(text),
            [
                "src/x.c",
                "/usr/include/stdio.h",
                "include/a b.h",
                "/usr/include/features.h"
            ]
        );
    }

    #[test]
    fn empty_or_garbage_gives_nothing() {
        assert_eq!(parse(""), DepInfo::default());
        assert_eq!(parse("no rule here").files, Vec::<String>::new());
    }
}
