//! Configuration errors, and the collector that gathers all of them before any is shown.
//!
//! Every error names the key path (`policies.api_keys.grace`), says what is wrong and,
//! where there is one, quotes the offending value and its line:column, so that a single
//! `rotor check` run lists every problem of a file at once.

use std::fmt;
use std::ops::Range;

/// A position in the configuration text, both 1-based; the column counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// Where in the file; `None` for problems that do not come from the file (environment
    /// variables, an unreadable file).
    pub location: Option<Location>,
    /// The key path, e.g. `policies.api_keys.grace` or `secrets[2].tenant`, or the name of
    /// the environment variable.
    pub key: String,
    pub message: String,
    /// The offending value as written (source text, shortened), when there is one.
    pub got: Option<String>,
}

impl ConfigError {
    /// `LINE:COL: KEY: message (got VALUE)`, without the file name.
    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(loc) = self.location {
            out.push_str(&format!("{}:{}: ", loc.line, loc.column));
        }
        out.push_str(&self.key);
        out.push_str(": ");
        out.push_str(&self.message);
        if let Some(got) = &self.got {
            out.push_str(&format!(" (got {got})"));
        }
        out
    }
}

/// Every problem found in one configuration, in file order (environment problems last).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file name (or another label for text that did not come from a file).
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// One line per error: `FILE:LINE:COL: KEY: message (got VALUE)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.location.is_some() {
                write!(f, "{}:{e}", self.origin)?;
            } else {
                write!(f, "{}: {e}", self.origin)?;
            }
        }
        Ok(())
    }
}

/// Longest quoted value in a message; a long inline table is cut rather than flooding the
/// terminal.
const MAX_GOT_CHARS: usize = 60;

/// Gathers errors while the configuration is checked, with the source text to turn byte
/// spans into line:column and quote values.
pub(crate) struct Diagnostics<'s> {
    source: &'s str,
    /// Byte offset (for sorting) and the error.
    errors: Vec<(usize, ConfigError)>,
}

impl<'s> Diagnostics<'s> {
    pub(super) fn new(source: &'s str) -> Self {
        Diagnostics {
            source,
            errors: Vec::new(),
        }
    }

    /// An error at `span`, quoting the source text there as the value, unless the key is
    /// named like a secret (see [`names_a_secret`]): then the position alone points at it.
    pub(crate) fn value(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let got = (!names_a_secret(key)).then(|| self.quote(span.clone()));
        self.push(Some(span), key, message.into(), got);
    }

    /// An error at `span` without quoting a value (missing keys, unknown keys).
    pub(crate) fn at(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        self.push(span, key, message.into(), None);
    }

    /// An error with no place in the file, e.g. a bad environment variable.
    pub(super) fn detached(&mut self, key: &str, message: impl Into<String>, got: Option<String>) {
        self.push(None, key, message.into(), got);
    }

    fn push(
        &mut self,
        span: Option<Range<usize>>,
        key: &str,
        message: String,
        got: Option<String>,
    ) {
        let offset = span.as_ref().map_or(usize::MAX, |s| s.start);
        let location = span.map(|s| self.location(s.start));
        self.errors.push((
            offset,
            ConfigError {
                location,
                key: key.to_owned(),
                message,
                got,
            },
        ));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// How many errors so far; stage two compares counts to know whether a part was clean.
    pub(crate) fn len(&self) -> usize {
        self.errors.len()
    }

    /// The errors in file order; errors at the same place keep the order they were found in.
    pub(super) fn finish(mut self, origin: &str) -> ConfigErrors {
        self.errors.sort_by_key(|(offset, _)| *offset);
        ConfigErrors {
            origin: origin.to_owned(),
            errors: self.errors.into_iter().map(|(_, e)| e).collect(),
        }
    }

    fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.source.len());
        let before = self.source.get(..offset).unwrap_or(self.source);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    fn quote(&self, span: Range<usize>) -> String {
        let text = self.source.get(span).unwrap_or("").trim();
        let mut chars = text.chars();
        let mut out: String = chars.by_ref().take(MAX_GOT_CHARS).collect();
        if chars.next().is_some() {
            out.push('…');
        }
        // Multi-line values (arrays, tables) are quoted on one line.
        redact_urls(&out.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// Whether the last segment of `key` (`policies.password`, `notify[0].api_key`) is named
/// like a credential. rotor reads every credential from a file (`*_file` keys), so a value
/// under such a name is misplaced, and it is most likely a real password pasted in the wrong
/// place: an error message (printed, logged, pasted into tickets) must not repeat it.
fn names_a_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last).to_ascii_lowercase();
    if last.ends_with("_file") || last == "secrets" {
        return false;
    }
    SECRET_WORDS.iter().any(|word| last.contains(word)) || last.ends_with("_key")
}

/// Words that make a config key name a credential (see [`names_a_secret`]).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "private",
];

/// `text` with the userinfo and the query of every URL in it replaced by `***`: a URL in a
/// config value often carries a password (`https://user:pass@host`) or a token
/// (`?token=...`), and an error message is printed, logged and pasted into tickets.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, url) = rest.split_at(at + 3);
        out.push_str(before);
        let end = url
            .find(|c: char| c.is_whitespace() || "\"'`,]}>".contains(c))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        let path_at = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(path_at);
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        match path.find('?') {
            Some(q) => {
                out.push_str(&path[..q]);
                out.push_str("?***");
                if let Some(f) = path[q..].find('#') {
                    out.push_str(&path[q + f..]);
                }
            }
            None => out.push_str(path),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_urls_lose_their_userinfo_and_query() {
        for (text, want) in [
            (
                "\"ftp://alice:s3cret@host:21/p?token=abc#frag\"",
                "\"ftp://***@host:21/p?***#frag\"",
            ),
            (
                "[\"https://h/x?k=v\", \"http://u@h\"]",
                "[\"https://h/x?***\", \"http://***@h\"]",
            ),
            ("\"https://host/path\"", "\"https://host/path\""),
            ("\"plain text?\"", "\"plain text?\""),
        ] {
            assert_eq!(redact_urls(text), want, "{text}");
        }
    }

    #[test]
    fn values_under_secret_named_keys_are_not_quoted() {
        let text = "[policies]\npassword = \"hunter2hunter2\"\n";
        let mut d = Diagnostics::new(text);
        d.value(
            22..38,
            "policies.password",
            "expected a table, found a string",
        );
        d.value(22..38, "notify[0].api_key", "unknown");
        d.value(22..38, "server.admin_token_file", "cannot read");
        let errors = d.finish("c.toml").errors;
        assert_eq!(errors[0].got, None);
        assert_eq!(errors[1].got, None);
        assert_eq!(errors[2].got.as_deref(), Some("\"hunter2hunter2\""));
        for (key, secret) in [
            ("policies.password", true),
            ("secrets[1].token", true),
            ("x.client_secret", true),
            ("x.signing_key", true),
            ("secrets", false),
            ("secrets[0].key", false),
            ("server.admin_token_file", false),
            ("targets.hmac_key_file", false),
            ("store.master_key_file", false),
        ] {
            assert_eq!(names_a_secret(key), secret, "{key}");
        }
    }

    #[test]
    fn locations_are_one_based_and_count_characters() {
        let d = Diagnostics::new("a = 1\nbé = \"x\"\n");
        assert_eq!(d.location(0), Location { line: 1, column: 1 });
        assert_eq!(d.location(6), Location { line: 2, column: 1 });
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(d.location(12), Location { line: 2, column: 6 });
    }

    #[test]
    fn display_is_one_line_per_error() {
        let mut d = Diagnostics::new("x = 1\ngrace = \"0s\"\n");
        d.detached("env FOO", "is bad", Some("\"1\"".into()));
        d.value(14..18, "policies.p.grace", "is zero");
        let text = d.finish("c.toml").to_string();
        assert_eq!(
            text,
            "c.toml:2:9: policies.p.grace: is zero (got \"0s\")\nc.toml: env FOO: is bad (got \"1\")"
        );
    }
}
