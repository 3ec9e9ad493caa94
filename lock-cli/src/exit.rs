//! lockctl's exit codes: the child's own status when it ran, else one of these.
//!
//! Which error ends lockctl with which code is [`CliError::exit_code`](crate::error::CliError::exit_code).

/// The lock was not acquired: held by someone else with `--no-wait`, or `--wait` ran out.
pub(crate) const NOT_ACQUIRED: u8 = 75;
/// The lease was lost while the command ran; the command was terminated.
pub(crate) const LEASE_LOST: u8 = 76;
/// The lock store failed: unreachable, busy past its budget, or holding unreadable data.
/// Also an operating-system failure of lockctl's own (it lost track of the command).
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

/// The shell's convention for a child's exit status: its code, or 128 + the signal.
pub(crate) fn for_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => for_signal(signal),
        (None, None) => 1,
    }
}

/// The shell's convention for signal `number`: 128 + the signal.
pub(crate) fn for_signal(number: libc::c_int) -> u8 {
    u8::try_from(128 + number).unwrap_or(255)
}
