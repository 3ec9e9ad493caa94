#![doc = include_str!("../README.md")]

mod backend;
pub mod backend_kit;
mod election;
mod error;
mod guard;
mod heartbeat;
mod holder;
mod in_place;
mod lease;
mod locker;
pub mod memory;
mod name;
mod options;
mod release;
pub mod telemetry;

pub use backend::{Capabilities, LockBackend};
pub use backend_kit::permits::MAX_PERMITS;
pub use backend_kit::time::{MAX_TTL, MIN_TTL};
pub use election::{Election, LeaderEvent, Leadership, Observer};
pub use error::{BoxError, LockError, Result};
pub use guard::{LeaseWatch, LockGuard, LossReason};
pub use holder::{Holder, OwnerToken};
pub use lease::{Lease, LeaseInfo};
pub use locker::{ATTEMPT_FLOOR, Locker};
pub use name::{IntoLockName, LockName, MAX_NAME_LEN};
pub use options::{LockOptions, MIN_HEARTBEAT_INTERVAL};

/// Re-exported so backends implement [`LockBackend`] with the same macro version.
pub use async_trait::async_trait;
