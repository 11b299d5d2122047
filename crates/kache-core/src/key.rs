//! Cache keys.
//!
//! A key is built in two stages so that a hit needs no rustc process:
//!
//! 1. The *pre-key* hashes what is known before compiling: toolchain, the
//!    normalised arguments (split into named components), every `--extern` by
//!    content, native libraries, the relevant environment and the salt.
//! 2. The *full key* adds what rustc reported reading: every source file from
//!    dep-info by content, and every `env!`/`option_env!` value.
//!
//! A later call with the same pre-key re-hashes the recorded inputs; if they
//! all match, the full key is known without running rustc. Both stages are
//! domain-separated blake3 hashes over length-prefixed fields, so no two
//! different component lists can produce the same bytes.

use std::collections::BTreeMap;

/// A named piece of a pre-key, kept so `why-miss` can name what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: &'static str,
    pub value: String,
}

/// Collects components in a fixed order and hashes them.
#[derive(Debug, Default, Clone)]
pub struct KeyBuilder {
    components: Vec<Component>,
}

/// One source file a compilation read, by normalised path and content hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Input {
    pub path: String,
    pub hash: String,
}

impl KeyBuilder {
    /// Adds a component. Components with the same name are concatenated, in order.
    pub fn add(&mut self, name: &'static str, value: impl Into<String>) {
        let value = value.into();
        match self.components.iter_mut().find(|c| c.name == name) {
            Some(existing) => {
                existing.value.push('\n');
                existing.value.push_str(&value);
            }
            None => self.components.push(Component { name, value }),
        }
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Per-component digests (16 hex digits each), stored with an entry.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.components
            .iter()
            .map(|c| (c.name.to_string(), short_hash(c.value.as_bytes())))
            .collect()
    }

    /// The pre-key: blake3 hex over every component.
    pub fn pre_key(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kache-pre-key-v1\0");
        for component in &self.components {
            field(&mut hasher, component.name.as_bytes());
            field(&mut hasher, component.value.as_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }
}

/// The full key from a pre-key, the files rustc read and the `env!` values.
/// Input order does not matter; inputs are sorted first.
pub fn full_key(pre_key: &str, inputs: &[Input], env: &[(String, Option<String>)]) -> String {
    let mut inputs: Vec<&Input> = inputs.iter().collect();
    inputs.sort();
    let mut env: Vec<&(String, Option<String>)> = env.iter().collect();
    env.sort();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kache-full-key-v1\0");
    field(&mut hasher, pre_key.as_bytes());
    for input in inputs {
        field(&mut hasher, input.path.as_bytes());
        field(&mut hasher, input.hash.as_bytes());
    }
    hasher.update(b"\0env\0");
    for (name, value) in env {
        field(&mut hasher, name.as_bytes());
        match value {
            Some(value) => {
                hasher.update(b"=");
                field(&mut hasher, value.as_bytes());
            }
            None => {
                hasher.update(b"!");
            }
        }
    }
    hasher.finalize().to_hex().to_string()
}

fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// First 16 hex digits of the blake3 hash of `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, hash: &str) -> Input {
        Input {
            path: path.into(),
            hash: hash.into(),
        }
    }

    #[test]
    fn every_component_changes_the_pre_key() {
        let mut base = KeyBuilder::default();
        base.add("toolchain", "rustc 1.95.0");
        base.add("crate", "foo");
        let mut other = base.clone();
        other.add("crate", "bar");
        assert_ne!(base.pre_key(), other.pre_key());
        let mut renamed = KeyBuilder::default();
        renamed.add("toolchain", "rustc 1.95.0");
        renamed.add("edition", "foo");
        assert_ne!(base.pre_key(), renamed.pre_key());
    }

    #[test]
    fn field_boundaries_cannot_collide() {
        let mut a = KeyBuilder::default();
        a.add("args", "ab");
        a.add("cfg", "c");
        let mut b = KeyBuilder::default();
        b.add("args", "a");
        b.add("cfg", "bc");
        assert_ne!(a.pre_key(), b.pre_key());
    }

    #[test]
    fn full_key_depends_on_content_and_env_not_order() {
        let inputs = [input("src/lib.rs", "aa"), input("src/x.rs", "bb")];
        let reversed = [input("src/x.rs", "bb"), input("src/lib.rs", "aa")];
        let env = [("GREETING".to_string(), Some("hi".to_string()))];
        let key = full_key("pre", &inputs, &env);
        assert_eq!(key, full_key("pre", &reversed, &env));
        assert_ne!(
            key,
            full_key(
                "pre",
                &[input("src/lib.rs", "aa"), input("src/x.rs", "cc")],
                &env
            )
        );
        assert_ne!(
            key,
            full_key("pre", &inputs, &[("GREETING".to_string(), None)])
        );
        assert_ne!(
            key,
            full_key(
                "pre",
                &inputs,
                &[("GREETING".to_string(), Some(String::new()))]
            )
        );
        assert_ne!(key, full_key("other", &inputs, &env));
    }
}

/// Adds the argument components of `invocation` to `builder`, every argument
/// normalised and assigned to exactly one named component. `--extern` paths
/// are left out: the caller hashes the files they name by content.
pub fn add_arguments(
    builder: &mut KeyBuilder,
    invocation: &crate::args::Invocation,
    normalizer: &crate::normalize::PathNormalizer,
) {
    let flags = match crate::args::flags(&invocation.args) {
        Ok(flags) => flags,
        // `parse` already accepted these arguments; keep every byte if not.
        Err(_) => {
            builder.add(
                "args",
                normalizer.normalize(&invocation.args.join("\u{1f}")),
            );
            return;
        }
    };
    for flag in flags {
        let value = flag
            .value
            .map(|v| normalizer.normalize(v))
            .unwrap_or_default();
        let component = match flag.name {
            "" => "source",
            "--crate-name" => "crate_name",
            "--crate-type" | "--test" => "crate_types",
            "--edition" => "edition",
            "--emit" => "emit",
            "--target" => "target",
            "--cfg" | "--check-cfg" => "cfg",
            "-C" | "--codegen" | "-g" | "-O" => "codegen",
            "--extern" => {
                let name = flag.value.unwrap_or_default();
                let name = name.split_once('=').map_or(name, |(n, _)| n);
                builder.add("extern_names", name.to_string());
                continue;
            }
            "-L" | "-l" => "link",
            "-Z" => "unstable",
            "-A" | "-W" | "-D" | "-F" | "--allow" | "--warn" | "--deny" | "--forbid"
            | "--force-warn" | "--cap-lints" => "lints",
            "--out-dir" | "--error-format" | "--json" | "--color" | "--diagnostic-width" => {
                "output"
            }
            _ => "other",
        };
        builder.add(component, format!("{}\u{1f}{value}", flag.name));
    }
}

#[cfg(test)]
mod argument_tests {
    use super::*;
    use crate::args::{Parsed, parse};
    use crate::normalize::{PathNormalizer, TARGET, WORKSPACE};

    fn components(args: &str, root: &str) -> BTreeMap<String, String> {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let Parsed::Cacheable(inv) = parse(&args) else {
            panic!("not cacheable: {args:?}")
        };
        let mut n = PathNormalizer::default();
        n.add(root, WORKSPACE);
        n.add(&format!("{root}/target"), TARGET);
        let mut builder = KeyBuilder::default();
        add_arguments(&mut builder, &inv, &n);
        builder.digests()
    }

    const BASE: &str = "--crate-name foo src/lib.rs --crate-type lib --emit=dep-info,metadata,link";

    #[test]
    fn same_call_in_two_checkouts_gives_the_same_components() {
        let a = components(&format!("{BASE} --out-dir /a/target/debug/deps"), "/a");
        let b = components(&format!("{BASE} --out-dir /b/c/target/debug/deps"), "/b/c");
        assert_eq!(a, b);
    }

    #[test]
    fn a_changed_flag_changes_only_its_component() {
        let base = components(
            &format!("{BASE} --out-dir /a/target/d -C opt-level=0"),
            "/a",
        );
        let opt = components(
            &format!("{BASE} --out-dir /a/target/d -C opt-level=3"),
            "/a",
        );
        let changed: Vec<_> = base.keys().filter(|k| base[*k] != opt[*k]).collect();
        assert_eq!(changed, ["codegen"]);
        let check = components(
            "--crate-name foo src/lib.rs --crate-type lib --emit=dep-info,metadata --out-dir /a/target/d -C opt-level=0",
            "/a",
        );
        let changed: Vec<_> = base.keys().filter(|k| base[*k] != check[*k]).collect();
        assert_eq!(changed, ["emit"]);
    }
}
