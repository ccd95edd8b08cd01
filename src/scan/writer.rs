//! [`RedactingWriter`]: a `tracing-subscriber` writer that masks tokens.

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

use super::Redactor;
use crate::format::KeyFormat;

/// A [`MakeWriter`] for `tracing-subscriber` that masks the secret of every
/// token of a [`KeyFormat`] in what is logged through it, whichever field
/// or message carries it, before `inner` sees it.
///
/// Each event gets a [`Redactor`] around `inner`'s writer, which holds back
/// at most 8 KiB of a line (the bound and what happens beyond it are
/// described there) and writes the rest when the event is written.
///
/// ```
/// use tower_keyauth::KeyFormat;
/// use tower_keyauth::ids::KeyKind;
/// use tower_keyauth::scan::RedactingWriter;
///
/// let format = KeyFormat::default();
/// tracing_subscriber::fmt()
///     .with_writer(RedactingWriter::new(format.clone(), std::io::stderr))
///     .init();
///
/// let minted = format.mint(KeyKind::Organization, None).unwrap();
/// // Logged as `… a key was issued key=ak_Xb3kP9qLm2Ts.****`.
/// tracing::info!(key = minted.token.expose_secret(), "a key was issued");
/// ```
#[derive(Debug, Clone)]
pub struct RedactingWriter<M> {
    format: KeyFormat,
    inner: M,
}

impl<M> RedactingWriter<M> {
    /// Masks tokens of `format` in everything written to `inner`.
    pub fn new(format: KeyFormat, inner: M) -> Self {
        Self { format, inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingWriter<M> {
    type Writer = Redactor<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redactor::new(&self.format, self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Redactor::new(&self.format, self.inner.make_writer_for(meta))
    }
}
