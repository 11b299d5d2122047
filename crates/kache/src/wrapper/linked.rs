//! What makes an output more than its own sources: the files a link read,
//! and the machine-local roots an output holds.
//!
//! Both are learnt after a miss, from what rustc did, and recorded with the
//! entry, so a later lookup checks them like any other input: link inputs
//! are re-hashed (a changed C file two crates down changes the sys crate's
//! rlib), baked roots are compared with where those roots are now.

use std::path::PathBuf;

use anyhow::{Context, Result};
use kache_core::linkargs;

use super::context::Roots;

/// The name prefix of a recorded baked root among an entry's `env_deps`.
/// No environment variable name contains `=`, so it never meets a real one.
pub const BAKED_ROOT: &str = "=root:";

/// Every existing file the link line names, resolved like the linker
/// would: paths against rustc's cwd, linker scripts and `-l` libraries in
/// the `-L` directories. Temporary objects (gone after the link), the
/// compile's own outputs and directories are left out.
pub fn link_inputs(line: &str, roots: &Roots, own_outputs: &[PathBuf]) -> Vec<PathBuf> {
    let inputs = linkargs::parse(&linkargs::words(line));
    let dirs: Vec<PathBuf> = inputs
        .search_dirs
        .iter()
        .map(|d| roots.resolve(d))
        .collect();
    let output = inputs.output.as_deref().map(|o| roots.resolve(o));
    let mut found: Vec<PathBuf> = Vec::new();
    let mut keep = |path: PathBuf| {
        let is_own = own_outputs.contains(&path) || output.as_ref() == Some(&path);
        if path.is_file() && !is_own && !found.contains(&path) {
            found.push(path);
        }
    };
    for file in &inputs.files {
        keep(roots.resolve(file));
    }
    for script in &inputs.scripts {
        let direct = roots.resolve(script);
        if direct.is_file() {
            keep(direct);
        } else if let Some(path) = dirs.iter().map(|d| d.join(script)).find(|p| p.is_file()) {
            keep(path);
        }
    }
    for lib in &inputs.libs {
        let names = if lib.contains('.') {
            vec![lib.clone()]
        } else {
            vec![format!("lib{lib}.a"), format!("lib{lib}.so")]
        };
        if let Some(path) = dirs
            .iter()
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .find(|p| p.is_file())
        {
            keep(path);
        }
    }
    found
}

/// Where the root named by `sentinel` is on this machine, if it is known.
pub fn root_path(roots: &Roots, sentinel: &str) -> Option<String> {
    roots
        .normalizer
        .roots()
        .iter()
        .find(|(_, s)| *s == sentinel)
        .map(|(path, _)| path.clone())
}

/// The machine-local roots (workspace, target dir, `CARGO_HOME`,
/// `RUSTUP_HOME`, home) whose path appears in any of `outputs`, as
/// `(BAKED_ROOT + sentinel, path)` pairs to record with the entry.
///
/// kache remaps these roots in what rustc writes, so a hit can serve any
/// checkout; a root found anyway came from somewhere remapping does not
/// reach (a macro that turned `env!("CARGO_MANIFEST_DIR")` or a path it
/// read into a string literal), and the output is only right where the
/// root is the same path.
pub fn baked_roots(outputs: &[PathBuf], roots: &Roots) -> Result<Vec<(String, Option<String>)>> {
    let needles: Vec<(&str, &str)> = roots
        .normalizer
        .roots()
        .iter()
        .filter(|(path, _)| path.len() > 1)
        .map(|(path, sentinel)| (path.as_str(), *sentinel))
        .collect();
    // Roots nest (`/home/u`, `/home/u/.cargo`, `/home/u/w/target`): only
    // the outermost are searched, and each place one is found is checked
    // for every root, so a large rlib is read a few times, not five.
    let outer: Vec<&str> = needles
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| {
            !needles
                .iter()
                .any(|(other, _)| other.len() < path.len() && path.starts_with(other))
        })
        .collect();
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    for output in outputs {
        let bytes =
            std::fs::read(output).with_context(|| format!("reading {}", output.display()))?;
        for start in &outer {
            for at in memchr::memmem::find_iter(&bytes, start.as_bytes()) {
                for (path, sentinel) in &needles {
                    let name = format!("{BAKED_ROOT}{sentinel}");
                    if !found.iter().any(|(n, _)| *n == name) && root_at(&bytes, at, path) {
                        found.push((name, Some(path.to_string())));
                    }
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `root` starts at `bytes[at]` and ends at a path boundary (`/`, a
/// quote, NUL or the end), so `/w/proj` is not found in `/w/project`.
fn root_at(bytes: &[u8], at: usize, root: &str) -> bool {
    bytes[at..].starts_with(root.as_bytes())
        && bytes.get(at + root.len()).is_none_or(|&b| {
            !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'~'))
        })
}

/// Whether `bytes` hold `root` at a path boundary anywhere.
#[cfg(test)]
fn contains_root(bytes: &[u8], root: &str) -> bool {
    memchr::memmem::find_iter(bytes, root.as_bytes()).any(|at| root_at(bytes, at, root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kache_core::normalize;

    #[test]
    fn a_root_is_found_only_at_a_path_boundary() {
        assert!(contains_root(b"x\0/w/proj/src/lib.rs\0", "/w/proj"));
        assert!(contains_root(b"\"/w/proj\"", "/w/proj"));
        assert!(contains_root(b"/w/proj", "/w/proj"));
        assert!(!contains_root(b"/w/project/src", "/w/proj"));
        assert!(!contains_root(b"nothing here", "/w/proj"));
    }

    #[test]
    fn baked_roots_name_the_sentinel_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        let roots = Roots::discover(&ws, &ws.join("out"), None);
        let clean = dir.path().join("clean.rlib");
        std::fs::write(&clean, b"no paths at all").unwrap();
        assert!(
            baked_roots(std::slice::from_ref(&clean), &roots)
                .unwrap()
                .is_empty()
        );
        let baked = dir.path().join("baked.rlib");
        std::fs::write(&baked, format!("\0{}/assets\0", ws.display())).unwrap();
        let found = baked_roots(&[clean, baked], &roots).unwrap();
        assert!(
            found.contains(&(
                format!("{BAKED_ROOT}{}", normalize::WORKSPACE),
                Some(ws.display().to_string())
            )),
            "{found:?}"
        );
        assert_eq!(
            root_path(&roots, normalize::WORKSPACE).as_deref(),
            Some(ws.to_str().unwrap())
        );
    }
}
