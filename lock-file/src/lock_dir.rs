//! The lock directory: checking it, finding and opening its lease files, and the
//! in-process change signal shared by every backend opened on it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use lock_core::backend_kit::ReleaseLog;
use lock_core::backend_kit::hold::ProcessHold;
use lock_core::{LockError, LockName, Result};

use crate::file_name::{LEASE_SUFFIX, lease_file_name};
use crate::flock::{self, LockKind};
use crate::io_error::{BACKEND, io_error};
use crate::lease_file::LeaseFile;
use crate::options::FileOptions;
use crate::written::Written;

/// A file every opened lock directory gets, both to prove the directory is writable and to
/// tell a human what the directory is.
const MARKER: &str = ".lock-file";

const MARKER_TEXT: &str = "This directory holds lease files of the Rust `lock-file` crate: \
one <name>-<hash>.lease file per lock name, guarded by flock.\n\
Do not delete or rename them while processes use this directory; \
use `lockctl status` and `lockctl release --force <name>` instead.\n";

/// The lock directory's subdirectory of process holds (see
/// [`hold`](lock_core::backend_kit::hold)): one locked file per process that takes leases
/// in the directory. Its name starts with a dot, which no lease file name does (see
/// [`file_name`](crate::file_name)), and does not end in `.lease`, so it is never a lease
/// file nor listed as one.
pub(crate) const HOLDS: &str = ".holds";

/// An opened lock directory.
#[derive(Debug)]
pub(crate) struct LockDir {
    path: PathBuf,
    holds: PathBuf,
    options: FileOptions,
    changes: Arc<ReleaseLog>,
    /// This process's hold, taken at the first acquire; `None` if it could not be.
    hold: OnceLock<Option<Arc<ProcessHold>>>,
    /// Lease file paths by lock name, at most [`PATHS_CACHED`]: a name's file name hashes
    /// it (SHA-256), which took ~3,500 instructions of every acquire, release and look.
    paths: Mutex<HashMap<String, PathBuf>>,
    /// What this process last wrote to the lease files, to read back without decoding.
    written: Arc<Written>,
}

/// How many lease file paths a lock directory remembers; past that it forgets them all.
const PATHS_CACHED: usize = 256;

impl LockDir {
    /// Creates `dir` and its missing parents with mode 0700.
    pub(crate) fn create(dir: &Path) -> Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| {
            LockError::config(
                BACKEND,
                format!(
                    "cannot create lock directory {}: {e}; create it yourself \
                     (mkdir -m 700 -p {}) or choose a path this user can write",
                    dir.display(),
                    dir.display()
                ),
            )
        })
    }

    /// Opens an existing, writable directory.
    pub(crate) fn open(options: FileOptions) -> Result<Self> {
        let dir = options.dir.clone();
        let dir = dir.as_path();
        let shown = dir.display();
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(LockError::config(
                    BACKEND,
                    format!(
                        "lock directory {shown} is not a directory; point the file backend at \
                         a directory (lease files are created inside it)"
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LockError::config(
                    BACKEND,
                    format!(
                        "lock directory {shown} does not exist; create it (mkdir -m 700 -p \
                         {shown}), or let the backend create it (FileOptions::create_if_missing, or a file:// URL)"
                    ),
                ));
            }
            Err(e) => {
                return Err(LockError::config(
                    BACKEND,
                    format!(
                        "cannot access lock directory {shown}: {e}; check the path and its permissions"
                    ),
                ));
            }
        }
        write_marker(&dir.join(MARKER)).map_err(|e| {
            LockError::config(
                BACKEND,
                format!(
                    "lock directory {shown} is not writable ({e}); lease files are created and \
                     rewritten in it, so give this user write access or choose another directory"
                ),
            )
        })?;
        let path = fs::canonicalize(dir).map_err(|e| {
            LockError::config(
                BACKEND,
                format!("cannot resolve lock directory {shown}: {e}"),
            )
        })?;
        let changes = ReleaseLog::shared(&format!("file:{}", path.display()));
        Ok(Self {
            holds: path.join(HOLDS),
            path,
            options,
            changes,
            hold: OnceLock::new(),
            paths: Mutex::new(HashMap::new()),
            written: Arc::default(),
        })
    }

    /// The directory of process holds.
    pub(crate) fn holds(&self) -> &Path {
        &self.holds
    }

    /// This process's hold in the directory, taken (the hold directory and file created and
    /// the file locked) at the first call, and kept as long as this directory is open. If
    /// it cannot be taken (a read-only directory, no `flock`), `None` from then on: leases
    /// are then freed by their TTL only, as those of older builds.
    pub(crate) fn hold(&self) -> Option<&Arc<ProcessHold>> {
        self.hold
            .get_or_init(|| match ProcessHold::of_process(&self.holds) {
                Ok(hold) => Some(hold),
                Err(error) => {
                    tracing::debug!(
                        %error,
                        dir = %self.holds.display(),
                        "no process hold in the lock directory: leases of this process \
                         will be freed by their TTL only if it dies"
                    );
                    None
                }
            })
            .as_ref()
    }

    /// The directory (absolute, symlinks resolved when it was opened).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub(crate) fn options(&self) -> &FileOptions {
        &self.options
    }

    /// Releases of leases in this directory by this process.
    pub(crate) fn changes(&self) -> &ReleaseLog {
        &self.changes
    }

    /// Where `name`'s lease file is.
    pub(crate) fn lease_path(&self, name: &LockName) -> PathBuf {
        let mut paths = self.paths.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = paths.get(name.as_str()) {
            return path.clone();
        }
        if paths.len() >= PATHS_CACHED {
            paths.clear();
        }
        let path = self.path.join(lease_file_name(name));
        paths.insert(name.as_str().to_owned(), path.clone());
        path
    }

    /// Opens and locks `name`'s lease file: for [`LockKind::Exclusive`] read-write,
    /// creating it (mode 0600) if `create`; for [`LockKind::Shared`] read-only.
    /// `Ok(None)` if it does not exist and was not to be created.
    pub(crate) async fn lease_file(
        &self,
        name: &LockName,
        kind: LockKind,
        create: bool,
    ) -> Result<Option<LeaseFile>> {
        self.lease_file_at(self.lease_path(name), kind, create)
            .await
    }

    /// As [`lease_file`](Self::lease_file), for a path found in the directory.
    pub(crate) async fn lease_file_at(
        &self,
        path: PathBuf,
        kind: LockKind,
        create: bool,
    ) -> Result<Option<LeaseFile>> {
        let opened = open_options(kind == LockKind::Exclusive, create).open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create && self.path.is_dir() => {
                return Ok(None);
            }
            Err(e) => return Err(self.io_error("open", &path, e)),
        };
        let file = flock::lock(file, kind, &path, self.options.busy_timeout).await?;
        Ok(Some(LeaseFile::new(
            file,
            path,
            self.options.sync_writes,
            Arc::clone(&self.written),
        )))
    }

    /// Paths of every `*.lease` file in the directory.
    pub(crate) fn lease_paths(&self) -> Result<Vec<PathBuf>> {
        let entries = fs::read_dir(&self.path).map_err(|e| self.io_error("list", &self.path, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io_error("list", &self.path, e))?;
            if entry.file_name().to_string_lossy().ends_with(LEASE_SUFFIX) {
                paths.push(entry.path());
            }
        }
        Ok(paths)
    }

    /// Maps an I/O error; "not found" because the directory itself is gone becomes a
    /// configuration error.
    ///
    /// A directory deleted while in use is not recreated: the holders whose lease files
    /// went with it still believe they hold their locks, so handing the same names out
    /// again from a fresh directory would silently break mutual exclusion. Failing every
    /// operation instead makes those holders' heartbeats fail, so they learn they lost
    /// their leases, and an operator decides when the directory comes back.
    pub(crate) fn io_error(&self, action: &'static str, path: &Path, err: io::Error) -> LockError {
        if err.kind() == io::ErrorKind::NotFound && !self.path.is_dir() {
            return LockError::config(
                BACKEND,
                format!(
                    "lock directory {} no longer exists (deleted while in use?); every lease \
                     in it is gone. Recreate it (mkdir -m 700 -p, or reconnect with FileOptions::create_if_missing) once \
                     the processes that used it have stopped",
                    self.path.display()
                ),
            );
        }
        io_error(action, path, err)
    }
}

/// Creates `path`, an empty lease file (a lock that was never written), unless it exists.
pub(crate) fn create_empty(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            open_options(true, true).open(path).map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Options for opening a lease file: mode 0600 when created, never truncated, never
/// following a symlink planted in the directory.
fn open_options(write: bool, create: bool) -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.read(true).write(write || create).create(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    opts
}

fn write_marker(path: &Path) -> io::Result<()> {
    let mut file: File = open_options(true, true).open(path)?;
    if file.metadata()?.len() == 0 {
        file.write_all(MARKER_TEXT.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_paths_are_remembered_and_stay_right_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let lock_dir = LockDir::open(FileOptions::new(dir.path())).unwrap();
        let name = |i: usize| LockName::new(format!("job/{i}")).unwrap();
        let expected = |i: usize| lock_dir.path().join(lease_file_name(&name(i)));
        for i in 0..PATHS_CACHED * 2 + 3 {
            assert_eq!(lock_dir.lease_path(&name(i)), expected(i));
            assert_eq!(lock_dir.lease_path(&name(i)), expected(i), "remembered");
            assert_eq!(lock_dir.lease_path(&name(0)), expected(0));
        }
        let remembered = lock_dir.paths.lock().unwrap().len();
        assert!(remembered <= PATHS_CACHED, "{remembered} remembered");
    }
}
