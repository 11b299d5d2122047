//! Machine-local path prefixes and the sentinels that replace them.
//!
//! Keys must match across checkouts and machines, so every absolute path that
//! names a machine-local root (the workspace, the target directory,
//! `CARGO_HOME`, `RUSTUP_HOME`, the home directory) is rewritten to a sentinel
//! before it is hashed or stored, and rewritten back when an entry is restored.

/// A set of `(prefix, sentinel)` pairs applied longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct PathNormalizer {
    roots: Vec<(String, &'static str)>,
}

/// Sentinel for the target directory.
pub const TARGET: &str = "{kache:target}";
/// Sentinel for the directory rustc runs in (the workspace or package root).
pub const WORKSPACE: &str = "{kache:ws}";
/// Sentinel for `CARGO_HOME`.
pub const CARGO_HOME: &str = "{kache:cargo}";
/// Sentinel for `RUSTUP_HOME`.
pub const RUSTUP_HOME: &str = "{kache:rustup}";
/// Sentinel for the user's home directory.
pub const HOME: &str = "{kache:home}";

impl PathNormalizer {
    /// Registers `prefix` (an absolute path without a trailing slash) under
    /// `sentinel`. Empty and root prefixes are ignored: they would match
    /// everything.
    pub fn add(&mut self, prefix: &str, sentinel: &'static str) {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() || self.roots.iter().any(|(p, _)| p == prefix) {
            return;
        }
        self.roots.push((prefix.to_string(), sentinel));
        self.roots
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// The registered roots, longest first.
    pub fn roots(&self) -> &[(String, &'static str)] {
        &self.roots
    }

    /// Replaces every registered prefix that ends at a path boundary with its
    /// sentinel. `/w/proj` is replaced in `/w/proj/src` but not in `/w/project`.
    pub fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'outer: while !rest.is_empty() {
            for (prefix, sentinel) in &self.roots {
                if let Some(after) = rest.strip_prefix(prefix.as_str())
                    && after.chars().next().is_none_or(is_boundary)
                {
                    out.push_str(sentinel);
                    rest = after;
                    continue 'outer;
                }
            }
            let ch = rest.chars().next().expect("rest is not empty");
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        out
    }

    /// Turns sentinels back into this machine's prefixes. A sentinel with no
    /// registered prefix is left as is.
    pub fn denormalize(&self, text: &str) -> String {
        let mut out = text.to_string();
        for sentinel in [TARGET, WORKSPACE, CARGO_HOME, RUSTUP_HOME, HOME] {
            if let Some((prefix, _)) = self.roots.iter().find(|(_, s)| *s == sentinel) {
                out = out.replace(sentinel, prefix);
            }
        }
        out
    }
}

/// System directories a C compile's recorded inputs may lie in (the
/// compiler's own headers and the distribution's).
const SYSTEM_ROOTS: &[&str] = &[
    "/usr/include/",
    "/usr/local/include/",
    "/usr/lib/",
    "/usr/lib64/",
];

/// Whether a recorded input path of an entry from *another machine* may be
/// read to prove a hit: relative to the compile's directory, or under a
/// root the key normalises (workspace, target directory, `CARGO_HOME`,
/// `RUSTUP_HOME`) or a system header directory, and never climbing out of
/// it with `..`. Anything else (`/dev/zero`, `/etc/…`, the home directory)
/// makes the entry impossible: it is not imported.
pub fn is_confined(path: &str) -> bool {
    let rest = if let Some(root) = [TARGET, WORKSPACE, CARGO_HOME, RUSTUP_HOME]
        .into_iter()
        .find(|s| path.starts_with(s))
    {
        let rest = &path[root.len()..];
        if !(rest.is_empty() || rest.starts_with('/')) {
            return false;
        }
        rest
    } else if path.starts_with('/') {
        match SYSTEM_ROOTS.iter().find(|r| path.starts_with(*r)) {
            Some(root) => &path[root.len()..],
            None => return false,
        }
    } else if path.starts_with('{') || path.is_empty() {
        // An unknown sentinel, or nothing.
        return false;
    } else {
        path
    };
    !rest.contains('\0') && stays_below(rest)
}

/// Whether a relative path never climbs above where it starts, read
/// lexically: `src/../data.txt` (an `include_str!("../data.txt")`) stays,
/// `src/../../x` does not.
fn stays_below(path: &str) -> bool {
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

fn is_boundary(c: char) -> bool {
    !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inputs_under_the_roots_are_confined() {
        for ok in [
            "{kache:ws}/src/lib.rs",
            "{kache:cargo}/registry/src/index/serde-1.0.0/src/lib.rs",
            "{kache:target}/debug/build/x-1/out/gen.rs",
            "{kache:rustup}/toolchains/stable/lib/rustlib/src/rust/library/core/src/lib.rs",
            "src/main.rs",
            "core/src/../greeting.txt",
            "/usr/include/stdio.h",
            "/usr/lib/gcc/x86_64-linux-gnu/12/include/stddef.h",
        ] {
            assert!(is_confined(ok), "{ok}");
        }
        for bad in [
            "/dev/zero",
            "/etc/passwd",
            "/tmp/fifo",
            "{kache:home}/.ssh/id_ed25519",
            "{kache:ws}/../../etc/passwd",
            "{kache:wsx}/src/lib.rs",
            "{kache:other}/x",
            "../outside/lib.rs",
            "src/../../outside.rs",
            "/usr/include/../../etc/shadow",
            "/usr/includes/x.h",
            "",
        ] {
            assert!(!is_confined(bad), "{bad}");
        }
    }

    fn normalizer() -> PathNormalizer {
        let mut n = PathNormalizer::default();
        n.add("/w/proj", WORKSPACE);
        n.add("/w/proj/target", TARGET);
        n.add("/home/u/.cargo", CARGO_HOME);
        n
    }

    #[test]
    fn longest_prefix_wins_and_round_trips() {
        let n = normalizer();
        let text = "--out-dir /w/proj/target/debug/deps src=/w/proj/src/lib.rs";
        let norm = n.normalize(text);
        assert_eq!(
            norm,
            "--out-dir {kache:target}/debug/deps src={kache:ws}/src/lib.rs"
        );
        assert_eq!(n.denormalize(&norm), text);
    }

    #[test]
    fn prefix_only_matches_at_a_path_boundary() {
        let n = normalizer();
        assert_eq!(n.normalize("/w/project/x"), "/w/project/x");
        assert_eq!(n.normalize("\"/w/proj\""), "\"{kache:ws}\"");
    }

    #[test]
    fn two_checkouts_normalize_to_the_same_text() {
        let mut a = PathNormalizer::default();
        a.add("/a/repo", WORKSPACE);
        let mut b = PathNormalizer::default();
        b.add("/b/other/repo", WORKSPACE);
        assert_eq!(
            a.normalize("/a/repo/src/x.rs"),
            b.normalize("/b/other/repo/src/x.rs")
        );
    }
}
