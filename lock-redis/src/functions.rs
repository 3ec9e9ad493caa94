//! The scripts as a Redis 7 function library, and the choice between functions and scripts.
//!
//! On Redis 7.0 and later every script is also registered as a function of one library
//! (`FUNCTION LOAD`) and called with `FCALL`. A call then costs the server about 3,000
//! fewer instructions than `EVALSHA` (measured with empty scripts), and the shared helpers
//! are defined once, at load, instead of on every call that needs them: about 4% of the
//! server's instructions per acquire + release pair (BENCHMARKS.md). The library is named
//! after a hash of its source (`leaselock_<16 hex digits>`, its functions
//! `leaselock_<hash>_<script>`), so versions of this crate never call each other's code
//! and a deployment can run several at once.
//!
//! A server that lacks the library (it restarted without persistence, or someone ran
//! `FUNCTION FLUSH`) answers `Function not found`: the library is loaded and the call sent
//! again. A server that cannot run functions (older than 7.0), or a user whose ACL refuses
//! `FCALL` or `FUNCTION LOAD`, makes this backend use the scripts (`EVALSHA`) from then on.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, ServerError, ServerErrorKind};

use crate::scripts::{COMMON, HELPERS_MARKER, SOURCES, Source};

/// The function library: the shared helpers once, then each script as a function.
#[derive(Debug)]
pub(crate) struct Library {
    /// `leaselock_<hash>`: also the prefix of every function's name.
    name: String,
    /// The source `FUNCTION LOAD` gets.
    code: String,
}

impl Library {
    /// The library of `scripts`, sharing `common`.
    pub(crate) fn new(common: &str, scripts: &[Source]) -> Self {
        let mut sources = String::from(common);
        for script in scripts {
            sources.push_str(script.name);
            sources.push_str(script.code);
            sources.push_str(if script.read_only { "r" } else { "w" });
        }
        let hash = redis::Script::new(&sources).get_hash().to_owned();
        let name = format!("leaselock_{}", &hash[..16]);
        let mut code = format!("#!lua name={name}\n{common}\n");
        for script in scripts {
            // Each script's body runs as the function; its hot path no longer needs to come
            // before the helpers, which the library defines once, at load.
            let body = script.code.replace(HELPERS_MARKER, "");
            let flags = if script.read_only { "'no-writes'" } else { "" };
            code.push_str(&format!(
                "redis.register_function{{function_name = '{name}_{}', flags = {{{flags}}}, \
                 callback = function(KEYS, ARGV)\n{body}\nend}}\n",
                script.name
            ));
        }
        Self { name, code }
    }

    /// The name `FCALL` calls `script` by.
    pub(crate) fn function(&self, script: &str) -> String {
        format!("{}_{script}", self.name)
    }

    /// Loads the library (again: `REPLACE` makes a concurrent load by another client a
    /// success, not an error). On a cluster the driver sends it to every primary.
    async fn load(&self, conn: &mut impl ConnectionLike) -> RedisResult<()> {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(self.code.as_str())
            .exec_async(conn)
            .await
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    #[cfg(test)]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// This crate's library.
pub(crate) static LIBRARY: LazyLock<Library> = LazyLock::new(|| Library::new(COMMON, &SOURCES));

/// Whether a backend calls functions or scripts: functions until the server shows it
/// cannot run them for this user.
#[derive(Debug, Default)]
pub(crate) struct Scripting {
    scripts_only: AtomicBool,
}

impl Scripting {
    /// Whether calls go out as `FCALL`.
    pub(crate) fn functions(&self) -> bool {
        !self.scripts_only.load(Ordering::Relaxed)
    }

    /// Calls that go out as scripts from the start.
    #[cfg(test)]
    pub(crate) fn without_functions() -> Self {
        Self {
            scripts_only: AtomicBool::new(true),
        }
    }

    /// From now on, calls go out as scripts, because of `why`.
    fn use_scripts(&self, why: &RedisError) {
        if !self.scripts_only.swap(true, Ordering::Relaxed) {
            tracing::info!(
                reason = %why,
                "this Redis server or user cannot run functions; calling the lock scripts \
                 with EVALSHA instead"
            );
        }
    }

    /// What a call that failed with `error` should do next.
    pub(crate) async fn after(&self, error: &RedisError, conn: &mut impl ConnectionLike) -> Retry {
        if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) {
            return Retry::Eval;
        }
        if refuses_functions(error) {
            self.use_scripts(error);
            return Retry::Eval;
        }
        if !function_missing(error) {
            return Retry::No;
        }
        match LIBRARY.load(conn).await {
            Ok(()) => Retry::Fcall,
            Err(refused) if refuses_functions(&refused) => {
                self.use_scripts(&refused);
                Retry::Eval
            }
            // Whatever stopped the load (a full or read-only server, say), the script
            // either runs or says so in its own words.
            Err(other) => {
                tracing::debug!(error = %other, "could not load the lock function library");
                Retry::Eval
            }
        }
    }
}

/// What to do after a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Report the error.
    No,
    /// Send the call again as `FCALL` (the library is loaded now).
    Fcall,
    /// Send the script in full with `EVAL` (which also caches it for `EVALSHA`).
    Eval,
}

/// The server's error for the call: the error itself, or, from a pipeline (the call
/// followed by `WAIT`), the call's.
fn call_error(error: &RedisError) -> Option<ServerError> {
    let errors = error.clone().into_server_errors()?;
    errors
        .iter()
        .find_map(|(index, e)| (*index == 0).then(|| e.clone()))
}

/// `FCALL` of a function the server does not have.
fn function_missing(error: &RedisError) -> bool {
    call_error(error).is_some_and(|e| {
        e.code() == "ERR"
            && e.details()
                .is_some_and(|d| d.starts_with("Function not found"))
    })
}

/// A server that has no functions (Redis before 7.0), or an ACL that refuses `FCALL` or
/// `FUNCTION LOAD` to this user.
fn refuses_functions(error: &RedisError) -> bool {
    let Some(error) = call_error(error) else {
        return false;
    };
    let detail = error.details().unwrap_or_default().to_ascii_lowercase();
    let about_functions =
        |command: &str| command.starts_with("fcall") || command.starts_with("function");
    match error.kind() {
        // "this user has no permissions to run the 'fcall' command"
        Some(ServerErrorKind::NoPerm) => detail
            .split_once("to run the '")
            .is_some_and(|(_, command)| about_functions(command)),
        // "unknown command `FCALL`, with args beginning with: ..." (Redis 6)
        _ => {
            error.code() == "ERR"
                && detail
                    .strip_prefix("unknown command ")
                    .is_some_and(|rest| about_functions(rest.trim_start_matches(['`', '\''])))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a server sends as `-<code> <detail>`.
    fn server_error(code: &str, detail: &str) -> RedisError {
        let wire = format!("-{code} {detail}\r\n");
        let value = redis::parse_redis_value(wire.as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn the_library_registers_every_script_once_under_its_hashed_name() {
        let library = &*LIBRARY;
        let name = library.name();
        assert!(name.starts_with("leaselock_"), "{name}");
        assert_eq!(name.len(), "leaselock_".len() + 16);
        assert!(library.code().starts_with(&format!("#!lua name={name}\n")));
        for script in SOURCES {
            let registration = format!(
                "redis.register_function{{function_name = '{name}_{}', flags = {{{}}},",
                script.name,
                if script.read_only { "'no-writes'" } else { "" }
            );
            assert_eq!(
                library.code().matches(&registration).count(),
                1,
                "{}",
                script.name
            );
        }
        assert_eq!(
            library
                .code()
                .matches("local function parse_record")
                .count(),
            1,
            "the helpers once, for every function"
        );
        assert!(!library.code().contains(HELPERS_MARKER));
        // Another version of a script is another library, so versions never mix.
        let script = |code| Source {
            name: "acquire",
            code,
            read_only: false,
        };
        let other = Library::new("-- common\n", &[script("return 2\n")]);
        let same = Library::new("-- common\n", &[script("return 2\n")]);
        let changed = Library::new("-- common\n", &[script("return 3\n")]);
        assert_eq!(other.name(), same.name());
        assert_ne!(other.name(), changed.name());
        assert_eq!(
            other.function("acquire"),
            format!("{}_acquire", other.name())
        );
    }

    #[test]
    fn errors_tell_a_missing_function_from_a_server_without_functions() {
        let missing = server_error("ERR", "Function not found");
        assert!(function_missing(&missing));
        assert!(!refuses_functions(&missing));
        // The call followed by WAIT: the call's error counts, not another command's.
        let failed_call = redis::parse_redis_value(b"*2\r\n-ERR Function not found\r\n:0\r\n")
            .unwrap()
            .extract_error()
            .unwrap_err();
        assert!(function_missing(&failed_call), "{failed_call}");
        for refusal in [
            server_error(
                "NOPERM",
                "this user has no permissions to run the 'fcall' command",
            ),
            server_error(
                "NOPERM",
                "this user has no permissions to run the 'function|load' command",
            ),
            server_error(
                "ERR",
                "unknown command `FCALL`, with args beginning with: `x`, `0`, ",
            ),
            server_error("ERR", "unknown command 'function'"),
        ] {
            assert!(refuses_functions(&refusal), "{refusal}");
            assert!(!function_missing(&refusal), "{refusal}");
        }
        for other in [
            server_error("NOPERM", "No permissions to access a key"),
            server_error("ERR", "user executing the script can't run this command"),
            server_error(
                "WRONGTYPE",
                "Operation against a key holding the wrong kind",
            ),
        ] {
            assert!(!refuses_functions(&other), "{other}");
            assert!(!function_missing(&other), "{other}");
        }
    }
}
