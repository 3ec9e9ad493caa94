//! Where the database is: `sqlite:` URLs, and the checks made before a file is opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lock_core::{LockError, Result};

use crate::BACKEND;
use crate::options::{SqliteOptions, Synchronous};

/// The URL schemes this crate connects to.
pub const URL_SCHEMES: &[&str] = &["sqlite"];

const URL_HELP: &str = "use sqlite:///absolute/path.db or sqlite://relative/path.db, with \
     optional ?synchronous=normal|full, ?busy_budget=30s, ?mode=ro|rw|rwc";

/// Parses a `sqlite:` URL into a file path and options.
///
/// The path is taken from the text as written (only `%XX` escapes are decoded): a generic
/// URL parser would resolve `..` segments and lower-case a host, both wrong for a
/// relative file path.
pub(crate) fn parse_url(text: &str) -> Result<(PathBuf, SqliteOptions)> {
    let bad = |why: String| {
        LockError::config(
            BACKEND,
            format!("bad SQLite lock URL {text:?}: {why}; {URL_HELP}"),
        )
    };
    let Some((scheme, rest)) = text.split_once(':') else {
        return Err(bad("it has no scheme".into()));
    };
    if !URL_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(bad(format!("the scheme is {scheme:?}, not \"sqlite\"")));
    }
    if rest.contains('#') {
        return Err(bad("a fragment (#...) means nothing here".into()));
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // sqlite:///absolute/path.db, sqlite://relative/path.db, or sqlite:relative.db
    let path = path.strip_prefix("//").unwrap_or(path);
    let path = percent_decode(path)
        .ok_or_else(|| bad("the path has a bad %-escape or is not UTF-8".into()))?;
    if path.is_empty() || path.ends_with('/') {
        return Err(bad("it names no database file".into()));
    }
    if path == ":memory:" || path.starts_with("file:") || path.contains('\0') {
        return Err(bad(
            "in-memory databases and nested URIs are not supported: locks must live in a \
             file that every process opens"
                .into(),
        ));
    }
    let mut opts = SqliteOptions::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match (&*key, &*value) {
            ("synchronous", v) if v.eq_ignore_ascii_case("normal") => {
                opts.synchronous = Synchronous::Normal;
            }
            ("synchronous", v) if v.eq_ignore_ascii_case("full") => {
                opts.synchronous = Synchronous::Full;
            }
            ("synchronous", v) => {
                return Err(bad(format!("synchronous={v:?}: use normal or full")));
            }
            ("busy_budget", v) => {
                opts.busy_budget = humantime::parse_duration(v).map_err(|e| {
                    bad(format!("busy_budget={v:?}: {e} (write e.g. 30s or 500ms)"))
                })?;
                if opts.busy_budget > Duration::from_secs(24 * 60 * 60) {
                    return Err(bad(format!("busy_budget={v:?} is longer than a day")));
                }
            }
            ("mode", "ro") => {
                opts.read_only = true;
                opts.create_if_missing = false;
            }
            ("mode", "rw") => {
                opts.read_only = false;
                opts.create_if_missing = false;
            }
            ("mode", "rwc") => {
                opts.read_only = false;
                opts.create_if_missing = true;
            }
            ("mode", v) => return Err(bad(format!("mode={v:?}: use ro, rw or rwc"))),
            (k, _) => {
                return Err(bad(format!(
                    "unknown option {k:?} (known: synchronous, busy_budget, mode)"
                )));
            }
        }
    }
    Ok((PathBuf::from(path), opts))
}

/// Checks, before SQLite opens `path`, the mistakes SQLite would only report as "unable to
/// open database file": a missing directory, a missing file that must not be created.
pub(crate) fn check_path(path: &Path, opts: &SqliteOptions) -> Result<()> {
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

/// Decodes `%XX` escapes; `None` if the result is not UTF-8 or an escape is malformed.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(url: &str) -> String {
        parse_url(url)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .0
            .display()
            .to_string()
    }

    #[test]
    fn absolute_and_relative_paths() {
        assert_eq!(
            path_of("sqlite:///var/lib/app/locks.db"),
            "/var/lib/app/locks.db"
        );
        assert_eq!(path_of("sqlite://locks.db"), "locks.db");
        assert_eq!(path_of("sqlite://data/locks.db"), "data/locks.db");
        assert_eq!(path_of("sqlite://Data/Locks.db"), "Data/Locks.db");
        assert_eq!(path_of("sqlite:locks.db"), "locks.db");
        assert_eq!(path_of("sqlite:///tmp/a%20b.db"), "/tmp/a b.db");
        assert_eq!(path_of("sqlite://./x.db"), "./x.db");
        assert_eq!(path_of("sqlite://../../x.db"), "../../x.db");
        assert_eq!(path_of("sqlite:///a/../b.db"), "/a/../b.db");
        assert_eq!(path_of("SQLite:///x.db"), "/x.db");
        assert_eq!(path_of("sqlite:///x.db?"), "/x.db");
    }

    #[test]
    fn options() {
        let (_, o) = parse_url("sqlite:///x.db").unwrap();
        assert_eq!(o, SqliteOptions::default());
        let (_, o) =
            parse_url("sqlite:///x.db?synchronous=FULL&busy_budget=250ms&mode=ro").unwrap();
        assert_eq!(o.synchronous, Synchronous::Full);
        assert_eq!(o.busy_budget, Duration::from_millis(250));
        assert!(o.read_only && !o.create_if_missing);
        let (_, o) = parse_url("sqlite://x.db?mode=rw&synchronous=normal").unwrap();
        assert!(!o.read_only && !o.create_if_missing);
        assert_eq!(o.synchronous, Synchronous::Normal);
    }

    #[test]
    fn bad_urls_are_config_errors_that_say_what_to_write() {
        for bad in [
            "",
            "sqlite",
            "redis://localhost/0",
            "sqlite://",
            "sqlite:///",
            "sqlite:///dir/",
            "sqlite::memory:",
            "sqlite:///x.db?synchronous=off",
            "sqlite:///x.db?busy_budget=soon",
            "sqlite:///x.db?busy_budget=400days",
            "sqlite:///x.db?mode=memory",
            "sqlite:///x.db?journal_mode=delete",
            "sqlite:///x%2.db",
            "sqlite:///x.db?busy_budget",
            "sqlite:///x.db#frag",
            "sqlite:///%FF.db",
        ] {
            match parse_url(bad) {
                Err(LockError::Config { detail, .. }) => {
                    assert!(detail.contains("sqlite:///absolute/path.db"), "{detail}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn path_checks() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions::default();
        assert!(check_path(&dir.path().join("new.db"), &opts).is_ok());
        let missing_dir = dir.path().join("nope/new.db");
        let e = check_path(&missing_dir, &opts).unwrap_err().to_string();
        assert!(e.contains("does not exist; create it first"), "{e}");
        let e = check_path(dir.path(), &opts).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_path(&dir.path().join("new.db"), &opts.clone().read_only(true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("read-only"), "{e}");
        assert!(check_path(Path::new(""), &opts).is_err());
    }
}
