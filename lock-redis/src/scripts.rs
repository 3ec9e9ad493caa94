//! The Lua scripts behind every mutation, and the parsing of their replies.
//!
//! Each operation is one script, so it is one atomic step and one round trip. A script is
//! sent as `EVALSHA`; when the server answers `NOSCRIPT` (its script cache is empty after a
//! restart or a `SCRIPT FLUSH`) it is sent again in full with `EVAL`, which also caches it.
//! `EVAL` goes to the same node as `EVALSHA` (the one owning the keys), and cannot be undone
//! by a cache flush between two round trips the way `SCRIPT LOAD` + `EVALSHA` can.

use std::sync::LazyLock;

use lock_core::{LockError, Result};
use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs, Value};

use crate::BACKEND;

/// One Lua script: its source and its SHA-1.
#[derive(Debug)]
pub(crate) struct LockScript {
    code: &'static str,
    hash: String,
}

impl LockScript {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// A call of this script, to be given keys and arguments.
    pub(crate) fn call(&'static self) -> Invocation {
        Invocation {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    #[cfg(test)]
    fn hash(&self) -> &str {
        &self.hash
    }
}

/// A script call: keys, then arguments, in the order the script reads them.
#[derive(Debug)]
pub(crate) struct Invocation {
    script: &'static LockScript,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Invocation {
    /// Adds the next key (`KEYS[i]`).
    pub(crate) fn key(&mut self, key: String) -> &mut Self {
        self.keys.push(key);
        self
    }

    /// Adds the next argument (`ARGV[i]`).
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn command(&self, verb: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script).arg(self.keys.len()).arg(&self.keys);
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }

    /// Runs the script: `EVALSHA`, and `EVAL` if the server does not have it cached.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self
            .command("EVALSHA", &self.script.hash)
            .query_async(conn)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.command("EVAL", self.script.code)
                    .query_async(conn)
                    .await
            }
            other => other,
        }
    }
}

macro_rules! lock_script {
    ($file:literal) => {
        LazyLock::new(|| {
            LockScript::new(concat!(
                include_str!("lua/common.lua"),
                "\n",
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

pub(crate) static ACQUIRE: LazyLock<LockScript> = lock_script!("acquire.lua");
pub(crate) static HEARTBEAT: LazyLock<LockScript> = lock_script!("heartbeat.lua");
pub(crate) static HEARTBEAT_MANY: LazyLock<LockScript> = lock_script!("heartbeat_many.lua");
pub(crate) static RELEASE: LazyLock<LockScript> = lock_script!("release.lua");
pub(crate) static FORCE_RELEASE: LazyLock<LockScript> = lock_script!("force_release.lua");
pub(crate) static INSPECT: LazyLock<LockScript> = lock_script!("inspect.lua");

/// A script's reply: a status word followed by its fields.
#[derive(Debug)]
pub(crate) struct Reply {
    status: String,
    fields: Vec<Value>,
    script: &'static str,
}

impl Reply {
    /// Splits a raw reply of `script` into status and fields.
    pub(crate) fn parse(script: &'static str, value: Value) -> Result<Self> {
        let Value::Array(items) = value else {
            return Err(unexpected(script, &value));
        };
        let mut items = items.into_iter();
        let status = match items.next() {
            Some(first) => text(script, first)?,
            None => return Err(unexpected(script, &Value::Array(Vec::new()))),
        };
        Ok(Self {
            status,
            fields: items.collect(),
            script,
        })
    }

    /// The status word (`ok`, `held`, `lost`, `free`, `corrupt`, ...).
    pub(crate) fn status(&self) -> &str {
        &self.status
    }

    /// Field `i` as text.
    pub(crate) fn text(&self, i: usize) -> Result<String> {
        let value = self.field(i)?;
        text(self.script, value.clone())
    }

    /// Field `i` as an unsigned integer.
    pub(crate) fn number<T: TryFrom<u64>>(&self, i: usize, what: &str) -> Result<T> {
        let raw = self.text(i)?;
        raw.parse::<u64>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| {
                LockError::corrupt(BACKEND, format!("{what} {raw:?} is not a valid number"))
            })
    }

    /// Field `i` as a millisecond timestamp.
    pub(crate) fn millis(&self, i: usize, what: &str) -> Result<i64> {
        let raw = self.text(i)?;
        raw.parse::<i64>().map_err(|_| {
            LockError::corrupt(BACKEND, format!("{what} {raw:?} is not a valid timestamp"))
        })
    }

    /// The error for a `corrupt` reply, or for a status this code does not expect.
    pub(crate) fn into_error(self) -> LockError {
        if self.status == "corrupt" {
            let detail = self
                .text(0)
                .unwrap_or_else(|_| "unreadable lease data".to_owned());
            LockError::corrupt(BACKEND, detail)
        } else {
            LockError::backend(
                BACKEND,
                format!(
                    "the {} script answered {:?}, which this version does not understand",
                    self.script, self.status
                ),
            )
        }
    }

    fn field(&self, i: usize) -> Result<&Value> {
        self.fields.get(i).ok_or_else(|| {
            LockError::backend(
                BACKEND,
                format!(
                    "the {} script's {:?} reply lacks field {i}",
                    self.script, self.status
                ),
            )
        })
    }
}

fn text(script: &'static str, value: Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|e| {
            LockError::corrupt(BACKEND, format!("lease data is not valid UTF-8: {e}"))
        }),
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(unexpected(script, &other)),
    }
}

fn unexpected(script: &'static str, value: &Value) -> LockError {
    LockError::backend(
        BACKEND,
        format!("the {script} script returned an unexpected reply: {value:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_status_and_fields() {
        let reply = Reply::parse(
            "acquire",
            Value::Array(vec![bulk("ok"), bulk("42"), Value::Int(7)]),
        )
        .unwrap();
        assert_eq!(reply.status(), "ok");
        assert_eq!(reply.number::<u64>(0, "fence").unwrap(), 42);
        assert_eq!(reply.millis(1, "expiry").unwrap(), 7);
        assert!(reply.text(2).is_err());
    }

    #[test]
    fn corrupt_replies_become_corrupt_errors() {
        let reply =
            Reply::parse("inspect", Value::Array(vec![bulk("corrupt"), bulk("bad")])).unwrap();
        assert!(matches!(reply.into_error(), LockError::Corrupt { detail, .. } if detail == "bad"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for v in [Value::Nil, Value::Int(1), Value::Array(vec![])] {
            assert!(Reply::parse("x", v).is_err());
        }
        let reply = Reply::parse("x", Value::Array(vec![bulk("ok"), bulk("-1")])).unwrap();
        assert!(matches!(
            reply.number::<u32>(0, "pid"),
            Err(LockError::Corrupt { .. })
        ));
        let reply = Reply::parse("x", Value::Array(vec![bulk("ok"), bulk("99999999999")])).unwrap();
        assert!(matches!(
            reply.number::<u32>(0, "pid"),
            Err(LockError::Corrupt { .. })
        ));
    }

    #[test]
    fn every_script_compiles_to_a_distinct_hash() {
        let mut hashes: Vec<&str> = [
            &ACQUIRE,
            &HEARTBEAT,
            &HEARTBEAT_MANY,
            &RELEASE,
            &FORCE_RELEASE,
            &INSPECT,
        ]
        .iter()
        .map(|s| s.hash())
        .collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), 6);
    }
}
