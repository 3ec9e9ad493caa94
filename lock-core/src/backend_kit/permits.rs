//! Semaphore limits: the bounds every backend checks, and the error for a caller whose limit
//! differs from the live holders'.

use crate::error::{LockError, Result};
use crate::name::LockName;

/// The largest semaphore limit ([`LockBackend::try_acquire_permit`](crate::LockBackend::try_acquire_permit)).
/// Each permit is a lease the store keeps and scans, so limits are meant for "a handful of
/// builds at once", not for counting requests.
pub const MAX_PERMITS: u32 = 1024;

/// Checks a semaphore limit: 1 to [`MAX_PERMITS`].
///
/// # Errors
///
/// [`LockError::Config`] naming the limit and the bounds.
pub fn validate_limit(limit: u32) -> Result<u32> {
    if limit == 0 || limit > MAX_PERMITS {
        return Err(LockError::config(
            "leaselock",
            format!(
                "a semaphore limit of {limit} is not allowed: use 1 (a lock) to {MAX_PERMITS} \
                 (LockOptions::with_limit)"
            ),
        ));
    }
    Ok(limit)
}

/// The error for a caller asking for `name` with limit `asked` while its live holders use
/// limit `held`.
pub fn limit_mismatch(backend: &'static str, name: &LockName, held: u32, asked: u32) -> LockError {
    LockError::config(
        backend,
        format!(
            "lock \"{name}\" is held with a limit of {held} (a {}), but this caller asked for \
             a limit of {asked}; every user of one name must ask for the same limit \
             (LockOptions::with_limit)",
            if held == 1 { "lock" } else { "semaphore" }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        assert!(validate_limit(0).is_err());
        assert_eq!(validate_limit(1).unwrap(), 1);
        assert_eq!(validate_limit(MAX_PERMITS).unwrap(), MAX_PERMITS);
        let e = validate_limit(MAX_PERMITS + 1).unwrap_err().to_string();
        assert!(e.contains("with_limit"), "{e}");
    }

    #[test]
    fn a_mismatch_names_both_limits() {
        let name = LockName::new("builds").unwrap();
        let e = limit_mismatch("sqlite", &name, 3, 2).to_string();
        assert!(e.contains("limit of 3") && e.contains("limit of 2"), "{e}");
        assert!(e.contains("semaphore"), "{e}");
    }
}
