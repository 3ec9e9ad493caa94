//! Turning driver errors into [`LockError`]s.

use std::time::Duration;

use lock_core::LockError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::BACKEND;

/// The commands this backend sends: at the top level, and inside its scripts.
const COMMANDS: &str = "+ping +fcall +function|load +evalsha +eval +subscribe +scan \
    +cluster|slots +wait +exists +type +get +set +del +pttl +pexpire +hget +hmget +hset +hdel \
    +hexists +hgetall +zadd +zpopmin +publish +time";

/// Redis refuses a command inside a script with an `ERR` whose text says why (not with a
/// `NOPERM` code), for a command, a key or a channel the ACL user may not use.
const SCRIPT_ACL_REFUSAL: &str = "user executing the script can't";

/// What errors are about, so their messages can say exactly what to change.
#[derive(Clone, Debug)]
pub(crate) struct ErrorContext {
    /// Connected to a Redis Cluster (where `READONLY` means a failover is under way).
    pub(crate) cluster: bool,
    /// Connected through Sentinels (where `READONLY` means a failover is under way).
    pub(crate) sentinel: bool,
    /// The key prefix, for the ACL rule a refused user needs.
    pub(crate) key_prefix: String,
    /// The channel version 1 announced releases on, for the same rule.
    pub(crate) channel: String,
    /// The prefix of the clients' wake-up channels, for the same rule.
    pub(crate) wake_prefix: String,
}

impl ErrorContext {
    /// The ACL rule that lets a user do everything this backend does under its prefix.
    pub(crate) fn acl_rule(&self) -> String {
        let prefix = escape_acl_glob(&self.key_prefix);
        let channel = escape_acl_glob(&self.channel);
        let wake = escape_acl_glob(&self.wake_prefix);
        format!("{COMMANDS} ~{prefix}* &{channel} &{wake}*")
    }

    /// The error for a permission the server's ACL refused.
    pub(crate) fn acl_refusal(&self, error: impl std::fmt::Display) -> LockError {
        LockError::config(
            BACKEND,
            format!(
                "the Redis user lacks a permission the lock backend needs ({error}); grant it \
                 with `ACL SETUSER <user> {}` (or the same rules in the ACL file; on Redis 6, \
                 without +fcall +function|load)",
                self.acl_rule()
            ),
        )
    }
}

/// Classifies a driver error: the server unreachable, busy, failing over or a read-only
/// replica is `Unavailable` (transient: a failover may make it the primary); refused
/// credentials or permissions are `Config`; data of the wrong type is `Corrupt`; anything
/// else is `Backend`.
pub(crate) fn from_redis(error: RedisError, context: &ErrorContext) -> LockError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        return LockError::unavailable(BACKEND, error);
    }
    match error.kind() {
        // On a cluster, a write that reaches a master just demoted to replica: the driver
        // refreshes its slot map and retries, and this only escapes when that ran out.
        ErrorKind::Server(ServerErrorKind::ReadOnly) if context.cluster || context.sentinel => {
            LockError::unavailable(
                BACKEND,
                format!("{error} (a failover is under way; retry when it has finished)"),
            )
        }
        // A write that reaches a replica: leases must be written on the primary. Not a
        // configuration error: after a failover the same address may be the primary again.
        ErrorKind::Server(ServerErrorKind::ReadOnly) => LockError::unavailable(
            BACKEND,
            format!(
                "the server is a read-only replica ({error}); point the URL at the primary \
                 (the master) of the replication group, or use a \
                 redis+sentinel://host:port/master-name URL to follow the primary through \
                 failovers"
            ),
        ),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
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
        ErrorKind::Server(ServerErrorKind::NoPerm) => context.acl_refusal(error),
        _ if error.to_string().contains(SCRIPT_ACL_REFUSAL) => context.acl_refusal(error),
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

/// Escapes the characters ACL key and channel patterns treat specially.
fn escape_acl_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standalone() -> ErrorContext {
        ErrorContext {
            cluster: false,
            sentinel: false,
            key_prefix: "app:locks:".to_owned(),
            channel: "app:locks:released".to_owned(),
            wake_prefix: "app:locks:wake:".to_owned(),
        }
    }

    #[test]
    fn io_failures_are_transient() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(from_redis(refused, &standalone()).is_transient());
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(from_redis(timeout, &standalone()).is_transient());
        assert!(timed_out("acquire", Duration::from_secs(2)).is_transient());
    }

    #[test]
    fn credentials_and_config_are_config_errors() {
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "nope"));
        assert!(matches!(
            from_redis(auth, &standalone()),
            LockError::Config { .. }
        ));
        let bad = RedisError::from((ErrorKind::InvalidClientConfig, "bad url"));
        assert!(matches!(
            from_redis(bad, &standalone()),
            LockError::Config { .. }
        ));
    }

    #[test]
    fn acl_refusals_name_the_rule_to_grant() {
        let refusals = [
            RedisError::from((
                ErrorKind::Server(ServerErrorKind::NoPerm),
                "this user has no permissions to run the 'evalsha' command",
            )),
            RedisError::from((
                ErrorKind::Server(ServerErrorKind::ResponseError),
                "The user executing the script can't run this command or subcommand",
            )),
        ];
        for refusal in refusals {
            match from_redis(refusal, &standalone()) {
                LockError::Config { detail, .. } => {
                    assert!(detail.contains("ACL SETUSER"), "{detail}");
                    assert!(detail.contains("~app:locks:*"), "{detail}");
                    assert!(detail.contains("&app:locks:released"), "{detail}");
                    assert!(detail.contains("&app:locks:wake:*"), "{detail}");
                    assert!(detail.contains("+evalsha"), "{detail}");
                }
                other => panic!("expected Config, got {other:?}"),
            }
        }
        let odd = ErrorContext {
            cluster: false,
            sentinel: false,
            key_prefix: "a*b".to_owned(),
            channel: "a*breleased:3".to_owned(),
            wake_prefix: "a*bwake:".to_owned(),
        };
        assert!(odd.acl_rule().contains("~a\\*b*"), "{}", odd.acl_rule());
        assert!(
            odd.acl_rule().ends_with("&a\\*breleased:3 &a\\*bwake:*"),
            "{}",
            odd.acl_rule()
        );
    }

    #[test]
    fn a_read_only_replica_is_unavailable_and_says_so() {
        let readonly = || {
            RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "You can't write against a read only replica.",
            ))
        };
        match from_redis(readonly(), &standalone()) {
            e @ LockError::Unavailable { .. } => {
                let text = e.to_string();
                assert!(
                    text.contains("replica")
                        && text.contains("primary")
                        && text.contains("sentinel"),
                    "{text}"
                );
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        for context in [
            ErrorContext {
                cluster: true,
                ..standalone()
            },
            ErrorContext {
                sentinel: true,
                ..standalone()
            },
        ] {
            assert!(from_redis(readonly(), &context).is_transient());
        }
    }

    #[test]
    fn script_errors_are_backend_errors() {
        let other = RedisError::from((ErrorKind::Client, "something odd"));
        assert!(matches!(
            from_redis(other, &standalone()),
            LockError::Backend { .. }
        ));
    }
}
