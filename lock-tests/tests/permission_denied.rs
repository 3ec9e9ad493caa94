//! Permission denied, end to end: a `lock-worker` process that may not use a lock directory
//! or SQLite database fails with a typed `Config` error that says what to fix, never a
//! panic, and a lease the store's owner holds on another name in the same store is intact.
//!
//! Root is not stopped by file permissions, so as root the worker runs as `nobody` (uid and
//! gid 65534) against a store owned by root with modes 0700 (directory) and 0600 (files);
//! as any other user the store is made mode 000 instead. If that does not deny access
//! either (a process with `CAP_DAC_OVERRIDE`), the test fails and says so.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leaselock::{Holder, LockBackend, LockName};
use lock_testkit::Backend;
use support::{Report, Store, Worker, worker_program};

const TTL: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(20);
/// `nobody` and `nogroup` on Linux.
const NOBODY: u32 = 65534;
/// The worker's exit code for an error.
const EXIT_ERROR: i32 = 2;

/// How the worker is kept out of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denial {
    /// We are root: the worker runs as `nobody`; the store stays root's, 0700 and 0600.
    OtherUser,
    /// We are not root: the worker runs as us; the store is made mode 000.
    NoPermissions,
}

impl Denial {
    fn for_this_user() -> Self {
        // SAFETY: geteuid(2) takes nothing and cannot fail.
        #[allow(unsafe_code)]
        let euid = unsafe { libc::geteuid() };
        if euid == 0 {
            Self::OtherUser
        } else {
            Self::NoPermissions
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The files and directories that make up the store, with the mode each keeps as root's.
fn store_paths(store: &Store) -> Vec<(PathBuf, u32)> {
    match store.kind {
        Backend::File => vec![(store.path("locks"), 0o700)],
        Backend::Sqlite | Backend::SqliteSqlx => ["locks.db", "locks.db-wal", "locks.db-shm"]
            .into_iter()
            .map(|file| (store.path(file), 0o600))
            .filter(|(path, _)| path.exists())
            .collect(),
        other => unreachable!("{other} has no file permissions"),
    }
}

/// Makes `path` and every directory above it traversable by others, or fails saying which
/// one is not (the worker running as `nobody` must reach its program and its store).
fn assert_reachable_by_others(path: &Path) {
    for dir in path.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .permissions()
            .mode();
        assert!(
            mode & 0o001 != 0,
            "{} (mode {:o}) is not traversable by uid {NOBODY}, so a worker running as that \
             user cannot reach {}; point TMPDIR at a directory every user can enter",
            dir.display(),
            mode & 0o7777,
            path.display()
        );
    }
}

/// The worker's program where `nobody` can run it: a link (or copy) in the store's
/// directory, since the build directory may be private (under /root, say).
fn program_for_nobody(store: &Store) -> PathBuf {
    let program = store.path("lock-worker");
    if std::fs::hard_link(worker_program(), &program).is_err() {
        std::fs::copy(worker_program(), &program).expect("copy lock-worker");
    }
    set_mode(&program, 0o755);
    assert_reachable_by_others(&program);
    program
}

/// The store, with the worker kept out of it; its owner's modes come back when this is
/// dropped, also when the test fails, so the temporary directory can be removed.
struct Denied<'a> {
    store: &'a Store,
    /// The program the worker runs.
    program: PathBuf,
}

impl<'a> Denied<'a> {
    fn new(store: &'a Store, denial: Denial) -> Self {
        let program = match denial {
            Denial::OtherUser => {
                // The store's directory: others may enter it (to reach the program and the
                // store's own paths), not list or change it.
                set_mode(store.dir(), 0o711);
                for (path, mode) in store_paths(store) {
                    set_mode(&path, mode);
                }
                program_for_nobody(store)
            }
            Denial::NoPermissions => worker_program().to_owned(),
        };
        let denied = Self { store, program };
        if denial == Denial::NoPermissions {
            for (path, _) in store_paths(store) {
                set_mode(&path, 0o000);
                let readable = if path.is_dir() {
                    std::fs::read_dir(&path).is_ok()
                } else {
                    std::fs::File::open(&path).is_ok()
                };
                assert!(
                    !readable,
                    "{} is mode 000 and still readable: this process bypasses file \
                     permissions (CAP_DAC_OVERRIDE?) without being root, so this test can \
                     neither switch users nor deny access; run it as root or as a plain user",
                    path.display()
                );
            }
        }
        denied
    }
}

impl Drop for Denied<'_> {
    fn drop(&mut self) {
        for (path, mode) in store_paths(self.store) {
            // No panic here: this may run while a failed test unwinds.
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        }
    }
}

/// What the error message must say for each backend: what failed, where, and what to do.
fn expected_words(kind: Backend) -> &'static [&'static str] {
    match kind {
        Backend::File => &["not writable", "give this user write access"],
        Backend::Sqlite | Backend::SqliteSqlx => &["cannot open database", "locks.db", "writable"],
        other => unreachable!("{other} has no file permissions"),
    }
}

async fn a_user_without_access_gets_a_config_error_and_the_owner_keeps_its_lease(kind: Backend) {
    let store = Store::new(kind);
    let owner = store.backend().await;
    let bystander = LockName::new(store.name("bystander")).unwrap();
    let kept = owner
        .try_acquire(&bystander, &Holder::current("owner"), TTL)
        .await
        .unwrap()
        .expect("the bystander name is free");
    let denial = Denial::for_this_user();
    let denied = Denied::new(&store, denial);
    let denied_name = store.name("denied");
    let mut command = store.command(
        &denied.program,
        &store.url,
        "hold",
        &denied_name,
        TTL,
        "denied",
    );
    command.current_dir(store.dir());
    if denial == Denial::OtherUser {
        command.uid(NOBODY).gid(NOBODY);
    }
    let mut worker = Worker::start(&mut command);
    let line = worker.line(PATIENCE).await;
    let code = worker.exit_code(PATIENCE).await;
    drop(denied);

    let Some(message) = line.strip_prefix("error Config ") else {
        panic!("{denial:?}: the worker said {line:?}, not a Config error")
    };
    assert_eq!(code, Some(EXIT_ERROR), "{denial:?}: {line}");
    for word in expected_words(kind) {
        assert!(
            message.contains(word),
            "{denial:?}: {word:?} is not in {message:?}"
        );
    }

    // The owner's lease on the other name is as it was, and still the owner's to renew
    // and release; the refused worker took nothing.
    let info = owner
        .inspect(&bystander)
        .await
        .unwrap()
        .expect("still held");
    assert_eq!(
        (info.fence, info.label.as_str()),
        (kept.fence, "owner"),
        "{info:?}"
    );
    let denied = LockName::new(&denied_name).unwrap();
    assert!(owner.inspect(&denied).await.unwrap().is_none());
    owner.heartbeat(&kept, TTL).await.unwrap();
    assert!(owner.release(&kept).await.unwrap());
    Report::new("permission_denied", kind)
        .field("processes", 2)
        .field("faults", 1)
        .field(
            "fault",
            match denial {
                Denial::OtherUser => "other-user",
                Denial::NoPermissions => "mode-000",
            },
        )
        .emit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file() {
    a_user_without_access_gets_a_config_error_and_the_owner_keeps_its_lease(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    a_user_without_access_gets_a_config_error_and_the_owner_keeps_its_lease(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sqlx() {
    a_user_without_access_gets_a_config_error_and_the_owner_keeps_its_lease(Backend::SqliteSqlx)
        .await;
}
