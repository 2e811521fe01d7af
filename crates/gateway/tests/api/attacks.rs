//! The attack suite: forged and misused tokens, another tenant's ids on every route that names
//! an object (BOLA), URLs into private space (SSRF) in every field the gateway or the upstream
//! fetches, redirects, and hostile bodies. Each attack is refused with the envelope, and
//! nothing it names is reached or changed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use faceswap_gateway::domain::ids::{ResourceId, SessionId, WebhookEndpointId};
use faceswap_gateway::workers::{Outcome, WorkerSettings, archiver, webhooks};
use faceswap_testkit::{TestApp, eventually};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::events::insert_event;

const ADMIN: &str = "ops-token-0123456789abcdefghij";
/// A tenant route that needs nothing but a valid credential.
const USAGE: &str = "/v1/usage";
const OPTS: &str = "150,170:230,170:190,215:190,255";

async fn spawn(pool: PgPool, extra: &[&str]) -> TestApp {
    let admin = format!("ops:{ADMIN}");
    let mut args = vec!["--admin-tokens", admin.as_str()];
    args.extend_from_slice(extra);
    TestApp::builder().args(&args).spawn(pool).await
}

async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    app.admin_call(ADMIN, method, path, body).await
}

/// `(status, body)` of any request, the body as JSON.
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: &str,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{method} {path}: non-JSON answer {status}: {text}"));
    (status, body)
}

async fn assert_refused_1101(app: &TestApp, token: &str, what: &str) {
    let (status, body) = app.get(USAGE, Some(token)).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (401, Some(1101)),
        "{what}: {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn b64url_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The signing key the gateway uses now: `(kid, PKCS#8 DER)`.
async fn gateway_key(pool: &PgPool) -> (String, Vec<u8>) {
    sqlx::query_as("select kid, private_key from signing_keys where retired_at is null")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn es256(pkcs8: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(pkcs8)).unwrap()
}

fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!("{}.{}.", b64url_json(&header), b64url_json(claims))
}

/// The token with one bit of its signature flipped.
fn tampered(token: &str) -> String {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[10] ^= 0x01;
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw))
}

fn another_p256_key() -> Vec<u8> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Every form of the public key an HS/ES confusion attack might use as the HMAC secret.
fn public_key_forms(jwk: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
    let xy = [x.clone(), y].concat();
    let point = [vec![0x04], xy.clone()].concat();
    // SubjectPublicKeyInfo of a P-256 key: the fixed algorithm header, then the point.
    let spki_prefix = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let der = [spki_prefix.to_vec(), point.clone()].concat();
    let b64 = STANDARD.encode(&der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    );
    vec![
        ("the JWK x||y bytes", xy),
        ("the JWK x bytes", x),
        ("the uncompressed point", point),
        ("the SPKI DER", der),
        ("the SPKI PEM", pem.clone().into_bytes()),
        (
            "the SPKI PEM without its last newline",
            pem.trim_end().as_bytes().to_vec(),
        ),
        ("the JWK as JSON", serde_json::to_vec(jwk).unwrap()),
        (
            "the JWK x text",
            jwk["x"].as_str().unwrap().as_bytes().to_vec(),
        ),
    ]
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn forged_misdated_misaddressed_unsigned_and_hs256_tokens_are_refused_with_1101(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(1, None).await;
    let real = app.token(&tenant).await;
    let claims = payload(&real);
    let (kid, pkcs8) = gateway_key(&app.pool).await;
    let now = chrono::Utc::now().timestamp();
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // Control: the gateway's own key and claims pass, so each refusal below is for its flaw.
    let control = es256(
        &pkcs8,
        &kid,
        &with(json!({"iat": now, "nbf": now, "exp": now + 60})),
    );
    assert_eq!(app.get(USAGE, Some(&control)).await.0, 200);
    assert_eq!(app.get(USAGE, Some(&real)).await.0, 200);

    let mut cases = vec![
        (
            "a signature with one bit flipped".to_owned(),
            tampered(&real),
        ),
        (
            "another P-256 key under the gateway's kid".into(),
            es256(&another_p256_key(), &kid, &claims),
        ),
        (
            "expired beyond the leeway".into(),
            es256(
                &pkcs8,
                &kid,
                &with(json!({"iat": now - 120, "nbf": now - 120, "exp": now - 10})),
            ),
        ),
        (
            "not valid before a minute from now".into(),
            es256(
                &pkcs8,
                &kid,
                &with(json!({"iat": now, "nbf": now + 60, "exp": now + 120})),
            ),
        ),
        (
            "another issuer".into(),
            es256(&pkcs8, &kid, &with(json!({"iss": "someone-else"}))),
        ),
        (
            "another audience".into(),
            es256(&pkcs8, &kid, &with(json!({"aud": "another-service"}))),
        ),
        ("alg none".into(), unsigned(&kid, &claims)),
        (
            "alg none with the real signature".into(),
            format!(
                "{}{}",
                unsigned(&kid, &claims),
                real.rsplit_once('.').unwrap().1
            ),
        ),
    ];
    let (_, jwks) = app.get("/.well-known/jwks.json", None).await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    for (form, secret) in public_key_forms(&jwk) {
        cases.push((
            format!("HS256 keyed with {form}"),
            hs256(&secret, &kid, &claims),
        ));
    }
    for (what, token) in &cases {
        assert_refused_1101(&app, token, what).await;
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_token_and_an_api_key_revoked_through_the_admin_api_are_refused_with_1101(pool: PgPool) {
    let app = spawn(pool, &[]).await;
    let tenant = app.tenant(1, None).await;
    let token = app.token(&tenant).await;
    let (status, key) = admin(
        &app,
        "POST",
        &format!("/admin/tenants/{}/credentials", tenant.tenant_id),
        Some(json!({"kind": "api_key"})),
    )
    .await;
    assert_eq!(status, 200, "{key}");
    let api_key = key["data"]["api_key"].as_str().unwrap().to_owned();
    let key_cred = key["data"]["credential_id"].as_str().unwrap().to_owned();
    let with_key = || app.client.get(app.url(USAGE)).header("x-api-key", &api_key);
    assert_eq!(with_key().send().await.unwrap().status(), 200);
    assert_eq!(app.get(USAGE, Some(&token)).await.0, 200);

    let (_, creds) = admin(
        &app,
        "GET",
        &format!("/admin/tenants/{}/credentials", tenant.tenant_id),
        None,
    )
    .await;
    let client_cred = creds["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "client")
        .unwrap()["credential_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for cred in [&client_cred, &key_cred] {
        let (status, body) = admin(
            &app,
            "POST",
            &format!("/admin/credentials/{cred}/revoke"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_refused_1101(&app, &token, "a token of a revoked credential").await;
    let resp = with_key().send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1101, "{body}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_rotated_out_key_verifies_within_its_retention_window_and_not_after(pool: PgPool) {
    let app = spawn(pool, &["--jwt-key-refresh-ms", "200"]).await;
    let replica = app.spawn_replica().await;
    let tenant = app.tenant(1, None).await;
    let old_token = app.token(&tenant).await;
    let (old_kid, old_pkcs8) = gateway_key(&app.pool).await;

    let (status, rotated) = admin(&app, "POST", "/admin/signing-keys/rotate", None).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["data"]["retired"], json!([old_kid]));
    let new_kid = rotated["data"]["kid"].as_str().unwrap().to_owned();

    for gw in [&app, &replica] {
        assert_eq!(
            gw.get(USAGE, Some(&old_token)).await.0,
            200,
            "the retired key still verifies"
        );
    }
    // Both replicas sign with the new key within the refresh period.
    for gw in [&app, &replica] {
        eventually(Duration::from_secs(3), "the new key to sign", || async {
            let token = gw.token(&tenant).await;
            let header = jsonwebtoken::decode_header(&token).unwrap();
            (header.kid.as_deref() == Some(new_kid.as_str())).then_some(())
        })
        .await;
    }
    let (_, jwks) = replica.get("/.well-known/jwks.json", None).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);

    // Jump past the window: the tokens of a key retired over TTL + leeway + refresh ago have
    // all expired, so the key is dropped (the old token itself is still inside its `exp`).
    sqlx::query(
        "update signing_keys set retired_at = now() - interval '3700 seconds' where kid = $1",
    )
    .bind(&old_kid)
    .execute(&app.pool)
    .await
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let mut fresh = payload(&old_token);
    fresh["iat"] = now.into();
    fresh["nbf"] = now.into();
    fresh["exp"] = (now + 60).into();
    let fresh_old = es256(&old_pkcs8, &old_kid, &fresh);
    for gw in [&app, &replica] {
        eventually(
            Duration::from_secs(3),
            "the retired key to stop verifying",
            || async { (gw.get(USAGE, Some(&old_token)).await.0 == 401).then_some(()) },
        )
        .await;
        assert_refused_1101(gw, &old_token, "a token of a key past its window").await;
        assert_refused_1101(gw, &fresh_old, "a fresh token of a key past its window").await;
        let (_, jwks) = gw.get("/.well-known/jwks.json", None).await;
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
        assert_eq!(jwks["keys"][0]["kid"], new_kid.as_str());
        let token = gw.token(&tenant).await;
        assert_eq!(gw.get(USAGE, Some(&token)).await.0, 200);
    }
}

// ---------------------------------------------------------------------------------------------
// BOLA

/// Everything of a tenant's that another tenant's call could change, as JSON text.
async fn snapshot(pool: &PgPool, tenant: uuid::Uuid) -> Vec<String> {
    let mut rows = Vec::new();
    for query in [
        "select to_jsonb(t)::text from sessions t where tenant_id = $1 order by 1",
        "select to_jsonb(t)::text from webhook_endpoints t where tenant_id = $1 order by 1",
        "select to_jsonb(t)::text from resources t where tenant_id = $1 order by 1",
    ] {
        let found: Vec<String> = sqlx::query_scalar(query)
            .bind(tenant)
            .fetch_all(pool)
            .await
            .unwrap();
        rows.extend(found);
    }
    rows
}

/// How a route answers another tenant's id (exactly as it answers a random one).
enum Answer {
    /// 404, 4004.
    Missing,
    /// 200 with an empty list.
    EmptyPage,
}

/// Runs the archiver until it has nothing left to do.
async fn archive_everything(app: &TestApp) {
    for _ in 0..100 {
        if archiver::run_once(&app.state, &app.workers).await.unwrap() == Outcome::Idle {
            return;
        }
    }
    panic!("the archiver never went idle");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn every_route_naming_an_object_answers_another_tenants_id_as_a_missing_one(pool: PgPool) {
    // The simulator serves generated resources on loopback, which the archiver must reach.
    let app = spawn(pool, &["--ssrf-allow", "127.0.0.1/32"]).await;
    let a = app.tenant(5, None).await;
    let a_uuid = crate::events::tenant_uuid(&a);
    let ta = app.token(&a).await;
    let tb = app.token(&app.tenant(5, None).await).await;

    let open = crate::events::session(&app, &ta).await;
    let closed = crate::events::session(&app, &ta).await;
    let (status, body) = call(
        &app,
        "POST",
        "/api/open/v3/faceswap/live/close",
        Some(&json!({"_id": closed})),
        &ta,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    archive_everything(&app).await;
    let (_, res) = app
        .get(&format!("/v1/resources?session_id={closed}"), Some(&ta))
        .await;
    let resource = res["data"]["resources"][0]["resource_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a resource of the closed session: {res}"))
        .to_owned();
    let (status, hook) = call(
        &app,
        "POST",
        "/v1/webhooks",
        Some(&json!({"url": "http://93.184.215.14/hook"})),
        &ta,
    )
    .await;
    assert_eq!(status, 200, "{hook}");
    let webhook = hook["data"]["endpoint_id"].as_str().unwrap().to_owned();

    let before = snapshot(&app.pool, a_uuid).await;
    let calls_before = app.sim_stats().await.calls;
    let source = json!([{"path": "https://images.example/b.jpg", "opts": OPTS}]);
    let missing_session = SessionId::generate().to_string();
    let missing_resource = ResourceId::generate().to_string();
    let missing_webhook = WebhookEndpointId::generate().to_string();

    // (method, path template, body template, answer): `{s}`, `{r}` and `{w}` name A's
    // session, resource and webhook endpoint, or random ids of the same kinds. Lists filtered
    // by another tenant's id answer an empty page; everything else 404.
    let routes: Vec<(&str, &str, Option<Value>, Answer)> = vec![
        (
            "POST",
            "/api/open/v3/faceswap/live/info",
            Some(json!({"_id": "{s}"})),
            Answer::Missing,
        ),
        (
            "POST",
            "/api/open/v3/faceswap/live/update",
            Some(json!({"_id": "{s}", "sourceImage": source})),
            Answer::Missing,
        ),
        (
            "POST",
            "/api/open/v3/faceswap/live/close",
            Some(json!({"_id": "{s}"})),
            Answer::Missing,
        ),
        (
            "POST",
            "/v1/sessions/{s}/heartbeat",
            Some(json!({})),
            Answer::Missing,
        ),
        ("GET", "/v1/sessions/{s}/resources", None, Answer::Missing),
        ("GET", "/v1/resources/{r}", None, Answer::Missing),
        ("DELETE", "/v1/webhooks/{w}", None, Answer::Missing),
        ("GET", "/v1/events?session_id={s}", None, Answer::Missing),
        (
            "GET",
            "/v1/resources?session_id={s}",
            None,
            Answer::EmptyPage,
        ),
        ("GET", "/v1/resources?cursor={r}", None, Answer::EmptyPage),
        ("GET", "/v1/sessions?cursor={s}", None, Answer::EmptyPage),
    ];
    let fill = |text: &str, ids: [&str; 3]| {
        text.replace("{s}", ids[0])
            .replace("{r}", ids[1])
            .replace("{w}", ids[2])
    };
    let missing = [
        missing_session.as_str(),
        missing_resource.as_str(),
        missing_webhook.as_str(),
    ];
    for session in [&open, &closed] {
        let theirs_ids = [session.as_str(), resource.as_str(), webhook.as_str()];
        for (method, path, body, answer) in &routes {
            let request = |ids: [&str; 3]| {
                let body = body
                    .as_ref()
                    .map(|b| serde_json::from_str::<Value>(&fill(&b.to_string(), ids)).unwrap());
                (fill(path, ids), body)
            };
            let (theirs_path, theirs_body) = request(theirs_ids);
            let (none_path, none_body) = request(missing);
            let theirs = call(&app, method, &theirs_path, theirs_body.as_ref(), &tb).await;
            let none = call(&app, method, &none_path, none_body.as_ref(), &tb).await;
            assert_eq!(
                theirs, none,
                "{method} {theirs_path} answers as for a missing id"
            );
            match answer {
                Answer::Missing => assert_eq!(
                    (theirs.0, theirs.1["code"].as_i64()),
                    (404, Some(4004)),
                    "{method} {theirs_path}"
                ),
                Answer::EmptyPage => {
                    assert_eq!(theirs.0, 200, "{method} {theirs_path}: {theirs:?}");
                    let items = theirs.1["data"]
                        .as_object()
                        .unwrap()
                        .values()
                        .find_map(Value::as_array)
                        .unwrap();
                    assert!(items.is_empty(), "{method} {theirs_path}: {theirs:?}");
                }
            }
        }
    }

    // Every tenant route with an id in its path is in the table above.
    let doc = serde_json::to_value(faceswap_gateway::http::openapi()).unwrap();
    for path in doc["paths"].as_object().unwrap().keys() {
        if path.contains('{') && !path.starts_with("/admin/") {
            let covered = routes
                .iter()
                .any(|(_, p, _, _)| fill(p, ["{id}", "{id}", "{id}"]) == *path);
            assert!(covered, "{path} is not tried with another tenant's id");
        }
    }

    assert_eq!(
        snapshot(&app.pool, a_uuid).await,
        before,
        "A's rows are unchanged"
    );
    let calls = app.sim_stats().await.calls;
    assert_eq!(
        (calls.update, calls.close),
        (calls_before.update, calls_before.close),
        "nothing of A's reached the upstream"
    );
    let (status, info) = call(
        &app,
        "POST",
        "/api/open/v3/faceswap/live/info",
        Some(&json!({"_id": open})),
        &ta,
    )
    .await;
    assert_eq!(status, 200, "{info}");
    let download = app
        .client
        .get(app.url(&format!("/v1/resources/{resource}")))
        .bearer_auth(&ta)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let (_, hooks) = app.get("/v1/webhooks", Some(&ta)).await;
    assert_eq!(
        hooks["data"]["endpoints"][0]["endpoint_id"],
        webhook.as_str()
    );
}

// ---------------------------------------------------------------------------------------------
// SSRF

/// URLs into private, loopback, link-local or unspecified space in every spelling, and
/// schemes other than http(s).
const FORBIDDEN_URLS: &[&str] = &[
    "http://10.0.0.1/a.jpg",
    "http://10.255.255.254/a.jpg",
    "http://172.16.0.1/a.jpg",
    "http://172.31.255.254/a.jpg",
    "http://192.168.0.1/a.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1/a.jpg",
    "http://127.0.0.1:9090/a.jpg",
    "http://0.0.0.0/a.jpg",
    "http://[::1]/a.jpg",
    "http://[::ffff:127.0.0.1]/a.jpg",
    "http://[::ffff:a9fe:a9fe]/a.jpg",
    "http://[fe80::1]/a.jpg",
    "http://[fc00::1]/a.jpg",
    "http://2130706433/a.jpg",
    "http://0177.0.0.1/a.jpg",
    "http://0x7f000001/a.jpg",
    "http://0x7f.0.0.1/a.jpg",
    "http://127.1/a.jpg",
    "http://localhost/a.jpg",
    "http://LOCALHOST:8080/a.jpg",
    "http://localhost./a.jpg",
    "http://images.localhost/a.jpg",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://93.184.215.14/a.jpg",
];

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn urls_into_private_space_are_refused_in_every_field_before_anything_fetches_them(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let open = crate::events::session(&app, &token).await;
    let calls_before = app.sim_stats().await.calls;

    for url in FORBIDDEN_URLS {
        for path in ["/detect", "/interface/detect-api/detect_faces"] {
            let (status, body) = app
                .post(
                    path,
                    &json!({"single_face": true, "image_url": url}),
                    Some(&token),
                )
                .await;
            assert_eq!(
                (status, body["error_code"].as_i64()),
                (400, Some(1003)),
                "{path} {url}: {body}"
            );
        }
        let source = json!([
            {"path": "https://images.example/ok.jpg", "opts": OPTS},
            {"path": url, "opts": OPTS},
        ]);
        for (path, body) in [
            (
                "/api/open/v3/faceswap/live/create",
                json!({"sourceImage": source}),
            ),
            (
                "/api/open/v3/faceswap/live/update",
                json!({"_id": open, "sourceImage": source}),
            ),
            ("/v1/webhooks", json!({"url": url})),
        ] {
            let (status, resp) = app.post(path, &body, Some(&token)).await;
            assert_eq!(
                (status, resp["code"].as_i64()),
                (400, Some(1003)),
                "{path} {url}: {resp}"
            );
            if path.contains("faceswap") {
                assert!(
                    resp["msg"]
                        .as_str()
                        .unwrap()
                        .contains("sourceImage[1].path"),
                    "{path} {url}: {resp}"
                );
            }
        }
    }
    let calls = app.sim_stats().await.calls;
    assert_eq!(
        (calls.detect, calls.create, calls.update),
        (
            calls_before.detect,
            calls_before.create,
            calls_before.update
        ),
        "nothing reached the upstream"
    );
    let endpoints: i64 = sqlx::query_scalar("select count(*) from webhook_endpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(endpoints, 0);

    // Names this gateway cannot resolve pass for sources (the upstream resolves them on its
    // own network), as do public literals.
    let (status, body) = app
        .post(
            "/api/open/v3/faceswap/live/update",
            &json!({"_id": open, "sourceImage": [
                {"path": "https://images.example/face.jpg", "opts": OPTS},
                {"path": "http://93.184.215.14/face.jpg", "opts": OPTS},
            ]}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A loopback server that counts requests and answers each with `status` and `location`.
async fn counting_server(
    ip: &str,
    status: u16,
    location: Option<String>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        let location = location.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut resp = axum::http::Response::builder().status(status);
            if let Some(l) = location {
                resp = resp.header("location", l);
            }
            resp.body(axum::body::Body::empty()).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_webhook_redirect_to_a_forbidden_address_is_not_followed(pool: PgPool) {
    // Only 127.0.0.1 is allowed; 127.0.0.2 is loopback like any other.
    let app = spawn(pool, &["--ssrf-allow", "127.0.0.1/32"]).await;
    let (target, target_hits) = counting_server("127.0.0.2", 200, None).await;
    let (redirector, redirector_hits) =
        counting_server("127.0.0.1", 302, Some(format!("http://{target}/hook"))).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let (status, body) = app
        .post(
            "/v1/webhooks",
            &json!({"url": format!("http://{target}/hook")}),
            Some(&token),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1003)), "{body}");
    let (status, body) = app
        .post(
            "/v1/webhooks",
            &json!({"url": format!("http://{redirector}/hook")}),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    insert_event(&app.pool, &tenant, None, 1).await;

    let settings = WorkerSettings {
        webhook_retry_base: Duration::from_secs(60),
        ..app.workers.clone()
    };
    assert_eq!(
        webhooks::run_once(&app.state, &settings).await.unwrap(),
        Outcome::Worked(1)
    );
    let (state, attempts): (String, i32) =
        sqlx::query_as("select state, attempts from webhook_deliveries")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), attempts),
        ("pending", 1),
        "a 302 is not a delivery"
    );
    assert_eq!(redirector_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "the redirect target was never reached"
    );
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn oversized_and_deeply_nested_bodies_are_refused_with_the_envelope(pool: PgPool) {
    let app = spawn(pool, &["--max-body-bytes", "100000"]).await;
    let tenant = app.tenant(5, None).await;
    let token = app.token(&tenant).await;
    let open = crate::events::session(&app, &token).await;
    let calls_before = app.sim_stats().await.calls;
    let big = "x".repeat(200_000);
    let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let nested_field = format!(
        "{{\"_id\": \"{open}\", \"sourceImage\": [{{\"path\": \"https://images.example/a.jpg\", \"opts\": \"{OPTS}\", \"x\": {nested}}}]}}"
    );
    let routes = [
        ("/api/open/v3/getToken", false),
        ("/detect", true),
        ("/interface/detect-api/detect_faces", true),
        ("/api/open/v3/faceswap/live/create", false),
        ("/api/open/v3/faceswap/live/update", false),
        ("/v1/webhooks", false),
    ];
    for (path, detect_shape) in routes {
        let code = |body: &Value| {
            if detect_shape {
                body["error_code"].as_i64()
            } else {
                body["code"].as_i64()
            }
        };
        let send = |raw: String| {
            app.client
                .post(app.url(path))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(raw)
                .send()
        };
        let resp = send(format!("{{\"img\": \"{big}\", \"url\": \"{big}\"}}"))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!((status, code(&body)), (413, Some(4013)), "{path}: {body}");

        for raw in [nested.clone(), nested_field.clone()] {
            let resp = send(raw).await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_eq!((status, code(&body)), (400, Some(1003)), "{path}: {body}");
        }
    }
    let calls = app.sim_stats().await.calls;
    assert_eq!(
        (calls.detect, calls.create, calls.update),
        (
            calls_before.detect,
            calls_before.create,
            calls_before.update
        )
    );
}
