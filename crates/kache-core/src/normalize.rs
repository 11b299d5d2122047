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

fn is_boundary(c: char) -> bool {
    !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '~'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
