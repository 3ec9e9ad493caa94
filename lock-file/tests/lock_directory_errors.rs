//! A missing, wrong or unwritable lock directory is a clear `Config` error, including when
//! the directory disappears while in use.

mod support;

use std::path::Path;

use lock_core::{Holder, LockBackend, LockError, Result};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

fn config_detail<T: std::fmt::Debug>(result: Result<T>, what: &str) -> String {
    match result {
        Err(LockError::Config { backend, detail }) => {
            assert_eq!(backend, "file", "{what}");
            detail
        }
        other => panic!("{what}: expected a Config error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_directory_is_a_config_error_that_says_how_to_create_it() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("nope");
    let detail = config_detail(
        FileBackend::connect_with(FileOptions::new(&missing).with_create_if_missing(false)).await,
        "missing dir",
    );
    assert!(detail.contains("does not exist"), "{detail}");
    assert!(detail.contains("mkdir"), "{detail}");
    assert!(!missing.exists(), "open must not create it");
}

#[tokio::test]
async fn a_regular_file_is_not_a_lock_directory() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let detail = config_detail(
        FileBackend::connect_with(FileOptions::new(&file).with_create_if_missing(false)).await,
        "regular file",
    );
    assert!(detail.contains("not a directory"), "{detail}");
    let detail = config_detail(
        FileBackend::connect_with(FileOptions::new(&file)).await,
        "create over a regular file",
    );
    assert!(detail.contains(&file.display().to_string()), "{detail}");
}

/// sysfs refuses to create regular files for every user, root included (EACCES, or EROFS
/// where /sys is mounted read-only), so this works as root and as a normal user alike.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_unwritable_directory_is_a_config_error_even_for_root() {
    let unwritable = Path::new("/sys/kernel");
    assert!(unwritable.is_dir(), "this test needs sysfs mounted at /sys");
    let detail = config_detail(
        FileBackend::connect_with(FileOptions::new(unwritable).with_create_if_missing(false)).await,
        "unwritable dir",
    );
    assert!(detail.contains("not writable"), "{detail}");
    assert!(detail.contains("write access"), "{detail}");
    let detail = config_detail(
        FileBackend::connect_with(FileOptions::new(unwritable.join("locks"))).await,
        "create under an unwritable dir",
    );
    assert!(detail.contains("cannot create lock directory"), "{detail}");
}

#[tokio::test]
async fn a_directory_deleted_mid_run_fails_every_operation_with_a_config_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("locks");
    let backend = FileBackend::connect_with(FileOptions::new(&dir))
        .await
        .unwrap();
    let n = name("doomed");
    let lease = acquire(&backend, &n, "holder").await;
    std::fs::remove_dir_all(&dir).unwrap();

    let who = Holder::current("after");
    let details = [
        config_detail(backend.try_acquire(&n, &who, LONG_TTL).await, "try_acquire"),
        config_detail(
            backend.try_acquire(&name("fresh"), &who, LONG_TTL).await,
            "try_acquire new",
        ),
        config_detail(backend.heartbeat(&lease, LONG_TTL).await, "heartbeat"),
        config_detail(backend.release(&lease).await, "release"),
        config_detail(backend.inspect(&n).await, "inspect"),
        config_detail(backend.force_release(&n).await, "force_release"),
        config_detail(backend.list("").await, "list"),
    ];
    for detail in details {
        assert!(detail.contains("no longer exists"), "{detail}");
        assert!(detail.contains(&dir.display().to_string()), "{detail}");
    }
    assert!(!dir.exists(), "the directory is not silently recreated");

    // Once an operator recreates it, the same backend works again, with higher fences.
    std::fs::create_dir(&dir).unwrap();
    let next = acquire(&backend, &n, "next").await;
    assert!(next.fence > lease.fence);
    assert!(backend.release(&next).await.unwrap());
}

#[tokio::test]
async fn connect_creates_the_directory_and_reads_options_from_the_url() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("via url/locks");
    let url = url::Url::from_file_path(&dir).unwrap();
    assert!(url.as_str().contains("%20"), "{url}");
    let backend = lock_file::connect(&format!("{url}?sync=true&busy_timeout=1500ms"))
        .await
        .unwrap();
    assert!(dir.is_dir());
    assert_eq!(backend.dir(), dir.canonicalize().unwrap());
    assert!(backend.options().sync_writes);
    assert_eq!(
        backend.options().busy_timeout,
        std::time::Duration::from_millis(1500)
    );
    assert_eq!(lock_file::URL_SCHEMES, &["file"]);
    let detail = config_detail(
        lock_file::connect("file:///tmp/x?fsync=1").await,
        "bad option",
    );
    assert!(detail.contains("unknown option `fsync`"), "{detail}");
}

#[tokio::test]
async fn a_symlink_in_place_of_a_lease_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("locks");
    let backend = FileBackend::connect_with(FileOptions::new(&dir))
        .await
        .unwrap();
    let n = name("linked");
    let target = root.path().join("outside");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, backend.lease_file(&n)).unwrap();
    let detail = config_detail(
        backend
            .try_acquire(&n, &Holder::current("x"), LONG_TTL)
            .await,
        "symlinked lease file",
    );
    assert!(detail.contains("symbolic link"), "{detail}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}
