//! lockctl's exit codes: the child's own status when it ran, else one of these.

use leaselock::LockError;

/// The lock was not acquired: held by someone else with `--no-wait`, or `--wait` ran out.
pub(crate) const NOT_ACQUIRED: u8 = 75;
/// The lease was lost while the command ran; the command was terminated.
pub(crate) const LEASE_LOST: u8 = 76;
/// The lock store failed: unreachable, busy past its budget, or holding unreadable data.
pub(crate) const BACKEND_ERROR: u8 = 69;
/// Bad configuration: a bad URL, name, TTL, or a store that cannot be used as given.
pub(crate) const CONFIG_ERROR: u8 = 78;
/// Bad command-line arguments (an unknown option, a malformed duration).
pub(crate) const USAGE: u8 = 64;
/// The command could not be executed (permission denied, not executable).
pub(crate) const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub(crate) const NOT_FOUND: u8 = 127;
/// A conformance run found failures.
pub(crate) const SUITE_FAILED: u8 = 1;

/// The exit code for an error that ends lockctl.
pub(crate) fn for_error(error: &LockError) -> u8 {
    match error {
        LockError::Timeout { .. } => NOT_ACQUIRED,
        LockError::LeaseLost { .. } => LEASE_LOST,
        LockError::InvalidName { .. } | LockError::InvalidTtl { .. } | LockError::Config { .. } => {
            CONFIG_ERROR
        }
        _ => BACKEND_ERROR,
    }
}

/// The shell's convention for a child's exit status: its code, or 128 + the signal.
pub(crate) fn for_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}
