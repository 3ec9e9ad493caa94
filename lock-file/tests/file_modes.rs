//! Lease files are private to their user: 0600, and a created directory is 0700.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use lock_core::LockBackend;
use lock_file::{FileBackend, FileOptions};
use support::{acquire, files_under, name};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn lease_files_are_created_0600_and_the_directory_0700() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("new/locks");
    let backend = FileBackend::connect_with(FileOptions::new(&dir))
        .await
        .unwrap();
    assert_eq!(mode(&dir), 0o700, "created lock directory");
    assert_eq!(mode(&root.path().join("new")), 0o700, "created parent");
    for text in ["a", "b/c", "日本"] {
        let lease = acquire(&backend, &name(text), "mode").await;
        assert!(backend.release(&lease).await.unwrap());
    }
    let files = files_under(&dir);
    assert_eq!(
        files.len(),
        5,
        "three lease files, the note and this process's hold file: {files:?}"
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{file:?}");
    }
    assert_eq!(mode(backend.holds_dir()), 0o700, "created hold directory");
    assert_eq!(
        backend.holds_dir(),
        dir.canonicalize().unwrap().join(".holds")
    );
}

#[tokio::test]
async fn files_stay_after_release_with_the_holder_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("kept");
    let lease = acquire(&backend, &n, "kept").await;
    assert!(backend.release(&lease).await.unwrap());
    let text = std::fs::read_to_string(backend.lease_file(&n)).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["name"], "kept");
    assert_eq!(record["fence"], lease.fence);
    assert_eq!(record["holders"], serde_json::json!([]), "{text}");
    assert!(
        !text.contains(&lease.holder.token.to_hex()),
        "the token is gone: {text}"
    );
}
