use faceswap_testkit::TestApp;
use sqlx::PgPool;

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_openapi_document_and_swagger_ui_are_served(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, served) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let generated = serde_json::to_value(faceswap_gateway::http::openapi()).unwrap();
    assert_eq!(served, generated);

    let resp = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    // The UI's assets come from the gateway itself, not a CDN.
    assert!(
        !page.contains("https://"),
        "the page loads nothing from outside: {page}"
    );
    let resp = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().len() > 100_000);
}

/// Headless Chromium, as `scripts/test.sh` installs it (Debian's `chromium`).
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn headless(args: &[&str]) -> std::process::Output {
    let profile = tempfile_dir();
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} could not run ({e}); scripts/test.sh installs it",
                chromium()
            )
        });
    let _ = std::fs::remove_dir_all(&profile);
    out
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "faceswap-chromium-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn swagger_ui_renders_every_operation_in_a_real_browser(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = app.url("/docs/");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&["--dump-dom", &url])
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // Swagger UI built the page from /openapi.json: every operation has its block.
    let doc = serde_json::to_value(faceswap_gateway::http::openapi()).unwrap();
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} is not listed on /docs"
        );
    }
    assert!(dom.contains("Live Face Swap gateway"));

    let shot = tempfile_dir().join("docs.png");
    let out = tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || headless(&[&format!("--screenshot={}", shot.display()), &url])
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&png[1..4], b"PNG");
    // A blank page compresses to almost nothing; a rendered operation list does not.
    assert!(
        png.len() > 30_000,
        "the screenshot looks empty: {} bytes",
        png.len()
    );
}
