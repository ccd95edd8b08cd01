//! Where the layer and the bundled stores read the time: a [`Clock`], so
//! tests (and instances whose clocks disagree) can be simulated without
//! waiting.
//!
//! The layer reads [`CoarseClock`] by default: the system clock as of the
//! kernel's last timer tick, which costs a tenth of an exact reading. The
//! bundled stores read [`SystemClock`] when they record when a key was
//! issued, rotated or revoked.

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
/// The layer's default is [`CoarseClock`], the stores' [`SystemClock`]; a
/// closure is a clock too:
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

/// The system clock as the kernel last updated it: at most one timer tick
/// behind [`SystemTime::now`] (1 to 10 ms depending on the kernel's
/// `CONFIG_HZ`, 4 ms on most distributions), read without asking the
/// hardware. It is the layer's default clock.
///
/// An expiry is a time the layer compares with this clock, so a key stays
/// usable for at most one tick past its expiry: far less than the clocks of
/// two servers usually disagree. Revocation does not depend on any clock.
///
/// Why: reading the exact clock is the dearest single step of admitting a
/// request after SHA-256 (25 to 40 ns on the benchmark machine, against
/// 4 ns for this one; `BENCHMARKS.md`). On Linux and Android it reads
/// `CLOCK_REALTIME_COARSE` (through `rustix`, from the vDSO); elsewhere it
/// is [`SystemClock`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_keyauth::clock::{Clock, CoarseClock};
/// let coarse = CoarseClock.now();
/// let exact = SystemTime::now();
/// assert!(exact.duration_since(coarse).unwrap_or_default() < Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> SystemTime {
        coarse_now()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_now() -> SystemTime {
    use rustix::time::{ClockId, clock_gettime};
    use std::time::{Duration, UNIX_EPOCH};
    let now = clock_gettime(ClockId::RealtimeCoarse);
    match (u64::try_from(now.tv_sec), u32::try_from(now.tv_nsec)) {
        (Ok(seconds), Ok(nanos)) if nanos < 1_000_000_000 => {
            UNIX_EPOCH + Duration::new(seconds, nanos)
        }
        // A clock set before 1970: let the exact clock answer.
        _ => SystemTime::now(),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn coarse_now() -> SystemTime {
    SystemTime::now()
}

/// A clock shared by everything that reads it. The coarse system clock is
/// called directly (it is read on every request); any other through its
/// trait object.
#[derive(Clone)]
pub(crate) enum SharedClock {
    Coarse,
    Shared(Arc<dyn Clock>),
}

impl SharedClock {
    pub(crate) fn new(clock: impl Clock) -> Self {
        Self::Shared(Arc::new(clock))
    }

    /// [`CoarseClock`], the layer's default.
    pub(crate) fn coarse() -> Self {
        Self::Coarse
    }

    #[inline]
    pub(crate) fn now(&self) -> SystemTime {
        match self {
            Self::Coarse => coarse_now(),
            Self::Shared(clock) => clock.now(),
        }
    }
}

impl Default for SharedClock {
    /// [`SystemClock`]: what the stores record times with.
    fn default() -> Self {
        Self::new(SystemClock)
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}
