//! One failure reported for every lease of a batch.
//!
//! [`LockError`] is not `Clone` (its sources are boxed errors), so a failure that ends a
//! whole `heartbeat_many` transaction is rebuilt once per lease: the same variant and
//! message, with the original source shared behind an `Arc` so its chain is kept.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use lock_core::{BoxError, LockError};

use crate::BACKEND;

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

/// `n` results, each failed with `error`.
pub(crate) fn all_failed<T>(error: LockError, n: usize) -> Vec<Result<T, LockError>> {
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
        // Not produced for a whole batch today; keep the message if that changes.
        other => {
            let message = other.to_string();
            Box::new(move || LockError::backend(BACKEND, message.clone()))
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
            all_failed(LockError::unavailable(BACKEND, "database busy"), 3);
        assert_eq!(copies.len(), 3);
        for e in copies.iter().map(|r| r.as_ref().unwrap_err()) {
            assert!(e.is_transient(), "{e}");
            assert_eq!(
                e.to_string(),
                LockError::unavailable(BACKEND, "database busy").to_string()
            );
            assert_eq!(
                e.source().map(ToString::to_string).as_deref(),
                Some("database busy")
            );
        }
        let copies: Vec<Result<(), _>> = all_failed(LockError::corrupt(BACKEND, "bad row"), 2);
        assert_eq!(copies.len(), 2);
        assert!(
            copies.iter().all(
                |r| matches!(r, Err(LockError::Corrupt { detail, .. }) if detail == "bad row")
            )
        );
        let ttl = std::time::Duration::ZERO;
        let e = lock_core::backend_kit::time::validate_ttl(ttl).unwrap_err();
        let copies: Vec<Result<(), _>> = all_failed(e, 2);
        assert_eq!(copies.len(), 2);
        assert!(
            copies
                .iter()
                .all(|r| matches!(r, Err(LockError::InvalidTtl { .. })))
        );
        assert!(all_failed::<()>(LockError::backend(BACKEND, "x"), 0).is_empty());
    }
}
