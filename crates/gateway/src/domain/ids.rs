//! Identifiers. The gateway's ids carry a type prefix (`ses_…`, `ten_…`) over a time-ordered
//! UUIDv7; the upstream's session id is a different type, so `_id` shown to a tenant can only be
//! ours.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A string that is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct IdError {
    kind: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The prefix in the text form.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the text form `<prefix>_<32 hex digits>`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                s.strip_prefix(concat!($prefix, "_"))
                    .filter(|hex| hex.len() == 32)
                    .and_then(|hex| Uuid::try_parse(hex).ok())
                    .map(Self)
                    .ok_or(IdError { kind: $kind })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

prefixed_id!(
    /// A live session, as tenants name it.
    SessionId,
    "ses",
    "session"
);
prefixed_id!(
    /// A tenant.
    TenantId,
    "ten",
    "tenant"
);
prefixed_id!(
    /// A client credential or API key.
    CredentialId,
    "cred",
    "credential"
);

/// The upstream's id of a session. Never shown to tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSessionId(pub String);

impl UpstreamSessionId {
    /// The id as the upstream takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = SessionId::generate();
        let text = id.to_string();
        assert!(text.starts_with("ses_") && text.len() == 36, "{text}");
        assert_eq!(SessionId::parse(&text), Ok(id));
    }

    #[test]
    fn ids_of_another_kind_or_shape_are_refused() {
        let tenant = TenantId::generate().to_string();
        assert!(SessionId::parse(&tenant).is_err());
        for bad in [
            "",
            "ses_",
            "ses_xyz",
            "6512bd43d9caa6e02c990b0a",
            "ses_../../etc",
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad}");
        }
        let id = SessionId::generate().to_string();
        assert!(SessionId::parse(&id.to_uppercase()).is_err());
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert!(a < b);
    }
}

prefixed_id!(
    /// A tenant's webhook endpoint.
    WebhookEndpointId,
    "whe",
    "webhook endpoint"
);

prefixed_id!(
    /// A generated resource (image, video) recorded for archiving.
    ResourceId,
    "res",
    "resource"
);
