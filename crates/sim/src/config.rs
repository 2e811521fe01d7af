//! Command line and environment settings, and the knobs that change at run time.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `faceswap-sim` command line. Every flag can also be set by a `SIM_*` environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "faceswap-sim", version, about)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, env = "SIM_BIND", default_value = "127.0.0.1:9090")]
    pub bind: SocketAddr,
    /// The one account's client id, accepted by getToken.
    #[arg(long, env = "SIM_CLIENT_ID", default_value = "sim-client")]
    pub client_id: String,
    /// The one account's client secret.
    #[arg(long, env = "SIM_CLIENT_SECRET", default_value = "sim-secret")]
    pub client_secret: String,
    /// A static key accepted as `x-api-key` besides tokens; none when unset.
    #[arg(long, env = "SIM_API_KEY")]
    pub api_key: Option<String>,
    /// Base URL that resource links use; defaults to `http://<bound address>`.
    #[arg(long, env = "SIM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes (a 10 MB image in base64 is about 14 MB).
    #[arg(long, env = "SIM_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest image accepted for detection, in bytes, inline or fetched from `image_url`.
    #[arg(long, env = "SIM_MAX_IMAGE_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_image_bytes: usize,
    /// Time allowed to fetch an `image_url`, in milliseconds.
    #[arg(long, env = "SIM_IMAGE_FETCH_TIMEOUT_MS", default_value_t = 10_000)]
    pub image_fetch_timeout_ms: u64,
    /// Behaviour settings that `POST /sim/config` can change later.
    #[command(flatten)]
    pub knobs: Knobs,
}

/// Behaviour settings. `GET /sim/config` shows them and `POST /sim/config` changes any subset,
/// using these field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct Knobs {
    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "SIM_TOKEN_TTL_SECONDS", default_value_t = 86_400)]
    pub token_ttl_seconds: u64,
    /// Time a new session spends queuing (status 1) before it processes (status 2), in ms.
    #[arg(long, env = "SIM_QUEUE_DELAY_MS", default_value_t = 500)]
    pub queue_delay_ms: u64,
    /// Account quota: sessions open at once; creates beyond it get 1104.
    #[arg(long, env = "SIM_MAX_OPEN_SESSIONS", default_value_t = 100)]
    pub max_open_sessions: u64,
    /// How long generated resources stay downloadable, in seconds (7 days by default).
    #[arg(
        long,
        env = "SIM_RESOURCE_RETENTION_SECONDS",
        default_value_t = 604_800
    )]
    pub resource_retention_seconds: u64,
    /// Fraction (0.0–1.0) of new sessions that fail (status 4) instead of processing.
    #[arg(long, env = "SIM_FAILURE_RATE", default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Latency added to every API call, in milliseconds.
    #[arg(long, env = "SIM_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0.0–1.0) of API calls answered with HTTP 503 and code 1503.
    #[arg(long, env = "SIM_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction (0.0–1.0) of API calls whose connection is dropped without an answer.
    #[arg(long, env = "SIM_DROP_RATE", default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Fraction (0.0–1.0) of API calls that never answer (the caller's timeout fires).
    #[arg(long, env = "SIM_TIMEOUT_RATE", default_value_t = 0.0)]
    pub timeout_rate: f64,
    /// Size of the recording minted when a session closes, in bytes.
    #[arg(long, env = "SIM_RECORDING_BYTES", default_value_t = 256 * 1024)]
    pub recording_bytes: u64,
    /// The next this many resource downloads answer HTTP 500 (counting down as they do).
    #[arg(long, env = "SIM_RESOURCE_FAIL_COUNT", default_value_t = 0)]
    pub resource_fail_count: u64,
}

impl Knobs {
    /// Checks ranges; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("failure_rate", self.failure_rate),
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
            ("timeout_rate", self.timeout_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0, got {rate}"));
            }
        }
        if self.token_ttl_seconds == 0 {
            return Err("token_ttl_seconds must be at least 1".to_owned());
        }
        Ok(())
    }

    /// Applies a partial update, leaving the knobs untouched when the result is invalid.
    pub fn apply(&mut self, patch: serde_json::Value) -> Result<(), String> {
        let mut merged = serde_json::to_value(&*self).map_err(|e| e.to_string())?;
        let (serde_json::Value::Object(target), serde_json::Value::Object(changes)) =
            (&mut merged, patch)
        else {
            return Err("the body must be a JSON object".to_owned());
        };
        for (key, value) in changes {
            if !target.contains_key(&key) {
                return Err(format!("unknown setting `{key}`"));
            }
            target.insert(key, value);
        }
        let next: Knobs = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        next.validate()?;
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn defaults() -> Knobs {
        SimArgs::try_parse_from(["faceswap-sim"]).unwrap().knobs
    }

    #[test]
    fn flags_use_the_documented_names_and_defaults() {
        let args = SimArgs::try_parse_from([
            "faceswap-sim",
            "--bind",
            "127.0.0.1:0",
            "--token-ttl-seconds",
            "5",
            "--failure-rate",
            "0.5",
        ])
        .unwrap();
        assert_eq!(args.knobs.token_ttl_seconds, 5);
        assert_eq!(args.knobs.failure_rate, 0.5);
        assert_eq!(args.knobs.queue_delay_ms, 500);
        assert_eq!(args.knobs.max_open_sessions, 100);
        assert_eq!(args.knobs.resource_retention_seconds, 604_800);
    }

    #[test]
    fn a_patch_changes_only_the_named_knobs() {
        let mut knobs = defaults();
        knobs
            .apply(serde_json::json!({"latency_ms": 200, "error_rate": 0.3}))
            .unwrap();
        assert_eq!(knobs.latency_ms, 200);
        assert_eq!(knobs.error_rate, 0.3);
        assert_eq!(knobs.queue_delay_ms, 500);
    }

    #[test]
    fn an_invalid_patch_is_refused_and_changes_nothing() {
        let mut knobs = defaults();
        let before = knobs.clone();
        let err = knobs
            .apply(serde_json::json!({"latency_ms": 9, "error_rate": 1.5}))
            .unwrap_err();
        assert!(err.contains("error_rate"), "{err}");
        assert!(knobs.apply(serde_json::json!({"nope": 1})).is_err());
        assert!(knobs.apply(serde_json::json!({"latency_ms": "x"})).is_err());
        assert!(knobs.apply(serde_json::json!([1])).is_err());
        assert_eq!(knobs, before);
    }
}
