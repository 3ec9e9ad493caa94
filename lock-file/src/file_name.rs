//! Lock names to lease file names: readable, safe inside the lock directory, and distinct.
//!
//! A lease file is named `<readable>-<hash>.lease`:
//!
//! - `<readable>` is the first [`READABLE_MAX`] bytes of the name with every byte outside
//!   `[A-Za-z0-9_-]` replaced by `_` (and a leading `-` too, so no file name looks like a
//!   command-line option). It has no dot and no slash, so a name can never climb out of the
//!   lock directory or hide itself; it only helps a human find a lock's file.
//! - `<hash>` is 32 lowercase hex digits of SHA-256 of the name's exact bytes. It is what
//!   keeps different names in different files: `a/b` and `a_b`, `A` and `a` (even on a
//!   case-insensitive filesystem, because the hex is lowercase and differs), `é` and `e◌́`.
//!
//! File names are at most 79 bytes, far below the usual 255-byte limit, whatever the name.

use lock_core::LockName;
use sha2::{Digest, Sha256};

/// The extension of every lease file.
pub(crate) const LEASE_SUFFIX: &str = ".lease";

/// How many bytes of the name are kept, sanitized, at the start of the file name.
const READABLE_MAX: usize = 40;

/// How many bytes of the SHA-256 digest are written (as twice as many hex digits).
const HASH_BYTES: usize = 16;

/// The file name (no directory) of `name`'s lease file.
pub(crate) fn lease_file_name(name: &LockName) -> String {
    let bytes = name.as_str().as_bytes();
    let mut out = String::with_capacity(READABLE_MAX + 2 + 2 * HASH_BYTES + LEASE_SUFFIX.len());
    for (i, &b) in bytes.iter().take(READABLE_MAX).enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && i > 0);
        out.push(if keep { char::from(b) } else { '_' });
    }
    out.push('-');
    let digest = Sha256::digest(bytes);
    lock_core::backend_kit::hex::push_lower(&mut out, &digest[..HASH_BYTES]);
    out.push_str(LEASE_SUFFIX);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn file_name(name: &str) -> String {
        lease_file_name(&LockName::new(name).unwrap())
    }

    #[test]
    fn readable_part_keeps_safe_bytes_only() {
        assert!(file_name("jobs-nightly_1").starts_with("jobs-nightly_1-"));
        assert!(file_name("../../etc/passwd").starts_with("______etc_passwd-"));
        assert!(file_name("-rf").starts_with("_rf-"), "no leading dash");
        for name in [
            "..",
            ".",
            "/",
            "a/b",
            "\\..\\x",
            "tab\tnew\nline",
            "日本語",
            "*?<>|:\"",
        ] {
            let f = file_name(name);
            let stem = f.strip_suffix(LEASE_SUFFIX).unwrap();
            assert!(
                stem.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name:?} -> {f:?}"
            );
        }
    }

    #[test]
    fn hash_is_lowercase_hex_of_the_exact_bytes() {
        let f = file_name("a");
        let hex = &f[2..2 + 32];
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(
            hex, "ca978112ca1bbdcafac231b39a23dc4d",
            "sha256(\"a\") prefix"
        );
    }

    #[test]
    fn long_names_give_short_file_names() {
        for name in ["z".repeat(256), "é".repeat(128)] {
            assert!(file_name(&name).len() <= 79, "{}", file_name(&name).len());
        }
    }

    #[test]
    fn similar_names_get_distinct_files() {
        let names = [
            "a",
            "A",
            "a_b",
            "a/b",
            "a b",
            "a.b",
            "a-b",
            "caf\u{e9}",
            "cafe\u{301}",
            "Straße",
            "STRASSE",
            "strasse",
        ];
        let files: HashSet<String> = names.iter().map(|n| file_name(n)).collect();
        assert_eq!(files.len(), names.len());
        let lowercase: HashSet<String> = files.iter().map(|f| f.to_lowercase()).collect();
        assert_eq!(
            lowercase.len(),
            names.len(),
            "distinct on case-insensitive filesystems"
        );
    }
}
