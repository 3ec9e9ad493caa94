//! The Lua scripts behind every mutation, and the parsing of their replies.
//!
//! Each operation is one script, so it is one atomic step and one round trip. It is called
//! as a function of this crate's library (`FCALL`, see [`functions`](crate::functions)), or,
//! where the server or the user cannot run functions, as a script: sent as `EVALSHA`, and
//! when the server answers `NOSCRIPT` (its script cache is empty after a restart or a
//! `SCRIPT FLUSH`) again in full with `EVAL`, which also caches it. `EVAL` goes to the same
//! node as `EVALSHA` (the one owning the keys), and cannot be undone by a cache flush
//! between two round trips the way `SCRIPT LOAD` + `EVALSHA` can.

use std::sync::LazyLock;

use lock_core::{LockError, Result};
use redis::aio::ConnectionLike;
use redis::{Arg, Cmd, FromRedisValue, RedisError, RedisResult, ToRedisArgs, Value};

use crate::BACKEND;
use crate::functions::{LIBRARY, Retry, Scripting};

/// Where a script wants the shared helpers (`common.lua`): what comes before this line is
/// its hot path, which runs without defining them. A script without it gets them first.
pub(crate) const HELPERS_MARKER: &str = "-- @helpers\n";

/// The helpers every script shares.
pub(crate) const COMMON: &str = include_str!("lua/common.lua");

/// One script's source, and what the function library needs to know of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source {
    /// Its name (as a function of the library).
    pub(crate) name: &'static str,
    /// Its Lua.
    pub(crate) code: &'static str,
    /// Whether it only reads: a read-only replica runs it (a function must say so).
    pub(crate) read_only: bool,
}

macro_rules! source {
    ($name:literal) => {
        source!($name, false)
    };
    ($name:literal, $read_only:expr) => {
        Source {
            name: $name,
            code: include_str!(concat!("lua/", $name, ".lua")),
            read_only: $read_only,
        }
    };
}

/// Every script.
pub(crate) const SOURCES: [Source; 9] = [
    source!("acquire"),
    source!("acquire_permit"),
    source!("heartbeat"),
    source!("heartbeat_many"),
    source!("release"),
    source!("force_release"),
    source!("inspect", true),
    source!("register"),
    source!("pass_on"),
];

/// One Lua script: its source and its SHA-1 as a script, and its name as a function.
#[derive(Debug)]
pub(crate) struct LockScript {
    code: String,
    hash: String,
    function: String,
}

impl LockScript {
    /// `script` with the shared helpers inserted at its marker, or prepended.
    fn new(common: &str, script: &str) -> Self {
        let code = match script.split_once(HELPERS_MARKER) {
            Some((hot, rest)) => format!("{hot}{common}\n{rest}"),
            None => format!("{common}\n{script}"),
        };
        Self {
            hash: redis::Script::new(&code).get_hash().to_owned(),
            code,
            function: String::new(),
        }
    }

    /// The script named `name` in [`SOURCES`].
    fn named(name: &str) -> Self {
        let source = SOURCES
            .iter()
            .find_map(|s| (s.name == name).then_some(s.code))
            .unwrap_or_else(|| unreachable!("{name} is not in SOURCES"));
        Self {
            function: LIBRARY.function(name),
            ..Self::new(COMMON, source)
        }
    }

    /// A call of this script with `keys` keys, made the way `scripting` says (`FCALL`, or
    /// `EVALSHA` where functions cannot run): give it the keys, then the arguments, in the
    /// order the script reads them (`KEYS[1..]`, then `ARGV[1..]`).
    pub(crate) fn call<'a>(&'static self, keys: usize, scripting: &'a Scripting) -> Invocation<'a> {
        // The command, the name or hash, the key count, and typically up to eight keys and
        // arguments.
        let mut cmd = Cmd::with_capacity(11 + keys, 256);
        if scripting.functions() {
            cmd.arg("FCALL").arg(self.function.as_str());
        } else {
            cmd.arg("EVALSHA").arg(self.hash.as_str());
        }
        cmd.arg(keys);
        Invocation {
            script: self,
            cmd,
            scripting,
        }
    }

    #[cfg(test)]
    fn hash(&self) -> &str {
        &self.hash
    }
}

/// A script call, encoded once as the command that is sent first (`FCALL` or `EVALSHA`).
#[derive(Debug)]
pub(crate) struct Invocation<'a> {
    script: &'static LockScript,
    cmd: Cmd,
    /// Whether the backend calls functions, and what to do when a call fails.
    scripting: &'a Scripting,
}

impl Invocation<'_> {
    /// Adds the next key or argument.
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// The keys and arguments added so far, as text (for tests).
    #[cfg(test)]
    pub(crate) fn args(&self) -> Vec<String> {
        self.cmd
            .args_iter()
            .skip(3)
            .map(|a| match a {
                Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect()
    }

    /// The command sent first: `FCALL <function>` or `EVALSHA <sha>`, then the key count,
    /// keys and arguments.
    pub(crate) fn command(&self) -> &Cmd {
        &self.cmd
    }

    /// The same call as `EVAL` with the script's source, for a server that lacks it.
    pub(crate) fn eval(&self) -> Cmd {
        self.with_script("EVAL", &self.script.code)
    }

    /// `command` `script`, then this call's key count, keys and arguments.
    fn with_script(&self, command: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(command);
        cmd.arg(script);
        // Skip `FCALL <function>` or `EVALSHA <sha>`; keep the key count, keys and arguments.
        for arg in self.cmd.args_iter().skip(2) {
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }

    /// What to send after [`command`](Self::command) failed with `error`: the call again
    /// once the server has what it lacked (the function library, or the script), or `None`
    /// when the error is the answer.
    pub(crate) async fn instead(
        &self,
        error: &RedisError,
        conn: &mut impl ConnectionLike,
    ) -> Option<Cmd> {
        match self.scripting.after(error, conn).await {
            Retry::No => None,
            Retry::Fcall => Some(self.with_script("FCALL", &self.script.function)),
            Retry::Eval => Some(self.eval()),
        }
    }

    /// Runs the call: as a function, or as a script where functions cannot run; loading
    /// what the server lacks and sending the call again.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self.cmd.query_async(conn).await {
            // Boxed: the rare path's state (a library load, a second call) would otherwise
            // make every call's future bigger, and moving it costs on every call.
            Err(error) => Box::pin(self.retry(error, conn)).await,
            done => done,
        }
    }

    /// The call again after it failed with `error`, if [`instead`](Self::instead) says so.
    async fn retry<T: FromRedisValue>(
        &self,
        error: RedisError,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self.instead(&error, conn).await {
            Some(retry) => retry.query_async(conn).await,
            None => Err(error),
        }
    }
}

pub(crate) static ACQUIRE: LazyLock<LockScript> = LazyLock::new(|| LockScript::named("acquire"));
pub(crate) static ACQUIRE_PERMIT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::named("acquire_permit"));
pub(crate) static HEARTBEAT: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::named("heartbeat"));
pub(crate) static HEARTBEAT_MANY: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::named("heartbeat_many"));
pub(crate) static RELEASE: LazyLock<LockScript> = LazyLock::new(|| LockScript::named("release"));
pub(crate) static FORCE_RELEASE: LazyLock<LockScript> =
    LazyLock::new(|| LockScript::named("force_release"));
pub(crate) static INSPECT: LazyLock<LockScript> = LazyLock::new(|| LockScript::named("inspect"));
pub(crate) static REGISTER: LazyLock<LockScript> = LazyLock::new(|| LockScript::named("register"));
pub(crate) static PASS_ON: LazyLock<LockScript> = LazyLock::new(|| LockScript::named("pass_on"));

/// A script's reply: a status word followed by its fields.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The status word, then the fields.
    items: Vec<Value>,
    script: &'static str,
}

impl Reply {
    /// Checks that a raw reply of `script` is a status word followed by fields.
    pub(crate) fn parse(script: &'static str, value: Value) -> Result<Self> {
        let Value::Array(items) = value else {
            return Err(unexpected(script, &value));
        };
        match items.first() {
            Some(first) if as_str(first).is_some() => Ok(Self { items, script }),
            Some(first) => Err(unexpected(script, first)),
            None => Err(unexpected(script, &Value::Array(Vec::new()))),
        }
    }

    /// The status word (`ok`, `held`, `lost`, `free`, `corrupt`, ...).
    pub(crate) fn status(&self) -> &str {
        self.items.first().and_then(as_str).unwrap_or_default()
    }

    /// How many fields follow the status word.
    pub(crate) fn fields(&self) -> usize {
        self.items.len() - 1
    }

    /// Field `i` as text.
    pub(crate) fn text(&self, i: usize) -> Result<String> {
        match self.field(i)? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|e| {
                LockError::corrupt(BACKEND, format!("lease data is not valid UTF-8: {e}"))
            }),
            Value::SimpleString(s) => Ok(s.clone()),
            Value::Int(n) => Ok(n.to_string()),
            other => Err(unexpected(self.script, other)),
        }
    }

    /// Field `i` as text, or `None` when the reply ends before it.
    pub(crate) fn optional_text(&self, i: usize) -> Result<Option<String>> {
        if self.items.len() > i + 1 {
            self.text(i).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Field `i` as an unsigned integer (sent as an integer or as decimal text).
    pub(crate) fn number<T: TryFrom<u64>>(&self, i: usize, what: &str) -> Result<T> {
        let n = match self.field(i)? {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => self.text(i)?.parse::<u64>().ok(),
        };
        n.and_then(|n| T::try_from(n).ok()).ok_or_else(|| {
            let raw = self.text(i).unwrap_or_default();
            LockError::corrupt(BACKEND, format!("{what} {raw:?} is not a valid number"))
        })
    }

    /// Field `i` as a millisecond timestamp (sent as an integer or as decimal text).
    pub(crate) fn millis(&self, i: usize, what: &str) -> Result<i64> {
        if let Value::Int(n) = self.field(i)? {
            return Ok(*n);
        }
        let raw = self.text(i)?;
        raw.parse::<i64>().map_err(|_| {
            LockError::corrupt(BACKEND, format!("{what} {raw:?} is not a valid timestamp"))
        })
    }

    /// The error for a `corrupt` reply, or for a status this code does not expect.
    pub(crate) fn into_error(self) -> LockError {
        if self.status() == "corrupt" {
            let detail = self
                .text(0)
                .unwrap_or_else(|_| "unreadable lease data".to_owned());
            LockError::corrupt(BACKEND, detail)
        } else {
            LockError::backend(
                BACKEND,
                format!(
                    "the {} script answered {:?}, which this version does not understand",
                    self.script,
                    self.status()
                ),
            )
        }
    }

    fn field(&self, i: usize) -> Result<&Value> {
        self.items.get(i + 1).ok_or_else(|| {
            LockError::backend(
                BACKEND,
                format!(
                    "the {} script's {:?} reply lacks field {i}",
                    self.script,
                    self.status()
                ),
            )
        })
    }
}

/// The error for a reply that is not a script's answer on its hot path: a `corrupt`
/// report, or a reply this version does not understand.
pub(crate) fn failure(script: &'static str, value: Value) -> LockError {
    match Reply::parse(script, value) {
        Ok(reply) => reply.into_error(),
        Err(error) => error,
    }
}

/// A fence sent as an integer: positive, since counters start at the server's clock.
pub(crate) fn fence(script: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).ok().filter(|f| *f > 0).ok_or_else(|| {
        LockError::corrupt(
            BACKEND,
            format!("the {script} script issued fence {value}, which is not a valid fence"),
        )
    })
}

/// A status word: short ASCII text.
fn as_str(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
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
        assert_eq!(reply.optional_text(0).unwrap().as_deref(), Some("42"));
        assert_eq!(reply.optional_text(2).unwrap(), None);
    }

    #[test]
    fn corrupt_replies_become_corrupt_errors() {
        let reply =
            Reply::parse("inspect", Value::Array(vec![bulk("corrupt"), bulk("bad")])).unwrap();
        assert!(matches!(reply.into_error(), LockError::Corrupt { detail, .. } if detail == "bad"));
    }

    #[test]
    fn failures_are_corrupt_or_backend_errors() {
        let corrupt = Value::Array(vec![bulk("corrupt"), bulk("bad")]);
        assert!(
            matches!(failure("x", corrupt), LockError::Corrupt { detail, .. } if detail == "bad")
        );
        for odd in [
            Value::Int(7),
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![bulk("what")]),
        ] {
            assert!(matches!(failure("x", odd), LockError::Backend { .. }));
        }
        assert_eq!(fence("acquire", 42).unwrap(), 42);
        for bad in [0, -3] {
            assert!(matches!(
                fence("acquire", bad),
                Err(LockError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn a_script_without_a_marker_gets_the_helpers_first() {
        let plain = LockScript::new("-- common\n", "return 1\n");
        assert_eq!(plain.code, "-- common\n\nreturn 1\n");
        let split = LockScript::new("-- common\n", "hot()\n-- @helpers\ncold()\n");
        assert_eq!(split.code, "hot()\n-- common\n\ncold()\n");
        for script in [&*ACQUIRE, &*RELEASE, &*HEARTBEAT] {
            assert_eq!(
                script.code.matches("local function parse_record").count(),
                1,
                "the helpers are in each script once"
            );
            assert!(!script.code.contains(HELPERS_MARKER));
        }
    }

    fn words(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|a| match a {
                Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn every_form_of_a_call_carries_the_same_keys_and_arguments() {
        let with = |command: &[u8], script: &str| -> Vec<Vec<u8>> {
            [command, script.as_bytes(), b"1", b"k", b"t", b"7"]
                .map(<[u8]>::to_vec)
                .to_vec()
        };
        let (fcall, evalsha) = (
            with(b"FCALL", &RELEASE.function),
            with(b"EVALSHA", &RELEASE.hash),
        );
        let eval = with(b"EVAL", &RELEASE.code);
        assert_eq!(RELEASE.function, LIBRARY.function("release"));

        // Each mode sends its own command first; both fall back to the same EVAL and reload
        // to the same FCALL.
        for (scripting, first) in [
            (Scripting::default(), &fcall),
            (Scripting::without_functions(), &evalsha),
        ] {
            let mut call = RELEASE.call(1, &scripting);
            call.arg("k").arg("t").arg(7_u32);
            assert_eq!(&words(call.command()), first);
            assert_eq!(words(&call.eval()), eval);
            assert_eq!(words(&call.with_script("FCALL", &RELEASE.function)), fcall);
        }
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
        let scripts = [
            &ACQUIRE,
            &ACQUIRE_PERMIT,
            &HEARTBEAT,
            &HEARTBEAT_MANY,
            &RELEASE,
            &FORCE_RELEASE,
            &INSPECT,
            &REGISTER,
            &PASS_ON,
        ];
        let mut hashes: Vec<&str> = scripts.iter().map(|s| s.hash()).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), scripts.len());
    }
}
