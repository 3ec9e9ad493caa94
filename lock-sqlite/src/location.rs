//! The checks made before a database file is opened.

use lock_core::{LockError, Result};

use crate::BACKEND;
use crate::options::SqliteOptions;

/// Checks, before SQLite opens `path`, the mistakes SQLite would only report as "unable to
/// open database file": a missing directory, a missing file that must not be created.
pub(crate) fn check_path(opts: &SqliteOptions) -> Result<()> {
    let path = opts.path.as_path();
    let shown = path.display();
    if path.as_os_str().is_empty() || path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(LockError::config(
            BACKEND,
            "the database path is empty or contains a NUL byte; give the path of a SQLite file",
        ));
    }
    if path.is_dir() {
        return Err(LockError::config(
            BACKEND,
            format!("{shown} is a directory; give the path of a SQLite file inside it"),
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(LockError::config(
            BACKEND,
            format!(
                "the directory {} of database {shown} does not exist; create it first \
                 (lock-sqlite creates the database file, never its directory)",
                dir.display()
            ),
        ));
    }
    if (opts.read_only || !opts.create_if_missing) && !path.exists() {
        let how = if opts.read_only {
            "it was opened read-only (mode=ro)"
        } else {
            "mode=rw forbids creating it"
        };
        return Err(LockError::config(
            BACKEND,
            format!("database {shown} does not exist and {how}; check the path"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn path_checks() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |path: &Path| SqliteOptions::new(path);
        let new_db = dir.path().join("new.db");
        assert!(check_path(&opts(&new_db)).is_ok());
        let missing_dir = dir.path().join("nope/new.db");
        let e = check_path(&opts(&missing_dir)).unwrap_err().to_string();
        assert!(e.contains("does not exist; create it first"), "{e}");
        let e = check_path(&opts(dir.path())).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_path(&opts(&new_db).with_read_only(true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("read-only"), "{e}");
        assert!(check_path(&opts(Path::new(""))).is_err());
    }
}
