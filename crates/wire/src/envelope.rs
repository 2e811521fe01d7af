//! The `{code, msg, data}` envelope every business call answers with.

use serde::{Deserialize, Serialize};

use crate::Code;

/// The provider's response envelope. `data` is omitted when there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    /// Business code; 1000 is success.
    pub code: Code,
    /// Human-readable status message.
    #[serde(default)]
    pub msg: String,
    /// The call's result, present on success.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> Envelope<T> {
    /// A success envelope around `data`.
    pub fn ok(data: T) -> Self {
        Self {
            code: Code::SUCCESS,
            msg: "success".to_owned(),
            data: Some(data),
        }
    }
}

impl Envelope<serde_json::Value> {
    /// An envelope that carries only a code and a message.
    pub fn error(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            data: None,
        }
    }
}

/// An answer with only a code and a message: every error, and calls without data. Its JSON is
/// what [`Envelope::error`] produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmptyEnvelope {
    /// Business code; 1000 is success. See the error table for the others.
    pub code: Code,
    /// Human-readable status message.
    #[serde(default)]
    pub msg: String,
}

impl EmptyEnvelope {
    /// An answer with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_envelope_has_no_data_field() {
        let json = serde_json::to_value(Envelope::error(Code::PARAM_ERROR, "bad")).unwrap();
        assert_eq!(json, serde_json::json!({"code": 1003, "msg": "bad"}));
    }

    #[test]
    fn an_envelope_without_msg_or_data_still_parses() {
        let env: Envelope<serde_json::Value> = serde_json::from_str(r#"{"code":1101}"#).unwrap();
        assert_eq!(env.code, Code::TOKEN_INVALID);
        assert!(env.data.is_none());
    }
}
