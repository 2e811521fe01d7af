//! The gateway's own tokens: ES256 JWTs with a `kid`, whose public keys are published at
//! `/.well-known/jwks.json` so other services can verify them.
//!
//! Keys come from a configured PEM file, or are generated once and kept in Postgres so every
//! replica signs and verifies with the same set.
//!
//! **Rotation** (stored keys only; a configured file is rotated by its operator): [`rotate`]
//! inserts a new key and retires the others in one transaction. Exactly one stored key signs:
//! the newest that is not retired. A retired key keeps verifying, and stays in the JWKS, until
//! every token it can have signed has expired: [`verifies_until`]. Every replica reloads the
//! set in the background every refresh period, so it signs with the new key within that
//! period; a token whose `kid` it has not seen yet makes it reload at once.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::digest_cache::DigestCache;
use crate::store;
use crate::store::keys::KeyRow;

const ALGORITHM: &str = "ES256";
/// Clock skew tolerated between the gateway's replicas and token verifiers.
pub const LEEWAY_SECONDS: u64 = 5;
/// Longest a verified token is trusted without checking its signature again.
const VERIFIED_TRUST: Duration = Duration::from_secs(60);
/// An unknown `kid` reloads the key set from Postgres at most this often, so a flood of
/// made-up kids cannot turn into a flood of queries.
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// How often each replica reloads the key set when nothing else asks it to.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
/// Why [`rotate`] is not offered when the key comes from a file.
pub const CONFIGURED_KEY_NOT_ROTATED: &str = "the token signing key comes from \
GATEWAY_JWT_PRIVATE_KEY_FILE, so its operator rotates it: deploy a new key file and restart \
the replicas (tokens signed with the previous file are refused from then on)";

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

/// The last moment (Unix seconds) a key retired at `retired_at` verifies. A token lives `ttl`
/// and is accepted [`LEEWAY_SECONDS`] past its `exp`; a replica that has not reloaded yet may
/// still sign with the retired key for up to one `refresh` period after the rotation.
pub fn verifies_until(retired_at: i64, ttl: Duration, refresh: Duration) -> i64 {
    let extra = ttl.as_secs() + LEEWAY_SECONDS + refresh.as_secs_f64().ceil() as u64;
    retired_at.saturating_add(i64::try_from(extra).unwrap_or(i64::MAX))
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
}

struct VerifyingKey {
    decoding: DecodingKey,
    jwk: serde_json::Value,
    /// Unix seconds after which the key no longer verifies; `None` while it signs.
    until: Option<i64>,
}

impl VerifyingKey {
    fn usable_at(&self, now: i64) -> bool {
        self.until.is_none_or(|until| now <= until)
    }
}

struct Keys {
    signing: SigningKey,
    /// Newest first, which is also the JWKS order.
    verifying: Vec<(String, VerifyingKey)>,
}

impl Keys {
    fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, v)| v)
    }
}

/// Signs and verifies gateway tokens.
pub struct TokenKeys {
    shared: Arc<Shared>,
}

struct Shared {
    keys: RwLock<Keys>,
    db: Option<PgPool>,
    configured: Option<Material>,
    issuer: String,
    audience: String,
    ttl: Duration,
    refresh: Duration,
    /// When an unknown `kid` last made us reload.
    forced_reload_at: Mutex<Option<Instant>>,
    /// Tokens already verified, so a busy client pays for one ECDSA check per minute.
    verified: DigestCache<(Claims, String)>,
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

/// Whole Unix seconds, rounded up, so a window computed from them never ends early.
fn ceil_seconds(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

fn unix_now() -> i64 {
    Utc::now().timestamp()
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The key that signs from now on.
    pub kid: String,
    /// The keys it replaced; they verify until [`verifies_until`].
    pub retired: Vec<String>,
}

/// Builds the in-memory set from the stored rows (newest first) and the configured key. The
/// configured key signs when there is one; otherwise the newest stored key that is not retired.
/// Retired keys past their [`verifies_until`] are left out.
fn build_keys(
    stored: &[KeyRow],
    configured: Option<&Material>,
    ttl: Duration,
    refresh: Duration,
) -> anyhow::Result<Keys> {
    let now = unix_now();
    let mut verifying = Vec::new();
    let signing = match configured {
        Some(m) => {
            verifying.push((
                m.kid.clone(),
                VerifyingKey {
                    decoding: decoding_key(&m.jwk)?,
                    jwk: m.jwk.clone(),
                    until: None,
                },
            ));
            SigningKey {
                kid: m.kid.clone(),
                encoding: EncodingKey::from_ec_der(&m.pkcs8),
            }
        }
        None => {
            let active = stored
                .iter()
                .find(|k| k.retired_at.is_none())
                .ok_or_else(|| anyhow::anyhow!("no active signing key in Postgres"))?;
            SigningKey {
                kid: active.kid.clone(),
                encoding: EncodingKey::from_ec_der(&active.private_key),
            }
        }
    };
    for row in stored {
        let until = row
            .retired_at
            .map(|t| verifies_until(ceil_seconds(t), ttl, refresh));
        if until.is_some_and(|u| u < now) || verifying.iter().any(|(k, _)| *k == row.kid) {
            continue;
        }
        verifying.push((
            row.kid.clone(),
            VerifyingKey {
                decoding: decoding_key(&row.public_jwk.0)?,
                jwk: row.public_jwk.0.clone(),
                until,
            },
        ));
    }
    Ok(Keys { signing, verifying })
}

impl TokenKeys {
    /// Keys for a gateway: the configured PEM if any, else the newest key in Postgres, created
    /// there (once, under a lock) when there is none. The set is reloaded from Postgres every
    /// `refresh` in the background for as long as the keys are in use.
    pub async fn load(
        db: &PgPool,
        pem_file: Option<&std::path::Path>,
        issuer: String,
        audience: String,
        ttl: Duration,
        refresh: Duration,
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
        let stored = read_rows(db).await?;
        let keys = build_keys(&stored, configured.as_ref(), ttl, refresh)?;
        let this = Self::from_parts(
            keys,
            Some(db.clone()),
            configured,
            issuer,
            audience,
            ttl,
            refresh,
        );
        tokio::spawn(refresh_until_dropped(Arc::downgrade(&this.shared), refresh));
        Ok(this)
    }

    /// Keys that live only in memory (for tools and tests that have no database).
    pub fn ephemeral(issuer: String, audience: String, ttl: Duration) -> anyhow::Result<Self> {
        let m = generate()?;
        let keys = build_keys(&[], Some(&m), ttl, DEFAULT_REFRESH)?;
        Ok(Self::from_parts(
            keys,
            None,
            None,
            issuer,
            audience,
            ttl,
            DEFAULT_REFRESH,
        ))
    }

    fn from_parts(
        keys: Keys,
        db: Option<PgPool>,
        configured: Option<Material>,
        issuer: String,
        audience: String,
        ttl: Duration,
        refresh: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                keys: RwLock::new(keys),
                db,
                configured,
                issuer,
                audience,
                ttl,
                refresh,
                forced_reload_at: Mutex::new(None),
                verified: DigestCache::default(),
            }),
        }
    }

    /// Token lifetime.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// Whether the signing key comes from `GATEWAY_JWT_PRIVATE_KEY_FILE` (then its operator
    /// rotates it, not [`rotate`]).
    pub fn is_configured(&self) -> bool {
        self.shared.configured.is_some()
    }

    /// The `kid` that signs new tokens.
    pub fn signing_kid(&self) -> String {
        self.read().signing.kid.clone()
    }

    /// Until when a key retired at `retired_at` verifies here.
    pub fn verifies_until(&self, retired_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = verifies_until(
            ceil_seconds(retired_at),
            self.shared.ttl,
            self.shared.refresh,
        );
        DateTime::from_timestamp(until, 0)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.shared.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A signed token for `tenant` and `credential`, and its expiry (Unix seconds).
    pub fn issue(&self, tenant: &str, credential: Uuid, now: u64) -> anyhow::Result<(String, u64)> {
        let claims = Claims {
            iss: self.shared.issuer.clone(),
            aud: self.shared.audience.clone(),
            sub: tenant.to_owned(),
            cid: credential,
            iat: now,
            nbf: now,
            exp: now + self.shared.ttl.as_secs(),
            jti: Uuid::new_v4(),
        };
        let keys = self.read();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(keys.signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &keys.signing.encoding)?;
        Ok((token, claims.exp))
    }

    /// Checks a token: ES256 only, a `kid` that still verifies, signature, `iss`, `aud`, `exp`
    /// and `nbf`.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = Instant::now();
        if let Some((claims, kid)) = self.shared.verified.get(token, now)
            && self.key_usable(&kid)
        {
            return Ok(claims);
        }
        let (claims, kid) = self.verify_uncached(token).await?;
        // Trusted until it expires (with the leeway) and at most a minute, and on every use only
        // while its key still verifies here, so dropping a key stops its tokens at once.
        let left = (claims.exp + LEEWAY_SECONDS).saturating_sub(unix_now().max(0) as u64);
        let trust = Duration::from_secs(left).min(VERIFIED_TRUST);
        self.shared
            .verified
            .put(token, (claims.clone(), kid), now + trust, now);
        Ok(claims)
    }

    fn key_usable(&self, kid: &str) -> bool {
        self.read()
            .get(kid)
            .is_some_and(|k| k.usable_at(unix_now()))
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Claims, String), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let claims = match self.verify_with(&kid, token) {
            Some(result) => result?,
            None => {
                // Another replica may have rotated in a key we have not seen yet.
                self.reload_for_unknown_kid().await;
                self.verify_with(&kid, token)
                    .unwrap_or(Err(TokenError::Invalid))?
            }
        };
        Ok((claims, kid))
    }

    fn verify_with(&self, kid: &str, token: &str) -> Option<Result<Claims, TokenError>> {
        let keys = self.read();
        let key = keys.get(kid).filter(|k| k.usable_at(unix_now()))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.shared.issuer]);
        validation.set_audience(&[&self.shared.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Some(
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
                .map(|data| data.claims)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }),
        )
    }

    async fn reload_for_unknown_kid(&self) {
        let due = {
            let mut at = self
                .shared
                .forced_reload_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let due = at.is_none_or(|t| t.elapsed() >= UNKNOWN_KID_RELOAD_INTERVAL);
            if due {
                *at = Some(Instant::now());
            }
            due
        };
        if due && let Err(e) = self.shared.reload().await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }

    /// Reloads the key set from Postgres now (after a rotation made here, for instance).
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.shared.reload().await
    }

    /// The JWKS document of the keys that verify now.
    pub fn jwks(&self) -> serde_json::Value {
        let now = unix_now();
        let set = self.read();
        let keys: Vec<&serde_json::Value> = set
            .verifying
            .iter()
            .filter(|(_, k)| k.usable_at(now))
            .map(|(_, k)| &k.jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

impl Shared {
    async fn reload(&self) -> anyhow::Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let stored = read_rows(db).await?;
        let fresh = build_keys(&stored, self.configured.as_ref(), self.ttl, self.refresh)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// Reloads every `period` while the keys are in use (a replica picks up a rotation made on
/// another within one period); ends once they are dropped.
async fn refresh_until_dropped(shared: Weak<Shared>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.reload().await {
            tracing::warn!(error = %e, "reloading signing keys failed; keeping the last set");
        }
    }
}

/// Makes a new stored key the signing key and retires the others, recording `actor` in the
/// audit log, all in one transaction. Each replica signs with the new key within its refresh
/// period; the retired keys verify until [`verifies_until`].
pub async fn rotate(db: &PgPool, actor: &str) -> anyhow::Result<Rotated> {
    let m = generate()?;
    let mut tx = db.begin().await?;
    store::keys::lock_for_creation(&mut tx).await?;
    let retired = store::keys::retire_active(&mut tx).await?;
    store::keys::insert(&mut tx, &m.kid, ALGORITHM, &m.pkcs8, &m.jwk).await?;
    let details = serde_json::json!({ "retired": retired });
    store::admin::audit(&mut tx, actor, "signing_key.rotate", Some(&m.kid), &details).await?;
    tx.commit().await?;
    tracing::info!(kid = %m.kid, ?retired, "rotated the token signing key");
    Ok(Rotated {
        kid: m.kid,
        retired,
    })
}

async fn ensure_stored_key(db: &PgPool) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    store::keys::lock_for_creation(&mut tx).await?;
    let existing = store::keys::all(&mut tx).await?;
    if existing.iter().all(|k| k.retired_at.is_some()) {
        let m = generate()?;
        store::keys::insert(&mut tx, &m.kid, ALGORITHM, &m.pkcs8, &m.jwk).await?;
        tracing::info!(kid = %m.kid, "generated a token signing key");
    }
    tx.commit().await?;
    Ok(())
}

async fn read_rows(db: &PgPool) -> anyhow::Result<Vec<KeyRow>> {
    let mut conn = db.acquire().await?;
    Ok(store::keys::all(&mut conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);
    const REFRESH: Duration = Duration::from_secs(10);
    /// TTL + leeway + refresh.
    const WINDOW: i64 = 75;

    fn keys() -> TokenKeys {
        TokenKeys::ephemeral("iss".into(), "aud".into(), TTL).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    fn row(m: &Material, created_at: i64, retired_at: Option<i64>) -> KeyRow {
        KeyRow {
            kid: m.kid.clone(),
            private_key: m.pkcs8.clone(),
            public_jwk: sqlx::types::Json(m.jwk.clone()),
            created_at: at(created_at),
            retired_at: retired_at.map(at),
        }
    }

    /// A replica's key set as loaded from these rows (newest first).
    fn loaded(rows: &[KeyRow]) -> TokenKeys {
        let keys = build_keys(rows, None, TTL, REFRESH).unwrap();
        TokenKeys::from_parts(keys, None, None, "iss".into(), "aud".into(), TTL, REFRESH)
    }

    fn jwks_kids(k: &TokenKeys) -> Vec<String> {
        k.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["kid"].as_str().unwrap().to_owned())
            .collect()
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
        let other_iss = TokenKeys::ephemeral("x".into(), "aud".into(), TTL).unwrap();
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
        header.kid = Some(k.signing_kid());
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
        assert_eq!(key["kid"].as_str().unwrap(), k.signing_kid());
    }

    #[test]
    fn a_retired_key_verifies_for_the_token_lifetime_plus_leeway_plus_one_refresh() {
        assert_eq!(verifies_until(1_000, TTL, REFRESH), 1_000 + WINDOW);
        // A refresh below a second still counts as one whole second.
        assert_eq!(
            verifies_until(1_000, Duration::from_secs(1), Duration::from_millis(200)),
            1_007
        );
    }

    #[tokio::test]
    async fn after_a_rotation_the_new_key_signs_and_the_retired_one_still_verifies() {
        let (old, new) = (generate().unwrap(), generate().unwrap());
        let t = now() as i64;
        let before = loaded(&[row(&old, t - 100, None)]);
        assert_eq!(before.signing_kid(), old.kid);
        let (old_token, _) = before.issue("ten_x", Uuid::nil(), now()).unwrap();

        let after = loaded(&[row(&new, t, None), row(&old, t - 100, Some(t))]);
        assert_eq!(after.signing_kid(), new.kid, "the newest active key signs");
        let (new_token, _) = after.issue("ten_x", Uuid::nil(), now()).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token).unwrap().kid,
            Some(new.kid.clone())
        );
        assert!(after.verify(&old_token).await.is_ok(), "within the window");
        assert!(after.verify(&new_token).await.is_ok());
        assert_eq!(jwks_kids(&after), [new.kid.clone(), old.kid.clone()]);
        // A replica that has not reloaded yet verifies the new key's tokens only after it
        // learns the key (here: no database, so never).
        assert_eq!(before.verify(&new_token).await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn a_retired_key_stops_verifying_and_leaves_the_jwks_when_its_window_ends() {
        let (old, new) = (generate().unwrap(), generate().unwrap());
        let t = now() as i64;
        // Still signing somewhere (a replica that has not reloaded): a fresh, valid token.
        let (old_token, _) = loaded(&[row(&old, t - 500, None)])
            .issue("ten_x", Uuid::nil(), now())
            .unwrap();

        let just_inside = loaded(&[
            row(&new, t - 10, None),
            row(&old, t - 500, Some(t - WINDOW + 2)),
        ]);
        assert!(just_inside.verify(&old_token).await.is_ok());
        assert_eq!(jwks_kids(&just_inside).len(), 2);

        let past = loaded(&[
            row(&new, t - 10, None),
            row(&old, t - 500, Some(t - WINDOW - 1)),
        ]);
        assert_eq!(past.verify(&old_token).await, Err(TokenError::Invalid));
        assert_eq!(jwks_kids(&past), [new.kid]);
    }

    #[tokio::test]
    async fn a_loaded_key_whose_window_ends_later_stops_verifying_without_a_reload() {
        let (old, new) = (generate().unwrap(), generate().unwrap());
        let t = now() as i64;
        let (old_token, _) = loaded(&[row(&old, t - 500, None)])
            .issue("ten_x", Uuid::nil(), now())
            .unwrap();
        let set = loaded(&[row(&new, t, None), row(&old, t - 500, Some(t - WINDOW + 1))]);
        assert!(set.verify(&old_token).await.is_ok());
        // The window is checked at verification time, not only when the set is loaded.
        {
            let mut keys = set.shared.keys.write().unwrap();
            keys.verifying[1].1.until = Some(t - 1);
        }
        assert_eq!(set.verify(&old_token).await, Err(TokenError::Invalid));
        assert_eq!(jwks_kids(&set), [new.kid]);
    }

    #[test]
    fn a_set_with_every_stored_key_retired_cannot_sign() {
        let old = generate().unwrap();
        let t = now() as i64;
        let err = build_keys(&[row(&old, t - 10, Some(t))], None, TTL, REFRESH)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no active signing key"), "{err}");
    }

    #[tokio::test]
    async fn a_configured_key_signs_and_stored_keys_still_verify() {
        let (file, stored) = (generate().unwrap(), generate().unwrap());
        let t = now() as i64;
        let (stored_token, _) = loaded(&[row(&stored, t, None)])
            .issue("ten_x", Uuid::nil(), now())
            .unwrap();
        let keys = build_keys(&[row(&stored, t, None)], Some(&file), TTL, REFRESH).unwrap();
        let set = TokenKeys::from_parts(
            keys,
            None,
            Some(file),
            "iss".into(),
            "aud".into(),
            TTL,
            REFRESH,
        );
        assert!(set.is_configured());
        assert_ne!(set.signing_kid(), stored.kid);
        assert!(set.verify(&stored_token).await.is_ok());
    }
}
