//! Who holds a lease: an unguessable owner token plus descriptive fields for humans.

use std::fmt;
use std::str::FromStr;

use crate::error::LockError;

/// A random 128-bit token that identifies one acquisition.
///
/// It is drawn from a cryptographically secure generator, so it cannot be guessed, and it is
/// the only thing a backend accepts to heartbeat or release a lease. Treat it like a
/// password: `Debug` shows only its first 8 hex digits, while `Display` and
/// [`to_hex`](Self::to_hex) give the full 32.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken(u128);

impl OwnerToken {
    /// A fresh random token.
    pub fn random() -> Self {
        // A token of zero is reserved so that stores can use it as "no owner".
        loop {
            let token: u128 = rand::random();
            if token != 0 {
                return Self(token);
            }
        }
    }

    /// The token as a number, for stores that keep it in binary form.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Rebuilds a token read back from a store. Returns `None` for zero, which is never issued.
    pub fn from_u128(value: u128) -> Option<Self> {
        (value != 0).then_some(Self(value))
    }

    /// The token as 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

impl fmt::Display for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerToken({:08x}…)", self.0 >> 96)
    }
}

impl FromStr for OwnerToken {
    type Err = LockError;

    /// Parses the 32-hex-digit form produced by `Display`.
    fn from_str(s: &str) -> Result<Self, LockError> {
        let bad = || LockError::Config {
            backend: "leaselock",
            detail:
                "an owner token must be 32 hex digits (as printed by lockctl or OwnerToken::to_hex)"
                    .into(),
        };
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u128::from_str_radix(s, 16)
            .ok()
            .and_then(Self::from_u128)
            .ok_or_else(bad)
    }
}

/// Who holds (or asks for) a lease.
///
/// The [`token`](Self::token) is what the store checks; `label`, `pid` and `host` are for
/// humans reading `inspect` output or `lockctl status`.
///
/// ```
/// use lock_core::Holder;
///
/// let me = Holder::current("nightly-report");
/// assert_eq!(me.pid, std::process::id());
/// assert_ne!(me.token, Holder::current("nightly-report").token);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The secret that proves ownership.
    pub token: OwnerToken,
    /// Free text describing the holder (a job name, a worker id).
    pub label: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Host name of the holder.
    pub host: String,
}

impl Holder {
    /// A holder for this process: a fresh random token, this process's pid and host name.
    pub fn current(label: impl Into<String>) -> Self {
        Self {
            token: OwnerToken::random(),
            label: label.into(),
            pid: std::process::id(),
            host: host_name(),
        }
    }

    /// A holder with every field given, for stores and tests that rebuild one.
    pub fn new(
        token: OwnerToken,
        label: impl Into<String>,
        pid: u32,
        host: impl Into<String>,
    ) -> Self {
        Self {
            token,
            label: label.into(),
            pid,
            host: host.into(),
        }
    }
}

/// The name of this host, as the kernel reports it, or `"unknown"`.
pub fn host_name() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        from_kernel
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .or_else(|| {
                std::process::Command::new("hostname")
                    .output()
                    .ok()
                    .and_then(|o| String::from_utf8(o.stdout).ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "unknown".to_owned())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_round_trip() {
        let a = OwnerToken::random();
        let b = OwnerToken::random();
        assert_ne!(a, b);
        assert_eq!(a.to_hex().parse::<OwnerToken>().unwrap(), a);
        assert_eq!(OwnerToken::from_u128(a.as_u128()), Some(a));
        assert_eq!(OwnerToken::from_u128(0), None);
    }

    #[test]
    fn debug_does_not_leak_the_whole_token() {
        let t = OwnerToken::random();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.to_hex()), "{shown}");
    }

    #[test]
    fn bad_token_text_is_a_config_error() {
        for bad in ["", "xyz", &"0".repeat(32), &"g".repeat(32)] {
            assert!(
                matches!(bad.parse::<OwnerToken>(), Err(LockError::Config { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn current_fills_pid_and_host() {
        let h = Holder::current("job");
        assert_eq!(h.label, "job");
        assert_eq!(h.pid, std::process::id());
        assert!(!h.host.is_empty());
    }
}
