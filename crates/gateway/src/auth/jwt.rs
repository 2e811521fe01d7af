//! The gateway's own tokens: ES256 JWTs with a `kid`, whose public keys are published at
//! `/.well-known/jwks.json` so other services can verify them.
//!
//! Keys come from a configured PEM file, or are generated once and kept in Postgres so every
//! replica signs and verifies with the same set.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store;

const ALGORITHM: &str = "ES256";
/// Clock skew tolerated between the gateway's replicas and token verifiers.
const LEEWAY_SECONDS: u64 = 5;
/// An unknown `kid` reloads the key set from Postgres at most this often.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The claims of a gateway token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The tenant id (`ten_…`).
    pub sub: String,
    /// The credential id the token was issued for.
    pub cid: Uuid,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expiry.
    pub exp: u64,
    /// Token id.
    pub jti: Uuid,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Anything else: bad signature, wrong issuer or audience, unknown key, malformed.
    #[error("the token is not valid")]
    Invalid,
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
}

struct Keys {
    signing: SigningKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    loaded_at: Instant,
}

/// Signs and verifies gateway tokens.
pub struct TokenKeys {
    keys: RwLock<Keys>,
    db: Option<PgPool>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// A key pair in the forms we need.
struct Material {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: serde_json::Value,
}

fn material_from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<Material> {
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
        .map_err(|e| anyhow::anyhow!("not a PKCS#8 P-256 private key: {e}"))?;
    // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
    let point = pair.public_key().as_ref();
    anyhow::ensure!(
        point.len() == 65 && point[0] == 4,
        "unexpected public key encoding"
    );
    let thumb = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, point);
    let kid = URL_SAFE_NO_PAD.encode(&thumb.as_ref()[..12]);
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "alg": ALGORITHM,
        "use": "sig",
        "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    Ok(Material {
        kid,
        pkcs8: pkcs8.to_vec(),
        jwk,
    })
}

fn generate() -> anyhow::Result<Material> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| anyhow::anyhow!("key generation failed: {e}"))?;
    material_from_pkcs8(doc.as_ref())
}

fn decoding_key(jwk: &serde_json::Value) -> anyhow::Result<DecodingKey> {
    let x = jwk["x"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("JWK without x"))?;
    let y = jwk["y"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("JWK without y"))?;
    Ok(DecodingKey::from_ec_components(x, y)?)
}

fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

impl TokenKeys {
    /// Keys for a gateway: the configured PEM if any, else the newest key in Postgres, created
    /// there (once, under a lock) when there is none.
    pub async fn load(
        db: &PgPool,
        pem_file: Option<&std::path::Path>,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let configured = match pem_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("GATEWAY_JWT_PRIVATE_KEY_FILE {}: {e}", path.display())
                })?;
                Some(material_from_pkcs8(&pem_to_der(&pem)?).map_err(|e| {
                    anyhow::anyhow!("GATEWAY_JWT_PRIVATE_KEY_FILE {}: {e}", path.display())
                })?)
            }
            None => None,
        };
        if configured.is_none() {
            ensure_stored_key(db).await?;
        }
        let keys = read_keys(db, configured.as_ref()).await?;
        Ok(Self {
            keys: RwLock::new(keys),
            db: Some(db.clone()),
            issuer,
            audience,
            ttl,
        })
    }

    /// Keys that live only in memory (for tools and tests that have no database).
    pub fn ephemeral(issuer: String, audience: String, ttl: Duration) -> anyhow::Result<Self> {
        let m = generate()?;
        let mut verifying = HashMap::new();
        verifying.insert(m.kid.clone(), decoding_key(&m.jwk)?);
        Ok(Self {
            keys: RwLock::new(Keys {
                signing: SigningKey {
                    kid: m.kid,
                    encoding: EncodingKey::from_ec_der(&m.pkcs8),
                },
                verifying,
                jwks: serde_json::json!({ "keys": [m.jwk] }),
                loaded_at: Instant::now(),
            }),
            db: None,
            issuer,
            audience,
            ttl,
        })
    }

    /// Token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for `tenant` and `credential`, and its expiry (Unix seconds).
    pub fn issue(&self, tenant: &str, credential: Uuid, now: u64) -> anyhow::Result<(String, u64)> {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: tenant.to_owned(),
            cid: credential,
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: Uuid::new_v4(),
        };
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(keys.signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &keys.signing.encoding)?;
        Ok((token, claims.exp))
    }

    /// Checks a token: ES256 only, known `kid`, signature, `iss`, `aud`, `exp` and `nbf`.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        if let Some(result) = self.verify_with(&kid, token) {
            return result;
        }
        // Another replica may have rotated in a key we have not seen yet.
        self.reload_if_due().await;
        self.verify_with(&kid, token)
            .unwrap_or(Err(TokenError::Invalid))
    }

    fn verify_with(&self, kid: &str, token: &str) -> Option<Result<Claims, TokenError>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = keys.verifying.get(kid)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Some(
            jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map(|data| data.claims)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }),
        )
    }

    async fn reload_if_due(&self) {
        let Some(db) = &self.db else { return };
        let due = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.loaded_at.elapsed() >= RELOAD_INTERVAL
        };
        if !due {
            return;
        }
        match read_keys(db, None).await {
            Ok(fresh) => {
                let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
                keys.verifying.extend(fresh.verifying);
                keys.jwks = fresh.jwks;
                keys.loaded_at = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "reloading signing keys failed"),
        }
    }

    /// The JWKS document of the verification keys.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .jwks
            .clone()
    }
}

async fn ensure_stored_key(db: &PgPool) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    store::keys::lock_for_creation(&mut tx).await?;
    let existing = store::keys::all(&mut tx).await?;
    if existing.iter().all(|k| k.retired) {
        let m = generate()?;
        store::keys::insert(&mut tx, &m.kid, ALGORITHM, &m.pkcs8, &m.jwk).await?;
        tracing::info!(kid = %m.kid, "generated a token signing key");
    }
    tx.commit().await?;
    Ok(())
}

async fn read_keys(db: &PgPool, configured: Option<&Material>) -> anyhow::Result<Keys> {
    let mut conn = db.acquire().await?;
    let stored = store::keys::all(&mut conn).await?;
    let mut verifying = HashMap::new();
    let mut jwks = Vec::new();
    for row in &stored {
        verifying.insert(row.kid.clone(), decoding_key(&row.public_jwk.0)?);
        jwks.push(row.public_jwk.0.clone());
    }
    let signing = match configured {
        Some(m) => {
            verifying.insert(m.kid.clone(), decoding_key(&m.jwk)?);
            jwks.insert(0, m.jwk.clone());
            SigningKey {
                kid: m.kid.clone(),
                encoding: EncodingKey::from_ec_der(&m.pkcs8),
            }
        }
        None => {
            let newest = stored
                .iter()
                .find(|k| !k.retired)
                .ok_or_else(|| anyhow::anyhow!("no active signing key in Postgres"))?;
            SigningKey {
                kid: newest.kid.clone(),
                encoding: EncodingKey::from_ec_der(&newest.private_key),
            }
        }
    };
    Ok(Keys {
        signing,
        verifying,
        jwks: serde_json::json!({ "keys": jwks }),
        loaded_at: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::ephemeral("iss".into(), "aud".into(), Duration::from_secs(60)).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn an_issued_token_verifies_and_names_its_tenant() {
        let k = keys();
        let cid = Uuid::new_v4();
        let (token, exp) = k.issue("ten_x", cid, now()).unwrap();
        assert_eq!(exp, now() + 60);
        let claims = k.verify(&token).await.unwrap();
        assert_eq!((claims.sub.as_str(), claims.cid), ("ten_x", cid));
    }

    #[tokio::test]
    async fn tokens_of_other_keys_issuers_or_audiences_are_invalid() {
        let k = keys();
        let (foreign, _) = keys().issue("t", Uuid::nil(), now()).unwrap();
        assert_eq!(k.verify(&foreign).await, Err(TokenError::Invalid));
        let other_iss =
            TokenKeys::ephemeral("x".into(), "aud".into(), Duration::from_secs(60)).unwrap();
        // Same audience, other issuer and key: refused either way.
        let (t, _) = other_iss.issue("t", Uuid::nil(), now()).unwrap();
        assert_eq!(k.verify(&t).await, Err(TokenError::Invalid));
        assert_eq!(k.verify("garbage").await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn an_expired_token_is_expired() {
        let k = keys();
        let (token, _) = k.issue("t", Uuid::nil(), now() - 3600).unwrap();
        assert_eq!(k.verify(&token).await, Err(TokenError::Expired));
    }

    #[tokio::test]
    async fn a_token_signed_with_hs256_is_refused() {
        let k = keys();
        let claims = serde_json::json!({"iss":"iss","aud":"aud","sub":"t","cid":Uuid::nil(),"iat":now(),"nbf":now(),"exp":now()+60,"jti":Uuid::nil()});
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(k.keys.read().unwrap().signing.kid.clone());
        let forged =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"k")).unwrap();
        assert_eq!(k.verify(&forged).await, Err(TokenError::Invalid));
    }

    #[test]
    fn the_jwks_publishes_the_signing_key() {
        let k = keys();
        let jwks = k.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["alg"], "ES256");
        assert_eq!(
            key["kid"].as_str().unwrap(),
            k.keys.read().unwrap().signing.kid
        );
    }
}
