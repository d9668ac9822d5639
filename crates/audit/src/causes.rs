//! An error and its causes in one line, each said once: how the `wardgate` commands print a
//! failure, and how the audit writer and the gateway log a store's or the audit log's. Here,
//! in the lowest of the crates that log errors, so that all of them say causes the same way.
//!
//! Error types here often name their cause in their own text (`cannot open the database X:
//! {source}`) and return it as their `source()` too, so a reporter that prints every level
//! (anyhow's `{:#}`) said it twice; a context added over an error that already says it
//! (`cannot open the database` over `cannot open the database X: ...`) repeated it the other
//! way. [`Causes`] skips a level whose text an outer level already holds, and lets a level
//! that repeats the one above it and says more stand in for it.

use std::error::Error;
use std::fmt;

/// `error` and its `source()` chain, each cause once, joined by `": "`.
pub struct Causes<'a>(pub &'a (dyn Error + 'static));

impl Causes<'_> {
    /// The levels as said: outermost first.
    fn levels(&self) -> Vec<String> {
        let mut said: Vec<String> = Vec::new();
        let mut level = Some(self.0);
        while let Some(e) = level {
            let text = e.to_string();
            level = e.source();
            if text.is_empty() || said.iter().any(|s| s.contains(&text)) {
                continue;
            }
            match said.last_mut() {
                Some(last) if text.contains(last.as_str()) => *last = text,
                _ => said.push(text),
            }
        }
        said
    }
}

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.levels().join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Level(&'static str, Option<Box<Level>>);

    impl fmt::Display for Level {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Level {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    fn chain(texts: &[&'static str]) -> Level {
        texts
            .iter()
            .rev()
            .fold(None, |inner, t| Some(Level(t, inner.map(Box::new))))
            .unwrap_or(Level("", None))
    }

    #[test]
    fn each_cause_is_said_once() {
        // A level that names its cause in its own text, and returns it as its source too.
        let e = chain(&[
            "cannot open the database db:5432/wg: storage unavailable",
            "storage unavailable",
            "PostgreSQL: column \"checksum\" does not exist (SQLSTATE 42703)",
        ]);
        assert_eq!(
            Causes(&e).to_string(),
            "cannot open the database db:5432/wg: storage unavailable: PostgreSQL: column \
             \"checksum\" does not exist (SQLSTATE 42703)"
        );
        // A context over an error that says it and more.
        let e = chain(&[
            "cannot open the database",
            "cannot open the database db:5432/wg: migration failed: x",
            "migration failed: x",
        ]);
        assert_eq!(
            Causes(&e).to_string(),
            "cannot open the database db:5432/wg: migration failed: x"
        );
        // Distinct causes all stay, in order.
        let e = chain(&["a", "b", "c"]);
        assert_eq!(Causes(&e).to_string(), "a: b: c");
    }
}
