//! Fuzzes the whole request path: arbitrary bytes become an HTTP request,
//! which goes through `KeyAuthLayer`; the outcome must be a documented one.
//!
//! ```sh
//! cargo +nightly fuzz run request fuzz/corpus/request
//! ```
//!
//! The same checks run on stable, over the committed corpus and mutations
//! of it, in `tests/fuzz_request.rs`.

#![no_main]

#[path = "../request_outcome.rs"]
mod request_outcome;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = request_outcome::check(data);
});
