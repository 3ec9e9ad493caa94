//! Validated lock names.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{LockError, Result};

/// The longest legal lock name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 256;

/// A validated lock name.
///
/// Any UTF-8 string of 1 to [`MAX_NAME_LEN`] bytes without a NUL byte is a legal name.
/// Names are compared byte for byte: `"a"` and `"A"`, or a precomposed `"é"` and
/// `"e\u{301}"`, are different locks. Every backend maps a name to its store without
/// path traversal and without two names sharing a slot.
///
/// Cloning is cheap (the string is shared).
///
/// ```
/// use lock_core::LockName;
///
/// let name = LockName::new("nightly-report")?;
/// assert_eq!(name.as_str(), "nightly-report");
/// assert!(LockName::new("").is_err());
/// # Ok::<(), lock_core::LockError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(Arc<str>);

impl LockName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidName`] if the name is empty, longer than [`MAX_NAME_LEN`] bytes,
    /// or contains a NUL byte.
    pub fn new(name: impl AsRef<str>) -> Result<Self> {
        let name = name.as_ref();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("it is longer than 256 bytes")
        } else if name.contains('\0') {
            Some("it contains a NUL byte")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(LockError::InvalidName {
                name: printable(name),
                reason,
            }),
            None => Ok(Self(Arc::from(name))),
        }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The length of the name in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a valid name is never empty. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A short, escaped rendering of a user-supplied name for error messages.
fn printable(name: &str) -> String {
    const SHOWN: usize = 64;
    let mut out: String = name
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().count() > SHOWN {
        out.push_str(&format!("… ({} bytes)", name.len()));
    }
    out
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for LockName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for LockName {
    type Err = LockError;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for LockName {
    type Error = LockError;

    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for LockName {
    type Error = LockError;

    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

/// Anything [`Locker`](crate::Locker) accepts as a lock name: a [`LockName`], or a string
/// that is validated on use.
pub trait IntoLockName {
    /// Converts into a validated name.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidName`] when a string is not a legal name.
    fn into_lock_name(self) -> Result<LockName>;
}

impl IntoLockName for LockName {
    fn into_lock_name(self) -> Result<LockName> {
        Ok(self)
    }
}

impl IntoLockName for &LockName {
    fn into_lock_name(self) -> Result<LockName> {
        Ok(self.clone())
    }
}

impl IntoLockName for &str {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self)
    }
}

impl IntoLockName for String {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self)
    }
}

impl IntoLockName for &String {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_utf8_up_to_the_limit() {
        for ok in [
            "a",
            "a/b",
            "../../etc/passwd",
            "Straße",
            "日本語",
            "with space",
            "\u{1}",
        ] {
            assert_eq!(LockName::new(ok).unwrap().as_str(), ok);
        }
        let longest = "x".repeat(MAX_NAME_LEN);
        assert_eq!(LockName::new(&longest).unwrap().len(), MAX_NAME_LEN);
    }

    #[test]
    fn rejects_empty_long_and_nul() {
        for (bad, why) in [
            (String::new(), "empty"),
            ("x".repeat(MAX_NAME_LEN + 1), "longer than 256"),
            ("a\0b".to_owned(), "NUL"),
        ] {
            match LockName::new(&bad) {
                Err(LockError::InvalidName { reason, .. }) => {
                    assert!(reason.contains(why), "{reason}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn long_names_are_shortened_in_errors() {
        let err = LockName::new("é".repeat(200)).unwrap_err().to_string();
        assert!(err.contains("400 bytes"), "{err}");
        assert!(err.len() < 300, "{err}");
    }
}
