//! The shared-filesystem backend (`type = "fs"`, `path = …`, e.g. an NFS
//! mount): the same object names as files below a directory. A write goes
//! to a temporary file in the target directory and is renamed into place,
//! so a reader never sees half an object.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;

use crate::storage::{ObjectStorage, RemoteError, Result};

/// Opens (creating it if needed) the store rooted at `root`.
pub fn open(root: &Path) -> Result<ObjectStorage> {
    std::fs::create_dir_all(root).map_err(|e| {
        RemoteError::Config(format!(
            "creating the shared cache directory {}: {e}",
            root.display()
        ))
    })?;
    let store = LocalFileSystem::new_with_prefix(root)
        .map_err(|e| RemoteError::Config(format!("{}: {e}", root.display())))?;
    Ok(ObjectStorage::new(
        Arc::new(store),
        format!("fs:{}", root.display()),
    ))
}
