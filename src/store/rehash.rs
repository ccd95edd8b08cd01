//! [`Rehasher`]: the layer's re-hash of keys stored under an earlier
//! pepper version, after their use and off the request path (see
//! [`pepper`](crate::pepper)).

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};

use crate::hash::KeyHash;
use crate::ids::KeyId;
use crate::store::KeyStore;
use crate::store::guard::catching;

/// The most re-hashes one layer has in flight; a key used while they are
/// all busy is re-hashed after a later use.
pub(crate) const MAX_REHASHES_IN_FLIGHT: usize = 64;

/// Re-hashes keys of earlier versions after their use, off the request
/// path: each re-hash is a task of its own (on the tokio runtime the
/// request runs on), at most [`MAX_REHASHES_IN_FLIGHT`] at once. Without a
/// runtime (or without the `tokio` feature), a store that answers at once
/// (`MemoryStore`) is re-hashed in place, any other not at all. Nothing it
/// does can fail or slow the request: failures are logged, and the key
/// goes on verifying under its old version until a later use re-hashes it.
#[derive(Clone, Default)]
pub(crate) struct Rehasher {
    in_flight: Arc<AtomicUsize>,
}

impl Rehasher {
    /// Replaces `from`, the stored hash of key `id`, with `to` (the hash of
    /// the same token under the current version), unless `from` changed
    /// meanwhile (see [`KeyStore::rehash`]).
    pub(crate) fn queue<S: KeyStore + ?Sized>(
        &self,
        store: &Arc<S>,
        id: KeyId,
        from: KeyHash,
        to: KeyHash,
    ) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_REHASHES_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(key_id = %id, "re-hash skipped: too many in flight; a later use re-hashes the key");
            return;
        }
        let slot = InFlight(Arc::clone(&self.in_flight));
        let store = Arc::clone(store);
        let work = async move {
            let _slot = slot;
            match store.rehash(&id, &from, &to).await {
                Ok(true) => tracing::debug!(
                    key_id = %id,
                    from = from.version(),
                    to = to.version(),
                    "key re-hashed under the current pepper"
                ),
                Ok(false) => {
                    tracing::debug!(key_id = %id, "key not re-hashed: its hash changed meanwhile, or the store does not re-hash")
                }
                Err(error) => {
                    tracing::warn!(key_id = %id, error = %error, "re-hashing a key failed; a later use tries again")
                }
            }
        };
        #[cfg(feature = "tokio")]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(work);
            return;
        }
        let polled = catching(|| {
            let _ = pin!(work).poll(&mut Context::from_waker(Waker::noop()));
        });
        if let Err(panic) = polled {
            tracing::error!(error = %panic, "re-hashing a key panicked; the request goes on");
        }
    }
}

/// Frees a slot of [`Rehasher`] when its re-hash ends, however it ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
