//! `Serialize` for the types a service shows its callers (feature `serde`).

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Error as _, Serialize, SerializeSeq, SerializeStruct, Serializer};
use serde_json::{Map, Value};

use crate::limit::{CountedPer, Credits, RateLimit, RateLimits, Refill, UsageLimits};
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

/// As `{"limit", "window_seconds", "name", "per"}`, the shape the key API
/// accepts; `name` only when the limit has one, `per` only for a limit
/// shared by a workspace or an organization.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::RateLimit;
/// let burst = RateLimit::per(10, Duration::from_secs(1)).unwrap().named("burst").unwrap();
/// assert_eq!(
///     serde_json::to_string(&burst).unwrap(),
///     r#"{"limit":10,"window_seconds":1,"name":"burst"}"#
/// );
/// ```
impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("RateLimit", 4)?;
        fields.serialize_field("limit", &self.limit())?;
        fields.serialize_field("window_seconds", &self.window().as_secs())?;
        match self.name() {
            Some(name) => fields.serialize_field("name", name)?,
            None => fields.skip_field("name")?,
        }
        match self.counted_for() {
            CountedPer::Key => fields.skip_field("per")?,
            per => fields.serialize_field("per", per.as_str())?,
        }
        fields.end()
    }
}

/// As a list of [`RateLimit`]s: `[{"limit": 100, "window_seconds": 60}]`.
impl Serialize for RateLimits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

/// As `{"remaining", "refill"}`, `refill` being `{"amount",
/// "interval_seconds"}` or `null`: the shape the key API accepts.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{Credits, Refill};
/// let credits = Credits::new(500)
///     .unwrap()
///     .refill(Refill::every(1000, Duration::from_secs(86_400)).unwrap());
/// assert_eq!(
///     serde_json::to_string(&credits).unwrap(),
///     r#"{"remaining":500,"refill":{"amount":1000,"interval_seconds":86400}}"#
/// );
/// ```
impl Serialize for Credits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("Credits", 2)?;
        fields.serialize_field("remaining", &self.remaining())?;
        fields.serialize_field("refill", &self.refill_policy())?;
        fields.end()
    }
}

/// As `{"amount", "interval_seconds"}`.
impl Serialize for Refill {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("Refill", 2)?;
        fields.serialize_field("amount", &self.amount())?;
        fields.serialize_field("interval_seconds", &self.interval().as_secs())?;
        fields.end()
    }
}

/// As `{"rate_limits", "credits", "allowed_ips"}`, each `null` when the
/// limits hold none: the fields of the key API's request, and of
/// [`KeySummary`] and [`Principal`] (which show them flat, beside their
/// other fields).
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::client_addr::IpAllowlist;
/// use tower_keyauth::limit::{RateLimit, UsageLimits};
/// let limits = UsageLimits::new()
///     .rate_limit(RateLimit::per(5, Duration::from_secs(60)).unwrap())
///     .unwrap()
///     .with_allowed_ips(IpAllowlist::parse(["10.0.0.0/8"]).unwrap());
/// assert_eq!(
///     serde_json::to_string(&limits).unwrap(),
///     r#"{"rate_limits":[{"limit":5,"window_seconds":60}],"credits":null,"allowed_ips":["10.0.0.0/8"]}"#
/// );
/// ```
impl Serialize for UsageLimits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("UsageLimits", 3)?;
        serialize_limits(&mut fields, Some(self))?;
        fields.end()
    }
}

/// The three limit fields, each `null` when absent.
fn serialize_limits<F: SerializeStruct>(
    fields: &mut F,
    limits: Option<&UsageLimits>,
) -> Result<(), F::Error> {
    let rate_limits = limits
        .map(UsageLimits::rate_limit_set)
        .filter(|set| !set.is_empty());
    fields.serialize_field("rate_limits", &rate_limits)?;
    fields.serialize_field("credits", &limits.and_then(UsageLimits::credits))?;
    fields.serialize_field("allowed_ips", &limits.and_then(UsageLimits::allowed_ips))
}

/// As `{"key_id", "kind", "org", "workspace", "user", "scopes", "source",
/// "environment", "expires_at", "metadata", "rate_limits", "credits",
/// "allowed_ips"}`, the shape of a whoami endpoint (times in seconds since
/// the Unix epoch; the limits as [`UsageLimits`] shows them, `credits` as
/// the layer read them for this request):
///
/// ```
/// use tower_keyauth::Principal;
/// use tower_keyauth::ids::KeyKind;
/// use tower_keyauth::principal::Tenant;
/// let principal = Principal::new("Xb3kP9qLm2Ts", KeyKind::Workspace, Tenant::workspace("acme", "docs"));
/// assert_eq!(
///     serde_json::to_string(&principal).unwrap(),
///     r#"{"key_id":"Xb3kP9qLm2Ts","kind":"workspace","org":"acme","workspace":"docs","user":null,"scopes":["*"],"source":"bearer","environment":null,"expires_at":null,"metadata":null,"rate_limits":null,"credits":null,"allowed_ips":null}"#
/// );
/// ```
impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields = serializer.serialize_struct("Principal", 13)?;
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
        serialize_limits(&mut fields, self.limits())?;
        fields.end()
    }
}

/// As `{"id", "masked", "name", "kind", "org", "workspace", "user",
/// "scopes", "created_at", "expires_at", "grace_ends_at", "revoked_at",
/// "last_used_at", "metadata", "rate_limits", "credits", "allowed_ips"}`,
/// times in seconds since the Unix epoch, the limits in the shape the key API
/// accepts (see [`UsageLimits`]), `null` when absent. There is no hash and
/// no secret to show.
impl Serialize for KeySummary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (org, workspace, user) = match &self.owner {
            Owner::Organization(org) => (Some(org.as_str()), None, None),
            Owner::Workspace { org, workspace } => {
                (Some(org.as_str()), Some(workspace.as_str()), None)
            }
            Owner::User(user) => (None, None, Some(user.as_str())),
        };
        let mut fields = serializer.serialize_struct("KeySummary", 17)?;
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
        serialize_limits(&mut fields, self.limits.as_deref())?;
        fields.end()
    }
}

fn unix_seconds(time: Option<std::time::SystemTime>) -> Option<u64> {
    time.map(|time| {
        time.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    })
}
