//! Public paths: requests the layer lets through without a credential.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use http::{Method, Uri};

type Predicate = Arc<dyn Fn(&Method, &Uri) -> bool + Send + Sync>;

/// Exact paths (`/health/`), prefixes (`/docs/*`) and predicates.
#[derive(Clone, Default)]
pub(crate) struct PublicPaths {
    exact: Vec<Box<str>>,
    /// Each ends with `/`: `/docs/*` is kept as `/docs/`.
    prefixes: Vec<Box<str>>,
    predicates: Vec<Predicate>,
}

impl PublicPaths {
    /// Adds `/exact/path` or `/prefix/*`.
    ///
    /// # Panics
    ///
    /// If `pattern` does not start with `/`, or has a `*` anywhere but in a
    /// final `/*`.
    pub(crate) fn add(&mut self, pattern: &str) {
        assert!(
            pattern.starts_with('/'),
            "public path {pattern:?} must start with '/'"
        );
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => {
                self.prefixes.push(prefix.into());
            }
            _ => {
                assert!(
                    !pattern.contains('*'),
                    "public path {pattern:?} may only use '*' as a final \"/*\""
                );
                self.exact.push(pattern.into());
            }
        }
    }

    pub(crate) fn add_predicate(&mut self, predicate: Predicate) {
        self.predicates.push(predicate);
    }

    /// Whether the request's path is public. Paths are compared as they
    /// arrive, without decoding, exactly as axum's router matches them.
    pub(crate) fn matches(&self, request: &Parts) -> bool {
        if self.exact.is_empty() && self.prefixes.is_empty() && self.predicates.is_empty() {
            return false;
        }
        let path = request.uri.path();
        self.exact.iter().any(|exact| **exact == *path)
            || self
                .prefixes
                .iter()
                .any(|prefix| path.starts_with(&**prefix))
            || self
                .predicates
                .iter()
                .any(|predicate| predicate(&request.method, &request.uri))
    }
}

impl fmt::Debug for PublicPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicPaths")
            .field("exact", &self.exact)
            .field("prefixes", &self.prefixes)
            .field("predicates", &self.predicates.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn exact_and_prefix_paths() {
        let mut public = PublicPaths::default();
        public.add("/");
        public.add("/health/");
        public.add("/docs/*");
        for path in [
            "/",
            "/health/",
            "/docs/",
            "/docs/index.html",
            "/docs/a/b?x=1",
        ] {
            assert!(public.matches(&request(path)), "{path}");
        }
        for path in [
            "/health",
            "/healthz",
            "/health/x",
            "/docs",
            "/docsx",
            "/v1/docs/",
            "//health/",
        ] {
            assert!(!public.matches(&request(path)), "{path}");
        }
    }

    #[test]
    fn predicates_see_method_and_uri() {
        let mut public = PublicPaths::default();
        public.add_predicate(Arc::new(|method, _uri| method == Method::OPTIONS));
        let options = http::Request::options("/v1/x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(public.matches(&options));
        assert!(!public.matches(&request("/v1/x")));
    }

    #[test]
    #[should_panic(expected = "must start with '/'")]
    fn patterns_must_be_absolute() {
        PublicPaths::default().add("health");
    }

    #[test]
    #[should_panic(expected = "final")]
    fn stars_only_at_the_end() {
        PublicPaths::default().add("/docs/*/x");
    }
}
