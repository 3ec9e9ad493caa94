//! Hybrid fences (schema version 3): each grant gives `max(counter + 1, wall clock in
//! microseconds)` ([`next_fence`]), computed in the grant's own transaction.
//!
//! A name's counter is the highest fence in its rows (one row per permit slot, never
//! deleted on release or expiry), so fences rise across permits. A name's first row is
//! seeded from `fence_seed`, which holds the highest first fence the database issued (and
//! the fences of rows `force_release` had to delete). The clock half keeps fences above
//! every fence the database issued even when it lost its latest writes (a power loss under
//! `synchronous=NORMAL`, a restored backup): its counters went back, the clock did not.
//! The counter half keeps them rising when the wall clock steps back.

use lock_core::backend_kit::fence::next_fence;
use lock_core::{LockError, LockName};

use crate::BACKEND;
use crate::driver::Statements;
use crate::record::{MAX_FENCE_I64, col};
use crate::retry::OpError;
use crate::sql;
use crate::value::{Row, Value};

/// A fence as returned by a statement: a positive integer.
pub(crate) fn from_value(value: Option<&Value>) -> Option<u64> {
    value
        .and_then(Value::as_integer)
        .filter(|f| *f > 0)
        .and_then(|f| u64::try_from(f).ok())
}

/// The next fence of a name whose highest fence is `counter`, at `clock` (microseconds).
///
/// # Errors
///
/// [`LockError::Corrupt`] when `counter` is the largest fence: no higher one can be issued.
pub(crate) fn after(counter: u64, clock: i64, name: &LockName, db: &str) -> Result<u64, LockError> {
    next_fence(counter, u64::try_from(clock).unwrap_or(0))
        .ok_or_else(|| exhausted(name, counter, db))
}

/// The fence for a name's first row, advancing the seed: `max(seed + 1, clock)`.
///
/// # Errors
///
/// [`LockError::Corrupt`] when the seed is missing or unusable.
pub(crate) async fn first<S: Statements>(tx: &mut S, clock: i64, db: &str) -> Result<u64, OpError> {
    let rows = tx
        .query(sql::NEXT_SEED_FENCE, &[Value::Integer(clock)])
        .await?;
    from_value(rows.first().and_then(|r| r.first())).ok_or_else(|| seed_corrupt(db).into())
}

/// Raises the seed to at least `floor`, before rows are deleted.
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
/// could advance: a positive integer below the largest fence. The largest fence itself is
/// not kept as the floor: the seed would then be exhausted for every new name, not only
/// this one.
pub(crate) fn recoverable(row: &Row) -> Option<i64> {
    row.get(col::FENCE)
        .and_then(Value::as_integer)
        .filter(|f| (1..MAX_FENCE_I64).contains(f))
}

/// True if a grant can follow `fence` (it is below the largest fence).
pub(crate) fn can_advance(fence: u64) -> bool {
    i64::try_from(fence).is_ok_and(|f| f < MAX_FENCE_I64)
}

/// The error for a name whose fence is the largest, so no grant can follow it.
pub(crate) fn exhausted(name: &LockName, fence: u64, db: &str) -> LockError {
    LockError::corrupt(
        BACKEND,
        format!(
            "the lease rows for lock {:?} in table lock_leases of {db} have fence {fence}, the \
             largest fence (2^53 - 1), so no higher fence can be issued for it; it was not \
             written by this library. force_release the lock to clear it",
            name.as_str()
        ),
    )
}

fn seed_corrupt(db: &str) -> LockError {
    LockError::corrupt(
        BACKEND,
        format!(
            "the fence counter (row 'fence_seed' of table lock_meta in {db}), which numbers \
             the first lease of each lock name, is missing or is not a non-negative integer \
             below 2^53 - 1; no fence can be issued safely for a new name. Set it to at least \
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
            let mut row = vec![Value::Null; 11];
            row[col::FENCE] = fence;
            row
        };
        assert_eq!(recoverable(&row(Value::Integer(9))), Some(9));
        assert_eq!(recoverable(&row(Value::Integer(MAX_FENCE_I64))), None);
        assert_eq!(recoverable(&row(Value::Integer(-1))), None);
        assert_eq!(recoverable(&row(Value::Real(2.5))), None);
    }

    #[test]
    fn the_next_fence_is_hybrid_and_bounded() {
        let name = LockName::new("n").unwrap();
        assert_eq!(after(10, 5, &name, "db").unwrap(), 11);
        assert_eq!(after(10, 1_000, &name, "db").unwrap(), 1_000);
        let max = u64::try_from(MAX_FENCE_I64).unwrap();
        match after(max, 5, &name, "db") {
            Err(LockError::Corrupt { detail, .. }) => {
                assert!(detail.contains("largest fence"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}
