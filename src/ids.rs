//! Typed identifiers: a key id is never confused with an organization id.
//!
//! Each identifier is an immutable, cheaply cloned string (`Arc<str>`), so a
//! [`Principal`](crate::Principal) can be built on every request without
//! copying text.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string as this identifier.
            pub fn new(value: impl Into<Arc<str>>) -> Self {
                Self(value.into())
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

identifier! {
    /// The public, non-secret identifier of an API key: the `<id>` in
    /// `ak_<id>.<secret>`. Safe to log.
    ///
    /// ```
    /// use tower_keyauth::KeyId;
    /// let id = KeyId::from("Xb3kP9qLm2Ts");
    /// assert_eq!(id.as_str(), "Xb3kP9qLm2Ts");
    /// ```
    KeyId
}

identifier! {
    /// An organization: the tenant that owns org keys and workspaces.
    ///
    /// ```
    /// use tower_keyauth::OrgId;
    /// assert_eq!(OrgId::from("acme").to_string(), "acme");
    /// ```
    OrgId
}

identifier! {
    /// A workspace inside an organization.
    ///
    /// ```
    /// use tower_keyauth::WorkspaceId;
    /// assert_eq!(WorkspaceId::from("docs"), "docs");
    /// ```
    WorkspaceId
}

identifier! {
    /// A user: the owner of personal access tokens.
    ///
    /// ```
    /// use tower_keyauth::UserId;
    /// assert_eq!(UserId::from("ada").as_str(), "ada");
    /// ```
    UserId
}
