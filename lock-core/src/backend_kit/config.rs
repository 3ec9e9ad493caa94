//! One configuration vocabulary for every store: a URL is split once, its query options are
//! read with typed getters, and every mistake is a [`LockError::Config`] written the same
//! way, with the password hidden.
//!
//! The rules, the same for every backend:
//!
//! - durations are written humantime style: `busy_timeout=30s`, `timeout=1500ms`, `2m`;
//! - booleans are `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`);
//! - choices are case-insensitive (`synchronous=FULL`);
//! - an option given twice, or one this store does not know, is an error that lists the
//!   options it knows;
//! - a password in the URL (`user:password@`, `?password=`) never appears in a message.
//!
//! A backend's options type parses its URL like this:
//!
//! ```
//! use std::time::Duration;
//! use lock_core::backend_kit::config::StoreUrl;
//!
//! let mut url = StoreUrl::parse(
//!     "file:///var/lib/locks?sync=true&busy_timeout=2s",
//!     "file",
//!     &["file"],
//!     "use file:///absolute/dir[?sync=true&busy_timeout=10s]",
//! )?;
//! assert_eq!(url.body(), "///var/lib/locks");
//! let sync = url.query().boolean("sync")?.unwrap_or(false);
//! let busy = url.query().duration("busy_timeout")?;
//! url.finish()?;
//! assert!(sync);
//! assert_eq!(busy, Some(Duration::from_secs(2)));
//!
//! let mut typo = StoreUrl::parse("file:///x?synk=1", "file", &["file"], "see the docs")?;
//! typo.query().boolean("sync")?;
//! let err = typo.finish().unwrap_err().to_string();
//! assert!(err.contains("unknown option `synk` (known: sync)"), "{err}");
//! # Ok::<(), lock_core::LockError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::backend_kit::redact::redact_url;
use crate::error::{LockError, Result};

/// How much of a URL a message shows.
const SHOWN_CHARS: usize = 120;

/// A store URL split into scheme, body, query options and fragment, ready for a backend to
/// read. Nothing is normalised: the body is the text between `scheme:` and the first `?` or
/// `#`, as written (a generic URL parser would resolve `..` and lower-case hosts, which is
/// wrong for a relative file path).
#[derive(Debug)]
pub struct StoreUrl {
    context: Context,
    scheme: String,
    body: String,
    fragment: Option<String>,
    query: Query,
}

/// What every message about one URL needs: which backend, the URL as it may be shown, and
/// what the user should write instead.
#[derive(Clone, Debug)]
struct Context {
    backend: &'static str,
    shown: String,
    usage: &'static str,
}

impl Context {
    fn error(&self, why: impl fmt::Display) -> LockError {
        LockError::config(
            self.backend,
            format!(
                "bad {} lock URL \"{}\": {why}; {}",
                self.backend, self.shown, self.usage
            ),
        )
    }
}

impl StoreUrl {
    /// Splits `text`, whose scheme must be one of `schemes` (compared without case).
    /// `backend` names the store in messages and `usage` says what a good URL looks like.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] when there is no scheme, the scheme is not one of `schemes`,
    /// or a query pair is not valid `application/x-www-form-urlencoded` text.
    pub fn parse(
        text: &str,
        backend: &'static str,
        schemes: &[&str],
        usage: &'static str,
    ) -> Result<Self> {
        let context = Context {
            backend,
            shown: redact_url(text).chars().take(SHOWN_CHARS).collect(),
            usage,
        };
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(context.error("it has no scheme"));
        };
        let Some(scheme) = schemes.iter().find(|s| s.eq_ignore_ascii_case(scheme)) else {
            return Err(context.error(format_args!(
                "the scheme is {scheme:?}; this store's schemes are {}",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let (rest, fragment) = match rest.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment.to_owned())),
            None => (rest, None),
        };
        let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut pairs = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key.is_empty() {
                return Err(context.error("the query has an empty option name"));
            }
            pairs.push((key.into_owned(), value.into_owned()));
        }
        Ok(Self {
            scheme: (*scheme).to_owned(),
            body: body.to_owned(),
            fragment,
            query: Query {
                context: context.clone(),
                pairs,
                known: Vec::new(),
            },
            context,
        })
    }

    /// The scheme, spelled as in the `schemes` list it matched.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Everything between `scheme:` and the query or fragment, as written.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The text after `#`, if any.
    pub fn fragment(&self) -> Option<&str> {
        self.fragment.as_deref()
    }

    /// The query options, to read with typed getters.
    pub fn query(&mut self) -> &mut Query {
        &mut self.query
    }

    /// A [`LockError::Config`] about this URL: "bad `backend` lock URL "…": `why`; `usage`".
    pub fn error(&self, why: impl fmt::Display) -> LockError {
        self.context.error(why)
    }

    /// The URL as messages may show it (password hidden, shortened).
    pub fn shown(&self) -> &str {
        &self.context.shown
    }

    /// Checks that every query option was read.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] naming the first unknown option and listing the known ones.
    pub fn finish(self) -> Result<()> {
        self.query.finish()
    }
}

/// The query options of a [`StoreUrl`]. Each getter reads one key (and records it as known
/// for [`finish`](Self::finish)'s message); `Ok(None)` means the option was not given.
#[derive(Debug)]
pub struct Query {
    context: Context,
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl Query {
    /// The raw text of option `key`.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] if `key` is given more than once.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        self.known.push(key);
        let mut found = None;
        let mut i = 0;
        while i < self.pairs.len() {
            if self.pairs[i].0 == key {
                let (_, value) = self.pairs.remove(i);
                if found.is_some() {
                    return Err(self
                        .context
                        .error(format_args!("option `{key}` is given twice")));
                }
                found = Some(value);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Option `key` as a duration, humantime style (`30s`, `500ms`, `2m`, `1h 30m`).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] if it does not parse (a bare number has no unit: the message
    /// says to write one).
    pub fn duration(&mut self, key: &'static str) -> Result<Option<Duration>> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        parse_duration(&text)
            .map(Some)
            .map_err(|why| self.context.error(format_args!("{key}={text:?}: {why}")))
    }

    /// Option `key` as a boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] for any other value.
    pub fn boolean(&mut self, key: &'static str) -> Result<Option<bool>> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(self
                .context
                .error(format_args!("{key}={text:?}: write true or false"))),
        }
    }

    /// Option `key` parsed as a number (or anything else with [`FromStr`]).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] if it does not parse.
    pub fn number<T: FromStr>(&mut self, key: &'static str) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|e| self.context.error(format_args!("{key}={text:?}: {e}")))
    }

    /// Option `key` as one of `choices` (compared without case).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] listing the choices for any other value.
    pub fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        choices: &[(&'static str, T)],
    ) -> Result<Option<T>> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        match choices.iter().find(|(c, _)| c.eq_ignore_ascii_case(&text)) {
            Some((_, value)) => Ok(Some(*value)),
            None => Err(self.context.error(format_args!(
                "{key}={text:?}: use {}",
                choices
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A [`LockError::Config`] about option `key` of this URL (for a value that parsed but
    /// is out of range).
    pub fn error(&self, key: &str, why: impl fmt::Display) -> LockError {
        self.context.error(format_args!("{key}: {why}"))
    }

    /// Checks that every option was read.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] naming the first unknown option and listing the known ones.
    pub fn finish(self) -> Result<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, _)) => {
                let known = if self.known.is_empty() {
                    "this store takes no options".to_owned()
                } else {
                    format!("known: {}", self.known.join(", "))
                };
                Err(self
                    .context
                    .error(format_args!("unknown option `{key}` ({known})")))
            }
        }
    }
}

/// Parses a duration the way every store URL and `lockctl` flag writes one: humantime style
/// (`30s`, `500ms`, `2m`, `1h 30m`).
///
/// # Errors
///
/// A message saying how to write one.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "a duration needs a unit: write {text}s or {text}ms (examples: 500ms, 30s, 5m, 1h)"
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 30s, 5m, 1h)"))
}

/// Decodes `%XX` escapes in a path as written in a URL; `None` if an escape is malformed or
/// the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
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

    fn url(text: &str) -> StoreUrl {
        StoreUrl::parse(text, "test", &["test", "test+x"], "write test://thing")
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn config_detail(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(LockError::Config { detail, .. }) => detail,
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn splits_scheme_body_query_and_fragment() {
        let u = url("TEST+X://a/b%20c?k=v#frag");
        assert_eq!(u.scheme(), "test+x");
        assert_eq!(u.body(), "//a/b%20c");
        assert_eq!(u.fragment(), Some("frag"));
        let u = url("test:rel.db");
        assert_eq!(u.body(), "rel.db");
        assert_eq!(u.fragment(), None);
    }

    #[test]
    fn typed_values() {
        let mut u = url("test://x?t=1m30s&b=ON&n=7&c=Full&s=a%2Fb&z=0");
        let q = u.query();
        assert_eq!(q.duration("t").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(q.boolean("b").unwrap(), Some(true));
        assert_eq!(q.number::<u32>("n").unwrap(), Some(7));
        assert_eq!(
            q.choice("c", &[("normal", 1), ("full", 2)]).unwrap(),
            Some(2)
        );
        assert_eq!(q.string("s").unwrap().as_deref(), Some("a/b"));
        assert_eq!(q.boolean("z").unwrap(), Some(false));
        assert_eq!(q.duration("absent").unwrap(), None);
        u.finish().unwrap();
    }

    #[test]
    fn bad_values_name_the_option_and_how_to_write_it() {
        let mut u = url("test://x?t=30&b=maybe&n=-1&c=off&d=soon");
        let q = u.query();
        assert!(config_detail(q.duration("t")).contains("write 30s or 30ms"));
        assert!(config_detail(q.boolean("b")).contains("write true or false"));
        assert!(config_detail(q.number::<u32>("n")).contains("n=\"-1\""));
        assert!(
            config_detail(q.choice("c", &[("normal", 1), ("full", 2)]))
                .contains("use normal, full")
        );
        let d = config_detail(q.duration("d"));
        assert!(
            d.contains("d=\"soon\"") && d.contains("write test://thing"),
            "{d}"
        );
    }

    #[test]
    fn unknown_and_repeated_options_are_errors() {
        let mut u = url("test://x?a=1&typo=2");
        u.query().string("a").unwrap();
        u.query().string("b").unwrap();
        let d = config_detail(u.finish());
        assert!(d.contains("unknown option `typo` (known: a, b)"), "{d}");
        let mut u = url("test://x?a=1&a=2");
        assert!(config_detail(u.query().string("a")).contains("given twice"));
        let u = url("test://x?a=1");
        assert!(config_detail(u.finish()).contains("takes no options"));
    }

    #[test]
    fn bad_schemes_and_passwords() {
        let d = config_detail(StoreUrl::parse("nope", "test", &["test"], "u"));
        assert!(d.contains("no scheme"), "{d}");
        let d = config_detail(StoreUrl::parse(
            "redis://me:s3cret@h/0?password=hunter2",
            "test",
            &["test"],
            "u",
        ));
        assert!(d.contains("this store's schemes are test://"), "{d}");
        assert!(!d.contains("s3cret") && !d.contains("hunter2"), "{d}");
        let mut u = url("test://me:s3cret@h?x=1");
        let e = u.query().duration("x").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    }
}
