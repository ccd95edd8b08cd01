//! Where the layer and the bundled stores read the time: a [`Clock`], so
//! tests (and instances whose clocks disagree) can be simulated without
//! waiting.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A source of the current time.
///
/// Expiry (and a rotation's grace period) is decided by comparing a stored
/// time with this clock, so it is as exact as the clocks of your servers
/// agree. Revocation is not: a revoked key is refused on every instance,
/// whatever its clock says.
///
/// [`SystemClock`] is the default; a closure is a clock too:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_keyauth::{KeyAuthLayer, MemoryStore};
///
/// // An instance whose clock runs an hour behind.
/// let behind = || SystemTime::now() - Duration::from_secs(3600);
/// let layer = KeyAuthLayer::new(MemoryStore::new()).clock(behind);
/// # let _ = layer;
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock, [`SystemTime::now`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl<F> Clock for F
where
    F: Fn() -> SystemTime + Send + Sync + 'static,
{
    fn now(&self) -> SystemTime {
        self()
    }
}

/// A clock shared by everything that reads it.
#[derive(Clone)]
pub(crate) struct SharedClock(Arc<dyn Clock>);

impl SharedClock {
    pub(crate) fn new(clock: impl Clock) -> Self {
        Self(Arc::new(clock))
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.0.now()
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        Self::new(SystemClock)
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}
