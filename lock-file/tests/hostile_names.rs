//! Hostile lock names stay inside the lock directory, one file each, with short file names.

mod support;

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;

use lock_core::LockBackend;
use lock_file::{FileBackend, FileOptions};
use support::{acquire, files_under, lease_files, name};

fn hostile_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "../../etc/passwd",
        "../../../../escape",
        "a/b",
        "a_b",
        "..",
        ".",
        "/",
        "/absolute/path",
        "\\..\\windows",
        "nul\u{1}ctl\u{7f}",
        "tab\tnew\nline\rcr",
        "\u{202e}rtl",
        "Lock",
        "lock",
        "LOCK",
        ".hidden",
        "name.lease",
        "-rf",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    names.push("z".repeat(256));
    names.push("z".repeat(255));
    names.push("é".repeat(128)); // 256 bytes of UTF-8
    names.push("日本語".repeat(14)); // 252 bytes
    names
}

#[tokio::test]
async fn hostile_names_create_files_only_directly_inside_the_lock_dir() {
    let root = tempfile::tempdir().unwrap();
    // Four levels down, so `../../../../escape` would land inside `root` if it escaped.
    let dir = root.path().join("a/b/c/locks");
    let backend = FileBackend::connect_with(FileOptions::new(&dir))
        .await
        .unwrap();
    let names = hostile_names();
    let mut leases = Vec::new();
    for (i, text) in names.iter().enumerate() {
        leases.push(acquire(&backend, &name(text), &format!("h{i}")).await);
    }

    let canonical_dir = dir.canonicalize().unwrap();
    let everything = files_under(root.path());
    let holds_dir = canonical_dir.join(".holds");
    for file in &everything {
        let parent = file.parent().unwrap().canonicalize().unwrap();
        assert!(
            parent == canonical_dir || parent == holds_dir,
            "{file:?} is outside the lock directory (and its hold directory)"
        );
        let file_name = file.file_name().unwrap().as_bytes();
        assert!(
            file_name.len() <= 255,
            "{file:?} has a file name over 255 bytes"
        );
    }
    let leases_on_disk = lease_files(&dir);
    assert_eq!(
        leases_on_disk.len(),
        names.len(),
        "one lease file per name: {leases_on_disk:?}"
    );
    assert_eq!(
        everything.len(),
        names.len() + 2,
        "only lease files, the directory's note and this process's hold file: {everything:?}"
    );
    let holds = everything
        .iter()
        .filter(|f| f.parent().unwrap().canonicalize().unwrap() == holds_dir)
        .count();
    assert_eq!(holds, 1, "one hold file: {everything:?}");

    let paths: HashSet<_> = names.iter().map(|n| backend.lease_file(&name(n))).collect();
    assert_eq!(paths.len(), names.len(), "no two names share a file");
    let folded: HashSet<_> = paths
        .iter()
        .map(|p| p.to_string_lossy().to_lowercase())
        .collect();
    assert_eq!(
        folded.len(),
        names.len(),
        "distinct even on a case-insensitive filesystem"
    );

    for (i, lease) in leases.iter().enumerate() {
        let info = backend.inspect(&lease.name).await.unwrap().expect("held");
        assert_eq!(
            info.label,
            format!("h{i}"),
            "{:?} shares a slot",
            lease.name
        );
        assert_eq!(info.name, lease.name, "the full name is kept");
        assert!(backend.release(lease).await.unwrap());
    }
}

#[tokio::test]
async fn file_names_are_readable_for_plain_names() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let path = backend.lease_file(&name("nightly-report"));
    let file_name = path.file_name().unwrap().to_str().unwrap();
    assert!(file_name.starts_with("nightly-report-"), "{file_name}");
    assert!(file_name.ends_with(".lease"), "{file_name}");
    assert_eq!(path.parent().unwrap(), backend.dir());
}
