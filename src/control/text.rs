//! The `key: value` text of the control files (docs/CONTROL.md): one
//! codec for the daemon that writes it, the CLI that reads it and the tests.
//!
//! A line is `KEY: VALUE` (`KEY: ` with an empty value), or `KEY:`
//! where a file has always written that for nothing known. A value never
//! spans lines: a newline in it is written as the two characters `\n`
//! (nothing else is escaped, and [`decode`] gives values back as written).
//! Keys may repeat (`note:`, `app:`); [`Pairs`] keeps every line in order.

use std::collections::BTreeMap;
use std::fmt::Display;

/// Builds the text of one control file, line by line.
#[derive(Debug, Default)]
pub struct Encoder {
    text: String,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Appends `key: value`.
    pub fn pair(&mut self, key: &str, value: impl Display) -> &mut Encoder {
        let value = value.to_string();
        self.text.push_str(key);
        self.text.push_str(": ");
        self.text.push_str(&escape(&value));
        self.text.push('\n');
        self
    }

    /// Appends `key:` (no value, no blank).
    pub fn bare(&mut self, key: &str) -> &mut Encoder {
        self.text.push_str(key);
        self.text.push_str(":\n");
        self
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

/// `pairs` as control-file text.
pub fn encode<K: AsRef<str>, V: Display>(pairs: impl IntoIterator<Item = (K, V)>) -> String {
    let mut e = Encoder::new();
    for (k, v) in pairs {
        e.pair(k.as_ref(), v);
    }
    e.finish()
}

/// A value on one line: newlines as `\n`.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains('\n') {
        value.replace('\n', "\\n").into()
    } else {
        value.into()
    }
}

/// The lines of a control file, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs(pub Vec<(String, String)>);

impl Pairs {
    /// The value of the first line with `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The values of every line with `key` (`note:`, `app:`), in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// One value per key; of a repeated key, the last.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0.into_iter().collect()
    }
}

/// Parses control-file text; lines that are not `key: value` or `key:`
/// are skipped.
pub fn decode(text: &str) -> Pairs {
    Pairs(
        text.lines()
            .filter_map(|l| {
                l.split_once(": ")
                    .or_else(|| l.strip_suffix(':').map(|k| (k, "")))
            })
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Encoder::new();
        e.pair("name", "nightly")
            .pair("error", "")
            .pair("barrier_ms", 0.5)
            .bare("sealed")
            .pair("why", "two\nlines")
            .pair("note", "a: b")
            .pair("note", "c");
        let text = e.finish();
        assert_eq!(
            text,
            "name: nightly\nerror: \nbarrier_ms: 0.5\nsealed:\nwhy: two\\nlines\nnote: a: b\nnote: c\n"
        );
        let p = decode(&text);
        assert_eq!(p.get("name"), Some("nightly"));
        assert_eq!(p.get("error"), Some(""));
        assert_eq!(p.get("sealed"), Some(""));
        assert_eq!(p.get("why"), Some("two\\nlines"));
        assert_eq!(p.get("missing"), None);
        assert_eq!(p.all("note"), vec!["a: b", "c"]);
        assert_eq!(p.into_map()["note"], "c");
        assert_eq!(encode([("a", 1), ("b", 2)]), "a: 1\nb: 2\n");
    }

    #[test]
    fn lines_that_are_not_pairs_are_skipped() {
        let p = decode("junk\nk: v\n\nempty:\n");
        assert_eq!(p.0.len(), 2);
        assert_eq!(p.get("empty"), Some(""));
    }
}
