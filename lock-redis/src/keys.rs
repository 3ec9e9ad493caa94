//! Where a lock name lives in Redis: key names, channels and scan patterns.
//!
//! A name's keys are `{prefix}{<hex>}:lease`, `:fence` and `:queue`, where
//! `<hex>` is the lowercase hex encoding of the name's UTF-8 bytes. Hex cannot contain `}`
//! (so the braces form a Redis Cluster hash tag and every key of a name shares one slot), it
//! is injective (two different names never share a key), and hex of a name prefix is a
//! prefix of the hex of every name that starts with it (so `list` can filter on the server
//! with `SCAN MATCH`).

use lock_core::{LockError, LockName, Result};

use crate::BACKEND;
use crate::scripts::Invocation;

/// The key prefix used when none is configured.
pub(crate) const DEFAULT_PREFIX: &str = "lock:";

/// Key names for one key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// Validates `prefix`: printable, without braces (they would change the hash tag).
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        if prefix.contains(['{', '}']) {
            return Err(LockError::config(
                BACKEND,
                format!(
                    "key prefix {prefix:?} contains '{{' or '}}', which would change the Redis \
                     Cluster hash tag of every key; choose a prefix without braces"
                ),
            ));
        }
        if prefix.chars().any(char::is_control) {
            return Err(LockError::config(
                BACKEND,
                format!("key prefix {prefix:?} contains control characters; use printable text"),
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key holding `name`'s lease (a hash with a PX expiry).
    pub(crate) fn lease_key(&self, name: &LockName) -> String {
        self.key(name, LEASE)
    }

    /// The key holding `name`'s fence counter (a string integer without expiry).
    pub(crate) fn fence_key(&self, name: &LockName) -> String {
        self.key(name, FENCE)
    }

    /// Adds `name`'s keys with `suffixes` ([`LEASE`], [`FENCE`], [`QUEUE`]) to
    /// `script`, in that order, encoding the name once into one buffer.
    pub(crate) fn push_keys(
        &self,
        script: &mut Invocation<'_>,
        name: &LockName,
        suffixes: &[&str],
    ) {
        // Bytes, not a String: the hex is written two digits at a time from a table.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let bytes = name.as_str().as_bytes();
        let mut key = Vec::with_capacity(self.prefix.len() + 2 * bytes.len() + 2 + 10);
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b'{');
        for b in bytes {
            key.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
        }
        key.push(b'}');
        let base = key.len();
        for suffix in suffixes {
            key.truncate(base);
            key.extend_from_slice(suffix.as_bytes());
            script.arg(&key[..]);
        }
    }

    fn key(&self, name: &LockName, suffix: &str) -> String {
        let bytes = name.as_str().as_bytes();
        // Room for the longest suffix, so that `push_keys` never grows the buffer.
        let mut key = String::with_capacity(self.prefix.len() + 2 * bytes.len() + 2 + 10);
        key.push_str(&self.prefix);
        key.push('{');
        lock_core::backend_kit::hex::push_lower(&mut key, bytes);
        key.push('}');
        key.push_str(suffix);
        key
    }

    /// The prefix of the channel of each client (a backend value) that waits for locks:
    /// a release hands a freed lock to the next waiting client by publishing the name's
    /// hash tag (the hex of the name) on `{prefix}wake:<client id>`.
    pub(crate) fn wake_channel_prefix(&self) -> String {
        format!("{}wake:", self.prefix)
    }

    /// The pub/sub channel on which version 1 of this library announced every release under
    /// this prefix in database `db` (the message is the released name); still listened to,
    /// so that waiters wake when a process of the old version releases. Pub/sub ignores the
    /// database index, so it is part of the name: `{prefix}released` in database 0 (the only
    /// one on a Redis Cluster), `{prefix}released:{db}` in the others.
    pub(crate) fn channel(&self, db: i64) -> String {
        if db == 0 {
            format!("{}released", self.prefix)
        } else {
            format!("{}released:{db}", self.prefix)
        }
    }

    /// A `SCAN MATCH` pattern for the lease keys of every name starting with `name_prefix`.
    pub(crate) fn lease_pattern(&self, name_prefix: &str) -> String {
        format!(
            "{}{{{}*}}:lease",
            escape_glob(&self.prefix),
            hex(name_prefix.as_bytes())
        )
    }
}

/// The end of a lease key, after the hash tag.
pub(crate) const LEASE: &str = ":lease";
/// The end of a fence counter key, after the hash tag.
pub(crate) const FENCE: &str = ":fence";
/// The end of the key of a name's queue of waiting clients.
pub(crate) const QUEUE: &str = ":queue";

/// The name whose hash tag (lowercase hex of its bytes) is `hex`, if it is one.
pub(crate) fn name_of_tag(hex: &[u8]) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |d: u8| {
        char::from(d)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes: Option<Vec<u8>> = hex
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? * 16 + digit(pair[1])?))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    lock_core::backend_kit::hex::push_lower(&mut out, bytes);
    out
}

/// Escapes the characters Redis glob patterns treat specially, so `text` matches literally.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LockName {
        LockName::new(s).unwrap()
    }

    #[test]
    fn both_keys_share_one_hash_tag() {
        let keys = KeySpace::new("app:").unwrap();
        let n = name("a{b}:c");
        assert_eq!(keys.lease_key(&n), "app:{617b627d3a63}:lease");
        assert_eq!(keys.fence_key(&n), "app:{617b627d3a63}:fence");
        let scripting = crate::functions::Scripting::default();
        let mut script = crate::scripts::INSPECT.call(3, &scripting);
        keys.push_keys(&mut script, &n, &[LEASE, FENCE, QUEUE]);
        assert_eq!(
            script.args(),
            [
                "app:{617b627d3a63}:lease",
                "app:{617b627d3a63}:fence",
                "app:{617b627d3a63}:queue",
            ]
        );
        assert_eq!(name_of_tag(b"617b627d3a63").as_deref(), Some("a{b}:c"));
        assert_eq!(
            name_of_tag(
                "日本"
                    .bytes()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .as_bytes()
            )
            .as_deref(),
            Some("日本")
        );
        for bad in [&b"6"[..], b"zz", b"ff"] {
            assert_eq!(name_of_tag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn different_names_get_different_keys() {
        let keys = KeySpace::new(DEFAULT_PREFIX).unwrap();
        let names = ["a", "A", "a:", "a}", "{a}", "é", "e\u{301}", "日本", "🦀"];
        let mut seen: Vec<String> = names.iter().map(|s| keys.lease_key(&name(s))).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), names.len());
    }

    #[test]
    fn braces_in_the_prefix_are_refused() {
        for bad in ["a{", "}", "x{y}z", "tab\there"] {
            assert!(
                matches!(KeySpace::new(bad), Err(LockError::Config { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn each_database_has_its_own_channel() {
        let keys = KeySpace::new("app:").unwrap();
        assert_eq!(keys.channel(0), "app:released");
        assert_eq!(keys.channel(1), "app:released:1");
        let channels: Vec<String> = [0, 1, 2, 12].iter().map(|db| keys.channel(*db)).collect();
        let mut distinct = channels.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), channels.len(), "{channels:?}");
    }

    #[test]
    fn patterns_escape_glob_characters_in_the_prefix() {
        let keys = KeySpace::new("p*?[x]\\:").unwrap();
        assert_eq!(keys.lease_pattern("ab"), "p\\*\\?\\[x\\]\\\\:{6162*}:lease");
        assert_eq!(keys.lease_pattern(""), "p\\*\\?\\[x\\]\\\\:{*}:lease");
    }
}
