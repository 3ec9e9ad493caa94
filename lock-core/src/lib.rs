#![doc = include_str!("../README.md")]

mod backend;
mod backoff;
mod error;
mod guard;
mod heartbeat;
pub mod hex;
mod holder;
mod lease;
mod locker;
pub mod memory;
mod name;
mod options;
mod redact;
mod release_log;
pub mod time;

pub use backend::{Capabilities, LockBackend};
pub use backoff::{Backoff, jitter};
pub use error::{BoxError, LockError, Result};
pub use guard::{LeaseWatch, LockGuard, LossReason};
pub use holder::{Holder, OwnerToken, host_name};
pub use lease::{Lease, LeaseInfo};
pub use locker::{ATTEMPT_FLOOR, Locker};
pub use name::{IntoLockName, LockName, MAX_NAME_LEN};
pub use options::{LockOptions, MIN_HEARTBEAT_INTERVAL};
pub use redact::redact_url;
pub use release_log::{LeaseProbe, POLL_INTERVAL, ReleaseLog, Seen, TAKEOVER_CHECK};
pub use time::{MAX_TTL, MIN_TTL};

/// Re-exported so backends implement [`LockBackend`] with the same macro version.
pub use async_trait::async_trait;
