//! [`Driver`]: how a backend crate tells the `leaselock` facade which URLs it serves and how
//! to connect to one (model: sqlx's `AnyDriver`). The facade's `connect(url)` is built from
//! the list of compiled-in drivers, so adding a backend is one line there.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::backend::LockBackend;
use crate::error::Result;

/// A connection in progress, as a [`Driver`] returns it.
pub type Connecting = Pin<Box<dyn Future<Output = Result<Arc<dyn LockBackend>>> + Send>>;

/// One backend's URL schemes and connector.
///
/// ```
/// use std::sync::Arc;
/// use lock_core::backend_kit::Driver;
/// use lock_core::memory::MemoryBackend;
///
/// pub const DRIVER: Driver = Driver {
///     name: "memory",
///     schemes: &["memory"],
///     connect: |_url| Box::pin(async { Ok(Arc::new(MemoryBackend::new()) as _) }),
/// };
/// assert!(DRIVER.serves("MEMORY://anything"));
/// assert!(!DRIVER.serves("redis://localhost"));
/// ```
#[derive(Clone, Copy)]
pub struct Driver {
    /// The backend's name, as in its errors (`"sqlite"`, `"redis"`, ...).
    pub name: &'static str,
    /// The URL schemes it serves, lower case, without `://`.
    pub schemes: &'static [&'static str],
    /// Connects to the store a URL with one of [`schemes`](Self::schemes) names.
    pub connect: fn(String) -> Connecting,
}

impl Driver {
    /// True if `url`'s scheme is one of this driver's (compared without case).
    pub fn serves(&self, url: &str) -> bool {
        scheme_of(url)
            .is_some_and(|scheme| self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("name", &self.name)
            .field("schemes", &self.schemes)
            .finish_non_exhaustive()
    }
}

/// The scheme of `url` (the text before the first `:`), if it has one.
pub fn scheme_of(url: &str) -> Option<&str> {
    url.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    })
}
