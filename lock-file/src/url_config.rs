//! `file://` URLs: where the lock directory is and how to open it.

use std::path::PathBuf;
use std::time::Duration;

use lock_core::{LockError, Result};
use url::Url;

use crate::io_error::BACKEND;
use crate::options::FileOptions;

/// The URL schemes this backend accepts.
pub const URL_SCHEMES: &[&str] = &["file"];

const USAGE: &str = "use file:///absolute/path/to/lock-dir, optionally with ?sync=true \
                     and/or busy_timeout_ms=<milliseconds>";

/// The directory and options a URL names.
pub(crate) fn parse(text: &str) -> Result<(PathBuf, FileOptions)> {
    let bad =
        |why: String| LockError::config(BACKEND, format!("bad lock URL {text:?}: {why}; {USAGE}"));
    let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if !URL_SCHEMES.contains(&url.scheme()) {
        return Err(bad(format!(
            "the file backend does not handle `{}://`",
            url.scheme()
        )));
    }
    if url
        .host_str()
        .is_some_and(|h| !h.is_empty() && h != "localhost")
    {
        return Err(bad(
            "a lock directory must be local: remove the host name".to_owned()
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("unexpected #fragment".to_owned()));
    }
    let dir = url
        .to_file_path()
        .map_err(|()| bad("it does not name an absolute local path".to_owned()))?;
    let mut options = FileOptions::default();
    for (key, value) in url.query_pairs() {
        match &*key {
            "sync" => {
                options.sync_writes = parse_bool(&value)
                    .ok_or_else(|| bad(format!("sync={value:?} is not true or false")))?;
            }
            "busy_timeout_ms" => {
                let ms: u64 = value.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                    bad(format!(
                        "busy_timeout_ms={value:?} is not a positive integer"
                    ))
                })?;
                options.busy_timeout = Duration::from_millis(ms);
            }
            other => return Err(bad(format!("unknown option `{other}`"))),
        }
    }
    Ok((dir, options))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_options() {
        let (dir, opts) =
            parse("file:///var/lib/my%20locks?sync=true&busy_timeout_ms=2500").unwrap();
        assert_eq!(dir, PathBuf::from("/var/lib/my locks"));
        assert!(opts.sync_writes);
        assert_eq!(opts.busy_timeout, Duration::from_millis(2500));
        let (dir, opts) = parse("file://localhost/tmp/locks").unwrap();
        assert_eq!(dir, PathBuf::from("/tmp/locks"));
        assert_eq!(opts, FileOptions::default());
    }

    #[test]
    fn bad_urls_are_config_errors_that_show_the_format() {
        for bad in [
            "not a url",
            "redis://localhost/0",
            "file://otherhost/tmp/locks",
            "file:///tmp/locks?sync=maybe",
            "file:///tmp/locks?busy_timeout_ms=0",
            "file:///tmp/locks?synch=true",
            "file:///tmp/locks#frag",
        ] {
            match parse(bad) {
                Err(LockError::Config { detail, .. }) => {
                    assert!(detail.contains("file:///absolute/path"), "{bad}: {detail}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
