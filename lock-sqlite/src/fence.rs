//! Fences (schema version 2): each name's row advances its own fence, and the first row of
//! a name is seeded above every fence the database has issued.
//!
//! The seed is `max(fence_seed + 1, wall clock in microseconds)`, stored back as the new
//! `fence_seed`. The stored seed keeps fences increasing when the clock goes back; the clock
//! keeps them above fences of rows that no longer exist (a row deleted by `force_release`
//! also raises the seed to its fence when that is readable), as long as fewer than a million
//! fences per second were issued on average (see [`lock_core::backend_kit::time::fence_seed_now`]).

use lock_core::LockError;
use lock_core::backend_kit::time::fence_seed_now;

use crate::BACKEND;
use crate::driver::Statements;
use crate::record::StoredLease;
use crate::retry::OpError;
use crate::sql::{self, MAX_STORED_INTEGER};
use crate::value::{Row, Value};

/// The wall clock in microseconds, as a stored integer.
pub(crate) fn seed_now() -> i64 {
    i64::try_from(fence_seed_now()).unwrap_or(MAX_STORED_INTEGER)
}

/// A fence as returned by a statement: a positive integer.
pub(crate) fn from_value(value: Option<&Value>) -> Option<u64> {
    value
        .and_then(Value::as_integer)
        .filter(|f| *f > 0)
        .and_then(|f| u64::try_from(f).ok())
}

/// The fence for a name's first row, advancing the seed.
///
/// # Errors
///
/// [`LockError::Corrupt`] when the seed is missing or unusable.
pub(crate) async fn first<S: Statements>(tx: &mut S, db: &str) -> Result<u64, OpError> {
    let rows = tx
        .query(sql::NEXT_SEED_FENCE, &[Value::Integer(seed_now())])
        .await?;
    from_value(rows.first().and_then(|r| r.first())).ok_or_else(|| seed_corrupt(db).into())
}

/// Raises the seed to at least `floor`, before a row is deleted.
///
/// # Errors
///
/// [`LockError::Corrupt`] when the seed is missing or unusable.
pub(crate) async fn raise_seed<S: Statements>(
    tx: &mut S,
    floor: i64,
    db: &str,
) -> Result<(), OpError> {
    let rows = tx
        .query(sql::RAISE_FENCE_SEED, &[Value::Integer(floor)])
        .await?;
    if rows.is_empty() {
        return Err(seed_corrupt(db).into());
    }
    Ok(())
}

/// The fence of a row about to be deleted, if it is one this library could have issued and
/// could advance: a positive integer below the maximum. A fence at the maximum is not kept
/// as the floor: the seed would then be exhausted for every new name, not only this one.
pub(crate) fn recoverable(row: &Row) -> Option<i64> {
    row.get(5)
        .and_then(Value::as_integer)
        .filter(|f| (1..MAX_STORED_INTEGER).contains(f))
}

/// True if the row's fence can still advance.
pub(crate) fn can_advance(lease: &StoredLease) -> bool {
    i64::try_from(lease.fence).is_ok_and(|f| f < MAX_STORED_INTEGER)
}

/// The error for a row whose fence is at the maximum, so it cannot be taken over.
pub(crate) fn exhausted(lease: &StoredLease, db: &str) -> LockError {
    LockError::corrupt(
        BACKEND,
        format!(
            "the lease row for lock {:?} in table lock_leases of {db} has fence {}, the \
             largest SQLite can store, so no higher fence can be issued for it; it was not \
             written by this library",
            lease.name.as_str(),
            lease.fence
        ),
    )
}

fn seed_corrupt(db: &str) -> LockError {
    LockError::corrupt(
        BACKEND,
        format!(
            "the fence counter (row 'fence_seed' of table lock_meta in {db}), which numbers \
             the first lease of each lock name, is missing or is not a non-negative integer \
             below 2^63-1; no fence can be issued safely for a new name. Set it to at least \
             the largest fence in table lock_leases"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_from_values() {
        assert_eq!(from_value(Some(&Value::Integer(7))), Some(7));
        assert_eq!(from_value(Some(&Value::Integer(0))), None);
        assert_eq!(from_value(Some(&Value::from("7"))), None);
        assert_eq!(from_value(None), None);
        let row = |fence: Value| -> Row {
            let mut row = vec![Value::Null; 8];
            row[5] = fence;
            row
        };
        assert_eq!(recoverable(&row(Value::Integer(9))), Some(9));
        assert_eq!(recoverable(&row(Value::Integer(MAX_STORED_INTEGER))), None);
        assert_eq!(recoverable(&row(Value::Integer(-1))), None);
        assert_eq!(recoverable(&row(Value::Real(2.5))), None);
        assert!(
            seed_now() > 1_600_000_000_000_000,
            "microseconds since 1970"
        );
    }
}
