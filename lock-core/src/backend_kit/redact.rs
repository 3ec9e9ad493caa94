//! Store URLs as they appear in messages and logs: without the password.

use std::borrow::Cow;

/// `url` with any `user:password@` replaced by `***@`, and the value of a `password=` query
/// option replaced by `***`, for messages and logs.
///
/// ```
/// use lock_core::backend_kit::redact_url;
///
/// assert_eq!(redact_url("redis://app:s3cret@cache:6379/2"), "redis://***@cache:6379/2");
/// assert_eq!(redact_url("postgres://db/app?password=s3cret&x=1"), "postgres://db/app?password=***&x=1");
/// assert_eq!(redact_url("sqlite:///var/lib/locks.db"), "sqlite:///var/lib/locks.db");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let mut shown = Cow::Borrowed(url);
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            shown = Cow::Owned(format!("{scheme}://***{}", &rest[at..]));
        }
    }
    match hide_query_password(&shown) {
        Some(hidden) => Cow::Owned(hidden),
        None => shown,
    }
}

/// The URL with every `password=` query value replaced, or `None` if it has none.
fn hide_query_password(url: &str) -> Option<String> {
    let (head, query) = url.split_once('?')?;
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut hidden = false;
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                hidden = true;
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    hidden.then(|| {
        let mut out = format!("{head}?{}", pairs.join("&"));
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        out
    })
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
            (
                "postgres://u:p@h/db?sslmode=require&PASSWORD=x#f",
                "postgres://***@h/db?sslmode=require&PASSWORD=***#f",
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
            "postgres://h/db?passwordless=1",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
