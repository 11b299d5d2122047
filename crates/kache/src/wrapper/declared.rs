//! The inputs a crate's build script declares, keyed in the pre-key.
//!
//! Cargo sets `OUT_DIR` for every compile of a package that has a build
//! script; the script's saved stdout sits next to it (`<unit>/output`, or
//! `<unit>/run/stdout` in cargo's newer build-dir layout). What it declares
//! with `rerun-if-changed` and `rerun-if-env-changed` is what cargo
//! recompiles the crate for, and what procedural macros read without rustc
//! knowing (see `kache_core::buildscript`): every declared file by content,
//! every declared directory by its whole tree (names and contents, so a new
//! migration file is a miss), every declared variable by value.

use std::path::{Path, PathBuf};

use anyhow::Result;
use kache_core::buildscript::{self, Declared};
use kache_core::key::KeyBuilder;

use super::context::Roots;
use crate::store::{HashCache, Store};

/// Adds the `declared` component: nothing when the crate has no build
/// script (no `OUT_DIR`).
pub fn add(
    builder: &mut KeyBuilder,
    store: &Store,
    hasher: &mut HashCache,
    roots: &Roots,
) -> Result<()> {
    let Some((out_dir, package)) = this_unit(roots) else {
        return Ok(());
    };
    for value in lines_for(&out_dir, &package, store, hasher, roots)? {
        builder.add("declared", value);
    }
    Ok(())
}

/// The compile's `OUT_DIR` and package directory, when its package has a
/// build script.
pub fn this_unit(roots: &Roots) -> Option<(PathBuf, PathBuf)> {
    let out_dir = std::env::var_os("OUT_DIR").map(PathBuf::from)?;
    let out_dir = roots.resolve(&out_dir.to_string_lossy());
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| roots.cwd.clone());
    Some((out_dir, package))
}

/// Adds `macro_declared`: what the build scripts of the procedural macros
/// this crate uses declare, evaluated now. A macro reads those inputs while
/// it expands, in this compile (its variables in this process), and cargo
/// recompiles the macro's dependents when they change, although the macro
/// itself comes out byte for byte the same. `macros` are the content
/// hashes of the proc-macro externs; one this store never saw compile or
/// hit has nothing recorded and adds nothing.
pub fn add_for_macros(
    builder: &mut KeyBuilder,
    store: &Store,
    hasher: &mut HashCache,
    roots: &Roots,
    macros: &[String],
) -> Result<()> {
    for hash in macros {
        let target_dir = roots
            .target_dir
            .as_ref()
            .map(|d| d.to_string_lossy().to_string())
            .unwrap_or_default();
        let Some((out_dir, package)) = store.index.macro_script(hash, &target_dir)? else {
            continue;
        };
        for value in lines_for(
            Path::new(&out_dir),
            Path::new(&package),
            store,
            hasher,
            roots,
        )? {
            builder.add("macro_declared", format!("{hash}: {value}"));
        }
    }
    Ok(())
}

/// The keyed lines of the build script whose `OUT_DIR` is `out_dir`.
fn lines_for(
    out_dir: &Path,
    package: &Path,
    store: &Store,
    hasher: &mut HashCache,
    roots: &Roots,
) -> Result<Vec<String>> {
    let Some(unit) = out_dir.parent() else {
        return Ok(Vec::new());
    };
    let saved = [unit.join("output"), unit.join("run").join("stdout")]
        .into_iter()
        .find_map(|path| std::fs::read_to_string(path).ok());
    let Some(text) = saved else {
        // A package whose script has not run (or a layout we do not know):
        // the key says so, and nothing is assumed about what it declares.
        return Ok(vec!["no build-script output found".to_string()]);
    };
    let declared = buildscript::parse_output(&text);
    describe(&declared, package, store, hasher, roots)
}

/// One keyed line per declaration, paths and values normalised (also the
/// declarations a build-script run entry is keyed by, see `build_run`).
pub(super) fn describe(
    declared: &Declared,
    package: &Path,
    store: &Store,
    hasher: &mut HashCache,
    roots: &Roots,
) -> Result<Vec<String>> {
    let normalize = |text: &str| roots.normalizer.normalize(text);
    let mut out = Vec::new();
    if declared.changed.is_empty() {
        // Cargo's default for a script that names no file: it reruns, and
        // the crate is recompiled, when any file of the package changes;
        // a macro may read any of them.
        out.push(format!(
            "package {}",
            tree_state(package, Scope::Package, store, hasher)?
        ));
    }
    for path in &declared.changed {
        let full = package.join(path);
        let state = state_of(&full, store, hasher)?;
        out.push(format!(
            "file {}={state}",
            normalize(&full.to_string_lossy())
        ));
    }
    for name in &declared.env {
        out.push(match std::env::var(name) {
            Ok(value) => format!("env {name}={}", normalize(&value)),
            Err(_) => format!("env {name}!"),
        });
    }
    for (name, value) in &declared.rustc_env {
        out.push(format!("rustc-env {name}={}", normalize(value)));
    }
    Ok(out)
}

/// Entries a package walk skips wherever they are: version control's own
/// state, and the virtual environments, caches and editor folders tools
/// keep in a project (too large to key on every compile, and nothing a
/// build script is meant to read; a script that does is the documented
/// risk of an undeclared input).
const NOT_PACKAGE_FILES: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".jj",
    ".venv",
    ".direnv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".idea",
    ".vscode",
];

/// Most entries a package walk reads before giving up (the compile then
/// passes through: a tree that large cannot be keyed on every call).
const PACKAGE_ENTRIES: usize = 20_000;

/// Which files of a tree are keyed: a declared folder is read whole; a
/// package as cargo's default build-script rule watches it, every file
/// but `target/` at its root and [`NOT_PACKAGE_FILES`], at most
/// [`PACKAGE_ENTRIES`] of them. Hidden files and folders count (a tracked
/// `.env` or `.config/api.txt` a script reads): cargo's package list holds
/// them. In both, a symlink is followed, as cargo follows it when it
/// checks a file's mtime (a `proto/api.proto` linked to a shared folder
/// changes with its target); a link to a folder inside the tree itself is
/// keyed by its target only, its files being keyed where they are (and a
/// loop never walked).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Declared,
    Package,
}

/// A file's content hash, a directory's tree hash, or `absent`.
pub(super) fn state_of(path: &Path, store: &Store, hasher: &mut HashCache) -> Result<String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok("absent".to_string());
    };
    if !meta.is_dir() {
        return Ok(hasher.hash(store, path)?.hash);
    }
    tree_state(path, Scope::Declared, store, hasher)
}

/// The system folders [`system_state`] keys: what the package manager
/// installs headers and libraries into.
const SYSTEM_DIRS: &[&str] = &[
    "/usr/include",
    "/usr/local/include",
    "/usr/lib",
    "/usr/lib64",
];

/// Most entries [`system_state`] lists before giving up (the run is then
/// not cached: the script runs, as it would without kache).
const SYSTEM_ENTRIES: usize = 50_000;

/// Whether `path` is one of [`SYSTEM_DIRS`] or below one.
pub(super) fn is_system(path: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|dir| path.starts_with(dir))
}

/// A system folder's (or file's) state without reading any content:
/// every entry below it by name, kind, size and modification second
/// (`stat:<blake3>`). A package manager that changes a header changes its
/// size or its mtime (dpkg and rpm set the packaged mtime, the same on
/// every machine of one image, so the key stays portable between them);
/// reading all of `/usr/include` (about 8,000 files) by content costs
/// seconds on a fresh machine, listing it tens of milliseconds. Symlinks
/// are keyed by target and not followed. More than [`SYSTEM_ENTRIES`]
/// entries is an error: too large to key on every run.
pub(super) fn system_state(path: &Path) -> Result<String> {
    fn stamp(meta: &std::fs::Metadata) -> String {
        use std::os::unix::fs::MetadataExt;
        format!("{}:{}", meta.len(), meta.mtime())
    }
    fn list(dir: &Path, rel: &Path, out: &mut Vec<(String, String)>, depth: usize) -> Result<()> {
        anyhow::ensure!(depth < 64, "{} is nested too deeply", dir.display());
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = rel.join(entry.file_name());
            let text = name.to_string_lossy().to_string();
            let kind = entry.file_type()?;
            anyhow::ensure!(
                out.len() < SYSTEM_ENTRIES,
                "{} holds more than {SYSTEM_ENTRIES} entries, too many to key",
                dir.display()
            );
            if kind.is_dir() {
                out.push((text, "dir".to_string()));
                list(&entry.path(), &name, out, depth + 1)?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                out.push((text, format!("link:{}", target.to_string_lossy())));
            } else if kind.is_file() {
                out.push((text, format!("file:{}", stamp(&entry.metadata()?))));
            } else {
                out.push((text, "special".to_string()));
            }
        }
        Ok(())
    }
    let meta = std::fs::metadata(path)?;
    let mut listing = Vec::new();
    if meta.is_dir() {
        list(path, Path::new(""), &mut listing, 0)?;
    } else {
        listing.push((String::new(), format!("file:{}", stamp(&meta))));
    }
    listing.sort();
    let mut tree = blake3::Hasher::new();
    tree.update(b"kache-system-v1\0");
    for (name, state) in &listing {
        tree.update(&(name.len() as u64).to_le_bytes());
        tree.update(name.as_bytes());
        tree.update(&(state.len() as u64).to_le_bytes());
        tree.update(state.as_bytes());
    }
    Ok(format!("stat:{}", tree.finalize().to_hex()))
}

/// The state of every file of the package at `package`, as cargo's default
/// build-script rule watches it (see [`Scope`]).
pub(super) fn package_state(
    package: &Path,
    store: &Store,
    hasher: &mut HashCache,
) -> Result<String> {
    tree_state(package, Scope::Package, store, hasher)
}

/// `tree:<blake3>` over every keyed entry below `root` (see [`Scope`]).
fn tree_state(root: &Path, scope: Scope, store: &Store, hasher: &mut HashCache) -> Result<String> {
    let mut listing = Vec::new();
    let tree = Tree {
        canonical: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
        scope,
    };
    walk(&tree, root, Path::new(""), store, hasher, &mut listing, 0)?;
    listing.sort();
    let mut tree = blake3::Hasher::new();
    tree.update(match scope {
        Scope::Declared => b"kache-tree-v2\0".as_slice(),
        Scope::Package => b"kache-package-v2\0".as_slice(),
    });
    for (name, hash) in &listing {
        tree.update(&(name.len() as u64).to_le_bytes());
        tree.update(name.as_bytes());
        tree.update(hash.as_bytes());
    }
    Ok(format!("tree:{}", tree.finalize().to_hex()))
}

/// The tree a [`walk`] keys.
struct Tree {
    /// Its root, symlinks resolved: a link to a folder below it is not
    /// walked again.
    canonical: PathBuf,
    scope: Scope,
}

/// Every entry below `dir` that the tree's scope keys, by relative name:
/// files with their hash, directories (so an empty new one counts) and
/// symlinks by target and what they point to (see [`Scope`]).
fn walk(
    tree: &Tree,
    dir: &Path,
    rel: &Path,
    store: &Store,
    hasher: &mut HashCache,
    out: &mut Vec<(String, String)>,
    depth: usize,
) -> Result<()> {
    // A symlink loop through an outside folder, or a tree too deep to be
    // an input folder.
    anyhow::ensure!(depth < 64, "{} is nested too deeply", dir.display());
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let kind = entry.file_type()?;
        let path = entry.path();
        if tree.scope == Scope::Package {
            let text_name = file_name.to_string_lossy();
            if NOT_PACKAGE_FILES.contains(&text_name.as_ref())
                || (rel.as_os_str().is_empty() && text_name == "target")
            {
                continue;
            }
            anyhow::ensure!(
                out.len() < PACKAGE_ENTRIES,
                "{} holds more than {PACKAGE_ENTRIES} files, too many to key what its build script may read",
                dir.display()
            );
        }
        let name = rel.join(&file_name);
        let text = name.to_string_lossy().to_string();
        if kind.is_dir() {
            out.push((text, "dir".to_string()));
            walk(tree, &path, &name, store, hasher, out, depth + 1)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path)?;
            let state = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => hasher.hash(store, &path)?.hash,
                Ok(meta) if meta.is_dir() => {
                    let inside = std::fs::canonicalize(&path)
                        .is_ok_and(|real| real.starts_with(&tree.canonical));
                    if inside { "dir inside" } else { "dir" }.to_string()
                }
                Ok(_) => "special".to_string(),
                Err(_) => "dangling".to_string(),
            };
            let walk_it = state == "dir";
            out.push((text, format!("link:{}:{state}", target.to_string_lossy())));
            if walk_it {
                walk(tree, &path, &name, store, hasher, out, depth + 1)?;
            }
        } else if kind.is_file() {
            out.push((text, hasher.hash(store, &path)?.hash));
        } else {
            // A FIFO, socket or device: keyed by its kind, never read
            // (reading a FIFO would hang the build).
            out.push((text, "special".to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_folder_is_keyed_by_names_sizes_and_mtimes_without_reading_content() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("include");
        std::fs::create_dir_all(tree.join("openssl")).unwrap();
        let header = tree.join("openssl/opensslv.h");
        std::fs::write(&header, "#define V 3\n").unwrap();
        let set_mtime = |secs: u64| {
            let file = std::fs::File::options().write(true).open(&header).unwrap();
            file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        set_mtime(1_700_000_000);
        let first = system_state(&tree).unwrap();
        assert!(first.starts_with("stat:"));
        assert_eq!(first, system_state(&tree).unwrap(), "stable");
        // An upgrade: new content, a new size or mtime.
        std::fs::write(&header, "#define V 30\n").unwrap();
        set_mtime(1_700_000_000);
        let resized = system_state(&tree).unwrap();
        assert_ne!(first, resized, "a new size");
        set_mtime(1_700_000_100);
        let touched = system_state(&tree).unwrap();
        assert_ne!(resized, touched, "a new mtime");
        std::fs::write(tree.join("new.h"), "").unwrap();
        let added = system_state(&tree).unwrap();
        assert_ne!(touched, added, "a new file");
        std::os::unix::fs::symlink("openssl", tree.join("ssl")).unwrap();
        assert_ne!(added, system_state(&tree).unwrap(), "a new symlink");
        assert!(is_system(Path::new("/usr/include")));
        assert!(is_system(Path::new("/usr/lib/x86_64-linux-gnu")));
        assert!(!is_system(Path::new("/usr/libexec")));
        assert!(!is_system(Path::new("/home/me/include")));
    }

    #[test]
    fn a_declared_folder_changes_with_a_new_file_an_edit_or_a_linked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let mut hasher = HashCache::default();
        let tree = dir.path().join("migrations");
        let outside = dir.path().join("shared");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(tree.join("1.sql"), "a").unwrap();
        std::fs::write(outside.join("x.sql"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("linked")).unwrap();
        let mut state = || state_of(&tree, &store, &mut hasher).unwrap();
        let first = state();
        assert!(first.starts_with("tree:"));
        assert_eq!(first, state(), "the same tree hashes the same");
        std::fs::write(tree.join("2.sql"), "b").unwrap();
        let added = state();
        assert_ne!(first, added, "a new file");
        std::fs::write(tree.join("2.sql"), "c").unwrap();
        let edited = state();
        assert_ne!(added, edited, "an edited file");
        std::fs::write(outside.join("x.sql"), "y").unwrap();
        assert_ne!(edited, state(), "a file inside a linked folder");
        assert_eq!(
            state_of(&dir.path().join("nope"), &store, &mut HashCache::default()).unwrap(),
            "absent"
        );
    }
}
