//! What backend authors need and users do not: the building blocks every store in this
//! workspace shares (model: `lock_api`'s split between the raw trait and the safe guard).
//!
//! - [`config`]: one URL and option vocabulary for every store;
//! - [`Driver`]: a backend's schemes and connector, for the facade's registry;
//! - [`time`]: TTL bounds, the holder's local deadline, millisecond conversions;
//! - [`clock`]: the host clocks single-host stores judge expiry by (boot clock + boot id);
//! - [`fence`]: hybrid fences, `max(counter + 1, clock in microseconds)`;
//! - [`permits`]: semaphore limits and the error for a caller with another limit;
//! - [`ReleaseLog`]: releases seen by this process, to wake waiters without polling;
//! - [`hold`] and [`FileWatch`]: on a single-host store, a dead holder's lease is taken over
//!   at once, and waiters sleep in the kernel;
//! - [`Backoff`] and [`jitter`]: retry pacing;
//! - [`BackgroundTask`]: a backend's one long-running task (a subscription, a listener);
//! - [`batch`]: one failure reported for every lease of a `heartbeat_many` batch;
//! - [`hex`], [`redact_url`], [`host_name`]: small helpers for keys, messages and holders.
//!
//! Users of the library never need this module: `Locker`, `LockGuard` and the types at the
//! crate root are the whole user API.

mod background;
mod backoff;
pub mod batch;
pub mod clock;
pub mod config;
mod driver;
pub mod fence;
pub mod hex;
pub mod hold;
pub mod permits;
mod private_file;
mod process_state;
mod redact;
mod release_log;
pub mod time;
mod turn;
mod turn_queue;
mod watch;

pub use async_trait::async_trait;
pub use background::{BackgroundTask, listening};
pub use backoff::{Backoff, jitter};
pub use driver::{Connecting, Driver, scheme_of};
pub use redact::redact_url;
pub use release_log::{
    Closely, GIVE_WAY, LeaseProbe, POLL_INTERVAL, ReleaseLog, Seen, TAKEOVER_CHECK,
};
pub use turn::{HAND_OFF_AFTER, TURN_CHECK};
pub use watch::FileWatch;

pub use crate::holder::host_name;
