use std::time::Duration;

use faceswap_client::{ListResources, ResourceView};
use faceswap_gateway::workers::archiver;
use faceswap_testkit::{TestApp, eventually};
use sqlx::PgPool;

use crate::helpers::{OPTS, client, create_request};

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn archived_resources_are_listed_and_downloaded_with_their_digest(pool: PgPool) {
    // The simulator serves its generated files on loopback.
    let app = TestApp::builder().allow_loopback().spawn(pool).await;
    let tenant = app.tenant(5, None).await;
    let client = client(&app, &tenant);
    let session = client.create(&create_request(OPTS)).await.unwrap();
    client.close(&session.id).await.unwrap();

    // The test gateway runs no background workers: archive by hand.
    let archived: Vec<ResourceView> =
        eventually(Duration::from_secs(10), "archived resources", || async {
            archiver::run_once(&app.state, &app.workers).await.unwrap();
            let list = client.session_resources(&session.id).await.unwrap();
            let done =
                !list.resources.is_empty() && list.resources.iter().all(|r| r.state == "archived");
            done.then_some(list.resources)
        })
        .await;

    let page = client
        .list_resources(&ListResources {
            session_id: Some(session.id.clone()),
            state: Some("archived".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.resources.len(), archived.len());
    for r in &archived {
        let download = client.resource(&r.resource_id).await.unwrap();
        assert_eq!(download.content_type, r.content_type);
        assert_eq!(Some(download.bytes.len() as i64), r.size);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &download.bytes);
        assert_eq!(Some(hex(digest.as_ref())), r.sha256, "{}", r.resource_id);
    }
    let missing = client.resource("res_nope").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
}
