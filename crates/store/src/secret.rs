//! `Secret<T>`: a value that must never be printed, logged or serialized, wiped from memory on drop.

use std::fmt;

use zeroize::Zeroize;

/// A secret value (an API key shown once, a signing key, a password).
///
/// `Debug` and `Display` print `[redacted]`, so a secret that ends up in a log line or an error
/// message by accident does not leak. There is deliberately no `Serialize`, no `Clone` and no
/// `PartialEq`: reading the value takes an explicit [`Secret::expose`], which is easy to find in
/// review, and comparing secrets should be done in constant time by the caller.
///
/// On drop the value is overwritten with zeroes. This narrows, but cannot close, the window in
/// which the secret sits in memory: copies the caller made from `expose()` are the caller's to wipe.
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value. Every call site is a place where the secret leaves this wrapper.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_do_not_print_the_value() {
        let secret = Secret::new(String::from("wg_hunter2hunter2_topsecret"));
        for printed in [
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{secret}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(!printed.contains("hunter2"), "leaked: {printed}");
            assert!(printed.contains("[redacted]"), "unexpected: {printed}");
        }
    }

    #[test]
    fn expose_returns_the_value() {
        let secret: Secret<String> = String::from("abc").into();
        assert_eq!(secret.expose(), "abc");
    }
}
