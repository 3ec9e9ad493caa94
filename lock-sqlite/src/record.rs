//! Decoding stored lease rows, refusing anything this library did not write.

use lock_core::backend_kit::fence::MAX_FENCE;
use lock_core::backend_kit::permits::MAX_PERMITS;
use lock_core::backend_kit::time::from_unix_millis;
use lock_core::{LeaseInfo, LockError, LockName, OwnerToken};

use crate::BACKEND;
use crate::now::{Cx, Now};
use crate::value::{Row, Value};

/// Column positions in `sql::LEASE_COLUMNS` order.
pub(crate) mod col {
    pub(crate) const NAME: usize = 0;
    pub(crate) const SLOT: usize = 1;
    pub(crate) const OWNER: usize = 2;
    pub(crate) const LABEL: usize = 3;
    pub(crate) const PID: usize = 4;
    pub(crate) const HOST: usize = 5;
    pub(crate) const FENCE: usize = 6;
    pub(crate) const LIMIT: usize = 7;
    pub(crate) const ACQUIRED: usize = 8;
    pub(crate) const BOOT_ID: usize = 9;
    pub(crate) const EXPIRES: usize = 10;
}

/// A lease row as stored, fully validated: one permit of a name (slot 0 of a lock).
#[derive(Debug)]
pub(crate) struct StoredLease {
    pub(crate) name: LockName,
    pub(crate) slot: u32,
    pub(crate) owner: OwnerToken,
    pub(crate) label: String,
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) fence: u64,
    /// The limit the holder asked for (1 for a lock).
    pub(crate) limit: u32,
    pub(crate) acquired_at_ms: i64,
    /// The boot the lease was recorded under; its expiry means nothing in another.
    pub(crate) boot_id: String,
    /// Expiry on the boot clock, in milliseconds since boot (0 once released).
    pub(crate) expires_boot_ms: i64,
}

/// Reads one row's columns, building `Corrupt` errors that name the row and the database.
struct Columns<'a> {
    row: &'a Row,
    shown_name: String,
    db: &'a str,
}

impl<'a> Columns<'a> {
    fn new(row: &'a Row, db: &'a str, name_column: usize) -> Self {
        let shown_name = match row.get(name_column) {
            Some(Value::Text(s)) => s.clone(),
            Some(other) => format!("<{} name>", other.kind()),
            None => "<no name>".to_owned(),
        };
        Self {
            row,
            shown_name,
            db,
        }
    }

    fn get(&self, i: usize) -> &'a Value {
        self.row.get(i).unwrap_or(&Value::Null)
    }

    fn corrupt(&self, what: &str, found: &str) -> LockError {
        LockError::corrupt(
            BACKEND,
            format!(
                "the lease row for lock {:?} in table lock_leases of {} has {what} (found \
                 {found}); it was not written by this library",
                self.shown_name, self.db
            ),
        )
    }

    fn bad(&self, what: &str, i: usize) -> LockError {
        let value = self.get(i);
        self.corrupt(what, &format!("{} {value:?}", value.kind()))
    }

    fn name(&self, i: usize) -> Result<LockName, LockError> {
        self.get(i)
            .as_text()
            .and_then(|s| LockName::new(s).ok())
            .ok_or_else(|| self.bad("a name that is not a valid lock name", i))
    }

    fn owner(&self, i: usize) -> Result<OwnerToken, LockError> {
        owner_from_value(self.get(i))
            // Never show the owner column's content: it may be a token.
            .ok_or_else(|| self.corrupt("an owner that is not a 16-byte token", self.get(i).kind()))
    }

    fn text(&self, i: usize, what: &str) -> Result<String, LockError> {
        self.get(i)
            .as_text()
            .map(str::to_owned)
            .ok_or_else(|| self.bad(what, i))
    }

    fn integer(&self, i: usize, what: &str) -> Result<i64, LockError> {
        self.get(i).as_integer().ok_or_else(|| self.bad(what, i))
    }

    fn in_range<T: TryFrom<i64>>(
        &self,
        i: usize,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
    ) -> Result<T, LockError> {
        self.get(i)
            .as_integer()
            .filter(|v| range.contains(v))
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| self.bad(what, i))
    }

    fn pid(&self, i: usize) -> Result<u32, LockError> {
        self.in_range(i, 0..=i64::from(u32::MAX), "a pid that is not a process id")
    }

    fn fence(&self, i: usize) -> Result<u64, LockError> {
        self.in_range(
            i,
            1..=MAX_FENCE_I64,
            "a fence that is not a positive integer up to 2^53 - 1",
        )
    }
}

/// [`MAX_FENCE`] as a stored integer.
pub(crate) const MAX_FENCE_I64: i64 = MAX_FENCE as i64;

impl StoredLease {
    /// Decodes a row selected with the columns of `sql::LEASE_COLUMNS`, in order.
    pub(crate) fn decode(row: &Row, db: &str) -> Result<Self, LockError> {
        let c = Columns::new(row, db, col::NAME);
        let max_slot = i64::from(MAX_PERMITS) - 1;
        Ok(Self {
            name: c.name(col::NAME)?,
            slot: c.in_range(
                col::SLOT,
                0..=max_slot,
                "a permit slot that is not 0 to 1023",
            )?,
            owner: c.owner(col::OWNER)?,
            label: c.text(col::LABEL, "a label that is not text")?,
            pid: c.pid(col::PID)?,
            host: c.text(col::HOST, "a host that is not text")?,
            fence: c.fence(col::FENCE)?,
            limit: c.in_range(
                col::LIMIT,
                1..=i64::from(MAX_PERMITS),
                "a limit that is not 1 to 1024",
            )?,
            acquired_at_ms: c
                .integer(col::ACQUIRED, "an acquisition time that is not an integer")?,
            boot_id: c.text(col::BOOT_ID, "a boot id that is not text")?,
            expires_boot_ms: c.integer(col::EXPIRES, "an expiry time that is not an integer")?,
        })
    }

    /// Decodes a row of schema version 1 or 2 (`sql::LEGACY_LEASE_COLUMNS`), for a
    /// read-only client: a lock (slot 0, limit 1) whose wall-clock expiry is put on this
    /// boot's clock as far ahead as it is now (see [`Now::legacy_expiry`]).
    pub(crate) fn decode_legacy(row: &Row, db: &str, now: &Now) -> Result<Self, LockError> {
        let c = Columns::new(row, db, 0);
        Ok(Self {
            name: c.name(0)?,
            slot: 0,
            owner: c.owner(1)?,
            label: c.text(2, "a label that is not text")?,
            pid: c.pid(3)?,
            host: c.text(4, "a host that is not text")?,
            fence: c.fence(5)?,
            limit: 1,
            acquired_at_ms: c.integer(6, "an acquisition time that is not an integer")?,
            boot_id: now.boot_id.as_str().to_owned(),
            expires_boot_ms: now
                .legacy_expiry(c.integer(7, "an expiry time that is not an integer")?),
        })
    }

    /// True while the lease is live at `now`: recorded under this boot and not expired.
    pub(crate) fn is_live(&self, now: &Now) -> bool {
        now.sees_live(&self.boot_id, self.expires_boot_ms)
    }

    /// The public view (without the owner token), with its expiry on the wall clock.
    pub(crate) fn info(&self, cx: &Cx<'_>) -> LeaseInfo {
        LeaseInfo::new(
            self.name.clone(),
            self.label.clone(),
            self.pid,
            self.host.clone(),
            self.fence,
            from_unix_millis(self.acquired_at_ms),
            cx.shown(self.expires_boot_ms),
        )
        .with_limit(self.limit)
    }
}

/// An owner token as stored: 16 bytes, big-endian.
pub(crate) fn owner_value(token: OwnerToken) -> Value {
    Value::Blob(token.as_u128().to_be_bytes().to_vec())
}

/// An owner token read back from its stored value, if it is one.
pub(crate) fn owner_from_value(value: &Value) -> Option<OwnerToken> {
    let bytes: [u8; 16] = value.as_blob()?.try_into().ok()?;
    OwnerToken::from_u128(u128::from_be_bytes(bytes))
}

/// True if a raw row (about to be deleted, which may not decode) shows a lease that was
/// still live at `now`.
pub(crate) fn was_live(row: &Row, now: &Now) -> bool {
    match (row.get(col::BOOT_ID), row.get(col::EXPIRES)) {
        (Some(Value::Text(boot)), Some(Value::Integer(expires))) => now.sees_live(boot, *expires),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lock_core::backend_kit::clock::{HostClock, SystemClock};

    fn now() -> Now {
        crate::now::Cx {
            db: "db",
            clock: &SystemClock,
            layout: crate::now::Layout::Current,
        }
        .now()
    }

    fn good_row(token: OwnerToken, now: &Now) -> Row {
        vec![
            Value::from("job"),
            Value::Integer(2),
            owner_value(token),
            Value::from("label"),
            Value::Integer(42),
            Value::from("host"),
            Value::Integer(7),
            Value::Integer(3),
            Value::Integer(1_000),
            now.boot_id_value(),
            Value::Integer(now.boot_ms + 60_000),
        ]
    }

    #[test]
    fn decodes_what_we_write() {
        let token = OwnerToken::random();
        let now = now();
        let lease = StoredLease::decode(&good_row(token, &now), "db").unwrap();
        assert_eq!(lease.owner, token);
        assert_eq!((lease.fence, lease.slot, lease.limit), (7, 2, 3));
        assert!(lease.is_live(&now));
        let cx = crate::now::Cx {
            db: "db",
            clock: &SystemClock,
            layout: crate::now::Layout::Current,
        };
        let info = lease.info(&cx);
        assert_eq!(info.name.as_str(), "job");
        assert_eq!(info.limit, 3);
        assert_eq!(info.acquired_at, from_unix_millis(1_000));
        let shown = info
            .expires_at
            .duration_since(SystemClock.wall())
            .unwrap_or_default();
        assert!(
            shown > std::time::Duration::from_secs(58)
                && shown <= std::time::Duration::from_secs(60),
            "{shown:?}"
        );
        let mut other_boot = good_row(token, &now);
        other_boot[col::BOOT_ID] = Value::from("another-boot");
        assert!(
            !StoredLease::decode(&other_boot, "db")
                .unwrap()
                .is_live(&now)
        );
        assert!(!was_live(&other_boot, &now));
        assert!(was_live(&good_row(token, &now), &now));
    }

    #[test]
    fn refuses_garbled_rows_with_a_corrupt_error() {
        let token = OwnerToken::random();
        let now = now();
        let garbles: &[(usize, Value, &str)] = &[
            (col::NAME, Value::Null, "name"),
            (col::NAME, Value::from(""), "name"),
            (col::SLOT, Value::Integer(-1), "slot"),
            (col::SLOT, Value::Integer(1024), "slot"),
            (col::OWNER, Value::Null, "owner"),
            (col::OWNER, Value::Blob(vec![1, 2, 3]), "owner"),
            (col::OWNER, Value::Blob(vec![0; 16]), "owner"),
            (col::OWNER, Value::from(token.to_hex().as_str()), "owner"),
            (col::LABEL, Value::Integer(1), "label"),
            (col::PID, Value::Integer(-1), "pid"),
            (col::PID, Value::Integer(i64::from(u32::MAX) + 1), "pid"),
            (col::HOST, Value::Null, "host"),
            (col::FENCE, Value::Integer(0), "fence"),
            (col::FENCE, Value::Integer(-5), "fence"),
            (col::FENCE, Value::Real(3.5), "fence"),
            (col::FENCE, Value::Integer(MAX_FENCE_I64 + 1), "fence"),
            (col::LIMIT, Value::Integer(0), "limit"),
            (col::LIMIT, Value::Integer(1025), "limit"),
            (col::ACQUIRED, Value::from("yesterday"), "acquisition"),
            (col::BOOT_ID, Value::Integer(7), "boot id"),
            (col::EXPIRES, Value::from("soon"), "expiry"),
        ];
        for (column, value, what) in garbles {
            let mut row = good_row(token, &now);
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
        let mut row = good_row(token, &now);
        row[col::FENCE] = Value::Integer(MAX_FENCE_I64);
        assert!(StoredLease::decode(&row, "db").is_ok(), "the largest fence");
    }

    #[test]
    fn legacy_rows_are_locks_on_this_boot() {
        let token = OwnerToken::random();
        let now = now();
        let row = vec![
            Value::from("old"),
            owner_value(token),
            Value::from("label"),
            Value::Integer(42),
            Value::from("host"),
            Value::Integer(9),
            Value::Integer(1_000),
            Value::Integer(now.wall_ms() + 30_000),
        ];
        let lease = StoredLease::decode_legacy(&row, "db", &now).unwrap();
        assert_eq!((lease.slot, lease.limit, lease.fence), (0, 1, 9));
        assert!(lease.is_live(&now));
        assert_eq!(lease.expires_boot_ms, now.boot_ms + 30_000);
        let mut expired = row.clone();
        expired[7] = Value::Integer(0);
        assert!(
            !StoredLease::decode_legacy(&expired, "db", &now)
                .unwrap()
                .is_live(&now)
        );
        let mut garbled = row;
        garbled[7] = Value::from("soon");
        assert!(StoredLease::decode_legacy(&garbled, "db", &now).is_err());
    }
}
