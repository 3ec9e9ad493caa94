//! Decoding stored lease rows, refusing anything this library did not write.

use std::time::SystemTime;

use lock_core::backend_kit::time::from_unix_millis;
use lock_core::{LeaseInfo, LockError, LockName, OwnerToken};

use crate::BACKEND;
use crate::value::{Row, Value};

/// A lease row as stored, fully validated.
#[derive(Debug)]
pub(crate) struct StoredLease {
    pub(crate) name: LockName,
    pub(crate) owner: OwnerToken,
    pub(crate) label: String,
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) fence: u64,
    pub(crate) acquired_at_ms: i64,
    pub(crate) expires_at_ms: i64,
}

impl StoredLease {
    /// Decodes a row selected with the columns of `sql::LEASE_COLUMNS`, in order.
    pub(crate) fn decode(row: &Row, db: &str) -> Result<Self, LockError> {
        let column = |i: usize| row.get(i).unwrap_or(&Value::Null);
        let name_value = column(0);
        let shown_name = match name_value {
            Value::Text(s) => s.clone(),
            other => format!("<{} name>", other.kind()),
        };
        let corrupt = |what: &str, found: String| {
            LockError::corrupt(
                BACKEND,
                format!(
                    "the lease row for lock {shown_name:?} in table lock_leases of {db} has {what} \
                     (found {found}); it was not written by this library"
                ),
            )
        };
        let bad = |what: &str, value: &Value| corrupt(what, format!("{} {value:?}", value.kind()));
        let name = name_value
            .as_text()
            .and_then(|s| LockName::new(s).ok())
            .ok_or_else(|| bad("a name that is not a valid lock name", name_value))?;
        let owner = column(1)
            .as_blob()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .and_then(|b| OwnerToken::from_u128(u128::from_be_bytes(b)))
            // Never show the owner column's content: it may be a token.
            .ok_or_else(|| {
                corrupt(
                    "an owner that is not a 16-byte token",
                    column(1).kind().into(),
                )
            })?;
        let label = column(2)
            .as_text()
            .ok_or_else(|| bad("a label that is not text", column(2)))?
            .to_owned();
        let pid = column(3)
            .as_integer()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| bad("a pid that is not a process id", column(3)))?;
        let host = column(4)
            .as_text()
            .ok_or_else(|| bad("a host that is not text", column(4)))?
            .to_owned();
        let fence = column(5)
            .as_integer()
            .filter(|f| *f > 0)
            .and_then(|f| u64::try_from(f).ok())
            .ok_or_else(|| bad("a fence that is not a positive integer", column(5)))?;
        let acquired_at_ms = column(6)
            .as_integer()
            .ok_or_else(|| bad("an acquisition time that is not an integer", column(6)))?;
        let expires_at_ms = column(7)
            .as_integer()
            .ok_or_else(|| bad("an expiry time that is not an integer", column(7)))?;
        Ok(Self {
            name,
            owner,
            label,
            pid,
            host,
            fence,
            acquired_at_ms,
            expires_at_ms,
        })
    }

    /// True while the lease has not expired at wall-clock time `now_ms`.
    pub(crate) fn is_live(&self, now_ms: i64) -> bool {
        self.expires_at_ms > now_ms
    }

    /// The public view (without the owner token).
    pub(crate) fn info(&self) -> LeaseInfo {
        LeaseInfo::new(
            self.name.clone(),
            self.label.clone(),
            self.pid,
            self.host.clone(),
            self.fence,
            from_unix_millis(self.acquired_at_ms),
            from_unix_millis(self.expires_at_ms),
        )
    }
}

/// An owner token as stored: 16 bytes, big-endian.
pub(crate) fn owner_value(token: OwnerToken) -> Value {
    Value::Blob(token.as_u128().to_be_bytes().to_vec())
}

/// This host's wall clock in milliseconds since the Unix epoch: the clock that decides
/// expiry, identical for both drivers and every process on the host.
pub(crate) fn wall_now_ms() -> i64 {
    lock_core::backend_kit::time::to_unix_millis(SystemTime::now())
}

/// True if a raw `expires_at_ms` value (of a row about to be deleted, which may not decode)
/// shows a lease that was still live.
pub(crate) fn was_live(expires_at_ms: Option<&Value>, now_ms: i64) -> bool {
    expires_at_ms
        .and_then(Value::as_integer)
        .is_some_and(|e| e > now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_row(token: OwnerToken) -> Row {
        vec![
            Value::from("job"),
            owner_value(token),
            Value::from("label"),
            Value::Integer(42),
            Value::from("host"),
            Value::Integer(7),
            Value::Integer(1_000),
            Value::Integer(2_000),
        ]
    }

    #[test]
    fn decodes_what_we_write() {
        let token = OwnerToken::random();
        let lease = StoredLease::decode(&good_row(token), "db").unwrap();
        assert_eq!(lease.owner, token);
        assert_eq!(lease.fence, 7);
        assert!(lease.is_live(1_999));
        assert!(!lease.is_live(2_000));
        let info = lease.info();
        assert_eq!(info.name.as_str(), "job");
        assert_eq!(info.expires_at, from_unix_millis(2_000));
    }

    #[test]
    fn refuses_garbled_rows_with_a_corrupt_error() {
        let token = OwnerToken::random();
        let garbles: &[(usize, Value, &str)] = &[
            (0, Value::Null, "name"),
            (0, Value::from(""), "name"),
            (1, Value::Null, "owner"),
            (1, Value::Blob(vec![1, 2, 3]), "owner"),
            (1, Value::Blob(vec![0; 16]), "owner"),
            (1, Value::from(token.to_hex().as_str()), "owner"),
            (2, Value::Integer(1), "label"),
            (3, Value::Integer(-1), "pid"),
            (3, Value::Integer(i64::from(u32::MAX) + 1), "pid"),
            (4, Value::Null, "host"),
            (5, Value::Integer(0), "fence"),
            (5, Value::Integer(-5), "fence"),
            (5, Value::Real(3.5), "fence"),
            (6, Value::from("yesterday"), "acquisition"),
            (7, Value::from("soon"), "expiry"),
        ];
        for (column, value, what) in garbles {
            let mut row = good_row(token);
            row[*column] = value.clone();
            match StoredLease::decode(&row, "/tmp/x.db") {
                Err(LockError::Corrupt { detail, .. }) => {
                    assert!(detail.contains(what), "{detail}");
                    assert!(detail.contains("/tmp/x.db"), "{detail}");
                    assert!(
                        !detail.contains(&token.to_hex()),
                        "leaks the token: {detail}"
                    );
                }
                other => panic!("column {column} = {value:?}: {other:?}"),
            }
        }
        assert!(StoredLease::decode(&vec![Value::from("short")], "db").is_err());
    }

    #[test]
    fn liveness_of_deleted_rows() {
        assert!(was_live(Some(&Value::Integer(10)), 9));
        assert!(!was_live(Some(&Value::Integer(10)), 10));
        assert!(!was_live(Some(&Value::from("soon")), 0));
        assert!(!was_live(None, 0));
    }
}
