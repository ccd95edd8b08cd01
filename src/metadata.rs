//! What an application keeps with a key: a small JSON object, such as the
//! customer or plan a key was made for.
//!
//! It is held as JSON text, checked once when it is made: a request that
//! reads it from its [`Principal`](crate::Principal) clones a pointer and
//! parses nothing.

use std::fmt;
use std::sync::Arc;

/// A JSON object of at most [`KeyMetadata::MAX_BYTES`] bytes, kept with a
/// key ([`KeyRecord::metadata`](crate::store::KeyRecord::metadata)), shown in
/// listings and handed to handlers on the
/// [`Principal`](crate::Principal::metadata) with no further store call.
///
/// ```
/// use tower_keyauth::metadata::KeyMetadata;
/// let metadata = KeyMetadata::from_json(r#"{"customer": "cus_123", "plan": "pro"}"#).unwrap();
/// assert_eq!(metadata.as_json(), r#"{"customer": "cus_123", "plan": "pro"}"#);
/// assert!(KeyMetadata::from_json("[1, 2]").is_err()); // an object, not a list
/// assert!(KeyMetadata::from_json(&format!(r#"{{"notes": "{}"}}"#, "x".repeat(5000))).is_err());
/// ```
///
/// With the `serde` feature it serializes as the object itself, and converts
/// from and to a `serde_json` map.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyMetadata(Arc<str>);

/// Why a text is not key metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMetadata {
    /// More than [`KeyMetadata::MAX_BYTES`] bytes of JSON.
    #[error("metadata may hold at most {max} bytes of JSON, not {len}", max = KeyMetadata::MAX_BYTES)]
    TooLarge {
        /// The length of the JSON text.
        len: usize,
    },
    /// Not a JSON object (`{…}`).
    #[error("metadata must be a JSON object")]
    NotAnObject,
    /// Not well-formed JSON, or nested deeper than
    /// [`KeyMetadata::MAX_DEPTH`].
    #[error("metadata is not valid JSON (at byte {at})")]
    Malformed {
        /// Where the text stops being JSON.
        at: usize,
    },
}

impl KeyMetadata {
    /// The most bytes of JSON a key's metadata may hold: 4 KiB.
    pub const MAX_BYTES: usize = 4096;

    /// The deepest nesting of objects and lists it may hold.
    pub const MAX_DEPTH: usize = 32;

    /// Checks that `json` is one JSON object of at most
    /// [`MAX_BYTES`](Self::MAX_BYTES) bytes and keeps it as it is.
    pub fn from_json(json: &str) -> Result<Self, InvalidMetadata> {
        if json.len() > Self::MAX_BYTES {
            return Err(InvalidMetadata::TooLarge { len: json.len() });
        }
        check_object(json.as_bytes())?;
        Ok(Self(Arc::from(json)))
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The heap memory the metadata holds.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn heap_bytes(&self) -> usize {
        // The text and the two reference counts beside it.
        self.0.len() + 2 * std::mem::size_of::<usize>()
    }
}

/// The JSON text itself: metadata is the application's, not a secret.
impl fmt::Debug for KeyMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for KeyMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyMetadata {
    type Err = InvalidMetadata;

    fn from_str(json: &str) -> Result<Self, InvalidMetadata> {
        Self::from_json(json)
    }
}

/// Checks that `text` is exactly one JSON object (RFC 8259), with
/// surrounding whitespace, nested at most `MAX_DEPTH` deep.
///
/// Written here rather than taken from `serde_json` so that the core, which
/// every store and the layer use, checks metadata without serde; the input
/// is at most 4 KiB and the walk is a loop over its bytes with a bounded
/// stack, so no text can make it expensive. A property test checks that it
/// agrees with `serde_json` on every input it is given.
fn check_object(text: &[u8]) -> Result<(), InvalidMetadata> {
    let mut reader = Reader { text, at: 0 };
    reader.skip_whitespace();
    if reader.peek() != Some(b'{') {
        return Err(InvalidMetadata::NotAnObject);
    }
    reader.value()?;
    reader.skip_whitespace();
    if reader.at != text.len() {
        return Err(reader.malformed());
    }
    Ok(())
}

struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

/// What a container expects next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Object,
    List,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn malformed(&self) -> InvalidMetadata {
        InvalidMetadata::Malformed { at: self.at }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), InvalidMetadata> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.malformed())
        }
    }

    /// One value, containers walked with an explicit stack.
    fn value(&mut self) -> Result<(), InvalidMetadata> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            // A value is expected here.
            self.skip_whitespace();
            match self.peek() {
                Some(b'{') | Some(b'[') => {
                    if open.len() == KeyMetadata::MAX_DEPTH {
                        return Err(self.malformed());
                    }
                    let container = if self.peek() == Some(b'{') {
                        Open::Object
                    } else {
                        Open::List
                    };
                    self.at += 1;
                    self.skip_whitespace();
                    let empty_end = if container == Open::Object {
                        b'}'
                    } else {
                        b']'
                    };
                    if self.peek() == Some(empty_end) {
                        self.at += 1;
                    } else {
                        open.push(container);
                        if container == Open::Object {
                            self.member_name()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.malformed()),
            }
            // A value ended: close containers, or go on to the next element.
            loop {
                let Some(&container) = open.last() else {
                    return Ok(());
                };
                self.skip_whitespace();
                let end = if container == Open::Object {
                    b'}'
                } else {
                    b']'
                };
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if container == Open::Object {
                            self.skip_whitespace();
                            self.member_name()?;
                        }
                        break;
                    }
                    Some(byte) if byte == end => {
                        self.at += 1;
                        open.pop();
                    }
                    _ => return Err(self.malformed()),
                }
            }
        }
    }

    /// `"name" :`
    fn member_name(&mut self) -> Result<(), InvalidMetadata> {
        if self.peek() != Some(b'"') {
            return Err(self.malformed());
        }
        self.string()?;
        self.skip_whitespace();
        self.expect(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), InvalidMetadata> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.malformed())
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, below 10³⁰⁰
    /// in magnitude: a number a JSON parser would turn into an infinite
    /// float is refused, so that metadata always reads back.
    fn number(&mut self) -> Result<(), InvalidMetadata> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let integer_digits = match self.peek() {
            Some(b'0') => {
                self.at += 1;
                0
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.malformed()),
        };
        let mut magnitude = i64::try_from(integer_digits).unwrap_or(i64::MAX);
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.malformed());
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let negative = self.peek() == Some(b'-');
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            let exponent_start = self.at;
            if self.digits() == 0 {
                return Err(self.malformed());
            }
            if !negative {
                let exponent = std::str::from_utf8(&self.text[exponent_start..self.at])
                    .ok()
                    .and_then(|digits| digits.parse::<i64>().ok())
                    .unwrap_or(i64::MAX);
                magnitude = magnitude.saturating_add(exponent);
            }
        }
        if magnitude > 300 {
            return Err(InvalidMetadata::Malformed { at: start });
        }
        Ok(())
    }

    /// A string: no control characters, valid escapes, and `\u` escapes
    /// that pair surrogates as JSON requires (the text is UTF-8 already).
    fn string(&mut self) -> Result<(), InvalidMetadata> {
        self.expect(b'"')?;
        loop {
            match self.peek() {
                None | Some(0x00..=0x1f) => return Err(self.malformed()),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1;
                        }
                        Some(b'u') => {
                            self.at += 1;
                            let unit = self.hex4()?;
                            if (0xD800..0xDC00).contains(&unit) {
                                // A high surrogate needs its low one.
                                self.expect(b'\\')?;
                                self.expect(b'u')?;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.malformed());
                                }
                            } else if (0xDC00..0xE000).contains(&unit) {
                                return Err(self.malformed());
                            }
                        }
                        _ => return Err(self.malformed()),
                    }
                }
                Some(_) => self.at += 1,
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, InvalidMetadata> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.malformed())?;
        let mut unit = 0;
        for &digit in digits {
            let value = (digit as char)
                .to_digit(16)
                .ok_or_else(|| self.malformed())?;
            unit = unit * 16 + value;
        }
        self.at += 4;
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_metadata() {
        for json in [
            "{}",
            " { } ",
            r#"{"a":1,"b":[true,false,null,-0.5e+3,"x\"\\\/\b\f\n\r\t\u00e9"],"c":{"d":{}}}"#,
            r#"{"emoji":"\ud83d\ude00","plain":"é"}"#,
            "{\"list\":[[],[[]],{}]}",
        ] {
            assert!(KeyMetadata::from_json(json).is_ok(), "{json}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for json in [
            "",
            "[]",
            "1",
            "\"text\"",
            "null",
            "{",
            "{}}",
            "{} {}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":[1,]}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":tru}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud83d\"}",
            "{\"a\":\"\\ude00\"}",
            "{a:1}",
            "{\"a\":NaN}",
        ] {
            assert!(KeyMetadata::from_json(json).is_err(), "{json}");
        }
        assert_eq!(
            KeyMetadata::from_json("[]"),
            Err(InvalidMetadata::NotAnObject)
        );
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(KeyMetadata::MAX_DEPTH),
            "]".repeat(KeyMetadata::MAX_DEPTH)
        );
        assert!(KeyMetadata::from_json(&deep).is_err());
        let deepest = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(KeyMetadata::MAX_DEPTH - 1),
            "]".repeat(KeyMetadata::MAX_DEPTH - 1)
        );
        assert!(KeyMetadata::from_json(&deepest).is_ok());
        let padded = format!("{{\"a\":\"{}\"}}", "x".repeat(KeyMetadata::MAX_BYTES - 8));
        assert_eq!(padded.len(), KeyMetadata::MAX_BYTES);
        assert!(KeyMetadata::from_json(&padded).is_ok());
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(KeyMetadata::MAX_BYTES - 7));
        assert_eq!(
            KeyMetadata::from_json(&over),
            Err(InvalidMetadata::TooLarge {
                len: KeyMetadata::MAX_BYTES + 1
            })
        );
    }
}
