//! Store URLs as they appear in messages and logs: without the password.

use std::borrow::Cow;

/// `url` with any `user:password@` replaced by `***@`, for messages and logs.
///
/// ```
/// assert_eq!(lock_core::redact_url("redis://app:s3cret@cache:6379/2"), "redis://***@cache:6379/2");
/// assert_eq!(lock_core::redact_url("sqlite:///var/lib/locks.db"), "sqlite:///var/lib/locks.db");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{scheme}://***{}", &rest[at..])),
        None => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden() {
        for (url, shown) in [
            ("redis://user:secret@host:6379/0", "redis://***@host:6379/0"),
            ("redis://:secret@host", "redis://***@host"),
            ("rediss://a:p@ss@h:1?x=@y", "rediss://***@h:1?x=@y"),
            (
                "redis+cluster://u:p@h1:1,h2:2",
                "redis+cluster://***@h1:1,h2:2",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "redis://host:6379",
            "sqlite:///tmp/a@b.db",
            "file:///locks?sync=true",
            "no-scheme@here",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
