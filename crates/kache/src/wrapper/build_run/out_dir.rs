//! A run's `OUT_DIR`: walking it to store it, the paths a restore may
//! write, and unsharing files still linked to blobs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::MAX_FILES;

/// A manifest path as a relative path that stays inside `OUT_DIR`.
pub(super) fn confined(rel: &str) -> Result<PathBuf> {
    let path = Path::new(rel);
    if rel.is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!("{rel:?} is not a path inside OUT_DIR");
    }
    Ok(path.to_path_buf())
}

/// Every regular file below `dir` by relative path, and every directory.
/// A symlink or special file makes the run unstorable.
pub(super) fn walk_out_dir(
    dir: &Path,
    rel: &Path,
    files: &mut Vec<String>,
    dirs: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    anyhow::ensure!(depth < 64, "{} is nested too deeply", dir.display());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && depth == 0 => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = rel.join(entry.file_name());
        let text = name
            .to_str()
            .with_context(|| format!("{} is not UTF-8", name.display()))?
            .to_string();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            dirs.push(text);
            walk_out_dir(&entry.path(), &name, files, dirs, depth + 1)?;
        } else if kind.is_file() {
            files.push(text);
            anyhow::ensure!(files.len() <= MAX_FILES, "OUT_DIR holds too many files");
        } else {
            bail!("OUT_DIR holds {text}, which is not a regular file or directory");
        }
    }
    Ok(())
}

/// Replaces every file below `dir` that shares its inode (a hard link to a
/// blob, from a store or restore of a kache that still linked them) with a private copy, or removes
/// it when no copy can be made. An error means a shared file is left.
pub(super) fn break_links(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            break_links(&path)?;
        } else if kind.is_file() && entry.metadata()?.nlink() > 1 {
            let mut temp = path.as_os_str().to_owned();
            temp.push(".kache-unshare");
            let temp = PathBuf::from(temp);
            let copied = (|| -> std::io::Result<()> {
                std::fs::copy(&path, &temp)?;
                let mode = std::fs::metadata(&temp)?.mode() & 0o777;
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode | 0o600))?;
                std::fs::rename(&temp, &path)
            })();
            if copied.is_err() {
                // No room for a copy (a full disk): the file goes, as after
                // `cargo clean`, rather than stay writable through to a blob.
                let _ = std::fs::remove_file(&temp);
                std::fs::remove_file(&path)
                    .with_context(|| format!("unsharing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_must_stay_inside_out_dir() {
        assert!(confined("gen/a.rs").is_ok());
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "./a"] {
            assert!(confined(bad).is_err(), "{bad}");
        }
    }
}
