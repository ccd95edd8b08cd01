//! Finding and masking keys in text: logs, files, support tickets.
//!
//! A token of a [`KeyFormat`] carries its prefix and a checksum, so it can be
//! recognised in any text without asking a store, and look-alikes (a wrong
//! checksum) are not reported. [`KeyFormat::find_tokens`] says where each
//! token is and which key it is; [`KeyFormat::redact`] replaces each secret
//! with `****` and keeps prefix and id (`ak_Xb3kP9qLm2Ts.****`, the form of
//! [`KeyFormat::mask`]), so an operator knows which key leaked. A
//! [`Redactor`] masks everything written through it, in bounded memory, and
//! a `RedactingWriter` (feature `tracing-subscriber`) everything logged.
//!
//! ```
//! use tower_keyauth::KeyFormat;
//! use tower_keyauth::ids::KeyKind;
//!
//! let format = KeyFormat::default();
//! let minted = format.mint(KeyKind::Organization, None).unwrap();
//! let token = minted.token.expose_secret();
//! let log = format!("GET /v1/things Authorization: Bearer {token}\n");
//!
//! let found: Vec<_> = format.find_tokens(&log).collect();
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].key_id, minted.id);
//! assert_eq!(&log[found[0].range.clone()], token);
//!
//! let masked = format!("GET /v1/things Authorization: Bearer ak_{}.****\n", minted.id);
//! assert_eq!(format.redact(&log), masked);
//! ```
//!
//! # What counts as a token
//!
//! Exactly what [`KeyFormat::parse`] accepts, found anywhere in the text:
//!
//! * **after** a token anything may come. A token ends where its letters
//!   and digits end (`ak_…,`, `ak_…"`, `ak_…&page=2`, `ak_….`, `ak_…\n`);
//!   when more letters or digits are glued to it (`ak_…xyz`, two tokens
//!   with nothing between) and the whole run fails the checksum, the
//!   length this format mints ([`KeyFormat::secret_length`] plus the six
//!   checksum characters) is tried too, so a redactor never lets a minted
//!   token through because of what follows it. GitHub's secret scanning
//!   wants a boundary there; a redactor that missed a leak would fail open;
//! * **before** a token anything may come. GitHub's default also wants a
//!   byte that is not a letter or digit there, but escape sequences end in
//!   letters and digits: `"\nak_…"` in a JSON log line, `%20ak_…` in a
//!   URL. The checksum, not the boundary, keeps look-alikes out: a random
//!   candidate passes it once in 62⁶ (5.7 × 10¹⁰).
//!
//! Tokens are at most [`MAX_TOKEN_LEN`] bytes and contain no whitespace, so
//! they never span lines. The text is read as bytes and the ranges are
//! byte offsets; tokens are ASCII, so their ranges fall on character
//! boundaries whatever surrounds them. The work is linear in the length of
//! the text.
//!
//! Opaque (legacy) tokens accepted with [`KeyFormat::accept_opaque`] have
//! no prefix or checksum to recognise them by: they are not reported.

mod redactor;
#[cfg(feature = "tracing-subscriber")]
mod writer;

use std::borrow::Cow;
use std::iter::FusedIterator;
use std::ops::Range;
use std::{fmt, str};

use crate::format::{Environment, KeyFormat, KindSet};
use crate::ids::{KeyId, KeyKind};

pub use redactor::Redactor;
#[cfg(feature = "tracing-subscriber")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-subscriber")))]
pub use writer::RedactingWriter;

/// The longest token found, in bytes. It fits the longest prefix and id a
/// [`KeyFormat`] accepts (32 and 64 bytes) with a secret of 400
/// characters; minted secrets have 22 unless
/// [`secret_length`](KeyFormat::secret_length) says otherwise.
pub const MAX_TOKEN_LEN: usize = 512;

// The token shape's bounds, as `KeyFormat` checks them: a prefix of at most
// 32 bytes, an id of at most 64, a secret of at least 22 characters and
// then a six-character checksum. They only narrow where `parse` is tried.
const MAX_PREFIX_LEN: usize = 32;
const MAX_ID_LEN: usize = 64;
const MIN_SECRET_AND_CHECKSUM_LEN: usize = 22 + 6;

impl KeyFormat {
    /// Every token of this format in `text`, in order, each with its byte
    /// range and key id. No store is asked; see [the rules](crate::scan).
    ///
    /// ```
    /// use tower_keyauth::KeyFormat;
    /// use tower_keyauth::ids::KeyKind;
    ///
    /// let format = KeyFormat::default();
    /// let org = format.mint(KeyKind::Organization, None).unwrap();
    /// let pat = format.mint(KeyKind::Personal, None).unwrap();
    /// let text = format!(
    ///     r#"{{"key":"{}","backup":"{}x"}} token={}"#,
    ///     org.token.expose_secret(),
    ///     org.token.expose_secret(), // a letter glued after it: found all the same
    ///     pat.token.expose_secret(),
    /// );
    ///
    /// let found: Vec<_> = format.find_tokens(&text).collect();
    /// assert_eq!(found.len(), 3);
    /// assert_eq!((found[0].prefix, &found[0].key_id), ("ak", &org.id));
    /// assert_eq!(found[1].key_id, org.id);
    /// assert_eq!((found[2].prefix, &found[2].key_id), ("pat", &pat.id));
    /// assert!(found[2].accepts(KeyKind::Personal));
    /// assert_eq!(found[2].range.end, text.len());
    ///
    /// // One character more, and the checksums refuse them all.
    /// assert_eq!(format.find_tokens(&text.replace(".", ".x")).count(), 0);
    /// ```
    pub fn find_tokens<'f, 't>(&'f self, text: &'t str) -> Findings<'f, 't> {
        Findings(Scan::new(self, text.as_bytes()))
    }

    /// `text` with the secret of every token of this format replaced by
    /// `****`, keeping prefix and id: the [`mask`](KeyFormat::mask) of the
    /// key. Borrowed when there is no token.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use tower_keyauth::KeyFormat;
    /// use tower_keyauth::ids::KeyKind;
    ///
    /// let format = KeyFormat::default();
    /// let minted = format.mint(KeyKind::Workspace, None).unwrap();
    /// let url = format!("https://api.example.com/v1/things?api-key={}&page=2", minted.token.expose_secret());
    ///
    /// let redacted = format.redact(&url);
    /// let expected = format!("https://api.example.com/v1/things?api-key=ak_{}.****&page=2", minted.id);
    /// assert_eq!(redacted, expected);
    /// assert!(matches!(format.redact("nothing to hide"), Cow::Borrowed(_)));
    /// ```
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut findings = self.find_tokens(text).peekable();
        if findings.peek().is_none() {
            return Cow::Borrowed(text);
        }
        let mut redacted = String::with_capacity(text.len());
        let mut copied = 0;
        for finding in findings {
            redacted.push_str(&text[copied..finding.range.start]);
            redacted.push_str(&finding.masked());
            copied = finding.range.end;
        }
        redacted.push_str(&text[copied..]);
        Cow::Owned(redacted)
    }
}

/// A token found in text: where it is and which key it names, never its
/// secret.
///
/// ```
/// use tower_keyauth::KeyFormat;
/// use tower_keyauth::ids::KeyKind;
///
/// let format = KeyFormat::default();
/// let minted = format.mint(KeyKind::Workspace, None).unwrap();
/// let text = format!("export API_KEY={}", minted.token.expose_secret());
///
/// let finding = format.find_tokens(&text).next().unwrap();
/// assert_eq!(finding.range, 15..text.len());
/// assert_eq!(finding.masked(), format!("ak_{}.****", minted.id));
/// assert!(finding.accepts(KeyKind::Workspace) && !finding.accepts(KeyKind::Personal));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding<'t> {
    /// The byte range of the whole token in the text searched.
    pub range: Range<usize>,
    /// The prefix, such as `ak` (borrowed from the text).
    pub prefix: &'t str,
    /// The key's public id.
    pub key_id: KeyId,
    /// The environment its prefix names, if any.
    pub environment: Option<Environment>,
    kinds: KindSet,
}

impl Finding<'_> {
    /// Whether a key of `kind` may carry this token's prefix (`ak` is for
    /// organization and workspace keys in the default format).
    pub fn accepts(&self, kind: KeyKind) -> bool {
        self.kinds.contains(kind)
    }

    /// The masked form that [`KeyFormat::redact`] writes in the token's
    /// place, such as `ak_Xb3kP9qLm2Ts.****`.
    pub fn masked(&self) -> String {
        KeyFormat::mask(Some(self.prefix), &self.key_id)
    }
}

/// The tokens in a text, in order: an iterator from
/// [`KeyFormat::find_tokens`], which shows it in use. Its `Debug` shows how
/// far it searched, never the text.
pub struct Findings<'f, 't>(Scan<'f, 't>);

impl<'t> Iterator for Findings<'_, 't> {
    type Item = Finding<'t>;

    fn next(&mut self) -> Option<Finding<'t>> {
        self.0.next()
    }
}

impl FusedIterator for Findings<'_, '_> {}

impl fmt::Debug for Findings<'_, '_> {
    /// Where the search is, never the text: it holds the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Findings")
            .field("searched", &self.0.resume)
            .field("len", &self.0.bytes.len())
            .finish_non_exhaustive()
    }
}

/// The scanner over bytes, which [`Findings`] and [`Redactor`] share.
///
/// Every `.` is a candidate: the letters and digits after it must be a
/// secret and checksum, the letters, digits and `-` before it an id that
/// follows a `_`, and before that `_` a prefix ends. Each start of that
/// prefix, longest first (as `parse` prefers the longest prefix), is
/// handed to [`KeyFormat::parse_bytes`], which checks the rest. A
/// candidate looks at most [`MAX_TOKEN_LEN`] bytes after its dot and 98
/// before it, and the runs after two dots never overlap, so the work is
/// linear in the text.
struct Scan<'f, 'b> {
    format: &'f KeyFormat,
    bytes: &'b [u8],
    /// Where the search for the next `.` resumes.
    resume: usize,
    /// Where the last token found ended: no token starts before it.
    earliest_start: usize,
}

impl<'f, 'b> Scan<'f, 'b> {
    fn new(format: &'f KeyFormat, bytes: &'b [u8]) -> Self {
        Self {
            format,
            bytes,
            resume: 0,
            earliest_start: 0,
        }
    }

    /// The token whose id ends at the `.` at `dot`, if there is one.
    fn token_around(&self, dot: usize) -> Option<Finding<'b>> {
        let bytes = self.bytes;
        let secret_len = bytes[dot + 1..]
            .iter()
            .take(MAX_TOKEN_LEN + 1)
            .take_while(|byte| byte.is_ascii_alphanumeric())
            .count();
        if !(MIN_SECRET_AND_CHECKSUM_LEN..=MAX_TOKEN_LEN).contains(&secret_len) {
            return None;
        }
        let end = dot + 1 + secret_len;
        let id_len = bytes[self.earliest_start..dot]
            .iter()
            .rev()
            .take(MAX_ID_LEN + 1)
            .take_while(|&&byte| byte.is_ascii_alphanumeric() || byte == b'-')
            .count();
        if id_len == 0 || id_len > MAX_ID_LEN {
            return None;
        }
        let underscore = (dot - id_len).checked_sub(1)?;
        if underscore < self.earliest_start || bytes[underscore] != b'_' {
            return None;
        }
        let prefix_room = bytes[self.earliest_start..underscore]
            .iter()
            .rev()
            .take(MAX_PREFIX_LEN)
            .take_while(|&&byte| byte.is_ascii_alphanumeric() || byte == b'_')
            .count();
        let starts = || {
            (underscore - prefix_room..underscore)
                .filter(move |&start| bytes[start] != b'_' && end - start <= MAX_TOKEN_LEN)
        };
        starts()
            .find_map(|start| self.parse_at(start..end))
            .or_else(|| {
                // Letters or digits glued to a token make the run longer
                // than it: try the length this format mints, so a redactor
                // does not let `<token>xyz` through.
                let minted_end = dot + 1 + self.format.minted_secret_and_checksum_len();
                (minted_end < end)
                    .then(|| starts().find_map(|start| self.parse_at(start..minted_end)))
                    .flatten()
            })
    }

    fn parse_at(&self, range: Range<usize>) -> Option<Finding<'b>> {
        let token = &self.bytes[range.clone()];
        // With `accept_opaque`, anything without a known prefix parses as
        // an opaque token: not ours to report.
        let parsed = self
            .format
            .parse_bytes(token)
            .ok()
            .filter(|parsed| !parsed.is_opaque())?;
        let prefix_len = parsed.prefix()?.len();
        Some(Finding {
            prefix: str::from_utf8(&self.bytes[range.start..range.start + prefix_len]).ok()?,
            key_id: parsed.key_id()?,
            environment: parsed.environment(),
            kinds: parsed.kinds(),
            range,
        })
    }
}

impl<'b> Iterator for Scan<'_, 'b> {
    type Item = Finding<'b>;

    fn next(&mut self) -> Option<Finding<'b>> {
        while let Some(offset) = self.bytes[self.resume..].iter().position(|&b| b == b'.') {
            let dot = self.resume + offset;
            match self.token_around(dot) {
                Some(finding) => {
                    self.resume = finding.range.end;
                    self.earliest_start = finding.range.end;
                    return Some(finding);
                }
                None => self.resume = dot + 1,
            }
        }
        self.resume = self.bytes.len();
        None
    }
}

#[cfg(test)]
mod tests;
