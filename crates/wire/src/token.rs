//! `POST /api/open/v3/getToken`.

use serde::{Deserialize, Serialize};

use crate::Code;

/// Client credentials exchanged for an access token. Missing fields deserialize as empty
/// strings so the service can answer 1003 naming the field, instead of a parser error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// Client ID.
    #[serde(rename = "clientId", default)]
    pub client_id: String,
    /// Client secret.
    #[serde(rename = "clientSecret", default)]
    pub client_secret: String,
}

/// The getToken answer. The provider puts `token` at the top level; some clients read it from
/// `data`, so both are accepted when parsing and the gateway fills both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// Business code; 1000 is success.
    pub code: Code,
    /// Human-readable status message.
    #[serde(default)]
    pub msg: String,
    /// The access token, a JWT whose `exp` claim says when it dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The same token with its expiry, for clients that read `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TokenData>,
}

/// The token and its expiry inside `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenData {
    /// The access token.
    pub token: String,
    /// Expiry as seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Seconds from issue until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

impl TokenResponse {
    /// The token, wherever the answer put it.
    pub fn token(&self) -> Option<&str> {
        self.token
            .as_deref()
            .or_else(|| self.data.as_ref().map(|d| d.token.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_at_the_top_level_or_inside_data() {
        let top: TokenResponse = serde_json::from_str(r#"{"code":1000,"token":"a"}"#).unwrap();
        assert_eq!(top.token(), Some("a"));
        let nested: TokenResponse =
            serde_json::from_str(r#"{"code":1000,"msg":"ok","data":{"token":"b"}}"#).unwrap();
        assert_eq!(nested.token(), Some("b"));
    }

    #[test]
    fn missing_credentials_parse_as_empty_strings() {
        let req: TokenRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, TokenRequest::default());
    }
}
