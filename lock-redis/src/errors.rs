//! Turning driver errors into [`LockError`]s.

use std::time::Duration;

use lock_core::LockError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::BACKEND;

/// Classifies a driver error: the server unreachable, busy or failing over is
/// `Unavailable` (transient); refused credentials or configuration are `Config`; data of the
/// wrong type is `Corrupt`; anything else is `Backend`.
pub(crate) fn from_redis(error: RedisError) -> LockError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        return LockError::unavailable(BACKEND, error);
    }
    match error.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        )
        | ErrorKind::ClusterConnectionNotFound => LockError::unavailable(BACKEND, error),
        ErrorKind::AuthenticationFailed => LockError::config(
            BACKEND,
            format!(
                "the server refused the credentials ({error}); check the user name and password \
                 in the URL (redis://user:password@host:port)"
            ),
        ),
        ErrorKind::Server(ServerErrorKind::NoPerm) => LockError::config(
            BACKEND,
            format!(
                "the Redis user lacks a permission the lock scripts need ({error}); allow EVAL, \
                 EVALSHA, SCRIPT, PUBLISH, SUBSCRIBE, SCAN and the lock keys in its ACL"
            ),
        ),
        ErrorKind::InvalidClientConfig => LockError::config(BACKEND, error.to_string()),
        _ if error.code() == Some("WRONGTYPE") => LockError::corrupt(
            BACKEND,
            format!("a lock key holds data of another type: {error}"),
        ),
        _ if error.code() == Some("NOAUTH") || error.code() == Some("WRONGPASS") => {
            LockError::config(
                BACKEND,
                format!(
                    "the server requires authentication ({error}); put the user name and \
                     password in the URL (redis://user:password@host:port)"
                ),
            )
        }
        _ => LockError::backend(BACKEND, error),
    }
}

/// The error for an operation that did not finish within `limit`.
pub(crate) fn timed_out(operation: &str, limit: Duration) -> LockError {
    LockError::unavailable(
        BACKEND,
        format!("{operation} got no answer from Redis within {limit:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failures_are_transient() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(from_redis(refused).is_transient());
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(from_redis(timeout).is_transient());
        assert!(timed_out("acquire", Duration::from_secs(2)).is_transient());
    }

    #[test]
    fn credentials_and_config_are_config_errors() {
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "nope"));
        assert!(matches!(from_redis(auth), LockError::Config { .. }));
        let bad = RedisError::from((ErrorKind::InvalidClientConfig, "bad url"));
        assert!(matches!(from_redis(bad), LockError::Config { .. }));
    }

    #[test]
    fn script_errors_are_backend_errors() {
        let other = RedisError::from((ErrorKind::Client, "something odd"));
        assert!(matches!(from_redis(other), LockError::Backend { .. }));
    }
}
