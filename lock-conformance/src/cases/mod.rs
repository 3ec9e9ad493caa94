//! The cases, one `pub async fn` each. Every one takes a [`Target`](crate::Target), uses only
//! names under its prefix, and panics with a message saying what broke.

mod bad_input;
mod basics;
mod election;
mod expiry;
mod fencing;
mod locker;
mod min_hold;
mod operator;
mod races;
mod semaphores;

pub use bad_input::*;
pub use basics::*;
pub use election::*;
pub use expiry::*;
pub use fencing::*;
pub use locker::*;
pub use min_hold::*;
pub use operator::*;
pub use races::*;
pub use semaphores::*;
