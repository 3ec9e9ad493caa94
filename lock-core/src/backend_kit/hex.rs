//! Lowercase hex, for backends that spell bytes (a name's hash, a key's bytes) in file
//! names and store keys.
//!
//! ```
//! let mut out = String::from("name-");
//! lock_core::backend_kit::hex::push_lower(&mut out, &[0x00, 0xab, 0x7f]);
//! assert_eq!(out, "name-00ab7f");
//! ```

/// Appends the lowercase hex of `bytes` to `out`, two digits per byte.
pub fn push_lower(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}
