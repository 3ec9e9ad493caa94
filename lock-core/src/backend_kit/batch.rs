//! One failure reported for every lease of a batch (`heartbeat_many`).
//!
//! [`LockError`] is not `Clone` (its sources are boxed errors), so a failure that ends a
//! whole batch is rebuilt once per lease: the same variant, backend and message, with the
//! original source shared behind an `Arc` so its chain is kept.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::error::{BoxError, LockError};

/// A boxed source shared by several errors.
#[derive(Debug, Clone)]
struct Shared(Arc<dyn Error + Send + Sync + 'static>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Shared {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

fn shared(source: BoxError) -> Shared {
    Shared(Arc::from(source))
}

/// `n` results, each failed with a copy of `error`.
///
/// ```
/// use lock_core::LockError;
/// use lock_core::backend_kit::batch::all_failed;
///
/// let copies: Vec<Result<(), LockError>> = all_failed(LockError::unavailable("redis", "down"), 3);
/// assert_eq!(copies.len(), 3);
/// assert!(copies.iter().all(|r| r.as_ref().is_err_and(LockError::is_transient)));
/// ```
pub fn all_failed<T>(error: LockError, n: usize) -> Vec<Result<T, LockError>> {
    let one: Box<dyn Fn() -> LockError> = match error {
        LockError::Unavailable { backend, source } => {
            let source = shared(source);
            Box::new(move || LockError::Unavailable {
                backend,
                source: Box::new(source.clone()),
            })
        }
        LockError::Backend { backend, source } => {
            let source = shared(source);
            Box::new(move || LockError::Backend {
                backend,
                source: Box::new(source.clone()),
            })
        }
        LockError::Corrupt { backend, detail } => Box::new(move || LockError::Corrupt {
            backend,
            detail: detail.clone(),
        }),
        LockError::Config { backend, detail } => Box::new(move || LockError::Config {
            backend,
            detail: detail.clone(),
        }),
        LockError::InvalidTtl { ttl, reason } => {
            Box::new(move || LockError::InvalidTtl { ttl, reason })
        }
        LockError::InvalidName { name, reason } => Box::new(move || LockError::InvalidName {
            name: name.clone(),
            reason,
        }),
        LockError::LeaseLost { name } => {
            Box::new(move || LockError::LeaseLost { name: name.clone() })
        }
        LockError::Timeout { name, waited } => Box::new(move || LockError::Timeout {
            name: name.clone(),
            waited,
        }),
        LockError::Unsupported { backend, operation } => {
            Box::new(move || LockError::Unsupported { backend, operation })
        }
    };
    (0..n).map(|_| Err(one())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_copy_has_the_variant_message_and_source() {
        let copies: Vec<Result<(), _>> =
            all_failed(LockError::unavailable("sqlite", "database busy"), 3);
        assert_eq!(copies.len(), 3);
        for e in copies.iter().map(|r| r.as_ref().unwrap_err()) {
            assert!(e.is_transient(), "{e}");
            assert_eq!(
                e.to_string(),
                LockError::unavailable("sqlite", "database busy").to_string()
            );
            assert_eq!(
                e.source().map(ToString::to_string).as_deref(),
                Some("database busy")
            );
        }
        let copies: Vec<Result<(), _>> = all_failed(LockError::corrupt("sqlite", "bad row"), 2);
        assert_eq!(copies.len(), 2);
        assert!(
            copies.iter().all(
                |r| matches!(r, Err(LockError::Corrupt { detail, .. }) if detail == "bad row")
            )
        );
        let e = crate::backend_kit::time::validate_ttl(std::time::Duration::ZERO).unwrap_err();
        let copies: Vec<Result<(), _>> = all_failed(e, 2);
        assert!(
            copies
                .iter()
                .all(|r| matches!(r, Err(LockError::InvalidTtl { .. })))
        );
        let name = crate::LockName::new("x").unwrap();
        let copies: Vec<Result<(), _>> = all_failed(LockError::LeaseLost { name }, 2);
        assert!(
            copies
                .iter()
                .all(|r| matches!(r, Err(LockError::LeaseLost { .. })))
        );
        assert!(all_failed::<()>(LockError::backend("sqlite", "x"), 0).is_empty());
    }
}
