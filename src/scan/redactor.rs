//! [`Redactor`]: an `io::Write` that masks tokens on their way through.

use std::{fmt, io};

use super::{Finding, MAX_TOKEN_LEN, Scan};
use crate::format::KeyFormat;

/// How much of one line a [`Redactor`] holds back at most.
const MAX_HELD: usize = 8 * 1024;
// A full buffer must still have bytes to write before its kept tail.
const _: () = assert!(MAX_HELD > 2 * MAX_TOKEN_LEN);

/// What a [`Redactor`] without a callback does with a finding: nothing.
type Ignore = fn(&Finding<'_>, u64);

/// Writes text on to `W` with the secret of every token of a
/// [`KeyFormat`] masked, as [`KeyFormat::redact`] does, however the text
/// is split into writes.
///
/// Tokens never span lines, so a line is held back until its newline
/// arrives, then scanned and written. Memory stays bounded: at most 8 KiB
/// of a line is held; when a longer line fills it, everything but the last
/// [`MAX_TOKEN_LEN`] bytes (and any token reaching into them) is written,
/// and the rest waits for more, so a token cut by the bound is still
/// found. [`flush`](io::Write::flush) writes what was scanned but keeps
/// the unfinished line back, since it may end in half a token;
/// [`finish`](Self::finish), or dropping the redactor, ends the text and
/// writes it all.
///
/// ```
/// use std::io::Write;
/// use tower_keyauth::KeyFormat;
/// use tower_keyauth::ids::KeyKind;
/// use tower_keyauth::scan::Redactor;
///
/// let format = KeyFormat::default();
/// let minted = format.mint(KeyKind::Organization, None).unwrap();
/// let token = minted.token.expose_secret();
///
/// let mut out = Vec::new();
/// let mut redactor = Redactor::new(&format, &mut out);
/// let (first, second) = token.split_at(20); // a token split across writes
/// write!(redactor, "config loaded\nkey={first}")?;
/// write!(redactor, "{second} in use\n")?;
/// redactor.finish()?;
/// drop(redactor);
///
/// let expected = format!("config loaded\nkey=ak_{}.**** in use\n", minted.id);
/// assert_eq!(String::from_utf8(out).unwrap(), expected);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// With [`with_callback`](Self::with_callback), it also says where it
/// found each token.
pub struct Redactor<'f, W: io::Write, F: FnMut(&Finding<'_>, u64) = Ignore> {
    format: &'f KeyFormat,
    inner: W,
    on_token: F,
    /// The current line's text that is not written yet.
    held: Vec<u8>,
    /// Redacted text for `inner`; it is emptied before more is taken in,
    /// so a failing `inner` makes writes fail rather than memory grow.
    out: Vec<u8>,
    /// How much of `out` `inner` took already.
    out_written: usize,
    /// The current line, from 1.
    line: u64,
    /// How many bytes of the current line were written before `held`.
    column: usize,
}

impl<'f, W: io::Write> Redactor<'f, W> {
    /// A redactor writing to `inner`.
    pub fn new(format: &'f KeyFormat, inner: W) -> Self {
        Self::with_callback(format, inner, |_, _| {})
    }
}

impl<'f, W: io::Write, F: FnMut(&Finding<'_>, u64)> Redactor<'f, W, F> {
    /// A redactor writing to `inner` that calls `on_token` with each token
    /// it masks and its line number (from 1). The finding's
    /// [`range`](Finding::range) counts bytes from the start of that line.
    ///
    /// ```
    /// use std::io::Write;
    /// use tower_keyauth::KeyFormat;
    /// use tower_keyauth::ids::KeyKind;
    /// use tower_keyauth::scan::Redactor;
    ///
    /// let format = KeyFormat::default();
    /// let minted = format.mint(KeyKind::Personal, None).unwrap();
    /// let mut seen = Vec::new();
    /// let mut redactor = Redactor::with_callback(&format, std::io::sink(), |finding, line| {
    ///     seen.push((line, finding.range.start, finding.key_id.clone()))
    /// });
    /// write!(redactor, "first line\nPAT: {}\n", minted.token.expose_secret())?;
    /// redactor.finish()?;
    /// drop(redactor);
    /// assert_eq!(seen, [(2, 5, minted.id)]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_callback(format: &'f KeyFormat, inner: W, on_token: F) -> Self {
        Self {
            format,
            inner,
            on_token,
            held: Vec::new(),
            out: Vec::new(),
            out_written: 0,
            line: 1,
            column: 0,
        }
    }

    /// Ends the text: the line held back is scanned (the end of the text
    /// ends a token), everything is written, and `inner` is flushed.
    /// Writing more afterwards starts a new text.
    pub fn finish(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.redact_held(true);
        self.write_out()?;
        self.inner.flush()
    }

    /// Moves the held text that is settled into `out`, masked: all of it
    /// when the line or the text ended, otherwise all but the last
    /// [`MAX_TOKEN_LEN`] bytes, where a token may still be growing.
    fn redact_held(&mut self, ended: bool) {
        let mut settled = if ended {
            self.held.len()
        } else {
            self.held.len().saturating_sub(MAX_TOKEN_LEN)
        };
        let mut copied = 0;
        for finding in Scan::new(self.format, &self.held) {
            if finding.range.end > settled {
                // A token across the cut waits, whole, for the next round.
                settled = settled.min(finding.range.start);
                break;
            }
            self.out
                .extend_from_slice(&self.held[copied..finding.range.start]);
            self.out.extend_from_slice(finding.masked().as_bytes());
            copied = finding.range.end;
            let in_line = Finding {
                range: self.column + finding.range.start..self.column + finding.range.end,
                ..finding
            };
            (self.on_token)(&in_line, self.line);
        }
        self.out.extend_from_slice(&self.held[copied..settled]);
        self.held.drain(..settled);
        self.column += settled;
    }

    /// Hands `out` to `inner`, keeping what it did not take.
    fn write_out(&mut self) -> io::Result<()> {
        while self.out_written < self.out.len() {
            match self.inner.write(&self.out[self.out_written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.out_written += written,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.out.clear();
        self.out_written = 0;
        Ok(())
    }
}

impl<W: io::Write, F: FnMut(&Finding<'_>, u64)> io::Write for Redactor<'_, W, F> {
    /// Takes bytes up to the next newline, or as many as fit in what is
    /// held back; writes what is settled on to `inner`. An error of
    /// `inner` is returned when nothing was taken, or else on the next
    /// call.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_out()?;
        let room = MAX_HELD - self.held.len();
        let mut taken = &buf[..buf.len().min(room)];
        let line_ended = match taken.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                taken = &taken[..=newline];
                true
            }
            None => false,
        };
        self.held.extend_from_slice(taken);
        if line_ended {
            self.redact_held(true);
            self.line += 1;
            self.column = 0;
        } else if self.held.len() == MAX_HELD {
            self.redact_held(false);
        }
        // The bytes are taken; if `inner` fails now, the next call says so.
        let _ = self.write_out();
        Ok(taken.len())
    }

    /// Writes what is settled and flushes `inner`. The unfinished line
    /// stays held back: it may end in half a token.
    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

impl<W: io::Write, F: FnMut(&Finding<'_>, u64)> Drop for Redactor<'_, W, F> {
    /// Finishes the text; errors are lost, as in `BufWriter`'s drop.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl<W: io::Write, F: FnMut(&Finding<'_>, u64)> fmt::Debug for Redactor<'_, W, F> {
    /// How much is held and where, never the text: it may hold a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("held", &self.held.len())
            .field("unwritten", &(self.out.len() - self.out_written))
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}
