//! `Serialize` for the types a service shows its callers (feature `serde`).

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Error as _, Serialize, SerializeSeq, SerializeStruct, Serializer};
use serde_json::{Map, Value};

use crate::metadata::{InvalidMetadata, KeyMetadata};

use crate::principal::Principal;
use crate::record::Owner;
use crate::scope::Scopes;
use crate::store::KeySummary;

/// As a list of names: `["objects.read", "keys.*"]`.
impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut list = serializer.serialize_seq(Some(self.len()))?;
        for scope in self {
            list.serialize_element(scope.as_str())?;
        }
        list.end()
    }
}

/// As the JSON object itself.
impl Serialize for KeyMetadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

/// From a JSON object of at most [`KeyMetadata::MAX_BYTES`] bytes.
impl<'de> Deserialize<'de> for KeyMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = Map::<String, Value>::deserialize(deserializer)?;
        KeyMetadata::try_from(object).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Map<String, Value>> for KeyMetadata {
    type Error = InvalidMetadata;

    /// The object as compact JSON, refused beyond
    /// [`KeyMetadata::MAX_BYTES`].
    fn try_from(object: Map<String, Value>) -> Result<Self, InvalidMetadata> {
        let json = Value::Object(object).to_string();
        KeyMetadata::from_json(&json)
    }
}

impl KeyMetadata {
    /// The object as a `serde_json` value (feature `serde`).
    ///
    /// ```
    /// use tower_keyauth::metadata::KeyMetadata;
    /// let metadata = KeyMetadata::from_json(r#"{"plan":"pro"}"#).unwrap();
    /// assert_eq!(metadata.to_value().unwrap()["plan"], "pro");
    /// ```
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.as_json())
    }
}

/// As `{"key_id", "kind", "org", "workspace", "user", "scopes", "source",
/// "environment", "expires_at", "metadata"}`, the shape of a whoami
/// endpoint (times in seconds since the Unix epoch):
///
/// ```
/// use tower_keyauth::Principal;
/// use tower_keyauth::ids::KeyKind;
/// use tower_keyauth::principal::Tenant;
/// let principal = Principal::new("Xb3kP9qLm2Ts", KeyKind::Workspace, Tenant::workspace("acme", "docs"));
/// assert_eq!(
///     serde_json::to_string(&principal).unwrap(),
///     r#"{"key_id":"Xb3kP9qLm2Ts","kind":"workspace","org":"acme","workspace":"docs","user":null,"scopes":["*"],"source":"bearer","environment":null,"expires_at":null,"metadata":null}"#
/// );
/// ```
impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("Principal", 10)?;
        fields.serialize_field("key_id", self.key_id().as_str())?;
        fields.serialize_field("kind", self.kind().as_str())?;
        fields.serialize_field("org", self.org().as_str())?;
        fields.serialize_field("workspace", &self.workspace().map(|w| w.as_str()))?;
        fields.serialize_field("user", &self.user().map(|u| u.as_str()))?;
        fields.serialize_field("scopes", self.scopes())?;
        fields.serialize_field("source", &self.source().to_string())?;
        fields.serialize_field("environment", &self.environment().map(|e| e.as_str()))?;
        fields.serialize_field("expires_at", &unix_seconds(self.expires_at()))?;
        fields.serialize_field("metadata", &self.metadata())?;
        fields.end()
    }
}

/// As `{"id", "masked", "name", "kind", "org", "workspace", "user",
/// "scopes", "created_at", "expires_at", "grace_ends_at", "revoked_at",
/// "last_used_at", "metadata"}`,
/// times in seconds since the Unix epoch. There is no hash and no secret to
/// show.
impl Serialize for KeySummary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (org, workspace, user) = match &self.owner {
            Owner::Organization(org) => (Some(org.as_str()), None, None),
            Owner::Workspace { org, workspace } => {
                (Some(org.as_str()), Some(workspace.as_str()), None)
            }
            Owner::User(user) => (None, None, Some(user.as_str())),
        };
        let mut fields = serializer.serialize_struct("KeySummary", 14)?;
        fields.serialize_field("id", self.id.as_str())?;
        fields.serialize_field("masked", &self.masked)?;
        fields.serialize_field("name", &*self.name)?;
        fields.serialize_field("kind", self.owner.kind().as_str())?;
        fields.serialize_field("org", &org)?;
        fields.serialize_field("workspace", &workspace)?;
        fields.serialize_field("user", &user)?;
        fields.serialize_field("scopes", &self.scopes)?;
        fields.serialize_field("created_at", &unix_seconds(Some(self.created_at)))?;
        fields.serialize_field("expires_at", &unix_seconds(self.expires_at))?;
        fields.serialize_field("grace_ends_at", &unix_seconds(self.grace_ends_at))?;
        fields.serialize_field("revoked_at", &unix_seconds(self.revoked_at))?;
        fields.serialize_field("last_used_at", &unix_seconds(self.last_used_at))?;
        fields.serialize_field("metadata", &self.metadata)?;
        fields.end()
    }
}

fn unix_seconds(time: Option<std::time::SystemTime>) -> Option<u64> {
    time.map(|time| {
        time.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    })
}
