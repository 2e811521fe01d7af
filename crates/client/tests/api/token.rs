use std::time::Duration;

use faceswap_client::{Client, Code, Credentials, Error};
use faceswap_gateway::domain::ids::TenantId;
use faceswap_testkit::{TestApp, eventually};
use futures_util::future::join_all;
use sqlx::PgPool;

use crate::helpers::{client, credentials};

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_client_replaces_an_expiring_token_by_itself_and_every_call_succeeds(pool: PgPool) {
    let app = TestApp::builder()
        .args(&["--jwt-ttl-seconds", "2"])
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let first = client.token().await.unwrap();
    assert_eq!(client.token_fetches(), 1);
    eventually(Duration::from_secs(10), "a refreshed token", || async {
        client.usage().await.expect("every call succeeds");
        let now = client.token().await.unwrap();
        (now != first).then_some(())
    })
    .await;
    // Replaced ahead of expiry: no refused call forced an extra fetch.
    assert_eq!(client.token_fetches(), 2);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn concurrent_calls_on_a_new_client_share_one_token_fetch(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let answers = join_all((0..8).map(|_| client.usage())).await;
    for a in answers {
        a.unwrap();
    }
    assert_eq!(client.token_fetches(), 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_refused_token_is_replaced_and_the_call_retried_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = Client::builder(&app.base_url, credentials(&tenant))
        .token("a-token-from-an-earlier-run")
        .build()
        .unwrap();
    let usage = client.usage().await.unwrap();
    assert_eq!(usage.max_concurrent_sessions, 5);
    assert_eq!(client.token_fetches(), 1);
    assert_ne!(client.token().await.unwrap(), "a-token-from-an-earlier-run");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn wrong_credentials_are_a_typed_1101_after_a_single_attempt(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = Client::new(
        &app.base_url,
        Credentials::Client {
            client_id: tenant.client_id.clone(),
            client_secret: "wrong".into(),
        },
    )
    .unwrap();
    let err = client.usage().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Api {
                status: 401,
                code: Code::TOKEN_INVALID,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_auth());
    assert_eq!(client.token_fetches(), 1);
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn an_api_key_is_used_as_is_without_fetching_tokens(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tenant = app.tenant(3, None).await;
    let key = faceswap_gateway::service::tenants::create_api_key(
        &app.pool,
        TenantId::parse(&tenant.tenant_id).unwrap(),
        "test",
    )
    .await
    .unwrap()
    .api_key
    .unwrap();
    let client = Client::new(&app.base_url, Credentials::ApiKey(key)).unwrap();
    assert_eq!(client.usage().await.unwrap().max_concurrent_sessions, 3);
    let bad = Client::new(&app.base_url, Credentials::ApiKey("fsk_wrong".into())).unwrap();
    assert!(bad.usage().await.unwrap_err().is_auth());
    assert_eq!(client.token_fetches() + bad.token_fetches(), 0);
}
