//! Containing the store: a panic in store code, or a store that does not
//! answer in time, becomes a [`StoreError`] (so a 503), never a crashed
//! connection or a request that hangs.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::store::StoreError;

/// Runs synchronous store code, turning a panic into an error.
pub(crate) fn catching<T>(call: impl FnOnce() -> T) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(call)).map_err(panicked)
}

fn panicked(payload: Box<dyn Any + Send>) -> StoreError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    StoreError::Panicked(message)
}

pin_project! {
    /// A future whose panics become errors.
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panicked(payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors_with_their_message() {
        let error = catching(|| -> u8 { panic!("connection pool poisoned") }).unwrap_err();
        assert!(
            matches!(&error, StoreError::Panicked(message) if message == "connection pool poisoned")
        );
        assert_eq!(catching(|| 7).unwrap(), 7);
    }

    #[tokio::test]
    async fn panicking_futures_become_errors() {
        let failed: Result<(), StoreError> =
            CatchUnwind::new(async { panic!("{}", String::from("boom")) }).await;
        assert!(matches!(failed, Err(StoreError::Panicked(message)) if message == "boom"));
        assert_eq!(CatchUnwind::new(async { 3 }).await.unwrap(), 3);
    }
}
