//! What [`KeyAuthLayer`](crate::KeyAuthLayer) records through the
//! [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): install
//! any recorder (Prometheus, StatsD, …) and these appear.
//!
//! | name | type | labels |
//! |---|---|---|
//! | [`REQUESTS_TOTAL`] (`keyauth_requests_total`) | counter, once per request | `outcome`, `source`, `kind` |
//! | [`STORE_LOOKUP_SECONDS`] (`keyauth_store_lookup_seconds`) | histogram, seconds | none |
//!
//! Labels of `keyauth_requests_total`, each from a small fixed set:
//!
//! - `outcome`: `authenticated` for an admitted key; for a refused one the
//!   refusal's [`AuthError::error_code`](crate::AuthError::error_code)
//!   (`missing_credentials`, `invalid_request`, `invalid_token` (also for
//!   revoked and expired keys), `missing_organization`, `forbidden`,
//!   `insufficient_scope`, `unavailable`, `rate_limited`,
//!   `quota_exhausted`). A
//!   request on a public path without a credential counts as `public`; one
//!   on a public path with a credential that was refused (and ignored there)
//!   counts with the refusal's code.
//! - `source`: where the credential was found: `bearer`, `header`, `query`
//!   or `custom`, never the header's or parameter's name; `none` when no
//!   credential was extracted (missing or malformed).
//! - `kind`: the admitted key's [`KeyKind`](crate::ids::KeyKind)
//!   (`organization`, `workspace`, `personal`); `unknown` for every refusal,
//!   whose presenter is not authenticated.
//!
//! `keyauth_store_lookup_seconds` times each lookup of a key that went to
//! the store asynchronously (a store that cannot lend the record at once,
//! such as SQL stores or a cache miss); lookups an in-memory store answers
//! at once are not timed. Without the feature nothing is measured.
//!
//! ```
//! use tower_keyauth::metrics::{REQUESTS_TOTAL, STORE_LOOKUP_SECONDS};
//! assert_eq!(REQUESTS_TOTAL, "keyauth_requests_total");
//! assert_eq!(STORE_LOOKUP_SECONDS, "keyauth_store_lookup_seconds");
//! ```

use std::time::Duration;

use crate::error::{AuthError, AuthErrorKind};
use crate::principal::{CredentialSource, Principal};

/// The counter of requests, by `outcome`, `source` and `kind`.
pub const REQUESTS_TOTAL: &str = "keyauth_requests_total";

/// The histogram of store lookup times, in seconds.
pub const STORE_LOOKUP_SECONDS: &str = "keyauth_store_lookup_seconds";

/// The `outcome` of an admitted request.
pub const OUTCOME_AUTHENTICATED: &str = "authenticated";

/// The `outcome` of a request on a public path without a credential.
pub const OUTCOME_PUBLIC: &str = "public";

/// The `kind` of a request without an admitted key.
pub const KIND_UNKNOWN: &str = "unknown";

/// The `source` of a request without an extracted credential.
pub const SOURCE_NONE: &str = "none";

/// The `source` label of a credential source: its variant only.
pub(crate) fn source_label(source: &CredentialSource) -> &'static str {
    match source {
        CredentialSource::Bearer => "bearer",
        CredentialSource::Header(_) => "header",
        CredentialSource::Query(_) => "query",
        CredentialSource::Custom(_) => "custom",
    }
}

/// Counts an admitted request.
pub(crate) fn admitted(principal: &Principal) {
    count(
        OUTCOME_AUTHENTICATED,
        source_label(principal.source()),
        principal.kind().as_str(),
    );
}

/// Counts a refused credential (or a public request without one).
pub(crate) fn refused(error: &AuthError, source: &'static str, public: bool) {
    let outcome = if public && error.kind() == AuthErrorKind::MissingCredentials {
        OUTCOME_PUBLIC
    } else {
        error.error_code()
    };
    count(outcome, source, KIND_UNKNOWN);
}

fn count(outcome: &'static str, source: &'static str, kind: &'static str) {
    metrics::counter!(
        REQUESTS_TOTAL,
        "outcome" => outcome,
        "source" => source,
        "kind" => kind
    )
    .increment(1);
}

/// Records how long a store lookup took.
pub(crate) fn store_lookup(elapsed: Duration) {
    metrics::histogram!(STORE_LOOKUP_SECONDS).record(elapsed.as_secs_f64());
}
