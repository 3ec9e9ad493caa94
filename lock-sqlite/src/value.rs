//! [`Value`]: one SQLite value, as both drivers bind and read it.
//!
//! SQLite is dynamically typed: a column declared `INTEGER` can hold text if someone wrote
//! text into it. Drivers hand every value over with its actual storage class, and the
//! shared code (not the driver) decides whether it is what we expect.

use std::fmt;

/// One SQLite value with its storage class.
#[derive(Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Integer(i64),
    Real(f64),
    /// Valid UTF-8 text. Text that is not valid UTF-8 is read as [`Value::Blob`].
    Text(String),
    Blob(Vec<u8>),
}

/// One result row, columns in `SELECT` order.
pub(crate) type Row = Vec<Value>;

impl Value {
    /// The SQLite name of the storage class, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Integer(_) => "INTEGER",
            Self::Real(_) => "REAL",
            Self::Text(_) => "TEXT",
            Self::Blob(_) => "BLOB",
        }
    }

    pub(crate) fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Self::Blob(b) => Some(b),
            _ => None,
        }
    }
}

impl fmt::Debug for Value {
    /// Short and safe to log: never the content of blobs (an owner token is one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Real(r) => write!(f, "{r}"),
            Self::Text(s) => write!(f, "{:?}", s.chars().take(64).collect::<String>()),
            Self::Blob(b) => write!(f, "BLOB({} bytes)", b.len()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Integer(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_blob_bytes() {
        let shown = format!("{:?}", Value::Blob(vec![0xAB; 16]));
        assert_eq!(shown, "BLOB(16 bytes)");
        assert_eq!(Value::from(7).as_integer(), Some(7));
        assert_eq!(Value::from("x").as_integer(), None);
        assert_eq!(Value::from("x").kind(), "TEXT");
    }
}
