//! Values that must never be printed: [`Secret`], and [`redact_url`] for URLs that carry user info.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

/// What secrets are printed as.
pub(crate) const REDACTED: &str = "***";

/// A password, key password or `user:password` pair. Its `Debug` and `Display` print `***`, and it
/// serializes as `"***"`: a [`Config`](super::Config) full of secrets can be logged, printed in an
/// error or dumped as JSON without leaking one. The value is reached only through
/// [`expose`](Self::expose), at the one place that hands it to a client library.
///
/// ```
/// use backbone::config::Secret;
///
/// let password = Secret::new("s3cret");
/// assert_eq!(format!("{password:?} {password}"), "*** ***");
/// assert_eq!(password.expose(), "s3cret");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the client library that needs it. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

pub(crate) fn serialize_redacted<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

/// `text` with the user info of every URL in it redacted: `http://user:secret@host/…` becomes
/// `http://user:***@host/…`, and user info without a password (`http://token@host`) becomes
/// `***@`. Text without user info is returned as is. For logs, `Debug` output and error messages
/// (registry URLs and the HTTP client's errors, which quote the URL).
pub fn redact_url(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority runs to the path, query or fragment, or to where the URL ends in prose.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | ')' | '"' | '\'' | '>' | ']') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(user_end) => {
                let user_info = &authority[..user_end];
                match user_info.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(REDACTED),
                }
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}
