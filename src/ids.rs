//! Typed identifiers: a key id is never confused with an organization id.
//!
//! Each identifier is an immutable string that is cheap to create and to
//! clone: up to 23 bytes are kept inline (no allocation), longer ones are
//! shared. A [`Principal`](crate::Principal) is built on every request, so
//! this matters.

use std::borrow::Borrow;
use std::fmt;

use smol_str::SmolStr;

/// The heap memory a [`SmolStr`] holds: its text and the counts of the
/// `Arc` it shares, when it is too long to keep inline.
pub(crate) fn smol_str_heap_bytes(text: &SmolStr) -> usize {
    if text.is_heap_allocated() {
        text.len() + 2 * std::mem::size_of::<usize>()
    } else {
        0
    }
}

macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(SmolStr);

        impl $name {
            /// Wraps a string as this identifier.
            pub fn new(value: impl AsRef<str>) -> Self {
                Self(SmolStr::new(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// The heap memory the identifier holds (none up to 23 bytes).
            #[allow(dead_code)] // not every identifier is cached
            pub(crate) fn heap_bytes(&self) -> usize {
                smol_str_heap_bytes(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
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
                Self(SmolStr::from(value))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.0.as_str()
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0.as_str() == *other
            }
        }
    };
}

identifier! {
    /// The public, non-secret identifier of an API key: the `<id>` in
    /// `ak_<id>.<secret>`. Safe to log.
    ///
    /// ```
    /// use tower_keyauth::ids::KeyId;
    /// let id = KeyId::from("Xb3kP9qLm2Ts");
    /// assert_eq!(id.as_str(), "Xb3kP9qLm2Ts");
    /// ```
    KeyId
}

identifier! {
    /// An organization: the tenant that owns org keys and workspaces.
    ///
    /// ```
    /// use tower_keyauth::ids::OrgId;
    /// assert_eq!(OrgId::from("acme").to_string(), "acme");
    /// ```
    OrgId
}

identifier! {
    /// A workspace inside an organization.
    ///
    /// ```
    /// use tower_keyauth::ids::WorkspaceId;
    /// assert_eq!(WorkspaceId::from("docs"), "docs");
    /// ```
    WorkspaceId
}

identifier! {
    /// A user: the owner of personal access tokens.
    ///
    /// ```
    /// use tower_keyauth::ids::UserId;
    /// assert_eq!(UserId::from("ada").as_str(), "ada");
    /// ```
    UserId
}

identifier! {
    /// A short text that is cheap to clone: a key's name or its prefix.
    ///
    /// ```
    /// use tower_keyauth::ids::Label;
    /// let name = Label::from("CI deploys");
    /// assert_eq!(name, "CI deploys");
    /// ```
    #[derive(Default)]
    Label
}

impl std::ops::Deref for Label {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

/// The three kinds of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// An API key owned by an organization, acting for all of it.
    Organization,
    /// An API key owned by one workspace of an organization.
    Workspace,
    /// A personal access token: owned by a user, not bound to an
    /// organization. Each request names the organization in a header and the
    /// user must be a member of it.
    Personal,
}

impl KeyKind {
    /// `"organization"`, `"workspace"` or `"personal"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyKind::Organization => "organization",
            KeyKind::Workspace => "workspace",
            KeyKind::Personal => "personal",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
